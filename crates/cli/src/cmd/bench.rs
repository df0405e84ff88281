//! `drsync bench`: a fleet sync on the embedded emulator, measured against its lower bound.
//!
//! The fleet: `--primaries` Premium primaries in West Europe, each with `--standbys` standbys in
//! North Europe, one subscription, backups in a North Europe account. The emulator runs with
//! Azure's default ARM token buckets (reads 250 + 25/s, writes 200 + 10/s per subscription),
//! its default operation durations (backup 300 s, restore 1800 s) times `--time-scale`, and no
//! duration jitter, so the bound is exact. drsync runs one `sync` with its normal executor and
//! ARM client, self-pacing at `--pacing` (default 90 %) of those rates.
//!
//! Lower bound: every chain is a backup then its restores, so no schedule beats
//! `backup + restore`; with `C` concurrent steps, none beats `(P·backup + P·S·restore) / C`;
//! and the minimum ARM traffic (one POST and one poll per operation) cannot beat the token
//! buckets. The bound is the largest of the three. Reported: makespan, bound, their ratio, ARM
//! requests sent by drsync, 429s received (client and emulator side).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use drsync_emulator::EmulatorConfig;
use drsync_planner::catalog;
use drsync_planner::executor::{NoObserver, Outcome};
use drsync_planner::plan::Plan;

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Primaries in the fleet.
    #[arg(long, default_value_t = 50)]
    pub primaries: usize,
    /// Standbys per primary.
    #[arg(long, default_value_t = 2)]
    pub standbys: usize,
    /// Emulated durations are multiplied by this (0.05: backup 15 s, restore 90 s).
    #[arg(long, default_value_t = 0.05)]
    pub time_scale: f64,
    /// Steps running at once (default: one per standby, so restores are never queued).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// drsync's own ARM pacing as a fraction of Azure's default buckets (`[limits]`), leaving
    /// the rest of the subscription's budget to others; 1.0 paces at exactly Azure's rates.
    #[arg(long, default_value_t = 0.9)]
    pub pacing: f64,
    /// Where to keep the fleet's state and storage (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

