//! Reads the spanned document into the [`Config`] model, checking every rule that needs no
//! graph: required fields, types, names, references, SKUs, durations and secret references.
//! Each failed check is recorded with its position and reading carries on, so one run reports
//! every mistake in the file.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use super::error::Collector;
use super::model::*;
use super::read::{At, Table, closest};
use crate::region::Region;
use crate::secret::{SecretError, SecretRef};
use crate::service::{ServiceRef, SubscriptionId, validate_resource_group, validate_service_name};
use crate::sku::{Sku, SkuTier};
use crate::storage::{StorageAccess, StorageTarget, valid_account_name, valid_container_name};

/// The longest retention that makes sense: Azure refuses to restore a backup older than 30 days
/// (PROTOCOL.md section 2; `BACKUP_LIFETIME`).
pub const MAX_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The default ARM api-version (the newest stable one with backup/restore, PROTOCOL.md section 1).
pub const DEFAULT_API_VERSION: &str = "2024-05-01";

/// The default Entra ID authority.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// The default state directory, relative to the configuration file.
pub const DEFAULT_STATE_DIR: &str = ".drsync-state";

/// The first api-version with backup/restore (PROTOCOL.md section 1).
const OLDEST_API_VERSION: &str = "2016-07-07";

/// The stable API Management api-versions that have backup/restore (PROTOCOL.md section 1). ARM
/// answers any other non-preview version with `NoRegisteredProviderFound`.
pub const STABLE_API_VERSIONS: [&str; 10] = [
    "2016-07-07",
    "2016-10-10",
    "2017-03-01",
    "2018-01-01",
    "2019-01-01",
    "2019-12-01",
    "2020-12-01",
    "2021-08-01",
    "2022-08-01",
    "2024-05-01",
];

/// Managed-identity storage access needs this api-version or later (PROTOCOL.md section 2).
const IDENTITY_API_VERSION: &str = "2021-04-01";

static API_VERSION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}(-preview)?$").expect("valid regex"));
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("valid regex"));
static DOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
        .expect("valid regex")
});
static ENTRY_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$").expect("valid regex"));

const DURATION_HINT: &str =
    "write a duration such as \"30m\", \"1h\", \"6h\" or \"14d\" (units: s, m, h, d)";

/// Reads and checks the whole document. `None` when any error was recorded.
pub(crate) fn config(root: &Table<'_, '_>, path: &Path, c: &mut Collector<'_>) -> Option<Config> {
    root.deny_unknown(
        c,
        &[
            "azure",
            "embedded",
            "state",
            "limits",
            "storage",
            "service",
            "replication",
        ],
    );
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let empty = toml::de::DeTable::new();
    let section = |c: &mut Collector<'_>, key: &str| {
        root.table(c, key)
            .unwrap_or_else(|| Table::detached(&empty, 0..0, key.to_owned()))
    };

    let azure_t = section(c, "azure");
    let azure = azure(&azure_t, &base, c);
    let embedded_present = root.has("embedded");
    let embedded_t = section(c, "embedded");
    let embedded = embedded(&embedded_t, embedded_present, azure.as_ref(), c);
    let state = state(&section(c, "state"), &base, c);
    let limits = limits(&section(c, "limits"), c);

    let storage_t = root.tables(c, "storage");
    let storage = entries(&storage_t, c, "storage", false, |t, c| {
        self::storage(t, &base, c)
    });
    check_storage_accounts(&storage_t, c);
    if let Some(azure) = &azure {
        check_identity_api_version(&storage, &storage_t, azure, c);
    }
    let services_t = root.tables(c, "service");
    // `service = 3` is already reported as the wrong type; an empty array is not.
    if services_t.is_empty() && (!root.has("service") || root.is_array("service")) {
        c.error(
            0..0,
            "service",
            "no `[[service]]` defined",
            Some("add at least one [[service]] with name, subscription, resource_group, region, sku and role".into()),
        );
    }
    // Azure service names are case-insensitive (they form `{name}.azure-api.net`).
    let services = entries(&services_t, c, "service", true, service);
    // References are checked against every entry that has a name, even one with other errors,
    // so a mistake inside a service does not also report "unknown service" in a replication.
    let service_names: Vec<&str> = services_t
        .iter()
        .filter_map(|t| t.name_value())
        .map(|n| n.value)
        .collect();
    let storage_names: Vec<&str> = storage_t
        .iter()
        .filter_map(|t| t.name_value())
        .map(|n| n.value)
        .collect();
    let replications_t = root.tables(c, "replication");
    let replications: Vec<_> = replications_t
        .iter()
        .map(|t| replication(t, &service_names, &storage_names, c))
        .collect();
    let names = replications.iter().enumerate().filter_map(|(i, r)| {
        r.as_ref().map(|(r, span)| {
            (
                i,
                At {
                    value: r.name.as_str(),
                    span: span.clone(),
                },
            )
        })
    });
    check_unique(c, "replication", names, false);

    if c.has_errors() {
        return None;
    }
    Some(Config {
        azure: azure?,
        embedded,
        state: state?,
        limits: limits?,
        storage: storage
            .into_iter()
            .map(|s| s.map(|(s, _)| s))
            .collect::<Option<_>>()?,
        services: services
            .into_iter()
            .map(|s| s.map(|(s, _)| s))
            .collect::<Option<_>>()?,
        replications: replications
            .into_iter()
            .map(|r| r.map(|(r, _)| r))
            .collect::<Option<_>>()?,
        source_path: path.to_path_buf(),
    })
}

/// Reads each entry of an array of tables and checks that their `name`s are unique.
fn entries<T>(
    tables: &[Table<'_, '_>],
    c: &mut Collector<'_>,
    section: &str,
    case_insensitive: bool,
    read: impl Fn(&Table<'_, '_>, &mut Collector<'_>) -> Option<T>,
) -> Vec<Entry<T>> {
    let out = tables
        .iter()
        .map(|t| {
            let span = t.name_value().map_or_else(|| t.span.clone(), |n| n.span);
            read(t, c).map(|v| (v, span))
        })
        .collect();
    // Names of entries that failed other checks still count for duplicates.
    let names = tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.name_value().map(|n| (i, n)));
    check_unique(c, section, names, case_insensitive);
    out
}

