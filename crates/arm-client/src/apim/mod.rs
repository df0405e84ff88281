//! API Management's ARM shapes: typed resources parsed from JSON, and request bodies built
//! as JSON. Pure: nothing here sends anything.
//!
//! The wire types (private `Wire*` structs) follow the 2024-05-01 specification; the public
//! types keep what drsync uses. Named values' secret values are never kept: a `value` that
//! arrives for a secret named value is dropped at parse time.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use drsync_core::{Secret, ServiceRef, Sku, SkuTier, StorageAccess, Timestamp};

use crate::error::{Error, Result};

#[cfg(test)]
mod tests;

/// A service's `provisioningState`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProvisioningState {
    /// Created.
    Created,
    /// Activating.
    Activating,
    /// Succeeded: idle, ready for management operations.
    Succeeded,
    /// Updating: a management operation (backup, restore, scaling) is running.
    Updating,
    /// Failed.
    Failed,
    /// Stopped.
    Stopped,
    /// Terminating.
    Terminating,
    /// TerminationFailed.
    TerminationFailed,
    /// Deleted.
    Deleted,
    /// A value this version of drsync does not know.
    Other(String),
}

impl ProvisioningState {
    /// Parses ARM's value, case-insensitively.
    pub fn parse(text: &str) -> Self {
        const KNOWN: [(&str, ProvisioningState); 9] = [
            ("Created", ProvisioningState::Created),
            ("Activating", ProvisioningState::Activating),
            ("Succeeded", ProvisioningState::Succeeded),
            ("Updating", ProvisioningState::Updating),
            ("Failed", ProvisioningState::Failed),
            ("Stopped", ProvisioningState::Stopped),
            ("Terminating", ProvisioningState::Terminating),
            ("TerminationFailed", ProvisioningState::TerminationFailed),
            ("Deleted", ProvisioningState::Deleted),
        ];
        KNOWN
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(_, s)| s)
            .unwrap_or_else(|| Self::Other(text.to_owned()))
    }

    /// ARM's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "Created",
            Self::Activating => "Activating",
            Self::Succeeded => "Succeeded",
            Self::Updating => "Updating",
            Self::Failed => "Failed",
            Self::Stopped => "Stopped",
            Self::Terminating => "Terminating",
            Self::TerminationFailed => "TerminationFailed",
            Self::Deleted => "Deleted",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for ProvisioningState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A service's managed identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceIdentity {
    /// `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned` or `None`.
    pub kind: String,
    /// The system-assigned identity's principal id.
    pub principal_id: Option<String>,
    /// Its tenant.
    pub tenant_id: Option<String>,
    /// User-assigned identities: resource id to client id (when ARM reports it).
    pub user_assigned: BTreeMap<String, Option<String>>,
}

/// One hostname configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostnameConfig {
    /// `Proxy`, `Portal`, `Management`, `Scm`, `DeveloperPortal`, `ConfigurationApi`.
    pub kind: String,
    /// The host name.
    pub host_name: String,
    /// `BuiltIn`, `Custom`, `KeyVault`, `Managed`, when reported.
    pub certificate_source: Option<String>,
    /// Whether it is the default TLS binding.
    pub default_ssl_binding: bool,
}

/// An API Management service, as `GET .../service/{name}` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApimService {
    /// The ARM resource id.
    pub id: String,
    /// The service name.
    pub name: String,
    /// The region, as ARM spells it (`West Europe`, `westeurope`).
    pub location: String,
    /// `sku.name`, as sent.
    pub sku_name: String,
    /// `sku.capacity`.
    pub sku_capacity: u32,
    /// `properties.provisioningState`.
    pub provisioning_state: ProvisioningState,
    /// `properties.targetProvisioningState` (empty when idle).
    pub target_provisioning_state: Option<String>,
    /// The resource's `etag`.
    pub etag: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Managed identity.
    pub identity: Option<ServiceIdentity>,
    /// `properties.gatewayUrl`.
    pub gateway_url: Option<String>,
    /// `properties.hostnameConfigurations`.
    pub hostnames: Vec<HostnameConfig>,
    /// `properties.publisherEmail`.
    pub publisher_email: Option<String>,
    /// `properties.publisherName`.
    pub publisher_name: Option<String>,
    /// `properties.createdAtUtc`.
    pub created_at: Option<Timestamp>,
}

impl ApimService {
    /// The pricing tier and capacity, if the tier is one drsync knows.
    pub fn sku(&self) -> Result<Sku> {
        let tier = SkuTier::parse(&self.sku_name).map_err(|e| Error::Decode {
            operation: format!("read service {}", self.name),
            message: e.to_string(),
        })?;
        Ok(Sku {
            tier,
            capacity: self.sku_capacity,
        })
    }

