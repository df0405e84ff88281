//! The drill report: a versioned record of one drill, clone, failover or failback, and its
//! three renderings (JSON for machines, Markdown for people, JUnit XML for CI pipelines).
//!
//! The JSON form is [`DrillReport`] serialised with `serde_json`; its schema is
//! `docs/report-schema.json` (JSON Schema 2020-12, embedded here as [`REPORT_SCHEMA`]) and its
//! version is [`REPORT_SCHEMA_VERSION`]. Adding an optional field keeps the version; renaming,
//! removing or re-typing a field bumps it. Reports hold ids, names, hashes, timings and hook
//! output, never a secret: hooks receive no secrets, and named values are hashed without their
//! secret values.

use std::fmt::Write as _;

use drsync_core::{Consistency, Timestamp};

use super::verify::VerificationReport;

/// The version of the report's JSON shape.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// The JSON Schema of a report (`docs/report-schema.json`).
pub const REPORT_SCHEMA: &str = include_str!("../../../../docs/report-schema.json");

/// What kind of run a report describes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DrillKind {
    /// A failover drill: restore into a standby (or a dedicated drill service) and verify.
    Drill,
    /// A staging clone: restore into a staging service and override named values.
    Clone,
    /// A real failover: the standby becomes the primary.
    Failover,
    /// The way back after a failover.
    Failback,
}

impl DrillKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillKind::Drill => "drill",
            DrillKind::Clone => "clone",
            DrillKind::Failover => "failover",
            DrillKind::Failback => "failback",
        }
    }
}

impl std::fmt::Display for DrillKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The phases of a drill, in the order they run (a run uses a subset).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Read the services, pick or check the backup, snapshot the target.
    Preflight,
    /// Take a fresh backup (skipped with `--use-latest`).
    Backup,
    /// Restore the backup into the target.
    Restore,
    /// Replace named values after the restore (clones).
    Overrides,
    /// Compare the restored target with the source.
    Verify,
    /// Swap roles in the state and run promotion hooks (failover, failback).
    Promote,
}

impl Phase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Backup => "backup",
            Phase::Restore => "restore",
            Phase::Overrides => "overrides",
            Phase::Verify => "verify",
            Phase::Promote => "promote",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Before or after a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookWhen {
    /// Before the phase's work; a failure stops the phase before it starts.
    Before,
    /// After the phase's work succeeded.
    After,
}

impl HookWhen {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookWhen::Before => "before",
            HookWhen::After => "after",
        }
    }
}

impl std::fmt::Display for HookWhen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a phase, a hook, or a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It worked.
    Passed,
    /// It did not.
    Failed,
    /// It did not run (an earlier phase failed, or the run did not need it).
    Skipped,
}

impl Status {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hook's run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookRecord {
    /// The hook's name.
    pub name: String,
    /// The phase it ran around.
    pub phase: Phase,
    /// Before or after.
    pub when: HookWhen,
    /// The command, as configured.
    pub command: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Passed (exit 0) or failed.
    pub status: Status,
    /// The exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Whether it was killed for outliving its timeout.
    pub timed_out: bool,
    /// Why it failed.
    pub message: Option<String>,
    /// Captured standard output (truncated).
    pub stdout: String,
    /// Captured standard error (truncated).
    pub stderr: String,
}

/// One phase of a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PhaseRecord {
    /// Which phase.
    pub phase: Phase,
    /// Its result.
    pub status: Status,
    /// When it started (before its before-hooks); absent when skipped.
    pub started_at: Option<Timestamp>,
    /// When it ended (after its after-hooks); absent when skipped.
    pub finished_at: Option<Timestamp>,
    /// What happened, or why it failed or was skipped.
    pub message: Option<String>,
    /// Its hooks, in the order they ran.
    pub hooks: Vec<HookRecord>,
}

impl PhaseRecord {
    /// How long it took.
    pub fn duration(&self) -> Option<chrono::Duration> {
        Some(self.finished_at? - self.started_at?)
    }
}

/// A service as the report names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceInfo {
    /// The service name.
    pub name: String,
    /// Its ARM resource id.
    pub resource_id: String,
    /// Its region.
    pub region: Option<String>,
    /// Its gateway URL, if known.
    pub gateway_url: Option<String>,
}

