//! What a command needs, built from a configuration file: the checked topology, the state
//! directory's checkpoints, the credential, the ARM client, the blob stores, and in embedded
//! mode the in-process emulator.
//!
//! Errors are classified for exit codes here: a bad configuration or topology is a usage
//! error (2); a state directory held by another process is a lease conflict (5).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use drsync_arm_client::blob::{self, BlobStore};
use drsync_arm_client::credential::TokenEndpointVersion;
use drsync_arm_client::{
    ArmClient, ArmClientConfig, ArmLimits, AzureCliCredential, BackupAccess,
    ClientSecretCredential, ManagedIdentityCredential, PollerConfig, StaticTokenCredential,
    TokenCredential,
};
use drsync_core::config::{Config, CredentialConfig};
use drsync_core::{Clock, Secret, SecretRef, StorageAccess, SystemClock};
use drsync_planner::Topology;
use drsync_planner::azure::AzureOps;
use drsync_planner::azure::arm::{ArmOps, StorageBinding};
use drsync_planner::drill::RoleState;
use drsync_planner::drill::roles::StoredRoles;
use drsync_planner::executor::{CrashPoint, ExecOptions, Executor, Observer};
use drsync_planner::store::{Checkpoints, StoreError};
use drsync_planner::topology::StorageNode;
use tokio::sync::watch;

use crate::embedded::Embedded;
use crate::exit::{Coded, Exit};

/// Resolves a secret reference (`env:NAME`, `file:PATH` relative to `base`).
pub fn resolve_secret(reference: &SecretRef, base: &Path) -> anyhow::Result<Secret> {
    Ok(reference.resolve_with(
        |name| std::env::var(name).ok(),
        |path| {
            let path = if path.is_relative() {
                base.join(path)
            } else {
                path.to_path_buf()
            };
            std::fs::read_to_string(path)
        },
    )?)
}

/// What to set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Local state only (status, runs, catalog list).
    State,
    /// Local state and blob storage (catalog sync, prune).
    Storage,
    /// Everything, including ARM (sync, backup, restore).
    Azure,
}

/// Everything a command works with.
pub struct Context {
    /// The checked configuration.
    pub config: Config,
    /// The checked topology.
    pub topology: Arc<Topology>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// Checkpoints, catalog, leases.
    pub checkpoints: Checkpoints,
    /// drsync's own access to each storage entry.
    pub stores: Vec<(StorageNode, Arc<dyn BlobStore>)>,
    /// Azure (set with [`Needs::Azure`]).
    pub azure: Option<Arc<ArmOps>>,
    /// The embedded emulator (embedded mode with [`Needs::Azure`]).
    pub embedded: Option<Arc<Embedded>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Loads the configuration at `path` and sets up what `needs` asks for.
    pub async fn open(path: &Path, needs: Needs) -> anyhow::Result<Self> {
        Self::open_with(path, needs, |_| {}).await
    }

