//! `drsync drill`: restore into a standby (or a dedicated drill service), verify, run hooks,
//! measure recovery time and point, and keep the reports. Also the machinery `clone`,
//! `failover` and `failback` share: [`ArmDrillOps`] (the planner's `DrillOps` over the ARM
//! client, the planner's executor and catalog) and [`Session`] (configuration with recorded
//! role swaps applied, clients, state).
//!
//! Backups and restores go through the planner's executor, so they are checkpointed, leased and
//! catalogued exactly like `drsync sync`'s. Snapshots (items, hostnames, identity) are read
//! with the ARM client. The procedure itself (phases, hooks, verification, objectives) is
//! `drsync_planner::drill::run`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use drsync_arm_client::ArmClient;
use drsync_core::config::{Config, ReplicationConfig, Role};
use drsync_core::{BackupName, BackupRecord, Clock, ServiceRef, Timestamp};
use drsync_planner::Topology;
use drsync_planner::azure::AzureOps as _;
use drsync_planner::azure::arm::ArmOps;
use drsync_planner::catalog;
use drsync_planner::drill::kept;
use drsync_planner::drill::report::DrillKind;
use drsync_planner::drill::runner::{
    BackupChoice, DrillOps, NamedValueOverride, OpError, Participant, RunSpec,
};
use drsync_planner::drill::snapshot::{
    ConfigSnapshot, IdentitySnapshot, ItemKind, SnapshotItem, content_hash,
};
use drsync_planner::drill::verify::{Overrides, VerifyScope};
use drsync_planner::drill::{
    DrillReport, HookCommand, HookSpec, HooksFile, ReportStore, RoleState,
};
use drsync_planner::executor::{Executor, NoObserver, Outcome};
use drsync_planner::plan::{Action, BackupSource, Plan, PlanKind, Step};
use drsync_planner::store::Checkpoints;
use serde_json::json;

use crate::context::{self, Context, Needs};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync drill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// The replication edge to drill (its `name`).
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "all",
        required_unless_present = "all"
    )]
    pub edge: Option<String>,
    /// Drill every replication edge.
    #[arg(long)]
    pub all: bool,
    /// Restore the newest valid backup instead of taking a fresh one.
    #[arg(long)]
    pub use_latest: bool,
    /// Restore into this service instead of every standby of the edge: one of the edge's
    /// targets by name, or a dedicated drill service outside the configuration by its ARM
    /// resource id (`/subscriptions/.../service/NAME`; needs --edge). `drsync drills cleanup`
    /// deletes such a service afterwards.
    #[arg(long, value_name = "SERVICE")]
    pub target: Option<String>,
    /// Hooks file (`[[hooks]]` tables; see docs/drills.md).
    #[arg(long, value_name = "FILE")]
    pub hooks: Option<PathBuf>,
    /// Also write one JUnit XML file covering every drill of this command.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// Runs `drsync drill` on its own runtime.
pub fn run_blocking(args: &Args) -> anyhow::Result<Exit> {
    super::sync::runtime()?.block_on(run(args))
}

