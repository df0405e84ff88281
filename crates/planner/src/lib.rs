//! drsync's planner: the replication topology, sync plans, the resumable executor, sled
//! checkpoints and the backup catalog.
//!
//! # Layout
//! - [`topology`]: services and replication edges as a petgraph graph, with the DR rules.
//! - [`plan`]: ordered steps (preflight, backup, restore, verify) with reasons; table, JSON, DOT.
//! - [`store`]: the checkpoint store trait, versioned records, sled and in-memory stores, leases.
//! - [`catalog`]: backup records, sidecar blobs, `catalog sync` from storage, pruning.
//! - [`azure`]: the narrow `AzureOps` trait the executor needs, and an in-memory fake.
//! - [`preflight`]: checks made before any POST.
//! - [`executor`]: runs a plan with tokio, leases, checkpoints, resume and Ctrl-C.
//!
//! The planner never builds an HTTP request: everything that touches Azure goes through
//! [`azure::AzureOps`], implemented over `drsync_arm_client` by the CLI's context.

pub mod azure;
pub mod catalog;
pub mod drill;
pub mod executor;
pub mod plan;
pub mod preflight;
pub mod store;
pub mod topology;

#[cfg(test)]
pub(crate) mod testing;

pub use topology::{Topology, TopologyError, TopologyErrors, TopologyWarning};
