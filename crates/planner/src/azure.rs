//! What the executor needs from Azure, as one narrow trait: [`AzureOps`].
//!
//! The planner never builds an HTTP request. The CLI implements [`AzureOps`] over
//! `drsync_arm_client::ArmClient`; unit tests use [`fake::FakeAzure`], an in-memory Azure with
//! a request log. A long-running operation's poller state crosses this boundary as an opaque,
//! serializable [`OpHandle`] so the executor can checkpoint it and resume polling after a crash.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use drsync_arm_client::blob::BlobStore;
use drsync_core::{BackupName, ServiceRef, Sku, StorageTarget, Timestamp};

pub mod arm;
pub mod fake;

/// A service as ARM reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// `properties.provisioningState` (`Succeeded`, `Updating`, ...).
    pub provisioning_state: String,
    /// `sku` as ARM reports it (not as configured).
    pub sku: Sku,
    /// `location`, as ARM spells it.
    pub location: String,
}

impl ServiceState {
    /// Whether the service accepts a management operation now (`Succeeded`).
    pub fn is_ready(&self) -> bool {
        self.provisioning_state.eq_ignore_ascii_case("Succeeded")
    }

    /// Whether an operation is running on it (`Updating` and the other transitional states).
    pub fn is_busy(&self) -> bool {
        ["Updating", "Activating", "Created", "Terminating"]
            .iter()
            .any(|s| self.provisioning_state.eq_ignore_ascii_case(s))
    }
}

/// The serialized state of a long-running operation's poller. Opaque to the planner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OpHandle(pub serde_json::Value);

/// The answer to a backup or restore POST.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// `202 Accepted`: poll this.
    Accepted(OpHandle),
    /// `200 OK`: already done.
    Completed,
}

/// One poll's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum PollStatus {
    /// Still running; poll again after `retry_after` with the (possibly updated) handle.
    Running {
        /// The handle to poll next.
        handle: OpHandle,
        /// How long to wait (Retry-After, or the poller's default).
        retry_after: Duration,
    },
    /// Done.
    Succeeded,
    /// The operation failed.
    Failed {
        /// ARM's error code.
        code: String,
        /// ARM's message.
        message: String,
    },
}

/// Backup or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `POST .../backup`.
    Backup,
    /// `POST .../restore`.
    Restore,
}

impl OpKind {
    /// `backup` or `restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }
}

/// Child collections compared by verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// `/apis`.
    Apis,
    /// `/products`.
    Products,
    /// `/namedValues`.
    NamedValues,
}

impl EntityKind {
    /// The collection's name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apis => "APIs",
            Self::Products => "products",
            Self::NamedValues => "named values",
        }
    }
}

/// How an Azure call failed, as far as the executor cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureErrorKind {
    /// 404: the service (or resource) does not exist.
    NotFound,
    /// 409 or `Updating`: another operation runs on the service. The request was refused.
    Busy,
    /// 429 after the client's retries.
    Throttled,
    /// 401/403.
    Denied,
    /// Another 4xx: the request was refused and will be refused again.
    Refused,
    /// Transport failure or 5xx: the request may or may not have been processed.
    Unavailable,
}

/// An Azure call failed. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AzureError {
    /// The class.
    pub kind: AzureErrorKind,
    /// ARM's error code, if any.
    pub code: Option<String>,
    /// What happened, naming the resource.
    pub message: String,
}

impl AzureError {
    /// An error of `kind`.
    pub fn new(kind: AzureErrorKind, code: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.map(str::to_owned),
            message: message.into(),
        }
    }

    /// The code, or a drsync code derived from the kind.
    pub fn code_or_kind(&self) -> String {
        self.code
            .clone()
            .unwrap_or_else(|| format!("{:?}", self.kind))
    }
}

/// The Azure operations the executor, preflight and catalog use.
#[async_trait::async_trait]
pub trait AzureOps: Send + Sync + std::fmt::Debug {
    /// `GET` the service.
    async fn service(&self, service: &ServiceRef) -> Result<ServiceState, AzureError>;
    /// The service's `configurationChangeDate` (`tenant/configuration/syncState`).
    async fn configuration_change_date(
        &self,
        service: &ServiceRef,
    ) -> Result<Option<Timestamp>, AzureError>;
    /// `POST` backup or restore. Not retried by the implementation when its fate is unknown.
    async fn begin(
        &self,
        kind: OpKind,
        service: &ServiceRef,
        storage: &StorageTarget,
        backup: &BackupName,
    ) -> Result<Begun, AzureError>;
    /// Polls an accepted operation once.
    async fn poll(&self, handle: &OpHandle) -> Result<PollStatus, AzureError>;
    /// The names of a service's APIs, products or named values.
    async fn entity_names(
        &self,
        service: &ServiceRef,
        kind: EntityKind,
    ) -> Result<Vec<String>, AzureError>;
    /// The blob store of a storage target, as drsync itself reaches it.
    fn blob_store(&self, storage: &StorageTarget) -> Result<Arc<dyn BlobStore>, AzureError>;
    /// Why the service could not reach the storage with the configured access method (for
    /// example an account key whose reference does not resolve), or `None` if it is configured.
    fn storage_access_problem(&self, storage: &StorageTarget) -> Option<String>;
}
