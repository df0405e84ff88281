//! The emulator's configuration: identities, storage accounts, limits, durations and faults.
//!
//! Everything here is plain data, deserializable from JSON (the binary's files, the control
//! API) and buildable in code (tests, the embedded mode). Secrets are `drsync_core::Secret`s:
//! they deserialize from plain strings, because an emulator's keys are test values, but they
//! never print.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use drsync_arm_client::blob::BlobStore;
use drsync_core::Secret;
use serde::{Deserialize, Deserializer, Serialize};

/// The tenant id the emulator uses when none is configured.
pub const DEFAULT_TENANT_ID: &str = "00000000-0000-0000-0000-00000000e1e1";

/// The emulator's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Operation durations are multiplied by this (a 30-minute restore takes 3 s at 0.0017).
    pub time_scale: f64,
    /// Lifetime of tokens issued by the token endpoints, in seconds (Entra's default is about
    /// an hour; 3599 is what the v1 endpoint reports).
    pub token_lifetime_secs: u64,
    /// The tenant id stamped into identities and accepted on the token endpoints.
    pub tenant_id: String,
    /// App registrations accepted by the client-credentials token endpoints.
    pub apps: Vec<AppRegistration>,
    /// Whether the IMDS-like managed identity endpoint answers.
    pub managed_identity_endpoint: bool,
    /// Client ids of user-assigned identities the managed identity endpoint will issue for.
    pub managed_identity_client_ids: Vec<String>,
    /// Storage accounts that backups can be written to.
    pub storage_accounts: Vec<StorageAccountConfig>,
    /// ARM throttling limits, per subscription.
    pub throttle: ThrottleConfig,
    /// Base durations of long-running operations.
    pub durations: DurationConfig,
    /// Answer long-running operations with `Azure-AsyncOperation` instead of `Location`.
    pub async_operation_header: bool,
    /// Injected faults.
    pub faults: FaultConfig,
    /// Seed of the emulator's random numbers (jitter, faults, generated ids).
    pub seed: u64,
    /// Items per page of ARM list responses before a `nextLink` is given.
    pub page_size: usize,
    /// Services present at start.
    pub services: Vec<ServiceSeed>,
    /// Bearer tokens accepted by ARM from the start (for `static_token` credentials).
    pub static_tokens: Vec<StaticToken>,
    /// Where to keep the state durably, as Azure does: when set, the state dump is written
    /// here (atomically) before the answer to any request that may have changed it, and after
    /// every operation completes. drsync's embedded mode sets it, so a crash of the drsync
    /// process never loses an operation the emulator has already accepted.
    pub state_file: Option<std::path::PathBuf>,
}

/// A pre-registered ARM bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// The token value.
    #[serde(deserialize_with = "secret_from_string")]
    pub token: Secret,
    /// How long it stays valid from the emulator's start, in seconds.
    pub lifetime_secs: u64,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            token_lifetime_secs: 3599,
            tenant_id: DEFAULT_TENANT_ID.into(),
            apps: Vec::new(),
            managed_identity_endpoint: true,
            managed_identity_client_ids: Vec::new(),
            storage_accounts: Vec::new(),
            throttle: ThrottleConfig::default(),
            durations: DurationConfig::default(),
            async_operation_header: false,
            faults: FaultConfig::default(),
            seed: 0x0d25_c0de,
            page_size: 100,
            state_file: None,
            services: Vec::new(),
            static_tokens: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// Checks values that would make the emulator misbehave.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return bad(format!(
                "time_scale must be a positive number, got {}",
                self.time_scale
            ));
        }
        if self.page_size == 0 {
            return bad("page_size must be at least 1".into());
        }
        if self.token_lifetime_secs == 0 {
            return bad("token_lifetime_secs must be at least 1".into());
        }
        if self
            .static_tokens
            .iter()
            .any(|t| t.token.expose().trim().is_empty())
        {
            return bad("static tokens must not be empty".into());
        }
        self.throttle.validate()?;
        self.durations.validate()?;
        self.faults.validate()?;
        for a in &self.storage_accounts {
            if !drsync_core::storage::valid_account_name(&a.name) {
                return bad(format!(
                    "storage account name `{}` is invalid (3-24 lowercase letters and digits)",
                    a.name
                ));
            }
            drsync_core::Region::parse(&a.region)
                .map_err(|e| crate::Error::Config(e.to_string()))?;
        }
        Ok(())
    }
}

/// An Entra ID app registration (service principal) with a client secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    /// The tenant, as a GUID or a domain name; the token URL's tenant segment must match it
    /// or the emulator's tenant id.
    pub tenant: String,
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    #[serde(deserialize_with = "secret_from_string")]
    pub client_secret: Secret,
}

