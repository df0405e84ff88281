//! The backup catalog: what backups exist, where, from which service, until when.
//!
//! Each backup drsync takes gets a sidecar blob beside it (`{backup}.drsync.json`, a
//! [`BackupDoc`]), so the catalog can be rebuilt from storage alone ([`sync_from_storage`]):
//! drsync can run from the standby region after the primary region and the local state are
//! gone. [`prune`] applies each replication's retention, deleting the backup blob and its
//! sidecar. The newest valid backup of each replication is always kept.
//!
//! A successful restore leaves a marker beside the backup's sidecar
//! (`{backup}.drsync-restored.{target}.json`, a [`RestoreMarker`]): what each standby holds is
//! rebuilt from storage too, so a state directory rebuilt by `catalog sync` does not restore
//! every target again. Pruning a backup deletes its markers.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use drsync_arm_client::blob::{BlobError, BlobStore};
use drsync_core::{BackupName, BackupRecord, Consistency, Timestamp};

use crate::store::{BackupDoc, Checkpoints, SCHEMA_VERSION, SkuDoc, StoreError};
use crate::topology::{StorageNode, Topology};

#[cfg(test)]
mod tests;

pub use crate::store::RestoreDoc as RestoreEntry;

/// One backup in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// What is known of it.
    pub record: BackupRecord,
    /// The run that took it, when known.
    pub run_id: Option<Uuid>,
}

/// What catalog operations fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The local state.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Blob storage.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A catalog record names an invalid source.
    #[error("catalog record `{backup}` is damaged: {reason}")]
    Damaged {
        /// The backup.
        backup: String,
        /// Why.
        reason: String,
    },
}

/// Every catalog entry, oldest first.
pub fn entries(checkpoints: &Checkpoints) -> Result<Vec<CatalogEntry>, CatalogError> {
    let mut out = Vec::new();
    for doc in checkpoints.backups()? {
        let record = doc.to_record().map_err(|reason| CatalogError::Damaged {
            backup: doc.backup.to_string(),
            reason,
        })?;
        out.push(CatalogEntry {
            record,
            run_id: doc.run_id,
        });
    }
    out.sort_by(|a, b| {
        a.record
            .created_at
            .cmp(&b.record.created_at)
            .then(a.record.name.cmp(&b.record.name))
    });
    Ok(out)
}

/// Writes the sidecar blob of a backup.
pub async fn write_sidecar(store: &dyn BlobStore, doc: &BackupDoc) -> Result<(), BlobError> {
    let body = serde_json::to_vec_pretty(doc).expect("sidecars serialize");
    store
        .put(
            &doc.container,
            &doc.backup.sidecar_blob(),
            Bytes::from(body),
        )
        .await
}

/// Reads the sidecar blob of a backup, if present and readable.
pub async fn read_sidecar(
    store: &dyn BlobStore,
    container: &str,
    backup: &BackupName,
) -> Result<Option<BackupDoc>, BlobError> {
    match store.get(container, &backup.sidecar_blob()).await {
        Ok(bytes) => Ok(serde_json::from_slice::<BackupDoc>(&bytes)
            .ok()
            .filter(|d| d.schema_version <= SCHEMA_VERSION && &d.backup == backup)),
        Err(BlobError::BlobNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The version of [`RestoreMarker`].
pub const MARKER_SCHEMA_VERSION: u32 = 1;

/// A restore that succeeded, as kept in storage beside the backup's sidecar.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreMarker {
    /// [`MARKER_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The target's resource id.
    pub target: String,
    /// The backup restored.
    pub backup: BackupName,
    /// When the restore completed.
    pub restored_at: Timestamp,
    /// The run that did it.
    pub run_id: Uuid,
}

impl RestoreMarker {
    /// The marker's blob: `{backup}.drsync-restored.{target name, lowercase}.json`. One per
    /// backup and target, so writing it again (a resumed run) replaces it.
    pub fn blob_name(backup: &BackupName, target_name: &str) -> String {
        format!(
            "{}.drsync-restored.{}.json",
            backup.as_str(),
            target_name.to_ascii_lowercase()
        )
    }

    /// Whether `blob` is a restore marker's name (of any backup).
    pub fn is_marker_blob(blob: &str) -> bool {
        blob.ends_with(".json") && blob.contains(".drsync-restored.")
    }
}

/// Writes the restore marker of `marker.target` (named `target_name` in the configuration)
/// into `container`.
pub async fn write_restore_marker(
    store: &dyn BlobStore,
    container: &str,
    target_name: &str,
    marker: &RestoreMarker,
) -> Result<(), BlobError> {
    let body = serde_json::to_vec_pretty(marker).expect("markers serialize");
    store
        .put(
            container,
            &RestoreMarker::blob_name(&marker.backup, target_name),
            Bytes::from(body),
        )
        .await
}

/// What [`sync_from_storage`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Backups found (with or without sidecar).
    pub found: usize,
    /// Backups found without a readable sidecar (catalogued with consistency `unknown`).
    pub without_sidecar: Vec<String>,
    /// Catalog records dropped because their blob is gone.
    pub removed: Vec<String>,
    /// Blobs that look like backups of services drsync does not know (not catalogued).
    pub unknown_source: Vec<String>,
    /// Containers that do not exist.
    pub missing_containers: Vec<String>,
}

/// What [`sync_restores_from_storage`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSyncReport {
    /// Restore records rebuilt from restore markers (`target <- backup`), newest per target.
    pub restores: Vec<String>,
    /// Marker blobs that could not be read or name a service not in the configuration.
    pub unreadable_markers: Vec<String>,
}

