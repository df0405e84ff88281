//! Runs one drill, clone, failover or failback, phase by phase, and writes its report.
//!
//! [`run`] is the whole procedure: preflight (snapshot the target before the restore, pick the
//! backup), backup (fresh, unless an existing one is reused), restore, overrides (clones),
//! verify, promote (failover, failback); each phase timestamped from the injected [`Clock`] and
//! wrapped in its before/after hooks. A failed phase (its work, or one of its hooks) stops the
//! run: later phases are recorded as skipped. What touches Azure and the state goes through
//! [`DrillOps`], implemented by the CLI over the planner's executor and the ARM client, and by
//! an in-memory fake in tests; this module builds no request and reads no clock of its own.
//!
//! When the source is unreachable ([`RunSpec::source_reachable`] false, the failover case),
//! nothing calls it: the backup comes from the catalog, the recovery point is the backup's age
//! (an upper bound), and verification compares the target's content with the snapshot a
//! verified drill kept beside that backup ([`DrillOps::save_backup_snapshot`]) when there is
//! one, and otherwise checks only what the target itself can tell (its hostnames and identity
//! were kept).

use std::path::PathBuf;
use std::time::Duration;

use drsync_core::{BackupName, BackupRecord, Clock, ServiceRef, Timestamp};

use super::hooks::{HookEnv, HookSpec, run_hook};
use super::report::{
    BackupInfo, DrillKind, DrillReport, HookWhen, Objective, Objectives, Phase, PhaseRecord,
    REPORT_SCHEMA_VERSION, ServiceInfo, Status,
};
use super::snapshot::ConfigSnapshot;
use super::verify::{Overrides, VerifyScope, verify, verify_kept};

/// A failed operation, in words that name the resource. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A named value to replace after a restore (clones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedValueOverride {
    /// The named value's name.
    pub name: String,
    /// The new value. Held in a [`drsync_core::Secret`] so it never prints.
    pub value: drsync_core::Secret,
    /// Whether to store it as a secret named value.
    pub secret: bool,
}

/// What a run does to Azure and to drsync's state.
#[async_trait::async_trait]
pub trait DrillOps: Send + Sync {
    /// Reads a service's configuration snapshot (items, SKU, hostnames, identity, last change).
    async fn snapshot(&self, service: &ServiceRef) -> Result<ConfigSnapshot, OpError>;
    /// Takes a fresh backup of `source` and records it in the catalog.
    async fn backup(&self, source: &ServiceRef) -> Result<BackupRecord, OpError>;
    /// The newest backup of `source` still restorable at `now`, from the catalog of the edge's
    /// storage (never from the source itself).
    async fn newest_valid_backup(
        &self,
        source: &ServiceRef,
        now: Timestamp,
    ) -> Result<Option<BackupRecord>, OpError>;
    /// The backup last restored into `target`, as drsync's state records it.
    async fn last_restored(&self, target: &ServiceRef) -> Result<Option<BackupName>, OpError>;
    /// Restores `backup` into `target` and waits for the operation to finish.
    async fn restore(&self, backup: &BackupRecord, target: &ServiceRef) -> Result<(), OpError>;
    /// Replaces named values on `target`; returns, for each, the content hash it should now
    /// have (as [`super::snapshot::content_hash`] computes it), or `None` if unknown.
    async fn apply_overrides(
        &self,
        target: &ServiceRef,
        overrides: &[NamedValueOverride],
    ) -> Result<Overrides, OpError>;
    /// Keeps `snapshot`, a verified description of what `backup` holds, beside the backup (in
    /// the edge's storage), so that a later run that cannot read the source (a failover) can
    /// still compare content. The default keeps nothing.
    async fn save_backup_snapshot(
        &self,
        _backup: &BackupRecord,
        _snapshot: &ConfigSnapshot,
    ) -> Result<(), OpError> {
        Ok(())
    }
    /// The snapshot kept beside `backup` by [`DrillOps::save_backup_snapshot`], if any. The
    /// default has none.
    async fn backup_snapshot(
        &self,
        _backup: &BackupRecord,
    ) -> Result<Option<ConfigSnapshot>, OpError> {
        Ok(None)
    }
    /// Records the role swap: `target` becomes the primary of the edge, `source` a standby.
    async fn promote(
        &self,
        edge: &str,
        source: &ServiceRef,
        target: &ServiceRef,
    ) -> Result<(), OpError>;
}

