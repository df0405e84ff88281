//! Checkpoints: runs, step states, service leases, the backup catalog and restore records.
//!
//! Persisted types are their own versioned records (`schema_version`), serialized as JSON, not
//! domain types with a derive. The storage underneath is a tiny key-value trait, [`Kv`], with a
//! sled implementation ([`SledKv`], the real one) and an in-memory one ([`MemoryKv`], for unit
//! tests); [`Checkpoints`] puts the typed records on top. Every write is flushed before it
//! returns, so a record written before an external effect survives a crash right after it.
//!
//! Leases: a lease names one service, an owner (a run and a step) and an expiry. Taking one is a
//! compare-and-swap, so two tasks (or two processes sharing a state directory) never operate
//! on one service at once. An owner may retake its own lease (a resumed run), anybody may take
//! an expired one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use drsync_core::{BackupName, BackupRecord, Consistency, ServiceRef, Sku, Timestamp};

use crate::plan::Plan;

#[cfg(test)]
mod tests;

/// The version of every record this module writes.
pub const SCHEMA_VERSION: u32 = 1;

/// What the store can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the state directory open.
    #[error("the state directory `{0}` is in use by another drsync process; wait for it to finish")]
    Locked(String),
    /// The database failed.
    #[error("state database error: {0}")]
    Db(String),
    /// A record could not be read: written by a newer drsync, or damaged.
    #[error("state record `{key}` cannot be read: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// The result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The trees (namespaces) the checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    /// Run records.
    Runs,
    /// Step records, keyed `{run}/{step}`.
    Steps,
    /// Leases, keyed by service resource id (lowercase).
    Leases,
    /// Catalog records, keyed by backup name.
    Backups,
    /// The last restore into each target, keyed by target name (lowercase).
    Restores,
}

impl Tree {
    fn name(self) -> &'static str {
        match self {
            Self::Runs => "runs",
            Self::Steps => "steps",
            Self::Leases => "leases",
            Self::Backups => "backups",
            Self::Restores => "restores",
        }
    }
}

/// A minimal durable key-value store: what sled gives and the in-memory fake imitates.
pub trait Kv: Send + Sync + std::fmt::Debug {
    /// Reads a key.
    fn get(&self, tree: Tree, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a key and flushes.
    fn put(&self, tree: Tree, key: &str, value: Vec<u8>) -> StoreResult<()>;
    /// Removes a key and flushes.
    fn remove(&self, tree: Tree, key: &str) -> StoreResult<()>;
    /// Every (key, value) whose key starts with `prefix`, sorted by key.
    fn scan(&self, tree: Tree, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;
    /// Sets `key` to `new` if it currently holds `old` (`None`: absent); flushes. Returns
    /// whether it swapped.
    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &str,
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> StoreResult<bool>;
}

/// The sled-backed store.
#[derive(Debug, Clone)]
pub struct SledKv {
    db: sled::Db,
}

impl SledKv {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock")
                    || text.contains("WouldBlock")
                    || text.contains("temporarily unavailable")
                {
                    StoreError::Locked(dir.display().to_string())
                } else {
                    StoreError::Db(text)
                }
            })?;
        Ok(Self { db })
    }

    fn tree(&self, tree: Tree) -> StoreResult<sled::Tree> {
        self.db.open_tree(tree.name()).map_err(db)
    }

    fn flush(&self, tree: &sled::Tree) -> StoreResult<()> {
        tree.flush().map(|_| ()).map_err(db)
    }
}

