//! Test support for the emulator: start one in-process on `127.0.0.1:0` with a test
//! configuration (an app registration, two local-directory storage accounts, short durations),
//! call ARM with a valid token, seed services, read the request log, and provide the Python SDK
//! virtualenv and the shared spec directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use drsync_core::{Clock, Secret};
pub use drsync_emulator::{
    AppRegistration, Emulator, EmulatorConfig, EmulatorState, FaultConfig, RequestRecord,
    ServiceSeed, StorageAccountConfig, StorageBackend, UserAssignedIdentity,
};
use serde_json::Value;

/// The test subscription.
pub const SUB: &str = "11111111-2222-3333-4444-555555555555";
/// The test resource group.
pub const RG: &str = "rg-apim";
/// The tenant of the test app registration.
pub const TENANT: &str = "contoso.onmicrosoft.com";
/// The test app's client id.
pub const CLIENT_ID: &str = "0a0a0a0a-1111-2222-3333-444444444444";
/// The test app's client secret (a test value).
pub const CLIENT_SECRET: &str = "test-client-secret-value";
/// Storage account in North Europe.
pub const ACCOUNT: &str = "drsyncneu";
/// Its key (a test value).
pub const ACCOUNT_KEY: &str = "bmV1LWtleS1mb3ItdGVzdHM=";
/// Storage account in West Europe.
pub const ACCOUNT_WEU: &str = "drsyncweu";
/// Its key (a test value).
pub const ACCOUNT_WEU_KEY: &str = "d2V1LWtleS1mb3ItdGVzdHM=";
/// The newest api-version.
pub const API: &str = "2024-05-01";

/// A test configuration whose storage accounts live under `dir`. Durations at time scale 1.0
/// are backup 300 s and restore 1800 s; `time_scale` 0.001 makes them 0.3 s and 1.8 s.
pub fn test_config(dir: &Path, time_scale: f64) -> EmulatorConfig {
    EmulatorConfig {
        time_scale,
        apps: vec![AppRegistration {
            tenant: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: Secret::new(CLIENT_SECRET),
        }],
        storage_accounts: vec![
            StorageAccountConfig {
                name: ACCOUNT.into(),
                region: "northeurope".into(),
                key: Secret::new(ACCOUNT_KEY),
                backend: StorageBackend::LocalDir {
                    path: dir.join(ACCOUNT),
                },
                granted_identities: Vec::new(),
            },
            StorageAccountConfig {
                name: ACCOUNT_WEU.into(),
                region: "westeurope".into(),
                key: Secret::new(ACCOUNT_WEU_KEY),
                backend: StorageBackend::LocalDir {
                    path: dir.join(ACCOUNT_WEU),
                },
                granted_identities: Vec::new(),
            },
        ],
        ..EmulatorConfig::default()
    }
}

/// A running test emulator with a valid ARM token and an HTTP client.
#[derive(Debug)]
pub struct TestEmulator {
    /// The emulator.
    pub emu: Emulator,
    /// The directory holding the storage accounts (deleted on drop).
    pub dir: tempfile::TempDir,
    /// A valid ARM bearer token (one hour).
    pub token: String,
    /// The HTTP client.
    pub http: reqwest::Client,
}

impl TestEmulator {
    /// Starts with [`test_config`] at `time_scale`.
    pub async fn start(time_scale: f64) -> anyhow::Result<Self> {
        Self::start_with(|c| c.time_scale = time_scale).await
    }

    /// Starts with [`test_config`] changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut EmulatorConfig)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path(), 0.001);
        tweak(&mut config);
        let emu = Emulator::start(config).await?;
        Self::finish(emu, dir)
    }

    /// Starts with [`test_config`] changed by `tweak`, on the given clock.
    pub async fn start_with_clock(
        clock: Arc<dyn Clock>,
        tweak: impl FnOnce(&mut EmulatorConfig),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = test_config(dir.path(), 1.0);
        tweak(&mut config);
        let emu = Emulator::start_with_clock(config, clock).await?;
        Self::finish(emu, dir)
    }

    fn finish(emu: Emulator, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let token = emu
            .mint_token(Duration::from_secs(3600))
            .token
            .expose()
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Self {
            emu,
            dir,
            token,
            http,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        self.emu.base_url()
    }

    /// The state handle.
    pub fn state(&self) -> &EmulatorState {
        self.emu.state()
    }

    /// A fresh token (after the clock was advanced past the old one).
    pub fn refresh_token(&mut self) {
        self.token = self
            .emu
            .mint_token(Duration::from_secs(3600))
            .token
            .expose()
            .to_owned();
    }

    /// The resource path of a service in [`SUB`]/[`RG`].
    pub fn service_path(name: &str) -> String {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{name}"
        )
    }

    /// Seeds a Premium service with the sample configuration in `location`.
    pub fn seed(&self, name: &str, location: &str) -> anyhow::Result<String> {
        Ok(self
            .state()
            .add_service(ServiceSeed::new(SUB, RG, name, location).with_sample_config())?)
    }

    /// Seeds a service built by the caller.
    pub fn seed_with(&self, seed: ServiceSeed) -> anyhow::Result<String> {
        Ok(self.state().add_service(seed)?)
    }

    /// An authenticated ARM request to `path` (with `?api-version=2024-05-01` appended when
    /// `path` has no query).
    pub fn arm(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base())
        };
        let url = if url.contains('?') {
            url
        } else {
            format!("{url}?api-version={API}")
        };
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// GET, returning status and JSON body (Null when empty).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.arm(reqwest::Method::GET, path).send().await?;
        Ok((r.status().as_u16(), body_json(r).await?))
    }

    /// Starts a backup or restore (`op` = `backup` | `restore`) of service `name` with `body`;
    /// returns the response.
    pub async fn post_op(
        &self,
        name: &str,
        op: &str,
        body: &Value,
    ) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .arm(
                reqwest::Method::POST,
                &format!("{}/{op}", Self::service_path(name)),
            )
            .json(body)
            .send()
            .await?)
    }

    /// Polls a `Location` URL until it stops answering 202 (sleeping `retry-after-ms`); returns
    /// the final status and body.
    pub async fn poll_until_done(&self, location: &str) -> anyhow::Result<(u16, Value)> {
        let mut url = location.to_owned();
        for _ in 0..400 {
            let r = self.arm(reqwest::Method::GET, &url).send().await?;
            if r.status().as_u16() != 202 {
                let status = r.status().as_u16();
                return Ok((status, body_json(r).await?));
            }
            if let Some(l) = r.headers().get("location") {
                url = l.to_str()?.to_owned();
            }
            let ms: u64 = header(&r, "retry-after-ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms.min(500))).await;
        }
        bail!("operation at {location} did not finish")
    }

    /// Runs a backup or restore to completion; returns the final status and body.
    pub async fn run_op(&self, name: &str, op: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self.post_op(name, op, body).await?;
        let status = r.status().as_u16();
        if status != 202 {
            return Ok((status, body_json(r).await?));
        }
        let location = header(&r, "location").context("202 without Location")?;
        self.poll_until_done(&location).await
    }

    /// The structured request log, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.emu.request_log()
    }

    /// How many logged requests were of `kind` (`backup-post`, `poll`, ...).
    pub fn count(&self, kind: &str) -> usize {
        self.emu
            .request_log()
            .iter()
            .filter(|r| r.kind == kind)
            .count()
    }

    /// Advances the emulator clock.
    pub fn advance(&self, secs: u64) {
        self.state().advance_clock(Duration::from_secs(secs));
    }
}

