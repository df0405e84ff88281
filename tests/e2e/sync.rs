//! End-to-end: `drsync sync`, `restore` and `catalog` with the real binary against the emulator
//! over loopback sockets (static token, account-key storage in local directories).
//!
//! Covers: a first sync of the demo-like topology; the process killed with SIGKILL at each
//! checkpoint (intent, posted, accepted, succeeded) of a backup and of a restore, then
//! resumed with no duplicate backup or restore POST in the emulator's request log and every
//! target restored; a busy service waited for, or reported clearly; a SKU mismatch and an
//! expired backup refused before any POST; a backup marked suspect when the primary changes
//! while it runs; the catalog rebuilt from storage into an empty state directory. See: #5.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use drsync_tests::bin::{Run, drsync};
use drsync_tests::emulator::{ACCOUNT, ACCOUNT_KEY, RG, SUB, ServiceSeed, TENANT, TestEmulator};

const PRIMARY: &str = "apim-weu";
const STANDBY: &str = "apim-neu";
const STAGING: &str = "apim-stg";

/// A test world: an emulator with the three services, and a configuration file pointing at it.
struct World {
    emu: TestEmulator,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn config_text(base: &str, storage_dir: &Path, state_dir: &Path, standby_sku: &str) -> String {
    format!(
        r#"
[azure]
tenant = "{TENANT}"
endpoint = "{base}"

[azure.credential]
kind = "static_token"
token = "env:DRSYNC_TEST_TOKEN"

[state]
dir = "{state}"

[limits]
concurrency = 4

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
sku = "{standby_sku}"
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
"#,
        storage = storage_dir.display(),
        state = state_dir.display(),
    )
}

impl World {
    /// Backups take `backup_secs` and restores `restore_secs` of emulated time (time scale 1).
    async fn new(backup_secs: f64, restore_secs: f64) -> Self {
        Self::with(backup_secs, restore_secs, "Premium").await
    }

    async fn with(backup_secs: f64, restore_secs: f64, standby_sku: &str) -> Self {
        Self::build(standby_sku, |c| {
            c.durations.backup_secs = backup_secs;
            c.durations.restore_secs = restore_secs;
        })
        .await
    }

