//! The checked configuration model: what [`Config::parse`](super::Config::parse) returns.
//!
//! Every value here has already passed the configuration checks (names, references, SKUs,
//! durations, secret references), so callers use it without re-validating. Paths (`state.dir`,
//! `dir:` storage endpoints) are already resolved against the configuration file's directory.
//! Graph rules (cycles, one source per target, SKU pairs, standby regions) are not checked
//! here: they belong to the planner.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::region::Region;
use crate::secret::SecretRef;
use crate::service::ServiceRef;
use crate::sku::Sku;
use crate::storage::{StorageAccess, StorageTarget};

/// A whole drsync configuration file, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[azure]`: where ARM and Entra ID are, and how drsync authenticates.
    pub azure: AzureConfig,
    /// `[embedded]`: the built-in emulator's settings. `Some` exactly when
    /// `azure.endpoint = "embedded"` (with defaults if the section is absent).
    pub embedded: Option<EmbeddedConfig>,
    /// `[state]`: where drsync keeps its checkpoints and reports.
    pub state: StateConfig,
    /// `[limits]`: concurrency and ARM request rates.
    pub limits: Limits,
    /// `[[storage]]`: storage accounts that hold backups, in file order.
    pub storage: Vec<StorageConfig>,
    /// `[[service]]`: API Management services, in file order.
    pub services: Vec<ServiceConfig>,
    /// `[[replication]]`: which primary is copied to which targets, in file order.
    pub replications: Vec<ReplicationConfig>,
    /// The file this configuration was read from, as given to [`Config::parse`](super::Config::parse).
    pub source_path: PathBuf,
}

/// The `[azure]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The Entra ID tenant (a GUID or a domain such as `contoso.onmicrosoft.com`).
    /// Required unless the endpoint is embedded.
    pub tenant: Option<String>,
    /// The Entra ID authority, default `https://login.microsoftonline.com` (no trailing slash).
    pub authority_host: String,
    /// The Azure Resource Manager endpoint.
    pub endpoint: ArmEndpoint,
    /// The ARM api-version for API Management calls, default `2024-05-01`.
    pub api_version: String,
    /// How drsync obtains tokens. Always `Some` unless the endpoint is embedded.
    pub credential: Option<CredentialConfig>,
}

/// Where Azure Resource Manager is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArmEndpoint {
    /// `endpoint = "embedded"`: drsync starts its built-in emulator in-process.
    Embedded,
    /// An `https://` URL (Azure), or an `http://` URL on a loopback address (a local emulator).
    /// Stored without a trailing slash.
    Url(String),
}

impl ArmEndpoint {
    /// Azure's public-cloud ARM endpoint, the default.
    pub const PUBLIC_CLOUD: &'static str = "https://management.azure.com";

    /// The URL, or `None` when embedded.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Embedded => None,
            Self::Url(url) => Some(url),
        }
    }
}

impl fmt::Display for ArmEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => f.write_str("embedded"),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// `[azure.credential]`: how drsync gets ARM bearer tokens. Holds secret references only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialConfig {
    /// `kind = "client_secret"`: an app registration (service principal) with a client secret.
    ClientSecret {
        /// The application (client) id.
        client_id: String,
        /// Where the client secret is (`env:NAME` or `file:PATH`).
        client_secret: SecretRef,
    },
    /// `kind = "managed_identity"`: the host's managed identity through IMDS; `client_id`
    /// selects a user-assigned identity.
    ManagedIdentity {
        /// The user-assigned identity's client id, if not the system-assigned one.
        client_id: Option<String>,
    },
    /// `kind = "azure_cli"`: the token of the signed-in Azure CLI (`az account get-access-token`).
    AzureCli,
    /// `kind = "static_token"`: a fixed bearer token (meant for emulators and tests).
    StaticToken {
        /// Where the token is.
        token: SecretRef,
    },
}

impl CredentialConfig {
    /// The `kind` value as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client_secret",
            Self::ManagedIdentity { .. } => "managed_identity",
            Self::AzureCli => "azure_cli",
            Self::StaticToken { .. } => "static_token",
        }
    }
}

/// `[embedded]`: settings of the built-in emulator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmbeddedConfig {
    /// Emulated operation durations are multiplied by this (default 1.0; the demo uses a
    /// small value so minutes become seconds). Always finite and greater than zero.
    pub time_scale: f64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self { time_scale: 1.0 }
    }
}

/// `[state]`: drsync's own persistent state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// The directory holding the sled database and reports, already joined to the
    /// configuration file's directory when written as a relative path.
    pub dir: PathBuf,
}

/// `[limits]`: how hard drsync may push Azure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Steps run at the same time (default 8, at least 1).
    pub concurrency: usize,
    /// ARM read requests per second drsync allows itself (default 22.5: 90 % of ARM's
    /// subscription read bucket refill of 25/s).
    pub arm_reads_per_second: f64,
    /// ARM read burst (default 225: 90 % of ARM's subscription read bucket of 250).
    pub arm_read_burst: u32,
    /// ARM write requests per second (default 9: 90 % of ARM's write bucket refill of 10/s).
    pub arm_writes_per_second: f64,
    /// ARM write burst (default 180: 90 % of ARM's write bucket of 200).
    pub arm_write_burst: u32,
}