/// Rebuilds the catalog records of every configured storage container from the blobs and
/// sidecars in it. Needs nothing but storage access: no ARM call, no prior local state.
pub async fn sync_from_storage(
    checkpoints: &Checkpoints,
    topology: &Topology,
    stores: &[(StorageNode, Arc<dyn BlobStore>)],
) -> Result<SyncReport, CatalogError> {
    let mut report = SyncReport::default();
    let mut seen = std::collections::BTreeSet::new();
    for (node, store) in stores {
        let (account, container) = (&node.target.account, &node.target.container);
        if !seen.insert((account.clone(), container.clone())) {
            continue;
        }
        if !store.container_exists(container).await? {
            report
                .missing_containers
                .push(format!("{account}/{container}"));
            continue;
        }
        let blobs = store.list(container, "").await?;
        let mut found = std::collections::BTreeSet::new();
        for blob in &blobs {
            let Ok(name) = BackupName::parse(&blob.name) else {
                continue;
            };
            let doc = match read_sidecar(store.as_ref(), container, &name).await? {
                Some(doc) => doc,
                None => {
                    let Some(service) = topology.service(name.service()) else {
                        report
                            .unknown_source
                            .push(format!("{account}/{container}/{name}"));
                        continue;
                    };
                    report.without_sidecar.push(name.to_string());
                    // Without a sidecar, the blob's write time is the best creation time known.
                    let created_at = blob.last_modified.max(name.started_at());
                    BackupDoc {
                        schema_version: SCHEMA_VERSION,
                        backup: name.clone(),
                        source: service.service.resource_id(),
                        sku: SkuDoc {
                            tier: service.sku.tier,
                            capacity: service.sku.capacity,
                        },
                        storage_account: account.clone(),
                        container: container.clone(),
                        created_at,
                        expires_at: BackupRecord::expiry_for(created_at),
                        change_marker: None,
                        consistency: Consistency::Unknown,
                        run_id: None,
                    }
                }
            };
            report.found += 1;
            found.insert(name.clone());
            checkpoints.put_backup(&doc)?;
        }
        for doc in checkpoints.backups()? {
            if &doc.storage_account == account
                && &doc.container == container
                && !found.contains(&doc.backup)
            {
                checkpoints.delete_backup(&doc.backup)?;
                report.removed.push(doc.backup.to_string());
            }
        }
    }
    Ok(report)
}

