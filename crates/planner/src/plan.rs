//! Plans: the ordered steps a run takes, each with the reason it is needed.
//!
//! A plan is a pure function of the topology, the catalog (backups and the last restore into
//! each target), the time and the options: the same inputs give the same plan, byte for byte.
//! It holds no run id and no backup name of a backup not yet taken; the executor names those.
//! Rendering (table, JSON, Graphviz DOT) lives here too. This module performs no I/O.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use drsync_core::{BackupName, Consistency, Timestamp};

use crate::catalog::{CatalogEntry, RestoreEntry};
use crate::topology::{Replication, Topology};

#[cfg(test)]
mod tests;

/// The version of the plan's JSON form.
pub const PLAN_SCHEMA_VERSION: u32 = 1;

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Check services, SKUs, storage and backups before any POST.
    Preflight {
        /// The services checked.
        services: Vec<String>,
        /// The storage entry checked.
        storage: String,
    },
    /// Back up `service` into `storage`.
    Backup {
        /// The source service.
        service: String,
        /// The storage entry.
        storage: String,
    },
    /// Restore a backup into `target`.
    Restore {
        /// The target service.
        target: String,
        /// Which backup.
        backup: BackupSource,
    },
    /// Check the restored target.
    Verify {
        /// The restored service.
        target: String,
        /// The service the backup came from.
        source: String,
    },
}

impl Action {
    /// A short verb for tables.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Preflight { .. } => "preflight",
            Self::Backup { .. } => "backup",
            Self::Restore { .. } => "restore",
            Self::Verify { .. } => "verify",
        }
    }

    /// The service the step operates on (preflight: none, it only reads).
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::Preflight { .. } => None,
            Self::Backup { service, .. } => Some(service),
            Self::Restore { target, .. } | Self::Verify { target, .. } => Some(target),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Preflight { services, storage } => {
                format!("check {} and storage {storage}", services.join(", "))
            }
            Self::Backup { service, storage } => format!("back up {service} into {storage}"),
            Self::Restore { target, backup } => format!("restore {backup} into {target}"),
            Self::Verify { target, source } => format!("verify {target} against {source}"),
        }
    }
}

/// The backup a restore uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupSource {
    /// The backup taken by the given step of this run.
    Step(String),
    /// A backup already in the catalog.
    Existing(BackupName),
}

impl std::fmt::Display for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Step(id) => write!(f, "the backup of {id}"),
            Self::Existing(name) => write!(f, "{name}"),
        }
    }
}

/// Why a step is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No valid backup of the source exists yet.
    FirstSync,
    /// The newest valid backup is older than the replication's RPO.
    OlderThanRpo {
        /// Its age, in seconds.
        age_secs: i64,
        /// The RPO, in seconds.
        rpo_secs: u64,
    },
    /// `--force` was given.
    Forced,
    /// Asked for directly (`drsync backup`, `drsync restore`).
    Requested,
    /// The target gets the backup this run takes.
    NewBackup,
    /// The target has not yet been restored from the newest valid backup.
    TargetBehind {
        /// The backup last restored into the target, if any.
        restored: Option<BackupName>,
    },
    /// Checks made before any change.
    BeforeChanges,
    /// Confirms the restore.
    AfterRestore,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::FirstSync => f.write_str("first sync: no valid backup yet"),
            Self::OlderThanRpo { age_secs, rpo_secs } => write!(
                f,
                "newest backup is {} old, older than the RPO of {}",
                human(Duration::from_secs((*age_secs).max(0) as u64)),
                human(Duration::from_secs(*rpo_secs))
            ),
            Self::Forced => f.write_str("forced (--force)"),
            Self::Requested => f.write_str("requested"),
            Self::NewBackup => f.write_str("new backup"),
            Self::TargetBehind { restored: Some(b) } => {
                write!(f, "target behind: last restored {b}")
            }
            Self::TargetBehind { restored: None } => f.write_str("target behind: never restored"),
            Self::BeforeChanges => f.write_str("checks before any change"),
            Self::AfterRestore => f.write_str("confirm the restore"),
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the plan: `{replication}/{verb}[/{service}]`.
    pub id: String,
    /// The replication it belongs to.
    pub replication: String,
    /// What it does.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// Steps that must succeed first.
    pub after: Vec<String>,
}

