//! Entra ID, Azure Resource Manager and Blob storage client for drsync.
//!
//! This crate is where talking to Azure is solved once: tokens, throttling, retries,
//! long-running operations and the exact JSON shapes of API Management. Nothing outside it
//! builds an HTTP request to ARM or parses an ARM response.
//!
//! # Layout
//! - [`credential`]: the [`TokenCredential`] trait, its implementations (client secret, managed
//!   identity, Azure CLI, static token) and the single-flight [`TokenCache`].
//! - [`retry`]: failure classes, the pure [`RetryPolicy`], `Retry-After` parsing and the
//!   slow-down rule for `x-ms-ratelimit-remaining-*`.
//! - [`lro`]: the sans-IO long-running-operation poller ([`PollState`], [`lro::on_response`]).
//! - [`security`]: where a bearer token may go (HTTPS or loopback, pinned host; never
//!   through a redirect, never through a proxy in clear text).
//! - [`apim`]: typed API Management resources and the pure request-body builders.
//! - [`client`]: [`ArmClient`], the async driver: limiters, retries, polling, paging.
//! - [`blob`]: the `BlobStore` trait (one storage account) and its implementations, and
//!   [`blob::open`] to pick one from a `StorageTarget`.
//! - [`error`]: the crate's [`Error`], and [`error::redact`] for text that servers send back.
//!
//! What it does not do: decide *whether* to back up or restore, persist anything, or resend a
//! backup/restore POST whose fate is unknown. Those belong to the planner's executor.

#![warn(missing_docs)]

pub mod apim;
pub mod blob;
pub mod client;
pub mod credential;
pub mod error;
pub mod lro;
mod pipeline;
pub mod retry;
pub mod security;

pub use apim::{
    ApiSummary, ApimService, BackupAccess, BackupRestoreRequest, NamedValueSummary, ProductSummary,
    ProvisioningState, SyncState,
};
pub use client::{ArmClient, ArmClientConfig, ArmLimits, LroStart, MetricsSnapshot, PollStep};
pub use credential::{
    ARM_SCOPE, AccessToken, AzureCliCredential, ClientSecretCredential, DEFAULT_AUTHORITY_HOST,
    ManagedIdentityCredential, STORAGE_SCOPE, StaticTokenCredential, TokenCache, TokenCredential,
    TokenEndpointVersion,
};
pub use error::{ArmErrorBody, Error, Result};
pub use lro::{LroOperation, PollKind, PollState, PollerConfig};
pub use retry::{FailureClass, RetryDecision, RetryPolicy};
/// The URL type of this crate's API.
pub use url::Url;
