//! End-to-end: `drsync validate` on configurations with the mistakes users make.
//!
//! Each fixture in `tests/fixtures/bad-config/` holds one realistic mistake (one holds several).
//! The real binary must exit with 2 (configuration error), print nothing on stdout, and name on
//! stderr the fixture file, the exact `line:column`, the field and what is wrong, for every
//! error. See: #2.

use drsync_tests::bin::{Run, run};

/// An expected error: line, column, field, and a fragment of the message.
type Expected = (usize, usize, &'static str, &'static str);

/// Runs `drsync validate` on a fixture and checks every expected error, in order, and the count.
#[track_caller]
fn check(fixture: &str, expected: &[Expected]) -> Run {
    let path = format!("tests/fixtures/bad-config/{fixture}.toml");
    let out = run(["validate", "--config", path.as_str()]);
    out.assert_code(2);
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout for a bad config:\n{}",
        out.stdout
    );
    let headers: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        headers.len(),
        expected.len(),
        "error count for {fixture}:\n{}",
        out.stderr
    );
    for (header, (line, column, field, fragment)) in headers.iter().zip(expected) {
        let prefix = format!("error: {path}:{line}:{column}: {field}: ");
        assert!(
            header.starts_with(&prefix),
            "expected `{prefix}…`, got\n{header}\n\n{}",
            out.stderr
        );
        assert!(
            header.contains(fragment),
            "expected `{fragment}` in\n{header}"
        );
    }
    let n = expected.len();
    let summary = format!("{n} error{} in {path}", if n == 1 { "" } else { "s" });
    assert!(out.stderr.trim_end().ends_with(&summary), "{}", out.stderr);
    assert!(
        out.stderr.contains("= hint: "),
        "every fixture's error has a hint:\n{}",
        out.stderr
    );
    out
}

#[test]
fn unknown_sku() {
    let out = check(
        "unknown-sku",
        &[(30, 7, "service[1].sku", "unknown SKU `PremiumV3`")],
    );
    assert!(
        out.stderr.contains("did you mean \"Premium\"?"),
        "{}",
        out.stderr
    );
}

#[test]
fn duplicate_service() {
    let out = check(
        "duplicate-service",
        &[(
            34,
            8,
            "service[2].name",
            "duplicate service name `apim-contoso-neu`",
        )],
    );
    assert!(
        out.stderr.contains("service[1] at line 26"),
        "{}",
        out.stderr
    );
}

#[test]
fn replication_from_unknown_service() {
    let out = check(
        "replication-unknown-from",
        &[(
            35,
            8,
            "replication[0].from",
            "unknown service `apim-contoso-we`",
        )],
    );
    assert!(
        out.stderr.contains("did you mean \"apim-contoso-weu\"?"),
        "{}",
        out.stderr
    );
}

#[test]
fn retention_over_30_days() {
    check(
        "retention-45d",
        &[(
            39,
            13,
            "replication[0].retention",
            "retention \"45d\" is longer than 30 days",
        )],
    );
}

#[test]
fn rpo_not_a_duration() {
    check(
        "rpo-not-a-duration",
        &[(38, 7, "replication[0].rpo", "\"abc\" is not a duration")],
    );
}

#[test]
fn rpo_longer_than_retention() {
    check(
        "rpo-longer-than-retention",
        &[(
            38,
            7,
            "replication[0].rpo",
            "RPO \"30d\" is longer than retention \"14d\"",
        )],
    );
}

#[test]
fn literal_client_secret_is_refused_and_not_echoed() {
    let out = check(
        "literal-client-secret",
        &[(
            8,
            17,
            "azure.credential.client_secret",
            "holds a literal value",
        )],
    );
    assert!(
        !out.stderr.contains("s3cr3t"),
        "the secret leaked:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("env:AZURE_CLIENT_SECRET"),
        "{}",
        out.stderr
    );
}

#[test]
fn literal_storage_key_is_refused_and_not_echoed() {
    let out = check(
        "literal-storage-key",
        &[(16, 7, "storage[0].key", "holds a literal value")],
    );
    assert!(
        !out.stderr.contains("q9ZT4m"),
        "the key leaked:\n{}",
        out.stderr
    );
}

#[test]
fn invalid_service_name() {
    check(
        "invalid-service-name",
        &[(
            26,
            8,
            "service[1].name",
            "service name `apim_contoso.neu` is invalid",
        )],
    );
}

#[test]
fn consumption_sku_cannot_back_up() {
    check(
        "consumption-sku",
        &[(
            30,
            7,
            "service[1].sku",
            "SKU `Consumption` does not support backup and restore",
        )],
    );
}