/// The backup a run restored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupInfo {
    /// The backup (blob) name.
    pub name: String,
    /// When the backup started (its name's timestamp): the configuration it holds is at least
    /// this recent.
    pub started_at: Timestamp,
    /// When it completed.
    pub created_at: Timestamp,
    /// When Azure stops accepting it.
    pub expires_at: Timestamp,
    /// Whether the configuration held still while it ran.
    pub consistency: Consistency,
    /// The storage account.
    pub storage_account: String,
    /// The container.
    pub container: String,
    /// Whether an existing backup was reused (`--use-latest`, failover) rather than taken.
    pub reused: bool,
}

/// Whether a measured figure met its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveStatus {
    /// Within the objective.
    Met,
    /// Beyond it.
    Missed,
    /// No objective is configured; the figure is reported only.
    NotSet,
    /// The figure could not be measured (the run failed before it).
    Unknown,
}

/// Where a recovery point figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryPointBasis {
    /// The primary's last configuration change, read from ARM: the exact loss window.
    PrimaryLastChange,
    /// The primary could not be read (failover): the backup's age at the run, an upper bound.
    BackupAge,
}

/// A measured figure against its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Objective {
    /// The objective, in seconds.
    pub target_seconds: Option<u64>,
    /// The measured figure, in seconds.
    pub actual_seconds: Option<u64>,
    /// The verdict.
    pub status: ObjectiveStatus,
    /// For the recovery point: how the figure was obtained.
    pub basis: Option<RecoveryPointBasis>,
}

impl Objective {
    fn judge(target: Option<std::time::Duration>, actual: Option<chrono::Duration>) -> Self {
        let actual_seconds = actual.map(|d| d.num_seconds().max(0) as u64);
        let target_seconds = target.map(|d| d.as_secs());
        let status = match (target_seconds, actual_seconds) {
            (_, None) => ObjectiveStatus::Unknown,
            (None, Some(_)) => ObjectiveStatus::NotSet,
            (Some(t), Some(a)) if a <= t => ObjectiveStatus::Met,
            (Some(_), Some(_)) => ObjectiveStatus::Missed,
        };
        Self {
            target_seconds,
            actual_seconds,
            status,
            basis: None,
        }
    }

    /// Recovery time: from the run's start to the moment the target was verified (`None` when
    /// it never was), against the recovery time objective.
    pub fn recovery_time(
        started_at: Timestamp,
        verified_at: Option<Timestamp>,
        rto: Option<std::time::Duration>,
    ) -> Self {
        Self::judge(rto, verified_at.map(|v| v - started_at))
    }

    /// Recovery point: how much configuration change the restored backup lacks. With the
    /// primary's last change known, that is the time from the backup's start to that change
    /// (zero if the primary has not changed since); without it (the primary is unreachable),
    /// the backup's age at `now`, an upper bound.
    pub fn recovery_point(
        backup_started_at: Timestamp,
        primary_last_change: Option<Timestamp>,
        now: Timestamp,
        rpo: Option<std::time::Duration>,
    ) -> Self {
        let (lag, basis) = match primary_last_change {
            Some(change) => (
                (change - backup_started_at).max(chrono::Duration::zero()),
                RecoveryPointBasis::PrimaryLastChange,
            ),
            None => (now - backup_started_at, RecoveryPointBasis::BackupAge),
        };
        Self {
            basis: Some(basis),
            ..Self::judge(rpo, Some(lag))
        }
    }

    /// An objective that could not be measured.
    pub fn unknown(target: Option<std::time::Duration>) -> Self {
        Self::judge(target, None)
    }
}

/// Recovery time and recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Objectives {
    /// Run start to verified, against `rto`.
    pub recovery_time: Objective,
    /// Age of the restored configuration, against `rpo`.
    pub recovery_point: Objective,
}

/// One run's report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DrillReport {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The run's id: `{kind}-{target}-{YYYYMMDDTHHMMSSZ}-{run8}`; the report's directory name.
    pub id: String,
    /// What kind of run.
    pub kind: DrillKind,
    /// The replication edge (its configured name).
    pub edge: String,
    /// The drsync version that ran it.
    pub drsync_version: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Passed only if every phase passed, verification found no difference and no objective
    /// was missed.
    pub outcome: Status,
    /// Why it failed, one sentence each.
    pub failures: Vec<String>,
    /// The source (the backup's service).
    pub source: ServiceInfo,
    /// The service restored into.
    pub target: ServiceInfo,
    /// The backup restored, once chosen.
    pub backup: Option<BackupInfo>,
    /// Every phase, in order, including skipped ones.
    pub phases: Vec<PhaseRecord>,
    /// The comparison, when the verify phase ran.
    pub verification: Option<VerificationReport>,
    /// Recovery time and point against the configured objectives.
    pub objectives: Objectives,
}