    /// The service's reference, parsed from its id.
    pub fn service_ref(&self) -> Result<ServiceRef> {
        ServiceRef::parse_resource_id(&self.id).map_err(|e| Error::Decode {
            operation: format!("read service {}", self.name),
            message: e.to_string(),
        })
    }

    /// Parses a service resource.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        let w: WireService = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        Ok(w.into())
    }
}

/// `GET .../tenant/configuration/syncState`: when the configuration last changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncState {
    /// The last configuration change.
    pub configuration_change_date: Option<Timestamp>,
    /// The last Git sync.
    pub sync_date: Option<Timestamp>,
    /// Whether the Git repository is in sync.
    pub is_synced: Option<bool>,
    /// Whether the last operation was an export.
    pub is_export: Option<bool>,
    /// Whether Git configuration is enabled.
    pub is_git_enabled: Option<bool>,
    /// The Git branch.
    pub branch: Option<String>,
    /// The Git commit.
    pub commit_id: Option<String>,
    /// The last operation's id.
    pub last_operation_id: Option<String>,
}

impl SyncState {
    /// Parses both shapes: `{properties: {...}}` (2024-05-01) and the flat 2020-12-01 one.
    pub fn from_json(value: &serde_json::Value) -> std::result::Result<Self, String> {
        let inner = value
            .get("properties")
            .filter(|p| p.is_object())
            .unwrap_or(value);
        let w: WireSyncState = serde_json::from_value(inner.clone()).map_err(|e| e.to_string())?;
        Ok(Self {
            configuration_change_date: w.configuration_change_date,
            sync_date: w.sync_date,
            is_synced: w.is_synced,
            is_export: w.is_export,
            is_git_enabled: w.is_git_enabled,
            branch: w.branch,
            commit_id: w.commit_id,
            last_operation_id: w.last_operation_id,
        })
    }
}

/// An API, as listed by `GET .../apis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSummary {
    /// Resource id.
    pub id: String,
    /// API id (`name`).
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// URL suffix.
    pub path: Option<String>,
    /// Backend URL.
    pub service_url: Option<String>,
    /// Protocols.
    pub protocols: Vec<String>,
    /// Revision.
    pub api_revision: Option<String>,
    /// Version.
    pub api_version: Option<String>,
    /// Whether this is the current revision.
    pub is_current: Option<bool>,
    /// Version set.
    pub api_version_set_id: Option<String>,
    /// Whether a subscription is required.
    pub subscription_required: Option<bool>,
}

/// A product, as listed by `GET .../products`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSummary {
    /// Resource id.
    pub id: String,
    /// Product id (`name`).
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Terms of use.
    pub terms: Option<String>,
    /// Whether a subscription is required.
    pub subscription_required: Option<bool>,
    /// Whether subscriptions need approval.
    pub approval_required: Option<bool>,
    /// Subscriptions per user.
    pub subscriptions_limit: Option<i64>,
    /// `published` or `notPublished`.
    pub state: Option<String>,
}

/// A named value, as listed by `GET .../namedValues`. A secret's value is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedValueSummary {
    /// Resource id.
    pub id: String,
    /// Named value id (`name`).
    pub name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Whether the value is secret.
    pub secret: bool,
    /// The value, only for non-secret named values.
    pub value: Option<String>,
    /// Key Vault secret identifier, for Key Vault-backed values.
    pub key_vault_secret_id: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// How the service reaches the storage account, with the key (if any) already resolved.
#[derive(Clone, PartialEq, Eq)]
pub enum BackupAccess {
    /// The account key, sent in the body (`accessType: AccessKey`).
    AccessKey(Secret),
    /// The service's system-assigned identity.
    SystemAssignedIdentity,
    /// A user-assigned identity, by client id.
    UserAssignedIdentity {
        /// The identity's client id.
        client_id: String,
    },
}

impl fmt::Debug for BackupAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AccessKey(k) => f.debug_tuple("AccessKey").field(k).finish(),
            Self::SystemAssignedIdentity => f.write_str("SystemAssignedIdentity"),
            Self::UserAssignedIdentity { client_id } => f
                .debug_struct("UserAssignedIdentity")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl BackupAccess {
    /// Resolves a configured [`StorageAccess`]; `key` is the account key when the access is
    /// [`StorageAccess::AccountKey`] (resolved by the caller from its reference).
    pub fn from_storage_access(access: &StorageAccess, key: Option<Secret>) -> Result<Self> {
        match access {
            StorageAccess::AccountKey(r) => key.map(Self::AccessKey).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "storage access by account key needs the key from `{r}`"
                ))
            }),
            StorageAccess::SystemAssignedIdentity => Ok(Self::SystemAssignedIdentity),
            StorageAccess::UserAssignedIdentity { client_id } => Ok(Self::UserAssignedIdentity {
                client_id: client_id.clone(),
            }),
        }
    }
}