/// A header's value as a string.
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The JSON body, or Null when empty.
pub async fn body_json(r: reqwest::Response) -> anyhow::Result<Value> {
    let bytes = r.bytes().await?;
    if bytes.is_empty() {
        Ok(Value::Null)
    } else {
        Ok(serde_json::from_slice(&bytes).context("body is not JSON")?)
    }
}

/// A backup/restore body with an access key.
pub fn access_key_body(account: &str, key: &str, container: &str, blob: &str) -> Value {
    serde_json::json!({"storageAccount": account, "containerName": container, "backupName": blob,
                       "accessType": "AccessKey", "accessKey": key})
}

/// A backup/restore body with the system-assigned identity.
pub fn identity_body(account: &str, container: &str, blob: &str) -> Value {
    serde_json::json!({"storageAccount": account, "containerName": container, "backupName": blob,
                       "accessType": "SystemAssignedManagedIdentity"})
}

/// `../shared` beside the repository (`/work/shared` on a developer machine, `../shared` in
/// CI): the spec copies and PROTOCOL.md. Fails clearly when it is missing.
pub fn shared_dir() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [manifest.join("../../shared"), manifest.join("../shared")];
    for c in &candidates {
        if c.join("azure-rest-api-specs").is_dir() {
            return Ok(c.canonicalize()?);
        }
    }
    bail!(
        "the shared directory with azure-rest-api-specs/ was not found (looked at {}); it must sit beside the repository",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The spec's 2024-05-01 examples directory.
pub fn spec_examples() -> anyhow::Result<PathBuf> {
    let dir = shared_dir()?.join("azure-rest-api-specs/stable/2024-05-01/examples");
    anyhow::ensure!(dir.is_dir(), "spec examples missing at {}", dir.display());
    Ok(dir)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

static VENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Python packages the SDK conformance test needs.
pub const PYTHON_PACKAGES: [&str; 2] = ["azure-mgmt-apimanagement", "azure-core"];

/// A virtualenv under `target/test-tools/venv` with `azure-mgmt-apimanagement` installed;
/// created once (a lock directory guards against parallel test threads and processes).
/// Returns the venv's python interpreter.
pub async fn python_venv() -> anyhow::Result<PathBuf> {
    let _guard = VENV_LOCK.lock().await;
    let tools = target_dir().join("test-tools");
    let venv = tools.join("venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".drsync-ready");
    if ready.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(&tools)?;
    let lock = tools.join("venv.lock");
    let mut waited = 0;
    loop {
        match std::fs::create_dir(&lock) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if ready.exists() {
                    return Ok(python);
                }
                // A lock older than ten minutes belongs to a process that died.
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(600));
                if stale {
                    let _ = std::fs::remove_dir(&lock);
                    continue;
                }
                waited += 1;
                anyhow::ensure!(waited < 3000, "timed out waiting for {}", lock.display());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("cannot create the venv lock"),
        }
    }
    let result = async {
        if ready.exists() {
            return Ok(());
        }
        run_tool(
            tokio::process::Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg("--clear")
                .arg(&venv),
        )
        .await?;
        run_tool(
            tokio::process::Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PYTHON_PACKAGES),
        )
        .await?;
        std::fs::write(&ready, PYTHON_PACKAGES.join("\n"))?;
        anyhow::Ok(())
    }
    .await;
    let _ = std::fs::remove_dir(&lock);
    result.map(|()| python)
}

async fn run_tool(cmd: &mut tokio::process::Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