impl DrillReport {
    /// Recomputes `outcome` and `failures` from the phases, the verification and the
    /// objectives.
    pub fn settle(&mut self) {
        let mut failures = Vec::new();
        for p in &self.phases {
            if p.status == Status::Failed {
                let why = p.message.clone().unwrap_or_else(|| "failed".into());
                failures.push(format!("phase {} failed: {why}", p.phase));
            }
        }
        if let Some(v) = &self.verification {
            failures.extend(
                v.differences
                    .iter()
                    .map(|d| format!("verification: {}", d.message())),
            );
        }
        let objectives = [
            ("recovery time", &self.objectives.recovery_time),
            ("recovery point", &self.objectives.recovery_point),
        ];
        for (label, o) in objectives {
            if o.status == ObjectiveStatus::Missed {
                failures.push(format!(
                    "{label} {} exceeds the objective {}",
                    secs(o.actual_seconds),
                    secs(o.target_seconds)
                ));
            }
        }
        self.outcome = if failures.is_empty() {
            Status::Passed
        } else {
            Status::Failed
        };
        self.failures = failures;
    }

    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.outcome == Status::Passed
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Parses a report, refusing other schema versions.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        match value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(REPORT_SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "report schema version {v} is not supported (this drsync reads version {REPORT_SCHEMA_VERSION})"
                ));
            }
            None => return Err("not a drsync report: no schema_version".into()),
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// Renders Markdown for people.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(md, "# drsync {} `{}`: {verdict}\n", self.kind, self.id);
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(md, "| Edge | `{}` |", self.edge);
        let _ = writeln!(
            md,
            "| Source | `{}`{} |",
            self.source.name,
            region(&self.source)
        );
        let _ = writeln!(
            md,
            "| Target | `{}`{} |",
            self.target.name,
            region(&self.target)
        );
        if let Some(b) = &self.backup {
            let _ = writeln!(
                md,
                "| Backup | `{}` ({}, {}, expires {}) |",
                b.name,
                if b.reused {
                    "reused"
                } else {
                    "taken by this run"
                },
                consistency(b.consistency),
                stamp(b.expires_at)
            );
        }
        let _ = writeln!(md, "| Started | {} |", stamp(self.started_at));
        let _ = writeln!(md, "| Finished | {} |", stamp(self.finished_at));
        let rt = &self.objectives.recovery_time;
        let rp = &self.objectives.recovery_point;
        let _ = writeln!(md, "| Recovery time | {} |", objective(rt));
        let _ = writeln!(md, "| Recovery point | {} |", objective(rp));
        if !self.failures.is_empty() {
            let _ = writeln!(md, "\n## Failures\n");
            for f in &self.failures {
                let _ = writeln!(md, "- {}", inline(f));
            }
        }
        let _ = writeln!(
            md,
            "\n## Phases\n\n| Phase | Status | Started | Duration | Notes |\n|---|---|---|---|---|"
        );
        for p in &self.phases {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                p.phase,
                p.status,
                p.started_at
                    .map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
                p.duration().map_or("-".into(), human),
                p.message
                    .as_deref()
                    .map_or(String::new(), |m| inline(m).replace('|', "\\|"))
            );
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(md, "\n## Verification\n");
            for c in &v.counts {
                let _ = writeln!(
                    md,
                    "- {}: {} in the source, {} restored",
                    c.item.plural(),
                    c.expected,
                    c.actual
                );
            }
            if !v.overridden.is_empty() {
                let _ = writeln!(md, "- overridden named values: {}", v.overridden.join(", "));
            }
            if v.differences.is_empty() {
                let _ = writeln!(md, "\nNo differences.");
            } else {
                let _ = writeln!(md, "\nDifferences:\n");
                for d in &v.differences {
                    let _ = writeln!(md, "- {}", inline(&d.message()));
                }
            }
        }
        let hooks: Vec<&HookRecord> = self.phases.iter().flat_map(|p| &p.hooks).collect();
        if !hooks.is_empty() {
            let _ = writeln!(md, "\n## Hooks");
            for h in hooks {
                let _ = writeln!(
                    md,
                    "\n### {} ({} {}): {}\n\n`{}`{}\n",
                    h.name,
                    h.when,
                    h.phase,
                    h.status,
                    h.command.replace('`', "'"),
                    h.message
                        .as_deref()
                        .map_or(String::new(), |m| format!(": {m}"))
                );
                for (label, text) in [("stdout", &h.stdout), ("stderr", &h.stderr)] {
                    if !text.is_empty() {
                        let fence = fence_for(text);
                        let text = printable(text.trim_end());
                        let _ = writeln!(md, "{label}:\n\n{fence}\n{text}\n{fence}\n");
                    }
                }
            }
        }
        md
    }
}