/// Where the backup restored by a run comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupChoice {
    /// Take a fresh backup of the source.
    Fresh,
    /// Reuse the newest valid backup from the catalog (`--use-latest`).
    Latest,
    /// Reuse the newest valid backup, and skip the restore if the target already holds it
    /// (failover, failback).
    LatestIfBehind,
}

/// A service taking part in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The service.
    pub service: ServiceRef,
    /// Its configured region.
    pub region: Option<String>,
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// What kind of run.
    pub kind: DrillKind,
    /// The replication edge's name.
    pub edge: String,
    /// The backup's source.
    pub source: Participant,
    /// The service restored into.
    pub target: Participant,
    /// Where the backup comes from.
    pub backup: BackupChoice,
    /// Whether the source may be called (false: failover from an unreachable region).
    pub source_reachable: bool,
    /// Recovery time objective.
    pub rto: Option<Duration>,
    /// Recovery point objective.
    pub rpo: Option<Duration>,
    /// What verification compares.
    pub scope: VerifyScope,
    /// Named values replaced after the restore.
    pub overrides: Vec<NamedValueOverride>,
    /// Whether to run the promote phase (failover, failback).
    pub promote: bool,
    /// Hooks, all of them; those that apply are picked per phase.
    pub hooks: Vec<HookSpec>,
    /// The directory hooks run in.
    pub hook_dir: Option<PathBuf>,
    /// The run's id (random, injected).
    pub run_id: uuid::Uuid,
}

impl RunSpec {
    /// The report id: `{kind}-{target}-{YYYYMMDDTHHMMSSZ}-{run8}`.
    pub fn report_id(&self, started_at: Timestamp) -> String {
        let run = self.run_id.simple().to_string();
        format!(
            "{}-{}-{}-{}",
            self.kind,
            self.target.service.name,
            started_at.format("%Y%m%dT%H%M%SZ"),
            &run[..8]
        )
    }
}

struct Recorder<'a> {
    spec: &'a RunSpec,
    clock: &'a dyn Clock,
    env: HookEnv,
    phases: Vec<PhaseRecord>,
    stopped: bool,
}

