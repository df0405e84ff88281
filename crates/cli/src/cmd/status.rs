//! `drsync status`: for every replication edge, the newest backup's age against the RPO, how
//! far the target lags (age of the backup it holds), and days until that backup expires.
//!
//! Reads only the local state (catalog, restore records, runs): no Azure call, so it answers
//! even when a region is down. Text or `--output json` (versioned).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::ValueEnum;
use serde::Serialize;

use drsync_core::Timestamp;
use drsync_planner::catalog::{self, CatalogEntry};
use drsync_planner::plan::{human, latest_valid};

use crate::context::{Context, Needs};
use crate::exit::Exit;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table.
    Text,
    /// JSON.
    Json,
}

/// Arguments of `drsync status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// One edge's status (JSON schema version 1).
#[derive(Debug, Serialize)]
pub struct EdgeStatus {
    /// The replication.
    pub replication: String,
    /// The source.
    pub source: String,
    /// The target.
    pub target: String,
    /// The RPO in seconds.
    pub rpo_secs: u64,
    /// The newest valid backup of the source.
    pub last_backup: Option<String>,
    /// Its age in seconds.
    pub last_backup_age_secs: Option<i64>,
    /// Whether that age is within the RPO.
    pub backup_within_rpo: bool,
    /// The backup the target holds.
    pub restored_backup: Option<String>,
    /// When it was restored.
    pub restored_at: Option<Timestamp>,
    /// The age of the configuration the target holds (now minus the backup's creation).
    pub lag_secs: Option<i64>,
    /// Whether the lag is within the RPO.
    pub within_rpo: bool,
    /// Days until the restored backup expires (negative: expired).
    pub days_to_expiry: Option<f64>,
    /// `ok`, `behind` (a newer backup is waiting), `stale` (outside the RPO), `never synced`.
    pub state: &'static str,
}

#[derive(Debug, Serialize)]
struct StatusDoc {
    schema_version: u32,
    generated_at: Timestamp,
    edges: Vec<EdgeStatus>,
    unfinished_runs: Vec<String>,
}

/// Computes every edge's status.
pub fn edges(ctx: &Context, now: Timestamp) -> anyhow::Result<Vec<EdgeStatus>> {
    let backups: Vec<CatalogEntry> = catalog::entries(&ctx.checkpoints)?;
    let restores = ctx.checkpoints.restores()?;
    let mut out = Vec::new();
    for r in ctx.topology.replications() {
        let storage = ctx.topology.storage_of(r);
        let latest = latest_valid(
            &backups,
            &r.from,
            &storage.target.account,
            &storage.target.container,
            now,
        );
        let rpo = chrono::Duration::from_std(r.rpo).unwrap_or(chrono::Duration::MAX);
        for t in &r.to {
            let restored = restores.iter().find(|x| x.target.eq_ignore_ascii_case(t));
            let restored_entry =
                restored.and_then(|x| backups.iter().find(|b| b.record.name == x.backup));
            let created = restored.map(|x| {
                restored_entry
                    .map(|e| e.record.created_at)
                    .unwrap_or_else(|| x.backup.started_at())
            });
            let expires = restored.map(|x| {
                restored_entry
                    .map(|e| e.record.expires_at)
                    .unwrap_or_else(|| drsync_core::BackupRecord::expiry_for(x.backup.started_at()))
            });
            let lag = created.map(|c| now - c);
            let within = lag.is_some_and(|l| l <= rpo);
            let behind = match (latest, restored) {
                (Some(l), Some(x)) => l.record.name != x.backup,
                _ => false,
            };
            let state = match (restored, within, behind) {
                (None, _, _) => "never synced",
                (Some(_), false, _) => "stale",
                (Some(_), true, true) => "behind",
                (Some(_), true, false) => "ok",
            };
            out.push(EdgeStatus {
                replication: r.name.clone(),
                source: r.from.clone(),
                target: t.clone(),
                rpo_secs: r.rpo.as_secs(),
                last_backup: latest.map(|l| l.record.name.to_string()),
                last_backup_age_secs: latest.map(|l| l.record.age(now).num_seconds()),
                backup_within_rpo: latest.is_some_and(|l| l.record.age(now) <= rpo),
                restored_backup: restored.map(|x| x.backup.to_string()),
                restored_at: restored.map(|x| x.restored_at),
                lag_secs: lag.map(|l| l.num_seconds()),
                within_rpo: within,
                days_to_expiry: expires
                    .map(|e| ((e - now).num_seconds() as f64 / 86_400.0 * 10.0).round() / 10.0),
                state,
            });
        }
    }
    Ok(out)
}

fn secs(s: Option<i64>) -> String {
    s.map(|s| human(std::time::Duration::from_secs(s.max(0) as u64)))
        .unwrap_or_else(|| "-".into())
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    super::sync::runtime()?.block_on(async {
        let ctx = Context::open(&args.config, Needs::State).await?;
        let now = ctx.clock.now();
        let edges = edges(&ctx, now)?;
        let unfinished: Vec<String> = ctx
            .checkpoints
            .runs()?
            .into_iter()
            .filter(|r| r.status.is_unfinished())
            .map(|r| r.run_id.to_string())
            .collect();
        match args.output {
            Output::Json => {
                let doc = StatusDoc {
                    schema_version: 1,
                    generated_at: now,
                    edges,
                    unfinished_runs: unfinished,
                };
                println!("{}", serde_json::to_string_pretty(&doc)?);
            }
            Output::Text => {
                let mut out = String::new();
                let _ = writeln!(
                    out,
                    "{:<16} {:<20} {:<20} {:>8} {:>12} {:>10} {:>8}  STATE",
                    "REPLICATION", "SOURCE", "TARGET", "RPO", "LAST BACKUP", "LAG", "EXPIRES"
                );
                for e in &edges {
                    let _ = writeln!(
                        out,
                        "{:<16} {:<20} {:<20} {:>8} {:>12} {:>10} {:>8}  {}",
                        e.replication,
                        e.source,
                        e.target,
                        human(std::time::Duration::from_secs(e.rpo_secs)),
                        secs(e.last_backup_age_secs),
                        secs(e.lag_secs),
                        e.days_to_expiry
                            .map(|d| format!("{d:.1}d"))
                            .unwrap_or_else(|| "-".into()),
                        e.state
                    );
                }
                for r in &unfinished {
                    let _ = writeln!(out, "unfinished run {r}: `drsync sync` resumes it");
                }
                print!("{out}");
            }
        }
        Ok(Exit::Success)
    })
}