fn check_unique<'a>(
    c: &mut Collector<'_>,
    section: &str,
    items: impl Iterator<Item = (usize, At<&'a str>)>,
    case_insensitive: bool,
) {
    let mut seen: HashMap<String, (usize, Range<usize>, &str)> = HashMap::new();
    for (i, at) in items {
        let name = at.value;
        let k = if case_insensitive {
            name.to_ascii_lowercase()
        } else {
            name.to_owned()
        };
        if let Some((first, first_span, first_name)) = seen.get(&k) {
            let (line, _) = c.position(first_span.start);
            c.error(
                at.span,
                format!("{section}[{i}].name"),
                format!("duplicate {section} name `{name}`"),
                Some(format!(
                    "{section}[{first}] at line {line} is already named `{first_name}`; names must be unique{}",
                    if case_insensitive { " (compared ignoring case, as Azure does)" } else { "" }
                )),
            );
        } else {
            seen.insert(k, (i, at.span, name));
        }
    }
}

fn azure(t: &Table<'_, '_>, base: &Path, c: &mut Collector<'_>) -> Option<AzureConfig> {
    t.deny_unknown(
        c,
        &[
            "tenant",
            "authority_host",
            "endpoint",
            "api_version",
            "credential",
        ],
    );
    let endpoint = match t.str(c, "endpoint") {
        None if t.has("endpoint") => None,
        None => Some(ArmEndpoint::Url(ArmEndpoint::PUBLIC_CLOUD.to_owned())),
        Some(At {
            value: "embedded", ..
        }) => Some(ArmEndpoint::Embedded),
        Some(at) => match check_url(at.value) {
            Ok(url) => Some(ArmEndpoint::Url(url)),
            Err(why) => {
                c.error(
                    at.span,
                    t.field("endpoint"),
                    format!("invalid ARM endpoint: {why}"),
                    Some("use \"https://management.azure.com\", \"embedded\" for the built-in emulator, or http://127.0.0.1:PORT for a local emulator".into()),
                );
                None
            }
        },
    };
    let embedded = endpoint == Some(ArmEndpoint::Embedded);

    let tenant = match t.str(c, "tenant") {
        Some(at) if is_guid(at.value) || DOMAIN.is_match(at.value) => Some(at.value.to_owned()),
        Some(at) => {
            c.error(
                at.span,
                t.field("tenant"),
                format!("tenant `{}` is neither a GUID nor a domain name", at.value),
                Some("use the directory (tenant) id GUID or a verified domain such as contoso.onmicrosoft.com".into()),
            );
            None
        }
        None => {
            if !t.has("tenant") && endpoint.is_some() && !embedded {
                t.missing(c, "tenant", "set tenant = \"<directory id GUID>\" or \"contoso.onmicrosoft.com\" (only the embedded emulator needs none)");
            }
            None
        }
    };

    let authority_host = match t.str(c, "authority_host") {
        None => Some(DEFAULT_AUTHORITY_HOST.to_owned()),
        Some(at) => match check_url(at.value) {
            Ok(url) => Some(url),
            Err(why) => {
                c.error(
                    at.span,
                    t.field("authority_host"),
                    format!("invalid authority host: {why}"),
                    Some(format!(
                        "the public cloud's is \"{DEFAULT_AUTHORITY_HOST}\""
                    )),
                );
                None
            }
        },
    };

    let api_version = match t.str(c, "api_version") {
        None => Some(DEFAULT_API_VERSION.to_owned()),
        Some(at) => match check_api_version(at.value) {
            Ok(()) => Some(at.value.to_owned()),
            Err(why) => {
                c.error(
                    at.span,
                    t.field("api_version"),
                    why,
                    Some(format!(
                        "use one of the stable versions {} (the newest is \"{DEFAULT_API_VERSION}\"), or a YYYY-MM-DD-preview version from {OLDEST_API_VERSION} on",
                        STABLE_API_VERSIONS.join(", ")
                    )),
                );
                None
            }
        },
    };

    let credential = match t.table(c, "credential") {
        Some(ct) => credential(&ct, base, c).map(Some),
        None if t.has("credential") => None,
        None if embedded || endpoint.is_none() => Some(None),
        None => {
            t.missing(
                c,
                "credential",
                "add [azure.credential] with kind = \"client_secret\", \"managed_identity\", \"azure_cli\" or \"static_token\"",
            );
            None
        }
    };

    Some(AzureConfig {
        tenant,
        authority_host: authority_host?,
        endpoint: endpoint?,
        api_version: api_version?,
        credential: credential?,
    })
}

fn credential(t: &Table<'_, '_>, base: &Path, c: &mut Collector<'_>) -> Option<CredentialConfig> {
    const KINDS: [&str; 4] = [
        "client_secret",
        "managed_identity",
        "azure_cli",
        "static_token",
    ];
    t.deny_unknown(c, &["kind", "client_id", "client_secret", "token"]);
    let kind = t.req_str(
        c,
        "kind",
        "kind = \"client_secret\", \"managed_identity\", \"azure_cli\" or \"static_token\"",
    )?;
    let uses: &[&str] = match kind.value {
        "client_secret" => &["client_id", "client_secret"],
        "managed_identity" => &["client_id"],
        "azure_cli" => &[],
        "static_token" => &["token"],
        other => {
            c.error(
                kind.span,
                t.field("kind"),
                format!("unknown credential kind `{other}`"),
                Some(kind_hint(other, &KINDS)),
            );
            return None;
        }
    };
    for key in ["client_id", "client_secret", "token"] {
        if t.has(key) && !uses.contains(&key) {
            let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
            c.error(
                span,
                t.field(key),
                format!("`{key}` is not used with kind = \"{}\"", kind.value),
                Some(format!(
                    "remove it, or change `kind`; {} uses {}",
                    kind.value,
                    list_or_nothing(uses)
                )),
            );
        }
    }
    match kind.value {
        "client_secret" => {
            let client_id = guid_field(
                t,
                c,
                "client_id",
                true,
                "the application (client) id of the app registration",
            );
            let secret = secret_field(t, c, "client_secret", base, "AZURE_CLIENT_SECRET");
            Some(CredentialConfig::ClientSecret {
                client_id: client_id??,
                client_secret: secret?,
            })
        }
        "managed_identity" => {
            let client_id = guid_field(
                t,
                c,
                "client_id",
                false,
                "the user-assigned identity's client id",
            )?;
            Some(CredentialConfig::ManagedIdentity { client_id })
        }
        "azure_cli" => Some(CredentialConfig::AzureCli),
        _ => {
            let token = secret_field(t, c, "token", base, "DRSYNC_TOKEN");
            Some(CredentialConfig::StaticToken { token: token? })
        }
    }
}

