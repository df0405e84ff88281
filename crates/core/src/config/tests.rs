//! Configuration checks, data-driven: each case is a TOML text and the exact errors expected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use expect_test::{Expect, expect};

use super::*;
use crate::secret::SecretRef;
use crate::sku::SkuTier;
use crate::storage::StorageAccess;

/// A complete, valid configuration for a real tenant; cases edit it.
const VALID: &str = r#"
[azure]
tenant = "contoso.onmicrosoft.com"

[azure.credential]
kind = "client_secret"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "env:AZURE_CLIENT_SECRET"

[[storage]]
name = "neu-backups"
account = "drsyncneu"
region = "northeurope"
container = "apim-backups"
access = "system_identity"

[[service]]
name = "apim-weu"
subscription = "00000000-1111-2222-3333-444444444444"
resource_group = "rg-weu"
region = "westeurope"
sku = "Premium"
role = "primary"

[[service]]
name = "apim-neu"
subscription = "00000000-1111-2222-3333-444444444444"
resource_group = "rg-neu"
region = "North Europe"
sku = "premium"
capacity = 2
role = "standby"

[[replication]]
from = "apim-weu"
to = ["apim-neu"]
storage = "neu-backups"
rpo = "1h"
retention = "14d"
"#;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("conf/drsync.toml"))
}

/// One line per error: `line:column field: message (hint)`.
fn render(errors: &ConfigErrors) -> String {
    let mut out = String::new();
    for e in errors {
        assert_eq!(e.file, PathBuf::from("conf/drsync.toml"));
        out.push_str(&format!(
            "{}:{} {}: {}",
            e.line, e.column, e.field, e.message
        ));
        if let Some(hint) = &e.hint {
            out.push_str(&format!(" (hint: {hint})"));
        }
        out.push('\n');
    }
    out
}

/// Parses `VALID` with `from` replaced by `to` and compares the errors.
fn check_edit(from: &str, to: &str, expect: Expect) {
    assert!(
        VALID.contains(from),
        "the base configuration has no `{from}`"
    );
    check(&VALID.replacen(from, to, 1), expect);
}

fn check(text: &str, expect: Expect) {
    match parse(text) {
        Ok(_) => expect.assert_eq("<valid>\n"),
        Err(errors) => expect.assert_eq(&render(&errors)),
    }
}

#[test]
fn valid_configuration_reads_fully() {
    let c = parse(VALID).unwrap();
    assert!(!c.is_embedded());
    assert_eq!(c.azure.tenant.as_deref(), Some("contoso.onmicrosoft.com"));
    assert_eq!(
        c.azure.endpoint,
        ArmEndpoint::Url("https://management.azure.com".into())
    );
    assert_eq!(c.azure.api_version, "2024-05-01");
    assert_eq!(c.azure.authority_host, "https://login.microsoftonline.com");
    assert_eq!(
        c.azure.credential,
        Some(CredentialConfig::ClientSecret {
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: SecretRef::Env("AZURE_CLIENT_SECRET".into()),
        })
    );
    assert_eq!(c.embedded, None);
    assert_eq!(c.state.dir, PathBuf::from("conf/.drsync-state"));
    assert_eq!(c.limits, Limits::default());
    let neu = c.service("APIM-NEU").unwrap();
    assert_eq!(neu.region.name(), "northeurope");
    assert_eq!((neu.sku.tier, neu.sku.capacity), (SkuTier::Premium, 2));
    assert_eq!(c.service("apim-weu").unwrap().sku.capacity, 1);
    let s = c.storage("neu-backups").unwrap();
    assert_eq!(s.target.endpoint, "https://drsyncneu.blob.core.windows.net");
    assert_eq!(s.target.access, StorageAccess::SystemAssignedIdentity);
    let r = &c.replications[0];
    assert_eq!(r.name, "apim-weu");
    assert_eq!(
        (r.rpo, r.retention, r.rto),
        (
            Duration::from_secs(3600),
            Duration::from_secs(14 * 86_400),
            None
        )
    );
    assert_eq!(r.verify, VerifyConfig::default());
    let edges = c.replication_targets();
    assert_eq!(edges.len(), 1);
    assert_eq!(
        (edges[0].from.name(), edges[0].to.name()),
        ("apim-weu", "apim-neu")
    );
    assert_eq!(c.replications_from("apim-weu").count(), 1);
    assert_eq!(c.services_with_role(Role::Standby).count(), 1);
    assert_eq!(c.base_dir(), Path::new("conf"));
}

