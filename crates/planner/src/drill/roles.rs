//! Role swaps recorded by `drsync failover` and undone by `drsync failback`.
//!
//! After a failover of replication `R` (primary `P`, targets `[S, T]`) to `S`, later runs must
//! treat `S` as the primary: back it up and restore into `P` (once reachable again) and `T`.
//! The swap is kept in the state directory as `roles.json` (a small versioned document, not in
//! the sled database, so it can be read and repaired by hand in an emergency) and applied to the
//! configuration with [`RoleState::apply`] before building the topology. `failback` restores the
//! current primary's backup into the original primary and removes the swap.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use drsync_arm_client::blob::{BlobError, BlobStore};
use drsync_core::Timestamp;
use drsync_core::config::{Config, Role};

/// The version of `roles.json`.
pub const ROLES_SCHEMA_VERSION: u32 = 1;

/// The version of the role record kept in storage ([`StoredRoles`]).
pub const STORED_ROLES_SCHEMA_VERSION: u32 = 1;

/// One replication whose primary is not the configured one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleSwap {
    /// The replication's name.
    pub replication: String,
    /// The primary written in the configuration (`from`).
    pub original_primary: String,
    /// The service serving as primary since the failover (one of the configured `to`).
    pub primary: String,
    /// When the failover was recorded.
    pub since: Timestamp,
    /// The failover's report id.
    pub report: String,
}

/// Every recorded swap.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RoleState {
    /// [`ROLES_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// At most one per replication.
    pub swaps: Vec<RoleSwap>,
    /// When the roles of each replication last changed (failover or failback), by replication
    /// name; compared with the [`StoredRoles`] in storage by [`RoleState::reconcile`]. Absent
    /// in documents written before drsync kept it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changed_at: BTreeMap<String, Timestamp>,
}

/// The roles of one replication as recorded in its storage container (blob
/// [`StoredRoles::blob_name`]), so they survive the loss of the state directory: written when a
/// failover or failback commits, read back by every command that reaches storage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredRoles {
    /// [`STORED_ROLES_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The replication's name.
    pub replication: String,
    /// The primary written in the configuration.
    pub original_primary: String,
    /// The current primary (equal to `original_primary` after a failback).
    pub primary: String,
    /// When the roles last changed.
    pub changed_at: Timestamp,
    /// The failover's report id, while swapped.
    pub report: Option<String>,
}

impl StoredRoles {
    /// The blob holding a replication's record: `{replication}.drsync-roles.json` (never
    /// mistaken for a backup: backup names have three dot-separated parts with a timestamp).
    pub fn blob_name(replication: &str) -> String {
        format!("{replication}.drsync-roles.json")
    }

    /// Whether the current primary is not the configured one.
    pub fn swapped(&self) -> bool {
        self.primary != self.original_primary
    }

    /// Reads a replication's record from `container`; `None` when there is none.
    pub async fn load(
        store: &dyn BlobStore,
        container: &str,
        replication: &str,
    ) -> Result<Option<Self>, RoleError> {
        let blob = Self::blob_name(replication);
        let bytes = match store.get(container, &blob).await {
            Ok(b) => b,
            Err(BlobError::BlobNotFound { .. } | BlobError::ContainerNotFound { .. }) => {
                return Ok(None);
            }
            Err(e) => {
                return Err(RoleError::Storage {
                    blob: format!("{}/{container}/{blob}", store.account()),
                    reason: e.to_string(),
                });
            }
        };
        let doc: Self = serde_json::from_slice(&bytes).map_err(|e| RoleError::Storage {
            blob: format!("{}/{container}/{blob}", store.account()),
            reason: format!("not a drsync role record ({e})"),
        })?;
        if doc.schema_version > STORED_ROLES_SCHEMA_VERSION || doc.replication != replication {
            return Err(RoleError::Storage {
                blob: format!("{}/{container}/{blob}", store.account()),
                reason: format!(
                    "record of replication `{}` with schema version {}; this drsync reads version {STORED_ROLES_SCHEMA_VERSION} of `{replication}`",
                    doc.replication, doc.schema_version
                ),
            });
        }
        Ok(Some(doc))
    }