fn list_or_nothing(keys: &[&str]) -> String {
    if keys.is_empty() {
        "no other keys".to_owned()
    } else {
        keys.iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

fn kind_hint(got: &str, choices: &[&str]) -> String {
    let quoted = choices
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(got, choices) {
        Some(near) => format!("did you mean \"{near}\"? expected one of {quoted}"),
        None => format!("expected one of {quoted}"),
    }
}

/// A GUID field. `Some(None)` when optional and absent; `None` after an error.
fn guid_field(
    t: &Table<'_, '_>,
    c: &mut Collector<'_>,
    key: &str,
    required: bool,
    what: &str,
) -> Option<Option<String>> {
    let at = if required {
        t.req_str(c, key, &format!("set {key} to {what}"))
    } else {
        t.str(c, key)
    };
    match at {
        Some(at) if is_guid(at.value) => Some(Some(at.value.to_ascii_lowercase())),
        Some(at) => {
            c.error(
                at.span,
                t.field(key),
                format!("`{key}` must be a GUID"),
                Some(format!(
                    "set it to {what}, xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
                )),
            );
            None
        }
        None if t.has(key) || required => None,
        None => Some(None),
    }
}

/// A secret reference. A literal value is refused without echoing it.
fn secret_field(
    t: &Table<'_, '_>,
    c: &mut Collector<'_>,
    key: &str,
    base: &Path,
    example_env: &str,
) -> Option<SecretRef> {
    let hint = format!("write {key} = \"env:{example_env}\" or \"file:/path/to/secret\"");
    let at = t.req_str(c, key, &hint)?;
    match SecretRef::parse(at.value) {
        Ok(SecretRef::File(p)) => Some(SecretRef::File(resolve(base, &p))),
        Ok(SecretRef::Env(name)) if !ENV_NAME.is_match(&name) => {
            // Not echoed: a secret pasted after `env:` is still a secret.
            c.error(
                at.span,
                t.field(key),
                format!("`{key}` names an environment variable that cannot exist: a name has only letters, digits and `_`, and does not start with a digit"),
                Some(format!("{hint}; if a secret value was pasted after `env:`, rotate it")),
            );
            None
        }
        Ok(r) => Some(r),
        Err(SecretError::Literal) => {
            c.error(
                at.span,
                t.field(key),
                format!("`{key}` holds a literal value; secrets must not be written in the configuration"),
                Some(format!("keep the secret out of the file: {hint}; then rotate the secret, since it was stored in plain text")),
            );
            None
        }
        Err(e) => {
            c.error(at.span, t.field(key), e.to_string(), Some(hint));
            None
        }
    }
}

fn embedded(
    t: &Table<'_, '_>,
    present: bool,
    azure: Option<&AzureConfig>,
    c: &mut Collector<'_>,
) -> Option<EmbeddedConfig> {
    t.deny_unknown(c, &["time_scale"]);
    let is_embedded = azure.is_some_and(|a| a.endpoint == ArmEndpoint::Embedded);
    if present && azure.is_some() && !is_embedded {
        c.error(
            t.span.clone(),
            "embedded",
            "`[embedded]` is only used with azure.endpoint = \"embedded\"",
            Some(
                "remove the [embedded] section, or set endpoint = \"embedded\" under [azure]"
                    .into(),
            ),
        );
    }
    let mut cfg = EmbeddedConfig::default();
    if let Some(at) = t.float(c, "time_scale") {
        if at.value.is_finite() && at.value > 0.0 {
            cfg.time_scale = at.value;
        } else {
            c.error(
                at.span,
                t.field("time_scale"),
                "time_scale must be a number greater than 0",
                Some("1.0 runs the emulator at realistic speed; 0.002 turns a 30-minute restore into about 4 seconds".into()),
            );
        }
    }
    is_embedded.then_some(cfg)
}

fn state(t: &Table<'_, '_>, base: &Path, c: &mut Collector<'_>) -> Option<StateConfig> {
    t.deny_unknown(c, &["dir"]);
    match t.str(c, "dir") {
        None if t.has("dir") => None,
        None => Some(StateConfig {
            dir: base.join(DEFAULT_STATE_DIR),
        }),
        Some(at) if at.value.trim().is_empty() => {
            c.error(
                at.span,
                t.field("dir"),
                "state directory is empty",
                Some(format!(
                    "the default is \"{DEFAULT_STATE_DIR}\", relative to this file"
                )),
            );
            None
        }
        Some(at) => Some(StateConfig {
            dir: resolve(base, Path::new(at.value)),
        }),
    }
}

fn limits(t: &Table<'_, '_>, c: &mut Collector<'_>) -> Option<Limits> {
    t.deny_unknown(
        c,
        &[
            "concurrency",
            "arm_reads_per_second",
            "arm_read_burst",
            "arm_writes_per_second",
            "arm_write_burst",
        ],
    );
    let d = Limits::default();
    let mut ok = true;
    let mut int = |c: &mut Collector<'_>, key: &str, default: u32, max: u32| -> u32 {
        match t.int(c, key) {
            None => {
                ok &= !t.has(key);
                default
            }
            Some(at) if (1..=i64::from(max)).contains(&at.value) => at.value as u32,
            Some(at) => {
                c.error(
                    at.span,
                    t.field(key),
                    format!("`{key}` must be between 1 and {max}"),
                    Some(format!("the default is {default}")),
                );
                ok = false;
                default
            }
        }
    };
    let concurrency = int(c, "concurrency", d.concurrency as u32, 256) as usize;
    let arm_read_burst = int(c, "arm_read_burst", d.arm_read_burst, 100_000);
    let arm_write_burst = int(c, "arm_write_burst", d.arm_write_burst, 100_000);
    let mut rate = |c: &mut Collector<'_>, key: &str, default: f64| -> f64 {
        match t.float(c, key) {
            None => {
                ok &= !t.has(key);
                default
            }
            Some(at) if at.value.is_finite() && at.value > 0.0 => at.value,
            Some(at) => {
                c.error(
                    at.span,
                    t.field(key),
                    format!("`{key}` must be a number greater than 0"),
                    Some(format!(
                        "the default is {default} (90 % of ARM's documented bucket refill rate)"
                    )),
                );
                ok = false;
                default
            }
        }
    };
    let arm_reads_per_second = rate(c, "arm_reads_per_second", d.arm_reads_per_second);
    let arm_writes_per_second = rate(c, "arm_writes_per_second", d.arm_writes_per_second);
    ok.then_some(Limits {
        concurrency,
        arm_reads_per_second,
        arm_read_burst,
        arm_writes_per_second,
        arm_write_burst,
    })
}