#[test]
fn embedded_configuration_needs_no_tenant_and_resolves_paths() {
    let text = r#"
[azure]
endpoint = "embedded"
[embedded]
time_scale = 0.01
[state]
dir = "../state"
[[storage]]
name = "local"
account = "devstore1"
region = "westeurope"
container = "backups"
endpoint = "dir:storage/devstore1"
access = "account_key"
key = "file:keys/devstore1"
[[service]]
name = "a"
subscription = "00000000-1111-2222-3333-444444444444"
resource_group = "rg"
region = "westeurope"
sku = "Developer"
role = "primary"
"#;
    let c = parse(text).unwrap();
    assert!(c.is_embedded());
    assert_eq!(c.azure.credential, None);
    assert_eq!(c.embedded, Some(EmbeddedConfig { time_scale: 0.01 }));
    assert_eq!(c.state.dir, PathBuf::from("state"));
    let s = &c.storage[0];
    assert_eq!(s.target.endpoint, "dir:conf/storage/devstore1");
    assert_eq!(
        s.endpoint(),
        StorageEndpoint::Dir("conf/storage/devstore1".into())
    );
    assert_eq!(
        s.target.access,
        StorageAccess::AccountKey(SecretRef::File("conf/keys/devstore1".into()))
    );
    assert!(c.replications.is_empty());
}

#[test]
fn demo_and_example_configurations_are_valid() {
    for file in ["demo.toml", "example.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../config")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = Config::parse(&text, &path) {
            panic!("{file} is invalid:\n{e}");
        }
    }
}

