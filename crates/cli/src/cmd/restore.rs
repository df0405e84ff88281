//! `drsync restore --backup NAME --to SERVICE`: restore one catalogued backup into one target,
//! then verify it. Preflight refuses an expired backup, a missing blob or a SKU mismatch before
//! any POST. A backup missing from the local catalog is looked up in storage first (as
//! `catalog sync` would), so this works from a fresh state directory.

use std::path::PathBuf;
use std::sync::Arc;

use drsync_core::BackupName;
use drsync_planner::catalog;
use drsync_planner::plan::Plan;

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

use super::sync::{Progress, execute, runtime};

/// Arguments of `drsync restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The backup to restore (`{service}.{YYYYMMDDTHHMMSSZ}.{run}`).
    #[arg(long, value_name = "NAME")]
    pub backup: String,
    /// The target service.
    #[arg(long, value_name = "SERVICE")]
    pub to: String,
}

/// Runs the command.
pub fn run(args: &Args, json_logs: bool) -> anyhow::Result<Exit> {
    let backup = BackupName::parse(&args.backup).map_err(|e| Coded::new(Exit::Usage, e))?;
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config, Needs::Azure).await?;
        let result = async {
            let mut entries = catalog::entries(&ctx.checkpoints)?;
            if !entries.iter().any(|e| e.record.name == backup) {
                let report =
                    catalog::sync_from_storage(&ctx.checkpoints, &ctx.topology, &ctx.stores)
                        .await?;
                eprintln!(
                    "backup not in the local catalog; read {} backup(s) from storage",
                    report.found
                );
                entries = catalog::entries(&ctx.checkpoints)?;
            }
            let plan = Plan::restore(&ctx.topology, &entries, &backup, &args.to, ctx.clock.now())
                .map_err(|e| Coded::new(Exit::Usage, e))?;
            let progress = Arc::new(Progress::new(json_logs, &ctx));
            let ex = ctx.executor(
                ctx.exec_options(false, None),
                progress.clone(),
                crate::context::ctrl_c_channel(),
            )?;
            let run = match ex.unfinished_run()? {
                Some(run) if run.plan.kind == plan.kind => {
                    println!("Resuming run {}.", run.run_id);
                    run
                }
                _ => {
                    print!("{}", plan.to_table());
                    ex.create_run(plan, false)?
                }
            };
            execute(&ctx, &ex, run, &progress).await
        }
        .await;
        ctx.close().await?;
        result
    })
}