fn entry_name(t: &Table<'_, '_>, c: &mut Collector<'_>, what: &str) -> Option<String> {
    let at = t.req_str(
        c,
        "name",
        &format!("give the {what} a name, such as name = \"neu-backups\""),
    )?;
    if ENTRY_NAME.is_match(at.value) {
        Some(at.value.to_owned())
    } else {
        c.error(
            at.span,
            t.field("name"),
            format!("invalid {what} name `{}`", at.value),
            Some(
                "use 1-64 letters, digits, `-`, `_` or `.`, starting with a letter or digit".into(),
            ),
        );
        None
    }
}

fn region_field(t: &Table<'_, '_>, c: &mut Collector<'_>) -> Option<Region> {
    let at = t.req_str(
        c,
        "region",
        "set region to an Azure region such as \"westeurope\"",
    )?;
    match Region::parse(at.value) {
        Ok(r) => Some(r),
        Err(e) => {
            let names: Vec<&str> = Region::all().map(Region::name).collect();
            let squashed: String = at.value.chars().filter(|c| !c.is_whitespace()).collect();
            let hint = match closest(&squashed, &names) {
                Some(near) => format!("did you mean \"{near}\"?"),
                None => {
                    "use an ARM region name such as \"westeurope\", \"northeurope\", \"eastus2\""
                        .to_owned()
                }
            };
            c.error(at.span, t.field("region"), e.to_string(), Some(hint));
            None
        }
    }
}

fn storage(t: &Table<'_, '_>, base: &Path, c: &mut Collector<'_>) -> Option<StorageConfig> {
    const ACCESS: [&str; 3] = ["account_key", "system_identity", "user_identity"];
    t.deny_unknown(
        c,
        &[
            "name",
            "account",
            "region",
            "container",
            "endpoint",
            "access",
            "key",
            "client_id",
        ],
    );
    let name = entry_name(t, c, "storage");
    let account = match t.req_str(c, "account", "set account to the storage account name") {
        Some(at) if valid_account_name(at.value) => Some(at.value.to_owned()),
        Some(at) => {
            c.error(
                at.span,
                t.field("account"),
                format!("invalid storage account name `{}`", at.value),
                Some(
                    "storage account names are 3-24 characters, lowercase letters and digits only"
                        .into(),
                ),
            );
            None
        }
        None => None,
    };
    let region = region_field(t, c);
    let container = match t.req_str(
        c,
        "container",
        "set container to the blob container, such as \"apim-backups\"",
    ) {
        Some(at) if valid_container_name(at.value) => Some(at.value.to_owned()),
        Some(at) => {
            c.error(
                at.span,
                t.field("container"),
                format!("invalid container name `{}`", at.value),
                Some("container names are 3-63 characters: lowercase letters, digits and single hyphens, starting and ending with a letter or digit".into()),
            );
            None
        }
        None => None,
    };
    let endpoint = match t.str(c, "endpoint") {
        None if t.has("endpoint") => None,
        None => account.as_deref().map(StorageTarget::default_endpoint),
        Some(at) => match storage_endpoint(at.value, base) {
            Ok(e) => Some(e),
            Err(why) => {
                c.error(
                    at.span,
                    t.field("endpoint"),
                    format!("invalid storage endpoint: {why}"),
                    Some("use an https:// URL, http://127.0.0.1:PORT/ACCOUNT for Azurite, or dir:PATH for a local directory; omit it for https://{account}.blob.core.windows.net".into()),
                );
                None
            }
        },
    };
    let access_at = t.req_str(
        c,
        "access",
        "access = \"system_identity\", \"user_identity\" or \"account_key\"",
    );
    let kind = match access_at {
        Some(at) if ACCESS.contains(&at.value) => Some(at.value),
        Some(at) => {
            c.error(
                at.span,
                t.field("access"),
                format!("unknown storage access `{}`", at.value),
                Some(kind_hint(at.value, &ACCESS)),
            );
            None
        }
        None => None,
    };
    for (key, needed_by) in [("key", "account_key"), ("client_id", "user_identity")] {
        if t.has(key) && kind.is_some_and(|k| k != needed_by) {
            let span = t.key_span(key).unwrap_or_else(|| t.span.clone());
            c.error(
                span,
                t.field(key),
                format!("`{key}` is only used with access = \"{needed_by}\""),
                Some(format!("remove `{key}`, or set access = \"{needed_by}\"")),
            );
        }
    }
    let access = match kind? {
        "account_key" => {
            StorageAccess::AccountKey(secret_field(t, c, "key", base, "DRSYNC_STORAGE_KEY")?)
        }
        "user_identity" => StorageAccess::UserAssignedIdentity {
            client_id: guid_field(
                t,
                c,
                "client_id",
                true,
                "the user-assigned identity's client id",
            )??,
        },
        _ => StorageAccess::SystemAssignedIdentity,
    };
    Some(StorageConfig {
        name: name?,
        region: region?,
        target: StorageTarget {
            account: account?,
            container: container?,
            endpoint: endpoint?,
            access,
        },
    })
}

