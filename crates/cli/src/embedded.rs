//! Embedded mode (`endpoint = "embedded"`): the emulator started in-process on `127.0.0.1:0`.
//!
//! It is seeded from the configuration: every service with its SKU and region and a
//! system-assigned identity, granted `Storage Blob Data Contributor` on every configured storage
//! account (and user-assigned identities for `user_identity` access), sample APIs, products and
//! named values on primaries. Storage accounts are local directories: the configured `dir:`
//! endpoint, or `{state}/embedded-storage/{account}` for any other endpoint, so drsync and the
//! emulator read and write the same files. The emulator's state (services, running operations,
//! clock offset) is kept in `{state}/embedded-emulator.json` between runs, so a second run sees
//! what the first did, and an operation interrupted by a crash is still running on resume.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use drsync_core::config::{Config, Role, StorageEndpoint};
use drsync_core::{Secret, StorageAccess};
use drsync_emulator::{
    Emulator, EmulatorConfig, ServiceSeed, StorageAccountConfig, StorageBackend,
    UserAssignedIdentity,
};

/// The file holding the emulator's state between runs.
pub const STATE_FILE: &str = "embedded-emulator.json";

/// Storage account key used by the embedded emulator when the configuration asks for
/// `account_key` access but the key reference does not resolve (the emulator is local; the
/// key never leaves the process).
const LOCAL_KEY: &str = "ZW1iZWRkZWQtZHJzeW5jLWxvY2FsLWtleS1ub3QtYS1zZWNyZXQ=";

/// A running embedded emulator.
#[derive(Debug)]
pub struct Embedded {
    emulator: Emulator,
    state_file: PathBuf,
    /// Saves are serialized: concurrent steps must not interleave dumps, or an older dump
    /// could replace a newer one.
    saving: parking_lot::Mutex<()>,
}

/// Where the embedded emulator keeps a storage account.
pub fn storage_dir(config: &Config, state_dir: &Path, account: &str, endpoint: &str) -> PathBuf {
    match StorageEndpoint::classify(endpoint) {
        StorageEndpoint::Dir(path) => path,
        _ => {
            let _ = config;
            state_dir.join("embedded-storage").join(account)
        }
    }
}

/// The key the embedded emulator accepts for an account-key storage entry.
pub fn account_key(reference: &drsync_core::SecretRef, base: &Path) -> Secret {
    crate::context::resolve_secret(reference, base).unwrap_or_else(|_| Secret::new(LOCAL_KEY))
}

impl Embedded {
    /// Starts the emulator for `config`, loading the state a previous run left in `state_dir`,
    /// with a last change to the emulator's configuration (the benchmark removes jitter).
    pub async fn start_with(
        config: &Config,
        state_dir: &Path,
        tweak: impl FnOnce(&mut EmulatorConfig),
    ) -> anyhow::Result<Self> {
        let time_scale = config.embedded.map_or(1.0, |e| e.time_scale);
        let mut user_identities = Vec::new();
        let mut storage_accounts = Vec::new();
        let service_ids: Vec<String> = config
            .services
            .iter()
            .map(|s| s.service.resource_id())
            .collect();
        for s in &config.storage {
            let mut granted = service_ids.clone();
            let key = match &s.target.access {
                StorageAccess::AccountKey(r) => account_key(r, config.base_dir()),
                StorageAccess::UserAssignedIdentity { client_id } => {
                    granted.push(client_id.clone());
                    user_identities.push(client_id.clone());
                    Secret::new(LOCAL_KEY)
                }
                StorageAccess::SystemAssignedIdentity => Secret::new(LOCAL_KEY),
            };
            if storage_accounts
                .iter()
                .any(|a: &StorageAccountConfig| a.name == s.target.account)
            {
                continue;
            }
            storage_accounts.push(StorageAccountConfig {
                name: s.target.account.clone(),
                region: s.region.name().to_owned(),
                key,
                backend: StorageBackend::LocalDir {
                    path: storage_dir(config, state_dir, &s.target.account, &s.target.endpoint),
                },
                granted_identities: granted,
            });
        }
        let seeds: Vec<ServiceSeed> = config
            .services
            .iter()
            .map(|s| {
                let mut seed = ServiceSeed::new(
                    s.service.subscription.as_str(),
                    &s.service.resource_group,
                    &s.service.name,
                    s.region.name(),
                )
                .sku(s.sku.tier.as_str(), s.sku.capacity);
                seed.sample_config = s.role == Role::Primary;
                seed.user_assigned_identities = user_identities
                    .iter()
                    .enumerate()
                    .map(|(i, client_id)| UserAssignedIdentity {
                        resource_id: format!(
                            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/drsync-{i}",
                            s.service.subscription, s.service.resource_group
                        ),
                        client_id: client_id.clone(),
                        principal_id: uuid_like(&format!("{}{client_id}", s.service.name)),
                    })
                    .collect();
                seed
            })
            .collect();
        let state_file = state_dir.join(STATE_FILE);
        let emulator_config = EmulatorConfig {
            time_scale,
            // The emulator persists every accepted change before answering, as Azure does, so
            // a drsync crash right after a checkpoint never loses the operation it names.
            state_file: Some(state_file.clone()),
            storage_accounts,
            services: seeds.clone(),
            // Tokens minted for drsync itself last the whole run.
            token_lifetime_secs: 12 * 3600,
            ..EmulatorConfig::default()
        };
        let mut emulator_config = emulator_config;
        tweak(&mut emulator_config);
        let emulator = Emulator::start(emulator_config)
            .await
            .context("cannot start the embedded emulator")?;
        if state_file.is_file() {
            let json = std::fs::read_to_string(&state_file)
                .with_context(|| format!("cannot read `{}`", state_file.display()))?;
            emulator.state().load_state_json(&json).with_context(|| {
                format!(
                    "`{}` is not a usable emulator state; delete it to start afresh",
                    state_file.display()
                )
            })?;
            // Services added to the configuration since the last run.
            for seed in seeds {
                if emulator
                    .state()
                    .service_json(&seed.subscription, &seed.resource_group, &seed.name)
                    .is_none()
                {
                    emulator.state().add_service(seed)?;
                }
            }
        }
        tracing::info!(url = %emulator.base_url(), time_scale, "embedded emulator started");
        Ok(Self {
            emulator,
            state_file,
            saving: parking_lot::Mutex::new(()),
        })
    }

    /// The ARM endpoint (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        self.emulator.base_url()
    }

    /// The emulator's request log (the benchmark counts requests and 429s in it).
    pub fn request_log(&self) -> Vec<drsync_emulator::RequestRecord> {
        self.emulator.request_log()
    }

    /// A bearer token for drsync's own ARM calls.
    pub fn token(&self) -> drsync_emulator::MintedToken {
        self.emulator.mint_token(Duration::from_secs(12 * 3600))
    }

    /// Saves the emulator's state for the next run.
    pub fn save(&self) -> anyhow::Result<()> {
        let _guard = self.saving.lock();
        let json = self.emulator.state().dump_state_json();
        let tmp = self.state_file.with_extension("json.tmp");
        std::fs::write(&tmp, json).with_context(|| format!("cannot write `{}`", tmp.display()))?;
        std::fs::rename(&tmp, &self.state_file)
            .with_context(|| format!("cannot write `{}`", self.state_file.display()))
    }

    /// Saves the state and stops the emulator.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.save()?;
        self.emulator.shutdown().await?;
        Ok(())
    }
}

/// A stable GUID-shaped id derived from `text` (for seeded principal ids).
fn uuid_like(text: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in text.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let s = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}
