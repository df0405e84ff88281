use super::*;
use crate::azure::fake::MemoryBlobStore;
use crate::testing::{demo, service_ref};
use chrono::TimeZone;
use drsync_core::{ManualClock, Sku, SkuTier};

fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

fn doc(age: chrono::Duration, run: u128) -> BackupDoc {
    let created = now() - age;
    let record = BackupRecord {
        name: BackupName::new("apim-weu", created, Uuid::from_u128(run << 96)),
        source: service_ref("apim-weu"),
        sku: Sku {
            tier: SkuTier::Premium,
            capacity: 1,
        },
        storage_account: "neubackups".into(),
        container: "apim-backups".into(),
        created_at: created,
        expires_at: BackupRecord::expiry_for(created),
        change_marker: Some(created - chrono::Duration::hours(1)),
        consistency: Consistency::Consistent,
    };
    BackupDoc::from_record(&record, Some(Uuid::from_u128(run << 96)))
}

async fn setup() -> (
    Checkpoints,
    Topology,
    Arc<MemoryBlobStore>,
    Vec<(StorageNode, Arc<dyn BlobStore>)>,
) {
    let topo = demo();
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(MemoryBlobStore::new("neubackups", clock));
    store.create_container("apim-backups").await.unwrap();
    let stores: Vec<(StorageNode, Arc<dyn BlobStore>)> =
        vec![(topo.storage("neu-backups").unwrap().clone(), store.clone())];
    (Checkpoints::in_memory(), topo, store, stores)
}

async fn put_backup(store: &MemoryBlobStore, d: &BackupDoc, sidecar: bool) {
    store
        .put(
            "apim-backups",
            d.backup.as_str(),
            Bytes::from_static(b"backup"),
        )
        .await
        .unwrap();
    if sidecar {
        write_sidecar(store, d).await.unwrap();
    }
}

#[test]
fn sidecar_has_the_shared_shape() {
    let d = doc(chrono::Duration::hours(1), 0xabcdef12);
    let json: serde_json::Value = serde_json::to_value(&d).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "backup",
            "change_marker",
            "consistency",
            "container",
            "created_at",
            "expires_at",
            "run_id",
            "schema_version",
            "sku",
            "source",
            "storage_account"
        ]
    );
    assert_eq!(
        json["sku"],
        serde_json::json!({"tier": "Premium", "capacity": 1})
    );
    assert_eq!(json["consistency"], "consistent");
    assert_eq!(json["source"], service_ref("apim-weu").resource_id());
}

#[tokio::test]
async fn catalog_is_rebuilt_from_storage_alone() {
    let (cp, topo, store, stores) = setup().await;
    let with = doc(chrono::Duration::hours(2), 1);
    let without = doc(chrono::Duration::hours(1), 2);
    put_backup(&store, &with, true).await;
    put_backup(&store, &without, false).await;
    // Blobs that are not drsync backups are ignored; a backup of an unknown service is reported.
    store
        .put("apim-backups", "notes.txt", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let stranger = BackupName::new("apim-other", now(), Uuid::nil());
    store
        .put("apim-backups", stranger.as_str(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    // A stale record whose blob is gone is dropped.
    cp.put_backup(&doc(chrono::Duration::hours(5), 3)).unwrap();

    let report = sync_from_storage(&cp, &topo, &stores).await.unwrap();
    assert_eq!(report.found, 2);
    assert_eq!(report.without_sidecar, [without.backup.to_string()]);
    assert_eq!(
        report.unknown_source,
        [format!("neubackups/apim-backups/{stranger}")]
    );
    assert_eq!(report.removed.len(), 1);

    let entries = entries(&cp).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].record, with.to_record().unwrap());
    assert_eq!(entries[1].record.consistency, Consistency::Unknown);
    assert_eq!(entries[1].run_id, None);
}

#[tokio::test]
async fn missing_container_is_reported() {
    let topo = demo();
    let store: Arc<dyn BlobStore> = Arc::new(MemoryBlobStore::new(
        "neubackups",
        Arc::new(ManualClock::new(now())),
    ));
    let stores = vec![(topo.storage("neu-backups").unwrap().clone(), store)];
    let report = sync_from_storage(&Checkpoints::in_memory(), &topo, &stores)
        .await
        .unwrap();
    assert_eq!(report.missing_containers, ["neubackups/apim-backups"]);
}

#[tokio::test]
async fn prune_applies_retention_and_keeps_the_newest() {
    let (cp, topo, store, stores) = setup().await;
    // Retention in the demo topology is 14 days.
    let docs = [
        doc(chrono::Duration::days(40), 1),
        doc(chrono::Duration::days(20), 2),
        doc(chrono::Duration::days(3), 3),
    ];
    for d in &docs {
        put_backup(&store, d, true).await;
        cp.put_backup(d).unwrap();
    }
    let dry = prune(&cp, &topo, &stores, now(), true).await.unwrap();
    assert_eq!(dry.len(), 2);
    assert_eq!(entries(&cp).unwrap().len(), 3, "dry run deletes nothing");

    let pruned = prune(&cp, &topo, &stores, now(), false).await.unwrap();
    let reasons: Vec<String> = pruned
        .iter()
        .map(|p| format!("{}: {}", p.backup, p.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            format!("{}: expired (older than 30 days)", docs[0].backup),
            format!(
                "{}: older than the retention of 14d 0h of `contoso-dr`",
                docs[1].backup
            ),
        ]
    );
    let left: Vec<String> = store
        .list("apim-backups", "")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(
        left,
        [docs[2].backup.to_string(), docs[2].backup.sidecar_blob()]
    );
    assert_eq!(entries(&cp).unwrap().len(), 1);

    // Even past retention, the only valid backup stays.
    let later = now() + chrono::Duration::days(20);
    assert!(
        prune(&cp, &topo, &stores, later, false)
            .await
            .unwrap()
            .is_empty()
    );
}
