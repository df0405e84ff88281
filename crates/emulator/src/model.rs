//! The emulator's world: services, their configuration, operations and tokens.
//!
//! Plain data plus the rules that need no I/O (rendering ARM JSON, etags, the request log
//! records). The HTTP layer (`server`) and the operation runner (`ops`) change it under the
//! state lock; `dump_state`/`load_state` serialize the persistent part as [`StateDump`].

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::SecondsFormat;
use drsync_core::{Region, SkuTier, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::UserAssignedIdentity;

/// A service's configuration: what a backup holds and a restore replaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// APIs: name to ARM `properties`.
    pub apis: BTreeMap<String, Value>,
    /// Products: name to ARM `properties`.
    pub products: BTreeMap<String, Value>,
    /// Named values: name to ARM `properties`.
    #[serde(rename = "namedValues")]
    pub named_values: BTreeMap<String, Value>,
}

/// The child collections the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// `apis`
    Apis,
    /// `products`
    Products,
    /// `namedValues`
    NamedValues,
}

impl ChildKind {
    /// Parses a path segment, case-insensitively as ARM does.
    pub fn parse(segment: &str) -> Option<Self> {
        match segment.to_ascii_lowercase().as_str() {
            "apis" => Some(Self::Apis),
            "products" => Some(Self::Products),
            "namedvalues" => Some(Self::NamedValues),
            _ => None,
        }
    }

    /// The canonical segment.
    pub fn segment(self) -> &'static str {
        match self {
            Self::Apis => "apis",
            Self::Products => "products",
            Self::NamedValues => "namedValues",
        }
    }
}

impl Configuration {
    /// The collection of one kind.
    pub fn children(&self, kind: ChildKind) -> &BTreeMap<String, Value> {
        match kind {
            ChildKind::Apis => &self.apis,
            ChildKind::Products => &self.products,
            ChildKind::NamedValues => &self.named_values,
        }
    }

    /// The collection of one kind, mutable.
    pub fn children_mut(&mut self, kind: ChildKind) -> &mut BTreeMap<String, Value> {
        match kind {
            ChildKind::Apis => &mut self.apis,
            ChildKind::Products => &mut self.products,
            ChildKind::NamedValues => &mut self.named_values,
        }
    }

    /// What a new APIM instance contains, plus one named value.
    pub fn sample() -> Self {
        let mut c = Self::default();
        c.apis.insert(
            "echo-api".into(),
            json!({"displayName": "Echo API", "apiRevision": "1", "serviceUrl": "http://echoapi.cloudapp.net/api",
                   "path": "echo", "protocols": ["https"], "isCurrent": true}),
        );
        c.products.insert(
            "starter".into(),
            json!({"displayName": "Starter", "description": "Subscribers will be able to run 5 calls/minute up to a maximum of 100 calls/week.",
                   "subscriptionRequired": true, "approvalRequired": false, "subscriptionsLimit": 1, "state": "published"}),
        );
        c.products.insert(
            "unlimited".into(),
            json!({"displayName": "Unlimited", "description": "Subscribers have completely unlimited access to the API. Administrator approval is required.",
                   "subscriptionRequired": true, "approvalRequired": true, "subscriptionsLimit": 1, "state": "published"}),
        );
        c.named_values.insert(
            "backend-url".into(),
            json!({"displayName": "backend-url", "value": "https://backend.contoso.com", "secret": false}),
        );
        c
    }
}

/// Provisioning states the emulator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProvisioningState {
    /// Being created.
    Activating,
    /// Ready.
    Succeeded,
    /// An operation (backup, restore, SKU change) is running.
    Updating,
}

impl ProvisioningState {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activating => "Activating",
            Self::Succeeded => "Succeeded",
            Self::Updating => "Updating",
        }
    }
}

/// One API Management service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    /// Subscription GUID, lowercase.
    pub subscription: String,
    /// Resource group, as created.
    pub resource_group: String,
    /// Name, as created.
    pub name: String,
    /// Region.
    #[serde(with = "region_name")]
    pub region: Region,
    /// SKU tier.
    pub sku: SkuTier,
    /// SKU capacity.
    pub capacity: u32,
    /// System-assigned identity principal id, if enabled.
    pub principal_id: Option<String>,
    /// Attached user-assigned identities.
    pub user_assigned: Vec<UserAssignedIdentity>,
    /// Publisher e-mail.
    pub publisher_email: String,
    /// Publisher name.
    pub publisher_name: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Provisioning state.
    pub state: ProvisioningState,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of the resource.
    pub modified_at: Timestamp,
    /// Last configuration change (`configurationChangeDate`).
    pub configuration_change_date: Timestamp,
    /// Etag counter, bumped on every change.
    pub version: u64,
    /// Custom hostnames (`hostnameConfigurations` beyond the default proxy host), kept on restore.
    pub custom_hostnames: Vec<Value>,
    /// Configuration.
    pub config: Configuration,
    /// The running operation, if any.
    pub active_operation: Option<String>,
    /// The last operation id that changed the configuration (syncState `lastOperationId`).
    pub last_operation_id: Option<String>,
}

