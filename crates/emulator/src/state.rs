//! The emulator's shared state and the in-process handle to it ([`EmulatorState`]).
//!
//! One lock guards everything mutable; nothing awaits while holding it (blob I/O happens
//! outside, see `ops`). The emulator clock is the injected `Clock` plus an offset that the
//! control API advances.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use drsync_arm_client::blob::{AzureBlobStore, BlobAuth, BlobStore, LocalDirStore};
use drsync_core::{Clock, Region, Secret, SkuTier, SubscriptionId, Timestamp};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::Error;
use crate::config::{EmulatorConfig, FaultConfig, Seed, ServiceSeed, StorageBackend};
use crate::model::{
    Configuration, Operation, ProvisioningState, RequestRecord, STATE_FORMAT, STATE_FORMAT_VERSION,
    Service, ServiceKey, StateDump,
};
use crate::throttle::SubscriptionBuckets;

/// The request log keeps at most this many entries (the oldest tenth is dropped when full).
pub(crate) const MAX_LOG: usize = 100_000;

/// Who a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audience {
    /// `https://management.azure.com/`
    Arm,
    /// Anything else (storage, graph, ...): ARM refuses it.
    Other(String),
}

/// An issued token.
#[derive(Debug, Clone)]
pub(crate) struct TokenInfo {
    pub audience: Audience,
    pub expires_at: Timestamp,
}

/// A storage account as the emulator knows it.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub region: Region,
    pub key: Secret,
    pub store: Arc<dyn BlobStore>,
    pub granted: Vec<String>,
}

/// Everything mutable.
#[derive(Debug)]
pub(crate) struct Inner {
    pub offset: chrono::Duration,
    pub services: BTreeMap<ServiceKey, Service>,
    pub operations: BTreeMap<String, Operation>,
    pub tokens: HashMap<String, TokenInfo>,
    pub buckets: HashMap<String, SubscriptionBuckets>,
    pub faults: FaultConfig,
    pub log: Vec<RequestRecord>,
    pub seq: u64,
    pub rng: StdRng,
    pub grants: BTreeMap<String, Vec<String>>,
}

/// The shared application: immutable configuration plus the locked state.
#[derive(Debug)]
pub(crate) struct App {
    pub config: EmulatorConfig,
    pub clock: Arc<dyn Clock>,
    pub accounts: BTreeMap<String, Account>,
    pub inner: Mutex<Inner>,
    /// Serializes writes of `config.state_file`, so an older dump never replaces a newer one.
    pub persisting: Mutex<()>,
    /// Held while due operations are completed, so a request that settles first waits for a
    /// completion the ticker already started (otherwise it would see `Completing` and answer
    /// 202 after the operation's end time).
    pub settling: tokio::sync::Mutex<()>,
}

impl App {
    pub fn new(config: EmulatorConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        config.validate()?;
        let mut accounts = BTreeMap::new();
        for a in &config.storage_accounts {
            let store: Arc<dyn BlobStore> = match &a.backend {
                StorageBackend::LocalDir { path } => {
                    Arc::new(LocalDirStore::new(a.name.clone(), path.clone()))
                }
                StorageBackend::AzureBlob {
                    endpoint,
                    account,
                    key,
                } => {
                    let url = url::Url::parse(endpoint).map_err(|e| {
                        Error::Config(format!(
                            "storage account `{}`: endpoint `{endpoint}` is not a URL: {e}",
                            a.name
                        ))
                    })?;
                    let auth = BlobAuth::SharedKey(key.clone().unwrap_or_else(|| a.key.clone()));
                    let name = account.clone().unwrap_or_else(|| a.name.clone());
                    let store = AzureBlobStore::new(name, url, auth)
                        .map_err(|e| Error::Config(format!("storage account `{}`: {e}", a.name)))?;
                    Arc::new(store)
                }
                StorageBackend::Store(s) => s.clone(),
            };
            let region = Region::parse(&a.region).map_err(|e| Error::Config(e.to_string()))?;
            accounts.insert(
                a.name.clone(),
                Account {
                    region,
                    key: a.key.clone(),
                    store,
                    granted: a.granted_identities.clone(),
                },
            );
        }
        let inner = Inner {
            offset: chrono::Duration::zero(),
            services: BTreeMap::new(),
            operations: BTreeMap::new(),
            tokens: HashMap::new(),
            buckets: HashMap::new(),
            faults: config.faults.clone(),
            log: Vec::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(config.seed),
            grants: BTreeMap::new(),
        };
        let app = Self {
            config,
            clock,
            accounts,
            inner: Mutex::new(inner),
            persisting: Mutex::new(()),
            settling: tokio::sync::Mutex::new(()),
        };
        let seeds = app.config.services.clone();
        {
            let mut inner = app.inner.lock();
            let now = app.clock.now();
            for s in &seeds {
                inner.add_service(s, now)?;
            }
            app.register_static_tokens(&mut inner, now);
        }
        Ok(app)
    }

