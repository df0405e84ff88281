//! Test support: Azurite, Microsoft's storage emulator, from its npm package.
//!
//! [`Azurite::start`] installs the `azurite` package into `target/test-tools` the first time
//! (idempotent; a file lock keeps parallel test threads and processes from installing twice),
//! then starts `azurite-blob` on a free loopback port with its data in a fresh temporary
//! directory, waits until it accepts connections, and kills it when dropped.
//!
//! Azurite's well-known development account and key are [`ACCOUNT`] and [`KEY`]; its blob
//! endpoint is path-style: `http://127.0.0.1:{port}/devstoreaccount1`.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Azurite's development storage account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's development account key (public, documented by Microsoft; not a secret).
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The npm package installed.
const PACKAGE: &str = "azurite@3";
/// How long Azurite may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's `target/test-tools` directory.
fn tools_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("test-tools")
}

fn azurite_bin(dir: &Path) -> PathBuf {
    dir.join("node_modules/.bin/azurite-blob")
}

/// Installs Azurite into `target/test-tools` unless it is there already, and returns the path
/// of `azurite-blob`.
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    let dir = tools_dir();
    let bin = azurite_bin(&dir);
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Blocks while another thread or process installs; released when `_lock` is dropped.
    let _lock = InstallLock::acquire(&dir.join(".azurite-install.lock"))?;
    if bin.exists() {
        return Ok(bin);
    }
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&dir)
        .arg(PACKAGE)
        .stdin(Stdio::null())
        .output()
        .context("running `npm install azurite` (is Node.js with npm installed?)")?;
    if !out.status.success() {
        bail!(
            "`npm install {PACKAGE}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if !bin.exists() {
        bail!(
            "`npm install {PACKAGE}` succeeded but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}

/// A lock directory (creating a directory is atomic): held by one installer at a time across
/// threads and processes; a lock older than ten minutes belongs to a dead process and is broken.
struct InstallLock(PathBuf);

impl InstallLock {
    fn acquire(path: &Path) -> anyhow::Result<Self> {
        for _ in 0..6000 {
            match std::fs::create_dir(path) {
                Ok(()) => return Ok(Self(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(600));
                    if stale {
                        let _ = std::fs::remove_dir(path);
                    } else {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("timed out waiting for {}", path.display())
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A running Azurite blob service, killed on drop.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Azurite {
    /// Installs (if needed) and starts Azurite on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        let bin = ensure_installed()?;
        let mut last_err = None;
        // The port is free when chosen but could be taken before Azurite binds it: retry.
        for _ in 0..3 {
            match Self::start_once(&bin) {
                Ok(a) => return Ok(a),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn start_once(bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating Azurite's data directory")?;
        let port = free_port()?;
        let log = File::create(dir.path().join("azurite.log"))?;
        let child = Command::new(bin)
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--location"])
            .arg(dir.path())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut azurite = Self { child, port, dir };
        azurite.wait_until_listening()?;
        Ok(azurite)
    }

    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = START_TIMEOUT.as_millis() / 50;
        for _ in 0..deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("Azurite exited early ({status}): {}", self.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "Azurite did not listen on {addr} within {START_TIMEOUT:?}: {}",
            self.log()
        )
    }

    /// What Azurite printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path-style blob endpoint, `http://127.0.0.1:{port}/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