/// Formats a timestamp the way ARM does (`2021-06-16T09:40:00.9453556Z`, here to microseconds).
pub fn ts(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Service {
    /// The lookup key: subscription, resource group and name, lowercase.
    pub fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.subscription, &self.resource_group, &self.name)
    }

    /// The ARM resource id.
    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ApiManagement/service/{}",
            self.subscription, self.resource_group, self.name
        )
    }

    /// The etag: the version counter, base64 like APIM's (`AAAAAAACXok=`).
    pub fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.version.to_be_bytes())
    }

    /// Records a change at `now`.
    pub fn touch(&mut self, now: Timestamp) {
        self.version += 1;
        self.modified_at = now;
    }

    /// Records a configuration change at `now`.
    pub fn config_changed(&mut self, now: Timestamp) {
        self.touch(now);
        self.configuration_change_date = now;
    }

    /// The `identity` object, or `None` when the service has none.
    pub fn identity_json(&self, tenant: &str) -> Option<Value> {
        let ty = match (self.principal_id.is_some(), !self.user_assigned.is_empty()) {
            (true, true) => "SystemAssigned, UserAssigned",
            (true, false) => "SystemAssigned",
            (false, true) => "UserAssigned",
            (false, false) => return None,
        };
        let mut v = json!({"type": ty});
        if let Some(p) = &self.principal_id {
            v["principalId"] = json!(p);
            v["tenantId"] = json!(tenant);
        }
        if !self.user_assigned.is_empty() {
            let map: serde_json::Map<String, Value> = self
                .user_assigned
                .iter()
                .map(|u| {
                    (
                        u.resource_id.clone(),
                        json!({"principalId": u.principal_id, "clientId": u.client_id}),
                    )
                })
                .collect();
            v["userAssignedIdentities"] = Value::Object(map);
        }
        Some(v)
    }

    /// The `ApiManagementServiceResource` JSON, shaped like the 2024-05-01 examples.
    pub fn to_json(&self, tenant: &str) -> Value {
        let host = self.name.to_ascii_lowercase();
        let region = self.region.name();
        let mut hostnames = vec![json!({
            "type": "Proxy", "hostName": format!("{host}.azure-api.net"),
            "negotiateClientCertificate": false, "defaultSslBinding": self.custom_hostnames.is_empty(),
            "certificateSource": "BuiltIn"
        })];
        hostnames.extend(self.custom_hostnames.iter().cloned());
        let target = match self.state {
            ProvisioningState::Succeeded => "",
            _ => "Succeeded",
        };
        let mut v = json!({
            "id": self.id(),
            "name": self.name,
            "type": "Microsoft.ApiManagement/service",
            "tags": self.tags,
            "location": self.region.display_name(),
            "etag": self.etag(),
            "properties": {
                "publisherEmail": self.publisher_email,
                "publisherName": self.publisher_name,
                "notificationSenderEmail": "apimgmt-noreply@mail.windowsazure.com",
                "provisioningState": self.state.as_str(),
                "targetProvisioningState": target,
                "createdAtUtc": ts(self.created_at),
                "gatewayUrl": format!("https://{host}.azure-api.net"),
                "gatewayRegionalUrl": format!("https://{host}-{region}-01.regional.azure-api.net"),
                "portalUrl": format!("https://{host}.portal.azure-api.net"),
                "developerPortalUrl": format!("https://{host}.developer.azure-api.net"),
                "managementApiUrl": format!("https://{host}.management.azure-api.net"),
                "scmUrl": format!("https://{host}.scm.azure-api.net"),
                "hostnameConfigurations": hostnames,
                "publicIPAddresses": [public_ip(&self.id())],
                "customProperties": {},
                "virtualNetworkType": "None",
                "disableGateway": false,
                "publicNetworkAccess": "Enabled",
                "platformVersion": "stv2"
            },
            "sku": {"name": self.sku.as_str(), "capacity": self.capacity},
            "systemData": {
                "createdBy": "drsync-emulator", "createdByType": "Application", "createdAt": ts(self.created_at),
                "lastModifiedBy": "drsync-emulator", "lastModifiedByType": "Application", "lastModifiedAt": ts(self.modified_at)
            }
        });
        if let Some(identity) = self.identity_json(tenant) {
            v["identity"] = identity;
        }
        v
    }

    /// A child entity as ARM renders it.
    pub fn child_json(&self, kind: ChildKind, name: &str, properties: &Value) -> Value {
        json!({
            "id": format!("{}/{}/{}", self.id(), kind.segment(), name),
            "type": format!("Microsoft.ApiManagement/service/{}", kind.segment()),
            "name": name,
            "properties": properties,
        })
    }
}