/// Rebuilds the restore records (what each target holds) from the restore markers in every
/// configured storage container: the newest marker per target, unless the local record is as
/// new or newer. Needs nothing but storage access. `drsync catalog sync` runs it after
/// [`sync_from_storage`], so the next sync after a lost state does not restore every target
/// again.
pub async fn sync_restores_from_storage(
    checkpoints: &Checkpoints,
    topology: &Topology,
    stores: &[(StorageNode, Arc<dyn BlobStore>)],
) -> Result<RestoreSyncReport, CatalogError> {
    let mut report = RestoreSyncReport::default();
    let mut seen = std::collections::BTreeSet::new();
    // The newest marker of each target (lowercase name -> configured name, marker).
    let mut markers: std::collections::BTreeMap<String, (String, RestoreMarker)> =
        std::collections::BTreeMap::new();
    for (node, store) in stores {
        let (account, container) = (&node.target.account, &node.target.container);
        if !seen.insert((account.clone(), container.clone()))
            || !store.container_exists(container).await?
        {
            continue;
        }
        let blobs = store.list(container, "").await?;
        for blob in blobs
            .iter()
            .filter(|b| RestoreMarker::is_marker_blob(&b.name))
        {
            let marker = match store.get(container, &blob.name).await {
                Ok(bytes) => serde_json::from_slice::<RestoreMarker>(&bytes)
                    .ok()
                    .filter(|m| m.schema_version <= MARKER_SCHEMA_VERSION),
                Err(BlobError::BlobNotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let target = marker.as_ref().and_then(|m| {
                topology
                    .services()
                    .iter()
                    .find(|s| s.service.resource_id().eq_ignore_ascii_case(&m.target))
            });
            match (marker, target) {
                (Some(m), Some(t)) => {
                    let name = t.service.name.clone();
                    if markers.get(&name.to_ascii_lowercase()).is_none_or(
                        |(_, old): &(String, RestoreMarker)| old.restored_at < m.restored_at,
                    ) {
                        markers.insert(name.to_ascii_lowercase(), (name, m));
                    }
                }
                _ => report
                    .unreadable_markers
                    .push(format!("{account}/{container}/{}", blob.name)),
            }
        }
    }
    // A local record newer than the marker (a restore whose marker could not be written) stays.
    let local = checkpoints.restores()?;
    for (key, (name, m)) in markers {
        if local
            .iter()
            .any(|r| r.target.eq_ignore_ascii_case(&key) && r.restored_at >= m.restored_at)
        {
            continue;
        }
        checkpoints.put_restore(&RestoreEntry {
            schema_version: SCHEMA_VERSION,
            target: name.clone(),
            backup: m.backup.clone(),
            restored_at: m.restored_at,
            run_id: m.run_id,
        })?;
        report.restores.push(format!("{name} <- {}", m.backup));
    }
    Ok(report)
}

/// One backup [`prune`] removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The backup.
    pub backup: BackupName,
    /// Why.
    pub reason: String,
}

/// Backups an unfinished (running or interrupted) run took or is to restore: resuming the run
/// needs them, so [`prune`] leaves them alone.
fn backups_in_use(
    checkpoints: &Checkpoints,
) -> Result<std::collections::BTreeSet<BackupName>, CatalogError> {
    let mut in_use = std::collections::BTreeSet::new();
    for run in checkpoints.runs()? {
        if !run.status.is_unfinished() {
            continue;
        }
        for step in &run.plan.steps {
            if let crate::plan::Action::Restore {
                backup: crate::plan::BackupSource::Existing(name),
                ..
            } = &step.action
            {
                in_use.insert(name.clone());
            }
        }
        for rec in checkpoints.steps(run.run_id)? {
            in_use.extend(rec.backup);
        }
    }
    Ok(in_use)
}

/// Applies retention: deletes backups older than their replication's retention (or expired),
/// blob and sidecar first, then the catalog record. Never deleted: the newest valid,
/// non-suspect backup of each replication, the newest backup Azure still accepts (suspect or
/// not), and any backup an unfinished run took or is to restore. With `dry_run`, only reports.
pub async fn prune(
    checkpoints: &Checkpoints,
    topology: &Topology,
    stores: &[(StorageNode, Arc<dyn BlobStore>)],
    now: Timestamp,
    dry_run: bool,
) -> Result<Vec<Pruned>, CatalogError> {
    let all = entries(checkpoints)?;
    let in_use = backups_in_use(checkpoints)?;
    let mut pruned = Vec::new();
    for r in topology.replications() {
        let node = topology.storage_of(r);
        let (account, container) = (&node.target.account, &node.target.container);
        let mut keep: Vec<BackupName> =
            crate::plan::latest_valid(&all, &r.from, account, container, now)
                .map(|e| e.record.name.clone())
                .into_iter()
                .collect();
        // When every recent backup is suspect there is no "valid" one: keep the newest backup
        // Azure still accepts anyway, so the edge is never left with nothing to restore.
        if let Some(newest) = all
            .iter()
            .filter(|e| {
                e.record.source.name.eq_ignore_ascii_case(&r.from)
                    && &e.record.storage_account == account
                    && &e.record.container == container
                    && e.record.is_restorable_at(now)
            })
            .max_by(|a, b| {
                a.record
                    .created_at
                    .cmp(&b.record.created_at)
                    .then(a.record.name.cmp(&b.record.name))
            })
        {
            keep.push(newest.record.name.clone());
        }
        let retention = chrono::Duration::from_std(r.retention).unwrap_or(chrono::Duration::MAX);
        let Some((_, store)) = stores
            .iter()
            .find(|(n, _)| &n.target.account == account && &n.target.container == container)
        else {
            continue;
        };
        for e in all.iter().filter(|e| {
            e.record.source.name.eq_ignore_ascii_case(&r.from)
                && &e.record.storage_account == account
                && &e.record.container == container
        }) {
            if keep.contains(&e.record.name)
                || in_use.contains(&e.record.name)
                || pruned.iter().any(|p: &Pruned| p.backup == e.record.name)
            {
                continue;
            }
            let reason = if !e.record.is_restorable_at(now) {
                "expired (older than 30 days)".to_owned()
            } else if e.record.age(now) > retention {
                format!(
                    "older than the retention of {} of `{}`",
                    crate::plan::human(r.retention),
                    r.name
                )
            } else {
                continue;
            };
            if !dry_run {
                store.delete(container, e.record.name.as_str()).await?;
                store
                    .delete(container, &e.record.name.sidecar_blob())
                    .await?;
                let prefix = format!("{}.drsync-restored.", e.record.name.as_str());
                for marker in store.list(container, &prefix).await? {
                    if RestoreMarker::is_marker_blob(&marker.name) {
                        store.delete(container, &marker.name).await?;
                    }
                }
                checkpoints.delete_backup(&e.record.name)?;
            }
            pruned.push(Pruned {
                backup: e.record.name.clone(),
                reason,
            });
        }
    }
    Ok(pruned)
}