fn db(e: sled::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

impl Kv for SledKv {
    fn get(&self, tree: Tree, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.tree(tree)?.get(key).map_err(db)?.map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let t = self.tree(tree)?;
        t.insert(key, value).map_err(db)?;
        self.flush(&t)
    }

    fn remove(&self, tree: Tree, key: &str) -> StoreResult<()> {
        let t = self.tree(tree)?;
        t.remove(key).map_err(db)?;
        self.flush(&t)
    }

    fn scan(&self, tree: Tree, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|item| {
                let (k, v) = item.map_err(db)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &str,
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> StoreResult<bool> {
        let t = self.tree(tree)?;
        let swapped = t.compare_and_swap(key, old, new).map_err(db)?.is_ok();
        self.flush(&t)?;
        Ok(swapped)
    }
}

type MemoryMap = BTreeMap<(Tree, String), Vec<u8>>;

/// An in-memory store for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryKv {
    data: Arc<Mutex<MemoryMap>>,
}

impl Kv for MemoryKv {
    fn get(&self, tree: Tree, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.data.lock().get(&(tree, key.to_owned())).cloned())
    }

    fn put(&self, tree: Tree, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.data.lock().insert((tree, key.to_owned()), value);
        Ok(())
    }

    fn remove(&self, tree: Tree, key: &str) -> StoreResult<()> {
        self.data.lock().remove(&(tree, key.to_owned()));
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        Ok(self
            .data
            .lock()
            .iter()
            .filter(|((t, k), _)| *t == tree && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn compare_and_swap(
        &self,
        tree: Tree,
        key: &str,
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> StoreResult<bool> {
        let mut data = self.data.lock();
        let k = (tree, key.to_owned());
        if data.get(&k).map(Vec::as_slice) != old {
            return Ok(false);
        }
        match new {
            Some(v) => data.insert(k, v),
            None => data.remove(&k),
        };
        Ok(true)
    }
}

/// How a run ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started and not finished (or killed).
    Running,
    /// Stopped by Ctrl-C with state saved.
    Interrupted,
    /// Every step succeeded.
    Succeeded,
    /// At least one step failed.
    Failed,
}

impl RunStatus {
    /// Whether `drsync sync` should resume the run.
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Running | Self::Interrupted)
    }

    /// The status as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// One run of `sync`, `backup` or `restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run id.
    pub run_id: Uuid,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Its status.
    pub status: RunStatus,
    /// `--continue-on-error`.
    pub continue_on_error: bool,
    /// The plan it executes (a resumed run follows the same plan).
    pub plan: Plan,
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// About to send its POST: the fate of the POST is unknown until it is recorded.
    Intent {
        /// When the intent was recorded.
        at: Timestamp,
    },
    /// Azure accepted the operation; poll it, never POST it again.
    Accepted {
        /// When it was accepted.
        at: Timestamp,
        /// The poller's serialized state (opaque to the planner).
        poll: serde_json::Value,
    },
    /// Done.
    Succeeded {
        /// When.
        at: Timestamp,
    },
    /// Failed, with Azure's code and message.
    Failed {
        /// When.
        at: Timestamp,
        /// ARM's error code, or drsync's.
        code: String,
        /// The message.
        message: String,
    },
    /// Not run because a step it depends on failed, or the run stopped.
    Skipped {
        /// Why.
        reason: String,
    },
}

impl StepState {
    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Intent { .. } => "intent",
            Self::Accepted { .. } => "accepted",
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Skipped { .. } => "skipped",
        }
    }

    /// Whether the step is over (succeeded, failed or skipped).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::Skipped { .. }
        )
    }
}

/// One step of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run.
    pub run_id: Uuid,
    /// The plan's step id.
    pub step_id: String,
    /// Where it is.
    pub state: StepState,
    /// When the state last changed.
    pub updated_at: Timestamp,
    /// Backup steps: the backup being taken (fixed at intent); restores: the backup restored.
    pub backup: Option<BackupName>,
    /// Backup steps: the primary's `configurationChangeDate` read before the POST.
    pub change_marker: Option<Timestamp>,
    /// Backup steps: how many backups this step has taken (a suspect backup triggers another).
    pub attempt: u32,
    /// Observations for people (suspect backups, settled intents, verification notes).
    pub notes: Vec<String>,
    /// Backup steps: the source's entity names (`APIs`, `products`, `named values`) read just
    /// after the backup, while the change marker held still; verification compares with it.
    #[serde(default)]
    pub manifest: Option<BTreeMap<String, Vec<String>>>,
    /// Restore steps: the target's `configurationChangeDate` read just before the POST, saved
    /// with the `Intent` state. Settling an `Intent` compares the target's change date with it,
    /// both readings on Azure's clock. Absent in records written before drsync recorded it
    /// (still [`SCHEMA_VERSION`] 1: the field is optional and defaults to absent).
    #[serde(default)]
    pub target_before: Option<ChangeReading>,
}

/// One reading of a service's `configurationChangeDate` (on Azure's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeReading {
    /// The change date read; `None` when the service reported none (never changed).
    pub changed: Option<Timestamp>,
}

impl ChangeReading {
    /// Whether `now`, a later reading of the same service, shows a change since this one.
    pub fn changed_since(&self, now: Option<Timestamp>) -> bool {
        match (self.changed, now) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(before), Some(now)) => now > before,
        }
    }
}

