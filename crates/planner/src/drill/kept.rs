//! Source snapshots kept beside backups, for verification without the source.
//!
//! When a drill (or clone without overrides) verifies a restore against its source, the
//! source's [`ConfigSnapshot`] is then known to describe exactly what the backup holds. It is
//! written beside the backup, in the same container, as `{backup}.drsync-snapshot.json`
//! ([`snapshot_blob`]). A failover, which must not call the old primary, reads it back and
//! compares the standby's content with it; without one, only hostnames and identity can be
//! checked. The blob holds names, content hashes, the SKU, hostnames and identity ids: never a
//! secret or a secret's value. Its name does not parse as a backup name, so catalog rebuilds
//! ignore it; [`save`] deletes kept snapshots whose backup is gone (retention pruning removes
//! only the backup and its sidecar).

use bytes::Bytes;
use drsync_arm_client::blob::{BlobError, BlobStore};
use drsync_core::{BackupName, Timestamp};

use super::snapshot::ConfigSnapshot;

/// The version of the kept-snapshot document.
pub const KEPT_SCHEMA_VERSION: u32 = 1;

/// What the blob name of a kept snapshot ends with.
pub const KEPT_SUFFIX: &str = ".drsync-snapshot.json";

/// The blob holding the snapshot kept beside `backup`.
pub fn snapshot_blob(backup: &BackupName) -> String {
    format!("{backup}{KEPT_SUFFIX}")
}

/// The kept document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeptSnapshot {
    /// [`KEPT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The backup it describes.
    pub backup: BackupName,
    /// When it was kept.
    pub kept_at: Timestamp,
    /// The drill report whose verification proved it.
    pub report: String,
    /// The source as the backup holds it.
    pub snapshot: ConfigSnapshot,
}

/// Writes `doc` beside its backup, then deletes kept snapshots of the same source whose
/// backup blob no longer exists.
pub async fn save(
    store: &dyn BlobStore,
    container: &str,
    doc: &KeptSnapshot,
) -> Result<(), BlobError> {
    let body = serde_json::to_vec_pretty(doc).expect("snapshots serialize");
    store
        .put(container, &snapshot_blob(&doc.backup), Bytes::from(body))
        .await?;
    let prefix = format!("{}.", doc.backup.service());
    let blobs = store.list(container, &prefix).await?;
    let names: std::collections::BTreeSet<&str> = blobs.iter().map(|b| b.name.as_str()).collect();
    for name in &names {
        if let Some(backup) = name.strip_suffix(KEPT_SUFFIX)
            && BackupName::parse(backup).is_ok()
            && !names.contains(backup)
        {
            match store.delete(container, name).await {
                Ok(()) | Err(BlobError::BlobNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The snapshot kept beside `backup`, if there is a readable one that describes it.
pub async fn load(
    store: &dyn BlobStore,
    container: &str,
    backup: &BackupName,
) -> Result<Option<KeptSnapshot>, BlobError> {
    match store.get(container, &snapshot_blob(backup)).await {
        Ok(bytes) => Ok(serde_json::from_slice::<KeptSnapshot>(&bytes)
            .ok()
            .filter(|d| d.schema_version <= KEPT_SCHEMA_VERSION && &d.backup == backup)),
        Err(BlobError::BlobNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use drsync_core::{Clock, ManualClock, Sku, SkuTier};

    use super::*;
    use crate::azure::fake::MemoryBlobStore;

    fn t0() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .into()
    }

    fn doc(backup: &BackupName) -> KeptSnapshot {
        let mut snapshot = ConfigSnapshot::new(
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim-weu",
            t0(),
            Sku {
                tier: SkuTier::Premium,
                capacity: 1,
            },
        );
        snapshot.add_items(
            super::super::snapshot::ItemKind::Api,
            [super::super::snapshot::SnapshotItem::new(
                "orders",
                serde_json::json!({"path": "orders"}),
            )],
        );
        KeptSnapshot {
            schema_version: KEPT_SCHEMA_VERSION,
            backup: backup.clone(),
            kept_at: t0(),
            report: "drill-x".into(),
            snapshot,
        }
    }

    #[tokio::test]
    async fn kept_snapshots_read_back_and_orphans_are_removed() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0()));
        let store = MemoryBlobStore::new("acct", clock);
        store.create_container("c").await.unwrap();
        let b1 = BackupName::new("apim-weu", t0(), uuid::Uuid::from_u128(1));
        let b2 = BackupName::new(
            "apim-weu",
            t0() + chrono::Duration::hours(1),
            uuid::Uuid::from_u128(2),
        );
        for b in [&b1, &b2] {
            store
                .put("c", b.as_str(), Bytes::from_static(b"backup"))
                .await
                .unwrap();
        }
        save(&store, "c", &doc(&b1)).await.unwrap();
        assert_eq!(load(&store, "c", &b1).await.unwrap(), Some(doc(&b1)));
        assert_eq!(load(&store, "c", &b2).await.unwrap(), None);
        // A snapshot under another backup's name is not taken for it.
        store
            .put(
                "c",
                &snapshot_blob(&b2),
                Bytes::from(serde_json::to_vec(&doc(&b1)).unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(load(&store, "c", &b2).await.unwrap(), None);
        // The first backup is pruned: the next save removes its kept snapshot.
        store.delete("c", b1.as_str()).await.unwrap();
        save(&store, "c", &doc(&b2)).await.unwrap();
        assert_eq!(load(&store, "c", &b1).await.unwrap(), None);
        assert!(
            store
                .head("c", &snapshot_blob(&b1))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(load(&store, "c", &b2).await.unwrap(), Some(doc(&b2)));
        // The kept blob is not a backup name.
        assert!(BackupName::parse(&snapshot_blob(&b2)).is_err());
    }
}