fn service(t: &Table<'_, '_>, c: &mut Collector<'_>) -> Option<ServiceConfig> {
    const ROLES: [&str; 3] = ["primary", "standby", "staging"];
    t.deny_unknown(
        c,
        &[
            "name",
            "subscription",
            "resource_group",
            "region",
            "sku",
            "capacity",
            "role",
        ],
    );
    let name = match t.req_str(c, "name", "set name to the API Management service name") {
        Some(at) => match validate_service_name(at.value) {
            Ok(()) => Some(at.value.to_owned()),
            Err(e) => {
                c.error(at.span, t.field("name"), e.to_string(), Some("API Management names are 1-50 characters: a letter first, then letters, digits or hyphens, not ending in a hyphen (no dots or underscores)".into()));
                None
            }
        },
        None => None,
    };
    let subscription = match t.req_str(
        c,
        "subscription",
        "set subscription to the subscription id GUID",
    ) {
        Some(at) => match SubscriptionId::parse(at.value) {
            Ok(s) => Some(s),
            Err(e) => {
                c.error(at.span, t.field("subscription"), e.to_string(), Some("use the subscription id (a GUID, see `az account show --query id`), not its display name".into()));
                None
            }
        },
        None => None,
    };
    let resource_group = match t.req_str(
        c,
        "resource_group",
        "set resource_group to the service's resource group",
    ) {
        Some(at) => {
            match validate_resource_group(at.value) {
                Ok(()) => Some(at.value.to_owned()),
                Err(e) => {
                    c.error(
                    at.span,
                    t.field("resource_group"),
                    e.to_string(),
                    Some("use the resource group's name as the portal or `az group list` shows it".into()),
                );
                    None
                }
            }
        }
        None => None,
    };
    let region = region_field(t, c);
    let tier = match t.req_str(
        c,
        "sku",
        "set sku to the pricing tier: \"Developer\", \"Basic\", \"Standard\" or \"Premium\"",
    ) {
        Some(at) => match SkuTier::parse(at.value) {
            Ok(tier) if tier.supports_backup_restore() => Some((tier, at.span)),
            Ok(tier) => {
                c.error(
                    at.span,
                    t.field("sku"),
                    format!("SKU `{tier}` does not support backup and restore"),
                    Some("Azure API Management backup/restore works only on Developer, Basic, Standard and Premium; not on Consumption, BasicV2, StandardV2 or Isolated".into()),
                );
                None
            }
            Err(e) => {
                let names: Vec<&str> = SkuTier::ALL.iter().map(|t| t.as_str()).collect();
                let hint = match closest(at.value, &names) {
                    Some(near) => format!("did you mean \"{near}\"?"),
                    None => "backup/restore works on \"Developer\", \"Basic\", \"Standard\" and \"Premium\"".to_owned(),
                };
                c.error(at.span, t.field("sku"), e.to_string(), Some(hint));
                None
            }
        },
        None => None,
    };
    let capacity = match t.int(c, "capacity") {
        None if t.has("capacity") => None,
        None => Some(1),
        Some(at) => {
            let max = match tier.as_ref().map(|(t, _)| *t) {
                Some(SkuTier::Developer) => 1,
                Some(SkuTier::Basic) => 2,
                Some(SkuTier::Standard) => 4,
                _ => 1000,
            };
            if (1..=max).contains(&at.value) {
                Some(at.value as u32)
            } else {
                let tier_name = tier
                    .as_ref()
                    .map_or("this".to_owned(), |(t, _)| format!("the {t}"));
                c.error(
                    at.span,
                    t.field("capacity"),
                    format!("capacity {} is out of range for {tier_name} tier", at.value),
                    Some(format!(
                        "capacity counts scale units: at least 1 and at most {max}"
                    )),
                );
                None
            }
        }
    };
    let role = match t.req_str(c, "role", "role = \"primary\", \"standby\" or \"staging\"") {
        Some(at) => match at.value {
            "primary" => Some(Role::Primary),
            "standby" => Some(Role::Standby),
            "staging" => Some(Role::Staging),
            other => {
                c.error(
                    at.span,
                    t.field("role"),
                    format!("unknown role `{other}`"),
                    Some(kind_hint(other, &ROLES)),
                );
                None
            }
        },
        None => None,
    };
    let service = ServiceRef::new(subscription?, resource_group?, name?).ok()?;
    Some(ServiceConfig {
        service,
        region: region?,
        sku: Sku {
            tier: tier?.0,
            capacity: capacity?,
        },
        role: role?,
    })
}

type Entry<T> = Option<(T, Range<usize>)>;