    /// The emulator at time scale 1 without jitter, changed further by `tweak`, seeded with the
    /// three services, and a configuration whose standby has `standby_sku`.
    async fn build(
        standby_sku: &str,
        tweak: impl FnOnce(&mut drsync_emulator::EmulatorConfig),
    ) -> Self {
        let emu = TestEmulator::start_with(|c| {
            c.time_scale = 1.0;
            c.durations.jitter = 0.0;
            tweak(c);
        })
        .await
        .expect("start the emulator");
        emu.seed_with(ServiceSeed::new(SUB, RG, PRIMARY, "westeurope").with_sample_config())
            .unwrap();
        emu.seed_with(ServiceSeed::new(SUB, RG, STANDBY, "northeurope"))
            .unwrap();
        emu.seed_with(ServiceSeed::new(SUB, RG, STAGING, "westeurope"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("drsync.toml");
        let text = config_text(
            &emu.base(),
            &emu.dir.path().join(ACCOUNT),
            &dir.path().join("state"),
            standby_sku,
        );
        std::fs::write(&config, text).unwrap();
        Self {
            emu,
            config,
            _dir: dir,
        }
    }

    /// A second configuration on the same emulator and storage, with its own empty state.
    fn fresh_state_config(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let state = self._dir.path().join("state");
        let other = self._dir.path().join("state-elsewhere");
        let path = self._dir.path().join("elsewhere.toml");
        std::fs::write(
            &path,
            text.replace(&state.display().to_string(), &other.display().to_string()),
        )
        .unwrap();
        path
    }

    fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = drsync();
        cmd.arg(args[0])
            .arg("--config")
            .arg(config)
            .args(&args[1..]);
        cmd.env("DRSYNC_TEST_TOKEN", &self.emu.token)
            .env("DRSYNC_TEST_STORAGE_KEY", ACCOUNT_KEY)
            .env_remove("DRSYNC_TEST_CRASH_AT");
        cmd
    }

    /// Runs `drsync <args[0]> --config <config> <args[1..]>` (async-friendly, with a timeout).
    async fn run(&self, args: &[&str]) -> Run {
        let cmd = self.command(&self.config, args);
        run_async(cmd).await
    }

    async fn run_crashing(&self, crash_at: &str) -> Run {
        let mut cmd = self.command(&self.config, &["sync"]);
        cmd.env("DRSYNC_TEST_CRASH_AT", crash_at);
        run_async(cmd).await
    }

    /// Accepted (202) POSTs of `kind` (`backup-post`, `restore-post`) in the request log.
    fn accepted_posts(&self, kind: &str) -> usize {
        self.emu
            .request_log()
            .iter()
            .filter(|r| r.kind == kind && r.status == 202)
            .count()
    }

    /// Every POST of `kind`, whatever the answer.
    fn posts(&self, kind: &str) -> usize {
        self.emu.count(kind)
    }

    fn apis(&self, name: &str) -> Vec<String> {
        self.emu
            .state()
            .configuration(SUB, RG, name)
            .unwrap()
            .apis
            .keys()
            .cloned()
            .collect()
    }

    fn assert_targets_restored(&self) {
        let primary = self.apis(PRIMARY);
        assert!(!primary.is_empty());
        for t in [STANDBY, STAGING] {
            assert_eq!(self.apis(t), primary, "{t} holds the primary's APIs");
        }
    }
}

/// Runs a command off the async runtime, killing it after two minutes.
async fn run_async(mut cmd: Command) -> Run {
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drsync");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let read = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let (out, err) = (read(Box::new(out)), read(Box::new(err)));
        let mut waited = Duration::ZERO;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if waited > Duration::from_secs(120) {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
            waited += Duration::from_millis(20);
        };
        Run {
            code: status.code(),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn first_sync_backs_up_once_restores_every_target_and_the_second_has_nothing_to_do() {
    let w = World::new(2.0, 3.0).await;
    let out = w.run(&["sync"]).await;
    out.assert_code(0);
    assert!(
        out.stdout.contains("first sync: no valid backup yet"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("succeeded: 6 step(s)"),
        "{}",
        out.stdout
    );
    assert_eq!(w.accepted_posts("backup-post"), 1);
    assert_eq!(w.accepted_posts("restore-post"), 2);
    w.assert_targets_restored();
    // The sidecar sits beside the backup blob, and a restore marker per target beside it.
    let container = w.emu.dir.path().join(ACCOUNT).join("apim-backups");
    let names: Vec<String> = std::fs::read_dir(&container)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".drsync.json")));
    for t in [STANDBY, STAGING] {
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(&format!(".drsync-restored.{t}.json"))),
            "{names:?}"
        );
    }

    let again = w.run(&["sync"]).await;
    again.assert_code(0);
    assert!(again.stdout.contains("Nothing to do"), "{}", again.stdout);
    assert_eq!(
        w.posts("backup-post") + w.posts("restore-post"),
        3,
        "no new POST"
    );

    // `status` reads only local state: it needs no token or key.
    let mut cmd = w.command(&w.config, &["status", "--output", "json"]);
    cmd.env_remove("DRSYNC_TEST_TOKEN")
        .env_remove("DRSYNC_TEST_STORAGE_KEY");
    let status = run_async(cmd).await;
    status.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for e in doc["edges"].as_array().unwrap() {
        assert_eq!(e["state"], "ok", "{e}");
        assert!(e["days_to_expiry"].as_f64().unwrap() > 29.9);
    }
}

/// Kills drsync right after the checkpoint `crash_at`, resumes, and checks that every target
/// was restored with exactly one backup POST and one restore POST per target.
async fn crash_and_resume(crash_at: &str) {
    let w = World::new(1.0, 2.0).await;
    let crashed = w.run_crashing(crash_at).await;
    assert_eq!(
        crashed.code, None,
        "killed by a signal at {crash_at}\n{}\n{}",
        crashed.stdout, crashed.stderr
    );
    let resumed = w.run(&["sync"]).await;
    resumed.assert_code(0);
    assert!(
        resumed.stdout.contains("Resuming run"),
        "{}",
        resumed.stdout
    );
    assert_eq!(
        w.accepted_posts("backup-post"),
        1,
        "backup POSTs after a crash at {crash_at}"
    );
    assert_eq!(
        w.accepted_posts("restore-post"),
        2,
        "restore POSTs after a crash at {crash_at}"
    );
    assert_eq!(
        w.posts("backup-post") + w.posts("restore-post"),
        3,
        "no refused POST either"
    );
    w.assert_targets_restored();
    // Nothing left to do afterwards.
    let again = w.run(&["sync"]).await;
    again.assert_code(0);
    assert!(again.stdout.contains("Nothing to do"), "{}", again.stdout);
    w.assert_no_secret_in_state();
}