    /// Like [`Context::open`], with a last change to the embedded emulator's configuration.
    pub async fn open_with(
        path: &Path,
        needs: Needs,
        tweak: impl FnOnce(&mut drsync_emulator::EmulatorConfig),
    ) -> anyhow::Result<Self> {
        let configured = crate::cmd::load_config(path)?;
        let mut config = configured.clone();
        // Failovers recorded by `drsync failover` (state/roles.json, and a role record in each
        // replication's storage) make later runs start from the new primary; `drsync failback`
        // removes them. See docs/drills.md.
        let mut roles =
            RoleState::load(&configured.state.dir).map_err(|e| Coded::new(Exit::Usage, e))?;
        let mut notes = roles
            .apply(&mut config)
            .map_err(|e| Coded::new(Exit::Usage, e))?;
        let mut topology =
            Topology::from_config(&config).map_err(|e| Coded::new(Exit::Usage, e))?;
        for w in topology.warnings() {
            eprintln!("warning: {w}");
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state_dir = config.state.dir.clone();
        let checkpoints = Checkpoints::open(&state_dir).map_err(|e| match e {
            StoreError::Locked(_) => anyhow::Error::new(Coded::new(Exit::Leased, e)),
            other => anyhow::Error::new(other),
        })?;

        let embedded = config.is_embedded();
        let (credential, endpoint, emulator): (
            Option<Arc<dyn TokenCredential>>,
            Option<String>,
            Option<Embedded>,
        ) = if embedded {
            if needs == Needs::Azure {
                let emu = Embedded::start_with(&config, &state_dir, tweak).await?;
                let token = emu.token();
                let cred: Arc<dyn TokenCredential> = Arc::new(StaticTokenCredential::new(
                    token.token,
                    Some(token.expires_on),
                ));
                (Some(cred), Some(emu.base_url()), Some(emu))
            } else {
                (None, None, None)
            }
        } else {
            // Local-state commands need no credential (they work with secrets unset); storage
            // commands use it only for token-authenticated accounts, and report that then.
            let cred = match needs {
                Needs::State => None,
                Needs::Storage => credential(&config, clock.clone()).ok(),
                Needs::Azure => Some(credential(&config, clock.clone())?),
            };
            (cred, config.azure.endpoint.url().map(str::to_owned), None)
        };

        let mut stores = Vec::new();
        let mut bindings = BTreeMap::new();
        for s in topology.storage_entries() {
            let mut target = s.target.clone();
            if embedded {
                target.endpoint = format!(
                    "dir:{}",
                    crate::embedded::storage_dir(
                        &config,
                        &state_dir,
                        &target.account,
                        &target.endpoint
                    )
                    .display()
                );
            }
            if needs == Needs::State {
                continue;
            }
            let key = match &target.access {
                StorageAccess::AccountKey(r) if embedded => {
                    Some(crate::embedded::account_key(r, config.base_dir()))
                }
                StorageAccess::AccountKey(r) => {
                    Some(resolve_secret(r, config.base_dir()).with_context(|| {
                        format!("storage `{}`: cannot read the account key", s.name)
                    })?)
                }
                _ => None,
            };
            let store = blob::open(&target, key.clone(), credential.clone())
                .with_context(|| format!("storage `{}`", s.name))?;
            let access =
                BackupAccess::from_storage_access(&target.access, key).map_err(|e| e.to_string());
            bindings.insert(
                (target.account.clone(), target.container.clone()),
                StorageBinding {
                    store: store.clone(),
                    access,
                },
            );
            stores.push((s.clone(), store));
        }

        if needs != Needs::State {
            // The role records in storage survive the loss of this state directory: take the
            // newer side (storage's when roles.json is missing), publish a newer local one.
            // A swap does not move a replication's storage, so `stores` stays as it is.
            let local_exists = RoleState::exists(&configured.state.dir);
            let stored = load_stored_roles(&topology, &stores).await;
            let r = roles
                .reconcile(local_exists, &stored)
                .map_err(|e| Coded::new(Exit::Usage, e))?;
            for note in &r.notes {
                eprintln!("note: {note}");
            }
            if r.changed {
                roles
                    .save(&configured.state.dir)
                    .map_err(|e| Coded::new(Exit::Failed, e))?;
                config = configured.clone();
                notes = roles
                    .apply(&mut config)
                    .map_err(|e| Coded::new(Exit::Usage, e))?;
                topology =
                    Topology::from_config(&config).map_err(|e| Coded::new(Exit::Usage, e))?;
            }
            for doc in &r.publish {
                if let Err(e) = publish_roles(&topology, &stores, doc).await {
                    eprintln!("warning: {e}");
                }
            }
        }
        for note in notes {
            eprintln!("note: {note}");
        }

        let azure = match (needs, credential, endpoint) {
            (Needs::Azure, Some(cred), Some(endpoint)) => {
                let url = url::Url::parse(&endpoint)
                    .with_context(|| format!("ARM endpoint `{endpoint}`"))?;
                let mut arm = ArmClientConfig::new(url);
                arm.api_version = config.azure.api_version.clone();
                arm.limits = ArmLimits {
                    reads_per_second: config.limits.arm_reads_per_second,
                    read_burst: config.limits.arm_read_burst,
                    writes_per_second: config.limits.arm_writes_per_second,
                    write_burst: config.limits.arm_write_burst,
                    ..ArmLimits::default()
                };
                if embedded {
                    let scale = config.embedded.map_or(1.0, |e| e.time_scale);
                    arm.poller = PollerConfig {
                        default_interval: Duration::from_secs_f64((30.0 * scale).clamp(0.05, 30.0)),
                        ..PollerConfig::default()
                    };
                }
                let client = ArmClient::new(arm, cred, clock.clone())?;
                Some(Arc::new(
                    ArmOps::new(client, clock.clone(), bindings).rebase_polling(embedded),
                ))
            }
            _ => None,
        };
        Ok(Self {
            config,
            topology: Arc::new(topology),
            clock,
            state_dir,
            config_path: path.to_path_buf(),
            checkpoints,
            stores,
            azure,
            embedded: emulator.map(Arc::new),
        })
    }

    /// The time scale of embedded mode (1 otherwise).
    pub fn time_scale(&self) -> f64 {
        if self.config.is_embedded() {
            self.config.embedded.map_or(1.0, |e| e.time_scale)
        } else {
            1.0
        }
    }

    /// Executor options from the configuration (scaled in embedded mode).
    pub fn exec_options(
        &self,
        continue_on_error: bool,
        busy_timeout: Option<Duration>,
    ) -> ExecOptions {
        let scale = self.time_scale();
        let scaled = |secs: f64, min: f64| Duration::from_secs_f64((secs * scale).max(min));
        let busy_timeout = busy_timeout.unwrap_or_else(|| scaled(30.0 * 60.0, 10.0));
        ExecOptions {
            concurrency: self.config.limits.concurrency.max(1),
            continue_on_error,
            // Look at a busy service every 15 s, and at least ten times within the timeout.
            busy_poll: scaled(15.0, 0.05).min(busy_timeout / 10),
            busy_timeout,
            crash: CrashPoint::from_env(),
            ..ExecOptions::default()
        }
    }

    /// An executor over this context's Azure.
    pub fn executor(
        &self,
        options: ExecOptions,
        observer: Arc<dyn Observer>,
        cancel: watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Executor>> {
        let azure: Arc<dyn AzureOps> = self
            .azure
            .clone()
            .context("Azure is not set up for this command")?;
        Ok(Executor::new(
            azure,
            self.checkpoints.clone(),
            self.clock.clone(),
            self.topology.clone(),
            options,
            observer,
            cancel,
        ))
    }

    /// Saves the embedded emulator's state (no-op otherwise).
    pub fn save_embedded(&self) {
        if let Some(e) = &self.embedded {
            if let Err(err) = e.save() {
                tracing::warn!("cannot save the embedded emulator state: {err:#}");
            }
        }
    }

    /// Ends the context: saves and stops the embedded emulator.
    pub async fn close(self) -> anyhow::Result<()> {
        if let Some(e) = self.embedded {
            match Arc::try_unwrap(e) {
                Ok(e) => e.stop().await?,
                Err(e) => e.save()?,
            }
        }
        Ok(())
    }
}

/// The blob store and container of a replication's storage.
fn replication_store<'a>(
    topology: &Topology,
    stores: &'a [(StorageNode, Arc<dyn BlobStore>)],
    replication: &str,
) -> Option<(&'a Arc<dyn BlobStore>, String)> {
    let r = topology.replication(replication)?;
    let target = &topology.storage_of(r).target;
    stores
        .iter()
        .find(|(n, _)| n.target.account == target.account && n.target.container == target.container)
        .map(|(_, store)| (store, target.container.clone()))
}

/// The role record of every replication that has one in its storage. A record that cannot be
/// read is reported and skipped (the local roles then stand).
async fn load_stored_roles(
    topology: &Topology,
    stores: &[(StorageNode, Arc<dyn BlobStore>)],
) -> Vec<StoredRoles> {
    let mut out = Vec::new();
    for r in topology.replications() {
        let Some((store, container)) = replication_store(topology, stores, &r.name) else {
            continue;
        };
        match StoredRoles::load(store.as_ref(), &container, &r.name).await {
            Ok(Some(doc)) => out.push(doc),
            Ok(None) => {}
            Err(e) => eprintln!(
                "warning: {e}; using the roles in the state directory for replication `{}`",
                r.name
            ),
        }
    }
    out
}

/// Writes a replication's role record into its storage.
async fn publish_roles(
    topology: &Topology,
    stores: &[(StorageNode, Arc<dyn BlobStore>)],
    doc: &StoredRoles,
) -> anyhow::Result<()> {
    let (store, container) = replication_store(topology, stores, &doc.replication)
        .with_context(|| format!("replication `{}` has no storage", doc.replication))?;
    doc.save(store.as_ref(), &container).await?;
    Ok(())
}

impl Context {
    /// Records the roles of `replication` as they stand in the state directory into its
    /// storage (after a failover or failback commits), so they survive the loss of the state.
    /// Only the edge's storage is written: nothing in the old primary's region is called.
    pub async fn publish_roles(&self, replication: &str) -> anyhow::Result<()> {
        let roles = RoleState::load(&self.state_dir)?;
        let configured = crate::cmd::load_config(&self.config_path)?;
        let from = configured
            .replications
            .iter()
            .find(|r| r.name == replication)
            .map(|r| r.from.clone())
            .with_context(|| format!("replication `{replication}` is not configured"))?;
        let doc = roles.stored(replication, &from).with_context(|| {
            format!("no role change of replication `{replication}` is recorded")
        })?;
        publish_roles(&self.topology, &self.stores, &doc)
            .await
            .with_context(|| {
                format!(
                    "the roles of replication `{replication}` are recorded in the state directory but not in its storage; run the command again to record them there"
                )
            })
    }
}

/// A cancel channel that flips on Ctrl-C.
pub fn ctrl_c_channel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "interrupted: finishing the current checkpoints; run the same command again to resume"
            );
            let _ = tx.send(true);
            // A second Ctrl-C leaves at once; the checkpoints already written are enough to resume.
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Interrupted as i32);
            }
        }
    });
    rx
}