    /// The emulator clock.
    pub fn now_with(&self, inner: &Inner) -> Timestamp {
        self.clock.now() + inner.offset
    }

    pub fn now(&self) -> Timestamp {
        let inner = self.inner.lock();
        self.now_with(&inner)
    }

    /// Whether `principal` holds the data role on `account` (static config or granted at run time).
    pub fn granted(&self, inner: &Inner, account: &str, principals: &[String]) -> bool {
        let stat = self
            .accounts
            .get(account)
            .map(|a| a.granted.as_slice())
            .unwrap_or(&[]);
        let dynamic = inner.grants.get(account).map(Vec::as_slice).unwrap_or(&[]);
        stat.iter()
            .chain(dynamic)
            .any(|g| principals.iter().any(|p| p.eq_ignore_ascii_case(g)))
    }

    fn register_static_tokens(&self, inner: &mut Inner, now: Timestamp) {
        for t in &self.config.static_tokens {
            let secs = i64::try_from(t.lifetime_secs)
                .unwrap_or(i64::MAX)
                .min(100 * 365 * 86_400);
            inner.tokens.insert(
                t.token.expose().to_owned(),
                TokenInfo {
                    audience: Audience::Arm,
                    expires_at: now + chrono::Duration::seconds(secs),
                },
            );
        }
    }

    pub fn mint_token(
        &self,
        inner: &mut Inner,
        audience: Audience,
        lifetime: chrono::Duration,
    ) -> (Secret, Timestamp) {
        let mut raw = [0u8; 32];
        raw[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        raw[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let token = format!(
            "emu.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let expires_at = self.now_with(inner) + lifetime;
        inner.tokens.insert(
            token.clone(),
            TokenInfo {
                audience,
                expires_at,
            },
        );
        (Secret::new(token), expires_at)
    }
}

impl Inner {
    /// A GUID from the seeded generator.
    pub fn guid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    /// Creates (or replaces) a service from a seed, `Succeeded` at once.
    pub fn add_service(&mut self, seed: &ServiceSeed, now: Timestamp) -> Result<ServiceKey, Error> {
        let bad = |m: String| Error::Seed(format!("service `{}`: {m}", seed.name));
        let sub = SubscriptionId::parse(&seed.subscription).map_err(|e| bad(e.to_string()))?;
        drsync_core::service::validate_resource_group(&seed.resource_group)
            .map_err(|e| bad(e.to_string()))?;
        drsync_core::service::validate_service_name(&seed.name).map_err(|e| bad(e.to_string()))?;
        let region = Region::parse(&seed.location).map_err(|e| bad(e.to_string()))?;
        let sku = SkuTier::parse(&seed.sku).map_err(|e| bad(e.to_string()))?;
        let mut config = if seed.sample_config {
            Configuration::sample()
        } else {
            Configuration::default()
        };
        config.apis.extend(seed.apis.clone());
        config.products.extend(seed.products.clone());
        config.named_values.extend(seed.named_values.clone());
        let principal_id = if seed.system_assigned_identity {
            Some(seed.principal_id.clone().unwrap_or_else(|| self.guid()))
        } else {
            None
        };
        let service = Service {
            subscription: sub.as_str().to_owned(),
            resource_group: seed.resource_group.clone(),
            name: seed.name.clone(),
            region,
            sku,
            capacity: seed.capacity,
            principal_id,
            user_assigned: seed.user_assigned_identities.clone(),
            publisher_email: seed.publisher_email.clone(),
            publisher_name: seed.publisher_name.clone(),
            tags: seed.tags.clone(),
            state: ProvisioningState::Succeeded,
            created_at: now,
            modified_at: now,
            configuration_change_date: now,
            version: 1,
            custom_hostnames: Vec::new(),
            config,
            active_operation: None,
            last_operation_id: None,
        };
        let key = service.key();
        self.services.insert(key.clone(), service);
        Ok(key)
    }

    pub fn record(&mut self, mut rec: RequestRecord) {
        self.seq += 1;
        rec.seq = self.seq;
        if self.log.len() >= MAX_LOG {
            self.log.drain(..MAX_LOG / 10);
        }
        self.log.push(rec);
    }
}

impl App {
    /// Writes the state to `config.state_file`, if one is set: a temporary file renamed into
    /// place, so a reader (or the next run) sees either the old dump or the new one.
    pub fn persist(self: &Arc<Self>) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let _guard = self.persisting.lock();
        let json = EmulatorState { app: self.clone() }.dump_state_json();
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot persist the emulator state: {e}");
        }
    }
}

/// An in-process handle to a running emulator's state: seed, inspect, advance the clock,
/// set faults, read the request log, mint tokens, dump and load.
#[derive(Debug, Clone)]
pub struct EmulatorState {
    pub(crate) app: Arc<App>,
}

/// A token minted by [`EmulatorState::mint_token`].
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The bearer token.
    pub token: Secret,
    /// When it expires (emulator clock).
    pub expires_on: Timestamp,
}

