//! Failover drills, staging clones, failover and failback: verification, hooks and reports.
//!
//! # Layout
//! - [`snapshot`]: a service's configuration reduced to names and content hashes, with its SKU,
//!   hostnames and identity.
//! - [`verify`]: the item-by-item comparison of a restored service with its source.
//! - [`hooks`]: commands run before and after each phase, with a timeout and captured output.
//! - [`kept`]: source snapshots kept beside backups, so a failover can compare content.
//! - [`overrides`]: the overrides file of `drsync clone`.
//! - [`report`]: the versioned report and its JSON, Markdown and JUnit XML renderings.
//! - [`roles`]: role swaps recorded by failover and undone by failback.
//! - [`runner`]: one run, phase by phase, over the [`runner::DrillOps`] trait.
//! - [`store`]: reports kept in the state directory.
//!
//! This module builds no HTTP request and reads no clock: Azure and drsync's state are reached
//! through [`runner::DrillOps`] (implemented by the CLI), time through `drsync_core::Clock`.

pub mod hooks;
pub mod kept;
pub mod overrides;
pub mod report;
pub mod roles;
pub mod runner;
pub mod snapshot;
pub mod store;
pub mod verify;

#[cfg(test)]
mod tests;

pub use hooks::{HookCommand, HookEnv, HookSpec, HooksFile};
pub use report::{DrillKind, DrillReport, Phase, REPORT_SCHEMA, REPORT_SCHEMA_VERSION, junit_xml};
pub use roles::{RoleState, RoleSwap};
pub use runner::{BackupChoice, DrillOps, NamedValueOverride, OpError, Participant, RunSpec, run};
pub use snapshot::{ConfigSnapshot, ItemKind, SnapshotItem, content_hash};
pub use store::ReportStore;
pub use verify::{Overrides, VerificationReport, VerifyScope, verify, verify_kept};