impl Recorder<'_> {
    /// Starts a phase: runs its before-hooks. Returns false if the phase must not run (an
    /// earlier phase failed, or a before-hook failed).
    async fn begin(&mut self, phase: Phase) -> bool {
        if self.stopped {
            self.skip(phase, "not run: an earlier phase failed");
            return false;
        }
        let mut record = PhaseRecord {
            phase,
            status: Status::Passed,
            started_at: Some(self.clock.now()),
            finished_at: None,
            message: None,
            hooks: Vec::new(),
        };
        let ok = self.hooks(phase, HookWhen::Before, &mut record).await;
        if !ok {
            record.status = Status::Failed;
            record.finished_at = Some(self.clock.now());
            self.stopped = true;
        }
        self.phases.push(record);
        ok
    }

    /// Ends the phase begun last: on success runs its after-hooks.
    async fn end(&mut self, outcome: Result<Option<String>, String>) {
        let Some(mut record) = self.phases.pop() else {
            return;
        };
        match outcome {
            Ok(message) => {
                record.message = message;
                if !self.hooks(record.phase, HookWhen::After, &mut record).await {
                    record.status = Status::Failed;
                    self.stopped = true;
                }
            }
            Err(message) => {
                record.status = Status::Failed;
                record.message = Some(message);
                self.stopped = true;
            }
        }
        record.finished_at = Some(self.clock.now());
        self.phases.push(record);
    }

    fn skip(&mut self, phase: Phase, why: &str) {
        self.phases.push(PhaseRecord {
            phase,
            status: Status::Skipped,
            started_at: None,
            finished_at: None,
            message: Some(why.into()),
            hooks: Vec::new(),
        });
    }

    async fn hooks(&mut self, phase: Phase, when: HookWhen, record: &mut PhaseRecord) -> bool {
        let applicable = self
            .spec
            .hooks
            .iter()
            .filter(|h| h.applies(self.spec.kind, &self.spec.edge, phase, when));
        for hook in applicable {
            let r = run_hook(
                hook,
                &self.env,
                phase,
                when,
                self.spec.hook_dir.as_ref(),
                self.clock,
            )
            .await;
            let failed = r.status == Status::Failed;
            if failed {
                let message = format!(
                    "{when}-hook `{}` failed: {}",
                    r.name,
                    r.message.as_deref().unwrap_or("failed")
                );
                record.message = Some(match record.message.take() {
                    Some(m) => format!("{m}; {message}"),
                    None => message,
                });
            }
            record.hooks.push(r);
            if failed {
                return false;
            }
        }
        true
    }
}

fn service_info(p: &Participant, snapshot: Option<&ConfigSnapshot>) -> ServiceInfo {
    ServiceInfo {
        name: p.service.name.clone(),
        resource_id: p.service.resource_id(),
        region: p.region.clone(),
        gateway_url: snapshot.and_then(|s| s.gateway_url.clone()),
    }
}

fn backup_info(b: &BackupRecord, reused: bool) -> BackupInfo {
    BackupInfo {
        name: b.name.as_str().to_string(),
        started_at: b.name.started_at(),
        created_at: b.created_at,
        expires_at: b.expires_at,
        consistency: b.consistency,
        storage_account: b.storage_account.clone(),
        container: b.container.clone(),
        reused,
    }
}

