//! `drsync`: cross-region disaster-recovery sync for Azure API Management.
//!
//! This file only parses the command line, starts logging and dispatches. Each subcommand lives
//! in its own module under `cmd/` with an `Args` struct (clap derive) and a `run` function; to
//! add one, add a variant to [`Command`] and a match arm in [`main`]. Exit codes are mapped in
//! `exit.rs` and documented in the README.

mod cmd;
mod context;
mod embedded;
mod exit;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Cross-region disaster-recovery sync for Azure API Management.
#[derive(Debug, Parser)]
#[command(name = "drsync", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// More log output (-v debug, -vv trace). `RUST_LOG` overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file and print its topology.
    Validate(cmd::validate::Args),
    /// Bring every standby and staging target within its RPO: back up, restore, verify.
    /// Resumes an unfinished run first.
    Sync(cmd::sync::Args),
    /// Show what `sync` would do and why (table, JSON or Graphviz DOT), without doing it.
    Plan(cmd::plan::Args),
    /// Back up one primary now.
    Backup(cmd::backup::Args),
    /// Restore one catalogued backup into one target.
    Restore(cmd::restore::Args),
    /// Per replication edge: newest backup age against the RPO, target lag, days to expiry.
    Status(cmd::status::Args),
    /// Runs recorded in the state directory.
    Runs(cmd::runs::Args),
    /// The backup catalog: rebuild from storage, list, prune.
    Catalog(cmd::catalog::Args),
    /// Benchmark: a fleet sync on the embedded emulator against its lower bound.
    Bench(cmd::bench::Args),
    /// Failover drill: restore into a standby (or a drill service), verify, measure RTO/RPO.
    Drill(cmd::drill::Args),
    /// Reports of past drills, clones, failovers and failbacks.
    Drills(cmd::drills::Args),
    /// Copy a primary's configuration into a staging service, with named-value overrides.
    Clone(cmd::clone::Args),
    /// Promote a standby while the primary's region is down (never calls the old primary).
    Failover(cmd::failover::Args),
    /// Undo a failover: restore the current primary into the original one and swap back.
    Failback(cmd::failover::FailbackArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error and 0 for --help/--version, as the README documents.
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.verbose);
    let outcome = match cli.command {
        Command::Validate(args) => cmd::validate::run(&args),
        Command::Sync(args) => cmd::sync::run(&args, cli.log_format == LogFormat::Json),
        Command::Plan(args) => cmd::plan::run(&args),
        Command::Backup(args) => cmd::backup::run(&args, cli.log_format == LogFormat::Json),
        Command::Restore(args) => cmd::restore::run(&args, cli.log_format == LogFormat::Json),
        Command::Status(args) => cmd::status::run(&args),
        Command::Runs(args) => cmd::runs::run(&args),
        Command::Catalog(args) => cmd::catalog::run(&args),
        Command::Bench(args) => cmd::bench::run(&args),
        Command::Drill(args) => cmd::drill::run_blocking(&args),
        Command::Drills(args) => cmd::drills::run(&args),
        Command::Clone(args) => cmd::clone::run_blocking(&args),
        Command::Failover(args) => cmd::failover::run_blocking(&args),
        Command::Failback(args) => cmd::failover::failback_blocking(&args),
    };
    exit::report(outcome)
}

/// Logs go to stderr so stdout carries only command output.
fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => {
            "warn,drsync=info,drsync_core=info,drsync_arm_client=info,drsync_planner=info,drsync_emulator=info"
        }
        1 => {
            "info,drsync=debug,drsync_core=debug,drsync_arm_client=debug,drsync_planner=debug,drsync_emulator=debug"
        }
        _ => {
            "debug,drsync=trace,drsync_core=trace,drsync_arm_client=trace,drsync_planner=trace,drsync_emulator=trace"
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}
