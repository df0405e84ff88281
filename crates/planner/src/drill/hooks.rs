//! Commands run before and after a drill's phases (a DNS or Front Door switch, a smoke test).
//!
//! A hook is a [`HookSpec`]: the phase and side (`before`/`after`) it attaches to, a command
//! (a string run by `sh -c`, or an argument vector run directly), a timeout, and optional
//! filters (edges, drill kinds). [`run_hook`] runs one with a clean environment: only a few
//! harmless variables of drsync's own environment are passed on (`PATH`, `HOME`, `LANG`, ...),
//! plus the `DRSYNC_*` variables of a [`HookEnv`] (ids, names, regions and gateway URLs, never
//! a secret) and the hook's own literal `env` table. Standard output and error are captured
//! (at most [`OUTPUT_LIMIT`] bytes of each) into a [`HookRecord`] for the report. A hook that
//! exits non-zero, cannot be started, or outlives its timeout fails; on timeout its whole
//! process group is killed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use drsync_core::Clock;
use tokio::io::AsyncReadExt;

use super::report::{DrillKind, HookRecord, HookWhen, Phase, Status};

/// How much of each output stream a report keeps.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// The timeout of a hook that names none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Variables of drsync's own environment that hooks inherit; everything else is dropped so that
/// credentials in drsync's environment (`AZURE_CLIENT_SECRET`, ...) never reach a hook.
pub const INHERITED_VARIABLES: [&str; 8] = [
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "SHELL",
];

/// What a hook runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum HookCommand {
    /// A command line run by `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly.
    Argv(Vec<String>),
}

impl std::fmt::Display for HookCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookCommand::Shell(s) => f.write_str(s),
            HookCommand::Argv(a) => f.write_str(&a.join(" ")),
        }
    }
}

/// One configured hook, as written in a hooks file (`[[hooks]]`) or the config's drill section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// A name for the report; defaults to `{when}-{phase}`.
    #[serde(default)]
    pub name: Option<String>,
    /// The phase the hook attaches to.
    pub phase: Phase,
    /// Before or after the phase.
    pub when: HookWhen,
    /// What to run.
    pub command: HookCommand,
    /// How long it may run, humantime (`"30s"`, `"5m"`); default 5 minutes.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Literal, non-secret variables added to the hook's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Only for these replication edges (all when empty).
    #[serde(default)]
    pub edges: Vec<String>,
    /// Only for these kinds of run (all when empty).
    #[serde(default)]
    pub kinds: Vec<DrillKind>,
}

/// What is wrong with a hook definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The timeout is not a humantime duration.
    #[error(
        "hook `{hook}`: timeout `{value}` is not a duration such as \"30s\" or \"5m\": {reason}"
    )]
    Timeout {
        /// The hook.
        hook: String,
        /// The text given.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The timeout is zero.
    #[error("hook `{0}`: timeout must be more than zero")]
    ZeroTimeout(String),
    /// The command is empty.
    #[error("hook `{0}`: command is empty")]
    EmptyCommand(String),
    /// An `env` key would replace a drsync variable or is not a valid name.
    #[error(
        "hook `{hook}`: env key `{key}` is not allowed (use letters, digits and `_`; `DRSYNC_*` is reserved)"
    )]
    EnvKey {
        /// The hook.
        hook: String,
        /// The key.
        key: String,
    },
    /// The hooks file does not parse.
    #[error("hooks file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
}