#[test]
fn subscription_not_a_guid() {
    check(
        "subscription-not-guid",
        &[(
            19,
            16,
            "service[0].subscription",
            "subscription `Contoso Production` is not a GUID",
        )],
    );
}

#[test]
fn unknown_region() {
    let out = check(
        "unknown-region",
        &[(
            29,
            10,
            "service[1].region",
            "unknown Azure region `north-europe`",
        )],
    );
    assert!(
        out.stderr.contains("did you mean \"northeurope\"?"),
        "{}",
        out.stderr
    );
}

#[test]
fn toml_syntax_error() {
    // The array opened on line 36 is never closed; the parser notices on the next line.
    check(
        "toml-syntax-error",
        &[(37, 1, "<toml>", "TOML syntax error")],
    );
}

#[test]
fn missing_required_field() {
    check(
        "missing-required-field",
        &[(
            25,
            1,
            "service[1].resource_group",
            "missing required field `resource_group`",
        )],
    );
}

#[test]
fn storage_account_name() {
    check(
        "storage-account-name",
        &[(
            12,
            11,
            "storage[0].account",
            "invalid storage account name `Contoso-DR-NEU`",
        )],
    );
}

#[test]
fn misspelt_key() {
    check(
        "unknown-key-typo",
        &[
            (
                33,
                1,
                "replication[0].retention",
                "missing required field `retention`",
            ),
            (
                39,
                1,
                "replication[0].retension",
                "unknown key in `replication[0]`: `retension`",
            ),
        ],
    );
}

#[test]
fn replication_to_unknown_storage() {
    check(
        "replication-unknown-storage",
        &[(
            37,
            11,
            "replication[0].storage",
            "unknown storage `backups-neu`",
        )],
    );
}

#[test]
fn user_identity_without_client_id() {
    check(
        "user-identity-without-client-id",
        &[(
            10,
            1,
            "storage[0].client_id",
            "missing required field `client_id`",
        )],
    );
}

#[test]
fn plain_http_to_a_remote_arm_endpoint() {
    check(
        "plain-http-arm-endpoint",
        &[(
            4,
            12,
            "azure.endpoint",
            "plain http is allowed only to a loopback address",
        )],
    );
}

