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

fn marker(target: &str, backup: &BackupDoc, minutes_after: i64) -> RestoreMarker {
    RestoreMarker {
        schema_version: MARKER_SCHEMA_VERSION,
        target: service_ref(target).resource_id(),
        backup: backup.backup.clone(),
        restored_at: backup.created_at + chrono::Duration::minutes(minutes_after),
        run_id: Uuid::from_u128(7),
    }
}

// See: #5. The marker has a fixed, versioned shape and a name no backup can have.
#[test]
fn restore_marker_has_its_documented_shape() {
    let d = doc(chrono::Duration::hours(1), 0xabcdef12);
    let m = marker("apim-neu", &d, 5);
    let json = serde_json::to_value(&m).unwrap();
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
            "restored_at",
            "run_id",
            "schema_version",
            "target"
        ]
    );
    assert_eq!(json["schema_version"], 1);
    let blob = RestoreMarker::blob_name(&d.backup, "APIM-NEU");
    assert_eq!(
        blob,
        format!("{}.drsync-restored.apim-neu.json", d.backup.as_str())
    );
    assert!(RestoreMarker::is_marker_blob(&blob));
    assert!(!RestoreMarker::is_marker_blob(&d.backup.sidecar_blob()));
    assert!(BackupName::parse(&blob).is_err());
}

// See: #5. What each standby holds is rebuilt from the markers: the newest per target.
#[tokio::test]
async fn restores_are_rebuilt_from_markers_newest_per_target() {
    let (cp, topo, store, stores) = setup().await;
    let old = doc(chrono::Duration::hours(5), 1);
    let new = doc(chrono::Duration::hours(1), 2);
    for d in [&old, &new] {
        put_backup(&store, d, true).await;
    }
    for (target, d) in [("apim-neu", &old), ("apim-neu", &new), ("apim-stg", &old)] {
        write_restore_marker(
            store.as_ref(),
            "apim-backups",
            target,
            &marker(target, d, 10),
        )
        .await
        .unwrap();
    }
    // A marker of a service not in the configuration, and a damaged one.
    write_restore_marker(
        store.as_ref(),
        "apim-backups",
        "apim-gone",
        &marker("apim-gone", &new, 10),
    )
    .await
    .unwrap();
    store
        .put(
            "apim-backups",
            &RestoreMarker::blob_name(&old.backup, "apim-x"),
            Bytes::from_static(b"{"),
        )
        .await
        .unwrap();
    let r = sync_from_storage(&cp, &topo, &stores).await.unwrap();
    assert_eq!(r.found, 2, "markers are not backups: {r:?}");
    assert!(
        r.unknown_source.is_empty() && r.without_sidecar.is_empty(),
        "{r:?}"
    );
    assert!(
        cp.restores().unwrap().is_empty(),
        "only the restore sync reads markers"
    );
    let r = sync_restores_from_storage(&cp, &topo, &stores)
        .await
        .unwrap();
    assert_eq!(r.unreadable_markers.len(), 2, "{r:?}");
    assert_eq!(r.restores.len(), 2, "{r:?}");
    let mut restores = cp.restores().unwrap();
    restores.sort_by(|a, b| a.target.cmp(&b.target));
    let held: Vec<(&str, &BackupName)> = restores
        .iter()
        .map(|r| (r.target.as_str(), &r.backup))
        .collect();
    assert_eq!(held, [("apim-neu", &new.backup), ("apim-stg", &old.backup)]);
    assert_eq!(
        restores[0].restored_at,
        new.created_at + chrono::Duration::minutes(10)
    );

    // A newer local record is kept; syncing again changes nothing.
    let newer = RestoreEntry {
        restored_at: now(),
        ..restores[1].clone()
    };
    cp.put_restore(&newer).unwrap();
    let again = sync_restores_from_storage(&cp, &topo, &stores)
        .await
        .unwrap();
    assert!(again.restores.is_empty(), "{again:?}");
    assert!(cp.restores().unwrap().contains(&newer));
}

// See: #5. Pruning a backup deletes its restore markers too.
#[tokio::test]
async fn prune_deletes_the_markers_of_pruned_backups() {
    let (cp, topo, store, stores) = setup().await;
    let old = doc(chrono::Duration::days(20), 1);
    let new = doc(chrono::Duration::hours(1), 2);
    for d in [&old, &new] {
        put_backup(&store, d, true).await;
        write_restore_marker(
            store.as_ref(),
            "apim-backups",
            "apim-neu",
            &marker("apim-neu", d, 5),
        )
        .await
        .unwrap();
    }
    sync_from_storage(&cp, &topo, &stores).await.unwrap();
    let pruned = prune(&cp, &topo, &stores, now(), false).await.unwrap();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].backup, old.backup);
    let names: Vec<String> = store
        .list("apim-backups", "")
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(old.backup.as_str())),
        "{names:?}"
    );
    assert!(
        names.contains(&RestoreMarker::blob_name(&new.backup, "apim-neu")),
        "{names:?}"
    );
}

#[tokio::test]
async fn prune_keeps_the_newest_backup_even_when_every_backup_is_suspect() {
    let (cp, topo, store, stores) = setup().await;
    let mut docs = [
        doc(chrono::Duration::days(20), 1),
        doc(chrono::Duration::days(16), 2),
    ];
    for d in &mut docs {
        d.consistency = Consistency::Suspect;
        put_backup(&store, d, true).await;
        cp.put_backup(d).unwrap();
    }
    let pruned = prune(&cp, &topo, &stores, now(), false).await.unwrap();
    let names: Vec<_> = pruned.iter().map(|p| p.backup.clone()).collect();
    assert_eq!(names, [docs[0].backup.clone()]);
    let left: Vec<BackupName> = entries(&cp)
        .unwrap()
        .into_iter()
        .map(|e| e.record.name)
        .collect();
    assert_eq!(left, [docs[1].backup.clone()]);
}

#[tokio::test]
async fn prune_leaves_a_backup_an_unfinished_run_is_to_restore() {
    let (cp, topo, store, stores) = setup().await;
    let old = doc(chrono::Duration::days(20), 1);
    let new = doc(chrono::Duration::hours(1), 2);
    for d in [&old, &new] {
        put_backup(&store, d, true).await;
        cp.put_backup(d).unwrap();
    }
    // `drsync restore --backup OLD --to apim-neu`, interrupted.
    let plan = crate::plan::Plan::restore(
        &topo,
        &entries(&cp).unwrap(),
        &old.backup,
        "apim-neu",
        now(),
    )
    .unwrap();
    let mut run = crate::store::RunRecord {
        schema_version: SCHEMA_VERSION,
        run_id: Uuid::from_u128(7),
        started_at: now(),
        updated_at: now(),
        finished_at: None,
        status: crate::store::RunStatus::Interrupted,
        continue_on_error: false,
        plan,
    };
    cp.put_run(&run).unwrap();
    assert!(
        prune(&cp, &topo, &stores, now(), false)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .head("apim-backups", old.backup.as_str())
            .await
            .unwrap()
            .is_some()
    );

    // Once the run is over, retention applies again.
    run.status = crate::store::RunStatus::Failed;
    cp.put_run(&run).unwrap();
    let pruned = prune(&cp, &topo, &stores, now(), false).await.unwrap();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].backup, old.backup);
}