/// Runs the procedure described by `spec` and returns its settled report. Never panics on an
/// Azure failure: every failure is a failed phase in the report.
pub async fn run(spec: &RunSpec, ops: &dyn DrillOps, clock: &dyn Clock) -> DrillReport {
    let started_at = clock.now();
    let id = spec.report_id(started_at);
    let mut env = HookEnv::new();
    env.set("run_id", id.clone())
        .set("kind", spec.kind.as_str())
        .set("edge", spec.edge.clone())
        .set("source_name", spec.source.service.name.clone())
        .set("source_id", spec.source.service.resource_id())
        .set(
            "source_region",
            spec.source.region.clone().unwrap_or_default(),
        )
        .set("target_name", spec.target.service.name.clone())
        .set("target_id", spec.target.service.resource_id())
        .set(
            "target_region",
            spec.target.region.clone().unwrap_or_default(),
        );
    let mut rec = Recorder {
        spec,
        clock,
        env,
        phases: Vec::new(),
        stopped: false,
    };

    let mut source_snapshot: Option<ConfigSnapshot> = None;
    // With the source unreachable: the snapshot a verified drill kept beside the backup.
    let mut stored_snapshot: Option<ConfigSnapshot> = None;
    let mut target_before: Option<ConfigSnapshot> = None;
    let mut backup: Option<(BackupRecord, bool)> = None;
    let mut restore_needed = true;

    // Preflight: the target as it is, the source (if reachable), the backup to reuse.
    if rec.begin(Phase::Preflight).await {
        let outcome = async {
            if !spec.source_reachable && spec.backup == BackupChoice::Fresh {
                return Err(format!(
                    "a fresh backup needs the source `{}`, which this run may not call",
                    spec.source.service.name
                ));
            }
            let before = ops
                .snapshot(&spec.target.service)
                .await
                .map_err(|e| format!("cannot read target `{}`: {e}", spec.target.service.name))?;
            rec.env.set("target_gateway_url", before.gateway_url.clone().unwrap_or_default());
            target_before = Some(before);
            if spec.source_reachable && spec.backup != BackupChoice::Fresh {
                let s = ops
                    .snapshot(&spec.source.service)
                    .await
                    .map_err(|e| format!("cannot read source `{}`: {e}", spec.source.service.name))?;
                rec.env.set("source_gateway_url", s.gateway_url.clone().unwrap_or_default());
                source_snapshot = Some(s);
            }
            let mut notes = Vec::new();
            if spec.backup != BackupChoice::Fresh {
                let now = clock.now();
                let b = ops
                    .newest_valid_backup(&spec.source.service, now)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| {
                        if spec.source_reachable {
                            format!(
                                "no valid backup of `{}` in the catalog (backups expire after 30 days); run `drsync catalog sync` or take one",
                                spec.source.service.name
                            )
                        } else {
                            format!(
                                "no valid backup of `{}` in the catalog of the edge's storage: a {} restores an existing backup and cannot take one",
                                spec.source.service.name, spec.kind
                            )
                        }
                    })?;
                rec.env.set("backup", b.name.as_str());
                notes.push(format!("reusing backup `{}` ({} old)", b.name, age(now - b.created_at)));
                if spec.backup == BackupChoice::LatestIfBehind {
                    let last = ops.last_restored(&spec.target.service).await.map_err(|e| e.to_string())?;
                    if last.as_ref() == Some(&b.name) {
                        restore_needed = false;
                        notes.push(format!(
                            "`{}` already holds it: no restore needed",
                            spec.target.service.name
                        ));
                    }
                }
                if !spec.source_reachable {
                    match ops.backup_snapshot(&b).await {
                        Ok(Some(snap)) => {
                            notes.push(format!(
                                "a verified snapshot of the source taken {} is kept beside it: content will be compared",
                                snap.taken_at.format("%Y-%m-%d %H:%M:%SZ")
                            ));
                            stored_snapshot = Some(snap);
                        }
                        Ok(None) => notes.push(
                            "no source snapshot is kept beside it: only hostnames and identity can be verified".into(),
                        ),
                        Err(e) => notes.push(format!(
                            "cannot read the source snapshot kept beside it ({e}): only hostnames and identity can be verified"
                        )),
                    }
                }
                backup = Some((b, true));
            }
            Ok::<_, String>(if notes.is_empty() { None } else { Some(notes.join("; ")) })
        }
        .await;
        rec.end(outcome).await;
    }

    // Backup: a fresh one, then the source as it was right after it.
    if spec.backup == BackupChoice::Fresh {
        if rec.begin(Phase::Backup).await {
            let outcome = async {
                let b = ops
                    .backup(&spec.source.service)
                    .await
                    .map_err(|e| e.to_string())?;
                rec.env.set("backup", b.name.as_str());
                let s = ops.snapshot(&spec.source.service).await.map_err(|e| {
                    format!("cannot read source `{}`: {e}", spec.source.service.name)
                })?;
                rec.env.set(
                    "source_gateway_url",
                    s.gateway_url.clone().unwrap_or_default(),
                );
                source_snapshot = Some(s);
                let consistency = match b.consistency {
                    drsync_core::Consistency::Consistent => "consistent",
                    drsync_core::Consistency::Suspect => {
                        "suspect: the configuration changed while it ran"
                    }
                    drsync_core::Consistency::Unknown => "consistency unknown",
                };
                let message = format!("took backup `{}` ({consistency})", b.name);
                backup = Some((b, false));
                Ok(Some(message))
            }
            .await;
            rec.end(outcome).await;
        }
    } else {
        rec.skip(Phase::Backup, "an existing backup is reused");
    }

    // Restore.
    if !restore_needed {
        rec.skip(
            Phase::Restore,
            "the target already holds the newest valid backup",
        );
    } else if rec.begin(Phase::Restore).await {
        let outcome = match &backup {
            Some((b, _)) => ops
                .restore(b, &spec.target.service)
                .await
                .map(|()| {
                    Some(format!(
                        "restored `{}` into `{}`",
                        b.name, spec.target.service.name
                    ))
                })
                .map_err(|e| e.to_string()),
            None => Err("no backup to restore".to_string()),
        };
        rec.end(outcome).await;
    }

    // Overrides.
    let mut applied = Overrides::none();
    if spec.overrides.is_empty() {
        if spec.kind == DrillKind::Clone {
            rec.skip(Phase::Overrides, "no overrides given");
        }
    } else if rec.begin(Phase::Overrides).await {
        let outcome = ops
            .apply_overrides(&spec.target.service, &spec.overrides)
            .await
            .map(|o| {
                let names: Vec<&str> = o.named_values.keys().map(String::as_str).collect();
                let message = format!("replaced named values: {}", names.join(", "));
                applied = o;
                Some(message)
            })
            .map_err(|e| e.to_string());
        rec.end(outcome).await;
    }

    // Verify.
    let mut verification = None;
    let mut verified_at = None;
    if rec.begin(Phase::Verify).await {
        let outcome = async {
            let after = ops
                .snapshot(&spec.target.service)
                .await
                .map_err(|e| format!("cannot read target `{}`: {e}", spec.target.service.name))?;
            let expected = source_snapshot.as_ref().or(stored_snapshot.as_ref());
            let report = match expected {
                Some(source) => {
                    verify(source, &after, target_before.as_ref(), &applied, spec.scope)
                }
                None => verify_kept(&after, target_before.as_ref()),
            };
            let passed = report.passed();
            let n = report.differences.len();
            let first = report.differences.first().map(|d| d.message());
            verification = Some(report);
            if passed {
                verified_at = Some(clock.now());
                let message = match (&source_snapshot, &stored_snapshot) {
                    (Some(source), _) => {
                        let mut m = "the restored service matches its source".to_string();
                        // Keep what the backup verifiably holds, for failovers that cannot
                        // read the source. Not with overrides: those values were not compared.
                        if let Some((b, _)) = backup.as_ref().filter(|_| applied.is_empty()) {
                            match ops.save_backup_snapshot(b, source).await {
                                Ok(()) => m.push_str(&format!(
                                    "; its snapshot is kept beside backup `{}`",
                                    b.name
                                )),
                                Err(e) => m.push_str(&format!(
                                    "; the snapshot could not be kept beside backup `{}`: {e}",
                                    b.name
                                )),
                            }
                        }
                        m
                    }
                    (None, Some(_)) => "source unreachable: content compared with the verified snapshot kept beside the backup; hostnames and identity kept".into(),
                    (None, None) => "source unreachable: content not compared; hostnames and identity kept".into(),
                };
                Ok(Some(message))
            } else {
                Err(format!(
                    "{n} difference(s); first: {}",
                    first.unwrap_or_default()
                ))
            }
        }
        .await;
        rec.end(outcome).await;
    }

    // Promote.
    if spec.promote && rec.begin(Phase::Promote).await {
        let outcome = ops
            .promote(&spec.edge, &spec.source.service, &spec.target.service)
            .await
            .map(|()| {
                Some(format!(
                    "`{}` is now the primary of `{}`; `{}` becomes a standby",
                    spec.target.service.name, spec.edge, spec.source.service.name
                ))
            })
            .map_err(|e| e.to_string());
        rec.end(outcome).await;
    }

    let finished_at = clock.now();
    let recovery_time = Objective::recovery_time(started_at, verified_at, spec.rto);
    let recovery_point = match &backup {
        Some((b, _)) if verified_at.is_some() => Objective::recovery_point(
            b.name.started_at(),
            source_snapshot.as_ref().and_then(|s| s.last_change),
            finished_at,
            spec.rpo,
        ),
        _ => Objective::unknown(spec.rpo),
    };
    let mut report = DrillReport {
        schema_version: REPORT_SCHEMA_VERSION,
        id,
        kind: spec.kind,
        edge: spec.edge.clone(),
        drsync_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        finished_at,
        outcome: Status::Failed,
        failures: Vec::new(),
        source: service_info(&spec.source, source_snapshot.as_ref()),
        target: service_info(&spec.target, target_before.as_ref()),
        backup: backup.as_ref().map(|(b, reused)| backup_info(b, *reused)),
        phases: rec.phases,
        verification,
        objectives: Objectives {
            recovery_time,
            recovery_point,
        },
    };
    report.settle();
    report
}