#[test]
fn every_mistake_is_reported_not_just_the_first() {
    check(
        "several-mistakes",
        &[
            (
                21,
                10,
                "service[0].region",
                "unknown Azure region `westeurop`",
            ),
            (
                22,
                7,
                "service[0].sku",
                "SKU `StandardV2` does not support backup and restore",
            ),
            (38, 7, "replication[0].rpo", "\"abc\" is not a duration"),
        ],
    );
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let out = run([
        "validate",
        "--config",
        "tests/fixtures/bad-config/does-not-exist.toml",
    ]);
    out.assert_code(2);
    assert!(
        out.stderr.contains(
            "cannot read configuration file `tests/fixtures/bad-config/does-not-exist.toml`"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn every_fixture_is_exercised() {
    let dir = drsync_tests::bin::repo_path("tests/fixtures/bad-config");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let this = include_str!("config_errors.rs");
    for name in &names {
        let stem = name.strip_suffix(".toml").expect("only .toml fixtures");
        assert!(
            this.contains(&format!("\"{stem}\"")),
            "fixture {name} has no test"
        );
    }
    assert!(names.len() >= 12, "the issue asks for at least 12 fixtures");
}

// Topology rules: `validate` also runs the planner's graph checks (`drsync_planner::Topology`),
// and points each problem at the replication entry that creates it.

#[test]
fn a_replication_cycle_is_refused() {
    let out = check(
        "topology-cycle",
        &[
            (
                44,
                8,
                "replication[1].from",
                "service `apim-contoso-neu` has role standby but is used as a source",
            ),
            (
                45,
                7,
                "replication[1].to[0]",
                "replication cycle: apim-contoso-neu -> apim-contoso-weu -> apim-contoso-neu",
            ),
            (
                45,
                7,
                "replication[1].to[0]",
                "service `apim-contoso-weu` has role primary but is used as a target",
            ),
        ],
    );
    assert!(
        out.stderr
            .contains("`contoso-dr` at line 36, `contoso-failback` at line 44"),
        "the hint names every replication on the cycle:\n{}",
        out.stderr
    );
}

#[test]
fn a_target_with_two_sources_is_refused() {
    let out = check(
        "target-two-sources",
        &[(
            53,
            7,
            "replication[1].to[0]",
            "service `apim-contoso-neu` is the target of more than one replication (`contoso-dr` from `apim-contoso-weu`, `fabrikam-dr` from `apim-fabrikam-weu`)",
        )],
    );
    assert!(
        out.stderr
            .contains("replication[0].to[0] at line 45, replication[1].to[0] at line 53"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_premium_to_standard_edge_is_refused() {
    let out = check(
        "sku-premium-to-standard",
        &[(
            37,
            7,
            "replication[0].to[0]",
            "SKU mismatch: source `apim-contoso-weu` is Premium (1 unit), target `apim-contoso-neu` is Standard (1 unit)",
        )],
    );
    assert!(
        out.stderr.contains("service[1].sku at line 31"),
        "the hint points at the target's SKU:\n{}",
        out.stderr
    );
}

#[test]
fn a_standby_in_its_primarys_region_is_refused() {
    let out = check(
        "standby-same-region",
        &[(
            37,
            7,
            "replication[0].to[0]",
            "standby `apim-contoso-weu2` is in westeurope, the same region as its primary `apim-contoso-weu`",
        )],
    );
    assert!(
        out.stderr
            .contains("the paired region of westeurope is northeurope"),
        "{}",
        out.stderr
    );
}

/// The same topology with the tier fixed validates; with its backups moved into the primary's
/// region it still validates, with a positioned warning on stderr.
#[test]
fn backups_in_the_primarys_region_are_a_warning_not_an_error() {
    let fixture =
        drsync_tests::bin::repo_path("tests/fixtures/bad-config/sku-premium-to-standard.toml");
    let text = std::fs::read_to_string(fixture).unwrap();
    let fixed = text.replace("sku = \"Standard\"", "sku = \"Premium\"");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &fixed).unwrap();
    let out = run(["validate", "--config", good.to_str().unwrap()]);
    out.assert_code(0);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert!(
        out.stdout.contains("configuration is valid"),
        "{}",
        out.stdout
    );

    let local = dir.path().join("local-backups.toml");
    let moved = fixed.replace(
        "region = \"northeurope\"\ncontainer",
        "region = \"westeurope\"\ncontainer",
    );
    assert_ne!(moved, fixed);
    std::fs::write(&local, moved).unwrap();
    let out = run(["validate", "--config", local.to_str().unwrap()]);
    out.assert_code(0);
    let header = format!(
        "warning: {}:38:11: replication[0].storage: replication `contoso-dr`: storage `neu-backups` is in westeurope, the primary's region",
        local.display()
    );
    assert!(out.stderr.starts_with(&header), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("consider a storage account in the paired region northeurope"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("configuration is valid"),
        "{}",
        out.stdout
    );
}

#[test]
fn misspelt_secret_key_is_refused_and_not_echoed() {
    let out = check(
        "misspelt-secret-key",
        &[
            (
                5,
                1,
                "azure.credential.client_secret",
                "missing required field `client_secret`",
            ),
            (
                8,
                1,
                "azure.credential.client_secert",
                "unknown key in `azure.credential`: `client_secert`",
            ),
        ],
    );
    assert!(
        !out.stderr.contains("s3cr3t"),
        "the secret leaked:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("8 | client_secert = ..."),
        "{}",
        out.stderr
    );
}

#[test]
fn same_storage_account_and_container_twice() {
    check(
        "duplicate-storage-account",
        &[(
            19,
            11,
            "storage[1].account",
            "storage account `contosodrneu` and container `apim-backups` are already storage[0] (`neu-backups`)",
        )],
    );
}

#[test]
fn api_version_arm_does_not_know() {
    check(
        "api-version-not-stable",
        &[(
            4,
            15,
            "azure.api_version",
            "api-version `2023-05-01` is not a stable API Management api-version",
        )],
    );
}

/// A file saved by a Windows editor: byte order mark, CRLF line endings, a tab before the value.
/// Written at run time, since a checkout may normalise line endings.
#[test]
fn windows_editor_file_keeps_lines_and_columns() {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/bad-config/unknown-sku.toml"
    ))
    .expect("fixture");
    let text = format!(
        "\u{feff}{}",
        fixture
            .replace("sku = \"PremiumV3\"", "sku =\t\"PremiumV3\"")
            .replace('\n', "\r\n")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("windows.toml");
    std::fs::write(&path, text).expect("write");
    let out = run(["validate".as_ref(), "--config".as_ref(), path.as_os_str()]);
    out.assert_code(2);
    let header = format!(
        "error: {}:30:7: service[1].sku: unknown SKU `PremiumV3`",
        path.display()
    );
    assert!(out.stderr.contains(&header), "{}", out.stderr);
    // The caret sits under the value: the tab is shown as one space, the CR is not shown.
    assert!(
        out.stderr
            .contains("30 | sku = \"PremiumV3\"\n   |       ^^^^^^^^^^^\n"),
        "{}",
        out.stderr
    );
}