/// A target that needs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpToDate {
    /// The replication.
    pub replication: String,
    /// The target.
    pub target: String,
    /// The backup it holds.
    pub backup: BackupName,
}

/// What the plan was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PlanKind {
    /// `drsync sync`.
    Sync {
        /// `--only`.
        only: Option<String>,
        /// `--force`.
        force: bool,
    },
    /// `drsync backup SERVICE`.
    Backup {
        /// The service.
        service: String,
    },
    /// `drsync restore --backup NAME --to SERVICE`.
    Restore {
        /// The backup.
        backup: BackupName,
        /// The target.
        target: String,
    },
}

/// An ordered list of steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The "now" the plan was computed for.
    pub created_at: Timestamp,
    /// What the plan was made for.
    pub kind: PlanKind,
    /// The steps, in an order that respects `after`.
    pub steps: Vec<Step>,
    /// Targets already holding the newest valid backup.
    pub up_to_date: Vec<UpToDate>,
}

/// A plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// `--only`, `backup` or `restore --to` names a service outside every replication.
    #[error("service `{0}` is not part of any replication (check the [[replication]] entries)")]
    NotReplicated(String),
    /// `restore --to` names a service no replication restores into.
    #[error(
        "service `{0}` is not the target of any replication; drsync restores only into configured targets"
    )]
    NotATarget(String),
    /// `backup` names a service that is not a source.
    #[error(
        "service `{0}` is not the source of any replication; drsync backs up only configured primaries"
    )]
    NotASource(String),
    /// The backup is not in the catalog.
    #[error(
        "backup `{0}` is not in the catalog (run `drsync catalog sync` to read it from storage)"
    )]
    UnknownBackup(String),
    /// The backup comes from another service than the target's source.
    #[error(
        "backup `{backup}` was taken from `{from}`, but `{target}` is restored from `{expected}`"
    )]
    WrongSource {
        /// The backup.
        backup: String,
        /// Its source.
        from: String,
        /// The target.
        target: String,
        /// The target's configured source.
        expected: String,
    },
}

impl Plan {
    /// The plan of `drsync sync`.
    pub fn sync(
        topology: &Topology,
        backups: &[CatalogEntry],
        restores: &[RestoreEntry],
        now: Timestamp,
        only: Option<&str>,
        force: bool,
    ) -> Result<Self, PlanError> {
        if let Some(name) = only {
            let involved = topology.replications().iter().any(|r| {
                r.from.eq_ignore_ascii_case(name)
                    || r.to.iter().any(|t| t.eq_ignore_ascii_case(name))
            });
            if !involved {
                return Err(PlanError::NotReplicated(name.into()));
            }
        }
        let mut steps = Vec::new();
        let mut up_to_date = Vec::new();
        for r in topology.replications() {
            let targets: Vec<&String> = match only {
                Some(name) if r.from.eq_ignore_ascii_case(name) => r.to.iter().collect(),
                Some(name) => {
                    r.to.iter()
                        .filter(|t| t.eq_ignore_ascii_case(name))
                        .collect()
                }
                None => r.to.iter().collect(),
            };
            if targets.is_empty() {
                continue;
            }
            let storage = topology.storage_of(r);
            let latest = latest_valid(
                backups,
                &r.from,
                &storage.target.account,
                &storage.target.container,
                now,
            );
            let backup_reason = if force {
                Some(Reason::Forced)
            } else {
                match latest {
                    None => Some(Reason::FirstSync),
                    Some(b) => {
                        let age = b.record.age(now);
                        let rpo =
                            chrono::Duration::from_std(r.rpo).unwrap_or(chrono::Duration::MAX);
                        (age > rpo).then(|| Reason::OlderThanRpo {
                            age_secs: age.num_seconds(),
                            rpo_secs: r.rpo.as_secs(),
                        })
                    }
                }
            };
            let mut edge_steps = Vec::new();
            let preflight_id = step_id(r, "preflight", None);
            let (source, restore_reason): (Option<BackupSource>, Reason) = match &backup_reason {
                Some(reason) => {
                    let id = step_id(r, "backup", None);
                    edge_steps.push(Step {
                        id: id.clone(),
                        replication: r.name.clone(),
                        action: Action::Backup {
                            service: r.from.clone(),
                            storage: r.storage.clone(),
                        },
                        reason: reason.clone(),
                        after: vec![preflight_id.clone()],
                    });
                    (Some(BackupSource::Step(id)), Reason::NewBackup)
                }
                None => (
                    latest.map(|b| BackupSource::Existing(b.record.name.clone())),
                    Reason::FirstSync,
                ),
            };
            let Some(source) = source else { continue };
            for t in targets {
                let restored = restores
                    .iter()
                    .find(|e| e.target.eq_ignore_ascii_case(t))
                    .map(|e| e.backup.clone());
                let reason = match (&source, &restored) {
                    (BackupSource::Step(_), _) => restore_reason.clone(),
                    (BackupSource::Existing(b), Some(done)) if done == b => {
                        up_to_date.push(UpToDate {
                            replication: r.name.clone(),
                            target: t.clone(),
                            backup: b.clone(),
                        });
                        continue;
                    }
                    (BackupSource::Existing(_), _) => Reason::TargetBehind { restored },
                };
                push_restore_and_verify(
                    &mut edge_steps,
                    r,
                    t,
                    source.clone(),
                    reason,
                    &preflight_id,
                );
            }
            if !edge_steps.is_empty() {
                let mut services = vec![r.from.clone()];
                services.extend(edge_steps.iter().filter_map(|s| match &s.action {
                    Action::Restore { target, .. } => Some(target.clone()),
                    _ => None,
                }));
                steps.push(preflight(r, services, preflight_id));
                steps.extend(edge_steps);
            }
        }
        Ok(Self {
            schema_version: PLAN_SCHEMA_VERSION,
            created_at: now,
            kind: PlanKind::Sync {
                only: only.map(str::to_owned),
                force,
            },
            steps,
            up_to_date,
        })
    }