impl Default for Limits {
    /// drsync paces itself at 90 % of ARM's documented per-subscription token buckets (reads
    /// 250 + 25/s, writes 200 + 10/s: PROTOCOL.md section 4, and
    /// <https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>).
    /// At exactly Azure's rates a few 429s get through under load. These are the same numbers
    /// as `drsync_arm_client::ArmLimits::default()`, which the CLI fills from this section.
    fn default() -> Self {
        Self {
            concurrency: 8,
            arm_reads_per_second: 22.5,
            arm_read_burst: 225,
            arm_writes_per_second: 9.0,
            arm_write_burst: 180,
        }
    }
}

/// One `[[storage]]` entry: a container that holds backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The name replications use to refer to this entry.
    pub name: String,
    /// The storage account's region.
    pub region: Region,
    /// Account, container, endpoint (a resolved `dir:` path, an `https://` URL or a loopback
    /// `http://` URL) and access method.
    pub target: StorageTarget,
}

impl StorageConfig {
    /// The endpoint, classified.
    pub fn endpoint(&self) -> StorageEndpoint {
        StorageEndpoint::classify(&self.target.endpoint)
    }
}

/// The forms a storage endpoint takes (see `shared-design`: Azure URL, Azurite URL, local dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageEndpoint {
    /// An `https://` blob endpoint (Azure).
    Https(String),
    /// An `http://` endpoint on a loopback address (Azurite, path-style).
    LoopbackHttp(String),
    /// `dir:PATH`: a local directory holding the account's containers (`LocalDirStore`).
    Dir(PathBuf),
}

impl StorageEndpoint {
    /// Classifies an endpoint string from a checked configuration.
    pub fn classify(endpoint: &str) -> Self {
        if let Some(path) = endpoint.strip_prefix("dir:") {
            Self::Dir(PathBuf::from(path))
        } else if endpoint.starts_with("http://") {
            Self::LoopbackHttp(endpoint.to_owned())
        } else {
            Self::Https(endpoint.to_owned())
        }
    }
}

/// A service's part in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Serves production traffic; its backups feed the others.
    Primary,
    /// Kept restored from a primary, ready to take over in another region.
    Standby,
    /// A copy for testing or staging; never a failover target.
    Staging,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 3] = [Role::Primary, Role::Standby, Role::Staging];

    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Standby => "standby",
            Self::Staging => "staging",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[service]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Subscription, resource group and name (the name is also the configuration's key).
    pub service: ServiceRef,
    /// The service's region.
    pub region: Region,
    /// Tier and units. Always a tier that supports backup/restore.
    pub sku: Sku,
    /// Its part in the topology.
    pub role: Role,
}

impl ServiceConfig {
    /// The service name, the key other sections use.
    pub fn name(&self) -> &str {
        &self.service.name
    }
}

/// One `[[replication]]` entry: back up `from`, restore into each of `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The replication's name (default: the source service's name). Unique.
    pub name: String,
    /// The source service's name; it exists in `services`.
    pub from: String,
    /// Target service names, at least one, no duplicates, never `from`; each exists.
    pub to: Vec<String>,
    /// The `[[storage]]` entry's name; it exists in `storage`.
    pub storage: String,
    /// Recovery point objective: the longest acceptable age of the newest restored backup.
    /// Greater than zero and at most `retention`.
    pub rpo: Duration,
    /// How long backups are kept; at most 30 days (Azure's backup lifetime).
    pub retention: Duration,
    /// Recovery time objective, used by drills.
    pub rto: Option<Duration>,
    /// What a restored target is compared on.
    pub verify: VerifyConfig,
    /// `[[replication.hooks]]`: commands run around the phases of this replication's drills,
    /// clones, failovers and failbacks, in the order written.
    pub hooks: Vec<HookConfig>,
}

/// One `[[replication.hooks]]` entry: a command run before or after a phase of a drill,
/// clone, failover or failback of its replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// A name for reports (1-64 letters, digits, `-`, `_`, `.`); default `{when}-{phase}`.
    pub name: Option<String>,
    /// The phase it attaches to.
    pub phase: HookPhase,
    /// Before or after the phase.
    pub when: HookWhen,
    /// What to run.
    pub command: HookCommandConfig,
    /// How long it may run (default [`DEFAULT_HOOK_TIMEOUT`](super::DEFAULT_HOOK_TIMEOUT)).
    pub timeout: Duration,
    /// Literal, non-secret variables added to the hook's environment. Values are passed as
    /// written: `env:NAME` here is the string `env:NAME`, not a secret reference.
    pub env: BTreeMap<String, String>,
    /// The kinds of run it applies to; empty means all.
    pub kinds: Vec<HookKind>,
}