/// One storage account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageAccountConfig {
    /// The account name (3-24 lowercase letters and digits).
    pub name: String,
    /// The account's region (`northeurope`); an unavailable region makes it unreachable.
    pub region: String,
    /// The account key that `AccessKey` backups must present.
    #[serde(deserialize_with = "secret_from_string")]
    pub key: Secret,
    /// Where the account's blobs live.
    pub backend: StorageBackend,
    /// Identities holding `Storage Blob Data Contributor` on the account: a service's resource
    /// id (its system-assigned identity), a principal id, or a user-assigned client id.
    #[serde(default)]
    pub granted_identities: Vec<String>,
}

/// Where a storage account's blobs live.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StorageBackend {
    /// A local directory holding the account's containers (`drsync_arm_client::blob::LocalDirStore`).
    LocalDir {
        /// The directory.
        path: PathBuf,
    },
    /// An Azure Blob endpoint (Azure Storage or Azurite), through
    /// `drsync_arm_client::blob::AzureBlobStore` with Shared Key authentication.
    AzureBlob {
        /// The blob endpoint: `https://{account}.blob.core.windows.net` or, for Azurite,
        /// `http://127.0.0.1:10000/devstoreaccount1` (plain HTTP only to loopback).
        endpoint: String,
        /// The account name at that endpoint (`devstoreaccount1` for Azurite); defaults to the
        /// emulated account's name.
        #[serde(default)]
        account: Option<String>,
        /// The key that signs requests to that endpoint; defaults to the emulated account's key.
        #[serde(default, deserialize_with = "optional_secret")]
        key: Option<Secret>,
    },
    /// A store built by the caller.
    #[serde(skip)]
    Store(Arc<dyn BlobStore>),
}

/// ARM's token buckets, per subscription.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Read bucket size (Azure: 250).
    pub read_bucket: u32,
    /// Read refill per second (Azure: 25).
    pub read_refill_per_sec: f64,
    /// Write bucket size (Azure: 200).
    pub write_bucket: u32,
    /// Write refill per second (Azure: 10).
    pub write_refill_per_sec: f64,
    /// Delete bucket size (Azure: 200).
    pub delete_bucket: u32,
    /// Delete refill per second (Azure: 10).
    pub delete_refill_per_sec: f64,
}

impl Default for ThrottleConfig {
    /// Azure Resource Manager's documented per-subscription limits (PROTOCOL.md section 4).
    fn default() -> Self {
        Self {
            read_bucket: 250,
            read_refill_per_sec: 25.0,
            write_bucket: 200,
            write_refill_per_sec: 10.0,
            delete_bucket: 200,
            delete_refill_per_sec: 10.0,
        }
    }
}

impl ThrottleConfig {
    fn validate(&self) -> Result<(), crate::Error> {
        let ok = self.read_bucket > 0
            && self.write_bucket > 0
            && self.read_refill_per_sec > 0.0
            && self.write_refill_per_sec > 0.0
            && self.delete_bucket > 0
            && self.delete_refill_per_sec > 0.0;
        if ok {
            Ok(())
        } else {
            Err(crate::Error::Config(
                "throttle buckets and refill rates must be positive".into(),
            ))
        }
    }
}

/// Base durations of long-running operations, in seconds, before the time scale.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurationConfig {
    /// A backup (Azure: "typically minutes").
    pub backup_secs: f64,
    /// A restore (Azure: "30 minutes or more").
    pub restore_secs: f64,
    /// Creating a service with PUT (Azure: 30-45 minutes for Premium).
    pub create_secs: f64,
    /// Changing a service's SKU or capacity with PUT/PATCH.
    pub update_secs: f64,
    /// Jitter: each duration is multiplied by a uniform factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// Refusals found when an operation starts (storage access, SKU mismatch, ...) fail it after
    /// this fraction of its duration.
    pub validation_fraction: f64,
}

impl Default for DurationConfig {
    fn default() -> Self {
        Self {
            backup_secs: 300.0,
            restore_secs: 1800.0,
            create_secs: 2700.0,
            update_secs: 900.0,
            jitter: 0.1,
            validation_fraction: 0.1,
        }
    }
}