/// Why no backup of `source` in `account`/`container` can be restored at `now` (none is
/// restorable and consistent), in words an on-call engineer can act on: none at all, only
/// expired ones (Azure refuses a backup older than 30 days), or only `suspect` ones (the
/// configuration changed while they ran: drsync does not restore them). `records` is the
/// catalog, any source or storage.
pub fn no_valid_backup_reason(
    records: &[BackupRecord],
    source: &str,
    account: &str,
    container: &str,
    now: Timestamp,
) -> String {
    let mut mine: Vec<&BackupRecord> = records
        .iter()
        .filter(|b| {
            b.source.name.eq_ignore_ascii_case(source)
                && b.storage_account.eq_ignore_ascii_case(account)
                && b.container == container
        })
        .collect();
    mine.sort_by_key(|b| std::cmp::Reverse(b.created_at));
    let place = format!("storage account `{account}`, container `{container}`");
    let Some(newest) = mine.first() else {
        return format!(
            "no backup of `{source}` in {place} (catalog rebuilt from its sidecar blobs): there is nothing to restore"
        );
    };
    let mut parts = vec![format!(
        "no valid backup of `{source}` in {place}: {} backup(s), none restorable",
        mine.len()
    )];
    let expired = mine.iter().filter(|b| !b.is_restorable_at(now)).count();
    if expired > 0 {
        let newest_expired = mine
            .iter()
            .find(|b| !b.is_restorable_at(now))
            .expect("counted");
        parts.push(format!(
            "{expired} expired (backups expire 30 days after they are taken; the newest expired, `{}`, expired at {})",
            newest_expired.name,
            newest_expired
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    let suspect: Vec<&&BackupRecord> = mine
        .iter()
        .filter(|b| b.is_restorable_at(now) && b.consistency == drsync_core::Consistency::Suspect)
        .collect();
    if let Some(first) = suspect.first() {
        parts.push(format!(
            "{} suspect (the configuration changed while it ran, so it may mix old and new content; drsync does not restore suspect backups): the newest is `{}`, taken {}",
            suspect.len(),
            first.name,
            first
                .created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    if newest.is_restorable_at(now) && newest.consistency != drsync_core::Consistency::Suspect {
        // Cannot happen when called as documented; say so rather than mislead.
        parts.push(format!("`{}` looks restorable", newest.name));
    }
    parts.join("; ")
}

/// The newest backup of `source` in `account`/`container` that Azure still accepts at `now`
/// but that is `suspect`: the last resort of `drsync failover --allow-suspect` when no
/// consistent backup is left.
pub fn newest_restorable_suspect<'a>(
    records: &'a [BackupRecord],
    source: &str,
    account: &str,
    container: &str,
    now: Timestamp,
) -> Option<&'a BackupRecord> {
    records
        .iter()
        .filter(|b| {
            b.source.name.eq_ignore_ascii_case(source)
                && b.storage_account.eq_ignore_ascii_case(account)
                && b.container == container
                && b.is_restorable_at(now)
                && b.consistency == drsync_core::Consistency::Suspect
        })
        .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)))
}

fn age(d: chrono::Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.num_seconds().max(0) as u64)).to_string()
}
