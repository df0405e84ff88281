//! An in-memory Azure for unit tests: services, backup/restore operations that finish after a
//! set number of polls, memory blob stores, a request log, and knobs for faults (409 busy
//! services, configuration changes during a backup, failing operations).
//!
//! It is a test double with the same rules the emulator and Azure enforce (one operation per
//! service, same-tier restores, 30-day expiry, container must exist); the socket-level
//! emulator is the faithful one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use drsync_arm_client::blob::{BlobError, BlobMeta, BlobResult, BlobStore};
use drsync_core::{BackupName, Clock, ServiceRef, Sku, StorageTarget, Timestamp};

use super::{
    AzureError, AzureErrorKind, AzureOps, Begun, EntityKind, OpHandle, OpKind, PollStatus,
    ServiceState,
};

/// One container: blob name -> (content, last modified).
type Container = BTreeMap<String, (Bytes, Timestamp)>;

/// A blob store in memory.
#[derive(Debug)]
pub struct MemoryBlobStore {
    account: String,
    clock: Arc<dyn Clock>,
    containers: Mutex<BTreeMap<String, Container>>,
}

impl MemoryBlobStore {
    /// An empty account.
    pub fn new(account: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            account: account.into(),
            clock,
            containers: Mutex::new(BTreeMap::new()),
        }
    }

    fn missing(&self, container: &str) -> BlobError {
        BlobError::ContainerNotFound {
            account: self.account.clone(),
            container: container.into(),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for MemoryBlobStore {
    fn account(&self) -> &str {
        &self.account
    }
    async fn container_exists(&self, container: &str) -> BlobResult<bool> {
        Ok(self.containers.lock().contains_key(container))
    }
    async fn create_container(&self, container: &str) -> BlobResult<()> {
        self.containers.lock().entry(container.into()).or_default();
        Ok(())
    }
    async fn list(&self, container: &str, prefix: &str) -> BlobResult<Vec<BlobMeta>> {
        let c = self.containers.lock();
        let blobs = c.get(container).ok_or_else(|| self.missing(container))?;
        Ok(blobs
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, (b, t))| BlobMeta {
                name: n.clone(),
                size: b.len() as u64,
                last_modified: *t,
            })
            .collect())
    }
    async fn head(&self, container: &str, blob: &str) -> BlobResult<Option<BlobMeta>> {
        let c = self.containers.lock();
        let blobs = c.get(container).ok_or_else(|| self.missing(container))?;
        Ok(blobs.get(blob).map(|(b, t)| BlobMeta {
            name: blob.into(),
            size: b.len() as u64,
            last_modified: *t,
        }))
    }
    async fn get(&self, container: &str, blob: &str) -> BlobResult<Bytes> {
        let c = self.containers.lock();
        let blobs = c.get(container).ok_or_else(|| self.missing(container))?;
        blobs
            .get(blob)
            .map(|(b, _)| b.clone())
            .ok_or_else(|| BlobError::BlobNotFound {
                account: self.account.clone(),
                container: container.into(),
                blob: blob.into(),
            })
    }
    async fn put(&self, container: &str, blob: &str, data: Bytes) -> BlobResult<()> {
        let now = self.clock.now();
        let mut c = self.containers.lock();
        let blobs = c
            .get_mut(container)
            .ok_or_else(|| self.missing(container))?;
        blobs.insert(blob.into(), (data, now));
        Ok(())
    }
    async fn delete(&self, container: &str, blob: &str) -> BlobResult<()> {
        let mut c = self.containers.lock();
        let blobs = c
            .get_mut(container)
            .ok_or_else(|| self.missing(container))?;
        blobs.remove(blob);
        Ok(())
    }
}

/// One fake service.
#[derive(Debug, Clone)]
pub struct FakeService {
    /// Its reference.
    pub service: ServiceRef,
    /// Its real SKU (may differ from the configuration, to test preflight).
    pub sku: Sku,
    /// `Succeeded`, `Updating`, ...
    pub provisioning_state: String,
    /// `configurationChangeDate`.
    pub change_date: Option<Timestamp>,
    /// API names.
    pub apis: Vec<String>,
    /// Product names.
    pub products: Vec<String>,
    /// Named value names.
    pub named_values: Vec<String>,
}