fn replication(
    t: &Table<'_, '_>,
    service_names: &[&str],
    storage_names: &[&str],
    c: &mut Collector<'_>,
) -> Entry<ReplicationConfig> {
    t.deny_unknown(
        c,
        &[
            "name",
            "from",
            "to",
            "storage",
            "rpo",
            "retention",
            "rto",
            "verify",
            "hooks",
        ],
    );
    let svc_exists = |n: &str| service_names.iter().any(|s| s.eq_ignore_ascii_case(n));
    let unknown_service = |c: &mut Collector<'_>, field: String, at: &At<&str>| {
        let hint = match closest(at.value, service_names) {
            Some(near) => format!("did you mean \"{near}\"?"),
            None if service_names.is_empty() => "no [[service]] is defined".to_owned(),
            None => format!("defined services: {}", service_names.join(", ")),
        };
        c.error(
            at.span.clone(),
            field,
            format!("unknown service `{}`", at.value),
            Some(hint),
        );
    };

    let from = t.req_str(
        c,
        "from",
        "set from to the name of the primary [[service]] to back up",
    );
    let from_ok = match &from {
        Some(at) if svc_exists(at.value) => true,
        Some(at) => {
            unknown_service(c, t.field("from"), at);
            false
        }
        None => false,
    };

    if !t.has("to") {
        t.missing(
            c,
            "to",
            "set to = [\"<standby service>\", ...]: the services to restore into",
        );
    }
    // A single name is accepted as a one-element list.
    let to: Option<Vec<At<&str>>> = if t.is_str("to") {
        t.str(c, "to").map(|single| vec![single])
    } else {
        t.str_array(c, "to").map(|a| {
            if a.value.is_empty() {
                c.error(
                    a.span.clone(),
                    t.field("to"),
                    "`to` is empty",
                    Some("list at least one target service".into()),
                );
            }
            a.value
        })
    };
    let mut to_ok = to.is_some();
    let mut targets = Vec::new();
    for (i, at) in to.iter().flatten().enumerate() {
        let field = if t.is_str("to") {
            t.field("to")
        } else {
            format!("{}[{i}]", t.field("to"))
        };
        if !svc_exists(at.value) {
            unknown_service(c, field, at);
            to_ok = false;
        } else if from
            .as_ref()
            .is_some_and(|f| f.value.eq_ignore_ascii_case(at.value))
        {
            c.error(
                at.span.clone(),
                field,
                format!("service `{}` replicates to itself", at.value),
                Some("a target must be a different service from `from`".into()),
            );
            to_ok = false;
        } else if targets
            .iter()
            .any(|t: &String| t.eq_ignore_ascii_case(at.value))
        {
            c.error(
                at.span.clone(),
                field,
                format!("target `{}` is listed twice", at.value),
                Some("list each target once".into()),
            );
            to_ok = false;
        } else {
            targets.push(canonical(service_names, at.value));
        }
    }
    if to.as_ref().is_some_and(Vec::is_empty) {
        to_ok = false;
    }

    let storage_at = t.req_str(
        c,
        "storage",
        "set storage to the name of a [[storage]] entry",
    );
    let storage_ok = match &storage_at {
        Some(at) if storage_names.contains(&at.value) => true,
        Some(at) => {
            let hint = match closest(at.value, storage_names) {
                Some(near) => format!("did you mean \"{near}\"?"),
                None if storage_names.is_empty() => "no [[storage]] is defined".to_owned(),
                None => format!("defined storage: {}", storage_names.join(", ")),
            };
            c.error(
                at.span.clone(),
                t.field("storage"),
                format!("unknown storage `{}`", at.value),
                Some(hint),
            );
            false
        }
        None => false,
    };

    let rpo = duration_field(t, c, "rpo", true);
    let retention = duration_field(t, c, "retention", true);
    let rto = duration_field(t, c, "rto", false);
    let mut times_ok = true;
    if let Some(Some((ret, span, text))) = &retention {
        if *ret > MAX_RETENTION {
            c.error(
                span.clone(),
                t.field("retention"),
                format!("retention \"{text}\" is longer than 30 days"),
                Some("Azure cannot restore a backup older than 30 days, so keeping it longer is useless: use at most \"30d\"".into()),
            );
            times_ok = false;
        }
    }
    if let (Some(Some((rpo, span, rpo_text))), Some(Some((ret, _, ret_text)))) = (&rpo, &retention)
    {
        if rpo > ret {
            c.error(
                span.clone(),
                t.field("rpo"),
                format!("RPO \"{rpo_text}\" is longer than retention \"{ret_text}\""),
                Some("backups would expire before the next one is due: make retention at least the RPO".into()),
            );
            times_ok = false;
        }
    }

    let verify = match t.table(c, "verify") {
        None => Some(VerifyConfig::default()),
        Some(v) => {
            v.deny_unknown(c, &["apis", "products", "named_values"]);
            let d = VerifyConfig::default();
            let get =
                |c: &mut Collector<'_>, key: &str, d: bool| v.bool(c, key).map_or(d, |a| a.value);
            let cfg = VerifyConfig {
                apis: get(c, "apis", d.apis),
                products: get(c, "products", d.products),
                named_values: get(c, "named_values", d.named_values),
            };
            let typed = ["apis", "products", "named_values"]
                .iter()
                .all(|k| !v.has(k) || v.is_bool(k));
            typed.then_some(cfg)
        }
    };

    let hook_tables = t.tables(c, "hooks");
    let hooks: Vec<Option<HookConfig>> = hook_tables.iter().map(|h| hook(h, c)).collect();
    let hooks_ok = hooks.iter().all(Option::is_some);

    let name = match t.str(c, "name") {
        Some(at) if ENTRY_NAME.is_match(at.value) => Some((at.value.to_owned(), at.span)),
        Some(at) => {
            c.error(
                at.span,
                t.field("name"),
                format!("invalid replication name `{}`", at.value),
                Some("use 1-64 letters, digits, `-`, `_` or `.`".into()),
            );
            None
        }
        None if t.has("name") => None,
        None => from.as_ref().map(|f| (f.value.to_owned(), f.span.clone())),
    };

    if !(from_ok && to_ok && storage_ok && times_ok && hooks_ok) {
        return None;
    }
    let (name, name_span) = name?;
    let from = canonical(service_names, from?.value);
    let (rpo, _, _) = rpo??;
    let (retention, _, _) = retention??;
    let rto = rto?.map(|(d, _, _)| d);
    Some((
        ReplicationConfig {
            name,
            from,
            to: targets,
            storage: storage_at?.value.to_owned(),
            rpo,
            retention,
            rto,
            verify: verify?,
            hooks: hooks.into_iter().flatten().collect(),
        },
        name_span,
    ))
}

