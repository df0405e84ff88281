//! `drsync plan`: what `drsync sync` would do now, and why, without doing it.
//!
//! Reads only the configuration and the local catalog: no Azure call. The same configuration,
//! catalog and time give the same plan. Output as a table, JSON or Graphviz DOT.

use std::path::PathBuf;

use clap::ValueEnum;
use drsync_planner::catalog;
use drsync_planner::plan::Plan;

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

/// Output formats of `drsync plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    /// A table for people.
    Table,
    /// JSON (the plan's versioned serde form).
    Json,
    /// Graphviz DOT (`drsync plan --output dot | dot -Tsvg > plan.svg`).
    Dot,
}

/// Arguments of `drsync plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = PlanOutput::Table)]
    pub output: PlanOutput,
    /// Only the replication of this service.
    #[arg(long, value_name = "SERVICE")]
    pub only: Option<String>,
    /// Plan a new backup even if the newest one is within the RPO.
    #[arg(long)]
    pub force: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    super::sync::runtime()?.block_on(async {
        let ctx = Context::open(&args.config, Needs::State).await?;
        let backups = catalog::entries(&ctx.checkpoints)?;
        let restores = ctx.checkpoints.restores()?;
        let plan = Plan::sync(&ctx.topology, &backups, &restores, ctx.clock.now(), args.only.as_deref(), args.force)
            .map_err(|e| Coded::new(Exit::Usage, e))?;
        match args.output {
            PlanOutput::Table => print!("{}", plan.to_table()),
            PlanOutput::Json => println!("{}", plan.to_json()),
            PlanOutput::Dot => print!("{}", plan.to_dot()),
        }
        if let Some(run) = ctx.checkpoints.runs()?.into_iter().rev().find(|r| r.status.is_unfinished()) {
            eprintln!(
                "note: run {} is unfinished ({}); `drsync sync` resumes it before following this plan",
                run.run_id,
                run.status.as_str()
            );
        }
        Ok(Exit::Success)
    })
}
