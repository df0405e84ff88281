//! The executor: runs a plan's steps with tokio, checkpointing every step in the store.
//!
//! Rules it keeps:
//! - A global concurrency limit; steps whose dependencies succeeded run in parallel (restores
//!   to different targets), but never two steps on one service: an in-process guard plus a
//!   lease in the store (owner `{run}/{step}`, expiry) that another process respects. The
//!   lease is renewed before every POST and on every round of a wait or a poll, so it does not
//!   lapse during a long busy wait or restore; a step that finds it taken sends nothing more.
//! - Every preflight of the run finishes before any POST.
//! - A step's state is written and flushed before each external effect (`Intent`) and after it
//!   (`Accepted` with the poller's state, `Succeeded`, `Failed` with ARM's code and message).
//! - Resume is level-triggered: an `Accepted` operation is polled, never POSTed again; an
//!   `Intent` of unknown fate is settled by looking at Azure (is the service busy, does the
//!   backup blob exist, did the target's configuration change after the intent) first.
//! - A busy service (409, `Updating`) is waited for, up to a bound, then reported clearly.
//! - Consistency guard: the primary's `configurationChangeDate` is read before and after each
//!   backup; a change marks the backup suspect and, by default, one more backup is taken.
//! - Fail-fast (default) or continue-on-error; cancellation (Ctrl-C) stops starting steps,
//!   leaves running operations `Accepted` in the store and ends the run `Interrupted`.
//!
//! Crash testing: `DRSYNC_TEST_CRASH_AT={intent|posted|accepted|succeeded}:{backup|restore}`
//! makes the process kill itself with SIGKILL right after the named checkpoint (`posted`: right
//! after the POST returned, before `Accepted` is written). Read only here; see
//! [`CrashPoint::from_env`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use drsync_core::{BackupName, BackupRecord, Clock, Consistency, ServiceRef, Timestamp};

use crate::azure::{
    AzureError, AzureErrorKind, AzureOps, Begun, EntityKind, OpHandle, OpKind, PollStatus,
    ServiceState,
};
use crate::catalog::{self, CatalogEntry};
use crate::plan::{Action, BackupSource, Plan, Step};
use crate::store::{
    BackupDoc, ChangeReading, Checkpoints, RestoreDoc, RunRecord, RunStatus, SCHEMA_VERSION,
    StepRecord, StepState, StoreError,
};
use crate::topology::Topology;

#[cfg(test)]
mod tests;

/// The environment variable of the crash hook (tests only).
pub const CRASH_ENV: &str = "DRSYNC_TEST_CRASH_AT";

/// Where the crash hook fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// `intent`, `posted`, `accepted` or `succeeded`.
    pub state: &'static str,
    /// Backup or restore.
    pub kind: OpKind,
}

impl CrashPoint {
    /// Parses `state:kind`.
    pub fn parse(text: &str) -> Option<Self> {
        let (state, kind) = text.split_once(':')?;
        let state = ["intent", "posted", "accepted", "succeeded"]
            .into_iter()
            .find(|s| *s == state)?;
        let kind = match kind {
            "backup" => OpKind::Backup,
            "restore" => OpKind::Restore,
            _ => return None,
        };
        Some(Self { state, kind })
    }

    /// Reads [`CRASH_ENV`].
    pub fn from_env() -> Option<Self> {
        std::env::var(CRASH_ENV).ok().and_then(|v| Self::parse(&v))
    }
}

/// How the executor behaves.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Steps running at once (at least 1).
    pub concurrency: usize,
    /// Keep going after a failed step (its dependents are skipped).
    pub continue_on_error: bool,
    /// Take one more backup when a backup is suspect.
    pub retry_suspect: bool,
    /// How long to wait for a busy service before failing the step.
    pub busy_timeout: Duration,
    /// How often to look at a busy service.
    pub busy_poll: Duration,
    /// Upper bound on the wait between two polls of an operation.
    pub max_poll_interval: Duration,
    /// Lease lifetime (renewed while an operation is polled).
    pub lease_ttl: Duration,
    /// The crash hook.
    pub crash: Option<CrashPoint>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            continue_on_error: false,
            retry_suspect: true,
            busy_timeout: Duration::from_secs(30 * 60),
            busy_poll: Duration::from_secs(15),
            // Never wait longer than a minute between polls, whatever Retry-After says.
            max_poll_interval: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15 * 60),
            crash: None,
        }
    }
}

/// What the executor reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A step started (or resumed) in the given state.
    Started {
        /// The step.
        step: String,
        /// Its state when picked up.
        state: &'static str,
    },
    /// A step's state changed.
    State {
        /// The step.
        step: String,
        /// The new state.
        state: &'static str,
        /// Details (backup name, ARM code).
        detail: String,
    },
    /// Something worth a line.
    Note {
        /// The step.
        step: String,
        /// The text.
        text: String,
    },
    /// A step finished.
    Finished {
        /// The step.
        step: String,
        /// Its final state name.
        state: &'static str,
        /// A message (error text for failures).
        message: String,
    },
}

/// Receives [`Event`]s (progress bars, log lines).
pub trait Observer: Send + Sync {
    /// One event.
    fn event(&self, event: &Event);
}

/// An observer that drops everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&self, _event: &Event) {}
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// At least one step failed (listed with their messages).
    Failed(Vec<(String, String)>),
    /// Stopped by cancellation; run again to resume.
    Interrupted,
    /// Another run or process holds a lease on a service.
    LeaseHeld {
        /// The service.
        service: String,
        /// The holder.
        owner: String,
        /// When its lease lapses.
        until: Timestamp,
    },
}

/// The executor failed outside any step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The state store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The catalog.
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
}

/// What one backup or restore step remembers between attempts at its POST.
struct PostRetry {
    /// When waiting for a busy (409) service gives up.
    busy_deadline: tokio::time::Instant,
    /// How many POSTs of unknown fate were settled by looking at Azure.
    unknown_fate_retries: u32,
    /// Preflight saw the service ready; look again before a POST only after a 409, so the
    /// common path costs no extra read (ARM's read bucket is the fleet's bottleneck).
    seen_busy: bool,
}

impl PostRetry {
    fn new(busy_timeout: Duration) -> Self {
        Self {
            busy_deadline: tokio::time::Instant::now() + busy_timeout,
            unknown_fate_retries: 0,
            seen_busy: false,
        }
    }

    /// A new POST is about to be issued after settling: give it the whole busy timeout again.
    fn rearm(&mut self, busy_timeout: Duration) {
        self.busy_deadline = tokio::time::Instant::now() + busy_timeout;
    }
}

enum StepEnd {
    Succeeded,
    Failed {
        code: String,
        message: String,
    },
    Interrupted,
    LeaseHeld {
        service: String,
        owner: String,
        until: Timestamp,
    },
}