impl StepRecord {
    /// A pending step.
    pub fn pending(run_id: Uuid, step_id: &str, now: Timestamp) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            run_id,
            step_id: step_id.into(),
            state: StepState::Pending,
            updated_at: now,
            backup: None,
            change_marker: None,
            attempt: 0,
            notes: Vec::new(),
            manifest: None,
            target_before: None,
        }
    }
}

/// A lease on one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The service's resource id.
    pub service: String,
    /// Who holds it: `{run}/{step}`.
    pub owner: String,
    /// The process that took it.
    pub pid: u32,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// SKU as the sidecar writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuDoc {
    /// The tier name.
    pub tier: drsync_core::SkuTier,
    /// Units.
    pub capacity: u32,
}

/// A backup, as kept in the catalog and in the sidecar blob beside the backup (the shape is
/// fixed by the shared design: `catalog sync` reads it back from storage alone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The backup (and blob) name.
    pub backup: BackupName,
    /// The source's resource id.
    pub source: String,
    /// The source's SKU at backup time.
    pub sku: SkuDoc,
    /// The storage account.
    pub storage_account: String,
    /// The container.
    pub container: String,
    /// When the backup completed.
    pub created_at: Timestamp,
    /// When Azure stops accepting it.
    pub expires_at: Timestamp,
    /// The primary's `configurationChangeDate` before the backup.
    pub change_marker: Option<Timestamp>,
    /// Whether the configuration held still.
    pub consistency: Consistency,
    /// The run that took it (absent for a blob found without a sidecar).
    pub run_id: Option<Uuid>,
}

impl BackupDoc {
    /// The record form.
    pub fn to_record(&self) -> Result<BackupRecord, String> {
        let source = ServiceRef::parse_resource_id(&self.source).map_err(|e| e.to_string())?;
        Ok(BackupRecord {
            name: self.backup.clone(),
            source,
            sku: Sku {
                tier: self.sku.tier,
                capacity: self.sku.capacity,
            },
            storage_account: self.storage_account.clone(),
            container: self.container.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            change_marker: self.change_marker,
            consistency: self.consistency,
        })
    }

    /// The document form of a record.
    pub fn from_record(r: &BackupRecord, run_id: Option<Uuid>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            backup: r.name.clone(),
            source: r.source.resource_id(),
            sku: SkuDoc {
                tier: r.sku.tier,
                capacity: r.sku.capacity,
            },
            storage_account: r.storage_account.clone(),
            container: r.container.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            change_marker: r.change_marker,
            consistency: r.consistency,
            run_id,
        }
    }
}

/// The last restore into one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreDoc {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The target's name.
    pub target: String,
    /// The backup restored.
    pub backup: BackupName,
    /// When the restore completed.
    pub restored_at: Timestamp,
    /// The run that did it.
    pub run_id: Uuid,
}

/// Typed checkpoints over a [`Kv`].
#[derive(Debug, Clone)]
pub struct Checkpoints {
    kv: Arc<dyn Kv>,
}