/// Runs `drsync drill`.
pub async fn run(args: &Args) -> anyhow::Result<Exit> {
    let mut session = Session::open(&args.config).await?;
    let hooks = load_hooks(args.hooks.as_deref())?;
    // A dedicated drill service given by resource id: added to the edge for this run only.
    let target = match (&args.target, &args.edge) {
        (Some(t), Some(edge)) if is_resource_id(t) => {
            Some(session.add_drill_service(edge, t).await?)
        }
        (Some(t), None) if is_resource_id(t) => {
            return Err(usage(format!(
                "a dedicated drill service (`{t}`) needs --edge: which replication's backup to restore into it"
            )));
        }
        (t, _) => t.clone(),
    };
    let replications: Vec<ReplicationConfig> = match &args.edge {
        Some(name) => vec![session.replication(name)?.clone()],
        None => session.config.replications.clone(),
    };
    let mut pairs = Vec::new();
    for r in &replications {
        let targets: Vec<String> = match &target {
            Some(t) if r.to.contains(t) => vec![t.clone()],
            Some(t) if args.edge.is_some() => {
                return Err(usage(format!(
                    "`{t}` is not a target of replication `{}` (its targets: {}); a dedicated drill service that is not in the configuration is given by its resource id: --target /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.ApiManagement/service/NAME",
                    r.name,
                    r.to.join(", ")
                )));
            }
            Some(_) => continue,
            None => {
                r.to.iter()
                    .filter(|t| {
                        session
                            .config
                            .service(t)
                            .is_some_and(|s| s.role == Role::Standby)
                    })
                    .cloned()
                    .collect()
            }
        };
        if targets.is_empty() && args.edge.is_some() {
            return Err(usage(format!(
                "replication `{}` has no standby target; name one with --target",
                r.name
            )));
        }
        for t in targets {
            pairs.push((r.clone(), t));
        }
    }
    if pairs.is_empty() {
        return Err(usage(match &target {
            Some(t) => format!("nothing to drill: no replication has `{t}` as a target"),
            None => "nothing to drill: no replication has a standby target".into(),
        }));
    }
    let choice = if args.use_latest {
        BackupChoice::Latest
    } else {
        BackupChoice::Fresh
    };
    let mut reports = Vec::new();
    let mut condition = None;
    for (r, target) in pairs {
        let spec = session.spec(DrillKind::Drill, &r, &r.from, &target, choice, &hooks)?;
        let ran = session.execute(&spec, &r).await?;
        reports.push(ran.report);
        if ran.condition.is_some() {
            // Interrupted or blocked by a lease: do not start the next drill.
            condition = ran.condition;
            break;
        }
    }
    session.close().await?;
    if let Some(path) = &args.junit {
        let refs: Vec<&DrillReport> = reports.iter().collect();
        std::fs::write(path, drsync_planner::drill::junit_xml(&refs))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(
        condition.unwrap_or(if reports.iter().all(DrillReport::passed) {
            Exit::Success
        } else {
            Exit::DrillFailed
        }),
    )
}

/// One run's report, and why it stopped if not on its own.
pub struct Ran {
    /// The saved report.
    pub report: DrillReport,
    /// `Interrupted` (Ctrl-C; checkpoints saved) or `Leased` (another drsync process holds a
    /// lease on a service), which take precedence over the report's verdict.
    pub condition: Option<Exit>,
}

impl Ran {
    /// The exit code: the condition, else success, else `failed`.
    pub fn exit(&self, failed: Exit) -> Exit {
        self.condition.unwrap_or(if self.report.passed() {
            Exit::Success
        } else {
            failed
        })
    }
}

/// Whether `--target` names a service by ARM resource id (a dedicated drill service).
pub fn is_resource_id(target: &str) -> bool {
    target.starts_with('/') && target.to_ascii_lowercase().starts_with("/subscriptions/")
}

/// A usage error (exit 2).
pub fn usage(message: String) -> anyhow::Error {
    Coded::new(Exit::Usage, anyhow::anyhow!(message)).into()
}

/// Reads a hooks file, if given.
pub fn load_hooks(path: Option<&Path>) -> anyhow::Result<Vec<HookSpec>> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read hooks file `{}`", path.display()))
        .map_err(|e| Coded::new(Exit::Usage, e))?;
    let file = HooksFile::parse(&text, &path.display().to_string())
        .map_err(|e| Coded::new(Exit::Usage, e))?;
    Ok(file.hooks)
}

/// The `[[replication.hooks]]` of `r`, as the planner runs them (limited to `r`'s edge).
pub fn config_hooks(r: &ReplicationConfig) -> Vec<HookSpec> {
    use drsync_core::config::{HookCommandConfig, HookKind, HookPhase, HookWhen as When};
    use drsync_planner::drill::report::{HookWhen, Phase};
    r.hooks
        .iter()
        .map(|h| HookSpec {
            name: h.name.clone(),
            phase: match h.phase {
                HookPhase::Preflight => Phase::Preflight,
                HookPhase::Backup => Phase::Backup,
                HookPhase::Restore => Phase::Restore,
                HookPhase::Overrides => Phase::Overrides,
                HookPhase::Verify => Phase::Verify,
                HookPhase::Promote => Phase::Promote,
            },
            when: match h.when {
                When::Before => HookWhen::Before,
                When::After => HookWhen::After,
            },
            command: match &h.command {
                HookCommandConfig::Shell(line) => HookCommand::Shell(line.clone()),
                HookCommandConfig::Argv(argv) => HookCommand::Argv(argv.clone()),
            },
            // Milliseconds: exact, and what the planner's humantime parsing reads back.
            timeout: Some(format!("{}ms", h.timeout.as_millis())),
            env: h.env.clone(),
            edges: vec![r.name.clone()],
            kinds: h
                .kinds
                .iter()
                .map(|k| match k {
                    HookKind::Drill => DrillKind::Drill,
                    HookKind::Clone => DrillKind::Clone,
                    HookKind::Failover => DrillKind::Failover,
                    HookKind::Failback => DrillKind::Failback,
                })
                .collect(),
        })
        .collect()
}