/// (run, source service, entity kind): a source's names cached for one run.
type SourceKey = (Uuid, String, &'static str);

/// Runs plans.
pub struct Executor {
    azure: Arc<dyn AzureOps>,
    checkpoints: Checkpoints,
    clock: Arc<dyn Clock>,
    topology: Arc<Topology>,
    options: ExecOptions,
    observer: Arc<dyn Observer>,
    cancel: watch::Receiver<bool>,
    /// A source's entity names, read once per run for all its targets' verifications.
    source_names: parking_lot::Mutex<BTreeMap<SourceKey, Vec<String>>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// An executor. Setting `cancel` to `true` stops it from starting steps.
    pub fn new(
        azure: Arc<dyn AzureOps>,
        checkpoints: Checkpoints,
        clock: Arc<dyn Clock>,
        topology: Arc<Topology>,
        options: ExecOptions,
        observer: Arc<dyn Observer>,
        cancel: watch::Receiver<bool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            azure,
            checkpoints,
            clock,
            topology,
            options,
            observer,
            cancel,
            source_names: parking_lot::Mutex::new(BTreeMap::new()),
        })
    }

    /// Records a new run of `plan` (status running, every step pending).
    pub fn create_run(&self, plan: Plan, continue_on_error: bool) -> Result<RunRecord, StoreError> {
        let now = self.clock.now();
        let run = RunRecord {
            schema_version: SCHEMA_VERSION,
            run_id: Uuid::new_v4(),
            started_at: now,
            updated_at: now,
            finished_at: None,
            status: RunStatus::Running,
            continue_on_error,
            plan,
        };
        self.checkpoints.put_run(&run)?;
        for s in &run.plan.steps {
            self.checkpoints
                .put_step(&StepRecord::pending(run.run_id, &s.id, now))?;
        }
        Ok(run)
    }

    /// Every unfinished run, oldest first (what `drsync sync` resumes, in this order: an older
    /// run may hold the leases a newer one waits for).
    pub fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        Ok(self
            .checkpoints
            .runs()?
            .into_iter()
            .filter(|r| r.status.is_unfinished())
            .collect())
    }

    /// The newest unfinished run, if any.
    pub fn unfinished_run(&self) -> Result<Option<RunRecord>, StoreError> {
        Ok(self
            .checkpoints
            .runs()?
            .into_iter()
            .rev()
            .find(|r| r.status.is_unfinished()))
    }

    /// Runs (or resumes) `run` to its end.
    pub async fn execute(self: &Arc<Self>, mut run: RunRecord) -> Result<Outcome, ExecError> {
        run.status = RunStatus::Running;
        run.updated_at = self.clock.now();
        self.checkpoints.put_run(&run)?;
        let run = Arc::new(run);
        let continue_on_error = run.continue_on_error || self.options.continue_on_error;

        let mut states: BTreeMap<String, StepState> = BTreeMap::new();
        for s in &run.plan.steps {
            let rec = match self.checkpoints.step(run.run_id, &s.id)? {
                Some(rec) => rec,
                None => {
                    let rec = StepRecord::pending(run.run_id, &s.id, self.clock.now());
                    self.checkpoints.put_step(&rec)?;
                    rec
                }
            };
            states.insert(s.id.clone(), rec.state);
        }

        let mut running: JoinSet<(String, StepEnd)> = JoinSet::new();
        let mut busy_services: BTreeSet<String> = BTreeSet::new();
        let mut running_ids: BTreeSet<String> = BTreeSet::new();
        // Failures recorded before a resume count: the run cannot end `Succeeded`, and in
        // fail-fast mode only the steps already under way (`Intent`, `Accepted`) are resumed.
        let mut failures: Vec<(String, String)> = run
            .plan
            .steps
            .iter()
            .filter_map(|s| match &states[&s.id] {
                StepState::Failed { code, message, .. } => {
                    Some((s.id.clone(), format!("{code}: {message}")))
                }
                _ => None,
            })
            .collect();
        let resume_only = !continue_on_error && !failures.is_empty();
        let mut interrupted = false;
        // A step stopped mid-way (its operation may still be running in Azure): the run must
        // stay resumable whatever else happened.
        let mut step_interrupted = false;
        let mut lease_held = None;
        let mut cancel = self.cancel.clone();
        let mut stop_starting = false;
        let mut cancel_open = true;

        loop {
            if *cancel.borrow() {
                interrupted = true;
                stop_starting = true;
            }
            // Skip steps whose dependencies failed.
            let mut changed = true;
            while changed {
                changed = false;
                for s in &run.plan.steps {
                    if states[&s.id].is_final() || running_ids.contains(&s.id) {
                        continue;
                    }
                    if let Some(dep) = s.after.iter().find(|d| {
                        matches!(
                            states.get(*d),
                            Some(StepState::Failed { .. } | StepState::Skipped { .. })
                        )
                    }) {
                        let reason = format!("`{dep}` did not succeed");
                        let state = StepState::Skipped {
                            reason: reason.clone(),
                        };
                        self.save_state(&run, &s.id, state.clone())?;
                        self.observer.event(&Event::Finished {
                            step: s.id.clone(),
                            state: "skipped",
                            message: reason,
                        });
                        states.insert(s.id.clone(), state);
                        changed = true;
                    }
                }
            }
            let preflights_done = run
                .plan
                .steps
                .iter()
                .filter(|s| matches!(s.action, Action::Preflight { .. }))
                .all(|s| states[&s.id].is_final());
            if !stop_starting {
                for s in &run.plan.steps {
                    if running.len() >= self.options.concurrency.max(1) {
                        break;
                    }
                    if states[&s.id].is_final() || running_ids.contains(&s.id) {
                        continue;
                    }
                    let deps_ok = s
                        .after
                        .iter()
                        .all(|d| matches!(states.get(d), Some(StepState::Succeeded { .. })));
                    let is_preflight = matches!(s.action, Action::Preflight { .. });
                    if !deps_ok || (!is_preflight && !preflights_done) {
                        continue;
                    }
                    if resume_only && matches!(states[&s.id], StepState::Pending) {
                        continue;
                    }
                    let service = s.action.service().map(str::to_ascii_lowercase);
                    if let Some(svc) = &service {
                        if busy_services.contains(svc) {
                            continue;
                        }
                        busy_services.insert(svc.clone());
                    }
                    running_ids.insert(s.id.clone());
                    self.observer.event(&Event::Started {
                        step: s.id.clone(),
                        state: states[&s.id].name(),
                    });
                    let this = Arc::clone(self);
                    let (run, step) = (Arc::clone(&run), s.clone());
                    running.spawn(async move {
                        let id = step.id.clone();
                        let end = this.run_step(&run, &step).await;
                        (id, end)
                    });
                }
            }
            if running.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = running.join_next() => joined,
                changed = cancel.changed(), if !stop_starting && cancel_open => {
                    if changed.is_err() {
                        // The sender is gone: nobody can cancel any more; stop listening.
                        cancel_open = false;
                    }
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (id, end) = match joined {
                Ok(pair) => pair,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            running_ids.remove(&id);
            let step = run.plan.step(&id).expect("planned step");
            if let Some(svc) = step.action.service() {
                busy_services.remove(&svc.to_ascii_lowercase());
            }
            let rec = self
                .checkpoints
                .step(run.run_id, &id)?
                .expect("step record");
            match end {
                StepEnd::Succeeded => {
                    self.observer.event(&Event::Finished {
                        step: id.clone(),
                        state: "succeeded",
                        message: summary(&rec),
                    });
                }
                StepEnd::Failed { code, message } => {
                    self.observer.event(&Event::Finished {
                        step: id.clone(),
                        state: "failed",
                        message: format!("{code}: {message}"),
                    });
                    failures.push((id.clone(), format!("{code}: {message}")));
                    if !continue_on_error {
                        stop_starting = true;
                    }
                }
                StepEnd::Interrupted => {
                    interrupted = true;
                    step_interrupted = true;
                }
                StepEnd::LeaseHeld {
                    service,
                    owner,
                    until,
                } => {
                    stop_starting = true;
                    lease_held.get_or_insert((service, owner, until));
                }
            }
            states.insert(id, rec.state);
        }

        let now = self.clock.now();
        let mut run = (*run).clone();
        let all_done = run
            .plan
            .steps
            .iter()
            .all(|s| matches!(states[&s.id], StepState::Succeeded { .. }));
        let outcome = if let Some((service, owner, until)) = lease_held {
            run.status = RunStatus::Interrupted;
            Outcome::LeaseHeld {
                service,
                owner,
                until,
            }
        } else if !failures.is_empty() && !step_interrupted {
            run.status = RunStatus::Failed;
            run.finished_at = Some(now);
            Outcome::Failed(failures)
        } else if all_done {
            run.status = RunStatus::Succeeded;
            run.finished_at = Some(now);
            Outcome::Succeeded
        } else if interrupted || stop_starting {
            run.status = RunStatus::Interrupted;
            Outcome::Interrupted
        } else {
            run.status = RunStatus::Failed;
            run.finished_at = Some(now);
            Outcome::Failed(vec![("run".into(), "steps left unfinished".into())])
        };
        run.updated_at = now;
        self.checkpoints.put_run(&run)?;
        Ok(outcome)
    }

    fn save_state(
        &self,
        run: &RunRecord,
        step: &str,
        state: StepState,
    ) -> Result<StepRecord, StoreError> {
        let mut rec = self
            .checkpoints
            .step(run.run_id, step)?
            .unwrap_or_else(|| StepRecord::pending(run.run_id, step, self.clock.now()));
        rec.state = state;
        rec.updated_at = self.clock.now();
        self.checkpoints.put_step(&rec)?;
        Ok(rec)
    }

    fn save(&self, rec: &mut StepRecord, state: StepState) -> Result<(), StoreError> {
        rec.state = state;
        rec.updated_at = self.clock.now();
        self.checkpoints.put_step(rec)?;
        self.observer.event(&Event::State {
            step: rec.step_id.clone(),
            state: rec.state.name(),
            detail: rec
                .backup
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default(),
        });
        Ok(())
    }

    fn note(&self, rec: &mut StepRecord, text: String) -> Result<(), StoreError> {
        self.observer.event(&Event::Note {
            step: rec.step_id.clone(),
            text: text.clone(),
        });
        rec.notes.push(text);
        rec.updated_at = self.clock.now();
        self.checkpoints.put_step(rec)
    }

    fn crash_if(&self, state: &str, kind: OpKind) {
        if let Some(c) = self.options.crash {
            if c.state == state && c.kind == kind {
                // SIGKILL ourselves: no destructors, no flush beyond what was already flushed.
                let pid = std::process::id().to_string();
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
                std::process::abort();
            }
        }
    }

    async fn run_step(&self, run: &RunRecord, step: &Step) -> StepEnd {
        let result = match &step.action {
            Action::Preflight { .. } => self.preflight_step(run, step).await,
            Action::Backup { service, storage } => {
                self.with_lease(
                    run,
                    step,
                    service,
                    self.backup_step(run, step, service, storage),
                )
                .await
            }
            Action::Restore { target, backup } => {
                self.with_lease(
                    run,
                    step,
                    target,
                    self.restore_step(run, step, target, backup),
                )
                .await
            }
            Action::Verify { target, source } => self.verify_step(run, step, target, source).await,
        };
        match result {
            Ok(end) => end,
            Err(e) => {
                let message = e.to_string();
                let _ = self.save_state(
                    run,
                    &step.id,
                    StepState::Failed {
                        at: self.clock.now(),
                        code: "StateError".into(),
                        message: message.clone(),
                    },
                );
                StepEnd::Failed {
                    code: "StateError".into(),
                    message,
                }
            }
        }
    }

    async fn with_lease(
        &self,
        run: &RunRecord,
        step: &Step,
        service: &str,
        body: impl std::future::Future<Output = Result<StepEnd, StoreError>>,
    ) -> Result<StepEnd, StoreError> {
        let Some(node) = self.topology.service(service) else {
            return self.fail(
                run,
                step,
                "UnknownService",
                format!("service `{service}` is not configured"),
            );
        };
        let id = node.service.resource_id();
        let owner = format!("{}/{}", run.run_id, step.id);
        let ttl = chrono::Duration::from_std(self.options.lease_ttl)
            .unwrap_or(chrono::Duration::hours(1));
        match self
            .checkpoints
            .try_lease(&id, &owner, ttl, self.clock.now())?
        {
            Ok(_) => {}
            Err(held) => {
                return Ok(StepEnd::LeaseHeld {
                    service: service.into(),
                    owner: held.owner,
                    until: held.expires_at,
                });
            }
        }
        let end = body.await;
        // Keep the lease if the step is unfinished (interrupted): a resumed run retakes it.
        if matches!(end, Ok(StepEnd::Succeeded | StepEnd::Failed { .. })) {
            self.checkpoints.release_lease(&id, &owner)?;
        }
        end
    }

    /// Renews the step's lease on `service` for another `lease_ttl`. Called before every POST
    /// and on every round of a wait or a poll, so the lease cannot lapse while the step waits
    /// for a busy service or polls a long restore. If the lease lapsed anyway (the process was
    /// stopped longer than the lease) and another run took it, the step stops where it is (its
    /// state is already checkpointed) and `Some(LeaseHeld)` is returned: nothing more is sent.
    fn renew_lease(
        &self,
        run: &RunRecord,
        step: &Step,
        service: &ServiceRef,
    ) -> Result<Option<StepEnd>, StoreError> {
        let owner = format!("{}/{}", run.run_id, step.id);
        let ttl = chrono::Duration::from_std(self.options.lease_ttl)
            .unwrap_or(chrono::Duration::hours(1));
        match self
            .checkpoints
            .try_lease(&service.resource_id(), &owner, ttl, self.clock.now())?
        {
            Ok(_) => Ok(None),
            Err(held) => Ok(Some(StepEnd::LeaseHeld {
                service: service.name.clone(),
                owner: held.owner,
                until: held.expires_at,
            })),
        }
    }

    fn fail(
        &self,
        run: &RunRecord,
        step: &Step,
        code: &str,
        message: String,
    ) -> Result<StepEnd, StoreError> {
        self.save_state(
            run,
            &step.id,
            StepState::Failed {
                at: self.clock.now(),
                code: code.into(),
                message: message.clone(),
            },
        )?;
        Ok(StepEnd::Failed {
            code: code.into(),
            message,
        })
    }

    /// Handles a backup or restore POST that was refused or went unanswered, the same way for
    /// both: a 409 means nothing started, so wait (bounded by `busy_timeout`) and try again; an
    /// unavailable or throttled answer leaves the fate unknown, so the step stays `Intent` and
    /// the next pass settles it by looking at Azure (at most five times); anything else fails
    /// the step. `None` means "go round the step's loop again".
    async fn after_post_error(
        &self,
        run: &RunRecord,
        step: &Step,
        rec: &mut StepRecord,
        op: OpKind,
        retry: &mut PostRetry,
        e: AzureError,
    ) -> Result<Option<StepEnd>, StoreError> {
        match e.kind {
            AzureErrorKind::Busy => {
                retry.seen_busy = true;
                self.save(rec, StepState::Pending)?;
                if tokio::time::Instant::now() >= retry.busy_deadline {
                    let message = format!(
                        "{}; gave up after {}",
                        e.message,
                        crate::plan::human(self.options.busy_timeout)
                    );
                    return self.fail(run, step, "ServiceBusy", message).map(Some);
                }
                self.observer.event(&Event::Note {
                    step: step.id.clone(),
                    text: format!("{}; waiting", e.message),
                });
                if !self.sleep(self.options.busy_poll).await {
                    return Ok(Some(StepEnd::Interrupted));
                }
            }
            AzureErrorKind::Unavailable | AzureErrorKind::Throttled => {
                retry.unknown_fate_retries += 1;
                if retry.unknown_fate_retries > 5 {
                    return self.fail(run, step, &e.code_or_kind(), e.message).map(Some);
                }
                let text = format!(
                    "{} POST outcome unknown ({}); checking Azure",
                    op.as_str(),
                    e.message
                );
                self.note(rec, text)?;
                if !self
                    .sleep(self.options.busy_poll.min(Duration::from_secs(5)))
                    .await
                {
                    return Ok(Some(StepEnd::Interrupted));
                }
            }
            _ => return self.fail(run, step, &e.code_or_kind(), e.message).map(Some),
        }
        Ok(None)
    }

    /// Sleeps, unless cancelled first (returns `false`).
    async fn sleep(&self, d: Duration) -> bool {
        let mut cancel = self.cancel.clone();
        if *cancel.borrow() {
            return false;
        }
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        let cancelled = tokio::select! {
            _ = &mut sleep => return true,
            r = cancel.wait_for(|c| *c) => r.is_ok(),
        };
        if cancelled {
            return false;
        }
        // Nobody can cancel any more: sleep the whole time.
        sleep.await;
        true
    }

    /// Waits until the service is `Succeeded`, bounded by the busy timeout, renewing the
    /// step's lease on it every round.
    async fn wait_ready(
        &self,
        run: &RunRecord,
        step: &Step,
        service: &ServiceRef,
    ) -> Result<ServiceState, WaitEnd> {
        let deadline = tokio::time::Instant::now() + self.options.busy_timeout;
        let mut noted = false;
        loop {
            match self.renew_lease(run, step, service) {
                Ok(None) => {}
                Ok(Some(end)) => return Err(WaitEnd::Lease(end)),
                Err(e) => return Err(WaitEnd::Failed("StateError".into(), e.to_string())),
            }
            let step = step.id.as_str();
            match self.azure.service(service).await {
                Ok(s) if s.is_ready() => return Ok(s),
                Ok(s) if s.is_busy() => {
                    if !noted {
                        self.observer.event(&Event::Note {
                            step: step.into(),
                            text: format!(
                                "service `{}` is {}; waiting for it",
                                service.name, s.provisioning_state
                            ),
                        });
                        noted = true;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(WaitEnd::Failed(
                            "ServiceBusy".into(),
                            format!(
                                "service `{}` stayed {} for {}; another operation is running on it. Run again later",
                                service.name,
                                s.provisioning_state,
                                crate::plan::human(self.options.busy_timeout)
                            ),
                        ));
                    }
                }
                Ok(s) => {
                    return Err(WaitEnd::Failed(
                        "ServiceNotReady".into(),
                        format!(
                            "service `{}` is in state {}, not Succeeded",
                            service.name, s.provisioning_state
                        ),
                    ));
                }
                Err(e) if retryable(&e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(WaitEnd::Failed(e.code_or_kind(), e.message));
                    }
                }
                Err(e) => return Err(WaitEnd::Failed(e.code_or_kind(), e.message)),
            }
            if !self.sleep(self.options.busy_poll).await {
                return Err(WaitEnd::Interrupted);
            }
        }
    }

    async fn preflight_step(&self, run: &RunRecord, step: &Step) -> Result<StepEnd, StoreError> {
        let mut rec = self
            .checkpoints
            .step(run.run_id, &step.id)?
            .expect("created");
        if matches!(rec.state, StepState::Succeeded { .. }) {
            return Ok(StepEnd::Succeeded);
        }
        let deadline = tokio::time::Instant::now() + self.options.busy_timeout;
        loop {
            let catalog =
                catalog::entries(&self.checkpoints).map_err(|e| StoreError::Db(e.to_string()))?;
            let result = crate::preflight::check(
                self.azure.as_ref(),
                &self.topology,
                &run.plan,
                &step.replication,
                &catalog,
                self.clock.now(),
            )
            .await;
            match result {
                Ok(report) => {
                    for n in report.notes {
                        self.note(&mut rec, n)?;
                    }
                    self.save(
                        &mut rec,
                        StepState::Succeeded {
                            at: self.clock.now(),
                        },
                    )?;
                    return Ok(StepEnd::Succeeded);
                }
                Err(e) if e.only_busy && tokio::time::Instant::now() < deadline => {
                    self.observer.event(&Event::Note {
                        step: step.id.clone(),
                        text: format!("{e}; waiting"),
                    });
                    if !self.sleep(self.options.busy_poll).await {
                        return Ok(StepEnd::Interrupted);
                    }
                }
                Err(e) => {
                    let code = if e.only_busy {
                        "ServiceBusy"
                    } else {
                        "PreflightFailed"
                    };
                    return self.fail(run, step, code, e.to_string());
                }
            }
        }
    }

    fn storage_for(&self, storage: &str) -> Option<drsync_core::StorageTarget> {
        self.topology.storage(storage).map(|s| s.target.clone())
    }

    async fn backup_step(
        &self,
        run: &RunRecord,
        step: &Step,
        service: &str,
        storage: &str,
    ) -> Result<StepEnd, StoreError> {
        let mut rec = self
            .checkpoints
            .step(run.run_id, &step.id)?
            .expect("created");
        let (Some(node), Some(target)) = (
            self.topology.service(service).cloned(),
            self.storage_for(storage),
        ) else {
            return self.fail(
                run,
                step,
                "UnknownService",
                format!("`{service}` or storage `{storage}` is not configured"),
            );
        };
        let svc = node.service.clone();
        let mut retry = PostRetry::new(self.options.busy_timeout);
        // The source's SKU as ARM reported it, when read in this step (recorded in the sidecar).
        let mut source_sku = None;
        loop {
            match rec.state.clone() {
                StepState::Succeeded { .. } => return Ok(StepEnd::Succeeded),
                StepState::Failed { code, message, .. } => {
                    return Ok(StepEnd::Failed { code, message });
                }
                StepState::Skipped { reason } => {
                    return Ok(StepEnd::Failed {
                        code: "Skipped".into(),
                        message: reason,
                    });
                }
                StepState::Pending => {
                    if retry.seen_busy {
                        match self.wait_ready(run, step, &svc).await {
                            Ok(state) => source_sku = Some(state.sku),
                            Err(WaitEnd::Interrupted) => return Ok(StepEnd::Interrupted),
                            Err(WaitEnd::Lease(end)) => return Ok(end),
                            Err(WaitEnd::Failed(code, message)) => {
                                return self.fail(run, step, &code, message);
                            }
                        }
                    }
                    if *self.cancel.borrow() {
                        return Ok(StepEnd::Interrupted);
                    }
                    // Never POST without a live lease.
                    if let Some(end) = self.renew_lease(run, step, &svc)? {
                        return Ok(end);
                    }
                    let marker = match self.azure.configuration_change_date(&svc).await {
                        Ok(m) => m,
                        Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message),
                    };
                    let mut at = self.clock.now();
                    if let Some(prev) = &rec.backup {
                        // A second backup in the same run must not reuse the first one's name.
                        at = at.max(prev.started_at() + chrono::Duration::seconds(1));
                    }
                    rec.backup = Some(BackupName::new(&node.service.name, at, run.run_id));
                    rec.change_marker = marker;
                    rec.attempt += 1;
                    self.save(
                        &mut rec,
                        StepState::Intent {
                            at: self.clock.now(),
                        },
                    )?;
                    self.crash_if("intent", OpKind::Backup);
                    let name = rec.backup.clone().expect("set");
                    let begun = self.azure.begin(OpKind::Backup, &svc, &target, &name).await;
                    self.crash_if("posted", OpKind::Backup);
                    match begun {
                        Ok(Begun::Accepted(handle)) => {
                            self.save(
                                &mut rec,
                                StepState::Accepted {
                                    at: self.clock.now(),
                                    poll: handle.0,
                                },
                            )?;
                            self.crash_if("accepted", OpKind::Backup);
                        }
                        Ok(Begun::Completed) => {
                            if let Some(end) = self
                                .finish_backup(run, step, &mut rec, &node, &target, source_sku)
                                .await?
                            {
                                return Ok(end);
                            }
                        }
                        Err(e) => {
                            if let Some(end) = self
                                .after_post_error(
                                    run,
                                    step,
                                    &mut rec,
                                    OpKind::Backup,
                                    &mut retry,
                                    e,
                                )
                                .await?
                            {
                                return Ok(end);
                            }
                        }
                    }
                }
                StepState::Intent { .. } => {
                    // Settle an intent of unknown fate: wait out a running operation, then the
                    // backup blob tells whether the backup happened.
                    match self.wait_ready(run, step, &svc).await {
                        Ok(_) => {}
                        Err(WaitEnd::Interrupted) => return Ok(StepEnd::Interrupted),
                        Err(WaitEnd::Lease(end)) => return Ok(end),
                        Err(WaitEnd::Failed(code, message)) => {
                            return self.fail(run, step, &code, message);
                        }
                    }
                    let name = rec.backup.clone().expect("intent names its backup");
                    let store = match self.azure.blob_store(&target) {
                        Ok(s) => s,
                        Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message),
                    };
                    match store.head(&target.container, name.as_str()).await {
                        Ok(Some(_)) => {
                            self.note(
                                &mut rec,
                                format!(
                                    "settled: backup `{name}` exists in storage; not POSTing again"
                                ),
                            )?;
                            if let Some(end) = self
                                .finish_backup(run, step, &mut rec, &node, &target, source_sku)
                                .await?
                            {
                                return Ok(end);
                            }
                        }
                        Ok(None) => {
                            self.note(
                                &mut rec,
                                format!("settled: backup `{name}` never happened; issuing it"),
                            )?;
                            rec.attempt = rec.attempt.saturating_sub(1);
                            self.save(&mut rec, StepState::Pending)?;
                            retry.rearm(self.options.busy_timeout);
                        }
                        Err(e) => return self.fail(run, step, "StorageError", e.to_string()),
                    }
                }
                StepState::Accepted { poll, .. } => {
                    match self
                        .poll_until_done(run, step, &mut rec, &svc, OpHandle(poll))
                        .await?
                    {
                        PollEnd::Succeeded => {
                            if let Some(end) = self
                                .finish_backup(run, step, &mut rec, &node, &target, source_sku)
                                .await?
                            {
                                return Ok(end);
                            }
                        }
                        PollEnd::Lost => {
                            self.note(
                                &mut rec,
                                "the operation is no longer known to Azure; settling".into(),
                            )?;
                            self.save(
                                &mut rec,
                                StepState::Intent {
                                    at: self.clock.now(),
                                },
                            )?;
                        }
                        PollEnd::End(end) => return Ok(end),
                    }
                }
            }
        }
    }

    /// After a backup operation succeeded: the consistency guard, the sidecar, the catalog.
    /// Returns `None` to loop (another backup is needed).
    async fn finish_backup(
        &self,
        run: &RunRecord,
        step: &Step,
        rec: &mut StepRecord,
        node: &crate::topology::ServiceNode,
        target: &drsync_core::StorageTarget,
        sku: Option<drsync_core::Sku>,
    ) -> Result<Option<StepEnd>, StoreError> {
        let name = rec.backup.clone().expect("backup named");
        // The manifest (entity names) is read before the second marker: if the marker did not
        // move, the names are exactly what the backup holds, and verification can compare
        // restored targets with it instead of re-reading the source for every target.
        let mut manifest = BTreeMap::new();
        for kind in self.verified_kinds(&step.replication) {
            match self.azure.entity_names(&node.service, kind).await {
                Ok(names) => {
                    manifest.insert(kind.as_str().to_owned(), names);
                }
                Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message).map(Some),
            }
        }
        let after = match self.azure.configuration_change_date(&node.service).await {
            Ok(m) => m,
            Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message).map(Some),
        };
        let consistency = if after == rec.change_marker {
            Consistency::Consistent
        } else {
            Consistency::Suspect
        };
        rec.manifest = Some(manifest);
        // The SKU as ARM reported it in this step, else as configured: this run's preflight
        // checked the configured tier against ARM.
        let sku = sku.unwrap_or(node.sku);
        let created_at = self.clock.now();
        let record = BackupRecord {
            name: name.clone(),
            source: node.service.clone(),
            sku,
            storage_account: target.account.clone(),
            container: target.container.clone(),
            created_at,
            expires_at: BackupRecord::expiry_for(created_at),
            change_marker: rec.change_marker,
            consistency,
        };
        let doc = BackupDoc::from_record(&record, Some(run.run_id));
        let store = match self.azure.blob_store(target) {
            Ok(s) => s,
            Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message).map(Some),
        };
        if let Err(e) = catalog::write_sidecar(store.as_ref(), &doc).await {
            return self
                .fail(
                    run,
                    step,
                    "StorageError",
                    format!("cannot write the sidecar of `{name}`: {e}"),
                )
                .map(Some);
        }
        self.checkpoints.put_backup(&doc)?;
        if consistency == Consistency::Suspect {
            let changed = after
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "an unknown time".into());
            if self.options.retry_suspect && rec.attempt < 2 {
                self.note(rec, format!("backup `{name}` is suspect: `{}` changed at {changed} while it ran; taking one more", node.name()))?;
                self.save(rec, StepState::Pending)?;
                return Ok(None);
            }
            self.note(
                rec,
                format!(
                    "backup `{name}` is suspect: `{}` changed at {changed} while it ran",
                    node.name()
                ),
            )?;
        }
        self.save(
            rec,
            StepState::Succeeded {
                at: self.clock.now(),
            },
        )?;
        self.crash_if("succeeded", OpKind::Backup);
        Ok(Some(StepEnd::Succeeded))
    }

    async fn poll_until_done(
        &self,
        run: &RunRecord,
        step: &Step,
        rec: &mut StepRecord,
        service: &ServiceRef,
        mut handle: OpHandle,
    ) -> Result<PollEnd, StoreError> {
        let mut errors = 0u32;
        loop {
            match self.azure.poll(&handle).await {
                Ok(PollStatus::Succeeded) => return Ok(PollEnd::Succeeded),
                Ok(PollStatus::Failed { code, message }) => {
                    return self.fail(run, step, &code, message).map(PollEnd::End);
                }
                Ok(PollStatus::Running {
                    handle: next,
                    retry_after,
                }) => {
                    errors = 0;
                    if next != handle {
                        // The poller's state moved on (next poll time, a new Location): keep the
                        // checkpoint current, without announcing a state change.
                        handle = next;
                        let at = match rec.state {
                            StepState::Accepted { at, .. } => at,
                            _ => self.clock.now(),
                        };
                        rec.state = StepState::Accepted {
                            at,
                            poll: handle.0.clone(),
                        };
                        rec.updated_at = self.clock.now();
                        self.checkpoints.put_step(rec)?;
                    }
                    if let Some(end) = self.renew_lease(run, step, service)? {
                        return Ok(PollEnd::End(end));
                    }
                    // Poll a little after the announced time: an operation due at T is seldom
                    // settled at exactly T, and a poll that comes too early costs a read.
                    let margin = (retry_after / 20).min(Duration::from_millis(250));
                    if !self
                        .sleep((retry_after + margin).min(self.options.max_poll_interval))
                        .await
                    {
                        return Ok(PollEnd::End(StepEnd::Interrupted));
                    }
                }
                Err(e) if e.kind == AzureErrorKind::NotFound => return Ok(PollEnd::Lost),
                Err(e) if retryable(&e) && errors < 10 => {
                    errors += 1;
                    if !self
                        .sleep(
                            self.options
                                .busy_poll
                                .min(Duration::from_secs(2 * u64::from(errors))),
                        )
                        .await
                    {
                        return Ok(PollEnd::End(StepEnd::Interrupted));
                    }
                }
                Err(e) => {
                    return self
                        .fail(run, step, &e.code_or_kind(), e.message)
                        .map(PollEnd::End);
                }
            }
        }
    }

    fn resolve_backup(
        &self,
        run: &RunRecord,
        backup: &BackupSource,
    ) -> Result<Option<BackupName>, StoreError> {
        Ok(match backup {
            BackupSource::Existing(name) => Some(name.clone()),
            BackupSource::Step(id) => self
                .checkpoints
                .step(run.run_id, id)?
                .and_then(|r| r.backup),
        })
    }

    async fn restore_step(
        &self,
        run: &RunRecord,
        step: &Step,
        target: &str,
        backup: &BackupSource,
    ) -> Result<StepEnd, StoreError> {
        let mut rec = self
            .checkpoints
            .step(run.run_id, &step.id)?
            .expect("created");
        let Some(node) = self.topology.service(target).cloned() else {
            return self.fail(
                run,
                step,
                "UnknownService",
                format!("service `{target}` is not configured"),
            );
        };
        let Some(replication) = self.topology.replication(&step.replication) else {
            return self.fail(
                run,
                step,
                "UnknownReplication",
                format!("replication `{}` is not configured", step.replication),
            );
        };
        let storage = self.topology.storage_of(replication).target.clone();
        let Some(name) = self.resolve_backup(run, backup)? else {
            return self.fail(
                run,
                step,
                "NoBackup",
                format!("{backup} has no backup name"),
            );
        };
        if rec.backup.as_ref() != Some(&name) {
            rec.backup = Some(name.clone());
            self.checkpoints.put_step(&rec)?;
        }
        let svc = node.service.clone();
        let mut retry = PostRetry::new(self.options.busy_timeout);
        loop {
            match rec.state.clone() {
                StepState::Succeeded { .. } => return Ok(StepEnd::Succeeded),
                StepState::Failed { code, message, .. } => {
                    return Ok(StepEnd::Failed { code, message });
                }
                StepState::Skipped { reason } => {
                    return Ok(StepEnd::Failed {
                        code: "Skipped".into(),
                        message: reason,
                    });
                }
                StepState::Pending => {
                    // The target's SKU: as ARM reports it after a 409, else as configured (the
                    // run's preflight checked it against ARM).
                    let target_sku = if retry.seen_busy {
                        match self.wait_ready(run, step, &svc).await {
                            Ok(s) => s.sku,
                            Err(WaitEnd::Interrupted) => return Ok(StepEnd::Interrupted),
                            Err(WaitEnd::Lease(end)) => return Ok(end),
                            Err(WaitEnd::Failed(code, message)) => {
                                return self.fail(run, step, &code, message);
                            }
                        }
                    } else {
                        node.sku
                    };
                    // Refuse before the POST what Azure would refuse after it.
                    let catalog = catalog::entries(&self.checkpoints)
                        .map_err(|e| StoreError::Db(e.to_string()))?;
                    if let Some(entry) = catalog.iter().find(|e| e.record.name == name) {
                        if !entry.record.sku.restorable_into(&target_sku) {
                            return self.fail(run, step, "SkuMismatch", format!(
                                "backup `{name}` is of a {} service but `{target}` is {}; not restoring",
                                entry.record.sku.tier, target_sku.tier
                            ));
                        }
                        if !entry.record.is_restorable_at(self.clock.now()) {
                            return self.fail(
                                run,
                                step,
                                "BackupExpired",
                                format!(
                                    "backup `{name}` expired at {}; not restoring",
                                    entry.record.expires_at.to_rfc3339()
                                ),
                            );
                        }
                    }
                    if *self.cancel.borrow() {
                        return Ok(StepEnd::Interrupted);
                    }
                    // Never POST without a live lease.
                    if let Some(end) = self.renew_lease(run, step, &svc)? {
                        return Ok(end);
                    }
                    // The target's change date before the POST, saved with the intent: if the
                    // POST's fate is lost, a later change date (same clock: Azure's) settles it.
                    let changed = match self.azure.configuration_change_date(&svc).await {
                        Ok(d) => d,
                        Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message),
                    };
                    rec.target_before = Some(ChangeReading { changed });
                    self.save(
                        &mut rec,
                        StepState::Intent {
                            at: self.clock.now(),
                        },
                    )?;
                    self.crash_if("intent", OpKind::Restore);
                    let begun = self
                        .azure
                        .begin(OpKind::Restore, &svc, &storage, &name)
                        .await;
                    self.crash_if("posted", OpKind::Restore);
                    match begun {
                        Ok(Begun::Accepted(handle)) => {
                            self.save(
                                &mut rec,
                                StepState::Accepted {
                                    at: self.clock.now(),
                                    poll: handle.0,
                                },
                            )?;
                            self.crash_if("accepted", OpKind::Restore);
                        }
                        Ok(Begun::Completed) => {
                            return self
                                .finish_restore(run, step, &mut rec, target, &name, &storage)
                                .await;
                        }
                        Err(e) => {
                            if let Some(end) = self
                                .after_post_error(
                                    run,
                                    step,
                                    &mut rec,
                                    OpKind::Restore,
                                    &mut retry,
                                    e,
                                )
                                .await?
                            {
                                return Ok(end);
                            }
                        }
                    }
                }
                StepState::Intent { at } => {
                    // Settle: wait out a running operation; a restore changes the target's
                    // configuration, so a change since the reading taken before the POST means
                    // it happened.
                    match self.wait_ready(run, step, &svc).await {
                        Ok(_) => {}
                        Err(WaitEnd::Interrupted) => return Ok(StepEnd::Interrupted),
                        Err(WaitEnd::Lease(end)) => return Ok(end),
                        Err(WaitEnd::Failed(code, message)) => {
                            return self.fail(run, step, &code, message);
                        }
                    }
                    let changed = match self.azure.configuration_change_date(&svc).await {
                        Ok(d) => d,
                        Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message),
                    };
                    let happened = match rec.target_before {
                        // Both readings on Azure's clock, so clock skew cannot fake a change.
                        Some(before) => before.changed_since(changed),
                        // Fallback for checkpoints written before drsync recorded the reading:
                        // compare Azure's change date with drsync's intent time, to the second
                        // (the change date has second precision in some api-versions). Clock
                        // skew or another change in that second can make this wrong.
                        None => changed.is_some_and(|d| d.timestamp() >= at.timestamp()),
                    };
                    if happened {
                        self.note(&mut rec, format!("settled: `{target}` changed after the restore intent; not POSTing again"))?;
                        return self
                            .finish_restore(run, step, &mut rec, target, &name, &storage)
                            .await;
                    }
                    self.note(
                        &mut rec,
                        format!("settled: the restore into `{target}` never happened; issuing it"),
                    )?;
                    self.save(&mut rec, StepState::Pending)?;
                    retry.rearm(self.options.busy_timeout);
                }
                StepState::Accepted {
                    poll,
                    at: accepted_at,
                } => {
                    match self
                        .poll_until_done(run, step, &mut rec, &svc, OpHandle(poll))
                        .await?
                    {
                        PollEnd::Succeeded => {
                            return self
                                .finish_restore(run, step, &mut rec, target, &name, &storage)
                                .await;
                        }
                        PollEnd::Lost => {
                            self.note(
                                &mut rec,
                                "the operation is no longer known to Azure; settling".into(),
                            )?;
                            // Settle against the reading taken before the POST (kept in the
                            // record); a record without one falls back to the time the restore
                            // was accepted: the target's configuration changes when the restore
                            // completes, after that.
                            self.save(&mut rec, StepState::Intent { at: accepted_at })?;
                        }
                        PollEnd::End(end) => return Ok(end),
                    }
                }
            }
        }
    }

    /// After a restore succeeded: the restore record, the `Succeeded` checkpoint, then the
    /// restore marker in storage (so `catalog sync` knows what the target holds). The marker is
    /// written after the checkpoint and under a name fixed by backup and target, so writing it
    /// again replaces it; failing to write it does not fail the restore (a note says so, and the
    /// worst case after a lost state is one more restore of the same backup).
    async fn finish_restore(
        &self,
        run: &RunRecord,
        step: &Step,
        rec: &mut StepRecord,
        target: &str,
        name: &BackupName,
        storage: &drsync_core::StorageTarget,
    ) -> Result<StepEnd, StoreError> {
        let restored_at = self.clock.now();
        self.checkpoints.put_restore(&RestoreDoc {
            schema_version: SCHEMA_VERSION,
            target: target.into(),
            backup: name.clone(),
            restored_at,
            run_id: run.run_id,
        })?;
        self.save(
            rec,
            StepState::Succeeded {
                at: self.clock.now(),
            },
        )?;
        self.crash_if("succeeded", OpKind::Restore);
        if let Some(node) = self.topology.service(target) {
            let marker = catalog::RestoreMarker {
                schema_version: catalog::MARKER_SCHEMA_VERSION,
                target: node.service.resource_id(),
                backup: name.clone(),
                restored_at,
                run_id: run.run_id,
            };
            let written = match self.azure.blob_store(storage) {
                Ok(store) => catalog::write_restore_marker(
                    store.as_ref(),
                    &storage.container,
                    target,
                    &marker,
                )
                .await
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.message),
            };
            if let Err(e) = written {
                self.observer.event(&Event::Note {
                    step: step.id.clone(),
                    text: format!(
                        "restored, but cannot write the restore marker of `{target}` beside `{name}`: {e}; after a loss of the state directory it would be restored again"
                    ),
                });
            }
        }
        Ok(StepEnd::Succeeded)
    }

    fn verified_kinds(&self, replication: &str) -> Vec<EntityKind> {
        let Some(r) = self.topology.replication(replication) else {
            return Vec::new();
        };
        let mut kinds = Vec::new();
        if r.verify.apis {
            kinds.push(EntityKind::Apis);
        }
        if r.verify.products {
            kinds.push(EntityKind::Products);
        }
        if r.verify.named_values {
            kinds.push(EntityKind::NamedValues);
        }
        kinds
    }

    /// Verifies a restored target: its APIs, products and named values by name against the
    /// backup's manifest (read when this run took the backup), or, for a backup taken
    /// earlier, against the source now (differences are then only noted if the source changed
    /// since the backup).
    async fn verify_step(
        &self,
        run: &RunRecord,
        step: &Step,
        target: &str,
        source: &str,
    ) -> Result<StepEnd, StoreError> {
        let mut rec = self
            .checkpoints
            .step(run.run_id, &step.id)?
            .expect("created");
        if matches!(rec.state, StepState::Succeeded { .. }) {
            return Ok(StepEnd::Succeeded);
        }
        let (Some(t), Some(s)) = (
            self.topology.service(target).cloned(),
            self.topology.service(source).cloned(),
        ) else {
            return self.fail(
                run,
                step,
                "UnknownService",
                format!("`{target}` or `{source}` is not configured"),
            );
        };
        let restore_id = step.after.first().cloned().unwrap_or_default();
        let restore = self.checkpoints.step(run.run_id, &restore_id)?;
        let backup = restore.as_ref().and_then(|r| r.backup.clone());
        // The manifest of a backup this run took.
        let manifest = match run.plan.step(&restore_id).map(|s| &s.action) {
            Some(Action::Restore {
                backup: BackupSource::Step(id),
                ..
            }) => self
                .checkpoints
                .step(run.run_id, id)?
                .filter(|b| b.backup == backup)
                .and_then(|b| b.manifest),
            _ => None,
        };
        let entry: Option<CatalogEntry> = match &backup {
            Some(b) => catalog::entries(&self.checkpoints)
                .map_err(|e| StoreError::Db(e.to_string()))?
                .into_iter()
                .find(|e| &e.record.name == b),
            None => None,
        };
        let consistent = entry
            .as_ref()
            .is_some_and(|e| e.record.consistency == Consistency::Consistent);
        let mut differences = Vec::new();
        for kind in self.verified_kinds(&step.replication) {
            let expected = match manifest.as_ref().and_then(|m| m.get(kind.as_str())) {
                Some(names) => names.clone(),
                None => {
                    let key = (run.run_id, s.name().to_ascii_lowercase(), kind.as_str());
                    let cached = self.source_names.lock().get(&key).cloned();
                    match cached {
                        Some(a) => a,
                        None => match self.azure.entity_names(&s.service, kind).await {
                            Ok(a) => {
                                self.source_names.lock().insert(key, a.clone());
                                a
                            }
                            Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message),
                        },
                    }
                }
            };
            let actual = match self.azure.entity_names(&t.service, kind).await {
                Ok(b) => b,
                Err(e) => return self.fail(run, step, &e.code_or_kind(), e.message),
            };
            let a: BTreeSet<_> = expected.into_iter().collect();
            let b: BTreeSet<_> = actual.into_iter().collect();
            let missing: Vec<_> = a.difference(&b).cloned().collect();
            let extra: Vec<_> = b.difference(&a).cloned().collect();
            if !missing.is_empty() {
                differences.push(format!(
                    "{} missing on `{target}`: {}",
                    kind.as_str(),
                    missing.join(", ")
                ));
            }
            if !extra.is_empty() {
                differences.push(format!(
                    "{} only on `{target}`: {}",
                    kind.as_str(),
                    extra.join(", ")
                ));
            }
        }
        if !differences.is_empty() {
            let expected_differences = if manifest.is_some() {
                // The manifest of a suspect backup may hold changes the backup missed.
                !consistent
            } else {
                // Compared with the source now: expected if it changed since the backup.
                match self.azure.configuration_change_date(&s.service).await {
                    Ok(now_marker) => {
                        !consistent
                            || entry
                                .as_ref()
                                .is_none_or(|e| now_marker != e.record.change_marker)
                    }
                    Err(_) => true,
                }
            };
            if expected_differences {
                self.note(&mut rec, format!(
                    "`{source}` changed since the backup; differences expected until the next sync: {}",
                    differences.join("; ")
                ))?;
            } else {
                return self.fail(run, step, "VerificationFailed", differences.join("; "));
            }
        }
        self.save(
            &mut rec,
            StepState::Succeeded {
                at: self.clock.now(),
            },
        )?;
        Ok(StepEnd::Succeeded)
    }
}

enum WaitEnd {
    Interrupted,
    /// The step's lease was taken by another run.
    Lease(StepEnd),
    Failed(String, String),
}

enum PollEnd {
    Succeeded,
    Lost,
    End(StepEnd),
}

fn retryable(e: &AzureError) -> bool {
    matches!(
        e.kind,
        AzureErrorKind::Unavailable | AzureErrorKind::Throttled
    )
}

fn summary(rec: &StepRecord) -> String {
    match &rec.backup {
        Some(b) => b.to_string(),
        None => String::new(),
    }
}