impl HookSpec {
    /// The hook's name in reports.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.when, self.phase))
    }

    /// The timeout, parsed.
    pub fn timeout(&self) -> Result<Duration, HookError> {
        let Some(text) = &self.timeout else {
            return Ok(DEFAULT_HOOK_TIMEOUT);
        };
        let d = humantime::parse_duration(text).map_err(|e| HookError::Timeout {
            hook: self.display_name(),
            value: text.clone(),
            reason: e.to_string(),
        })?;
        if d.is_zero() {
            return Err(HookError::ZeroTimeout(self.display_name()));
        }
        Ok(d)
    }

    /// Checks the definition without running it.
    pub fn validate(&self) -> Result<(), HookError> {
        self.timeout()?;
        let empty = match &self.command {
            HookCommand::Shell(s) => s.trim().is_empty(),
            HookCommand::Argv(a) => a.first().is_none_or(|p| p.is_empty()),
        };
        if empty {
            return Err(HookError::EmptyCommand(self.display_name()));
        }
        for key in self.env.keys() {
            let ok = !key.is_empty()
                && !key.to_ascii_uppercase().starts_with("DRSYNC_")
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !key.as_bytes()[0].is_ascii_digit();
            if !ok {
                return Err(HookError::EnvKey {
                    hook: self.display_name(),
                    key: key.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether the hook applies to this run and phase side.
    pub fn applies(&self, kind: DrillKind, edge: &str, phase: Phase, when: HookWhen) -> bool {
        self.phase == phase
            && self.when == when
            && (self.edges.is_empty() || self.edges.iter().any(|e| e == edge))
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// A hooks file: `[[hooks]]` tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksFile {
    /// The hooks, in the order they run within one phase side.
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
}

impl HooksFile {
    /// Parses and validates a hooks file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, HookError> {
        let file: HooksFile = toml::from_str(text).map_err(|e| HookError::File {
            path: path.into(),
            reason: e.to_string(),
        })?;
        for hook in &file.hooks {
            hook.validate()?;
        }
        Ok(file)
    }
}

/// The `DRSYNC_*` variables a hook sees. Only ids, names, regions, URLs and labels: the
/// builder offers nothing else, so no secret can get in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    vars: BTreeMap<String, String>,
}

impl HookEnv {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `DRSYNC_{key}` (the key is uppercased).
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.vars
            .insert(format!("DRSYNC_{}", key.to_ascii_uppercase()), value.into());
        self
    }

    /// The variables, by name.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }
}

/// Runs one hook for `phase`/`when`; never returns an error: every failure is recorded.
pub async fn run_hook(
    spec: &HookSpec,
    env: &HookEnv,
    phase: Phase,
    when: HookWhen,
    workdir: Option<&PathBuf>,
    clock: &dyn Clock,
) -> HookRecord {
    let started_at = clock.now();
    let mut record = HookRecord {
        name: spec.display_name(),
        phase,
        when,
        command: spec.command.to_string(),
        started_at,
        finished_at: started_at,
        status: Status::Failed,
        exit_code: None,
        timed_out: false,
        message: None,
        stdout: String::new(),
        stderr: String::new(),
    };
    let timeout = match spec.validate().and_then(|()| spec.timeout()) {
        Ok(t) => t,
        Err(e) => {
            record.message = Some(e.to_string());
            return record;
        }
    };
    let mut command = match &spec.command {
        HookCommand::Shell(line) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(line);
            c
        }
        HookCommand::Argv(argv) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    command.env_clear();
    for key in INHERITED_VARIABLES {
        if let Some(v) = std::env::var_os(key) {
            command.env(key, v);
        }
    }
    command.envs(&spec.env);
    command.envs(env.vars());
    command
        .env("DRSYNC_PHASE", phase.as_str())
        .env("DRSYNC_HOOK_WHEN", when.as_str());
    // An empty path (a configuration file named without a directory) is the current directory.
    let workdir = workdir.filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            record.finished_at = clock.now();
            record.message = Some(match workdir {
                Some(dir) => format!(
                    "could not start `{}` in {}: {e}",
                    record.command,
                    dir.display()
                ),
                None => format!("could not start `{}`: {e}", record.command),
            });
            return record;
        }
    };
    let out = Arc::new(std::sync::Mutex::new(Captured::default()));
    let err = Arc::new(std::sync::Mutex::new(Captured::default()));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(capture(s, out.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(capture(s, err.clone()))),
    ];
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    match waited {
        Ok(Ok(status)) => {
            record.exit_code = status.code();
            if status.success() {
                record.status = Status::Passed;
            } else {
                record.message = Some(match status.code() {
                    Some(code) => format!("exited with status {code}"),
                    None => "killed by a signal".to_string(),
                });
            }
        }
        Ok(Err(e)) => record.message = Some(format!("could not wait for the hook: {e}")),
        Err(_) => {
            record.timed_out = true;
            record.message = Some(format!(
                "timed out after {}; its process group was killed",
                humantime::format_duration(timeout)
            ));
            kill_group(&mut child).await;
        }
    }
    // Descendants that kept a pipe open are given a moment; what was read so far is kept.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    record.stdout = out.lock().unwrap_or_else(|e| e.into_inner()).text();
    record.stderr = err.lock().unwrap_or_else(|e| e.into_inner()).text();
    record.finished_at = clock.now();
    record
}