    /// Writes the record into `container` (replacing the previous one).
    pub async fn save(&self, store: &dyn BlobStore, container: &str) -> Result<(), RoleError> {
        let blob = Self::blob_name(&self.replication);
        let body = serde_json::to_vec_pretty(self).expect("role records serialize");
        store
            .put(container, &blob, Bytes::from(body))
            .await
            .map_err(|e| RoleError::Storage {
                blob: format!("{}/{container}/{blob}", store.account()),
                reason: e.to_string(),
            })
    }
}

/// What [`RoleState::reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// The local document changed and must be saved.
    pub changed: bool,
    /// Records to write to storage (the local state knows of a newer change).
    pub publish: Vec<StoredRoles>,
    /// One line per replication whose roles were taken from one side to the other.
    pub notes: Vec<String>,
}

/// What is wrong with the recorded roles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// `roles.json` cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `roles.json` is not a role document drsync can read.
    #[error("{path}: {reason}; fix or remove the file (it only records failovers)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The role record in storage cannot be read or written.
    #[error("role record {blob}: {reason}")]
    Storage {
        /// `{account}/{container}/{blob}`.
        blob: String,
        /// Why.
        reason: String,
    },
    /// The state directory and storage record different roles for the same instant.
    #[error(
        "replication `{replication}`: the state directory says {local} but the role record in storage says {stored}, both as of {at}; remove `roles.json` from the state directory to take storage's, or run `drsync failover`/`drsync failback` again to record the roles you want"
    )]
    Conflict {
        /// The replication.
        replication: String,
        /// The local roles.
        local: String,
        /// The stored roles.
        stored: String,
        /// The instant both claim.
        at: String,
    },
    /// A recorded swap no longer fits the configuration.
    #[error(
        "the state records a failover of replication `{replication}` to `{primary}`, but {problem}; run `drsync failback` or edit the configuration"
    )]
    Mismatch {
        /// The replication.
        replication: String,
        /// The recorded primary.
        primary: String,
        /// What does not fit.
        problem: String,
    },
}