    /// The plan of `drsync backup SERVICE`: a backup through every replication from it.
    pub fn backup(topology: &Topology, service: &str, now: Timestamp) -> Result<Self, PlanError> {
        let reps: Vec<&Replication> = topology.replications_from(service).collect();
        if reps.is_empty() {
            return Err(PlanError::NotASource(service.into()));
        }
        let mut steps = Vec::new();
        for r in reps {
            let pre = step_id(r, "preflight", None);
            steps.push(preflight(r, vec![r.from.clone()], pre.clone()));
            steps.push(Step {
                id: step_id(r, "backup", None),
                replication: r.name.clone(),
                action: Action::Backup {
                    service: r.from.clone(),
                    storage: r.storage.clone(),
                },
                reason: Reason::Requested,
                after: vec![pre],
            });
        }
        Ok(Self {
            schema_version: PLAN_SCHEMA_VERSION,
            created_at: now,
            kind: PlanKind::Backup {
                service: service.into(),
            },
            steps,
            up_to_date: Vec::new(),
        })
    }

    /// The plan of `drsync restore --backup NAME --to TARGET`.
    pub fn restore(
        topology: &Topology,
        backups: &[CatalogEntry],
        backup: &BackupName,
        target: &str,
        now: Timestamp,
    ) -> Result<Self, PlanError> {
        let r = topology
            .replication_into(target)
            .ok_or_else(|| PlanError::NotATarget(target.into()))?;
        if !backups.iter().any(|b| &b.record.name == backup) {
            return Err(PlanError::UnknownBackup(backup.to_string()));
        }
        if !backup.service().eq_ignore_ascii_case(&r.from) {
            return Err(PlanError::WrongSource {
                backup: backup.to_string(),
                from: backup.service().into(),
                target: target.into(),
                expected: r.from.clone(),
            });
        }
        let target = topology
            .service(target)
            .map(|s| s.name().to_owned())
            .unwrap_or(target.into());
        let pre = step_id(r, "preflight", None);
        let mut steps = vec![preflight(
            r,
            vec![r.from.clone(), target.clone()],
            pre.clone(),
        )];
        push_restore_and_verify(
            &mut steps,
            r,
            &target,
            BackupSource::Existing(backup.clone()),
            Reason::Requested,
            &pre,
        );
        Ok(Self {
            schema_version: PLAN_SCHEMA_VERSION,
            created_at: now,
            kind: PlanKind::Restore {
                backup: backup.clone(),
                target,
            },
            steps,
            up_to_date: Vec::new(),
        })
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The plan as a table for people.
    pub fn to_table(&self) -> String {
        let mut rows = vec![[
            "#".to_owned(),
            "STEP".to_owned(),
            "ACTION".to_owned(),
            "AFTER".to_owned(),
            "REASON".to_owned(),
        ]];
        for (i, s) in self.steps.iter().enumerate() {
            rows.push([
                (i + 1).to_string(),
                s.id.clone(),
                s.action.describe(),
                if s.after.is_empty() {
                    "-".into()
                } else {
                    s.after.join(", ")
                },
                s.reason.to_string(),
            ]);
        }
        let mut widths = [0usize; 5];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        if self.steps.is_empty() {
            out.push_str("Nothing to do: every target holds a backup within its RPO.\n");
        } else {
            for row in &rows {
                let mut line = String::new();
                for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                    if i + 1 == row.len() {
                        line.push_str(cell);
                    } else {
                        let _ = write!(line, "{cell:<w$}  ");
                    }
                }
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        for u in &self.up_to_date {
            let _ = writeln!(
                out,
                "up to date: {} holds {} ({})",
                u.target, u.backup, u.replication
            );
        }
        out
    }

    /// The plan as pretty JSON (the serde form, with `schema_version`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plans serialize")
    }

    /// The plan as a Graphviz DOT digraph: one node a step, one edge a dependency.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph plan {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "  {} [label={}];",
                dot_quote(&s.id),
                dot_quote(&format!(
                    "{}\n{}\n({})",
                    s.action.verb(),
                    s.action.describe(),
                    s.reason
                ))
            );
        }
        for s in &self.steps {
            for a in &s.after {
                let _ = writeln!(out, "  {} -> {};", dot_quote(a), dot_quote(&s.id));
            }
        }
        out.push_str("}\n");
        out
    }
}