fn fleet_config(args: &Args, concurrency: usize) -> String {
    const SUB: &str = "5e1f0a9b-8c7d-4f8a-9c7d-6f1d3c2a5b4e";
    let mut t = String::new();
    let _ = writeln!(
        t,
        "[azure]\nendpoint = \"embedded\"\n\n[embedded]\ntime_scale = {:?}\n\n[state]\ndir = \"state\"\n\n\
         [limits]\nconcurrency = {concurrency}\narm_reads_per_second = {:?}\narm_read_burst = {}\n\
         arm_writes_per_second = {:?}\narm_write_burst = {}\n\n[[storage]]\nname = \"neu-backups\"\naccount = \"benchneu\"\n\
         region = \"northeurope\"\ncontainer = \"apim-backups\"\nendpoint = \"dir:storage/benchneu\"\n\
         access = \"system_identity\"\n",
        args.time_scale,
        25.0 * args.pacing,
        (250.0 * args.pacing).floor() as u32,
        10.0 * args.pacing,
        (200.0 * args.pacing).floor() as u32,
    );
    for p in 0..args.primaries {
        let _ = writeln!(
            t,
            "[[service]]\nname = \"apim-bench-p{p:03}\"\nsubscription = \"{SUB}\"\nresource_group = \"rg-bench\"\n\
             region = \"westeurope\"\nsku = \"Premium\"\nrole = \"primary\"\n"
        );
        for s in 0..args.standbys {
            let _ = writeln!(
                t,
                "[[service]]\nname = \"apim-bench-p{p:03}-s{s}\"\nsubscription = \"{SUB}\"\nresource_group = \"rg-bench\"\n\
                 region = \"northeurope\"\nsku = \"Premium\"\nrole = \"standby\"\n"
            );
        }
    }
    for p in 0..args.primaries {
        let to: Vec<String> = (0..args.standbys)
            .map(|s| format!("\"apim-bench-p{p:03}-s{s}\""))
            .collect();
        let _ = writeln!(
            t,
            "[[replication]]\nname = \"fleet-{p:03}\"\nfrom = \"apim-bench-p{p:03}\"\nto = [{}]\nstorage = \"neu-backups\"\n\
             rpo = \"1h\"\nretention = \"14d\"\n",
            to.join(", ")
        );
    }
    t
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    if args.primaries == 0
        || args.standbys == 0
        || !(args.time_scale > 0.0 && args.time_scale.is_finite())
    {
        return Err(Coded::new(
            Exit::Usage,
            anyhow::anyhow!(
                "--primaries and --standbys must be at least 1, --time-scale positive, --pacing in (0, 1]"
            ),
        )
        .into());
    }
    let concurrency = args
        .concurrency
        .unwrap_or(args.primaries * args.standbys)
        .max(1);
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = std::env::temp_dir()
                .join(format!("drsync-bench-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&tmp)?;
            tmp
        }
    };
    let config_path = dir.join("fleet.toml");
    std::fs::write(&config_path, fleet_config(args, concurrency))?;

    super::sync::runtime()?.block_on(async {
        let ctx = Context::open_with(&config_path, Needs::Azure, |c: &mut EmulatorConfig| {
            c.durations.jitter = 0.0;
        })
        .await?;
        let defaults = EmulatorConfig::default();
        let (backup, restore) =
            (defaults.durations.backup_secs * args.time_scale, defaults.durations.restore_secs * args.time_scale);
        let throttle = defaults.throttle;

        let backups = catalog::entries(&ctx.checkpoints)?;
        let restores = ctx.checkpoints.restores()?;
        let plan = Plan::sync(&ctx.topology, &backups, &restores, ctx.clock.now(), None, true)?;
        let ex = ctx.executor(ctx.exec_options(false, None), Arc::new(NoObserver), crate::context::ctrl_c_channel())?;
        let run = ex.create_run(plan, false)?;
        let started = ctx.clock.now();
        let outcome = ex.execute(run).await?;
        let makespan = (ctx.clock.now() - started).num_milliseconds() as f64 / 1000.0;

        let (p, s, c) = (args.primaries as f64, (args.primaries * args.standbys) as f64, concurrency as f64);
        let critical = backup + restore;
        let capacity = (p * backup + s * restore) / c;
        let ops = p + s;
        let rate = ((ops - f64::from(throttle.write_bucket)) / throttle.write_refill_per_sec)
            .max((ops - f64::from(throttle.read_bucket)) / throttle.read_refill_per_sec)
            .max(0.0);
        let bound = critical.max(capacity).max(rate);
        let metrics = ctx.azure.as_ref().map(|a| a.client().metrics()).unwrap_or_default();
        let log = ctx.embedded.as_ref().map(|e| e.request_log()).unwrap_or_default();
        let emulator_429 = log.iter().filter(|r| r.status == 429).count();
        let mut by_kind = std::collections::BTreeMap::<String, usize>::new();
        for r in &log {
            *by_kind.entry(r.kind.clone()).or_default() += 1;
        }
        // When the requests arrived, per second of the run (where the read bucket binds).
        let first = log.first().map(|r| r.time);
        let mut per_second = Vec::<usize>::new();
        for r in &log {
            let sec = first.map_or(0, |f| (r.time - f).num_seconds().max(0) as usize);
            if per_second.len() <= sec {
                per_second.resize(sec + 1, 0);
            }
            per_second[sec] += 1;
        }
        let figures = serde_json::json!({
            "primaries": args.primaries,
            "standbys_per_primary": args.standbys,
            "time_scale": args.time_scale,
            "concurrency": concurrency,
            "pacing": args.pacing,
            "backup_secs": backup,
            "restore_secs": restore,
            "makespan_secs": makespan,
            "lower_bound_secs": bound,
            "bound_parts": {"critical_path": critical, "concurrency": capacity, "rate_limits": rate},
            "ratio": makespan / bound,
            "arm_requests_sent": metrics.requests_sent,
            "throttled_429_client": metrics.throttled_429,
            "throttled_429_emulator": emulator_429,
            "emulator_requests": log.len(),
            "requests_by_kind": by_kind,
            "requests_per_second": per_second,
            "retries": metrics.retries,
            "slowdowns": metrics.slowdowns,
            "outcome": match &outcome { Outcome::Succeeded => "succeeded".to_owned(), other => format!("{other:?}") },
        });
        ctx.close().await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&figures)?);
        } else {
            println!("fleet:          {} primaries x {} standbys, concurrency {concurrency}, time scale {}", args.primaries, args.standbys, args.time_scale);
            println!("durations:      backup {backup:.1} s, restore {restore:.1} s (no jitter)");
            println!("makespan:       {makespan:.1} s");
            println!("lower bound:    {bound:.1} s (critical path {critical:.1} s, concurrency {capacity:.1} s, rate limits {rate:.1} s)");
            println!("ratio:          {:.3}", makespan / bound);
            println!("ARM requests:   {} sent by drsync ({} at the emulator)", metrics.requests_sent, log.len());
            println!("429s received:  {} (emulator answered {emulator_429})", metrics.throttled_429);
            println!("outcome:        {}", figures["outcome"].as_str().unwrap_or("-"));
        }
        if args.dir.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(if matches!(outcome, Outcome::Succeeded) { Exit::Success } else { Exit::Failed })
    })
}
