//! End-to-end: drills, clones, failover and failback, with the real `drsync` binary against the
//! emulator over loopback (issue #6).
//!
//! Each test starts the emulator in-process (backups take 0.3 s and restores 1.8 s at its time
//! scale), writes a configuration whose storage account is a local directory shared with the
//! emulator, and runs `drsync` as a child process with a static token. Reports are read back
//! from the state directory: JSON checked against `docs/report-schema.json`, JUnit parsed.

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::Context as _;
use drsync_tests::bin::{drsync_path, repo_path};
use drsync_tests::emulator::{ACCOUNT, ACCOUNT_KEY, RG, SUB, ServiceSeed, TENANT, TestEmulator};
use serde_json::{Value, json};

const PRIMARY: &str = "apim-weu";
const STANDBY: &str = "apim-neu";
const STAGING: &str = "apim-stg";

/// An emulator with a primary (sample configuration), a standby and a staging service, and a
/// drsync configuration for them.
struct Setup {
    emu: TestEmulator,
    work: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    async fn start() -> anyhow::Result<Self> {
        let emu = TestEmulator::start(0.001).await?;
        emu.seed_with(ServiceSeed::new(SUB, RG, PRIMARY, "westeurope").with_sample_config())?;
        emu.seed_with(ServiceSeed::new(SUB, RG, STANDBY, "northeurope"))?;
        emu.seed_with(ServiceSeed::new(SUB, RG, STAGING, "westeurope"))?;
        let work = tempfile::tempdir()?;
        let storage = emu.dir.path().join(ACCOUNT);
        let config = work.path().join("drsync.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[azure]
tenant = "{TENANT}"
endpoint = "{base}"
[azure.credential]
kind = "static_token"
token = "env:DRSYNC_TEST_TOKEN"

[state]
dir = "state"

[[storage]]
name = "neu-backups"
account = "{ACCOUNT}"
region = "northeurope"
container = "apim-backups"
endpoint = "dir:{storage}"
access = "account_key"
key = "env:DRSYNC_TEST_STORAGE_KEY"

[[service]]
name = "{PRIMARY}"
subscription = "{SUB}"
resource_group = "{RG}"
region = "westeurope"
sku = "Premium"
role = "primary"

[[service]]
name = "{STANDBY}"
subscription = "{SUB}"
resource_group = "{RG}"
region = "northeurope"
sku = "Premium"
role = "standby"

[[service]]
name = "{STAGING}"
subscription = "{SUB}"
resource_group = "{RG}"
region = "westeurope"
sku = "Premium"
role = "staging"

[[replication]]
name = "contoso-dr"
from = "{PRIMARY}"
to = ["{STANDBY}", "{STAGING}"]
storage = "neu-backups"
rpo = "1h"
retention = "14d"
rto = "45m"
"#,
                base = emu.base(),
                storage = storage.display(),
            ),
        )?;
        Ok(Self { emu, work, config })
    }

    fn state_dir(&self) -> PathBuf {
        self.work.path().join("state")
    }

    /// Runs `drsync ARGS -c CONFIG` with stdin closed (not a terminal).
    async fn drsync(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.drsync_env(args, &[]).await
    }

    /// [`Setup::drsync`] with extra environment variables.
    async fn drsync_env(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
        let out = tokio::process::Command::new(drsync_path())
            .args(args)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.work.path())
            .env("DRSYNC_TEST_TOKEN", &self.emu.token)
            .env("DRSYNC_TEST_STORAGE_KEY", ACCOUNT_KEY)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("run drsync")?;
        Ok(out)
    }

    /// Every report in the state directory, oldest first.
    fn reports(&self) -> anyhow::Result<Vec<(PathBuf, Value)>> {
        let dir = self.state_dir().join("drills");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(path.join("report.json"))?)?;
            out.push((path, json));
        }
        out.sort_by(|a, b| a.1["started_at"].as_str().cmp(&b.1["started_at"].as_str()));
        Ok(out)
    }

    fn newest_report(&self) -> anyhow::Result<(PathBuf, Value)> {
        self.reports()?.pop().context("no report")
    }

    fn add_api(&self, service: &str, name: &str) -> anyhow::Result<()> {
        let state = self.emu.state();
        let mut config = state
            .configuration(SUB, RG, service)
            .context("no such service")?;
        config.apis.insert(
            name.into(),
            json!({"displayName": name, "path": name, "protocols": ["https"],
                   "serviceUrl": format!("https://backend.example.com/{name}")}),
        );
        state.set_configuration(SUB, RG, service, config)?;
        Ok(())
    }
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Checks a report against the published schema.
fn check_schema(report: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("docs/report-schema.json")).expect("the schema exists"),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report breaks docs/report-schema.json: {errors:#?}"
    );
}