fn dot_quote(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

fn step_id(r: &Replication, verb: &str, service: Option<&str>) -> String {
    match service {
        Some(s) => format!("{}/{verb}/{s}", r.name),
        None => format!("{}/{verb}", r.name),
    }
}

fn preflight(r: &Replication, services: Vec<String>, id: String) -> Step {
    Step {
        id,
        replication: r.name.clone(),
        action: Action::Preflight {
            services,
            storage: r.storage.clone(),
        },
        reason: Reason::BeforeChanges,
        after: Vec::new(),
    }
}

fn push_restore_and_verify(
    steps: &mut Vec<Step>,
    r: &Replication,
    target: &str,
    backup: BackupSource,
    reason: Reason,
    preflight_id: &str,
) {
    let restore_id = step_id(r, "restore", Some(target));
    let mut after = vec![preflight_id.to_owned()];
    if let BackupSource::Step(id) = &backup {
        after.push(id.clone());
    }
    steps.push(Step {
        id: restore_id.clone(),
        replication: r.name.clone(),
        action: Action::Restore {
            target: target.into(),
            backup,
        },
        reason,
        after,
    });
    steps.push(Step {
        id: step_id(r, "verify", Some(target)),
        replication: r.name.clone(),
        action: Action::Verify {
            target: target.into(),
            source: r.from.clone(),
        },
        reason: Reason::AfterRestore,
        after: vec![restore_id],
    });
}

/// The newest backup of `source` in the given container that Azure still accepts at `now` and
/// that is not suspect.
pub fn latest_valid<'a>(
    backups: &'a [CatalogEntry],
    source: &str,
    account: &str,
    container: &str,
    now: Timestamp,
) -> Option<&'a CatalogEntry> {
    backups
        .iter()
        .filter(|b| {
            b.record.source.name.eq_ignore_ascii_case(source)
                && b.record.storage_account == account
                && b.record.container == container
                && b.record.is_restorable_at(now)
                && b.record.consistency != Consistency::Suspect
        })
        .max_by(|a, b| {
            a.record
                .created_at
                .cmp(&b.record.created_at)
                .then(a.record.name.cmp(&b.record.name))
        })
}

/// A duration as people read it: `1h 5m`, `3d 2h`, `40s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match () {
        _ if days > 0 => format!("{days}d {hours}h"),
        _ if hours > 0 => format!("{hours}h {mins}m"),
        _ if mins > 0 => format!("{mins}m {secs}s"),
        _ => format!("{secs}s"),
    }
}