/// The timeout of a hook that names none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// One `[[replication.hooks]]` entry.
fn hook(t: &Table<'_, '_>, c: &mut Collector<'_>) -> Option<HookConfig> {
    t.deny_unknown(
        c,
        &[
            "name", "phase", "when", "command", "timeout", "env", "kinds",
        ],
    );
    let mut ok = true;

    let name = match t.str(c, "name") {
        Some(at) if ENTRY_NAME.is_match(at.value) => Some(at.value.to_owned()),
        Some(at) => {
            c.error(
                at.span,
                t.field("name"),
                format!("invalid hook name `{}`", at.value),
                Some("use 1-64 letters, digits, `-`, `_` or `.`".into()),
            );
            ok = false;
            None
        }
        None => {
            ok &= !t.has("name");
            None
        }
    };

    let phases: Vec<&str> = HookPhase::ALL.iter().map(|p| p.as_str()).collect();
    let phase = match t.req_str(
        c,
        "phase",
        &format!("set phase to one of: {}", phases.join(", ")),
    ) {
        Some(at) => {
            let found = HookPhase::ALL
                .into_iter()
                .find(|p| p.as_str().eq_ignore_ascii_case(at.value.trim()));
            if found.is_none() {
                let hint = match closest(&at.value.to_ascii_lowercase(), &phases) {
                    Some(near) => format!("did you mean \"{near}\"? phases: {}", phases.join(", ")),
                    None => format!("phases: {}", phases.join(", ")),
                };
                c.error(
                    at.span,
                    t.field("phase"),
                    format!("unknown phase `{}`", at.value),
                    Some(hint),
                );
            }
            found
        }
        None => None,
    };

    let when = match t.req_str(c, "when", "set when to \"before\" or \"after\"") {
        Some(at) => match at.value.trim().to_ascii_lowercase().as_str() {
            "before" => Some(HookWhen::Before),
            "after" => Some(HookWhen::After),
            _ => {
                c.error(
                    at.span,
                    t.field("when"),
                    format!("`when` = \"{}\" is neither before nor after", at.value),
                    Some("use \"before\" (runs before the phase's work) or \"after\" (runs once it succeeded)".into()),
                );
                None
            }
        },
        None => None,
    };

    let command = if t.is_array("command") {
        t.str_array(c, "command").and_then(|at| {
            let argv: Vec<String> = at.value.iter().map(|a| a.value.to_owned()).collect();
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                c.error(
                    at.span,
                    t.field("command"),
                    "the hook's command has no program",
                    Some("write the program first, as in [\"./switch-dns.sh\", \"--to\", \"northeurope\"]".into()),
                );
                None
            } else {
                Some(HookCommandConfig::Argv(argv))
            }
        })
    } else {
        match t.req_str(
            c,
            "command",
            "set command to a shell line (\"curl -fsS ...\") or an array ([\"program\", \"arg\"])",
        ) {
            Some(at) if at.value.trim().is_empty() => {
                c.error(
                    at.span,
                    t.field("command"),
                    "the hook's command is empty",
                    Some(
                        "write the command line to run, or an array [\"program\", \"arg\"]".into(),
                    ),
                );
                None
            }
            Some(at) => Some(HookCommandConfig::Shell(at.value.to_owned())),
            None => None,
        }
    };

    let timeout = match duration_field(t, c, "timeout", false) {
        Some(Some((d, _, _))) => Some(d),
        Some(None) => Some(DEFAULT_HOOK_TIMEOUT),
        None => None,
    };

    let mut env = std::collections::BTreeMap::new();
    if t.has("env") {
        match t.str_table(c, "env") {
            Some(entries) => {
                for (k, v) in entries {
                    let valid = !k.value.is_empty()
                        && k.value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !k.value.as_bytes()[0].is_ascii_digit();
                    if !valid || k.value.to_ascii_uppercase().starts_with("DRSYNC_") {
                        c.error(
                            k.span,
                            format!("{}.{}", t.field("env"), k.value),
                            format!("`{}` cannot be a hook environment variable", k.value),
                            Some(if valid {
                                "`DRSYNC_*` variables are set by drsync itself; choose another name"
                                    .into()
                            } else {
                                "use letters, digits and `_`, not starting with a digit".into()
                            }),
                        );
                        ok = false;
                    } else {
                        env.insert(k.value.to_owned(), v.value.to_owned());
                    }
                }
            }
            None => ok = false,
        }
    }

    let kind_names: Vec<&str> = HookKind::ALL.iter().map(|k| k.as_str()).collect();
    let mut kinds = Vec::new();
    if t.has("kinds") {
        match t.str_array(c, "kinds") {
            Some(at) => {
                for (i, k) in at.value.iter().enumerate() {
                    match HookKind::ALL
                        .into_iter()
                        .find(|x| x.as_str().eq_ignore_ascii_case(k.value.trim()))
                    {
                        Some(kind) if !kinds.contains(&kind) => kinds.push(kind),
                        Some(_) => {}
                        None => {
                            c.error(
                                k.span.clone(),
                                format!("{}[{i}]", t.field("kinds")),
                                format!("unknown kind of run `{}`", k.value),
                                Some(format!("kinds: {}", kind_names.join(", "))),
                            );
                            ok = false;
                        }
                    }
                }
                if at.value.is_empty() {
                    c.error(
                        at.span,
                        t.field("kinds"),
                        "`kinds` is empty: the hook would never run",
                        Some(format!(
                            "list some of {}, or leave `kinds` out for all",
                            kind_names.join(", ")
                        )),
                    );
                    ok = false;
                }
            }
            None => ok = false,
        }
    }

    if !ok {
        return None;
    }
    Some(HookConfig {
        name,
        phase: phase?,
        when: when?,
        command: command?,
        timeout: timeout?,
        env,
        kinds,
    })
}

/// The service name as written in its `[[service]]` entry.
fn canonical(names: &[&str], name: &str) -> String {
    names
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .map_or(name, |n| n)
        .to_owned()
}