/// Asks for confirmation on a terminal; without one, `--yes` is required.
pub fn confirm(yes: bool, what: &str, answer: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(format!(
            "{what}: refusing to proceed without confirmation; standard input is not a terminal, pass --yes"
        )));
    }
    eprintln!("{what}");
    eprint!("Type `{answer}` to proceed: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the confirmation")?;
    if line.trim() == answer {
        Ok(())
    } else {
        Err(Coded::new(
            Exit::Failed,
            anyhow::anyhow!("not confirmed; nothing was done"),
        )
        .into())
    }
}

/// The configuration (with recorded role swaps applied), clients and state of one command.
pub struct Session {
    /// The configuration as it stands after recorded failovers.
    pub config: Config,
    /// The state directory.
    pub state_dir: PathBuf,
    ctx: Context,
    cancel: tokio::sync::watch::Receiver<bool>,
    /// Restore the newest restorable backup even if it is `suspect`, when no consistent one
    /// is left (`drsync failover --allow-suspect`).
    pub allow_suspect: bool,
}

impl Session {
    /// Loads the configuration, sets up Azure and the state, and applies the role swaps that
    /// earlier failovers recorded.
    pub async fn open(config_path: &Path) -> anyhow::Result<Self> {
        let mut ctx = Context::open(config_path, Needs::Azure).await?;
        let mut config = ctx.config.clone();
        let roles = RoleState::load(&ctx.state_dir).map_err(|e| Coded::new(Exit::Usage, e))?;
        for note in roles
            .apply(&mut config)
            .map_err(|e| Coded::new(Exit::Usage, e))?
        {
            eprintln!("note: {note}");
        }
        ctx.topology =
            Arc::new(Topology::from_config(&config).map_err(|e| Coded::new(Exit::Usage, e))?);
        ctx.config = config.clone();
        Ok(Self {
            config,
            state_dir: ctx.state_dir.clone(),
            ctx,
            cancel: context::ctrl_c_channel(),
            allow_suspect: false,
        })
    }

    /// Adds a dedicated drill service, given by its ARM resource id, as a staging target of
    /// replication `edge` for this command only (the configuration file is not changed), and
    /// returns its name. Its region and SKU are read from ARM; it must exist. A service that is
    /// in the configuration is returned as is (it must then be a target of the edge already).
    pub async fn add_drill_service(
        &mut self,
        edge: &str,
        resource_id: &str,
    ) -> anyhow::Result<String> {
        let sref = ServiceRef::parse_resource_id(resource_id).map_err(|e| {
            usage(format!(
                "--target `{resource_id}` is not a service resource id: {e}"
            ))
        })?;
        if let Some(s) = self
            .config
            .services
            .iter()
            .find(|s| s.service.name.eq_ignore_ascii_case(&sref.name))
        {
            if s.service
                .resource_id()
                .eq_ignore_ascii_case(&sref.resource_id())
            {
                return Ok(s.service.name.clone());
            }
            return Err(usage(format!(
                "--target `{resource_id}`: the configuration already has a service named `{}` ({}); service names must be unique",
                s.service.name,
                s.service.resource_id()
            )));
        }
        self.replication(edge)?;
        let arm = self
            .ctx
            .azure
            .clone()
            .context("Azure is not set up for this command")?;
        let svc = arm.client().get_service(&sref).await.map_err(|e| {
            Coded::new(
                Exit::Failed,
                anyhow::anyhow!("cannot read the drill service `{}`: {e}", sref.name),
            )
        })?;
        let region = drsync_core::Region::parse(&svc.location).map_err(|e| {
            Coded::new(
                Exit::Failed,
                anyhow::anyhow!("drill service `{}`: {e}", sref.name),
            )
        })?;
        let sku = svc.sku().map_err(|e| {
            Coded::new(
                Exit::Failed,
                anyhow::anyhow!("drill service `{}`: {e}", sref.name),
            )
        })?;
        let name = sref.name.clone();
        self.config
            .services
            .push(drsync_core::config::ServiceConfig {
                service: sref,
                region,
                sku,
                role: Role::Staging,
            });
        for r in &mut self.config.replications {
            if r.name == edge {
                r.to.push(name.clone());
            }
        }
        self.ctx.topology =
            Arc::new(Topology::from_config(&self.config).map_err(|e| Coded::new(Exit::Usage, e))?);
        self.ctx.config = self.config.clone();
        eprintln!(
            "note: drilling into `{name}` ({}), a dedicated drill service outside the configuration; `drsync drills cleanup --target {name}` deletes it afterwards",
            svc.location
        );
        Ok(name)
    }

