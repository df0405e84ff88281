//! `drsync catalog sync|list|prune`: the backup catalog.
//!
//! `sync` rebuilds the local catalog from the sidecar blobs in storage alone (no ARM call), so
//! drsync can work from the standby region after the primary region and its state are gone:
//! the restore markers say what each target already holds, and opening the context takes the
//! role records (failovers) from storage.
//! `prune` applies each replication's retention, deleting backup blobs and sidecars; the newest
//! valid backup of each replication is always kept.

use std::path::PathBuf;

use drsync_planner::catalog;
use drsync_planner::plan::human;

use crate::context::{Context, Needs};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync catalog`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CatalogCommand,
}

/// `catalog` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CatalogCommand {
    /// Rebuild the catalog from the blobs and sidecars in every configured container.
    Sync,
    /// List catalogued backups, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete backups older than their replication's retention (blob and sidecar).
    Prune {
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let Some(config) = &args.config else {
        return Err(Coded::new(Exit::Usage, anyhow::anyhow!("--config FILE is required")).into());
    };
    super::sync::runtime()?.block_on(async {
        let needs = match args.command {
            CatalogCommand::List { .. } => Needs::State,
            _ => Needs::Storage,
        };
        let ctx = Context::open(config, needs).await?;
        let now = ctx.clock.now();
        match &args.command {
            CatalogCommand::Sync => {
                let r = catalog::sync_from_storage(&ctx.checkpoints, &ctx.topology, &ctx.stores)
                    .await?;
                println!("catalog rebuilt from storage: {} backup(s)", r.found);
                for n in &r.without_sidecar {
                    println!("  {n}: no sidecar; catalogued with consistency `unknown`");
                }
                for n in &r.removed {
                    println!("  {n}: no longer in storage; removed from the catalog");
                }
                for n in &r.unknown_source {
                    println!("  {n}: backup of a service not in the configuration; ignored");
                }
                for c in &r.missing_containers {
                    println!("  container {c} does not exist");
                }
                let r = catalog::sync_restores_from_storage(
                    &ctx.checkpoints,
                    &ctx.topology,
                    &ctx.stores,
                )
                .await?;
                println!(
                    "restore records rebuilt from restore markers: {}",
                    r.restores.len()
                );
                for n in &r.restores {
                    println!("  {n}");
                }
                for n in &r.unreadable_markers {
                    println!("  {n}: unreadable restore marker or unknown target; ignored");
                }
            }
            CatalogCommand::List { json } => {
                let entries = catalog::entries(&ctx.checkpoints)?;
                if *json {
                    let docs: Vec<_> = ctx.checkpoints.backups()?;
                    println!("{}", serde_json::to_string_pretty(&docs)?);
                } else {
                    println!(
                        "{:<48}  {:<10}  {:>9}  {:>10}  {:<11}  STORAGE",
                        "BACKUP", "SKU", "AGE", "EXPIRES IN", "CONSISTENCY"
                    );
                    for e in entries {
                        let r = &e.record;
                        let ttl = r.time_to_expiry(now);
                        println!(
                            "{:<48}  {:<10}  {:>9}  {:>10}  {:<11}  {}/{}",
                            r.name.as_str(),
                            r.sku.tier.as_str(),
                            human(r.age(now).to_std().unwrap_or_default()),
                            if ttl > chrono::Duration::zero() {
                                human(ttl.to_std().unwrap_or_default())
                            } else {
                                "expired".into()
                            },
                            serde_json::to_value(r.consistency)?.as_str().unwrap_or("-"),
                            r.storage_account,
                            r.container
                        );
                    }
                }
            }
            CatalogCommand::Prune { dry_run } => {
                let pruned =
                    catalog::prune(&ctx.checkpoints, &ctx.topology, &ctx.stores, now, *dry_run)
                        .await?;
                let verb = if *dry_run { "would delete" } else { "deleted" };
                for p in &pruned {
                    println!("{verb} {}: {}", p.backup, p.reason);
                }
                println!("{} backup(s) {verb}", pruned.len());
            }
        }
        Ok(Exit::Success)
    })
}