/// What a hook runs: `command = "a shell line"` or `command = ["program", "arg"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookCommandConfig {
    /// Run by `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly (the program is not empty).
    Argv(Vec<String>),
}

/// The phase a hook attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPhase {
    /// Reading the services and picking the backup.
    Preflight,
    /// The fresh backup.
    Backup,
    /// The restore.
    Restore,
    /// Named-value overrides (clones).
    Overrides,
    /// Verification.
    Verify,
    /// The role swap (failover, failback).
    Promote,
}

impl HookPhase {
    /// Every phase, in run order.
    pub const ALL: [HookPhase; 6] = [
        Self::Preflight,
        Self::Backup,
        Self::Restore,
        Self::Overrides,
        Self::Verify,
        Self::Promote,
    ];

    /// The lowercase name, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Overrides => "overrides",
            Self::Verify => "verify",
            Self::Promote => "promote",
        }
    }
}

/// Before or after the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookWhen {
    /// Before the phase's work; a failure fails the phase before it starts.
    Before,
    /// After the phase's work succeeded; a failure fails the phase.
    After,
}

impl HookWhen {
    /// `before` or `after`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Before => "before",
            Self::After => "after",
        }
    }
}

/// A kind of run a hook applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// `drsync drill`.
    Drill,
    /// `drsync clone`.
    Clone,
    /// `drsync failover`.
    Failover,
    /// `drsync failback`.
    Failback,
}

impl HookKind {
    /// Every kind.
    pub const ALL: [HookKind; 4] = [Self::Drill, Self::Clone, Self::Failover, Self::Failback];

    /// The lowercase name, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drill => "drill",
            Self::Clone => "clone",
            Self::Failover => "failover",
            Self::Failback => "failback",
        }
    }
}

/// `[replication.verify]`: which entity collections a verification compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyConfig {
    /// Compare APIs (default true).
    pub apis: bool,
    /// Compare products (default true).
    pub products: bool,
    /// Compare named values (default true).
    pub named_values: bool,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            apis: true,
            products: true,
            named_values: true,
        }
    }
}

/// One source -> target edge of a replication, with everything resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationEdge<'a> {
    /// The replication the edge belongs to.
    pub replication: &'a ReplicationConfig,
    /// The source service.
    pub from: &'a ServiceConfig,
    /// The target service.
    pub to: &'a ServiceConfig,
    /// The storage the backup goes through.
    pub storage: &'a StorageConfig,
}

impl Config {
    /// Whether ARM is the built-in emulator (`azure.endpoint = "embedded"`).
    pub fn is_embedded(&self) -> bool {
        self.azure.endpoint == ArmEndpoint::Embedded
    }

    /// The service named `name`, compared case-insensitively as Azure does.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services
            .iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// The `[[storage]]` entry named `name`.
    pub fn storage(&self, name: &str) -> Option<&StorageConfig> {
        self.storage.iter().find(|s| s.name == name)
    }

    /// The replication named `name`.
    pub fn replication(&self, name: &str) -> Option<&ReplicationConfig> {
        self.replications.iter().find(|r| r.name == name)
    }

    /// The services with the given role, in file order.
    pub fn services_with_role(&self, role: Role) -> impl Iterator<Item = &ServiceConfig> {
        self.services.iter().filter(move |s| s.role == role)
    }

    /// The replications whose source is `service`.
    pub fn replications_from(&self, service: &str) -> impl Iterator<Item = &ReplicationConfig> {
        self.replications
            .iter()
            .filter(move |r| r.from.eq_ignore_ascii_case(service))
    }

    /// Every source -> target edge of every replication, in file order.
    pub fn replication_targets(&self) -> Vec<ReplicationEdge<'_>> {
        self.replications
            .iter()
            .flat_map(|r| self.edges_of(r))
            .collect()
    }

    /// The edges of one replication.
    pub fn edges_of<'a>(&'a self, replication: &'a ReplicationConfig) -> Vec<ReplicationEdge<'a>> {
        let (Some(from), Some(storage)) = (
            self.service(&replication.from),
            self.storage(&replication.storage),
        ) else {
            return Vec::new();
        };
        replication
            .to
            .iter()
            .filter_map(|t| self.service(t))
            .map(|to| ReplicationEdge {
                replication,
                from,
                to,
                storage,
            })
            .collect()
    }

    /// The storage target a replication's backups go to.
    pub fn storage_target_for(&self, replication: &ReplicationConfig) -> Option<&StorageTarget> {
        self.storage(&replication.storage).map(|s| &s.target)
    }

    /// The directory of the configuration file (empty for a bare file name).
    pub fn base_dir(&self) -> &Path {
        self.source_path.parent().unwrap_or(Path::new(""))
    }
}

impl StorageAccess {
    /// The `access` value as written in the configuration (`account_key`, `system_identity`,
    /// `user_identity`).
    pub fn config_name(&self) -> &'static str {
        match self {
            Self::AccountKey(_) => "account_key",
            Self::SystemAssignedIdentity => "system_identity",
            Self::UserAssignedIdentity { .. } => "user_identity",
        }
    }
}