#[test]
fn errors_render_with_file_position_snippet_and_hint() {
    let errors = parse(&VALID.replacen("sku = \"premium\"", "sku = \"Gold\"", 1)).unwrap_err();
    expect![[r#"
        error: conf/drsync.toml:30:7: service[1].sku: unknown SKU `Gold` (expected one of Developer, Basic, Standard, Premium, Consumption, Isolated, BasicV2, StandardV2)
           |
        30 | sku = "Gold"
           |       ^^^^^^
           = hint: backup/restore works on "Developer", "Basic", "Standard" and "Premium"

        1 error in conf/drsync.toml"#]]
    .assert_eq(&errors.to_string());
}

#[test]
fn all_errors_are_reported_in_source_order() {
    let text = VALID
        .replacen("region = \"westeurope\"", "region = \"westeurop\"", 1)
        .replacen("sku = \"premium\"", "sku = \"Consumption\"", 1)
        .replacen("retention = \"14d\"", "retention = \"45d\"", 1);
    check(
        &text,
        expect![[r#"
            21:10 service[0].region: unknown Azure region `westeurop` (use the ARM name such as `westeurope` or the display name such as `West Europe`) (hint: did you mean "westeurope"?)
            30:7 service[1].sku: SKU `Consumption` does not support backup and restore (hint: Azure API Management backup/restore works only on Developer, Basic, Standard and Premium; not on Consumption, BasicV2, StandardV2 or Isolated)
            39:13 replication[0].retention: retention "45d" is longer than 30 days (hint: Azure cannot restore a backup older than 30 days, so keeping it longer is useless: use at most "30d")
        "#]],
    );
}

#[test]
fn toml_syntax_errors_have_positions() {
    check(
        "[azure]\ntenant = \"contoso.onmicrosoft.com\nendpoint = \"embedded\"\n",
        expect![[r#"
            2:34 <toml>: TOML syntax error: invalid basic string, expected `"` (hint: check quotes, commas, `=` between key and value and closing brackets; an unclosed `[` or `"` is reported where the parser noticed it, which can be a later line)
        "#]],
    );
    check(
        "[[service]]\nname = \"a\"\nname = \"b\"\n",
        expect![[r#"
            3:1 <toml>: TOML syntax error: duplicate key (hint: each key and each [table] may appear once; use [[name]] for a repeated entry)
        "#]],
    );
}

#[test]
fn unknown_keys_are_typos_with_suggestions() {
    check_edit(
        "rpo = \"1h\"",
        "rpo = \"1h\"\nretension = \"7d\"",
        expect![[r#"
            39:1 replication[0].retension: unknown key in `replication[0]`: `retension` (hint: did you mean `retention`?)
        "#]],
    );
    check_edit(
        "[azure]",
        "[azure]\nfoo = 1",
        expect![[r#"
            3:1 azure.foo: unknown key in `azure`: `foo` (hint: known keys here: tenant, authority_host, endpoint, api_version, credential)
        "#]],
    );
    check(
        &format!("{VALID}\n[limit]\nconcurrency = 2\n"),
        expect![[r#"
            41:2 limit: unknown section or key: `limit` (hint: did you mean `limits`?)
        "#]],
    );
}

#[test]
fn required_fields_point_at_their_table() {
    check_edit(
        "region = \"North Europe\"\n",
        "",
        expect![[r#"
            25:1 service[1].region: missing required field `region` in `service[1]` (hint: set region to an Azure region such as "westeurope")
        "#]],
    );
    check_edit(
        "tenant = \"contoso.onmicrosoft.com\"\n",
        "",
        expect![[r#"
            2:1 azure.tenant: missing required field `tenant` in `azure` (hint: set tenant = "<directory id GUID>" or "contoso.onmicrosoft.com" (only the embedded emulator needs none))
        "#]],
    );
    check(
        "service = []\n[azure]\nendpoint = \"embedded\"\n",
        expect![[r#"
            1:1 service: no `[[service]]` defined (hint: add at least one [[service]] with name, subscription, resource_group, region, sku and role)
        "#]],
    );
    check(
        "[azure]\nendpoint = \"embedded\"\n",
        expect![[r#"
            1:1 service: no `[[service]]` defined (hint: add at least one [[service]] with name, subscription, resource_group, region, sku and role)
        "#]],
    );
}

#[test]
fn service_rules() {
    check_edit(
        "name = \"apim-neu\"",
        "name = \"apim_neu.prod\"",
        expect![[r#"
            26:8 service[1].name: service name `apim_neu.prod` is invalid: 1-50 characters, a letter first, then letters, digits or hyphens, not ending in a hyphen (hint: API Management names are 1-50 characters: a letter first, then letters, digits or hyphens, not ending in a hyphen (no dots or underscores))
            36:7 replication[0].to[0]: unknown service `apim-neu` (hint: did you mean "apim-weu"?)
        "#]],
    );
    check_edit(
        "name = \"apim-neu\"",
        "name = \"APIM-WEU\"",
        expect![[r#"
            26:8 service[1].name: duplicate service name `APIM-WEU` (hint: service[0] at line 18 is already named `apim-weu`; names must be unique (compared ignoring case, as Azure does))
            36:7 replication[0].to[0]: unknown service `apim-neu` (hint: did you mean "apim-weu"?)
        "#]],
    );
    check_edit(
        "subscription = \"00000000-1111-2222-3333-444444444444\"",
        "subscription = \"contoso-prod\"",
        expect![[r#"
            19:16 service[0].subscription: subscription `contoso-prod` is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) (hint: use the subscription id (a GUID, see `az account show --query id`), not its display name)
        "#]],
    );
    check_edit(
        "sku = \"Premium\"",
        "sku = \"StandardV2\"",
        expect![[r#"
            22:7 service[0].sku: SKU `StandardV2` does not support backup and restore (hint: Azure API Management backup/restore works only on Developer, Basic, Standard and Premium; not on Consumption, BasicV2, StandardV2 or Isolated)
        "#]],
    );
    check_edit(
        "sku = \"Premium\"",
        "sku = \"Premuim\"",
        expect![[r#"
            22:7 service[0].sku: unknown SKU `Premuim` (expected one of Developer, Basic, Standard, Premium, Consumption, Isolated, BasicV2, StandardV2) (hint: did you mean "Premium"?)
        "#]],
    );
    check_edit(
        "sku = \"Premium\"",
        "sku = \"Developer\"\ncapacity = 3",
        expect![[r#"
            23:12 service[0].capacity: capacity 3 is out of range for the Developer tier (hint: capacity counts scale units: at least 1 and at most 1)
        "#]],
    );
    check_edit(
        "role = \"standby\"",
        "role = \"secondary\"",
        expect![[r#"
            32:8 service[1].role: unknown role `secondary` (hint: expected one of "primary", "standby", "staging")
        "#]],
    );
    check_edit(
        "capacity = 2",
        "capacity = \"2\"",
        expect![[r#"
            31:12 service[1].capacity: expected an integer, found the string "2" (hint: write a whole number without quotes: capacity = 2)
        "#]],
    );
}

#[test]
fn replication_rules() {
    check_edit(
        "from = \"apim-weu\"",
        "from = \"apim-wue\"",
        expect![[r#"
            35:8 replication[0].from: unknown service `apim-wue` (hint: did you mean "apim-weu"?)
        "#]],
    );
    check_edit(
        "storage = \"neu-backups\"",
        "storage = \"backups\"",
        expect![[r#"
            37:11 replication[0].storage: unknown storage `backups` (hint: defined storage: neu-backups)
        "#]],
    );
    check_edit(
        "rpo = \"1h\"",
        "rpo = \"abc\"",
        expect![[r#"
            38:7 replication[0].rpo: `rpo` = "abc" is not a duration (hint: write a duration such as "30m", "1h", "6h" or "14d" (units: s, m, h, d))
        "#]],
    );
    check_edit(
        "rpo = \"1h\"",
        "rpo = \"20d\"",
        expect![[r#"
            38:7 replication[0].rpo: RPO "20d" is longer than retention "14d" (hint: backups would expire before the next one is due: make retention at least the RPO)
        "#]],
    );
    check_edit(
        "rpo = \"1h\"",
        "rpo = \"0s\"",
        expect![[r#"
            38:7 replication[0].rpo: `rpo` must be longer than zero (hint: write a duration such as "30m", "1h", "6h" or "14d" (units: s, m, h, d))
        "#]],
    );
    check_edit(
        "to = [\"apim-neu\"]",
        "to = []",
        expect![[r#"
            36:6 replication[0].to: `to` is empty (hint: list at least one target service)
        "#]],
    );
    check_edit(
        "to = [\"apim-neu\"]",
        "to = \"apim-neu\"",
        expect![[r#"
            <valid>
        "#]],
    );
    check_edit(
        "to = [\"apim-neu\"]",
        "to = [\"apim-neu\", \"apim-neu\", 3]",
        expect![[r#"
            36:19 replication[0].to[1]: target `apim-neu` is listed twice (hint: list each target once)
            36:31 replication[0].to[2]: expected a string, found the integer 3 (hint: write each element in quotes, as in ["a", "b"])
        "#]],
    );
    check(
        &format!(
            "{VALID}\n[[replication]]\nfrom = \"apim-weu\"\nto = [\"apim-neu\"]\nstorage = \"neu-backups\"\nrpo = \"2h\"\nretention = \"1d\"\n"
        ),
        expect![[r#"
            42:8 replication[1].name: duplicate replication name `apim-weu` (hint: replication[0] at line 35 is already named `apim-weu`; names must be unique)
        "#]],
    );
}

#[test]
fn secrets_must_be_references_and_are_never_echoed() {
    let leaked = "Zx8Q~abcdefghijklmnopqrstuvwxyz0123456789";
    let errors = parse(&VALID.replacen("env:AZURE_CLIENT_SECRET", leaked, 1)).unwrap_err();
    check(
        &VALID.replacen("env:AZURE_CLIENT_SECRET", leaked, 1),
        expect![[r#"
            8:17 azure.credential.client_secret: `client_secret` holds a literal value; secrets must not be written in the configuration (hint: keep the secret out of the file: write client_secret = "env:AZURE_CLIENT_SECRET" or "file:/path/to/secret"; then rotate the secret, since it was stored in plain text)
        "#]],
    );
    let rendered = errors.to_string();
    assert!(!rendered.contains("Zx8Q"), "{rendered}");
    assert!(!format!("{errors:?}").contains("Zx8Q"));

    // A storage key in plain text, and a key on the wrong access kind.
    let text = VALID.replacen(
        "access = \"system_identity\"",
        "access = \"account_key\"\nkey = \"Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==\"",
        1,
    );
    let errors = parse(&text).unwrap_err();
    assert!(!errors.to_string().contains("Eby8"));
    assert_eq!(errors.errors[0].field, "storage[0].key");
    check_edit(
        "access = \"system_identity\"",
        "access = \"system_identity\"\nkey = \"env:KEY\"",
        expect![[r#"
            16:1 storage[0].key: `key` is only used with access = "account_key" (hint: remove `key`, or set access = "account_key")
        "#]],
    );
    check_edit(
        "access = \"system_identity\"",
        "access = \"user_identity\"",
        expect![[r#"
            10:1 storage[0].client_id: missing required field `client_id` in `storage[0]` (hint: set client_id to the user-assigned identity's client id)
        "#]],
    );
    check_edit(
        "access = \"system_identity\"",
        "access = \"account_key\"",
        expect![[r#"
            10:1 storage[0].key: missing required field `key` in `storage[0]` (hint: write key = "env:DRSYNC_STORAGE_KEY" or "file:/path/to/secret")
        "#]],
    );
}

#[test]
fn azure_section_rules() {
    check_edit(
        "[azure]",
        "[azure]\nendpoint = \"http://arm.contoso.com\"",
        expect![[r#"
            3:12 azure.endpoint: invalid ARM endpoint: plain http is allowed only to a loopback address, not `arm.contoso.com` (hint: use "https://management.azure.com", "embedded" for the built-in emulator, or http://127.0.0.1:PORT for a local emulator)
        "#]],
    );
    check_edit(
        "[azure]",
        "[azure]\nendpoint = \"http://127.0.0.1:8443/\"\napi_version = \"2014-02-14\"",
        expect![[r#"
            4:15 azure.api_version: api-version `2014-02-14` has no API Management backup/restore (it came with 2016-07-07) (hint: use one of the stable versions 2016-07-07, 2016-10-10, 2017-03-01, 2018-01-01, 2019-01-01, 2019-12-01, 2020-12-01, 2021-08-01, 2022-08-01, 2024-05-01 (the newest is "2024-05-01"), or a YYYY-MM-DD-preview version from 2016-07-07 on)
        "#]],
    );
    check_edit(
        "[azure]",
        "[azure]\napi_version = \"2020-12-01\"",
        expect![[r#"
            16:10 storage[0].access: managed-identity access needs api-version 2021-04-01-preview or later, but azure.api_version is 2020-12-01 (hint: set azure.api_version = "2024-05-01", or use access = "account_key")
        "#]],
    );
    check_edit(
        "kind = \"client_secret\"",
        "kind = \"managed-identity\"",
        expect![[r#"
            6:8 azure.credential.kind: unknown credential kind `managed-identity` (hint: did you mean "managed_identity"? expected one of "client_secret", "managed_identity", "azure_cli", "static_token")
        "#]],
    );
    check_edit(
        "kind = \"client_secret\"",
        "kind = \"azure_cli\"",
        expect![[r#"
            7:1 azure.credential.client_id: `client_id` is not used with kind = "azure_cli" (hint: remove it, or change `kind`; azure_cli uses no other keys)
            8:1 azure.credential.client_secret: `client_secret` is not used with kind = "azure_cli" (hint: remove it, or change `kind`; azure_cli uses no other keys)
        "#]],
    );
    check(
        &format!("{VALID}\n[embedded]\ntime_scale = 0.5\n"),
        expect![[r#"
            41:1 embedded: `[embedded]` is only used with azure.endpoint = "embedded" (hint: remove the [embedded] section, or set endpoint = "embedded" under [azure])
        "#]],
    );
}

#[test]
fn storage_rules() {
    check_edit(
        "account = \"drsyncneu\"",
        "account = \"DrSync-NEU\"",
        expect![[r#"
            12:11 storage[0].account: invalid storage account name `DrSync-NEU` (hint: storage account names are 3-24 characters, lowercase letters and digits only)
        "#]],
    );
    check_edit(
        "container = \"apim-backups\"",
        "container = \"APIM_Backups\"",
        expect![[r#"
            14:13 storage[0].container: invalid container name `APIM_Backups` (hint: container names are 3-63 characters: lowercase letters, digits and single hyphens, starting and ending with a letter or digit)
        "#]],
    );
    check_edit(
        "access = \"system_identity\"",
        "access = \"system_identity\"\nendpoint = \"http://10.0.0.5:10000/devstoreaccount1\"",
        expect![[r#"
            16:12 storage[0].endpoint: invalid storage endpoint: plain http is allowed only to a loopback address, not `10.0.0.5` (hint: use an https:// URL, http://127.0.0.1:PORT/ACCOUNT for Azurite, or dir:PATH for a local directory; omit it for https://{account}.blob.core.windows.net)
        "#]],
    );
    check_edit(
        "access = \"system_identity\"",
        "access = \"system_identity\"\nendpoint = \"http://127.0.0.1:10000/devstoreaccount1\"",
        expect![[r#"
            <valid>
        "#]],
    );
}

#[test]
fn limits_rules() {
    check(
        &format!(
            "{VALID}\n[limits]\nconcurrency = 0\narm_reads_per_second = -1\narm_write_burst = 12\n"
        ),
        expect![[r#"
            42:15 limits.concurrency: `concurrency` must be between 1 and 256 (hint: the default is 8)
            43:24 limits.arm_reads_per_second: `arm_reads_per_second` must be a number greater than 0 (hint: the default is 22.5 (90 % of ARM's documented bucket refill rate))
        "#]],
    );
}

#[test]
fn positions_count_characters_not_bytes() {
    let c = error::Collector::new("f".into(), "a = \"é\"\nb = 1\n");
    assert_eq!(c.position(0), (1, 1));
    assert_eq!(c.position(5), (1, 6)); // the é
    assert_eq!(c.position(7), (1, 7)); // the closing quote, after a two-byte character
    assert_eq!(c.position(9), (2, 1));
}

#[test]
fn edit_distance_and_suggestions() {
    assert_eq!(read::edit_distance("retension", "retention"), 1);
    assert_eq!(
        read::closest("retension", &["rpo", "retention"]),
        Some("retention")
    );
    assert_eq!(read::closest("zzz", &["rpo", "retention"]), None);
}

#[test]
fn urls_are_https_or_loopback_http() {
    assert_eq!(
        check::check_url("https://management.azure.com/").unwrap(),
        "https://management.azure.com"
    );
    assert!(check::check_url("http://localhost:8080").is_ok());
    assert!(check::check_url("http://[::1]:8080").is_ok());
    assert!(check::check_url("http://127.0.0.2:8080").is_ok());
    assert!(check::check_url("http://example.com").is_err());
    assert!(check::check_url("ftp://example.com").is_err());
    assert!(check::check_url("https://").is_err());
    assert!(check::check_url("management.azure.com").is_err());
}

#[test]
fn durations_format_as_written() {
    let f = |s| format_duration(Duration::from_secs(s));
    assert_eq!(f(14 * 86_400), "14d");
    assert_eq!(f(3_600), "1h");
    assert_eq!(f(5_400), "1h 30m");
    assert_eq!(f(45), "45s");
    assert_eq!(format_duration(Duration::from_millis(20)), "20ms");
}

#[test]
fn relative_paths_resolve_lexically_against_the_config_directory() {
    let r = |base: &str, p: &str| check::resolve(Path::new(base), Path::new(p));
    assert_eq!(
        r("config", "../.drsync-state"),
        PathBuf::from(".drsync-state")
    );
    assert_eq!(r("config", "./state/./x"), PathBuf::from("config/state/x"));
    assert_eq!(r("", "../up"), PathBuf::from("../up"));
    assert_eq!(r("a/b", "../../.."), PathBuf::from(".."));
    assert_eq!(r("config", ".."), PathBuf::from("."));
    assert_eq!(r("/etc/drsync", "../../../x"), PathBuf::from("/x"));
    assert_eq!(
        r("/etc/drsync", "/var/lib/drsync"),
        PathBuf::from("/var/lib/drsync")
    );
}

/// Every single-line mutation of a valid file (line removed, value replaced by each TOML type)
/// yields a `Config` or positioned errors with hints; never a panic, never an empty error list.
#[test]
fn mutations_never_panic_and_always_explain() {
    let lines: Vec<&str> = VALID.lines().collect();
    let replacements = [
        "1",
        "-7",
        "2.5",
        "true",
        "\"x\"",
        "\"\"",
        "[]",
        "[1, \"a\"]",
        "{}",
        "{ a = 1 }",
    ];
    let mut cases = Vec::new();
    for i in 0..lines.len() {
        let mut without = lines.clone();
        without.remove(i);
        cases.push(without.join("\n"));
        if let Some((key, _)) = lines[i].split_once(" = ") {
            for value in replacements {
                let mut changed = lines.clone();
                let line = format!("{key} = {value}");
                changed[i] = &line;
                cases.push(changed.join("\n"));
            }
        }
    }
    assert!(cases.len() > 300, "{}", cases.len());
    let mut rejected = 0;
    for text in &cases {
        if let Err(errors) = parse(text) {
            rejected += 1;
            assert!(!errors.is_empty());
            let total_lines = text.lines().count().max(1);
            for e in &errors {
                assert!(e.line >= 1 && e.line <= total_lines + 1, "{e}\n{text}");
                assert!(e.column >= 1, "{e}");
                assert!(!e.field.is_empty(), "{e}");
                assert!(e.hint.is_some(), "no hint: {e}\n--- in ---\n{text}");
            }
        }
    }
    assert!(
        rejected > cases.len() / 2,
        "most mutations must be caught: {rejected}/{}",
        cases.len()
    );
}

/// `VALID` with hooks appended to its replication.
fn with_hooks(hooks: &str) -> String {
    format!("{VALID}{hooks}")
}

#[test]
fn replication_hooks_read_with_defaults() {
    let config = parse(&with_hooks(
        r#"
[[replication.hooks]]
name = "smoke-test"
phase = "verify"
when = "after"
command = "curl -fsS \"$DRSYNC_TARGET_GATEWAY_URL/status-0123456789abcdef\""
timeout = "2m"

[[replication.hooks]]
phase = "Promote"
when = "after"
command = ["./switch-dns.sh", "--to", "northeurope"]
kinds = ["failover", "failback"]
env = { ZONE = "contoso.com", TOKEN_HINT = "env:NOT_A_REFERENCE" }
"#,
    ))
    .unwrap();
    let hooks = &config.replications[0].hooks;
    assert_eq!(hooks.len(), 2);
    assert_eq!(
        hooks[0],
        HookConfig {
            name: Some("smoke-test".into()),
            phase: HookPhase::Verify,
            when: HookWhen::After,
            command: HookCommandConfig::Shell(
                "curl -fsS \"$DRSYNC_TARGET_GATEWAY_URL/status-0123456789abcdef\"".into()
            ),
            timeout: Duration::from_secs(120),
            env: Default::default(),
            kinds: Vec::new(),
        }
    );
    let h = &hooks[1];
    assert_eq!(h.name, None);
    assert_eq!((h.phase, h.when), (HookPhase::Promote, HookWhen::After));
    assert_eq!(
        h.command,
        HookCommandConfig::Argv(vec![
            "./switch-dns.sh".into(),
            "--to".into(),
            "northeurope".into()
        ])
    );
    assert_eq!(h.timeout, DEFAULT_HOOK_TIMEOUT);
    assert_eq!(h.kinds, [HookKind::Failover, HookKind::Failback]);
    // Environment values are literals: an `env:` prefix is not resolved.
    assert_eq!(h.env["TOKEN_HINT"], "env:NOT_A_REFERENCE");
    assert_eq!(h.env["ZONE"], "contoso.com");
    // No hooks: an empty list.
    assert!(parse(VALID).unwrap().replications[0].hooks.is_empty());
}

#[test]
fn replication_hook_rules() {
    check(
        &with_hooks(
            r#"
[[replication.hooks]]
name = "bad name!"
phase = "restored"
when = "during"
command = "true"
timeout = "soon"
"#,
        ),
        expect![[r#"
            42:8 replication[0].hooks[0].name: invalid hook name `bad name!` (hint: use 1-64 letters, digits, `-`, `_` or `.`)
            43:9 replication[0].hooks[0].phase: unknown phase `restored` (hint: did you mean "restore"? phases: preflight, backup, restore, overrides, verify, promote)
            44:8 replication[0].hooks[0].when: `when` = "during" is neither before nor after (hint: use "before" (runs before the phase's work) or "after" (runs once it succeeded))
            46:11 replication[0].hooks[0].timeout: `timeout` = "soon" is not a duration (hint: write a duration such as "30m", "1h", "6h" or "14d" (units: s, m, h, d))
        "#]],
    );
    check(
        &with_hooks(
            r#"
[[replication.hooks]]
phase = "verify"
when = "after"
command = ["", "x"]
timeout = "0s"
kinds = ["drill", "rehearsal"]
env = { DRSYNC_EDGE = "x", "1BAD" = "y", N = 3 }
shell = "bash"
"#,
        ),
        expect![[r#"
            44:11 replication[0].hooks[0].command: the hook's command has no program (hint: write the program first, as in ["./switch-dns.sh", "--to", "northeurope"])
            45:11 replication[0].hooks[0].timeout: `timeout` must be longer than zero (hint: write a duration such as "30m", "1h", "6h" or "14d" (units: s, m, h, d))
            46:19 replication[0].hooks[0].kinds[1]: unknown kind of run `rehearsal` (hint: kinds: drill, clone, failover, failback)
            47:9 replication[0].hooks[0].env.DRSYNC_EDGE: `DRSYNC_EDGE` cannot be a hook environment variable (hint: `DRSYNC_*` variables are set by drsync itself; choose another name)
            47:28 replication[0].hooks[0].env.1BAD: `1BAD` cannot be a hook environment variable (hint: use letters, digits and `_`, not starting with a digit)
            47:46 replication[0].hooks[0].env.N: expected a string, found the integer 3 (hint: write the value in quotes: N = "...")
            48:1 replication[0].hooks[0].shell: unknown key in `replication[0].hooks[0]`: `shell` (hint: known keys here: name, phase, when, command, timeout, env, kinds)
        "#]],
    );
    check(
        &with_hooks(
            r#"
[[replication.hooks]]
command = "  "
kinds = []
"#,
        ),
        expect![[r#"
            41:1 replication[0].hooks[0].phase: missing required field `phase` in `replication[0].hooks[0]` (hint: set phase to one of: preflight, backup, restore, overrides, verify, promote)
            41:1 replication[0].hooks[0].when: missing required field `when` in `replication[0].hooks[0]` (hint: set when to "before" or "after")
            42:11 replication[0].hooks[0].command: the hook's command is empty (hint: write the command line to run, or an array ["program", "arg"])
            43:9 replication[0].hooks[0].kinds: `kinds` is empty: the hook would never run (hint: list some of drill, clone, failover, failback, or leave `kinds` out for all)
        "#]],
    );
    check(
        &with_hooks(
            r#"
[[replication.hooks]]
phase = "verify"
when = "after"
command = 42
"#,
        ),
        expect![[r#"
            44:11 replication[0].hooks[0].command: expected a string, found the integer 42 (hint: put the value in quotes: command = "...")
        "#]],
    );
}

#[test]
fn api_versions_must_be_ones_arm_knows() {
    for ok in [
        "2024-05-01",
        "2021-08-01",
        "2022-08-01",
        "2023-09-01-preview",
    ] {
        assert!(
            parse(&VALID.replacen("[azure]", &format!("[azure]\napi_version = \"{ok}\""), 1))
                .is_ok(),
            "{ok} is refused"
        );
    }
    check_edit(
        "[azure]",
        "[azure]\napi_version = \"2099-01-01\"",
        expect![[r#"
            3:15 azure.api_version: api-version `2099-01-01` is not a stable API Management api-version; ARM would refuse every call (hint: use one of the stable versions 2016-07-07, 2016-10-10, 2017-03-01, 2018-01-01, 2019-01-01, 2019-12-01, 2020-12-01, 2021-08-01, 2022-08-01, 2024-05-01 (the newest is "2024-05-01"), or a YYYY-MM-DD-preview version from 2016-07-07 on)
        "#]],
    );
    check_edit(
        "[azure]",
        "[azure]\napi_version = \"2024-13-45-preview\"",
        expect![[r#"
            3:15 azure.api_version: api-version `2024-13-45-preview` is not of the form YYYY-MM-DD or YYYY-MM-DD-preview with a real date (hint: use one of the stable versions 2016-07-07, 2016-10-10, 2017-03-01, 2018-01-01, 2019-01-01, 2019-12-01, 2020-12-01, 2021-08-01, 2022-08-01, 2024-05-01 (the newest is "2024-05-01"), or a YYYY-MM-DD-preview version from 2016-07-07 on)
        "#]],
    );
}

#[test]
fn one_storage_account_and_container_is_one_entry() {
    let second = "\n[[storage]]\nname = \"neu-backups-2\"\naccount = \"drsyncneu\"\nregion = \"northeurope\"\ncontainer = \"apim-backups\"\naccess = \"system_identity\"\n";
    check(
        &format!("{VALID}{second}"),
        expect![[r#"
            43:11 storage[1].account: storage account `drsyncneu` and container `apim-backups` are already storage[0] (`neu-backups`) (hint: refer to `neu-backups` from every replication that uses this container, or give this entry another container)
        "#]],
    );
    // Another container of the same account is fine; the same account in another region is not.
    assert!(
        parse(&format!(
            "{VALID}{}",
            second.replace("apim-backups", "other")
        ))
        .is_ok()
    );
    check(
        &format!(
            "{VALID}{}",
            second
                .replace("apim-backups", "other")
                .replace("northeurope", "West Europe")
        ),
        expect![[r#"
            43:11 storage[1].account: storage account `drsyncneu` is in region northeurope in storage[0] (`neu-backups`) but in West Europe here; an account lives in one region (hint: correct the region of one of the two entries, or use another account)
        "#]],
    );
}

#[test]
fn secrets_in_misspelt_or_mistyped_fields_are_not_echoed() {
    let literal = "Xy9~abcDEFghiJKLmnoPQRstu.vwx123";
    for (from, to) in [
        // A misspelt key: the unknown-key error shows the key only.
        ("client_secret = ", "client_secert = "),
        // A secret pasted after `env:`.
        (
            "\"env:AZURE_CLIENT_SECRET\"",
            "\"env:Xy9~abcDEFghiJKLmnoPQRstu.vwx123\"",
        ),
        ("\"env:AZURE_CLIENT_SECRET\"", "12345678901234567890"),
    ] {
        let text = VALID
            .replacen("env:AZURE_CLIENT_SECRET", literal, 1)
            .replacen(from, to, 1);
        let text = if from.starts_with('"') {
            VALID.replacen(from, to, 1)
        } else {
            text
        };
        let errors = parse(&text).unwrap_err();
        let shown = format!("{errors}\n{errors:?}");
        assert!(!shown.contains("Xy9~"), "{shown}");
        assert!(!shown.contains("1234567890"), "{shown}");
        assert!(shown.contains("client_sec"), "{shown}");
    }
    let errors = parse(&VALID.replacen("client_secret = ", "client_secert = ", 1)).unwrap_err();
    let unknown = errors
        .iter()
        .find(|e| e.field.ends_with("client_secert"))
        .unwrap();
    assert_eq!(
        unknown.snippet,
        Some(("client_secert = ...".to_owned(), 0..13))
    );
}

#[test]
fn byte_order_mark_and_windows_line_endings_keep_columns() {
    let text = VALID.replacen("sku = \"premium\"", "sku =\t\"Gold\"", 1);
    let plain = render(&parse(&text).unwrap_err());
    let windows = format!("\u{feff}{}", text.replace('\n', "\r\n"));
    assert_eq!(render(&parse(&windows).unwrap_err()), plain);
    expect![[r#"
        30:7 service[1].sku: unknown SKU `Gold` (expected one of Developer, Basic, Standard, Premium, Consumption, Isolated, BasicV2, StandardV2) (hint: backup/restore works on "Developer", "Basic", "Standard" and "Premium")
    "#]]
    .assert_eq(&plain);
    // On the first line, the mark itself is not a column.
    let errors = parse("\u{feff}[azur]\n").unwrap_err();
    let unknown = errors.iter().find(|e| e.field == "azur").unwrap();
    assert_eq!((unknown.line, unknown.column), (1, 2));
}

#[test]
fn a_bare_number_for_a_duration_asks_for_a_unit() {
    check_edit(
        "rpo = \"1h\"",
        "rpo = 3600",
        expect![[r#"
        38:7 replication[0].rpo: expected a string, found the integer 3600 (hint: write a duration with its unit, in quotes: rpo = "1h" (units: s, m, h, d))
    "#]],
    );
}