/// The content the fake writes into a backup blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BackupContent {
    sku: Sku,
    apis: Vec<String>,
    products: Vec<String>,
    named_values: Vec<String>,
    created_at: Timestamp,
}

#[derive(Debug, Clone)]
struct FakeOp {
    kind: OpKind,
    service: String,
    account: String,
    container: String,
    backup: BackupName,
    polls_left: u32,
}

/// One POST the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    /// Backup or restore.
    pub kind: OpKind,
    /// The service name.
    pub service: String,
    /// The backup name.
    pub backup: String,
    /// Whether it was accepted (`false`: refused, for example 409).
    pub accepted: bool,
}

#[derive(Debug, Default)]
struct State {
    services: BTreeMap<String, FakeService>,
    ops: HashMap<u64, FakeOp>,
    finished: HashMap<u64, PollStatus>,
    next_op: u64,
    posts: Vec<Post>,
    reads: u64,
    polls_per_op: u32,
    conflicts: BTreeMap<String, u32>,
    busy_reads: BTreeMap<String, u32>,
    change_during_backup: BTreeSet<String>,
    fail_next: BTreeMap<String, (String, String)>,
}

/// An in-memory Azure.
#[derive(Debug)]
pub struct FakeAzure {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    stores: Mutex<BTreeMap<String, Arc<MemoryBlobStore>>>,
    poll_interval: Duration,
}