impl DurationConfig {
    fn validate(&self) -> Result<(), crate::Error> {
        let all = [
            self.backup_secs,
            self.restore_secs,
            self.create_secs,
            self.update_secs,
        ];
        if all.iter().any(|d| !(d.is_finite() && *d >= 0.0)) {
            return Err(crate::Error::Config(
                "durations must be non-negative numbers of seconds".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) || !(0.0..=1.0).contains(&self.validation_fraction) {
            return Err(crate::Error::Config(
                "jitter must be in [0, 1) and validation_fraction in [0, 1]".into(),
            ));
        }
        Ok(())
    }
}

/// Injected faults. Probabilities are per request (or per operation), in `[0, 1]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability that an ARM request is answered `500 InternalServerError`.
    pub status_500: f64,
    /// Probability that an ARM request is answered `503 ServiceUnavailable`.
    pub status_503: f64,
    /// Probability that an ARM request's connection is dropped without a response.
    pub drop_connection: f64,
    /// Latency added to every ARM and token request, in milliseconds (real time).
    pub latency_ms: u64,
    /// Probability that a backup or restore fails midway (`500` from its operation result).
    pub operation_failure: f64,
    /// The token endpoints (client credentials and managed identity) answer `503`.
    pub token_endpoint_down: bool,
    /// Regions that are down: ARM calls touching services there get `503`, storage accounts
    /// there are unreachable.
    pub unavailable_regions: Vec<String>,
}

impl FaultConfig {
    /// Checks that probabilities are probabilities and regions are known.
    pub fn validate(&self) -> Result<(), crate::Error> {
        for (name, p) in [
            ("status_500", self.status_500),
            ("status_503", self.status_503),
            ("drop_connection", self.drop_connection),
            ("operation_failure", self.operation_failure),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(crate::Error::Config(format!(
                    "fault `{name}` must be a probability in [0, 1], got {p}"
                )));
            }
        }
        for r in &self.unavailable_regions {
            drsync_core::Region::parse(r).map_err(|e| crate::Error::Config(e.to_string()))?;
        }
        Ok(())
    }

    /// Whether `region` (any spelling) is down.
    pub fn region_down(&self, region: drsync_core::Region) -> bool {
        self.unavailable_regions
            .iter()
            .any(|r| drsync_core::Region::parse(r).ok() == Some(region))
    }
}

/// A service to create, in seed files, the control API and code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSeed {
    /// Subscription GUID.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Service name.
    pub name: String,
    /// Region, ARM or display name.
    pub location: String,
    /// SKU name (`Premium`, ...).
    pub sku: String,
    /// SKU capacity (units).
    #[serde(default = "one")]
    pub capacity: u32,
    /// Whether the service has a system-assigned managed identity.
    #[serde(default)]
    pub system_assigned_identity: bool,
    /// The system-assigned identity's principal id; generated when absent.
    #[serde(default)]
    pub principal_id: Option<String>,
    /// User-assigned identities attached to the service.
    #[serde(default)]
    pub user_assigned_identities: Vec<UserAssignedIdentity>,
    /// Publisher e-mail.
    #[serde(default = "default_publisher_email")]
    pub publisher_email: String,
    /// Publisher name.
    #[serde(default = "default_publisher_name")]
    pub publisher_name: String,
    /// Resource tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// APIs: name to ARM `properties` object.
    #[serde(default)]
    pub apis: BTreeMap<String, serde_json::Value>,
    /// Products: name to ARM `properties` object.
    #[serde(default)]
    pub products: BTreeMap<String, serde_json::Value>,
    /// Named values: name to ARM `properties` object.
    #[serde(default)]
    pub named_values: BTreeMap<String, serde_json::Value>,
    /// Adds the sample configuration APIM creates (Echo API, Starter and Unlimited products)
    /// plus one named value.
    #[serde(default)]
    pub sample_config: bool,
}

impl ServiceSeed {
    /// A Premium, capacity 1 service with a system-assigned identity and no configuration.
    pub fn new(subscription: &str, resource_group: &str, name: &str, location: &str) -> Self {
        Self {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            name: name.into(),
            location: location.into(),
            sku: "Premium".into(),
            capacity: 1,
            system_assigned_identity: true,
            principal_id: None,
            user_assigned_identities: Vec::new(),
            publisher_email: default_publisher_email(),
            publisher_name: default_publisher_name(),
            tags: BTreeMap::new(),
            apis: BTreeMap::new(),
            products: BTreeMap::new(),
            named_values: BTreeMap::new(),
            sample_config: false,
        }
    }

    /// Sets the SKU.
    pub fn sku(mut self, sku: &str, capacity: u32) -> Self {
        self.sku = sku.into();
        self.capacity = capacity;
        self
    }

    /// Adds the sample configuration.
    pub fn with_sample_config(mut self) -> Self {
        self.sample_config = true;
        self
    }

    /// Removes the system-assigned identity.
    pub fn without_identity(mut self) -> Self {
        self.system_assigned_identity = false;
        self
    }
}

/// A user-assigned managed identity attached to a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAssignedIdentity {
    /// Its ARM resource id.
    pub resource_id: String,
    /// Its client id.
    pub client_id: String,
    /// Its principal id.
    pub principal_id: String,
}

/// A seed document: services to add (the control API's `POST /_emulator/seed` and the
/// binary's `--seed-state` when the file is not a state dump).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seed {
    /// Services to create (replacing any with the same id).
    pub services: Vec<ServiceSeed>,
}

fn one() -> u32 {
    1
}

fn default_publisher_email() -> String {
    "admin@contoso.com".into()
}

fn default_publisher_name() -> String {
    "Contoso".into()
}

fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(d).map(|o| o.map(Secret::new))
}

fn secret_from_string<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}