impl Checkpoints {
    /// Checkpoints over `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Self { kv }
    }

    /// In-memory checkpoints (tests, dry runs).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryKv::default()))
    }

    /// Checkpoints in a sled database under `dir`.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Ok(Self::new(Arc::new(SledKv::open(dir)?)))
    }

    fn read<T: DeserializeOwned>(&self, tree: Tree, key: &str) -> StoreResult<Option<T>> {
        self.kv.get(tree, key)?.map(|v| decode(key, &v)).transpose()
    }

    fn write<T: Serialize>(&self, tree: Tree, key: &str, value: &T) -> StoreResult<()> {
        self.kv.put(
            tree,
            key,
            serde_json::to_vec(value).expect("records serialize"),
        )
    }

    fn all<T: DeserializeOwned>(&self, tree: Tree, prefix: &str) -> StoreResult<Vec<T>> {
        self.kv
            .scan(tree, prefix)?
            .into_iter()
            .map(|(k, v)| decode(&k, &v))
            .collect()
    }

    /// Writes a run record.
    pub fn put_run(&self, run: &RunRecord) -> StoreResult<()> {
        self.write(Tree::Runs, &run.run_id.to_string(), run)
    }

    /// Reads a run record.
    pub fn run(&self, id: Uuid) -> StoreResult<Option<RunRecord>> {
        self.read(Tree::Runs, &id.to_string())
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> StoreResult<Vec<RunRecord>> {
        let mut runs: Vec<RunRecord> = self.all(Tree::Runs, "")?;
        runs.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then(a.run_id.cmp(&b.run_id))
        });
        Ok(runs)
    }

    /// Finds a run by a unique prefix of its id.
    pub fn find_run(&self, prefix: &str) -> StoreResult<Option<RunRecord>> {
        let matches: Vec<RunRecord> = self
            .runs()?
            .into_iter()
            .filter(|r| r.run_id.to_string().starts_with(prefix))
            .collect();
        Ok(if matches.len() == 1 {
            matches.into_iter().next()
        } else {
            None
        })
    }

    /// Writes a step record.
    pub fn put_step(&self, step: &StepRecord) -> StoreResult<()> {
        self.write(
            Tree::Steps,
            &format!("{}/{}", step.run_id, step.step_id),
            step,
        )
    }

    /// Reads a step record.
    pub fn step(&self, run: Uuid, step_id: &str) -> StoreResult<Option<StepRecord>> {
        self.read(Tree::Steps, &format!("{run}/{step_id}"))
    }

    /// Every step of a run, by step id.
    pub fn steps(&self, run: Uuid) -> StoreResult<Vec<StepRecord>> {
        self.all(Tree::Steps, &format!("{run}/"))
    }

    /// Takes the lease on `service` for `owner` until `now + ttl`. Returns the current holder if
    /// somebody else holds an unexpired lease.
    pub fn try_lease(
        &self,
        service: &str,
        owner: &str,
        ttl: chrono::Duration,
        now: Timestamp,
    ) -> StoreResult<Result<LeaseRecord, LeaseRecord>> {
        let key = service.to_ascii_lowercase();
        loop {
            let current = self.kv.get(Tree::Leases, &key)?;
            if let Some(bytes) = &current {
                let held: LeaseRecord = decode(&key, bytes)?;
                if held.owner != owner && held.expires_at > now {
                    return Ok(Err(held));
                }
            }
            let lease = LeaseRecord {
                schema_version: SCHEMA_VERSION,
                service: service.into(),
                owner: owner.into(),
                pid: std::process::id(),
                expires_at: now + ttl,
            };
            let new = serde_json::to_vec(&lease).expect("records serialize");
            if self
                .kv
                .compare_and_swap(Tree::Leases, &key, current.as_deref(), Some(new))?
            {
                return Ok(Ok(lease));
            }
        }
    }

    /// Releases `owner`'s lease on `service` (no-op if somebody else holds it now).
    pub fn release_lease(&self, service: &str, owner: &str) -> StoreResult<()> {
        let key = service.to_ascii_lowercase();
        if let Some(bytes) = self.kv.get(Tree::Leases, &key)? {
            let held: LeaseRecord = decode(&key, &bytes)?;
            if held.owner == owner {
                self.kv
                    .compare_and_swap(Tree::Leases, &key, Some(&bytes), None)?;
            }
        }
        Ok(())
    }

    /// Every lease currently recorded.
    pub fn leases(&self) -> StoreResult<Vec<LeaseRecord>> {
        self.all(Tree::Leases, "")
    }

    /// Adds or replaces a catalog record.
    pub fn put_backup(&self, doc: &BackupDoc) -> StoreResult<()> {
        self.write(Tree::Backups, doc.backup.as_str(), doc)
    }

    /// Every catalog record, by name.
    pub fn backups(&self) -> StoreResult<Vec<BackupDoc>> {
        self.all(Tree::Backups, "")
    }

    /// Removes a catalog record.
    pub fn delete_backup(&self, name: &BackupName) -> StoreResult<()> {
        self.kv.remove(Tree::Backups, name.as_str())
    }

    /// Records the last restore into a target.
    pub fn put_restore(&self, doc: &RestoreDoc) -> StoreResult<()> {
        self.write(Tree::Restores, &doc.target.to_ascii_lowercase(), doc)
    }

    /// Every restore record.
    pub fn restores(&self) -> StoreResult<Vec<RestoreDoc>> {
        self.all(Tree::Restores, "")
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> StoreResult<T> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.into(),
        reason,
    };
    let v: Version = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if v.schema_version > SCHEMA_VERSION {
        return Err(corrupt(format!(
            "schema version {} is newer than this drsync understands ({SCHEMA_VERSION}); upgrade drsync",
            v.schema_version
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
}