/// Parses JUnit XML: (testsuite count, [(testcase name, failure message)]).
fn parse_junit(path: &Path) -> (usize, Vec<(String, Option<String>)>) {
    use quick_xml::events::Event;
    let xml = std::fs::read_to_string(path).expect("junit.xml exists");
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut suites = 0;
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    let attr = |e: &quick_xml::events::BytesStart<'_>, name: &str| -> String {
        e.try_get_attribute(name)
            .expect("well-formed attributes")
            .unwrap_or_else(|| panic!("attribute `{name}` is present"))
            .normalized_value(quick_xml::XmlVersion::Explicit1_0)
            .expect("attribute value decodes")
            .into_owned()
    };
    loop {
        match reader.read_event().expect("junit.xml is well-formed XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testsuite" => suites += 1,
                b"testcase" => cases.push((attr(&e, "name"), None)),
                b"failure" => {
                    cases.last_mut().expect("failure in a testcase").1 = Some(attr(&e, "message"))
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    (suites, cases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_passes_and_writes_three_reports() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let junit = s.work.path().join("ci-junit.xml");
    let out = s
        .drsync(&[
            "drill",
            "--edge",
            "contoso-dr",
            "--junit",
            junit.to_str().unwrap(),
        ])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": PASSED"),
        "{}",
        text(&out)
    );
    let (suites, cases) = parse_junit(&junit);
    assert_eq!(suites, 1, "one testsuite per drill");
    assert!(cases.iter().all(|(_, f)| f.is_none()), "{cases:?}");

    let (dir, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["kind"], "drill");
    assert_eq!(report["target"]["name"], STANDBY);
    assert_eq!(report["backup"]["reused"], false);
    let phases: Vec<(&str, &str)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["phase"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("preflight", "passed"),
            ("backup", "passed"),
            ("restore", "passed"),
            ("verify", "passed")
        ]
    );
    // The sample configuration was compared item by item, and restored.
    let counts = report["verification"]["counts"].as_array().unwrap();
    assert!(
        counts.iter().all(|c| c["expected"] == c["actual"]),
        "{counts:?}"
    );
    assert!(
        counts.iter().any(|c| c["expected"].as_u64().unwrap() > 0),
        "{counts:?}"
    );
    assert_eq!(report["objectives"]["recovery_time"]["status"], "met");
    assert_eq!(report["objectives"]["recovery_point"]["status"], "met");

    // No secret (the storage key, the bearer token) in any of the three reports.
    for file in ["report.json", "report.md", "junit.xml"] {
        let body = std::fs::read_to_string(dir.join(file))?;
        assert!(
            !body.contains(ACCOUNT_KEY) && !body.contains(&s.emu.token),
            "a secret in {file}"
        );
    }
    let md = std::fs::read_to_string(dir.join("report.md"))?;
    assert!(
        md.contains(": PASSED") && md.contains("No differences."),
        "{md}"
    );
    let (suites, cases) = parse_junit(&dir.join("junit.xml"));
    assert_eq!(suites, 1);
    assert!(cases.iter().any(|(n, _)| n == "phase restore"), "{cases:?}");
    assert!(cases.iter().all(|(_, f)| f.is_none()), "{cases:?}");

    // `drills list` and `drills show` read it back.
    let id = report["id"].as_str().unwrap();
    let out = s.drsync(&["drills", "list"]).await?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(id),
        "{}",
        text(&out)
    );
    let out = s
        .drsync(&["drills", "show", &id[..id.len() - 4], "--format", "json"])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(shown, report);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_fails_verification_naming_an_api_added_after_the_backup() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let out = s.drsync(&["drill", "--edge", "contoso-dr"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    s.add_api(PRIMARY, "inventory")?;

    let out = s
        .drsync(&["drill", "--edge", "contoso-dr", "--use-latest"])
        .await?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "a failed drill exits 3: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = "API `inventory` is in the source but missing from the restored service";
    assert!(stdout.contains(want), "{}", text(&out));

    let (dir, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["backup"]["reused"], true);
    assert_eq!(
        report["verification"]["differences"],
        json!([{"kind": "missing", "item": "api", "name": "inventory"}])
    );
    let (_, cases) = parse_junit(&dir.join("junit.xml"));
    let failed: Vec<&(String, Option<String>)> = cases.iter().filter(|c| c.1.is_some()).collect();
    assert!(
        failed
            .iter()
            .any(|(n, f)| n == "verify APIs" && f.as_deref().unwrap().contains(want)),
        "{cases:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_fails_its_phase() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let hooks = s.work.path().join("hooks.toml");
    std::fs::write(
        &hooks,
        r#"
[[hooks]]
name = "drain"
phase = "restore"
when = "before"
command = "echo draining $DRSYNC_TARGET_NAME; echo no route to traffic manager >&2; exit 7"
timeout = "30s"
"#,
    )?;
    s.emu.emu.state().clear_request_log();
    let out = s
        .drsync(&[
            "drill",
            "--edge",
            "contoso-dr",
            "--hooks",
            hooks.to_str().unwrap(),
        ])
        .await?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let (dir, report) = s.newest_report()?;
    check_schema(&report);
    let restore = &report["phases"][2];
    assert_eq!(restore["phase"], "restore");
    assert_eq!(restore["status"], "failed");
    assert_eq!(
        restore["message"],
        "before-hook `drain` failed: exited with status 7"
    );
    assert_eq!(
        restore["hooks"][0]["stdout"],
        format!("draining {STANDBY}\n")
    );
    assert_eq!(
        restore["hooks"][0]["stderr"],
        "no route to traffic manager\n"
    );
    assert_eq!(report["phases"][3]["status"], "skipped");
    // The restore was never started.
    let restores = s
        .emu
        .emu
        .request_log()
        .iter()
        .filter(|r| r.kind == "restore-post")
        .count();
    assert_eq!(restores, 0);
    let (_, cases) = parse_junit(&dir.join("junit.xml"));
    assert!(
        cases.contains(&(
            "hook drain (before restore)".into(),
            Some("exited with status 7".into())
        )),
        "{cases:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_from_the_configuration_run_and_their_output_is_reported() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let marker = s.work.path().join("promoted.marker");
    let base = std::fs::read_to_string(&s.config)?;
    std::fs::write(
        &s.config,
        format!(
            r#"{base}
[[replication.hooks]]
name = "config-smoke"
phase = "verify"
when = "after"
command = "echo zone $ZONE target $DRSYNC_TARGET_NAME kind $DRSYNC_KIND"
timeout = "30s"
env = {{ ZONE = "contoso.com" }}

[[replication.hooks]]
name = "failover-only"
phase = "verify"
when = "after"
command = ["touch", "{marker}"]
kinds = ["failover"]
"#,
            marker = marker.display()
        ),
    )?;
    // A `--hooks` file still works, and runs after the configuration's hooks.
    let out = s
        .drsync(&[
            "drill",
            "--edge",
            "contoso-dr",
            "--hooks",
            repo_path("tests/fixtures/drills/hooks.toml")
                .to_str()
                .unwrap(),
        ])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (dir, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["outcome"], "passed");
    let verify = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "verify")
        .unwrap()
        .clone();
    let hooks = verify["hooks"].as_array().unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["config-smoke", "smoke-test"], "{verify:#}");
    assert_eq!(
        hooks[0]["stdout"],
        format!("zone contoso.com target {STANDBY} kind drill\n")
    );
    assert!(
        hooks[1]["stdout"]
            .as_str()
            .unwrap()
            .starts_with("gateway http"),
        "{verify:#}"
    );
    // The failover-only hook did not run in a drill.
    assert!(!marker.exists());
    let md = std::fs::read_to_string(dir.join("report.md"))?;
    assert!(md.contains("config-smoke"), "{md}");

    // A bad hook in the configuration is a usage error with its position.
    std::fs::write(
        &s.config,
        format!(
            "{base}\n[[replication.hooks]]\nphase = \"verfy\"\nwhen = \"after\"\ncommand = \"true\"\n"
        ),
    )?;
    let out = s.drsync(&["drill", "--edge", "contoso-dr"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replication[0].hooks[0].phase")
            && stderr.contains("unknown phase `verfy`"),
        "{}",
        text(&out)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_drill_service_is_drilled_into_and_cleaned_up() -> anyhow::Result<()> {
    const DRILL: &str = "apim-drill";
    let s = Setup::start().await?;
    // A service outside the configuration, created for drills.
    s.emu
        .seed_with(ServiceSeed::new(SUB, RG, DRILL, "northeurope"))?;
    let id = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{DRILL}"
    );
    let out = s
        .drsync(&["drill", "--edge", "contoso-dr", "--target", &id])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["target"]["name"], DRILL);
    assert_eq!(report["outcome"], "passed");
    // The drill restored the primary's configuration there, and not into the standby.
    let drill = s.emu.state().configuration(SUB, RG, DRILL).unwrap();
    assert!(!drill.apis.is_empty());
    assert!(
        s.emu
            .state()
            .configuration(SUB, RG, STANDBY)
            .unwrap()
            .apis
            .is_empty()
    );
    // The configuration file is unchanged: the drill service is not in it.
    assert!(!std::fs::read_to_string(&s.config)?.contains(DRILL));
    // Later planning ignores it: nothing is planned for a service outside the configuration.
    let out = s.drsync(&["plan", "--output", "json"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(DRILL),
        "{}",
        text(&out)
    );

    let deletes = |s: &Setup| {
        s.emu
            .emu
            .request_log()
            .iter()
            .filter(|r| r.kind == "service-delete")
            .count()
    };
    // A configured standby is never deleted, even with --yes.
    let out = s
        .drsync(&["drills", "cleanup", "--target", STANDBY, "--yes"])
        .await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("refusing to delete `apim-neu`: it is a configured standby"),
        "{}",
        text(&out)
    );
    // Nor a service no drill restored into.
    s.emu
        .seed_with(ServiceSeed::new(SUB, RG, "apim-other", "northeurope"))?;
    let out = s
        .drsync(&["drills", "cleanup", "--target", "apim-other", "--yes"])
        .await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no drill report has it as its target"),
        "{}",
        text(&out)
    );
    // Without a terminal, --yes is required.
    let out = s.drsync(&["drills", "cleanup", "--target", DRILL]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out)
    );
    assert_eq!(deletes(&s), 0, "nothing was deleted so far");
    assert!(s.emu.state().configuration(SUB, RG, STANDBY).is_some());

    let out = s
        .drsync(&["drills", "cleanup", "--target", DRILL, "--yes"])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("deleted drill service `{DRILL}`")),
        "{}",
        text(&out)
    );
    assert_eq!(deletes(&s), 1);
    assert!(s.emu.state().configuration(SUB, RG, DRILL).is_none());
    assert!(s.emu.state().configuration(SUB, RG, "apim-other").is_some());
    // Its reports stay.
    assert!(
        s.reports()?
            .iter()
            .any(|(_, r)| r["target"]["name"] == DRILL)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_restores_into_staging_in_the_same_region() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let out = s
        .drsync(&["clone", "--from", PRIMARY, "--to", STAGING])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["kind"], "clone");
    assert_eq!(report["target"]["name"], STAGING);
    assert_eq!(report["outcome"], "passed");
    // The staging copy now holds the primary's APIs.
    let primary = s.emu.state().configuration(SUB, RG, PRIMARY).unwrap();
    let staging = s.emu.state().configuration(SUB, RG, STAGING).unwrap();
    assert_eq!(
        primary.apis.keys().collect::<Vec<_>>(),
        staging.apis.keys().collect::<Vec<_>>()
    );

    // With overrides: named values replaced after the restore, from the file (a literal) and
    // from the environment (a secret), and verification expecting them.
    const PAYMENTS_KEY: &str = "pk-Zq81-staging-only-value";
    let overrides = repo_path("tests/fixtures/drills/overrides.toml");
    let out = s
        .drsync_env(
            &[
                "clone",
                "--from",
                PRIMARY,
                "--to",
                STAGING,
                "--use-latest",
                "--overrides",
                overrides.to_str().unwrap(),
                "-vv",
            ],
            &[("STAGING_PAYMENTS_KEY", PAYMENTS_KEY)],
        )
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (dir, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["outcome"], "passed", "{report:#}");
    let phases: Vec<(&str, &str)> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["phase"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert!(phases.contains(&("overrides", "passed")), "{phases:?}");
    assert_eq!(
        report["verification"]["overridden"],
        json!(["backend-url", "feature-flag", "payments-key"])
    );
    assert_eq!(report["verification"]["differences"], json!([]));
    // The emulator holds the new values: the literal ones readable, the secret one stored as
    // a secret.
    let staging = s.emu.state().configuration(SUB, RG, STAGING).unwrap();
    let nv = |name: &str| staging.named_values.get(name).cloned().unwrap_or_default();
    assert_eq!(
        nv("backend-url")["value"],
        "https://orders.staging.contoso.internal"
    );
    assert_eq!(nv("backend-url")["secret"], false);
    assert_eq!(nv("feature-flag")["value"], "off");
    assert_eq!(nv("payments-key")["value"], PAYMENTS_KEY);
    assert_eq!(nv("payments-key")["secret"], true);
    // The primary kept its own backend.
    let primary = s.emu.state().configuration(SUB, RG, PRIMARY).unwrap();
    assert_eq!(
        primary.named_values["backend-url"]["value"],
        "https://backend.contoso.com"
    );
    // The secret is in no report, and not in the output or the (trace-level) log.
    for file in ["report.json", "report.md", "junit.xml"] {
        let body = std::fs::read_to_string(dir.join(file))?;
        assert!(!body.contains(PAYMENTS_KEY), "the secret in {file}");
    }
    assert!(!text(&out).contains(PAYMENTS_KEY), "{}", text(&out));
    for entry in walk(&s.state_dir()) {
        if let Ok(body) = std::fs::read(&entry) {
            assert!(
                !body
                    .windows(PAYMENTS_KEY.len())
                    .any(|w| w == PAYMENTS_KEY.as_bytes()),
                "the secret in {}",
                entry.display()
            );
        }
    }

    // A missing environment variable is a usage error before anything is restored.
    s.emu.emu.state().clear_request_log();
    let out = s
        .drsync(&[
            "clone",
            "--from",
            PRIMARY,
            "--to",
            STAGING,
            "--overrides",
            overrides.to_str().unwrap(),
        ])
        .await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("environment variable `STAGING_PAYMENTS_KEY` is not set"),
        "{}",
        text(&out)
    );
    assert!(
        s.emu
            .emu
            .request_log()
            .iter()
            .all(|r| r.kind != "restore-post" && r.kind != "backup-post")
    );

    // A clone to a service that no replication copies to is refused as a usage error.
    let out = s
        .drsync(&["clone", "--from", STANDBY, "--to", STAGING])
        .await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no replication copies `apim-neu` to `apim-stg`")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_works_with_the_primary_region_down_and_failback_reverses_it() -> anyhow::Result<()>
{
    let s = Setup::start().await?;
    // A backup (with its sidecar) in the North Europe storage account.
    let out = s.drsync(&["drill", "--edge", "contoso-dr"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The West Europe region goes down, and the local state with it: only the standby region's
    // storage is left.
    std::fs::remove_dir_all(s.state_dir())?;
    let mut faults = s.emu.state().faults();
    faults.unavailable_regions = vec!["westeurope".into()];
    s.emu.state().set_faults(faults.clone())?;
    s.emu.state().clear_request_log();

    // Not on a terminal and no --yes: refused, nothing done.
    let out = s.drsync(&["failover", "--to", STANDBY]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --yes"),
        "{}",
        text(&out)
    );

    let out = s.drsync(&["failover", "--to", STANDBY, "--yes"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["kind"], "failover");
    assert_eq!(report["outcome"], "passed");
    assert_eq!(report["backup"]["reused"], true);
    // The drill kept the primary's verified snapshot beside its backup, in the standby
    // region's storage: the failover compares content with it, without calling the primary.
    assert!(
        std::fs::read_dir(s.emu.dir.path().join(ACCOUNT).join("apim-backups"))?
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .ends_with(".drsync-snapshot.json"))
    );
    assert_eq!(
        report["verification"]["source"],
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{PRIMARY}"
        )
    );
    let counts = report["verification"]["counts"].as_array().unwrap();
    assert!(
        counts
            .iter()
            .all(|c| c["expected"] == c["actual"] && c["expected"].as_u64() > Some(0)),
        "{counts:?}"
    );
    assert!(
        report["phases"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("content will be compared"),
        "{:#}",
        report["phases"][0]
    );
    assert_eq!(
        report["objectives"]["recovery_point"]["basis"],
        "backup_age"
    );
    let phases: Vec<&str> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["passed", "skipped", "passed", "passed", "passed"]);
    // Nothing touched the primary.
    let log = s.emu.emu.request_log();
    let touched: Vec<_> = log
        .iter()
        .filter(|r| r.path.contains(&format!("/service/{PRIMARY}")))
        .collect();
    assert!(
        touched.is_empty(),
        "the failover called the unreachable primary: {touched:?}"
    );
    assert_eq!(log.iter().filter(|r| r.kind == "restore-post").count(), 1);
    // The role swap is recorded.
    let roles: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_dir().join("roles.json"))?)?;
    assert_eq!(roles["swaps"][0]["primary"], STANDBY);
    assert_eq!(roles["swaps"][0]["original_primary"], PRIMARY);
    // Later runs start from the new primary: the next sync backs it up and restores the old
    // primary as a standby.
    let out = s.drsync(&["plan", "--output", "json"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    let actions: Vec<&Value> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["action"])
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a["kind"] == "backup" && a["service"] == STANDBY),
        "{plan:#}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a["kind"] == "restore" && a["target"] == PRIMARY),
        "{plan:#}"
    );

    // The region comes back; a change is made on the new primary; failback carries it home.
    faults.unavailable_regions.clear();
    s.emu.state().set_faults(faults)?;
    s.add_api(STANDBY, "made-during-failover")?;
    let out = s.drsync(&["failback", "--yes"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["kind"], "failback");
    assert_eq!(report["source"]["name"], STANDBY);
    assert_eq!(report["target"]["name"], PRIMARY);
    assert_eq!(report["outcome"], "passed", "{report:#}");
    let primary = s.emu.state().configuration(SUB, RG, PRIMARY).unwrap();
    assert!(primary.apis.contains_key("made-during-failover"));
    let roles: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_dir().join("roles.json"))?)?;
    assert_eq!(roles["swaps"], json!([]));

    // Nothing left to fail back.
    let out = s.drsync(&["failback", "--yes"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    Ok(())
}

/// Rewrites the `consistency` of every catalog sidecar in the storage account; returns how many.
fn set_sidecar_consistency(s: &Setup, consistency: &str) -> anyhow::Result<usize> {
    let dir = s.emu.dir.path().join(ACCOUNT).join("apim-backups");
    let mut n = 0;
    for path in walk(&dir) {
        if path.to_string_lossy().ends_with(".drsync.json") {
            let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            doc["consistency"] = json!(consistency);
            std::fs::write(&path, serde_json::to_string(&doc)?)?;
            n += 1;
        }
    }
    Ok(n)
}

// See: #6. What an on-call engineer meets at 3 a.m.: no backup at all, only a suspect one, a
// failover killed half-way through its restore, and the same failover run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_explains_refusals_resumes_after_a_crash_and_runs_only_once() -> anyhow::Result<()>
{
    let s = Setup::start().await?;
    let mut faults = s.emu.state().faults();
    faults.unavailable_regions = vec!["westeurope".into()];
    s.emu.state().set_faults(faults.clone())?;

    // Nothing in the standby region's storage: refused with the reason, roles unchanged, exit 1.
    let out = s.drsync(&["failover", "--to", STANDBY, "--yes"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "no backup of `{PRIMARY}` in storage account `{ACCOUNT}`, container `apim-backups`"
        )),
        "{}",
        text(&out)
    );
    assert!(
        stdout.contains(&format!(
            "roles unchanged: `{PRIMARY}` is still the primary"
        )),
        "{}",
        text(&out)
    );
    assert!(!s.state_dir().join("roles.json").exists());

    // The region was up long enough for one drill (and so one backup); then it goes down with
    // the local state, and the only backup turns out to be suspect.
    faults.unavailable_regions.clear();
    s.emu.state().set_faults(faults.clone())?;
    let out = s.drsync(&["drill", "--edge", "contoso-dr"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::remove_dir_all(s.state_dir())?;
    faults.unavailable_regions = vec!["westeurope".into()];
    s.emu.state().set_faults(faults.clone())?;
    assert_eq!(set_sidecar_consistency(&s, "suspect")?, 1);
    let out = s.drsync(&["failover", "--to", STANDBY, "--yes"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "1 backup(s), none restorable; 1 suspect (the configuration changed while it ran"
        ),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("--allow-suspect` restores it anyway"),
        "{}",
        text(&out)
    );
    assert!(!s.state_dir().join("roles.json").exists());

    // As a last resort the suspect backup is restored: the failover is killed right after ARM
    // accepted its restore.
    s.emu.state().clear_request_log();
    let out = s
        .drsync_env(
            &["failover", "--to", STANDBY, "--yes", "--allow-suspect"],
            &[("DRSYNC_TEST_CRASH_AT", "accepted:restore")],
        )
        .await?;
    assert_eq!(out.status.code(), None, "killed: {}", text(&out));
    assert!(!s.state_dir().join("roles.json").exists());
    // Run again: the killed run's restore is resumed (its lease does not block it, and the
    // restore is not posted twice), then verified and promoted.
    let out = s
        .drsync(&["failover", "--to", STANDBY, "--yes", "--allow-suspect"])
        .await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming unfinished run"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "roles: `{STANDBY}` is now the primary; `{PRIMARY}` is a standby"
        )),
        "{}",
        text(&out)
    );
    let log = s.emu.emu.request_log();
    assert_eq!(log.iter().filter(|r| r.kind == "restore-post").count(), 1);
    assert!(
        !log.iter()
            .any(|r| r.path.contains(&format!("/service/{PRIMARY}"))),
        "nothing may call the unreachable primary"
    );
    let (_, report) = s.newest_report()?;
    check_schema(&report);
    assert_eq!(report["outcome"], "passed", "{report:#}");
    assert_eq!(report["backup"]["consistency"], "suspect", "{report:#}");
    let roles = std::fs::read_to_string(s.state_dir().join("roles.json"))?;

    // The same command once more: nothing is restored into what is now the primary.
    s.emu.state().clear_request_log();
    let out = s.drsync(&["failover", "--to", STANDBY, "--yes"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "`{STANDBY}` is already the primary of replication `contoso-dr`"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(
        s.emu
            .emu
            .request_log()
            .iter()
            .filter(|r| ["-post", "-put", "-patch", "-delete"]
                .iter()
                .any(|k| r.kind.ends_with(k)))
            .count(),
        0,
        "a repeated failover changes nothing"
    );
    assert_eq!(
        std::fs::read_to_string(s.state_dir().join("roles.json"))?,
        roles
    );

    // The region is back; a failback whose traffic switch (an after-promote hook) fails still
    // reverts the roles, and says so with exit 3 rather than 1.
    faults.unavailable_regions.clear();
    s.emu.state().set_faults(faults)?;
    let hooks = s.work.path().join("failback-hooks.toml");
    std::fs::write(
        &hooks,
        "[[hooks]]\nname = \"switch-traffic\"\nphase = \"promote\"\nwhen = \"after\"\ncommand = \"echo dns api refused >&2; exit 7\"\n",
    )?;
    let out = s
        .drsync(&["failback", "--yes", "--hooks", hooks.to_str().unwrap()])
        .await?;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "roles: `{PRIMARY}` is now the primary; `{STANDBY}` is a standby"
        )),
        "{}",
        text(&out)
    );
    let roles: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_dir().join("roles.json"))?)?;
    assert_eq!(roles["swaps"], json!([]));
    let (_, report) = s.newest_report()?;
    check_schema(&report);
    let promote = report["phases"].as_array().unwrap().last().unwrap();
    assert_eq!(promote["phase"], "promote");
    assert_eq!(promote["status"], "failed");
    assert_eq!(
        promote["hooks"][0]["stderr"], "dns api refused\n",
        "{promote:#}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The role swap survives the loss of the state directory. See: #6.
// ---------------------------------------------------------------------------------------------

/// A failover with the primary region down records the swap in the standby region's storage
/// too; after the state directory is lost, `catalog sync` takes it back, so `plan` and `status`
/// run from the new primary and nothing is restored into it. A failback records the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_swap_is_recovered_from_storage_after_the_state_is_lost() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let out = s.drsync(&["drill", "--edge", "contoso-dr"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut faults = s.emu.state().faults();
    faults.unavailable_regions = vec!["westeurope".into()];
    s.emu.state().set_faults(faults.clone())?;
    s.emu.state().clear_request_log();
    let out = s.drsync(&["failover", "--to", STANDBY, "--yes"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("roles of replication `contoso-dr` recorded in its storage"),
        "{}",
        text(&out)
    );
    assert!(
        !s.emu
            .emu
            .request_log()
            .iter()
            .any(|r| r.path.contains(&format!("/service/{PRIMARY}"))),
        "nothing may call the unreachable primary"
    );
    let blob = s
        .emu
        .dir
        .path()
        .join(ACCOUNT)
        .join("apim-backups")
        .join("contoso-dr.drsync-roles.json");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&blob)?)?;
    assert_eq!(stored["schema_version"], 1, "{stored:#}");
    assert_eq!(stored["replication"], "contoso-dr");
    assert_eq!(stored["primary"], STANDBY);
    assert_eq!(stored["original_primary"], PRIMARY);

    // The state directory is lost; the region stays down.
    std::fs::remove_dir_all(s.state_dir())?;
    let out = s.drsync(&["catalog", "sync"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("replication `contoso-dr`: took the roles recorded in storage"),
        "{}",
        text(&out)
    );
    let roles: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_dir().join("roles.json"))?)?;
    assert_eq!(roles["swaps"][0]["primary"], STANDBY);
    assert_eq!(roles["swaps"][0]["original_primary"], PRIMARY);

    let out = s.drsync(&["plan", "--output", "json"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    let actions: Vec<&Value> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["action"])
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a["kind"] == "backup" && a["service"] == STANDBY),
        "{plan:#}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| a["kind"] == "backup" && a["service"] == PRIMARY),
        "{plan:#}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| a["kind"] == "restore" && a["target"] == STANDBY),
        "nothing may be restored into the new primary: {plan:#}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a["kind"] == "restore" && a["target"] == PRIMARY),
        "{plan:#}"
    );
    let out = s.drsync(&["status", "--output", "json"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout)?;
    let edges = status["edges"].as_array().unwrap();
    assert!(!edges.is_empty(), "{status:#}");
    for e in edges {
        assert_eq!(e["source"], STANDBY, "{e}");
        assert_ne!(e["target"], STANDBY, "{e}");
    }

    // The region is back; failback records the configured roles in storage as well, and a
    // state rebuilt after that runs from the configured primary again.
    faults.unavailable_regions.clear();
    s.emu.state().set_faults(faults)?;
    let out = s.drsync(&["failback", "--yes"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&blob)?)?;
    assert_eq!(stored["primary"], PRIMARY, "{stored:#}");
    std::fs::remove_dir_all(s.state_dir())?;
    let out = s.drsync(&["catalog", "sync"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = s.drsync(&["plan", "--output", "json"]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        !plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["action"]["kind"] == "restore" && s["action"]["target"] == PRIMARY),
        "{plan:#}"
    );
    Ok(())
}
