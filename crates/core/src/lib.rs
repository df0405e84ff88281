//! drsync's domain vocabulary, shared by every other crate.
//!
//! # Layout
//! - [`service`]: `ServiceRef` (subscription, resource group, name) and ARM resource ids.
//! - [`region`]: canonical Azure regions and their documented pairs.
//! - [`sku`]: API Management pricing tiers and which of them support backup/restore.
//! - [`storage`]: where backups are kept and how the service reaches that storage.
//! - [`backup`]: backup names, records, expiry and consistency.
//! - [`secret`]: redacted secrets and the `env:`/`file:` references that name them.
//! - [`clock`]: the one place that reads the time; everything else is handed a `Clock`.
//! - [`config`]: the TOML configuration, parsed and checked without touching Azure.
//!
//! This crate performs no I/O and reads no clock (except `clock::SystemClock`, the one
//! implementation that must). Secret resolution and file reading are done by callers that
//! pass their results in.

pub mod backup;
pub mod clock;
pub mod config;
pub mod region;
pub mod secret;
pub mod service;
pub mod sku;
pub mod storage;

pub use backup::{BACKUP_LIFETIME, BackupName, BackupRecord, Consistency};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, ConfigErrors};
pub use region::Region;
pub use secret::{Secret, SecretRef};
pub use service::{ServiceRef, SubscriptionId};
pub use sku::{Sku, SkuTier};
pub use storage::{StorageAccess, StorageTarget};

/// A point in time, always UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
