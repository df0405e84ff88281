//! `drsync sync`: bring every target within its RPO. The main job.
//!
//! An unfinished run (killed, interrupted, or stopped by a lease) is resumed first, following
//! its saved plan: accepted operations are polled, not posted again. Then a fresh plan is made
//! from the catalog and run if it has steps. Progress goes to stderr: bars on a terminal,
//! plain lines otherwise, structured log events with `--log-format json`. The plan and the
//! summary go to stdout.
//!
//! Also home of what `backup` and `restore` share: [`Progress`] and [`execute`].

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use parking_lot::Mutex;

use drsync_planner::catalog;
use drsync_planner::executor::{Event, Executor, Observer, Outcome};
use drsync_planner::plan::Plan;
use drsync_planner::store::{RunRecord, StepState};

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Only the replication of this service (a source: all its targets; a target: just it).
    #[arg(long, value_name = "SERVICE")]
    pub only: Option<String>,
    /// Take a new backup even if the newest one is within the RPO.
    #[arg(long)]
    pub force: bool,
    /// Keep going after a failed step (its dependent steps are skipped).
    #[arg(long)]
    pub continue_on_error: bool,
    /// How long to wait for a busy service (409 / Updating) before failing, e.g. `20m`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub busy_timeout: Option<Duration>,
    /// Keep a suspect backup (configuration changed while it ran) instead of taking another.
    #[arg(long)]
    pub no_retry_suspect: bool,
}

/// Runs the command.
pub fn run(args: &Args, json_logs: bool) -> anyhow::Result<Exit> {
    runtime()?.block_on(async {
        let ctx = Context::open(&args.config, Needs::Azure).await?;
        let result = sync(&ctx, args, json_logs).await;
        ctx.close().await?;
        result
    })
}

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn sync(ctx: &Context, args: &Args, json_logs: bool) -> anyhow::Result<Exit> {
    let mut options = ctx.exec_options(args.continue_on_error, args.busy_timeout);
    options.retry_suspect = !args.no_retry_suspect;
    let progress = Arc::new(Progress::new(json_logs, ctx));
    let cancel = crate::context::ctrl_c_channel();
    let ex = ctx.executor(options, progress.clone(), cancel.clone())?;

    // Resume unfinished runs first, oldest first: an older run may hold leases a newer one
    // is waiting for.
    for run in ex.unfinished_runs()? {
        println!(
            "Resuming run {} (started {}, {}): {} step(s) in its plan.",
            run.run_id,
            run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            run.status.as_str(),
            run.plan.steps.len()
        );
        let exit = execute(ctx, &ex, run, &progress).await?;
        if exit != Exit::Success {
            return Ok(exit);
        }
    }
    if *cancel.borrow() {
        return Err(Coded::new(
            Exit::Interrupted,
            anyhow::anyhow!("interrupted before planning"),
        )
        .into());
    }
    let backups = catalog::entries(&ctx.checkpoints)?;
    let restores = ctx.checkpoints.restores()?;
    let plan = Plan::sync(
        &ctx.topology,
        &backups,
        &restores,
        ctx.clock.now(),
        args.only.as_deref(),
        args.force,
    )
    .map_err(|e| Coded::new(Exit::Usage, e))?;
    print!("{}", plan.to_table());
    if plan.is_empty() {
        return Ok(Exit::Success);
    }
    let run = ex.create_run(plan, args.continue_on_error)?;
    execute(ctx, &ex, run, &progress).await
}