/// A duration with its span and text. `Some(None)` when optional and absent; `None` after an
/// error.
fn duration_field<'d>(
    t: &Table<'d, '_>,
    c: &mut Collector<'_>,
    key: &str,
    required: bool,
) -> Option<Option<(Duration, Range<usize>, &'d str)>> {
    let at = if required {
        t.req_str(c, key, &format!("set {key}: {DURATION_HINT}"))
    } else {
        t.str(c, key)
    };
    let Some(at) = at else {
        return (!required && !t.has(key)).then_some(None);
    };
    match humantime::parse_duration(at.value.trim()) {
        Ok(d) if d.is_zero() => {
            c.error(
                at.span,
                t.field(key),
                format!("`{key}` must be longer than zero"),
                Some(DURATION_HINT.into()),
            );
            None
        }
        Ok(d) => Some(Some((d, at.span, at.value))),
        Err(_) => {
            c.error(
                at.span,
                t.field(key),
                format!("`{key}` = \"{}\" is not a duration", at.value),
                Some(DURATION_HINT.into()),
            );
            None
        }
    }
}

/// Whether `v` is an api-version ARM knows for API Management backup/restore: a stable one
/// from [`STABLE_API_VERSIONS`], or a preview of a real date from [`OLDEST_API_VERSION`] on.
fn check_api_version(v: &str) -> Result<(), String> {
    let (date, preview) = match v.strip_suffix("-preview") {
        Some(date) => (date, true),
        None => (v, false),
    };
    if !API_VERSION.is_match(v) || chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
        return Err(format!(
            "api-version `{v}` is not of the form YYYY-MM-DD or YYYY-MM-DD-preview with a real date"
        ));
    }
    if date < OLDEST_API_VERSION {
        return Err(format!(
            "api-version `{v}` has no API Management backup/restore (it came with {OLDEST_API_VERSION})"
        ));
    }
    if !preview && !STABLE_API_VERSIONS.contains(&v) {
        return Err(format!(
            "api-version `{v}` is not a stable API Management api-version; ARM would refuse every call"
        ));
    }
    Ok(())
}

/// Two `[[storage]]` entries that name the same account: the same container twice (the catalog
/// would list every backup twice and prune would race itself) or different regions (an account
/// lives in exactly one region).
fn check_storage_accounts(tables: &[Table<'_, '_>], c: &mut Collector<'_>) {
    // The first entry of each account, by index.
    let mut seen: HashMap<String, usize> = HashMap::new();
    fn text<'d>(t: &Table<'d, '_>, key: &str) -> Option<&'d str> {
        t.raw_str(key).map(|a| a.value)
    }
    for (i, t) in tables.iter().enumerate() {
        let Some(account) = t.raw_str("account") else {
            continue;
        };
        let Some(&first) = seen.get(&account.value.to_ascii_lowercase()) else {
            seen.insert(account.value.to_ascii_lowercase(), i);
            continue;
        };
        let (container, region) = (text(t, "container"), text(t, "region"));
        let earlier = &tables[first];
        let first_name = earlier.name_value().map_or("", |n| n.value);
        let (first_container, first_region) = (text(earlier, "container"), text(earlier, "region"));
        let same_region = match (first_region, region) {
            (Some(a), Some(b)) => match (Region::parse(a), Region::parse(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => true, // an unknown region is reported where it is written
            },
            _ => true,
        };
        if container.is_some() && container == first_container {
            c.error(
                account.span,
                t.field("account"),
                format!(
                    "storage account `{}` and container `{}` are already storage[{first}] (`{first_name}`)",
                    account.value,
                    container.unwrap_or_default()
                ),
                Some(format!("refer to `{first_name}` from every replication that uses this container, or give this entry another container")),
            );
        } else if !same_region {
            c.error(
                account.span,
                t.field("account"),
                format!(
                    "storage account `{}` is in region {} in storage[{first}] (`{first_name}`) but in {} here; an account lives in one region",
                    account.value,
                    first_region.unwrap_or_default(),
                    region.unwrap_or_default()
                ),
                Some("correct the region of one of the two entries, or use another account".into()),
            );
        }
    }
}

fn check_identity_api_version(
    storage: &[Entry<StorageConfig>],
    tables: &[Table<'_, '_>],
    azure: &AzureConfig,
    c: &mut Collector<'_>,
) {
    if azure.api_version.as_str() >= IDENTITY_API_VERSION {
        return;
    }
    for (i, entry) in storage.iter().enumerate() {
        if let Some((s, name_span)) = entry {
            if !matches!(s.target.access, StorageAccess::AccountKey(_)) {
                let span = tables
                    .get(i)
                    .and_then(|t| t.raw_str("access"))
                    .map_or_else(|| name_span.clone(), |a| a.span);
                c.error(
                    span,
                    format!("storage[{i}].access"),
                    format!("managed-identity access needs api-version {IDENTITY_API_VERSION}-preview or later, but azure.api_version is {}", azure.api_version),
                    Some(format!("set azure.api_version = \"{DEFAULT_API_VERSION}\", or use access = \"account_key\"")),
                );
            }
        }
    }
}

/// Joins a relative path to the configuration file's directory, then removes `.` and
/// `dir/..` pairs lexically (`config/../.drsync-state` becomes `.drsync-state`). Leading `..`
/// components are kept. No file system access: symbolic links are not followed.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out: Vec<Component<'_>> = Vec::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(part),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

fn storage_endpoint(text: &str, base: &Path) -> Result<String, String> {
    if let Some(dir) = text.strip_prefix("dir:") {
        if dir.trim().is_empty() {
            return Err("`dir:` names no directory".into());
        }
        return Ok(format!("dir:{}", resolve(base, Path::new(dir)).display()));
    }
    check_url(text)
}

/// Accepts `https://HOST[:PORT][/PATH]`, or `http://` to a loopback host only (bearer tokens and
/// keys never travel in clear text beyond this machine). Returns it without a trailing slash.
pub(crate) fn check_url(text: &str) -> Result<String, String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("`{text}` is not a URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains(char::is_whitespace) || authority.contains('@') {
        return Err(format!("`{text}` has no valid host"));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    match scheme {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "plain http is allowed only to a loopback address, not `{host}`"
            ));
        }
        other => return Err(format!("unsupported scheme `{other}` (use https)")),
    }
    Ok(text.trim_end_matches('/').to_owned())
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_guid(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}
