//! The `drsync` binary itself: version, usage errors, and `validate` on the shipped
//! configurations. (This test also makes `cargo test --workspace` build the binary before the
//! end-to-end crate runs it.)

use std::path::Path;
use std::process::{Command, Output};

fn drsync(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Command::new(env!("CARGO_BIN_EXE_drsync"))
        .args(args)
        .current_dir(root)
        .env_remove("RUST_LOG")
        .output()
        .expect("run drsync")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let out = drsync(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).starts_with("drsync "),
        "{}",
        text(&out.stdout)
    );
    let out = drsync(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("validate"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = drsync(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = drsync(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--config"),
        "{}",
        text(&out.stderr)
    );
    let out = drsync(&[
        "--log-format",
        "xml",
        "validate",
        "--config",
        "config/demo.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn validate_demo_prints_the_topology() {
    let out = drsync(&["validate", "--config", "config/demo.toml"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for expected in [
        "config/demo.toml: configuration is valid",
        "built-in emulator (embedded), time scale 0.002",
        "  primary\n    apim-contoso-weu  westeurope     Premium (2 units)",
        "  standby\n    apim-contoso-neu  northeurope    Premium (1 unit)",
        "  staging\n    apim-contoso-stg  westeurope     Premium (1 unit)",
        "neu-backups: contosodrneu/apim-backups in northeurope, system-assigned identity",
        "contoso-dr: RPO 1h, retention 14d, RTO 45m, via storage neu-backups",
        "apim-contoso-weu (westeurope, Premium) -> apim-contoso-neu (northeurope, Premium, standby)",
        "apim-contoso-weu (westeurope, Premium) -> apim-contoso-stg (westeurope, Premium, staging)",
    ] {
        assert!(
            stdout.contains(expected),
            "missing `{expected}` in\n{stdout}"
        );
    }
}

#[test]
fn validate_example_shows_references_not_secrets() {
    let out = drsync(&[
        "validate",
        "--config",
        "config/example.toml",
        "--log-format",
        "json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("client secret for app 3f2504e0-4f89-41d3-9a0c-0305e82c3301 from env:AZURE_CLIENT_SECRET"), "{stdout}");
    assert!(
        stdout.contains("account key from env:DRSYNC_WEU_STORAGE_KEY"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_config_errors_with_exit_2() {
    let out = drsync(&[
        "validate",
        "--config",
        "tests/fixtures/bad-config/unknown-sku.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("tests/fixtures/bad-config/unknown-sku.toml:30:7: service[1].sku:"),
        "{stderr}"
    );
}

/// The whole summary, so a change to it is a deliberate one.
#[test]
fn validate_demo_output_is_stable() {
    let out = drsync(&["validate", "--config", "config/demo.toml"]);
    assert_eq!(out.status.code(), Some(0));
    let expected = "\
config/demo.toml: configuration is valid

Azure:    built-in emulator (embedded), time scale 0.002
API:      api-version 2024-05-01
State:    .drsync-state
Limits:   4 concurrent steps; ARM reads 22.5/s (burst 225), writes 9/s (burst 180)

Services (3):
  primary
    apim-contoso-weu  westeurope     Premium (2 units)    6f1d3c2a-5b4e-4f8a-9c7d-2e1f0a9b8c7d/rg-apim-prod-weu
  standby
    apim-contoso-neu  northeurope    Premium (1 unit)     6f1d3c2a-5b4e-4f8a-9c7d-2e1f0a9b8c7d/rg-apim-dr-neu
  staging
    apim-contoso-stg  westeurope     Premium (1 unit)     6f1d3c2a-5b4e-4f8a-9c7d-2e1f0a9b8c7d/rg-apim-staging-weu

Storage (2):
  neu-backups: contosodrneu/apim-backups in northeurope, system-assigned identity, local directory .drsync-state/storage/contosodrneu
  weu-backups: contosodrweu/apim-backups in westeurope, system-assigned identity, local directory .drsync-state/storage/contosodrweu

Replications (1 replication, 2 edges):
  contoso-dr: RPO 1h, retention 14d, RTO 45m, via storage neu-backups, verify apis, products, named values
    apim-contoso-weu (westeurope, Premium) -> apim-contoso-neu (northeurope, Premium, standby)
    apim-contoso-weu (westeurope, Premium) -> apim-contoso-stg (westeurope, Premium, staging)
";
    assert_eq!(text(&out.stdout), expected);
}

/// `validate` runs the planner's topology rules too, and points at the offending replication.
#[test]
fn validate_checks_the_replication_graph() {
    let out = drsync(&[
        "validate",
        "--config",
        "tests/fixtures/bad-config/target-two-sources.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "tests/fixtures/bad-config/target-two-sources.toml:53:7: replication[1].to[0]: \
             service `apim-contoso-neu` is the target of more than one replication"
        ),
        "{stderr}"
    );
    // The demo topology passes them, without warnings.
    let out = drsync(&["validate", "--config", "config/demo.toml"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// `validate` never resolves a secret reference, so at the highest verbosity and in JSON logs
/// the values behind `env:` references appear nowhere; a literal secret (also under a misspelt
/// key) is refused without being repeated.
#[test]
fn validate_verbose_and_json_logs_show_no_secret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = |config: &str| {
        Command::new(env!("CARGO_BIN_EXE_drsync"))
            .args([
                "--log-format",
                "json",
                "-vv",
                "validate",
                "--config",
                config,
            ])
            .current_dir(&root)
            .env_remove("RUST_LOG")
            .env("AZURE_CLIENT_SECRET", "Env~Secret.Value-0001")
            .env("DRSYNC_WEU_STORAGE_KEY", "RW52S2V5VmFsdWUwMDAy")
            .output()
            .expect("run drsync")
    };
    let out = run("config/example.toml");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !all.contains("Env~Secret") && !all.contains("RW52S2V5"),
        "{all}"
    );
    for (fixture, leak) in [
        ("literal-client-secret", "s3cr3t"),
        ("literal-storage-key", "q9ZT4m"),
        ("misspelt-secret-key", "s3cr3t"),
    ] {
        let out = run(&format!("tests/fixtures/bad-config/{fixture}.toml"));
        assert_eq!(out.status.code(), Some(2), "{fixture}");
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(all.contains("error: "), "{fixture}: {all}");
        assert!(!all.contains(leak), "{fixture} leaked:\n{all}");
    }
}
