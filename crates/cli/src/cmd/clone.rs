//! `drsync clone --from PRIMARY --to STAGING [--overrides FILE]`: restore the primary's
//! configuration into a staging service (the same region is allowed), replace named values
//! after the restore (staging backends, keys), and verify with the overrides taken into account.

use std::path::PathBuf;

use anyhow::Context as _;
use drsync_planner::drill::overrides::parse_overrides;
use drsync_planner::drill::report::DrillKind;
use drsync_planner::drill::runner::BackupChoice;

use super::drill::{Session, load_hooks, usage};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync clone`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The service to copy (a replication's source).
    #[arg(long, value_name = "PRIMARY")]
    pub from: String,
    /// The service to restore into (one of that replication's targets).
    #[arg(long, value_name = "STAGING")]
    pub to: String,
    /// Named values to replace after the restore (`[named_values]`; see docs/drills.md).
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
    /// Restore the newest valid backup instead of taking a fresh one.
    #[arg(long)]
    pub use_latest: bool,
    /// Hooks file.
    #[arg(long, value_name = "FILE")]
    pub hooks: Option<PathBuf>,
}

/// Runs `drsync clone` on its own runtime.
pub fn run_blocking(args: &Args) -> anyhow::Result<Exit> {
    super::sync::runtime()?.block_on(run(args))
}

/// Runs `drsync clone`.
pub async fn run(args: &Args) -> anyhow::Result<Exit> {
    let overrides = match &args.overrides {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read overrides file `{}`", path.display()))
                .map_err(|e| Coded::new(Exit::Usage, e))?;
            parse_overrides(&text, &path.display().to_string(), |name| {
                std::env::var(name).ok()
            })
            .map_err(|e| Coded::new(Exit::Usage, e))?
        }
        None => Vec::new(),
    };
    let hooks = load_hooks(args.hooks.as_deref())?;
    let session = Session::open(&args.config).await?;
    let r = session
        .config
        .replications
        .iter()
        .find(|r| r.from == args.from && r.to.contains(&args.to))
        .cloned()
        .ok_or_else(|| {
            usage(format!(
                "no replication copies `{}` to `{}`; add `{}` to the `to` of a replication from `{}`",
                args.from, args.to, args.to, args.from
            ))
        })?;
    let choice = if args.use_latest {
        BackupChoice::Latest
    } else {
        BackupChoice::Fresh
    };
    let mut spec = session.spec(DrillKind::Clone, &r, &args.from, &args.to, choice, &hooks)?;
    spec.overrides = overrides;
    let ran = session.execute(&spec, &r).await?;
    session.close().await?;
    Ok(ran.exit(Exit::DrillFailed))
}