/// The parameters of a backup or restore (`ApiManagementServiceBackupRestoreParameters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRestoreRequest {
    /// The storage account name.
    pub storage_account: String,
    /// The container.
    pub container: String,
    /// The backup (blob) name.
    pub backup_name: String,
    /// How the service reaches the account.
    pub access: BackupAccess,
}

/// Whether an api-version knows `accessType` (managed identities): 2021-04-01-preview and later.
fn knows_access_type(api_version: &str) -> bool {
    api_version >= "2021-04-01-preview"
}

/// The JSON body of a backup or restore POST for `api_version`. It contains the account key
/// for [`BackupAccess::AccessKey`]: build it only to send it.
pub fn backup_restore_body(
    req: &BackupRestoreRequest,
    api_version: &str,
) -> Result<serde_json::Value> {
    for (what, v) in [
        ("storage account", &req.storage_account),
        ("container", &req.container),
        ("backup name", &req.backup_name),
    ] {
        if v.trim().is_empty() {
            return Err(Error::InvalidConfig(format!(
                "the {what} of a backup/restore is empty"
            )));
        }
    }
    let mut body = serde_json::json!({
        "storageAccount": req.storage_account,
        "containerName": req.container,
        "backupName": req.backup_name,
    });
    let obj = body.as_object_mut().expect("object");
    match (&req.access, knows_access_type(api_version)) {
        (BackupAccess::AccessKey(key), true) => {
            obj.insert("accessType".into(), "AccessKey".into());
            obj.insert("accessKey".into(), key.expose().into());
        }
        // Before 2021-04-01-preview only the four access-key fields exist.
        (BackupAccess::AccessKey(key), false) => {
            obj.insert("accessKey".into(), key.expose().into());
        }
        (BackupAccess::SystemAssignedIdentity, true) => {
            obj.insert("accessType".into(), "SystemAssignedManagedIdentity".into());
        }
        (BackupAccess::UserAssignedIdentity { client_id }, true) => {
            if client_id.trim().is_empty() {
                return Err(Error::InvalidConfig(
                    "user-assigned identity access needs a client id".into(),
                ));
            }
            obj.insert("accessType".into(), "UserAssignedManagedIdentity".into());
            obj.insert("clientId".into(), client_id.clone().into());
        }
        (_, false) => {
            return Err(Error::InvalidConfig(format!(
                "managed-identity storage access needs api-version 2021-04-01-preview or later (configured: {api_version})"
            )));
        }
    }
    Ok(body)
}

/// An ARM collection page, `{value: [...], nextLink}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default, rename = "nextLink")]
    pub next_link: Option<String>,
}

impl<T> Page<T> {
    /// The next page's URL: absent, `null` and `""` all mean "last page".
    pub fn next(&self) -> Option<&str> {
        self.next_link
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
    }
}