impl EmulatorState {
    /// The emulator clock: the injected clock plus the advanced offset.
    pub fn now(&self) -> Timestamp {
        self.app.now()
    }

    /// Moves the emulator clock forward (running operations whose end passes complete).
    pub fn advance_clock(&self, by: std::time::Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::days(365 * 100));
        self.app.inner.lock().offset += by;
    }

    /// Adds services (replacing any with the same id).
    pub fn seed(&self, seed: &Seed) -> Result<(), Error> {
        let mut inner = self.app.inner.lock();
        let now = self.app.now_with(&inner);
        for s in &seed.services {
            inner.add_service(s, now)?;
        }
        Ok(())
    }

    /// Adds one service; returns its ARM resource id.
    pub fn add_service(&self, seed: ServiceSeed) -> Result<String, Error> {
        let mut inner = self.app.inner.lock();
        let now = self.app.now_with(&inner);
        let key = inner.add_service(&seed, now)?;
        Ok(inner.services[&key].id())
    }

    /// A service as ARM would return it (`GET`), or `None`.
    pub fn service_json(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let inner = self.app.inner.lock();
        inner
            .services
            .get(&ServiceKey::new(subscription, resource_group, name))
            .map(|s| s.to_json(&self.app.config.tenant_id))
    }

    /// A service's configuration (APIs, products, named values), or `None`.
    pub fn configuration(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
    ) -> Option<Configuration> {
        let inner = self.app.inner.lock();
        inner
            .services
            .get(&ServiceKey::new(subscription, resource_group, name))
            .map(|s| s.config.clone())
    }

    /// Replaces a service's configuration directly (moves `configurationChangeDate` and the etag).
    pub fn set_configuration(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        config: Configuration,
    ) -> Result<(), Error> {
        let mut inner = self.app.inner.lock();
        let now = self.app.now_with(&inner);
        let svc = inner
            .services
            .get_mut(&ServiceKey::new(subscription, resource_group, name))
            .ok_or_else(|| Error::Seed(format!("no service `{name}` in `{resource_group}`")))?;
        svc.config = config;
        svc.config_changed(now);
        Ok(())
    }

    /// Removes every service, operation, token, bucket, grant and log entry; faults go back to
    /// the configured ones and the clock offset to zero. Configured services are seeded again.
    pub fn reset(&self) -> Result<(), Error> {
        let mut inner = self.app.inner.lock();
        inner.offset = chrono::Duration::zero();
        inner.services.clear();
        inner.operations.clear();
        inner.tokens.clear();
        inner.buckets.clear();
        inner.faults = self.app.config.faults.clone();
        inner.log.clear();
        inner.seq = 0;
        inner.grants.clear();
        inner.rng = StdRng::seed_from_u64(self.app.config.seed);
        let now = self.app.now_with(&inner);
        for s in &self.app.config.services {
            inner.add_service(s, now)?;
        }
        self.app.register_static_tokens(&mut inner, now);
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> FaultConfig {
        self.app.inner.lock().faults.clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: FaultConfig) -> Result<(), Error> {
        faults.validate()?;
        self.app.inner.lock().faults = faults;
        Ok(())
    }

    /// The structured request log, oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.app.inner.lock().log.clone()
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        self.app.inner.lock().log.clear();
    }

    /// Mints an ARM bearer token valid for `lifetime` on the emulator clock.
    pub fn mint_token(&self, lifetime: std::time::Duration) -> MintedToken {
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(3650));
        let mut inner = self.app.inner.lock();
        let (token, expires_on) = self.app.mint_token(&mut inner, Audience::Arm, lifetime);
        MintedToken { token, expires_on }
    }

    /// Registers a bearer token of the caller's choosing, valid for `lifetime` (emulator clock):
    /// for `static_token` credentials whose value is fixed before the emulator starts.
    pub fn register_token(
        &self,
        token: &Secret,
        lifetime: std::time::Duration,
    ) -> Result<(), Error> {
        if token.expose().trim().is_empty() {
            return Err(Error::Seed("a registered token must not be empty".into()));
        }
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(3650));
        let mut inner = self.app.inner.lock();
        let expires_at = self.app.now_with(&inner) + lifetime;
        inner.tokens.insert(
            token.expose().to_owned(),
            TokenInfo {
                audience: Audience::Arm,
                expires_at,
            },
        );
        Ok(())
    }

    /// Grants `principal` (a service resource id, principal id or user-assigned client id)
    /// `Storage Blob Data Contributor` on `account`.
    pub fn grant(&self, account: &str, principal: &str) -> Result<(), Error> {
        if !self.app.accounts.contains_key(account) {
            return Err(Error::Seed(format!(
                "no storage account `{account}` is configured"
            )));
        }
        self.app
            .inner
            .lock()
            .grants
            .entry(account.to_owned())
            .or_default()
            .push(principal.to_owned());
        Ok(())
    }

    /// The blob store of a configured storage account.
    pub fn store(&self, account: &str) -> Option<Arc<dyn BlobStore>> {
        self.app.accounts.get(account).map(|a| a.store.clone())
    }

    /// The persistent state as JSON-serializable data.
    pub fn dump_state(&self) -> StateDump {
        let inner = self.app.inner.lock();
        StateDump {
            format: STATE_FORMAT.into(),
            format_version: STATE_FORMAT_VERSION,
            clock_offset_ms: inner.offset.num_milliseconds(),
            services: inner.services.values().cloned().collect(),
            operations: inner.operations.values().cloned().collect(),
            grants: inner.grants.clone(),
        }
    }

    /// Replaces the persistent state with a dump (tokens, buckets and the log are kept).
    pub fn load_state(&self, dump: StateDump) -> Result<(), Error> {
        if dump.format != STATE_FORMAT || dump.format_version != STATE_FORMAT_VERSION {
            return Err(Error::Seed(format!(
                "state dump has format `{}` version {}, expected `{STATE_FORMAT}` version {STATE_FORMAT_VERSION}",
                dump.format, dump.format_version
            )));
        }
        // A service marked busy must name a running operation of its own in the same dump;
        // otherwise it would stay `Updating` (and refuse every management call) forever.
        for svc in &dump.services {
            if let Some(id) = &svc.active_operation {
                let running = dump.operations.iter().any(|o| {
                    &o.id == id
                        && o.service == svc.key()
                        && matches!(
                            o.status,
                            crate::model::OperationStatus::Running
                                | crate::model::OperationStatus::Completing
                        )
                });
                if !running {
                    return Err(Error::Seed(format!(
                        "state dump: service `{}` is busy with operation `{id}`, which the dump does not hold as running",
                        svc.name
                    )));
                }
            }
        }
        let mut inner = self.app.inner.lock();
        inner.offset = chrono::Duration::milliseconds(dump.clock_offset_ms);
        inner.services = dump.services.into_iter().map(|s| (s.key(), s)).collect();
        inner.operations = dump
            .operations
            .into_iter()
            .map(|mut o| {
                // An operation caught mid-completion by a dump is simply still running.
                if o.status == crate::model::OperationStatus::Completing {
                    o.status = crate::model::OperationStatus::Running;
                }
                (o.id.clone(), o)
            })
            .collect();
        inner.grants = dump.grants;
        Ok(())
    }

    /// The state dump as pretty JSON.
    pub fn dump_state_json(&self) -> String {
        serde_json::to_string_pretty(&self.dump_state()).expect("state serializes")
    }

    /// Loads a state dump from JSON.
    pub fn load_state_json(&self, json: &str) -> Result<(), Error> {
        let dump: StateDump = serde_json::from_str(json)
            .map_err(|e| Error::Seed(format!("invalid state dump: {e}")))?;
        self.load_state(dump)
    }
}