impl RoleState {
    /// Where the document lives.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("roles.json")
    }

    /// Reads the document; no file means no swap.
    pub fn load(state_dir: &Path) -> Result<Self, RoleError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    schema_version: ROLES_SCHEMA_VERSION,
                    ..Self::default()
                });
            }
            Err(source) => return Err(RoleError::Io { path, source }),
        };
        let state: RoleState = serde_json::from_str(&text).map_err(|e| RoleError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if state.schema_version != ROLES_SCHEMA_VERSION {
            return Err(RoleError::Corrupt {
                path,
                reason: format!("schema version {} is not supported", state.schema_version),
            });
        }
        Ok(state)
    }

    /// Writes the document durably: to a temporary file, flushed to disk, then renamed over
    /// `roles.json` and the directory flushed. A crash at any point leaves either the old or
    /// the new document, never a torn one (a leftover `roles.json.tmp` is ignored by
    /// [`RoleState::load`] and replaced by the next save).
    pub fn save(&self, state_dir: &Path) -> Result<(), RoleError> {
        use std::io::Write as _;
        let path = Self::path(state_dir);
        std::fs::create_dir_all(state_dir).map_err(|source| RoleError::Io {
            path: state_dir.into(),
            source,
        })?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("roles serialise");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RoleError::Io { path, source }
        };
        let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename itself must survive a power cut (best effort where directories cannot be
        // opened, as on Windows).
        if let Ok(dir) = std::fs::File::open(state_dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The swap of a replication, if any.
    pub fn swap(&self, replication: &str) -> Option<&RoleSwap> {
        self.swaps.iter().find(|s| s.replication == replication)
    }

    /// Records that `new_primary` took over `replication` from `original_primary`. A second
    /// failover of the same replication replaces the first (the original primary is kept).
    pub fn record_failover(
        &mut self,
        replication: &str,
        original_primary: &str,
        new_primary: &str,
        since: Timestamp,
        report: &str,
    ) {
        self.schema_version = ROLES_SCHEMA_VERSION;
        let original = self.swap(replication).map_or_else(
            || original_primary.to_string(),
            |s| s.original_primary.clone(),
        );
        self.swaps.retain(|s| s.replication != replication);
        self.changed_at.insert(replication.into(), since);
        if original != new_primary {
            self.swaps.push(RoleSwap {
                replication: replication.into(),
                original_primary: original,
                primary: new_primary.into(),
                since,
                report: report.into(),
            });
        }
    }

    /// Notes when the roles of `replication` last changed (a failback records its time here,
    /// after [`RoleState::record_failback`]).
    pub fn mark_changed(&mut self, replication: &str, at: Timestamp) {
        self.changed_at.insert(replication.into(), at);
    }

    /// Whether `roles.json` exists in `state_dir` (a missing file means the state was lost or
    /// no failover ever happened here: the record in storage is then taken as it is).
    pub fn exists(state_dir: &Path) -> bool {
        Self::path(state_dir).is_file()
    }

    /// The record of `replication` as kept in storage: swapped (its current primary differs
    /// from `configured_primary`) or not. `None` when nothing was ever recorded for it here.
    pub fn stored(&self, replication: &str, configured_primary: &str) -> Option<StoredRoles> {
        let swap = self.swap(replication);
        let changed_at = self
            .changed_at
            .get(replication)
            .copied()
            .or(swap.map(|s| s.since))?;
        Some(StoredRoles {
            schema_version: STORED_ROLES_SCHEMA_VERSION,
            replication: replication.into(),
            original_primary: swap.map_or_else(
                || configured_primary.to_string(),
                |s| s.original_primary.clone(),
            ),
            primary: swap.map_or_else(|| configured_primary.to_string(), |s| s.primary.clone()),
            changed_at,
            report: swap.map(|s| s.report.clone()),
        })
    }

    /// Reconciles the local roles with the records found in storage (one per replication that
    /// has one). Per replication, the newer record wins: storage's when this document does not
    /// exist (`local_exists` false: the state was lost) or records an older change (or none);
    /// the local one, to be published, when it is newer or storage has none. Two different
    /// records of the same instant are a conflict drsync cannot settle. `self` is updated in
    /// place; the result says what changed and what to write back to storage.
    pub fn reconcile(
        &mut self,
        local_exists: bool,
        stored: &[StoredRoles],
    ) -> Result<Reconciled, RoleError> {
        let mut out = Reconciled::default();
        let mut names: BTreeSet<String> = stored.iter().map(|s| s.replication.clone()).collect();
        names.extend(self.swaps.iter().map(|s| s.replication.clone()));
        for name in names {
            let remote = stored.iter().find(|s| s.replication == name);
            let local_primary = self.swap(&name).map(|s| s.primary.clone());
            let local_at = self
                .changed_at
                .get(&name)
                .copied()
                .or(self.swap(&name).map(|s| s.since));
            let Some(remote) = remote else {
                // Only this state knows of the failover: publish it.
                if let Some(swap) = self.swap(&name) {
                    let configured = swap.original_primary.clone();
                    out.publish.extend(self.stored(&name, &configured));
                }
                continue;
            };
            let remote_primary = remote.swapped().then(|| remote.primary.clone());
            let same = match (self.swap(&name), remote.swapped()) {
                (Some(l), true) => {
                    l.primary == remote.primary && l.original_primary == remote.original_primary
                }
                (None, false) => true,
                _ => false,
            };
            if same {
                if local_at.is_none_or(|t| t < remote.changed_at) {
                    self.changed_at.insert(name.clone(), remote.changed_at);
                    out.changed = true;
                }
                continue;
            }
            let describe = |p: &Option<String>| match p {
                Some(p) => format!("`{p}` is the primary"),
                None => "the configured primary is the primary".to_string(),
            };
            let storage_wins = !local_exists || local_at.is_none_or(|t| t < remote.changed_at);
            if storage_wins {
                self.schema_version = ROLES_SCHEMA_VERSION;
                self.swaps.retain(|s| s.replication != name);
                if remote.swapped() {
                    self.swaps.push(RoleSwap {
                        replication: name.clone(),
                        original_primary: remote.original_primary.clone(),
                        primary: remote.primary.clone(),
                        since: remote.changed_at,
                        report: remote.report.clone().unwrap_or_default(),
                    });
                }
                self.changed_at.insert(name.clone(), remote.changed_at);
                out.changed = true;
                out.notes.push(format!(
                    "replication `{name}`: took the roles recorded in storage ({}, since {}) over the local state ({})",
                    describe(&remote_primary),
                    remote.changed_at.to_rfc3339(),
                    describe(&local_primary)
                ));
            } else if local_at.is_some_and(|t| t > remote.changed_at) {
                let configured = self.swap(&name).map_or_else(
                    || remote.original_primary.clone(),
                    |s| s.original_primary.clone(),
                );
                out.publish.extend(self.stored(&name, &configured));
                out.notes.push(format!(
                    "replication `{name}`: the local state records a newer role change ({}) than storage ({}); updating storage",
                    describe(&local_primary),
                    describe(&remote_primary)
                ));
            } else {
                return Err(RoleError::Conflict {
                    replication: name.clone(),
                    local: describe(&local_primary),
                    stored: describe(&remote_primary),
                    at: remote.changed_at.to_rfc3339(),
                });
            }
        }
        Ok(out)
    }

    /// Removes the swap of a replication (after a failback); returns it.
    pub fn record_failback(&mut self, replication: &str) -> Option<RoleSwap> {
        let i = self
            .swaps
            .iter()
            .position(|s| s.replication == replication)?;
        Some(self.swaps.remove(i))
    }

    /// Rewrites `config` so that every swapped replication runs from its current primary: the
    /// new primary becomes `from` (role primary), the configured primary takes its place among
    /// the targets (role standby). Returns one line per swap applied. Idempotent: a swap
    /// already applied to `config` is left as it is.
    pub fn apply(&self, config: &mut Config) -> Result<Vec<String>, RoleError> {
        let mut notes = Vec::new();
        for swap in &self.swaps {
            let mismatch = |problem: String| RoleError::Mismatch {
                replication: swap.replication.clone(),
                primary: swap.primary.clone(),
                problem,
            };
            let r = config
                .replications
                .iter_mut()
                .find(|r| r.name == swap.replication)
                .ok_or_else(|| mismatch("the configuration has no such replication".into()))?;
            if r.from == swap.primary && r.to.contains(&swap.original_primary) {
                // Already applied (the configuration was rewritten earlier in this process).
                continue;
            }
            if r.from != swap.original_primary {
                return Err(mismatch(format!(
                    "its configured primary is now `{}`, not `{}`",
                    r.from, swap.original_primary
                )));
            }
            let Some(slot) = r.to.iter_mut().find(|t| **t == swap.primary) else {
                return Err(mismatch(format!(
                    "`{}` is no longer one of its targets",
                    swap.primary
                )));
            };
            *slot = swap.original_primary.clone();
            r.from = swap.primary.clone();
            for s in &mut config.services {
                if s.service.name == swap.primary {
                    s.role = Role::Primary;
                } else if s.service.name == swap.original_primary {
                    s.role = Role::Standby;
                }
            }
            notes.push(format!(
                "replication `{}` runs from `{}` since the failover of {} (configured primary `{}` is a standby until `drsync failback`)",
                swap.replication,
                swap.primary,
                swap.since.to_rfc3339(),
                swap.original_primary
            ));
        }
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[azure]
endpoint = "embedded"
[[storage]]
name = "neu"
account = "drsyncneu"
region = "northeurope"
container = "apim-backups"
endpoint = "dir:storage"
access = "system_identity"
[[service]]
name = "apim-weu"
subscription = "00000000-0000-0000-0000-000000000001"
resource_group = "rg-weu"
region = "westeurope"
sku = "Premium"
role = "primary"
[[service]]
name = "apim-neu"
subscription = "00000000-0000-0000-0000-000000000001"
resource_group = "rg-neu"
region = "northeurope"
sku = "Premium"
role = "standby"
[[service]]
name = "apim-stg"
subscription = "00000000-0000-0000-0000-000000000001"
resource_group = "rg-weu"
region = "westeurope"
sku = "Premium"
role = "staging"
[[replication]]
name = "contoso-dr"
from = "apim-weu"
to = ["apim-neu", "apim-stg"]
storage = "neu"
rpo = "1h"
retention = "14d"
"#;

    fn config() -> Config {
        Config::parse(CONFIG, Path::new("/tmp/drsync.toml")).expect("test config parses")
    }

    fn at() -> Timestamp {
        chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .into()
    }

    #[test]
    fn a_failover_swaps_source_and_target_and_a_failback_restores_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = RoleState::load(dir.path()).unwrap();
        assert!(state.swaps.is_empty());
        state.record_failover("contoso-dr", "apim-weu", "apim-neu", at(), "failover-x");
        state.save(dir.path()).unwrap();
        let state = RoleState::load(dir.path()).unwrap();
        let mut c = config();
        let notes = state.apply(&mut c).unwrap();
        assert_eq!(notes.len(), 1);
        let applied = c.clone();
        assert!(
            state.apply(&mut c).unwrap().is_empty(),
            "applying twice changes nothing"
        );
        assert_eq!(c, applied);
        let r = &c.replications[0];
        assert_eq!(r.from, "apim-neu");
        assert_eq!(r.to, ["apim-weu", "apim-stg"]);
        assert_eq!(c.service("apim-neu").unwrap().role, Role::Primary);
        assert_eq!(c.service("apim-weu").unwrap().role, Role::Standby);
        assert_eq!(c.service("apim-stg").unwrap().role, Role::Staging);

        let mut state = state;
        let swap = state.record_failback("contoso-dr").unwrap();
        assert_eq!(swap.original_primary, "apim-weu");
        let mut c2 = config();
        assert!(state.apply(&mut c2).unwrap().is_empty());
        assert_eq!(c2, config());
    }

    #[test]
    fn failing_over_back_to_the_original_primary_clears_the_swap() {
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-neu", at(), "a");
        state.record_failover("contoso-dr", "apim-neu", "apim-weu", at(), "b");
        assert!(state.swaps.is_empty());
    }

    #[test]
    fn a_swap_that_no_longer_fits_the_configuration_is_refused() {
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-gone", at(), "a");
        let e = state.apply(&mut config()).unwrap_err().to_string();
        assert_eq!(
            e,
            "the state records a failover of replication `contoso-dr` to `apim-gone`, but `apim-gone` is no longer one of its targets; run `drsync failback` or edit the configuration"
        );
    }

    // See: #6. A crash between writing the temporary file and renaming it leaves the previous
    // document in force; the next save replaces the leftover.
    #[test]
    fn a_crash_before_the_rename_leaves_the_previous_roles() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-neu", at(), "a");
        state.save(dir.path()).unwrap();
        // A failback that crashed half-way through writing its document.
        std::fs::write(
            dir.path().join("roles.json.tmp"),
            "{\"schema_version\":1,\"sw",
        )
        .unwrap();
        let loaded = RoleState::load(dir.path()).unwrap();
        assert_eq!(loaded, state);
        let mut again = loaded;
        again.record_failback("contoso-dr");
        again.save(dir.path()).unwrap();
        assert!(RoleState::load(dir.path()).unwrap().swaps.is_empty());
        assert!(!dir.path().join("roles.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(RoleState::path(dir.path()), "{").unwrap();
        let e = RoleState::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("roles.json") && e.contains("fix or remove the file"),
            "{e}"
        );
    }

    fn later(hours: i64) -> Timestamp {
        at() + chrono::Duration::hours(hours)
    }

    fn stored(primary: &str, changed_at: Timestamp) -> StoredRoles {
        StoredRoles {
            schema_version: STORED_ROLES_SCHEMA_VERSION,
            replication: "contoso-dr".into(),
            original_primary: "apim-weu".into(),
            primary: primary.into(),
            changed_at,
            report: (primary != "apim-weu").then(|| "failover-x".to_string()),
        }
    }

    // See: #6. The stored record has a fixed, versioned shape (read back after the state is lost).
    #[test]
    fn the_stored_record_has_its_documented_shape() {
        let json = serde_json::to_value(stored("apim-neu", at())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schema_version": 1, "replication": "contoso-dr", "original_primary": "apim-weu",
                "primary": "apim-neu", "changed_at": "2026-11-27T12:00:00Z", "report": "failover-x"
            })
        );
        assert_eq!(
            StoredRoles::blob_name("contoso-dr"),
            "contoso-dr.drsync-roles.json"
        );
        assert!(drsync_core::BackupName::parse(&StoredRoles::blob_name("contoso-dr")).is_err());
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-neu", at(), "failover-x");
        assert_eq!(
            state.stored("contoso-dr", "apim-weu"),
            Some(stored("apim-neu", at()))
        );
        assert_eq!(RoleState::default().stored("contoso-dr", "apim-weu"), None);
        state.record_failback("contoso-dr");
        state.mark_changed("contoso-dr", later(2));
        assert_eq!(
            state.stored("contoso-dr", "apim-weu"),
            Some(stored("apim-weu", later(2)))
        );
    }

    // See: #6. A lost state directory takes the failover recorded in storage.
    #[test]
    fn a_missing_local_document_takes_the_stored_swap() {
        let mut state = RoleState::default();
        let r = state.reconcile(false, &[stored("apim-neu", at())]).unwrap();
        assert!(r.changed && r.publish.is_empty());
        assert_eq!(r.notes.len(), 1, "{r:?}");
        assert_eq!(state.swap("contoso-dr").unwrap().primary, "apim-neu");
        let mut c = config();
        state.apply(&mut c).unwrap();
        assert_eq!(c.replications[0].from, "apim-neu");
        // Reconciling again changes nothing.
        let again = state.reconcile(true, &[stored("apim-neu", at())]).unwrap();
        assert_eq!(again, Reconciled::default());
    }

    #[test]
    fn the_newer_record_wins_either_way() {
        // Storage recorded a failback after the local failover: storage wins.
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-neu", at(), "a");
        let r = state
            .reconcile(true, &[stored("apim-weu", later(1))])
            .unwrap();
        assert!(r.changed);
        assert!(state.swaps.is_empty());
        assert_eq!(state.changed_at["contoso-dr"], later(1));

        // The local failover is newer than storage's record (or storage has none): publish it.
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-neu", later(3), "b");
        let r = state
            .reconcile(true, &[stored("apim-weu", later(1))])
            .unwrap();
        assert!(!r.changed);
        assert_eq!(
            r.publish,
            [StoredRoles {
                report: Some("b".into()),
                ..stored("apim-neu", later(3))
            }]
        );
        let r = state.reconcile(true, &[]).unwrap();
        assert_eq!(r.publish.len(), 1);
        assert_eq!(r.publish[0].primary, "apim-neu");
    }

    #[test]
    fn different_roles_of_the_same_instant_are_a_conflict() {
        let mut state = RoleState::default();
        state.record_failover("contoso-dr", "apim-weu", "apim-stg", at(), "a");
        let e = state
            .reconcile(true, &[stored("apim-neu", at())])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "replication `contoso-dr`: the state directory says `apim-stg` is the primary but the role record in storage says `apim-neu` is the primary, both as of 2026-11-27T12:00:00+00:00; remove `roles.json` from the state directory to take storage's, or run `drsync failover`/`drsync failback` again to record the roles you want"
        );
        assert_eq!(
            state.swap("contoso-dr").unwrap().primary,
            "apim-stg",
            "unchanged"
        );
    }

    #[tokio::test]
    async fn the_stored_record_round_trips_through_a_blob_store() {
        let clock = std::sync::Arc::new(drsync_core::ManualClock::new(at()));
        let store = crate::azure::fake::MemoryBlobStore::new("drsyncneu", clock);
        store.create_container("apim-backups").await.unwrap();
        assert_eq!(
            StoredRoles::load(&store, "apim-backups", "contoso-dr")
                .await
                .unwrap(),
            None
        );
        let doc = stored("apim-neu", at());
        doc.save(&store, "apim-backups").await.unwrap();
        assert_eq!(
            StoredRoles::load(&store, "apim-backups", "contoso-dr")
                .await
                .unwrap(),
            Some(doc)
        );
        store
            .put(
                "apim-backups",
                "contoso-dr.drsync-roles.json",
                Bytes::from_static(b"{"),
            )
            .await
            .unwrap();
        let e = StoredRoles::load(&store, "apim-backups", "contoso-dr")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("role record drsyncneu/apim-backups/contoso-dr.drsync-roles.json: not a drsync role record"), "{e}");
    }
}