impl World {
    /// Neither the storage key nor the ARM token is anywhere in the state directory (sled's
    /// files: runs, steps with their poll states and errors, leases, catalog).
    fn assert_no_secret_in_state(&self) {
        fn files(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    files(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut all = Vec::new();
        files(&self._dir.path().join("state"), &mut all);
        assert!(!all.is_empty(), "the state directory has files");
        for f in all {
            let bytes = std::fs::read(&f).unwrap();
            for secret in [ACCOUNT_KEY, self.emu.token.as_str()] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "a secret is in {}",
                    f.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_backup_intent_then_resumed() {
    crash_and_resume("intent:backup").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_backup_post_before_accepted_then_resumed() {
    crash_and_resume("posted:backup").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_backup_accepted_then_resumed() {
    crash_and_resume("accepted:backup").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_backup_succeeded_then_resumed() {
    crash_and_resume("succeeded:backup").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_restore_intent_then_resumed() {
    crash_and_resume("intent:restore").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_restore_post_before_accepted_then_resumed() {
    crash_and_resume("posted:restore").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_restore_accepted_then_resumed() {
    crash_and_resume("accepted:restore").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_restore_succeeded_then_resumed() {
    crash_and_resume("succeeded:restore").await;
}

/// Makes `service` busy with somebody else's backup (not drsync's); the service shows
/// `Updating` until it ends.
async fn make_busy(w: &World, service: &str) {
    let body = drsync_tests::emulator::access_key_body(
        ACCOUNT,
        ACCOUNT_KEY,
        "apim-backups",
        "busy-marker",
    );
    let r = w.emu.post_op(service, "backup", &body).await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_service_is_waited_for() {
    // The primary runs someone else's 3 s backup when drsync starts.
    let w = World::new(3.0, 1.0).await;
    std::fs::create_dir_all(w.emu.dir.path().join(ACCOUNT).join("apim-backups")).unwrap();
    make_busy(&w, PRIMARY).await;
    let out = w.run(&["sync", "--busy-timeout", "60s"]).await;
    out.assert_code(0);
    assert!(
        out.stderr.contains("is Updating"),
        "the wait is visible:\n{}",
        out.stderr
    );
    // One foreign backup, one of drsync's, and no refused POST: drsync waited instead of
    // hammering the busy service.
    assert_eq!(w.accepted_posts("backup-post"), 2);
    assert_eq!(w.posts("backup-post"), 2);
    w.assert_targets_restored();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_that_stays_busy_is_reported_clearly() {
    let w = World::new(30.0, 1.0).await;
    std::fs::create_dir_all(w.emu.dir.path().join(ACCOUNT).join("apim-backups")).unwrap();
    make_busy(&w, PRIMARY).await;
    let out = w.run(&["sync", "--busy-timeout", "1s"]).await;
    out.assert_code(1);
    assert!(
        out.stderr
            .contains("service `apim-weu` is Updating (another operation is running on it)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        w.posts("backup-post"),
        1,
        "only the foreign backup was posted"
    );
    assert_eq!(w.posts("restore-post"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sku_mismatch_as_read_from_arm_is_refused_before_any_post() {
    // Configured as Premium, but Azure says Standard.
    let w = World::new(1.0, 1.0).await;
    w.emu
        .seed_with(ServiceSeed::new(SUB, RG, STANDBY, "northeurope").sku("Standard", 1))
        .unwrap();
    let out = w.run(&["sync"]).await;
    out.assert_code(1);
    assert!(
        out.stderr.contains("SKU mismatch as read from Azure: source `apim-weu` is Premium, target `apim-neu` is Standard"),
        "{}",
        out.stderr
    );
    assert_eq!(
        w.posts("backup-post") + w.posts("restore-post"),
        0,
        "no POST at all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_backup_is_refused_before_any_post() {
    let w = World::new(1.0, 1.0).await;
    // A backup taken 31 days ago, with its sidecar, as a previous drsync left it.
    let created = drsync_core::Clock::now(&drsync_core::SystemClock) - chrono::Duration::days(31);
    let run = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let name = drsync_core::BackupName::new(PRIMARY, created, run);
    let container = w.emu.dir.path().join(ACCOUNT).join("apim-backups");
    std::fs::create_dir_all(&container).unwrap();
    std::fs::write(container.join(name.as_str()), b"old backup").unwrap();
    let sidecar = serde_json::json!({
        "schema_version": 1, "backup": name.as_str(),
        "source": format!("/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/{PRIMARY}"),
        "sku": {"tier": "Premium", "capacity": 1}, "storage_account": ACCOUNT, "container": "apim-backups",
        "created_at": created.to_rfc3339(), "expires_at": (created + chrono::Duration::days(30)).to_rfc3339(),
        "change_marker": null, "consistency": "consistent", "run_id": run.to_string(),
    });
    std::fs::write(container.join(name.sidecar_blob()), sidecar.to_string()).unwrap();

    let out = w
        .run(&["restore", "--backup", name.as_str(), "--to", STANDBY])
        .await;
    out.assert_code(1);
    assert!(
        out.stderr.contains(&format!("backup `{name}` expired at")),
        "{}",
        out.stderr
    );
    assert_eq!(
        w.posts("backup-post") + w.posts("restore-post"),
        0,
        "no POST at all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_during_the_backup_marks_it_suspect_and_takes_another() {
    let w = World::new(3.0, 1.0).await;
    let cmd = w.command(&w.config, &["sync"]);
    let handle = tokio::spawn(run_async(cmd));
    // Wait for drsync's backup to be accepted, then change the primary's configuration.
    let mut waited = 0;
    while w.accepted_posts("backup-post") == 0 {
        assert!(waited < 3000, "drsync never posted its backup");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 10;
    }
    let mut config = w.emu.state().configuration(SUB, RG, PRIMARY).unwrap();
    config.apis.insert(
        "added-mid-backup".into(),
        serde_json::json!({"displayName": "Added", "path": "added"}),
    );
    w.emu
        .state()
        .set_configuration(SUB, RG, PRIMARY, config)
        .unwrap();

    let out = handle.await.unwrap();
    out.assert_code(0);
    assert!(
        out.stdout.contains("is suspect: `apim-weu` changed at"),
        "{}",
        out.stdout
    );
    assert_eq!(
        w.accepted_posts("backup-post"),
        2,
        "one more backup after the suspect one"
    );
    let list = w.run(&["catalog", "list"]).await;
    list.assert_code(0);
    assert!(list.stdout.contains("suspect"), "{}", list.stdout);
    assert!(list.stdout.contains("consistent"), "{}", list.stdout);
    // The targets got the consistent backup, which has the API added mid-backup.
    assert!(w.apis(STANDBY).contains(&"added-mid-backup".to_owned()));
    w.assert_targets_restored();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_is_rebuilt_from_storage_into_an_empty_state_dir() {
    let w = World::new(1.0, 1.0).await;
    w.run(&["sync"]).await.assert_code(0);
    let original = w.run(&["catalog", "list", "--json"]).await;
    let original: serde_json::Value = serde_json::from_str(&original.stdout).unwrap();
    assert_eq!(original.as_array().unwrap().len(), 1);

    // Elsewhere: same storage, no local state (the primary region and its drsync are gone).
    let elsewhere = w.fresh_state_config();
    let empty = run_async(w.command(&elsewhere, &["catalog", "list", "--json"])).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&empty.stdout).unwrap(),
        serde_json::json!([])
    );
    let synced = run_async(w.command(&elsewhere, &["catalog", "sync"])).await;
    synced.assert_code(0);
    assert!(
        synced
            .stdout
            .contains("catalog rebuilt from storage: 1 backup(s)"),
        "{}",
        synced.stdout
    );
    let rebuilt = run_async(w.command(&elsewhere, &["catalog", "list", "--json"])).await;
    let rebuilt: serde_json::Value = serde_json::from_str(&rebuilt.stdout).unwrap();
    assert_eq!(
        rebuilt, original,
        "the same records, read from the sidecars alone"
    );
}

/// The README's command on the demo configuration (embedded emulator), in a temporary copy:
/// a first sync, a crash right after a restore was accepted, the resume (which polls the
/// restore through the next run's emulator, on a new port), and a second sync with nothing to do.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_configuration_syncs_resumes_and_settles_in_embedded_mode() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::fs::read_to_string(drsync_tests::bin::repo_path("config/demo.toml")).unwrap();
    let config = dir.path().join("demo.toml");
    std::fs::write(&config, demo.replace("../.drsync-state", "state")).unwrap();
    let sync = |crash: Option<&str>| {
        let mut cmd = drsync();
        cmd.arg("sync")
            .arg("--config")
            .arg(&config)
            .env_remove("DRSYNC_TEST_CRASH_AT");
        if let Some(c) = crash {
            cmd.env("DRSYNC_TEST_CRASH_AT", c);
        }
        run_async(cmd)
    };
    let crashed = sync(Some("accepted:restore")).await;
    assert_eq!(crashed.code, None, "{}\n{}", crashed.stdout, crashed.stderr);
    let resumed = sync(None).await;
    resumed.assert_code(0);
    assert!(
        resumed.stdout.contains("Resuming run"),
        "{}",
        resumed.stdout
    );
    assert!(
        resumed.stdout.contains("succeeded: 6 step(s)"),
        "{}",
        resumed.stdout
    );
    let again = sync(None).await;
    again.assert_code(0);
    assert!(again.stdout.contains("Nothing to do"), "{}", again.stdout);
    assert!(
        dir.path()
            .join("state")
            .join("embedded-emulator.json")
            .is_file()
    );
}

/// A `backup` started while a killed sync still holds the primary's lease exits 5 and says
/// which run to resume; `sync` then finishes both runs, oldest first.
#[tokio::test(flavor = "multi_thread")]
async fn a_leased_service_exits_5_and_sync_resumes_the_runs_in_order() {
    let w = World::new(1.0, 1.0).await;
    let crashed = w.run_crashing("accepted:backup").await;
    assert_eq!(crashed.code, None);
    let blocked = w.run(&["backup", PRIMARY]).await;
    blocked.assert_code(5);
    assert!(
        blocked.stderr.contains("service `apim-weu` is leased by"),
        "{}",
        blocked.stderr
    );
    assert!(
        blocked
            .stderr
            .contains("run `drsync sync` to resume and finish it first"),
        "{}",
        blocked.stderr
    );
    assert_eq!(
        w.accepted_posts("backup-post"),
        1,
        "the blocked backup posted nothing"
    );

    let resumed = w.run(&["sync"]).await;
    resumed.assert_code(0);
    assert_eq!(
        resumed.stdout.matches("Resuming run").count(),
        2,
        "{}",
        resumed.stdout
    );
    assert_eq!(
        w.accepted_posts("backup-post"),
        2,
        "the killed sync's backup and the backup command's"
    );
    w.assert_targets_restored();
}

// ---------------------------------------------------------------------------------------------
// Restore markers: what each standby holds survives the loss of the state directory. See: #5.
// ---------------------------------------------------------------------------------------------

/// After a sync, the state directory is lost; `catalog sync` rebuilds the backups from their
/// sidecars and the restore records from the restore markers, so the next sync (the standbys
/// being within their RPO) restores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn restore_markers_spare_a_rebuilt_state_from_restoring_every_target_again() {
    let w = World::new(1.0, 1.0).await;
    w.run(&["sync"]).await.assert_code(0);
    assert_eq!(w.accepted_posts("backup-post"), 1);
    assert_eq!(w.accepted_posts("restore-post"), 2);
    let container = w.emu.dir.path().join(ACCOUNT).join("apim-backups");
    let markers: Vec<serde_json::Value> = std::fs::read_dir(&container)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".drsync-restored."))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    assert_eq!(markers.len(), 2, "{markers:?}");
    for m in &markers {
        assert_eq!(m["schema_version"], 1, "{m}");
        assert!(
            m["target"].as_str().unwrap().starts_with(&format!(
                "/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
            )),
            "{m}"
        );
    }

    // Elsewhere: same storage, an empty state directory.
    let elsewhere = w.fresh_state_config();
    let synced = run_async(w.command(&elsewhere, &["catalog", "sync"])).await;
    synced.assert_code(0);
    assert!(
        synced
            .stdout
            .contains("restore records rebuilt from restore markers: 2"),
        "{}",
        synced.stdout
    );
    let status = run_async(w.command(&elsewhere, &["status", "--output", "json"])).await;
    status.assert_code(0);
    let doc: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for e in doc["edges"].as_array().unwrap() {
        assert_eq!(e["state"], "ok", "{e}");
    }
    w.emu.state().clear_request_log();
    let again = run_async(w.command(&elsewhere, &["sync"])).await;
    again.assert_code(0);
    assert!(again.stdout.contains("Nothing to do"), "{}", again.stdout);
    assert_eq!(w.posts("restore-post"), 0, "nothing restored again");
    assert_eq!(w.posts("backup-post"), 0, "the backup is within the RPO");

    // Without the markers (say, written by an older drsync), the rebuilt state knows of no
    // restore and restores every target: the markers are what spared that.
    for m in std::fs::read_dir(&container).unwrap() {
        let p = m.unwrap().path();
        if p.to_string_lossy().contains(".drsync-restored.") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let third = w.fresh_state_config_named("state-third");
    run_async(w.command(&third, &["catalog", "sync"]))
        .await
        .assert_code(0);
    let plan = run_async(w.command(&third, &["plan", "--output", "json"])).await;
    plan.assert_code(0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let restores = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"]["kind"] == "restore")
        .count();
    assert_eq!(restores, 2, "{plan:#}");
}

impl World {
    /// Like [`World::fresh_state_config`], with the state directory `state_name`.
    fn fresh_state_config_named(&self, state_name: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let state = self._dir.path().join("state");
        let other = self._dir.path().join(state_name);
        let path = self._dir.path().join(format!("{state_name}.toml"));
        std::fs::write(
            &path,
            text.replace(&state.display().to_string(), &other.display().to_string()),
        )
        .unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------------
// A service that becomes busy between drsync's preflight and its restore POST: a real 409.
// (The busy tests above make the service busy before drsync starts, so preflight sees it; the
// executor's 409 path was covered only by the planner's in-memory fake.)
// ---------------------------------------------------------------------------------------------

/// Every request of `kind` to `service` (`.../service/{service}/{op}`), oldest first.
fn requests_to(w: &World, kind: &str, service: &str) -> Vec<drsync_tests::emulator::RequestRecord> {
    let needle = format!("/service/{service}");
    w.emu
        .request_log()
        .into_iter()
        .filter(|r| {
            r.kind == kind && (r.path.ends_with(&needle) || r.path.contains(&format!("{needle}/")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_turns_busy_after_preflight_gets_a_409_and_is_waited_for() {
    // Backups take 4 s, restores 1 s, a scale-out 8 s (emulated time = real time here).
    let w = World::build("Premium", |c| {
        c.durations.backup_secs = 4.0;
        c.durations.restore_secs = 1.0;
        c.durations.update_secs = 8.0;
    })
    .await;

    let sync = tokio::spawn(run_async(
        w.command(&w.config, &["sync", "--busy-timeout", "30s"]),
    ));
    // drsync's backup POST is accepted only after its preflight read every service as ready.
    let mut waited = Duration::ZERO;
    while w.accepted_posts("backup-post") == 0 {
        assert!(
            waited < Duration::from_secs(60),
            "drsync never posted its backup"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    }
    // Someone scales the standby out while drsync's backup runs: it is `Updating` for 8 s,
    // which covers the moment drsync POSTs the restore (about 4 s from now).
    let r = w
        .emu
        .arm(reqwest::Method::PATCH, &TestEmulator::service_path(STANDBY))
        .json(&serde_json::json!({"sku": {"name": "Premium", "capacity": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the scale-out started");
    let out = sync.await.unwrap();
    out.assert_code(0);

    // The preflight read the standby before it became busy.
    let patch = requests_to(&w, "service-patch", STANDBY);
    assert_eq!(patch.len(), 1);
    let preflight = requests_to(&w, "service-get", STANDBY);
    assert!(
        preflight.first().is_some_and(|g| g.seq < patch[0].seq),
        "preflight GET of the standby came before the scale-out: {preflight:?}"
    );
    // Exactly one refused POST (409 Conflict, after the scale-out began), then exactly one
    // accepted one: drsync waited for the service instead of re-POSTing into the conflict.
    let restores: Vec<(u16, Option<String>)> = requests_to(&w, "restore-post", STANDBY)
        .into_iter()
        .map(|r| {
            assert!(r.seq > patch[0].seq);
            (r.status, r.error_code)
        })
        .collect();
    assert_eq!(
        restores,
        vec![(409, Some("Conflict".to_owned())), (202, None)],
        "restore POSTs into the standby"
    );
    let staging: Vec<u16> = requests_to(&w, "restore-post", STAGING)
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(staging, vec![202], "the staging restore was not disturbed");
    assert_eq!(w.posts("backup-post"), 1, "one backup, never repeated");
    w.assert_targets_restored();

    // The wait is visible, with ARM's code and message.
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        all.contains("409 Conflict")
            && all.contains("The API Management service 'apim-neu' is Updating"),
        "the 409 is reported with ARM's code and message:\n{all}"
    );
}
