//! `drsync failover --to STANDBY` and `drsync failback`.
//!
//! Failover never calls the old primary: the newest valid backup comes from the catalog in the
//! edge's storage (rebuilt from its sidecar blobs), and is restored only if the standby does not
//! already hold it. The standby is then verified as far as it can be without the primary
//! (hostnames and identity kept), the promotion hooks run, and the role swap is recorded in
//! `{state}/roles.json` so later runs treat the standby as the primary.
//!
//! Failback takes a fresh backup of the current primary, restores it into the original primary,
//! verifies it fully, runs the promotion hooks and removes the role swap.
//!
//! Both are safe to run again: a restore left unfinished by a killed run is resumed (see
//! `ArmDrillOps::execute`), and a failover whose swap is already recorded does nothing. Their
//! exit code tells whether the roles changed ([`role_exit`]): `1` never follows a swap.

use std::path::PathBuf;

use drsync_core::config::Role;
use drsync_planner::drill::RoleState;
use drsync_planner::drill::report::DrillKind;
use drsync_planner::drill::runner::BackupChoice;

use super::drill::{Ran, Session, confirm, load_hooks, usage};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync failover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The standby to promote.
    #[arg(long, value_name = "STANDBY")]
    pub to: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Hooks file (promotion hooks: `phase = "promote"`).
    #[arg(long, value_name = "FILE")]
    pub hooks: Option<PathBuf>,
    /// When no consistent backup is left, restore the newest `suspect` one (taken while the
    /// configuration changed: it may mix old and new content). Last resort.
    #[arg(long)]
    pub allow_suspect: bool,
}

/// Arguments of `drsync failback`.
#[derive(Debug, clap::Args)]
pub struct FailbackArgs {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The replication to fail back (needed only when several have failed over).
    #[arg(long, value_name = "NAME")]
    pub edge: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Hooks file.
    #[arg(long, value_name = "FILE")]
    pub hooks: Option<PathBuf>,
}

/// Runs `drsync failover` on its own runtime.
pub fn run_blocking(args: &Args) -> anyhow::Result<Exit> {
    super::sync::runtime()?.block_on(run(args))
}

/// Runs `drsync failback` on its own runtime.
pub fn failback_blocking(args: &FailbackArgs) -> anyhow::Result<Exit> {
    super::sync::runtime()?.block_on(failback(args))
}

/// Runs `drsync failover`.
pub async fn run(args: &Args) -> anyhow::Result<Exit> {
    let hooks = load_hooks(args.hooks.as_deref())?;
    let mut session = Session::open(&args.config).await?;
    session.allow_suspect = args.allow_suspect;
    // Running the same failover again (a retry after a crash or a lost terminal) is safe: once
    // the swap is recorded, nothing more is restored into what is now the primary.
    let roles = RoleState::load(&session.state_dir).map_err(|e| Coded::new(Exit::Usage, e))?;
    if let Some(swap) = roles.swaps.iter().find(|s| s.primary == args.to) {
        println!(
            "`{}` is already the primary of replication `{}` since the failover of {} (report {}); nothing to do. Its promote hooks are not run again: if they failed then, see `drsync drills show {}`. `drsync failback` reverses the failover.",
            swap.primary,
            swap.replication,
            swap.since.to_rfc3339(),
            swap.report,
            swap.report
        );
        // A retry also records the swap in storage if the first run could not.
        let replication = swap.replication.clone();
        publish(&session, &replication).await;
        session.close().await?;
        return Ok(Exit::Success);
    }
    let r = session
        .config
        .replications
        .iter()
        .find(|r| r.to.contains(&args.to))
        .cloned()
        .ok_or_else(|| {
            usage(format!(
                "`{}` is not the target of any replication",
                args.to
            ))
        })?;
    let role = session.config.service(&args.to).map(|s| s.role);
    if role != Some(Role::Standby) {
        return Err(usage(format!(
            "`{}` is a {} service, not a standby: a failover goes to a DR standby",
            args.to,
            role.map_or("unknown", |r| r.as_str())
        )));
    }
    confirm(
        args.yes,
        &format!(
            "Fail over replication `{}`: `{}` becomes the primary in place of `{}` (which will not be contacted). Traffic switching is up to your promotion hooks.",
            r.name, args.to, r.from
        ),
        &args.to,
    )?;
    let mut spec = session.spec(
        DrillKind::Failover,
        &r,
        &r.from,
        &args.to,
        BackupChoice::LatestIfBehind,
        &hooks,
    )?;
    spec.source_reachable = false;
    spec.promote = true;
    let ran = session.execute(&spec, &r).await?;
    let roles = RoleState::load(&session.state_dir)?;
    let swapped = roles.swap(&r.name).is_some_and(|s| s.primary == args.to);
    if swapped {
        publish(&session, &r.name).await;
    }
    session.close().await?;
    Ok(role_exit(&ran, swapped, &args.to, &r.from))
}

