//! `drsync runs list|show`: the runs recorded in the state directory and their steps.

use std::path::PathBuf;

use drsync_planner::store::StepState;

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync runs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// `runs` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// Every run, oldest first.
    List,
    /// One run's plan and step states (a unique prefix of the id is enough).
    Show {
        /// The run id.
        #[arg(value_name = "RUN")]
        run: String,
    },
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let Some(config) = &args.config else {
        return Err(Coded::new(Exit::Usage, anyhow::anyhow!("--config FILE is required")).into());
    };
    super::sync::runtime()?.block_on(async {
        let ctx = Context::open(config, Needs::State).await?;
        match &args.command {
            RunsCommand::List => {
                let runs = ctx.checkpoints.runs()?;
                if args.json {
                    let v: Vec<_> = runs
                        .iter()
                        .map(|r| {
                            serde_json::json!({
                                "run_id": r.run_id, "started_at": r.started_at, "finished_at": r.finished_at,
                                "status": r.status, "kind": r.plan.kind, "steps": r.plan.steps.len(),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!("{:<36}  {:<20}  {:<11}  {:>5}  COMMAND", "RUN", "STARTED", "STATUS", "STEPS");
                    for r in runs {
                        let kind = serde_json::to_value(&r.plan.kind)?;
                        println!(
                            "{:<36}  {:<20}  {:<11}  {:>5}  {}",
                            r.run_id,
                            r.started_at.format("%Y-%m-%d %H:%M:%S"),
                            r.status.as_str(),
                            r.plan.steps.len(),
                            kind["command"].as_str().unwrap_or("-")
                        );
                    }
                }
            }
            RunsCommand::Show { run } => {
                let Some(r) = ctx.checkpoints.find_run(run)? else {
                    return Err(Coded::new(Exit::Usage, anyhow::anyhow!("no single run matches `{run}` (see `drsync runs list`)")).into());
                };
                let steps = ctx.checkpoints.steps(r.run_id)?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "run": r, "steps": steps }))?);
                } else {
                    println!("run {}: {} (started {})", r.run_id, r.status.as_str(), r.started_at.to_rfc3339());
                    if let Some(f) = r.finished_at {
                        println!("finished {}", f.to_rfc3339());
                    }
                    for s in &r.plan.steps {
                        let rec = steps.iter().find(|x| x.step_id == s.id);
                        let state = rec.map(|x| x.state.name()).unwrap_or("pending");
                        let backup = rec.and_then(|x| x.backup.as_ref()).map(|b| b.to_string()).unwrap_or_default();
                        println!("  {:<40} {:<10} {}", s.id, state, backup);
                        if let Some(StepState::Failed { code, message, .. }) = rec.map(|x| &x.state) {
                            println!("      {code}: {message}");
                        }
                        for n in rec.map(|x| x.notes.as_slice()).unwrap_or_default() {
                            println!("      note: {n}");
                        }
                    }
                }
            }
        }
        Ok(Exit::Success)
    })
}