impl FakeAzure {
    /// An empty Azure whose operations finish after two polls, 1 ms apart.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let state = State {
            polls_per_op: 2,
            ..State::default()
        };
        Self {
            clock,
            state: Mutex::new(state),
            stores: Mutex::new(BTreeMap::new()),
            poll_interval: Duration::from_millis(1),
        }
    }

    /// Adds (or replaces) a service in state `Succeeded`, with one API, product and named value.
    pub fn add_service(&self, service: ServiceRef, sku: Sku) {
        let n = service.name.clone();
        self.state.lock().services.insert(
            n.to_ascii_lowercase(),
            FakeService {
                service,
                sku,
                provisioning_state: "Succeeded".into(),
                change_date: None,
                apis: vec![format!("{n}-echo")],
                products: vec!["starter".into()],
                named_values: vec!["backend-url".into()],
            },
        );
    }

    /// Changes a service (for example its SKU or its APIs).
    pub fn edit_service(&self, name: &str, f: impl FnOnce(&mut FakeService)) {
        let mut s = self.state.lock();
        f(s.services
            .get_mut(&name.to_ascii_lowercase())
            .expect("known fake service"));
    }

    /// A copy of a service.
    pub fn service_snapshot(&self, name: &str) -> Option<FakeService> {
        self.state
            .lock()
            .services
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// The next `n` POSTs to `service` get `409 Conflict`.
    pub fn conflict_next_posts(&self, service: &str, n: u32) {
        self.state
            .lock()
            .conflicts
            .insert(service.to_ascii_lowercase(), n);
    }

    /// The next `n` reads of `service` show it `Updating`.
    pub fn busy_for_reads(&self, service: &str, n: u32) {
        self.state
            .lock()
            .busy_reads
            .insert(service.to_ascii_lowercase(), n);
    }

    /// The next backup of `service` sees its configuration change while it runs.
    pub fn change_during_next_backup(&self, service: &str) {
        self.state
            .lock()
            .change_during_backup
            .insert(service.to_ascii_lowercase());
    }

    /// The next operation on `service` fails with this code and message.
    pub fn fail_next_op(&self, service: &str, code: &str, message: &str) {
        self.state
            .lock()
            .fail_next
            .insert(service.to_ascii_lowercase(), (code.into(), message.into()));
    }

    /// How many polls an operation takes.
    pub fn set_polls_per_op(&self, n: u32) {
        self.state.lock().polls_per_op = n;
    }

    /// Every POST received, in order.
    pub fn posts(&self) -> Vec<Post> {
        self.state.lock().posts.clone()
    }

    /// The memory blob store of an account.
    pub fn store(&self, account: &str) -> Arc<MemoryBlobStore> {
        self.stores
            .lock()
            .entry(account.into())
            .or_insert_with(|| Arc::new(MemoryBlobStore::new(account, self.clock.clone())))
            .clone()
    }

    fn get(&self, s: &mut State, service: &ServiceRef) -> Result<FakeService, AzureError> {
        s.services
            .get(&service.name.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| {
                AzureError::new(
                    AzureErrorKind::NotFound,
                    Some("ResourceNotFound"),
                    format!("API Management service `{}` was not found", service.name),
                )
            })
    }

    /// Moves an operation one tick on; finished operations are kept so a late poll still
    /// sees their outcome. `None` if the id is unknown.
    async fn advance(&self, id: u64) -> Option<PollStatus> {
        let op = {
            let mut s = self.state.lock();
            if let Some(done) = s.finished.get(&id) {
                return Some(done.clone());
            }
            let op = s.ops.get_mut(&id)?;
            if op.polls_left > 0 {
                op.polls_left -= 1;
                return Some(PollStatus::Running {
                    handle: OpHandle(serde_json::json!({ "fake_op": id })),
                    retry_after: self.poll_interval,
                });
            }
            s.ops.remove(&id).expect("present")
        };
        let key = op.service.to_ascii_lowercase();
        let injected = self.state.lock().fail_next.remove(&key);
        let result = match injected {
            Some(fail) => Err(fail),
            None => self.complete(&op).await,
        };
        let status = match result {
            Ok(()) => PollStatus::Succeeded,
            Err((code, message)) => PollStatus::Failed { code, message },
        };
        let mut s = self.state.lock();
        if let Some(svc) = s.services.get_mut(&key) {
            svc.provisioning_state = "Succeeded".into();
        }
        s.finished.insert(id, status.clone());
        Some(status)
    }

    async fn complete(&self, op: &FakeOp) -> Result<(), (String, String)> {
        let store = self.store(&op.account);
        let key = op.service.to_ascii_lowercase();
        match op.kind {
            OpKind::Backup => {
                let svc = self
                    .state
                    .lock()
                    .services
                    .get(&key)
                    .cloned()
                    .expect("service exists");
                let content = BackupContent {
                    sku: svc.sku,
                    apis: svc.apis,
                    products: svc.products,
                    named_values: svc.named_values,
                    created_at: self.clock.now(),
                };
                store
                    .put(
                        &op.container,
                        op.backup.as_str(),
                        Bytes::from(serde_json::to_vec(&content).unwrap()),
                    )
                    .await
                    .map_err(|e| ("ContainerNotFound".to_owned(), e.to_string()))
            }
            OpKind::Restore => {
                let bytes = store
                    .get(&op.container, op.backup.as_str())
                    .await
                    .map_err(|e| ("RestoreFailed".to_owned(), e.to_string()))?;
                let content: BackupContent = serde_json::from_slice(&bytes).unwrap();
                let now = self.clock.now();
                if now - content.created_at >= drsync_core::BACKUP_LIFETIME {
                    return Err((
                        "RestoreFailed".into(),
                        "Cannot restore: backup expired".into(),
                    ));
                }
                let mut s = self.state.lock();
                let svc = s.services.get_mut(&key).expect("service exists");
                if svc.sku.tier != content.sku.tier {
                    return Err((
                        "RestoreFailed".into(),
                        format!(
                            "Cannot restore: current SKU is '{}', backup SKU is '{}'",
                            svc.sku.tier, content.sku.tier
                        ),
                    ));
                }
                svc.apis = content.apis;
                svc.products = content.products;
                svc.named_values = content.named_values;
                svc.change_date = Some(now);
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl AzureOps for FakeAzure {
    async fn service(&self, service: &ServiceRef) -> Result<ServiceState, AzureError> {
        // Time passes for operations nobody polls (for example after a crash): each read of
        // the service moves its running operations one tick on.
        let running: Vec<u64> = {
            let s = self.state.lock();
            s.ops
                .iter()
                .filter(|(_, op)| op.service.eq_ignore_ascii_case(&service.name))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in running {
            self.advance(id).await;
        }
        let mut s = self.state.lock();
        s.reads += 1;
        let svc = self.get(&mut s, service)?;
        let key = service.name.to_ascii_lowercase();
        let mut state = svc.provisioning_state.clone();
        if let Some(n) = s.busy_reads.get_mut(&key) {
            if *n > 0 {
                *n -= 1;
                state = "Updating".into();
            }
        }
        Ok(ServiceState {
            provisioning_state: state,
            sku: svc.sku,
            location: "fake".into(),
        })
    }

    async fn configuration_change_date(
        &self,
        service: &ServiceRef,
    ) -> Result<Option<Timestamp>, AzureError> {
        let mut s = self.state.lock();
        s.reads += 1;
        Ok(self.get(&mut s, service)?.change_date)
    }

    async fn begin(
        &self,
        kind: OpKind,
        service: &ServiceRef,
        storage: &StorageTarget,
        backup: &BackupName,
    ) -> Result<Begun, AzureError> {
        let now = self.clock.now();
        let mut s = self.state.lock();
        let svc = self.get(&mut s, service)?;
        let key = service.name.to_ascii_lowercase();
        let conflict = match s.conflicts.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let busy = conflict || !svc.provisioning_state.eq_ignore_ascii_case("Succeeded");
        s.posts.push(Post {
            kind,
            service: svc.service.name.clone(),
            backup: backup.to_string(),
            accepted: !busy,
        });
        if busy {
            return Err(AzureError::new(
                AzureErrorKind::Busy,
                Some("Conflict"),
                format!(
                    "API Management service `{}` is busy with another operation (409 Conflict)",
                    service.name
                ),
            ));
        }
        let svc = s.services.get_mut(&key).expect("exists");
        svc.provisioning_state = "Updating".into();
        if kind == OpKind::Backup && s.change_during_backup.remove(&key) {
            let svc = s.services.get_mut(&key).expect("exists");
            svc.change_date = Some(now + chrono::Duration::seconds(1));
            svc.apis.push("added-during-backup".into());
        }
        let id = s.next_op;
        s.next_op += 1;
        let polls_left = s.polls_per_op;
        s.ops.insert(
            id,
            FakeOp {
                kind,
                service: svc_name(service),
                account: storage.account.clone(),
                container: storage.container.clone(),
                backup: backup.clone(),
                polls_left,
            },
        );
        Ok(Begun::Accepted(OpHandle(
            serde_json::json!({ "fake_op": id }),
        )))
    }

    async fn poll(&self, handle: &OpHandle) -> Result<PollStatus, AzureError> {
        let id = handle.0["fake_op"].as_u64().expect("fake handle");
        self.state.lock().reads += 1;
        match self.advance(id).await {
            Some(PollStatus::Running { .. }) => Ok(PollStatus::Running {
                handle: handle.clone(),
                retry_after: self.poll_interval,
            }),
            Some(done) => Ok(done),
            None => Err(AzureError::new(
                AzureErrorKind::NotFound,
                Some("NotFound"),
                "operation not found",
            )),
        }
    }

    async fn entity_names(
        &self,
        service: &ServiceRef,
        kind: EntityKind,
    ) -> Result<Vec<String>, AzureError> {
        let mut s = self.state.lock();
        s.reads += 1;
        let svc = self.get(&mut s, service)?;
        let mut names = match kind {
            EntityKind::Apis => svc.apis,
            EntityKind::Products => svc.products,
            EntityKind::NamedValues => svc.named_values,
        };
        names.sort();
        Ok(names)
    }

    fn blob_store(&self, storage: &StorageTarget) -> Result<Arc<dyn BlobStore>, AzureError> {
        Ok(self.store(&storage.account))
    }

    fn storage_access_problem(&self, _storage: &StorageTarget) -> Option<String> {
        None
    }
}

fn svc_name(service: &ServiceRef) -> String {
    service.name.clone()
}