/// Records the roles of `replication` in its storage; a failure is reported, not fatal: the
/// state directory holds the change, and the next command that reaches the storage records it
/// there (the local change is the newer one).
async fn publish(session: &Session, replication: &str) {
    match session.context().publish_roles(replication).await {
        Ok(()) => println!("roles of replication `{replication}` recorded in its storage"),
        Err(e) => eprintln!("warning: {e:#}"),
    }
}

/// The exit code of a failover or failback, and a line saying where the roles stand: `0` the
/// roles changed and the run passed; `3` the roles changed (the swap is recorded) but the run
/// did not pass entirely (an after-promote hook failed, an objective was missed: read the
/// report); `1` the roles did not change; `4`/`5` interrupted or leased (roles unchanged).
pub fn role_exit(ran: &Ran, changed: bool, new_primary: &str, other: &str) -> Exit {
    if changed {
        println!("roles: `{new_primary}` is now the primary; `{other}` is a standby");
    } else {
        println!("roles unchanged: `{other}` is still the primary");
    }
    match (ran.condition, changed, ran.report.passed()) {
        (Some(c), false, _) => c,
        (_, true, true) => Exit::Success,
        (_, true, false) => Exit::DrillFailed,
        (None, false, _) => Exit::Failed,
    }
}

/// Runs `drsync failback`.
pub async fn failback(args: &FailbackArgs) -> anyhow::Result<Exit> {
    let hooks = load_hooks(args.hooks.as_deref())?;
    let session = Session::open(&args.config).await?;
    let roles = RoleState::load(&session.state_dir)?;
    let swap = match &args.edge {
        Some(edge) => roles.swap(edge).ok_or_else(|| {
            usage(format!(
                "replication `{edge}` has not failed over: nothing to fail back"
            ))
        })?,
        None => match roles.swaps.as_slice() {
            [one] => one,
            [] => {
                return Err(usage(
                    "no failover is recorded: nothing to fail back".into(),
                ));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|s| s.replication.as_str()).collect();
                return Err(usage(format!(
                    "several replications have failed over ({}); choose one with --edge",
                    names.join(", ")
                )));
            }
        },
    }
    .clone();
    let r = session.replication(&swap.replication)?.clone();
    confirm(
        args.yes,
        &format!(
            "Fail back replication `{}`: back up `{}` and restore it into `{}`, which becomes the primary again.",
            r.name, swap.primary, swap.original_primary
        ),
        &swap.original_primary,
    )?;
    let mut spec = session.spec(
        DrillKind::Failback,
        &r,
        &swap.primary,
        &swap.original_primary,
        BackupChoice::Fresh,
        &hooks,
    )?;
    spec.promote = true;
    let ran = session.execute(&spec, &r).await?;
    let mut roles = RoleState::load(&session.state_dir)?;
    let reverted = roles.swap(&r.name).is_none();
    if reverted {
        // The failback's instant, so the role record in storage says which change is newer.
        roles.mark_changed(&r.name, session.context().clock.now());
        roles.save(&session.state_dir)?;
        publish(&session, &r.name).await;
    }
    session.close().await?;
    Ok(role_exit(
        &ran,
        reverted,
        &swap.original_primary,
        &swap.primary,
    ))
}