fn stamp(t: Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn region(s: &ServiceInfo) -> String {
    s.region
        .as_deref()
        .map_or(String::new(), |r| format!(" ({r})"))
}

fn consistency(c: Consistency) -> &'static str {
    match c {
        Consistency::Consistent => "consistent",
        Consistency::Suspect => "suspect",
        Consistency::Unknown => "consistency unknown",
    }
}

fn secs(s: Option<u64>) -> String {
    s.map_or("-".into(), |s| human(chrono::Duration::seconds(s as i64)))
}

fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
}

fn objective(o: &Objective) -> String {
    let verdict = match o.status {
        ObjectiveStatus::Met => "met",
        ObjectiveStatus::Missed => "MISSED",
        ObjectiveStatus::NotSet => "no objective set",
        ObjectiveStatus::Unknown => "not measured",
    };
    let basis = match o.basis {
        Some(RecoveryPointBasis::BackupAge) => " (upper bound: backup age; primary unreachable)",
        _ => "",
    };
    format!(
        "{} (objective {}): {verdict}{basis}",
        secs(o.actual_seconds),
        secs(o.target_seconds)
    )
}

/// Drops control characters other than newlines and tabs (hook output may hold any bytes).
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

/// Makes text safe inside one Markdown line.
fn inline(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// A backtick fence longer than any run of backticks in `text`.
fn fence_for(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

/// Renders reports as one JUnit XML document: a `<testsuite>` per report, a `<testcase>` per
/// phase, hook, verified item kind and objective, with a `<failure>` carrying the message.
pub fn junit_xml(reports: &[&DrillReport]) -> String {
    let mut cases_total = 0;
    let mut failures_total = 0;
    let mut suites = String::new();
    let mut time_total = 0.0;
    for r in reports {
        let cases = junit_cases(r);
        let failures = cases.iter().filter(|c| c.failure.is_some()).count();
        let skipped = cases.iter().filter(|c| c.skipped).count();
        let time = seconds(r.finished_at - r.started_at);
        cases_total += cases.len();
        failures_total += failures;
        time_total += time;
        let _ = writeln!(
            suites,
            r#"  <testsuite name="{}" id="{}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{time:.3}" timestamp="{}">"#,
            xml(&format!(
                "drsync {} {}: {} -> {}",
                r.kind, r.edge, r.source.name, r.target.name
            )),
            xml(&r.id),
            cases.len(),
            r.started_at.format("%Y-%m-%dT%H:%M:%S")
        );
        let _ = writeln!(suites, "    <properties>");
        let mut props = vec![
            ("drill_id", r.id.clone()),
            ("kind", r.kind.to_string()),
            ("edge", r.edge.clone()),
            ("source", r.source.resource_id.clone()),
            ("target", r.target.resource_id.clone()),
            ("outcome", r.outcome.to_string()),
        ];
        if let Some(b) = &r.backup {
            props.push(("backup", b.name.clone()));
        }
        for (k, v) in props {
            let _ = writeln!(
                suites,
                r#"      <property name="{}" value="{}"/>"#,
                xml(k),
                xml(&v)
            );
        }
        let _ = writeln!(suites, "    </properties>");
        let classname = xml(&format!("drsync.{}.{}", r.kind, r.edge));
        for c in cases {
            let _ = write!(
                suites,
                r#"    <testcase classname="{classname}" name="{}" time="{:.3}""#,
                xml(&c.name),
                c.time
            );
            if c.failure.is_none() && !c.skipped && c.stdout.is_empty() && c.stderr.is_empty() {
                let _ = writeln!(suites, "/>");
                continue;
            }
            let _ = writeln!(suites, ">");
            if c.skipped {
                let _ = writeln!(suites, r#"      <skipped message="{}"/>"#, xml(&c.detail));
            }
            if let Some(message) = &c.failure {
                let _ = writeln!(
                    suites,
                    r#"      <failure message="{}" type="{}">{}</failure>"#,
                    xml(message),
                    xml(&c.failure_type),
                    xml(&c.detail)
                );
            }
            if !c.stdout.is_empty() {
                let _ = writeln!(suites, "      <system-out>{}</system-out>", xml(&c.stdout));
            }
            if !c.stderr.is_empty() {
                let _ = writeln!(suites, "      <system-err>{}</system-err>", xml(&c.stderr));
            }
            let _ = writeln!(suites, "    </testcase>");
        }
        let _ = writeln!(suites, "  </testsuite>");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"drsync drills\" tests=\"{cases_total}\" failures=\"{failures_total}\" errors=\"0\" time=\"{time_total:.3}\">\n{suites}</testsuites>\n"
    )
}

struct Case {
    name: String,
    time: f64,
    failure: Option<String>,
    failure_type: String,
    detail: String,
    skipped: bool,
    stdout: String,
    stderr: String,
}

impl Case {
    fn new(name: String, time: f64) -> Self {
        Self {
            name,
            time,
            failure: None,
            failure_type: String::new(),
            detail: String::new(),
            skipped: false,
            stdout: String::new(),
            stderr: String::new(),
        }
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

fn junit_cases(r: &DrillReport) -> Vec<Case> {
    let mut cases = Vec::new();
    for p in &r.phases {
        let mut c = Case::new(
            format!("phase {}", p.phase),
            p.duration().map_or(0.0, seconds),
        );
        match p.status {
            Status::Passed => {}
            Status::Skipped => {
                c.skipped = true;
                c.detail = p.message.clone().unwrap_or_else(|| "skipped".into());
            }
            Status::Failed => {
                c.failure = Some(p.message.clone().unwrap_or_else(|| "failed".into()));
                c.failure_type = "PhaseFailed".into();
                c.detail = c.failure.clone().unwrap_or_default();
            }
        }
        cases.push(c);
        for h in &p.hooks {
            let mut c = Case::new(
                format!("hook {} ({} {})", h.name, h.when, h.phase),
                seconds(h.finished_at - h.started_at),
            );
            if h.status == Status::Failed {
                c.failure = Some(h.message.clone().unwrap_or_else(|| "failed".into()));
                c.failure_type = if h.timed_out {
                    "HookTimedOut"
                } else {
                    "HookFailed"
                }
                .into();
                c.detail = h.command.clone();
            }
            c.stdout = h.stdout.clone();
            c.stderr = h.stderr.clone();
            cases.push(c);
        }
    }
    if let Some(v) = &r.verification {
        for kind in &v.checked {
            let mut c = Case::new(format!("verify {}", kind.plural()), 0.0);
            let diffs: Vec<String> = v
                .differences
                .iter()
                .filter(|d| difference_kind(d) == Some(*kind))
                .map(|d| d.message())
                .collect();
            if !diffs.is_empty() {
                c.failure = Some(format!("{} difference(s): {}", diffs.len(), diffs[0]));
                c.failure_type = "VerificationFailed".into();
                c.detail = diffs.join("\n");
            }
            cases.push(c);
        }
        let mut c = Case::new("verify SKU, hostnames and identity".into(), 0.0);
        let diffs: Vec<String> = v
            .differences
            .iter()
            .filter(|d| difference_kind(d).is_none())
            .map(|d| d.message())
            .collect();
        if !diffs.is_empty() {
            c.failure = Some(diffs[0].clone());
            c.failure_type = "VerificationFailed".into();
            c.detail = diffs.join("\n");
        }
        cases.push(c);
    }
    for (label, o) in [
        ("recovery time", &r.objectives.recovery_time),
        ("recovery point", &r.objectives.recovery_point),
    ] {
        let mut c = Case::new(format!("objective {label}"), 0.0);
        match o.status {
            ObjectiveStatus::Missed => {
                c.failure = Some(format!(
                    "{label} {} exceeds the objective {}",
                    secs(o.actual_seconds),
                    secs(o.target_seconds)
                ));
                c.failure_type = "ObjectiveMissed".into();
                c.detail = c.failure.clone().unwrap_or_default();
            }
            ObjectiveStatus::Unknown => {
                c.skipped = true;
                c.detail = format!("{label} was not measured");
            }
            ObjectiveStatus::NotSet => {
                c.stdout = format!("{label} {} (no objective set)", secs(o.actual_seconds));
            }
            ObjectiveStatus::Met => {
                c.stdout = format!(
                    "{label} {} within the objective {}",
                    secs(o.actual_seconds),
                    secs(o.target_seconds)
                );
            }
        }
        cases.push(c);
    }
    cases
}

fn difference_kind(d: &super::verify::Difference) -> Option<super::snapshot::ItemKind> {
    use super::verify::Difference as D;
    match d {
        D::Missing { item, .. } | D::Extra { item, .. } | D::Changed { item, .. } => Some(*item),
        D::OverrideNotApplied { .. } => Some(super::snapshot::ItemKind::NamedValue),
        D::SkuDiffers { .. } | D::HostnamesNotKept { .. } | D::IdentityNotKept { .. } => None,
    }
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 forbids.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
