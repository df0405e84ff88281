//! Role swaps recorded by `drsync failover` and undone by `drsync failback`.
//!
//! After a failover of replication `R` (primary `P`, targets `[S, T]`) to `S`, later runs must
//! treat `S` as the primary: back it up and restore into `P` (once reachable again) and `T`.
//! The swap is kept in the state directory as `roles.json` (a small versioned document, not in
//! the sled database, so it can be read and repaired by hand in an emergency) and applied to the
//! configuration with [`RoleState::apply`] before building the topology. `failback` restores the
//! current primary's backup into the original primary and removes the swap.

use std::path::{Path, PathBuf};

use drsync_core::Timestamp;
use drsync_core::config::{Config, Role};

/// The version of `roles.json`.
pub const ROLES_SCHEMA_VERSION: u32 = 1;

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
                    swaps: Vec::new(),
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
}
