//! Finding and running the real `drsync` binary.
//!
//! The binary is, in this order: the path in `DRSYNC_BIN`; the `drsync` built next to the
//! running test executable (`target/<profile>/deps/e2e-…` → `target/<profile>/drsync`), which
//! `cargo test --workspace` always builds fresh because `crates/cli/tests` needs it; or, when
//! neither exists (for example `cargo test -p drsync-tests` on a clean tree), a binary built
//! once with `cargo build -p drsync` in the same profile.
//!
//! Running `cargo test -p drsync-tests` alone does not rebuild an existing binary: after
//! changing the CLI, run `cargo test --workspace` or `cargo build -p drsync` first.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file under the repository root, such as `config/demo.toml`.
pub fn repo_path(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// The `drsync` binary the tests run.
pub fn drsync_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(locate)
}

fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os("DRSYNC_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "DRSYNC_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let candidate = profile_dir.join(format!("drsync{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        return candidate;
    }
    build(profile_dir);
    assert!(
        candidate.is_file(),
        "`cargo build -p drsync` succeeded but {} does not exist",
        candidate.display()
    );
    candidate
}

/// Builds the binary into `profile_dir` (`target/debug` or `target/release`).
fn build(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "drsync", "--bin", "drsync"])
        .current_dir(repo_root());
    if profile_dir.file_name() == Some(OsStr::new("release")) {
        cmd.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd.status().expect("run cargo to build the drsync binary");
    assert!(status.success(), "`cargo build -p drsync` failed: {status}");
}

/// A `Command` for the binary with logging left at its defaults (`RUST_LOG` removed) and the
/// repository root as working directory. Add arguments, environment and I/O as needed.
pub fn drsync() -> Command {
    let mut cmd = Command::new(drsync_path());
    cmd.env_remove("RUST_LOG")
        .current_dir(repo_root())
        .stdin(Stdio::null());
    cmd
}

/// What one run of the binary produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs the binary with `args` from the repository root and waits for it.
pub fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(drsync().args(args))
}

/// Runs a prepared command (see [`drsync`]) and waits for it.
pub fn run_command(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("start the drsync binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