// ---- wire shapes ----

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireSku {
    #[serde(default)]
    name: String,
    #[serde(default)]
    capacity: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUserAssigned {
    #[serde(default)]
    client_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentity {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    principal_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    user_assigned_identities: Option<BTreeMap<String, Option<WireUserAssigned>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireHostname {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    host_name: String,
    #[serde(default)]
    certificate_source: Option<String>,
    #[serde(default)]
    default_ssl_binding: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireServiceProperties {
    #[serde(default)]
    provisioning_state: Option<String>,
    #[serde(default)]
    target_provisioning_state: Option<String>,
    #[serde(default)]
    gateway_url: Option<String>,
    #[serde(default)]
    hostname_configurations: Option<Vec<WireHostname>>,
    #[serde(default)]
    publisher_email: Option<String>,
    #[serde(default)]
    publisher_name: Option<String>,
    #[serde(default)]
    created_at_utc: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
struct WireService {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    sku: WireSku,
    #[serde(default)]
    identity: Option<WireIdentity>,
    #[serde(default)]
    properties: WireServiceProperties,
}

impl From<WireService> for ApimService {
    fn from(w: WireService) -> Self {
        let p = w.properties;
        Self {
            id: w.id,
            name: w.name,
            location: w.location,
            sku_name: w.sku.name,
            sku_capacity: w.sku.capacity,
            provisioning_state: ProvisioningState::parse(
                p.provisioning_state.as_deref().unwrap_or(""),
            ),
            target_provisioning_state: p.target_provisioning_state.filter(|s| !s.is_empty()),
            etag: w.etag,
            tags: w.tags.unwrap_or_default(),
            identity: w.identity.map(|i| ServiceIdentity {
                kind: i.kind,
                principal_id: i.principal_id,
                tenant_id: i.tenant_id,
                user_assigned: i
                    .user_assigned_identities
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.and_then(|v| v.client_id)))
                    .collect(),
            }),
            gateway_url: p.gateway_url,
            hostnames: p
                .hostname_configurations
                .unwrap_or_default()
                .into_iter()
                .map(|h| HostnameConfig {
                    kind: h.kind,
                    host_name: h.host_name,
                    certificate_source: h.certificate_source,
                    default_ssl_binding: h.default_ssl_binding,
                })
                .collect(),
            publisher_email: p.publisher_email,
            publisher_name: p.publisher_name,
            created_at: p.created_at_utc,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSyncState {
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    is_export: Option<bool>,
    #[serde(default)]
    is_synced: Option<bool>,
    #[serde(default)]
    is_git_enabled: Option<bool>,
    #[serde(default)]
    sync_date: Option<Timestamp>,
    #[serde(default)]
    configuration_change_date: Option<Timestamp>,
    #[serde(default)]
    last_operation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireItem<P> {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    properties: Option<P>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireApiProps {
    display_name: Option<String>,
    path: Option<String>,
    service_url: Option<String>,
    protocols: Option<Vec<String>>,
    api_revision: Option<String>,
    api_version: Option<String>,
    is_current: Option<bool>,
    api_version_set_id: Option<String>,
    subscription_required: Option<bool>,
}

impl From<WireItem<WireApiProps>> for ApiSummary {
    fn from(w: WireItem<WireApiProps>) -> Self {
        let p = w.properties.unwrap_or_default();
        Self {
            id: w.id,
            name: w.name,
            display_name: p.display_name,
            path: p.path,
            service_url: p.service_url,
            protocols: p.protocols.unwrap_or_default(),
            api_revision: p.api_revision,
            api_version: p.api_version,
            is_current: p.is_current,
            api_version_set_id: p.api_version_set_id,
            subscription_required: p.subscription_required,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireProductProps {
    display_name: Option<String>,
    description: Option<String>,
    terms: Option<String>,
    subscription_required: Option<bool>,
    approval_required: Option<bool>,
    subscriptions_limit: Option<i64>,
    state: Option<String>,
}

impl From<WireItem<WireProductProps>> for ProductSummary {
    fn from(w: WireItem<WireProductProps>) -> Self {
        let p = w.properties.unwrap_or_default();
        Self {
            id: w.id,
            name: w.name,
            display_name: p.display_name,
            description: p.description,
            terms: p.terms,
            subscription_required: p.subscription_required,
            approval_required: p.approval_required,
            subscriptions_limit: p.subscriptions_limit,
            state: p.state,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireKeyVault {
    secret_identifier: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireNamedValueProps {
    display_name: Option<String>,
    #[serde(default)]
    secret: bool,
    value: Option<String>,
    key_vault: Option<WireKeyVault>,
    tags: Option<Vec<String>>,
}

impl From<WireItem<WireNamedValueProps>> for NamedValueSummary {
    fn from(w: WireItem<WireNamedValueProps>) -> Self {
        let p = w.properties.unwrap_or_default();
        Self {
            id: w.id,
            name: w.name,
            display_name: p.display_name,
            secret: p.secret,
            // A secret's value is dropped here, whatever the server sent.
            value: if p.secret { None } else { p.value },
            key_vault_secret_id: p.key_vault.and_then(|k| k.secret_identifier),
            tags: p.tags.unwrap_or_default(),
        }
    }
}

/// The body of `PUT .../namedValues/{name}`:
/// `{"properties":{"displayName":..,"value":..,"secret":..}}`. The value goes on the wire here
/// and nowhere else; the body must not be logged.
pub fn named_value_body(
    name: &str,
    display_name: &str,
    value: &Secret,
    secret: bool,
) -> Result<serde_json::Value> {
    // Named value ids and display names: letters, digits, `-`, `_` and `.` (APIM's own rule,
    // `^[A-Za-z0-9-._]+$`, at most 256 characters).
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !valid(name) {
        return Err(Error::InvalidConfig(format!(
            "named value name `{name}` is not 1-256 letters, digits, `-`, `_` or `.`"
        )));
    }
    if !valid(display_name) {
        return Err(Error::InvalidConfig(format!(
            "display name `{display_name}` of named value `{name}` is not 1-256 letters, digits, `-`, `_` or `.`"
        )));
    }
    if value.expose().is_empty() || value.expose().chars().count() > 4096 {
        return Err(Error::InvalidConfig(format!(
            "the value of named value `{name}` must be 1-4096 characters"
        )));
    }
    Ok(serde_json::json!({
        "properties": {
            "displayName": display_name,
            "value": value.expose(),
            "secret": secret,
        }
    }))
}

/// Parses one named value (a `PUT` or `GET` answer); a secret's value is dropped.
pub fn named_value_from_json(
    value: &serde_json::Value,
) -> std::result::Result<NamedValueSummary, String> {
    serde_json::from_value::<WireItem<WireNamedValueProps>>(value.clone())
        .map(NamedValueSummary::from)
        .map_err(|e| format!("not a named value: {e}"))
}