/// Executes (or resumes) a run and turns its outcome into an exit code, printing a summary.
pub async fn execute(
    ctx: &Context,
    ex: &Arc<Executor>,
    run: RunRecord,
    progress: &Progress,
) -> anyhow::Result<Exit> {
    let id = run.run_id;
    let outcome = ex.execute(run).await;
    progress.finish();
    ctx.save_embedded();
    let outcome = outcome?;
    let steps = ctx.checkpoints.steps(id)?;
    let run = ctx.checkpoints.run(id)?.expect("run recorded");
    for s in &steps {
        for n in &s.notes {
            println!("note: {}: {n}", s.step_id);
        }
    }
    match outcome {
        Outcome::Succeeded => {
            println!("Run {id} succeeded: {} step(s).", run.plan.steps.len());
            for s in &steps {
                if let (Some(b), true) = (&s.backup, s.step_id.contains("/backup")) {
                    println!("  backup  {b}");
                }
                if let (Some(b), true) = (&s.backup, s.step_id.contains("/restore/")) {
                    let target = s.step_id.rsplit('/').next().unwrap_or_default();
                    println!("  restore {b} -> {target}");
                }
            }
            Ok(Exit::Success)
        }
        Outcome::Failed(failures) => {
            let lines: Vec<String> = failures.iter().map(|(s, m)| format!("  {s}: {m}")).collect();
            let pending = steps.iter().filter(|s| matches!(s.state, StepState::Pending)).count();
            let mut msg = format!("run {id} failed:\n{}", lines.join("\n"));
            if pending > 0 {
                msg.push_str(&format!(
                    "\n{pending} step(s) not started (fail-fast; use --continue-on-error to run independent steps)"
                ));
            }
            Err(anyhow::anyhow!(msg))
        }
        Outcome::Interrupted => Err(Coded::new(
            Exit::Interrupted,
            anyhow::anyhow!(
                "run {id} interrupted; its state is saved in {}: run the same command again to resume",
                ctx.state_dir.display()
            ),
        )
        .into()),
        Outcome::LeaseHeld { service, owner, until } => {
            // The owner is `{run}/{step}`: say which run, and whether it can be resumed.
            let holder = owner
                .split('/')
                .next()
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
                .and_then(|id| ctx.checkpoints.run(id).ok().flatten());
            let advice = match holder {
                Some(r) if r.status.is_unfinished() => format!(
                    "it belongs to unfinished run {} ({}): run `drsync sync` to resume and finish it first",
                    r.run_id,
                    r.status.as_str()
                ),
                _ => "another drsync run is operating on it: wait for it, or for the lease to expire".into(),
            };
            Err(Coded::new(
                Exit::Leased,
                anyhow::anyhow!(
                    "service `{service}` is leased by {owner} until {}; {advice}",
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            )
            .into())
        }
    }
}

enum Mode {
    Bars(MultiProgress),
    Lines,
    Json,
}

/// Shows executor events: progress bars on a terminal, plain lines otherwise, log events with
/// `--log-format json`.
pub struct Progress {
    mode: Mode,
    bars: Mutex<HashMap<String, ProgressBar>>,
    embedded: Option<Arc<crate::embedded::Embedded>>,
}

impl Progress {
    /// A progress display for this context.
    pub fn new(json_logs: bool, ctx: &Context) -> Self {
        let mode = if json_logs {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::new())
        } else {
            Mode::Lines
        };
        Self {
            mode,
            bars: Mutex::new(HashMap::new()),
            embedded: ctx.embedded.clone(),
        }
    }

    fn finish(&self) {
        for (_, bar) in self.bars.lock().drain() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }

    fn line(&self, text: String) {
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }
}

impl Observer for Progress {
    fn event(&self, event: &Event) {
        if let (Event::State { .. }, Some(e)) = (event, &self.embedded) {
            // Keep the embedded emulator's state on disk in step with the checkpoints.
            let _ = e.save();
        }
        match (&self.mode, event) {
            (Mode::Json, Event::Started { step, state }) => {
                tracing::info!(step, state, "step started")
            }
            (
                Mode::Json,
                Event::State {
                    step,
                    state,
                    detail,
                },
            ) => tracing::info!(step, state, detail, "step state"),
            (Mode::Json, Event::Note { step, text }) => tracing::info!(step, "{text}"),
            (
                Mode::Json,
                Event::Finished {
                    step,
                    state,
                    message,
                },
            ) => {
                if *state == "failed" {
                    tracing::error!(step, state, "{message}");
                } else {
                    tracing::info!(step, state, message, "step finished");
                }
            }
            (Mode::Bars(m), Event::Started { step, state }) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                        .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar.set_message(format!("{step}: {state}"));
                self.bars.lock().insert(step.clone(), bar);
            }
            (
                Mode::Bars(_),
                Event::State {
                    step,
                    state,
                    detail,
                },
            ) => {
                if let Some(bar) = self.bars.lock().get(step) {
                    bar.set_message(format!("{step}: {state} {detail}"));
                }
            }
            (
                Mode::Bars(_),
                Event::Finished {
                    step,
                    state,
                    message,
                },
            ) => {
                let mark = if *state == "succeeded" { "ok" } else { "!!" };
                match self.bars.lock().remove(step) {
                    Some(bar) => {
                        bar.finish_with_message(format!("{mark} {step}: {state} {message}"))
                    }
                    None => self.line(format!("{mark} {step}: {state} {message}")),
                }
            }
            (_, Event::Note { step, text }) => self.line(format!("   {step}: {text}")),
            (Mode::Lines, Event::Started { step, state }) => {
                eprintln!("-> {step}: start ({state})")
            }
            // A terminal state is reported once, by the `Finished` event that follows it.
            (Mode::Lines, Event::State { state, .. })
                if matches!(*state, "succeeded" | "failed") => {}
            (
                Mode::Lines,
                Event::State {
                    step,
                    state,
                    detail,
                },
            ) => eprintln!("   {step}: {state} {detail}"),
            (
                Mode::Lines,
                Event::Finished {
                    step,
                    state,
                    message,
                },
            ) => eprintln!("<- {step}: {state} {message}"),
        }
    }
}