fn credential(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn TokenCredential>> {
    let azure = &config.azure;
    let Some(cred) = &azure.credential else {
        anyhow::bail!(Coded::new(
            Exit::Usage,
            anyhow::anyhow!("[azure.credential] is required unless endpoint = \"embedded\"")
        ));
    };
    let base = config.base_dir();
    Ok(match cred {
        CredentialConfig::ClientSecret {
            client_id,
            client_secret,
        } => {
            let secret = resolve_secret(client_secret, base).context("client secret")?;
            let authority = url::Url::parse(&azure.authority_host)
                .with_context(|| format!("authority_host `{}`", azure.authority_host))?;
            let tenant = azure.tenant.clone().context("[azure] tenant is required")?;
            Arc::new(ClientSecretCredential::new(
                &authority,
                &tenant,
                client_id.clone(),
                secret,
                TokenEndpointVersion::V2,
                clock,
            )?)
        }
        CredentialConfig::ManagedIdentity { client_id } => Arc::new(
            ManagedIdentityCredential::new(None, client_id.clone(), clock)?,
        ),
        CredentialConfig::AzureCli => Arc::new(AzureCliCredential::new(azure.tenant.clone())),
        CredentialConfig::StaticToken { token } => {
            let token = resolve_secret(token, base).context("static token")?;
            Arc::new(StaticTokenCredential::new(token, None))
        }
    })
}