async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        // The hook leads its own process group (process_group(0)); `kill -KILL -PID` ends the
        // group, including the commands a shell started. No `unsafe` libc call is needed.
        let _ = tokio::process::Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{pid}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await;
    }
    let _ = child.kill().await;
}

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Captured {
    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            s.push_str(&format!("\n[output truncated to {OUTPUT_LIMIT} bytes]"));
        }
        s
    }
}

async fn capture(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    into: Arc<std::sync::Mutex<Captured>>,
) {
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.lock().unwrap_or_else(|e| e.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(c.bytes.len());
                let take = room.min(n);
                c.bytes.extend_from_slice(&buf[..take]);
                if take < n {
                    c.truncated = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drsync_core::ManualClock;

    fn clock() -> ManualClock {
        ManualClock::new(
            chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
                .unwrap()
                .into(),
        )
    }

    fn hook(command: HookCommand, timeout: Option<&str>) -> HookSpec {
        HookSpec {
            name: None,
            phase: Phase::Restore,
            when: HookWhen::After,
            command,
            timeout: timeout.map(Into::into),
            env: BTreeMap::new(),
            edges: vec![],
            kinds: vec![],
        }
    }

    fn env() -> HookEnv {
        let mut e = HookEnv::new();
        e.set(
            "target_id",
            "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ApiManagement/service/t",
        );
        e
    }

    #[tokio::test]
    async fn a_passing_hook_captures_output_and_sees_drsync_variables() {
        let spec = hook(
            HookCommand::Shell(
                "echo \"$DRSYNC_PHASE $DRSYNC_HOOK_WHEN $DRSYNC_TARGET_ID\"; echo oops >&2".into(),
            ),
            None,
        );
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            None,
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Passed, "{r:?}");
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(
            r.stdout,
            "restore after /subscriptions/x/resourceGroups/rg/providers/Microsoft.ApiManagement/service/t\n"
        );
        assert_eq!(r.stderr, "oops\n");
        assert_eq!(r.name, "after-restore");
    }

    #[tokio::test]
    async fn secrets_in_drsyncs_environment_do_not_reach_hooks() {
        // `cargo test` runs this process with CARGO_* variables set; a hook must not see them,
        // just as it must not see AZURE_CLIENT_SECRET in production.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
        let spec = hook(HookCommand::Argv(vec!["env".into()]), None);
        let mut s = spec.clone();
        s.env.insert("EXTRA".into(), "literal".into());
        let r = run_hook(&s, &env(), Phase::Restore, HookWhen::After, None, &clock()).await;
        assert_eq!(r.status, Status::Passed, "{r:?}");
        for line in r.stdout.lines() {
            let key = line.split('=').next().unwrap();
            assert!(
                key.starts_with("DRSYNC_") || key == "EXTRA" || INHERITED_VARIABLES.contains(&key)
                    // Some shells/env implementations add these themselves.
                    || key == "PWD" || key == "SHLVL" || key == "_",
                "unexpected variable {key}"
            );
        }
        assert!(r.stdout.contains("EXTRA=literal"));
        assert!(!r.stdout.contains("CARGO_PKG_NAME"));
    }

    #[tokio::test]
    async fn hooks_run_in_the_given_directory_and_an_empty_one_means_the_current() {
        let dir = tempfile::tempdir().unwrap();
        let spec = hook(HookCommand::Shell("pwd".into()), None);
        let path = dir.path().to_path_buf();
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            Some(&path),
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Passed, "{r:?}");
        let reported = std::fs::canonicalize(r.stdout.trim()).unwrap();
        assert_eq!(reported, std::fs::canonicalize(dir.path()).unwrap());
        let empty = PathBuf::new();
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            Some(&empty),
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Passed, "{r:?}");
        let gone = dir.path().join("missing");
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            Some(&gone),
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Failed);
        assert!(
            r.message.unwrap().contains("missing"),
            "the message names the directory"
        );
    }

    #[tokio::test]
    async fn a_failing_hook_fails_with_its_status() {
        let spec = hook(HookCommand::Shell("echo no dns >&2; exit 3".into()), None);
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            None,
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.message.as_deref(), Some("exited with status 3"));
        assert_eq!(r.stderr, "no dns\n");
    }

    #[tokio::test]
    async fn a_hook_that_outlives_its_timeout_is_killed_and_fails() {
        let spec = hook(
            HookCommand::Shell("echo started; sleep 30; echo never".into()),
            Some("300ms"),
        );
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            None,
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Failed);
        assert!(r.timed_out);
        assert_eq!(r.stdout, "started\n");
        assert!(r.message.unwrap().starts_with("timed out after 300ms"));
    }

    #[tokio::test]
    async fn a_missing_program_fails_clearly() {
        let spec = hook(
            HookCommand::Argv(vec!["/nonexistent/drsync-hook".into()]),
            None,
        );
        let r = run_hook(
            &spec,
            &env(),
            Phase::Restore,
            HookWhen::After,
            None,
            &clock(),
        )
        .await;
        assert_eq!(r.status, Status::Failed);
        assert!(
            r.message
                .unwrap()
                .starts_with("could not start `/nonexistent/drsync-hook`")
        );
    }

    #[test]
    fn hooks_files_parse_and_are_checked() {
        let text = r#"
            [[hooks]]
            name = "switch-dns"
            phase = "promote"
            when = "after"
            command = ["./switch-dns.sh", "--to", "neu"]
            timeout = "2m"
            env = { ZONE = "contoso.com" }
            kinds = ["failover"]

            [[hooks]]
            phase = "verify"
            when = "after"
            command = "curl -fsS $DRSYNC_TARGET_GATEWAY_URL/status-0123456789abcdef"
        "#;
        let f = HooksFile::parse(text, "hooks.toml").unwrap();
        assert_eq!(f.hooks.len(), 2);
        assert_eq!(f.hooks[0].timeout().unwrap(), Duration::from_secs(120));
        assert!(f.hooks[0].applies(DrillKind::Failover, "e", Phase::Promote, HookWhen::After));
        assert!(!f.hooks[0].applies(DrillKind::Drill, "e", Phase::Promote, HookWhen::After));
        assert_eq!(f.hooks[1].timeout().unwrap(), DEFAULT_HOOK_TIMEOUT);

        let check = |text: &str, want: &str| {
            let e = HooksFile::parse(text, "h.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        check(
            "[[hooks]]\nphase='restore'\nwhen='after'\ncommand='x'\ntimeout='soon'",
            "timeout `soon`",
        );
        check(
            "[[hooks]]\nphase='restore'\nwhen='after'\ncommand='x'\ntimeout='0s'",
            "more than zero",
        );
        check(
            "[[hooks]]\nphase='restore'\nwhen='after'\ncommand='  '",
            "command is empty",
        );
        check(
            "[[hooks]]\nphase='restore'\nwhen='after'\ncommand=[]",
            "command is empty",
        );
        check(
            "[[hooks]]\nphase='restore'\nwhen='after'\ncommand='x'\nenv={DRSYNC_X='y'}",
            "env key `DRSYNC_X`",
        );
        check(
            "[[hooks]]\nphase='teleport'\nwhen='after'\ncommand='x'",
            "h.toml",
        );
        check(
            "[[hooks]]\nphase='restore'\nwhen='after'\ncommand='x'\nretries=3",
            "retries",
        );
    }
}
