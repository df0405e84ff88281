//! `drsync backup SERVICE`: one backup of a primary through each replication from it, with the
//! same preflight, checkpoints, consistency guard and catalog sidecar as `sync`.

use std::path::PathBuf;
use std::sync::Arc;

use drsync_planner::plan::{Plan, PlanKind};

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

use super::sync::{Progress, execute, runtime};

/// Arguments of `drsync backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The primary to back up.
    #[arg(value_name = "SERVICE")]
    pub service: String,
    /// Keep a suspect backup instead of taking another.
    #[arg(long)]
    pub no_retry_suspect: bool,
}

/// Runs the command.
pub fn run(args: &Args, json_logs: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config, Needs::Azure).await?;
        let result = async {
            let plan = Plan::backup(&ctx.topology, &args.service, ctx.clock.now())
                .map_err(|e| Coded::new(Exit::Usage, e))?;
            let mut options = ctx.exec_options(false, None);
            options.retry_suspect = !args.no_retry_suspect;
            let progress = Arc::new(Progress::new(json_logs, &ctx));
            let ex = ctx.executor(options, progress.clone(), crate::context::ctrl_c_channel())?;
            // Resume an unfinished backup of the same service rather than starting another.
            let run = match ex.unfinished_run()? {
                Some(run) if matches!(&run.plan.kind, PlanKind::Backup { service } if service.eq_ignore_ascii_case(&args.service)) => {
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