    /// The ARM client.
    pub fn arm(&self) -> anyhow::Result<ArmClient> {
        Ok(self
            .ctx
            .azure
            .as_ref()
            .context("Azure is not set up for this command")?
            .client()
            .clone())
    }

    /// The command's context (clients, stores, state).
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Saves and stops what the session started (the embedded emulator).
    pub async fn close(self) -> anyhow::Result<()> {
        self.ctx.close().await
    }

    /// The replication with this name.
    pub fn replication(&self, name: &str) -> anyhow::Result<&ReplicationConfig> {
        self.config.replication(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .config
                .replications
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            usage(format!(
                "no replication `{name}` in the configuration (known: {})",
                names.join(", ")
            ))
        })
    }

    /// The run description for `source` -> `target` on replication `r`.
    pub fn spec(
        &self,
        kind: DrillKind,
        r: &ReplicationConfig,
        source: &str,
        target: &str,
        backup: BackupChoice,
        hooks: &[HookSpec],
    ) -> anyhow::Result<RunSpec> {
        let participant = |name: &str| -> anyhow::Result<Participant> {
            let s = self
                .config
                .service(name)
                .ok_or_else(|| usage(format!("service `{name}` is not in the configuration")))?;
            Ok(Participant {
                service: s.service.clone(),
                region: Some(s.region.name().to_string()),
            })
        };
        Ok(RunSpec {
            kind,
            edge: r.name.clone(),
            source: participant(source)?,
            target: participant(target)?,
            backup,
            source_reachable: true,
            rto: r.rto,
            rpo: Some(r.rpo),
            scope: VerifyScope {
                apis: r.verify.apis,
                products: r.verify.products,
                named_values: r.verify.named_values,
            },
            overrides: Vec::new(),
            promote: false,
            // The replication's own hooks first, then those of a `--hooks` file.
            hooks: config_hooks(r)
                .into_iter()
                .chain(hooks.iter().cloned())
                .collect(),
            hook_dir: Some(self.config.base_dir().to_path_buf()),
            run_id: uuid::Uuid::new_v4(),
        })
    }

    /// Runs `spec`, saves and prints its report.
    pub async fn execute(&self, spec: &RunSpec, r: &ReplicationConfig) -> anyhow::Result<Ran> {
        let arm_ops = self
            .ctx
            .azure
            .clone()
            .context("Azure is not set up for this command")?;
        let clock = self.ctx.clock.clone();
        let started_at = clock.now();
        let ops = ArmDrillOps {
            arm: arm_ops.client().clone(),
            executor: self.ctx.executor(
                self.ctx.exec_options(false, None),
                Arc::new(NoObserver),
                self.cancel.clone(),
            )?,
            azure: arm_ops,
            checkpoints: self.ctx.checkpoints.clone(),
            clock: clock.clone(),
            topology: self.ctx.topology.clone(),
            replication: r.name.clone(),
            state_dir: self.state_dir.clone(),
            report_id: spec.report_id(started_at),
            condition: std::sync::Mutex::new(None),
            allow_suspect: self.allow_suspect,
        };
        eprintln!(
            "{} {} -> {} (edge {})",
            spec.kind, spec.source.service.name, spec.target.service.name, spec.edge
        );
        let report = drsync_planner::drill::run(spec, &ops, clock.as_ref()).await;
        self.ctx.save_embedded();
        let paths = ReportStore::new(&self.state_dir).save(&report)?;
        println!("{}", summary_line(&report));
        for f in &report.failures {
            println!("  - {f}");
        }
        println!("  report: {}", paths.markdown.display());
        println!("  json:   {}", paths.json.display());
        println!("  junit:  {}", paths.junit.display());
        let condition = *ops.condition.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Ran { report, condition })
    }
}

