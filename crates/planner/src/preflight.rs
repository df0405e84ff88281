//! Preflight: what is checked before any POST of a run.
//!
//! For one replication: every service exists and is `Succeeded` (not `Updating`); the SKUs as
//! read from ARM (not only as configured) support backup/restore and match between source and
//! targets; storage access is configured and the container exists (it is created if missing);
//! every restore of an existing backup finds the blob and the backup is younger than 30 days and
//! of the target's tier. Problems are collected, not stopped at, so one run reports them all.

use drsync_core::{BackupName, BackupRecord, Sku, Timestamp};

use crate::azure::{AzureErrorKind, AzureOps};
use crate::catalog::CatalogEntry;
use crate::plan::{Action, BackupSource, Plan};
use crate::topology::Topology;

/// Preflight found problems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("preflight of `{replication}` refused the run:{}", .problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
pub struct PreflightError {
    /// The replication.
    pub replication: String,
    /// What is wrong, one line each.
    pub problems: Vec<String>,
    /// Whether every problem is a busy service (worth waiting for).
    pub only_busy: bool,
}

/// What preflight observed (for the step's notes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// Notes for people.
    pub notes: Vec<String>,
}

/// Runs the preflight of `replication` for `plan`.
pub async fn check(
    azure: &dyn AzureOps,
    topology: &Topology,
    plan: &Plan,
    replication: &str,
    catalog: &[CatalogEntry],
    now: Timestamp,
) -> Result<PreflightReport, PreflightError> {
    let mut problems = Vec::new();
    let mut busy = 0usize;
    let mut report = PreflightReport::default();
    let Some(r) = topology.replication(replication) else {
        return Err(PreflightError {
            replication: replication.into(),
            problems: vec![format!(
                "replication `{replication}` is not in the configuration"
            )],
            only_busy: false,
        });
    };
    let mut names = vec![r.from.clone()];
    for s in plan.steps.iter().filter(|s| s.replication == r.name) {
        if let Action::Restore { target, .. } = &s.action {
            names.push(target.clone());
        }
    }
    let mut arm_skus: Vec<(String, Sku)> = Vec::new();
    for name in &names {
        let Some(node) = topology.service(name) else {
            problems.push(format!("service `{name}` is not configured"));
            continue;
        };
        match azure.service(&node.service).await {
            Ok(state) => {
                if state.is_busy() {
                    busy += 1;
                    problems.push(format!(
                        "service `{name}` is {} (another operation is running on it)",
                        state.provisioning_state
                    ));
                } else if !state.is_ready() {
                    problems.push(format!(
                        "service `{name}` is in state {}, not Succeeded",
                        state.provisioning_state
                    ));
                }
                if !state.sku.supports_backup_restore() {
                    problems.push(format!(
                        "service `{name}` is {} in Azure, a tier without backup and restore",
                        state.sku.tier
                    ));
                }
                if state.sku.tier != node.sku.tier {
                    problems.push(format!(
                        "service `{name}` is configured as {} but Azure reports {}; fix the configuration",
                        node.sku.tier, state.sku.tier
                    ));
                }
                arm_skus.push((node.name().to_owned(), state.sku));
            }
            Err(e) if e.kind == AzureErrorKind::NotFound => problems.push(format!(
                "service `{name}` does not exist (subscription {}, resource group {})",
                node.service.subscription, node.service.resource_group
            )),
            Err(e) => problems.push(format!("cannot read service `{name}`: {e}")),
        }
    }
    if let Some((_, source_sku)) = arm_skus
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&r.from))
    {
        for (n, sku) in arm_skus
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(&r.from))
        {
            if sku.tier != source_sku.tier {
                problems.push(format!(
                    "SKU mismatch as read from Azure: source `{}` is {}, target `{n}` is {}; a restore would fail",
                    r.from, source_sku.tier, sku.tier
                ));
            }
        }
    }

    let storage = topology.storage_of(r);
    if let Some(p) = azure.storage_access_problem(&storage.target) {
        problems.push(format!("storage `{}`: {p}", storage.name));
    }
    let container = &storage.target.container;
    match azure.blob_store(&storage.target) {
        Err(e) => problems.push(format!("storage `{}`: {e}", storage.name)),
        Ok(store) => match store.container_exists(container).await {
            Ok(true) => {}
            Ok(false) => match store.create_container(container).await {
                Ok(()) => report.notes.push(format!(
                    "created container `{container}` in storage account `{}`",
                    storage.target.account
                )),
                Err(e) => problems.push(format!(
                    "storage `{}`: cannot create container: {e}",
                    storage.name
                )),
            },
            Err(e) => problems.push(format!("storage `{}`: {e}", storage.name)),
        },
    }

    // Restores of backups that already exist.
    for s in plan.steps.iter().filter(|s| s.replication == r.name) {
        let Action::Restore {
            target,
            backup: BackupSource::Existing(name),
        } = &s.action
        else {
            continue;
        };
        let target_sku = arm_skus
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(target))
            .map(|(_, s)| *s);
        check_existing_backup(
            azure,
            topology,
            r.storage.as_str(),
            name,
            target,
            target_sku,
            catalog,
            now,
            &mut problems,
        )
        .await;
    }

    if problems.is_empty() {
        Ok(report)
    } else {
        let only_busy = busy == problems.len();
        Err(PreflightError {
            replication: r.name.clone(),
            problems,
            only_busy,
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn check_existing_backup(
    azure: &dyn AzureOps,
    topology: &Topology,
    storage_name: &str,
    name: &BackupName,
    target: &str,
    target_sku: Option<Sku>,
    catalog: &[CatalogEntry],
    now: Timestamp,
    problems: &mut Vec<String>,
) {
    let Some(storage) = topology.storage(storage_name) else {
        return;
    };
    let entry = catalog.iter().find(|e| &e.record.name == name);
    let created_at = entry
        .map(|e| e.record.created_at)
        .unwrap_or_else(|| name.started_at());
    let expires_at = BackupRecord::expiry_for(created_at);
    if now >= expires_at {
        problems.push(format!(
            "backup `{name}` expired at {} (Azure restores backups younger than 30 days); take a new backup with `drsync backup {}`",
            expires_at.format("%Y-%m-%d %H:%M UTC"),
            name.service()
        ));
    }
    if let (Some(e), Some(t)) = (entry, target_sku) {
        if e.record.sku.tier != t.tier {
            problems.push(format!(
                "backup `{name}` is of a {} service, but `{target}` is {}; Azure restores only into the same tier",
                e.record.sku.tier, t.tier
            ));
        }
    }
    match azure.blob_store(&storage.target) {
        Ok(store) => match store.head(&storage.target.container, name.as_str()).await {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(format!(
                "backup `{name}` is not in container `{}` of storage account `{}`",
                storage.target.container, storage.target.account
            )),
            Err(e) => problems.push(format!("cannot check backup `{name}`: {e}")),
        },
        Err(e) => problems.push(format!("cannot check backup `{name}`: {e}")),
    }
}