/// Serializes a region as its ARM name. (`Region`'s own `Deserialize` needs `'de: 'static`.)
mod region_name {
    use drsync_core::Region;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Region, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Region, D::Error> {
        let text = String::deserialize(d)?;
        Region::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A stable documentation-range address derived from the resource id.
fn public_ip(id: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(id.to_ascii_lowercase().as_bytes());
    format!("203.0.113.{}", h[0].max(1))
}

/// A service's lookup key (lowercase, as ARM names are case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Subscription.
    pub subscription: String,
    /// Resource group.
    pub resource_group: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key, lowercasing every part.
    pub fn new(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self {
            subscription: subscription.to_ascii_lowercase(),
            resource_group: resource_group.to_ascii_lowercase(),
            name: name.to_ascii_lowercase(),
        }
    }
}

/// The kinds of long-running operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationKind {
    /// `POST .../backup`
    Backup,
    /// `POST .../restore`
    Restore,
    /// `PUT` of a new service.
    Create,
    /// `PUT`/`PATCH` changing the SKU.
    Update,
}

impl OperationKind {
    /// The error code a failed operation of this kind reports.
    pub fn failure_code(self) -> &'static str {
        match self {
            Self::Backup => "BackupFailed",
            Self::Restore => "RestoreFailed",
            Self::Create | Self::Update => "OperationFailed",
        }
    }
}

/// An ARM error with the HTTP status it is served with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmError {
    /// HTTP status.
    pub status: u16,
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
}

impl ArmError {
    /// An error.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// The ARM error body.
    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "message": self.message, "details": []}})
    }
}

/// Where a backup operation writes, or a restore reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobLocation {
    /// Storage account.
    pub account: String,
    /// Container.
    pub container: String,
    /// Blob (the request's `backupName`).
    pub blob: String,
}

/// How an operation will end, decided when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Plan {
    /// Backup: write this envelope's payload (configuration captured at start).
    WriteBackup {
        /// Where.
        to: BlobLocation,
        /// The envelope to write.
        envelope: Box<crate::envelope::Envelope>,
        /// Create the container if it is missing (newer api-versions).
        create_container: bool,
    },
    /// Restore: replace the configuration with this one.
    ApplyRestore {
        /// The configuration.
        config: Configuration,
    },
    /// Create or update: just become `Succeeded`.
    Provision,
    /// Fail with this error.
    Fail(ArmError),
}

/// Where an operation is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperationStatus {
    /// Running.
    Running,
    /// Completing now (the runner holds it).
    Completing,
    /// Done.
    Succeeded,
    /// Failed.
    Failed(ArmError),
}

/// A long-running operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Opaque id used in the polling URLs.
    pub id: String,
    /// Kind.
    pub kind: OperationKind,
    /// The service it runs on.
    pub service: ServiceKey,
    /// The api-version of the request that started it.
    pub api_version: String,
    /// Start (emulator clock).
    pub started_at: Timestamp,
    /// When it ends (emulator clock).
    pub completes_at: Timestamp,
    /// How it ends.
    pub plan: Plan,
    /// Status.
    pub status: OperationStatus,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
}

/// One entry of the structured request log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// Emulator time the request arrived.
    pub time: Timestamp,
    /// HTTP method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Response status; 0 when the connection was dropped.
    pub status: u16,
    /// What the request was: `token-v2`, `token-v1`, `managed-identity-token`, `service-get`,
    /// `service-put`, `service-patch`, `service-delete`, `service-list`, `child-get`,
    /// `child-put`, `child-delete`, `child-list`, `sync-state`, `backup-post`, `restore-post`,
    /// `poll`, `async-poll`, `control`, `unknown`.
    pub kind: String,
    /// The error code answered, if the response was an error.
    pub error_code: Option<String>,
}

/// The persistent part of the emulator's state, as `dump_state` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateDump {
    /// Always `drsync-emulator-state`.
    pub format: String,
    /// Format version, currently 1.
    pub format_version: u32,
    /// The emulator clock's offset from the injected clock, in milliseconds.
    pub clock_offset_ms: i64,
    /// Services.
    pub services: Vec<Service>,
    /// Operations, running and finished.
    pub operations: Vec<Operation>,
    /// Identities granted on storage accounts at run time (account to principals).
    pub grants: BTreeMap<String, Vec<String>>,
}

/// The dump format name.
pub const STATE_FORMAT: &str = "drsync-emulator-state";
/// The dump format version.
pub const STATE_FORMAT_VERSION: u32 = 1;