fn summary_line(r: &DrillReport) -> String {
    let secs = |s: Option<u64>| s.map_or("-".to_string(), |s| format!("{s}s"));
    format!(
        "{} {}: {} (recovery time {}, recovery point {})",
        r.kind,
        r.id,
        if r.passed() { "PASSED" } else { "FAILED" },
        secs(r.objectives.recovery_time.actual_seconds),
        secs(r.objectives.recovery_point.actual_seconds)
    )
}

/// The planner's `DrillOps` over the ARM client, executor, catalog and state, for one edge.
pub struct ArmDrillOps {
    arm: ArmClient,
    executor: Arc<Executor>,
    azure: Arc<ArmOps>,
    checkpoints: Checkpoints,
    clock: Arc<dyn Clock>,
    topology: Arc<Topology>,
    replication: String,
    state_dir: PathBuf,
    report_id: String,
    condition: std::sync::Mutex<Option<Exit>>,
    allow_suspect: bool,
}

fn op(context: &str) -> impl Fn(drsync_arm_client::Error) -> OpError + '_ {
    move |e| OpError::new(format!("{context}: {e}"))
}

impl ArmDrillOps {
    /// Runs a plan through the planner's executor (checkpoints, leases, catalog). Ctrl-C
    /// stops it with its checkpoints saved; `drsync sync` resumes them.
    async fn execute(&self, plan: Plan) -> Result<(), OpError> {
        let executor = &self.executor;
        let run = match self.unfinished_same(&plan)? {
            Some(run) => {
                // A killed or interrupted run of this very restore (same backup, same
                // target): resume it rather than wait for its lease to expire.
                eprintln!(
                    "note: resuming unfinished run {} (started {}) of the same restore",
                    run.run_id,
                    run.started_at.to_rfc3339()
                );
                run
            }
            None => executor
                .create_run(plan, false)
                .map_err(|e| OpError::new(format!("cannot record the run: {e}")))?,
        };
        match executor.execute(run).await {
            Ok(Outcome::Succeeded) => Ok(()),
            Ok(Outcome::Failed(steps)) => Err(OpError::new(
                steps
                    .into_iter()
                    .map(|(s, m)| format!("{s}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
            Ok(Outcome::Interrupted) => {
                self.set_condition(Exit::Interrupted);
                Err(OpError::new("interrupted; run `drsync sync` to resume"))
            }
            Ok(Outcome::LeaseHeld {
                service,
                owner,
                until,
            }) => Err({
                self.set_condition(Exit::Leased);
                OpError::new(format!(
                    "another drsync process ({owner}) holds a lease on `{service}` until {}",
                    until.to_rfc3339()
                ))
            }),
            Err(e) => Err(OpError::new(e.to_string())),
        }
    }

    /// An unfinished run with the same restore plan (kind and steps) as `plan`: one a killed
    /// or interrupted drill, failover or failback left behind, still holding its lease.
    /// Backup plans are never matched: a fresh backup is named after its start.
    fn unfinished_same(
        &self,
        plan: &Plan,
    ) -> Result<Option<drsync_planner::store::RunRecord>, OpError> {
        if !matches!(plan.kind, PlanKind::Restore { .. }) {
            return Ok(None);
        }
        let runs = self
            .executor
            .unfinished_runs()
            .map_err(|e| OpError::new(format!("cannot read the recorded runs: {e}")))?;
        Ok(runs
            .into_iter()
            .filter(|r| r.plan.kind == plan.kind && r.plan.steps == plan.steps)
            .max_by_key(|r| r.started_at))
    }

    fn set_condition(&self, exit: Exit) {
        *self.condition.lock().unwrap_or_else(|e| e.into_inner()) = Some(exit);
    }

    /// The blob store and container of `backup`: the edge's storage, which holds it.
    fn backup_store(
        &self,
        backup: &BackupRecord,
    ) -> Result<(Arc<dyn drsync_arm_client::blob::BlobStore>, String), OpError> {
        let node = self.storage()?;
        if !node
            .target
            .account
            .eq_ignore_ascii_case(&backup.storage_account)
            || node.target.container != backup.container
        {
            return Err(OpError::new(format!(
                "backup `{}` is in {}/{}, not in the storage of replication `{}`",
                backup.name, backup.storage_account, backup.container, self.replication
            )));
        }
        let store = self
            .azure
            .blob_store(&node.target)
            .map_err(|e| OpError::new(e.to_string()))?;
        Ok((store, node.target.container.clone()))
    }

    fn storage(&self) -> Result<&drsync_planner::topology::StorageNode, OpError> {
        let r = self
            .topology
            .replication(&self.replication)
            .ok_or_else(|| {
                OpError::new(format!(
                    "replication `{}` is not configured",
                    self.replication
                ))
            })?;
        Ok(self.topology.storage_of(r))
    }
}

#[async_trait::async_trait]
impl DrillOps for ArmDrillOps {
    async fn snapshot(&self, service: &ServiceRef) -> Result<ConfigSnapshot, OpError> {
        let name = &service.name;
        let svc = self
            .arm
            .get_service(service)
            .await
            .map_err(op(&format!("read service `{name}`")))?;
        let sku = svc.sku().map_err(|e| OpError::new(e.to_string()))?;
        let mut snap = ConfigSnapshot::new(service.resource_id(), self.clock.now(), sku);
        snap.gateway_url = svc.gateway_url.clone();
        snap.set_hostnames(svc.hostnames.iter().map(|h| h.host_name.clone()));
        snap.identity = svc.identity.as_ref().map(|i| IdentitySnapshot {
            kind: i.kind.clone(),
            principal_id: i.principal_id.clone(),
            tenant_id: i.tenant_id.clone(),
            user_assigned: {
                let mut ids: Vec<String> = i
                    .user_assigned
                    .keys()
                    .map(|k| k.to_ascii_lowercase())
                    .collect();
                ids.sort();
                ids
            },
        });
        snap.last_change = self
            .arm
            .sync_state(service)
            .await
            .map_err(op(&format!("read the configuration state of `{name}`")))?
            .configuration_change_date;
        let apis = self
            .arm
            .list_apis(service)
            .await
            .map_err(op(&format!("list the APIs of `{name}`")))?;
        snap.add_items(
            ItemKind::Api,
            apis.into_iter().map(|a| {
                SnapshotItem::new(
                    a.name,
                    json!({
                        "displayName": a.display_name, "path": a.path, "serviceUrl": a.service_url,
                        "protocols": a.protocols, "apiRevision": a.api_revision,
                        "apiVersion": a.api_version, "isCurrent": a.is_current,
                        "apiVersionSetId": a.api_version_set_id,
                        "subscriptionRequired": a.subscription_required,
                    }),
                )
            }),
        );
        let products = self
            .arm
            .list_products(service)
            .await
            .map_err(op(&format!("list the products of `{name}`")))?;
        snap.add_items(
            ItemKind::Product,
            products.into_iter().map(|p| {
                SnapshotItem::new(
                    p.name,
                    json!({
                        "displayName": p.display_name, "description": p.description,
                        "terms": p.terms, "subscriptionRequired": p.subscription_required,
                        "approvalRequired": p.approval_required,
                        "subscriptionsLimit": p.subscriptions_limit, "state": p.state,
                    }),
                )
            }),
        );
        let named = self
            .arm
            .list_named_values(service)
            .await
            .map_err(op(&format!("list the named values of `{name}`")))?;
        snap.add_items(
            ItemKind::NamedValue,
            named.into_iter().map(named_value_item),
        );
        Ok(snap)
    }

    async fn backup(&self, source: &ServiceRef) -> Result<BackupRecord, OpError> {
        let started = self.clock.now();
        let plan = Plan::backup(&self.topology, &source.name, started)
            .map_err(|e| OpError::new(e.to_string()))?;
        self.execute(plan).await?;
        let storage = self.storage()?;
        let entries =
            catalog::entries(&self.checkpoints).map_err(|e| OpError::new(e.to_string()))?;
        entries
            .into_iter()
            .map(|e| e.record)
            .filter(|b| {
                b.source.name.eq_ignore_ascii_case(&source.name)
                    && b.storage_account == storage.target.account
                    && b.container == storage.target.container
                    && b.name.started_at() >= started - chrono::Duration::seconds(1)
            })
            .max_by_key(|b| b.created_at)
            .ok_or_else(|| {
                OpError::new(format!(
                    "the backup of `{}` is not in the catalog",
                    source.name
                ))
            })
    }

    async fn newest_valid_backup(
        &self,
        source: &ServiceRef,
        now: Timestamp,
    ) -> Result<Option<BackupRecord>, OpError> {
        // Rebuild the catalog of this edge's container from storage alone: no call to the
        // source, and nothing from a state directory that may have been lost with its region.
        let node = self.storage()?.clone();
        let store = self
            .azure
            .blob_store(&node.target)
            .map_err(|e| OpError::new(e.to_string()))?;
        catalog::sync_from_storage(&self.checkpoints, &self.topology, &[(node.clone(), store)])
            .await
            .map_err(|e| {
                OpError::new(format!(
                    "cannot read the catalog from storage `{}`: {e}",
                    node.name
                ))
            })?;
        let entries =
            catalog::entries(&self.checkpoints).map_err(|e| OpError::new(e.to_string()))?;
        match drsync_planner::plan::latest_valid(
            &entries,
            &source.name,
            &node.target.account,
            &node.target.container,
            now,
        ) {
            Some(e) => Ok(Some(e.record.clone())),
            // Say why: nothing at all, only expired, or only suspect backups.
            None => {
                let records: Vec<BackupRecord> = entries.into_iter().map(|e| e.record).collect();
                let suspect = drsync_planner::drill::runner::newest_restorable_suspect(
                    &records,
                    &source.name,
                    &node.target.account,
                    &node.target.container,
                    now,
                );
                match suspect {
                    Some(b) if self.allow_suspect => {
                        eprintln!(
                            "warning: restoring `{}`, a SUSPECT backup (--allow-suspect): the configuration changed while it ran, so it may mix old and new content",
                            b.name
                        );
                        Ok(Some(b.clone()))
                    }
                    _ => {
                        let mut reason = drsync_planner::drill::runner::no_valid_backup_reason(
                            &records,
                            &source.name,
                            &node.target.account,
                            &node.target.container,
                            now,
                        );
                        if suspect.is_some() {
                            reason
                                .push_str("; `drsync failover --allow-suspect` restores it anyway");
                        }
                        Err(OpError::new(reason))
                    }
                }
            }
        }
    }

    async fn last_restored(&self, target: &ServiceRef) -> Result<Option<BackupName>, OpError> {
        let restores = self
            .checkpoints
            .restores()
            .map_err(|e| OpError::new(e.to_string()))?;
        Ok(restores
            .into_iter()
            .filter(|r| r.target.eq_ignore_ascii_case(&target.name))
            .max_by_key(|r| r.restored_at)
            .map(|r| r.backup))
    }

    async fn restore(&self, backup: &BackupRecord, target: &ServiceRef) -> Result<(), OpError> {
        // A plan with the restore step only: the executor's preflight would read the source,
        // which a failover must not touch, and verification is the drill's own.
        let now = self.clock.now();
        let plan = Plan {
            schema_version: drsync_planner::plan::PLAN_SCHEMA_VERSION,
            created_at: now,
            kind: PlanKind::Restore {
                backup: backup.name.clone(),
                target: target.name.clone(),
            },
            steps: vec![Step {
                id: format!("{}/drill-restore/{}", self.replication, target.name),
                replication: self.replication.clone(),
                action: Action::Restore {
                    target: target.name.clone(),
                    backup: BackupSource::Existing(backup.name.clone()),
                },
                reason: drsync_planner::plan::Reason::Requested,
                after: Vec::new(),
            }],
            up_to_date: Vec::new(),
        };
        self.execute(plan).await
    }

    async fn apply_overrides(
        &self,
        target: &ServiceRef,
        overrides: &[NamedValueOverride],
    ) -> Result<Overrides, OpError> {
        let name = &target.name;
        // A restored named value keeps its display name (APIM policies may refer to it);
        // one that does not exist yet is created with its name as display name.
        let existing = self
            .arm
            .list_named_values(target)
            .await
            .map_err(op(&format!("list the named values of `{name}`")))?;
        let target_id = target.resource_id();
        let mut applied = Overrides::none();
        for o in overrides {
            let display_name = existing
                .iter()
                .find(|n| n.name.eq_ignore_ascii_case(&o.name))
                .and_then(|n| n.display_name.clone())
                .unwrap_or_else(|| o.name.clone());
            // The error names the value, never its content (the client scrubs it too).
            let saved = self
                .arm
                .put_named_value(target, &o.name, &display_name, &o.value, o.secret)
                .await
                .map_err(op(&format!("replace named value `{}` on `{name}`", o.name)))?;
            // What verification must find: the content this PUT asked for (a secret's value
            // is not readable back, so only its display name and secrecy are compared).
            let intended = drsync_arm_client::NamedValueSummary {
                id: saved.id.clone(),
                name: saved.name.clone(),
                display_name: Some(display_name),
                secret: o.secret,
                value: (!o.secret).then(|| o.value.expose().to_string()),
                key_vault_secret_id: None,
                tags: Vec::new(),
            };
            let item = named_value_item(intended);
            applied.named_values.insert(
                saved.name.clone(),
                Some(content_hash(
                    ItemKind::NamedValue,
                    &target_id,
                    &item.content,
                )),
            );
        }
        Ok(applied)
    }

    async fn save_backup_snapshot(
        &self,
        backup: &BackupRecord,
        snapshot: &ConfigSnapshot,
    ) -> Result<(), OpError> {
        let (store, container) = self.backup_store(backup)?;
        let doc = kept::KeptSnapshot {
            schema_version: kept::KEPT_SCHEMA_VERSION,
            backup: backup.name.clone(),
            kept_at: self.clock.now(),
            report: self.report_id.clone(),
            snapshot: snapshot.clone(),
        };
        kept::save(store.as_ref(), &container, &doc)
            .await
            .map_err(|e| OpError::new(format!("cannot write beside backup `{}`: {e}", backup.name)))
    }

    async fn backup_snapshot(
        &self,
        backup: &BackupRecord,
    ) -> Result<Option<ConfigSnapshot>, OpError> {
        let (store, container) = self.backup_store(backup)?;
        Ok(kept::load(store.as_ref(), &container, &backup.name)
            .await
            .map_err(|e| OpError::new(format!("cannot read beside backup `{}`: {e}", backup.name)))?
            .map(|k| k.snapshot))
    }

    async fn promote(
        &self,
        edge: &str,
        source: &ServiceRef,
        target: &ServiceRef,
    ) -> Result<(), OpError> {
        let mut roles =
            RoleState::load(&self.state_dir).map_err(|e| OpError::new(e.to_string()))?;
        match roles.swap(edge) {
            Some(swap) if swap.original_primary.eq_ignore_ascii_case(&target.name) => {
                roles.record_failback(edge);
            }
            _ => roles.record_failover(
                edge,
                &source.name,
                &target.name,
                self.clock.now(),
                &self.report_id,
            ),
        }
        roles
            .save(&self.state_dir)
            .map_err(|e| OpError::new(e.to_string()))
    }
}

/// A named value's snapshot item: its non-secret content (a secret's value is never read).
fn named_value_item(n: drsync_arm_client::NamedValueSummary) -> SnapshotItem {
    SnapshotItem::new(
        n.name,
        json!({
            "displayName": n.display_name, "secret": n.secret,
            "value": if n.secret { None } else { n.value },
            "keyVaultSecretId": n.key_vault_secret_id, "tags": n.tags,
        }),
    )
}
