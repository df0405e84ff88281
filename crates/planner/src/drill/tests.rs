//! Runs of the drill procedure against an in-memory Azure, with a manual clock; every report is
//! checked against `docs/report-schema.json` and its JUnit rendering parsed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drsync_core::{
    BackupName, BackupRecord, Clock, Consistency, ManualClock, Secret, ServiceRef, Sku, SkuTier,
    SubscriptionId, Timestamp,
};
use serde_json::json;

use super::hooks::{HookCommand, HookSpec};
use super::report::{DrillKind, DrillReport, HookWhen, ObjectiveStatus, Phase, Status, junit_xml};
use super::runner::{
    BackupChoice, DrillOps, NamedValueOverride, OpError, Participant, RunSpec, run,
};
use super::snapshot::{ConfigSnapshot, IdentitySnapshot, ItemKind, SnapshotItem, content_hash};
use super::store::ReportStore;
use super::verify::{Overrides, VerifyScope};

fn t0() -> Timestamp {
    chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
        .unwrap()
        .into()
}

fn svc(name: &str) -> ServiceRef {
    let sub = SubscriptionId::parse("00000000-0000-0000-0000-000000000001").unwrap();
    ServiceRef::new(sub, format!("rg-{name}"), name).unwrap()
}

/// A service's content: name to properties, per kind.
type Content = BTreeMap<ItemKind, BTreeMap<String, serde_json::Value>>;

/// Breaks a report's JSON in one way.
type Breakage = fn(&mut serde_json::Value);

/// One service in the fake: its content (name -> properties per kind) and what restores keep.
#[derive(Debug, Clone)]
struct FakeService {
    items: Content,
    hostnames: Vec<String>,
    identity: Option<IdentitySnapshot>,
    last_change: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct World {
    services: BTreeMap<String, FakeService>,
    backups: Vec<(BackupRecord, Content)>,
    last_restored: BTreeMap<String, BackupName>,
    calls: Vec<String>,
    unreachable: Vec<String>,
    restore_changes_hostname: bool,
    promoted: Vec<(String, String, String)>,
    /// Snapshots kept beside backups, by backup name.
    kept: BTreeMap<String, ConfigSnapshot>,
}

#[derive(Debug, Clone)]
struct FakeOps {
    world: Arc<Mutex<World>>,
    clock: Arc<ManualClock>,
}

impl FakeOps {
    fn new(clock: Arc<ManualClock>) -> Self {
        let mut w = World::default();
        for (name, apis) in [
            ("apim-weu", vec!["orders", "payments"]),
            ("apim-neu", vec!["old"]),
        ] {
            let mut items = BTreeMap::new();
            items.insert(
                ItemKind::Api,
                apis.iter()
                    .map(|a| (a.to_string(), json!({"path": a})))
                    .collect(),
            );
            items.insert(
                ItemKind::Product,
                [("starter".to_string(), json!({"state": "published"}))]
                    .into_iter()
                    .collect(),
            );
            items.insert(
                ItemKind::NamedValue,
                [
                    (
                        "backend".to_string(),
                        json!({"value": "https://prod", "secret": false}),
                    ),
                    (
                        "key".to_string(),
                        json!({"value": "hunter2", "secret": true}),
                    ),
                ]
                .into_iter()
                .collect(),
            );
            w.services.insert(
                name.into(),
                FakeService {
                    items,
                    hostnames: vec![format!("{name}.azure-api.net")],
                    identity: Some(IdentitySnapshot {
                        kind: "SystemAssigned".into(),
                        principal_id: Some(format!("p-{name}")),
                        tenant_id: None,
                        user_assigned: vec![],
                    }),
                    last_change: Some(t0() - chrono::Duration::hours(2)),
                },
            );
        }
        Self {
            world: Arc::new(Mutex::new(w)),
            clock,
        }
    }

    fn w(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    fn touch(&self, s: &ServiceRef, what: &str) -> Result<(), OpError> {
        let mut w = self.w();
        w.calls.push(format!("{what} {}", s.name));
        if w.unreachable.contains(&s.name) {
            return Err(OpError::new(format!("`{}`: region unavailable", s.name)));
        }
        Ok(())
    }

    fn add_api(&self, service: &str, name: &str) {
        let now = self.clock.now();
        let mut w = self.w();
        let s = w.services.get_mut(service).unwrap();
        s.items
            .get_mut(&ItemKind::Api)
            .unwrap()
            .insert(name.into(), json!({"path": name}));
        s.last_change = Some(now);
    }
}

#[async_trait::async_trait]
impl DrillOps for FakeOps {
    async fn snapshot(&self, service: &ServiceRef) -> Result<ConfigSnapshot, OpError> {
        self.touch(service, "snapshot")?;
        self.clock.advance(chrono::Duration::seconds(1));
        let w = self.w();
        let s = &w.services[&service.name];
        let mut snap = ConfigSnapshot::new(
            service.resource_id(),
            self.clock.now(),
            Sku {
                tier: SkuTier::Premium,
                capacity: 1,
            },
        );
        for (kind, items) in &s.items {
            snap.add_items(
                *kind,
                items.iter().map(|(n, c)| SnapshotItem::new(n, c.clone())),
            );
        }
        snap.set_hostnames(s.hostnames.clone());
        snap.identity = s.identity.clone();
        snap.last_change = s.last_change;
        snap.gateway_url = Some(format!("https://{}.azure-api.net", service.name));
        Ok(snap)
    }

    async fn backup(&self, source: &ServiceRef) -> Result<BackupRecord, OpError> {
        self.touch(source, "backup")?;
        let started = self.clock.now();
        self.clock.advance(chrono::Duration::minutes(5));
        let mut w = self.w();
        let items = w.services[&source.name].items.clone();
        let created_at = self.clock.now();
        let record = BackupRecord {
            name: BackupName::new(
                &source.name,
                started,
                uuid::Uuid::from_u128(w.backups.len() as u128 + 1),
            ),
            source: source.clone(),
            sku: Sku {
                tier: SkuTier::Premium,
                capacity: 1,
            },
            storage_account: "drsyncneu".into(),
            container: "apim-backups".into(),
            created_at,
            expires_at: BackupRecord::expiry_for(created_at),
            change_marker: None,
            consistency: Consistency::Consistent,
        };
        w.backups.push((record.clone(), items));
        Ok(record)
    }

    async fn newest_valid_backup(
        &self,
        source: &ServiceRef,
        now: Timestamp,
    ) -> Result<Option<BackupRecord>, OpError> {
        let mut w = self.w();
        w.calls.push(format!("catalog {}", source.name));
        Ok(w.backups
            .iter()
            .map(|(b, _)| b)
            .filter(|b| b.source == *source && b.is_restorable_at(now))
            .max_by_key(|b| b.created_at)
            .cloned())
    }

    async fn last_restored(&self, target: &ServiceRef) -> Result<Option<BackupName>, OpError> {
        Ok(self.w().last_restored.get(&target.name).cloned())
    }

    async fn restore(&self, backup: &BackupRecord, target: &ServiceRef) -> Result<(), OpError> {
        self.touch(target, "restore")?;
        self.clock.advance(chrono::Duration::minutes(15));
        let mut w = self.w();
        let items = w
            .backups
            .iter()
            .find(|(b, _)| b.name == backup.name)
            .unwrap()
            .1
            .clone();
        let change_hostname = w.restore_changes_hostname;
        let s = w.services.get_mut(&target.name).unwrap();
        s.items = items;
        if change_hostname {
            s.hostnames = vec![format!("{}.azure-api.net", backup.source.name)];
        }
        w.last_restored
            .insert(target.name.clone(), backup.name.clone());
        Ok(())
    }

    async fn apply_overrides(
        &self,
        target: &ServiceRef,
        overrides: &[NamedValueOverride],
    ) -> Result<Overrides, OpError> {
        self.touch(target, "overrides")?;
        let mut w = self.w();
        let s = w.services.get_mut(&target.name).unwrap();
        let mut out = Overrides::none();
        for o in overrides {
            let content = json!({"value": o.value.expose(), "secret": o.secret});
            let hash = content_hash(ItemKind::NamedValue, &target.resource_id(), &content);
            s.items
                .get_mut(&ItemKind::NamedValue)
                .unwrap()
                .insert(o.name.clone(), content);
            out.named_values.insert(o.name.clone(), Some(hash));
        }
        Ok(out)
    }

    async fn save_backup_snapshot(
        &self,
        backup: &BackupRecord,
        snapshot: &ConfigSnapshot,
    ) -> Result<(), OpError> {
        self.w()
            .kept
            .insert(backup.name.to_string(), snapshot.clone());
        Ok(())
    }

    async fn backup_snapshot(
        &self,
        backup: &BackupRecord,
    ) -> Result<Option<ConfigSnapshot>, OpError> {
        Ok(self.w().kept.get(backup.name.as_str()).cloned())
    }

    async fn promote(
        &self,
        edge: &str,
        source: &ServiceRef,
        target: &ServiceRef,
    ) -> Result<(), OpError> {
        self.w()
            .promoted
            .push((edge.into(), source.name.clone(), target.name.clone()));
        Ok(())
    }
}

fn spec(kind: DrillKind, backup: BackupChoice) -> RunSpec {
    RunSpec {
        kind,
        edge: "contoso-dr".into(),
        source: Participant {
            service: svc("apim-weu"),
            region: Some("westeurope".into()),
        },
        target: Participant {
            service: svc("apim-neu"),
            region: Some("northeurope".into()),
        },
        backup,
        source_reachable: true,
        rto: Some(Duration::from_secs(45 * 60)),
        rpo: Some(Duration::from_secs(60 * 60)),
        scope: VerifyScope::default(),
        overrides: vec![],
        promote: matches!(kind, DrillKind::Failover | DrillKind::Failback),
        hooks: vec![],
        hook_dir: None,
        run_id: uuid::Uuid::from_u128(0xabcdef01_0000_0000_0000_000000000000),
    }
}

fn hook(phase: Phase, when: HookWhen, command: &str) -> HookSpec {
    HookSpec {
        name: Some(format!("{when}-{phase}-hook")),
        phase,
        when,
        command: HookCommand::Shell(command.into()),
        timeout: Some("10s".into()),
        env: BTreeMap::new(),
        edges: vec![],
        kinds: vec![],
    }
}

/// The report must match the published schema and its JUnit must parse; returns the testcase
/// names with their failure messages.
fn check_renderings(report: &DrillReport) -> Vec<(String, Option<String>)> {
    let schema: serde_json::Value = serde_json::from_str(super::REPORT_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("the schema is valid JSON Schema");
    let instance: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match docs/report-schema.json: {errors:#?}"
    );
    parse_junit(&junit_xml(&[report]))
}

pub(crate) fn parse_junit(xml: &str) -> Vec<(String, Option<String>)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut cases: Vec<(String, Option<String>)> = Vec::new();
    loop {
        match reader.read_event().expect("JUnit XML parses") {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                let name = e
                    .try_get_attribute("name")
                    .unwrap()
                    .expect("testcase has a name")
                    .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                    .unwrap()
                    .into_owned();
                cases.push((name, None));
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"failure" => {
                let message = e
                    .try_get_attribute("message")
                    .unwrap()
                    .expect("failure has a message")
                    .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                    .unwrap()
                    .into_owned();
                cases.last_mut().expect("failure inside a testcase").1 = Some(message);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    cases
}

#[tokio::test]
async fn a_drill_with_a_fresh_backup_passes_and_measures_its_objectives() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let mut s = spec(DrillKind::Drill, BackupChoice::Fresh);
    s.hooks = vec![hook(
        Phase::Verify,
        HookWhen::After,
        "echo checked $DRSYNC_TARGET_NAME",
    )];
    let r = run(&s, &ops, clock.as_ref()).await;
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.id, "drill-apim-neu-20261127T120000Z-abcdef01");
    let phases: Vec<(Phase, Status)> = r.phases.iter().map(|p| (p.phase, p.status)).collect();
    assert_eq!(
        phases,
        [
            (Phase::Preflight, Status::Passed),
            (Phase::Backup, Status::Passed),
            (Phase::Restore, Status::Passed),
            (Phase::Verify, Status::Passed),
        ]
    );
    // Preflight 1 s, backup 5 min + 1 s, restore 15 min, verify 1 s.
    assert_eq!(
        r.objectives.recovery_time.actual_seconds,
        Some(1 + 301 + 900 + 1)
    );
    assert_eq!(r.objectives.recovery_time.status, ObjectiveStatus::Met);
    assert_eq!(r.objectives.recovery_point.actual_seconds, Some(0));
    assert_eq!(r.phases[3].hooks[0].stdout, "checked apim-neu\n");
    assert!(!r.backup.as_ref().unwrap().reused);
    let v = r.verification.as_ref().unwrap();
    assert_eq!(v.counts[0].expected, 2);
    // The secret named value's value appears nowhere in the report.
    assert!(!r.to_json().contains("hunter2"));
    let cases = check_renderings(&r);
    assert!(cases.iter().all(|(_, f)| f.is_none()), "{cases:?}");
    assert!(cases.iter().any(|(n, _)| n == "phase restore"));
    assert!(
        cases
            .iter()
            .any(|(n, _)| n == "hook after-verify-hook (after verify)")
    );
}

#[tokio::test]
async fn an_api_added_after_the_backup_fails_verification_by_name() {
    // See: #6 (a drill that fails verification because an API was added after the backup).
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    ops.backup(&svc("apim-weu")).await.unwrap();
    clock.advance(chrono::Duration::minutes(10));
    ops.add_api("apim-weu", "inventory");
    clock.advance(chrono::Duration::minutes(10));
    let r = run(
        &spec(DrillKind::Drill, BackupChoice::Latest),
        &ops,
        clock.as_ref(),
    )
    .await;
    assert!(!r.passed());
    assert_eq!(
        r.failures,
        [
            "phase verify failed: 1 difference(s); first: API `inventory` is in the source but missing from the restored service",
            "verification: API `inventory` is in the source but missing from the restored service",
        ]
    );
    assert!(r.backup.as_ref().unwrap().reused);
    assert_eq!(r.phases[1].status, Status::Skipped);
    // Not verified: recovery time and point are unknown.
    assert_eq!(r.objectives.recovery_time.status, ObjectiveStatus::Unknown);
    let cases = check_renderings(&r);
    let failed: Vec<_> = cases
        .iter()
        .filter_map(|(n, f)| f.as_ref().map(|f| (n.as_str(), f.as_str())))
        .collect();
    assert_eq!(
        failed,
        [
            (
                "phase verify",
                "1 difference(s); first: API `inventory` is in the source but missing from the restored service"
            ),
            (
                "verify APIs",
                "1 difference(s): API `inventory` is in the source but missing from the restored service"
            ),
        ]
    );
}

#[tokio::test]
async fn a_failing_hook_fails_its_phase_and_stops_the_run() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let mut s = spec(DrillKind::Drill, BackupChoice::Fresh);
    s.hooks = vec![hook(
        Phase::Restore,
        HookWhen::Before,
        "echo draining; exit 4",
    )];
    let r = run(&s, &ops, clock.as_ref()).await;
    assert!(!r.passed());
    let phases: Vec<(Phase, Status)> = r.phases.iter().map(|p| (p.phase, p.status)).collect();
    assert_eq!(
        phases,
        [
            (Phase::Preflight, Status::Passed),
            (Phase::Backup, Status::Passed),
            (Phase::Restore, Status::Failed),
            (Phase::Verify, Status::Skipped),
        ]
    );
    assert_eq!(
        r.failures,
        ["phase restore failed: before-hook `before-restore-hook` failed: exited with status 4"]
    );
    assert_eq!(r.phases[2].hooks[0].stdout, "draining\n");
    assert!(
        !ops.w().calls.iter().any(|c| c.starts_with("restore")),
        "the restore never ran"
    );
    let cases = check_renderings(&r);
    assert!(cases.contains(&(
        "hook before-restore-hook (before restore)".into(),
        Some("exited with status 4".into())
    )));
}

#[tokio::test]
async fn a_restore_that_changes_hostnames_fails_verification() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    ops.w().restore_changes_hostname = true;
    let r = run(
        &spec(DrillKind::Drill, BackupChoice::Fresh),
        &ops,
        clock.as_ref(),
    )
    .await;
    assert_eq!(
        r.failures.last().unwrap(),
        "verification: hostnames NOT kept: before the restore [apim-neu.azure-api.net], after [apim-weu.azure-api.net]"
    );
    check_renderings(&r);
}

#[tokio::test]
async fn a_slow_restore_misses_the_rto() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let mut s = spec(DrillKind::Drill, BackupChoice::Fresh);
    s.rto = Some(Duration::from_secs(10 * 60));
    let r = run(&s, &ops, clock.as_ref()).await;
    assert_eq!(
        r.failures,
        ["recovery time 20m 3s exceeds the objective 10m"]
    );
    let cases = check_renderings(&r);
    assert!(cases.contains(&(
        "objective recovery time".into(),
        Some("recovery time 20m 3s exceeds the objective 10m".into())
    )));
}

#[tokio::test]
async fn failover_never_calls_the_unreachable_primary() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    ops.backup(&svc("apim-weu")).await.unwrap();
    clock.advance(chrono::Duration::minutes(30));
    ops.w().unreachable.push("apim-weu".into());
    ops.w().calls.clear();
    let mut s = spec(DrillKind::Failover, BackupChoice::LatestIfBehind);
    s.source_reachable = false;
    s.hooks = vec![hook(
        Phase::Promote,
        HookWhen::After,
        "echo switch dns to $DRSYNC_TARGET_NAME",
    )];
    let r = run(&s, &ops, clock.as_ref()).await;
    assert!(r.passed(), "{:?}", r.failures);
    assert!(
        !ops.w()
            .calls
            .iter()
            .any(|c| c.ends_with("apim-weu") && !c.starts_with("catalog"))
    );
    assert_eq!(
        ops.w().promoted,
        [("contoso-dr".into(), "apim-weu".into(), "apim-neu".into())]
    );
    let v = r.verification.as_ref().unwrap();
    assert_eq!(v.source, None);
    let rp = r.objectives.recovery_point;
    assert_eq!(rp.basis, Some(super::report::RecoveryPointBasis::BackupAge));
    // Backup started at t0, 5 min backup, 30 min wait, 1 s preflight, 15 min restore, 1 s verify.
    assert_eq!(rp.actual_seconds, Some(50 * 60 + 2));
    assert_eq!(
        r.phases.last().unwrap().hooks[0].stdout,
        "switch dns to apim-neu\n"
    );
    check_renderings(&r);

    // A second failover finds the standby already holding the newest backup: no restore.
    let r2 = run(&s, &ops, clock.as_ref()).await;
    assert!(r2.passed(), "{:?}", r2.failures);
    assert_eq!(r2.phases[2].phase, Phase::Restore);
    assert_eq!(r2.phases[2].status, Status::Skipped);
    check_renderings(&r2);
}

#[tokio::test]
async fn failover_with_no_backup_in_the_catalog_fails_in_preflight() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let mut s = spec(DrillKind::Failover, BackupChoice::LatestIfBehind);
    s.source_reachable = false;
    let r = run(&s, &ops, clock.as_ref()).await;
    assert_eq!(r.phases[0].status, Status::Failed);
    assert!(
        r.failures[0].contains("no valid backup of `apim-weu` in the catalog"),
        "{:?}",
        r.failures
    );
    assert!(
        ops.w().promoted.is_empty(),
        "nothing is promoted after a failed restore"
    );
    check_renderings(&r);
}

#[tokio::test]
async fn a_clone_with_overrides_verifies_against_the_overridden_values() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let mut s = spec(DrillKind::Clone, BackupChoice::Fresh);
    s.overrides = vec![NamedValueOverride {
        name: "backend".into(),
        value: Secret::new("https://staging"),
        secret: false,
    }];
    let r = run(&s, &ops, clock.as_ref()).await;
    assert!(r.passed(), "{:?}", r.failures);
    assert_eq!(r.phases[3].phase, Phase::Overrides);
    assert_eq!(
        r.phases[3].message.as_deref(),
        Some("replaced named values: backend")
    );
    assert_eq!(r.verification.as_ref().unwrap().overridden, ["backend"]);
    check_renderings(&r);
}

#[tokio::test]
async fn reports_are_stored_listed_and_found_by_prefix() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = ReportStore::new(dir.path());
    assert!(store.list().unwrap().is_empty());
    let r1 = run(
        &spec(DrillKind::Drill, BackupChoice::Fresh),
        &ops,
        clock.as_ref(),
    )
    .await;
    let mut s2 = spec(DrillKind::Drill, BackupChoice::Latest);
    s2.run_id = uuid::Uuid::from_u128(0x12345678_0000_0000_0000_000000000000);
    let r2 = run(&s2, &ops, clock.as_ref()).await;
    let paths = store.save(&r1).unwrap();
    store.save(&r2).unwrap();
    assert!(paths.markdown.is_file() && paths.junit.is_file());
    let listed: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(listed, [r1.id.clone(), r2.id.clone()]);
    assert_eq!(store.load(&r2.id).unwrap(), r2);
    assert_eq!(store.load("drill-apim-neu-20261127T1200").unwrap(), r1);
    let e = store.load("drill-").unwrap_err().to_string();
    assert!(e.starts_with("`drill-` matches several reports"), "{e}");
    let e = store.load("nope").unwrap_err().to_string();
    assert_eq!(e, "no drill report `nope` (see `drsync drills list`)");
}

#[tokio::test]
async fn the_schema_rejects_a_report_that_breaks_it() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let r = run(
        &spec(DrillKind::Drill, BackupChoice::Fresh),
        &ops,
        clock.as_ref(),
    )
    .await;
    let schema: serde_json::Value = serde_json::from_str(super::REPORT_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let good: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert!(validator.is_valid(&good));
    let breakages: [(&str, Breakage); 5] = [
        ("outcome", |v| v["outcome"] = "maybe".into()),
        ("schema_version", |v| v["schema_version"] = 2.into()),
        ("extra field", |v| v["secret"] = "x".into()),
        ("missing field", |v| {
            v.as_object_mut().unwrap().remove("objectives");
        }),
        ("bad hash", |v| {
            v["verification"]["differences"] = serde_json::json!([{
                "kind": "changed", "item": "api", "name": "a",
                "expected_sha256": "nothex", "actual_sha256": "nothex"
            }]);
        }),
    ];
    for (what, breaks) in breakages {
        let mut bad = good.clone();
        breaks(&mut bad);
        assert!(
            !validator.is_valid(&bad),
            "the schema accepted a report with a broken {what}"
        );
    }
}

/// A version-1 report written by a real `drsync drill` on the embedded emulator. It must keep
/// parsing and matching the schema for as long as the schema version is 1.
#[test]
fn a_stored_version_1_report_still_reads_and_matches_the_schema() {
    let text = include_str!("../../../../tests/fixtures/drills/report-v1.json");
    let report = DrillReport::from_json(text).expect("a v1 report parses");
    assert!(report.passed());
    assert_eq!(report.phases.len(), 4);
    assert_eq!(report.phases[3].hooks[0].name, "smoke-test");
    let cases = check_renderings(&report);
    assert!(cases.iter().all(|(_, f)| f.is_none()), "{cases:?}");
}

/// The example files in tests/fixtures/drills parse.
#[test]
fn the_example_hooks_and_overrides_files_parse() {
    let hooks = super::HooksFile::parse(
        include_str!("../../../../tests/fixtures/drills/hooks.toml"),
        "hooks.toml",
    )
    .unwrap();
    assert_eq!(hooks.hooks[0].phase, Phase::Verify);
    let overrides = super::overrides::parse_overrides(
        include_str!("../../../../tests/fixtures/drills/overrides.toml"),
        "overrides.toml",
        |name| (name == "STAGING_PAYMENTS_KEY").then(|| "k".to_string()),
    )
    .unwrap();
    let names: Vec<&str> = overrides.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["backend-url", "feature-flag", "payments-key"]);
    assert!(overrides[2].secret);
}

#[tokio::test]
async fn a_failover_compares_content_with_the_snapshot_a_drill_kept_beside_the_backup() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    // A passing drill keeps the source's snapshot beside its backup.
    let drill = run(
        &spec(DrillKind::Drill, BackupChoice::Fresh),
        &ops,
        clock.as_ref(),
    )
    .await;
    assert!(drill.passed(), "{:?}", drill.failures);
    let backup = drill.backup.as_ref().unwrap().name.clone();
    let kept: Vec<String> = ops.w().kept.keys().cloned().collect();
    assert_eq!(kept, [backup.as_str()]);
    let verify_msg = drill.phases[3].message.clone().unwrap_or_default();
    assert!(
        verify_msg.contains("its snapshot is kept beside backup"),
        "{verify_msg}"
    );

    // The primary's region goes down; the failover reads no source, yet compares content.
    clock.advance(chrono::Duration::minutes(10));
    ops.w().unreachable.push("apim-weu".into());
    ops.w().calls.clear();
    let mut s = spec(DrillKind::Failover, BackupChoice::LatestIfBehind);
    s.source_reachable = false;
    let r = run(&s, &ops, clock.as_ref()).await;
    assert!(r.passed(), "{:?}", r.failures);
    let v = r.verification.as_ref().unwrap();
    assert_eq!(v.source, Some(svc("apim-weu").resource_id()));
    assert!(
        v.counts
            .iter()
            .all(|c| c.expected == c.actual && c.expected > 0)
    );
    assert!(
        r.phases[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("content will be compared"),
        "{:?}",
        r.phases[0].message
    );
    // No restore was needed (the drill restored that backup), and the source was never read.
    assert_eq!(r.phases[2].status, Status::Skipped);
    assert!(
        !ops.w()
            .calls
            .iter()
            .any(|c| c.ends_with("apim-weu") && !c.starts_with("catalog")),
        "{:?}",
        ops.w().calls
    );
    check_renderings(&r);

    // Someone changed the standby after the drill: the failover's verification names it.
    ops.w()
        .services
        .get_mut("apim-neu")
        .unwrap()
        .items
        .get_mut(&ItemKind::Api)
        .unwrap()
        .insert("hotfix".into(), json!({"path": "hotfix"}));
    let r = run(&s, &ops, clock.as_ref()).await;
    assert!(!r.passed());
    assert!(
        r.failures.iter().any(|f| f.contains("`hotfix`")),
        "{:?}",
        r.failures
    );
    check_renderings(&r);
}

#[tokio::test]
async fn nothing_is_kept_beside_a_backup_when_verification_fails_or_overrides_apply() {
    let clock = Arc::new(ManualClock::new(t0()));
    let ops = FakeOps::new(clock.clone());
    let mut clone = spec(DrillKind::Clone, BackupChoice::Fresh);
    clone.overrides = vec![NamedValueOverride {
        name: "backend".into(),
        value: Secret::new("https://staging"),
        secret: false,
    }];
    let r = run(&clone, &ops, clock.as_ref()).await;
    assert!(r.passed(), "{:?}", r.failures);
    assert!(
        ops.w().kept.is_empty(),
        "overridden values were not compared"
    );
    ops.w().restore_changes_hostname = true;
    let r = run(
        &spec(DrillKind::Drill, BackupChoice::Fresh),
        &ops,
        clock.as_ref(),
    )
    .await;
    assert!(!r.passed());
    assert!(ops.w().kept.is_empty(), "a failed drill keeps nothing");
}

fn record(source: &str, created_at: Timestamp, consistency: Consistency, n: u128) -> BackupRecord {
    BackupRecord {
        name: BackupName::new(source, created_at, uuid::Uuid::from_u128(n)),
        source: svc(source),
        sku: Sku {
            tier: SkuTier::Premium,
            capacity: 1,
        },
        storage_account: "drsyncneu".into(),
        container: "apim-backups".into(),
        created_at,
        expires_at: BackupRecord::expiry_for(created_at),
        change_marker: None,
        consistency,
    }
}

// See: #6. A failover that finds nothing to restore says why: nothing at all, only expired
// backups, or only suspect ones, naming the newest of each.
#[test]
fn why_no_backup_is_valid_is_said_plainly() {
    use super::runner::no_valid_backup_reason as why;
    let now = t0();
    let days = chrono::Duration::days;
    let other_source = record("apim-other", now - days(1), Consistency::Consistent, 1);
    let mut elsewhere = record("apim-weu", now - days(1), Consistency::Consistent, 2);
    elsewhere.storage_account = "drsyncweu".into();

    let reason = why(
        &[other_source.clone(), elsewhere.clone()],
        "apim-weu",
        "drsyncneu",
        "apim-backups",
        now,
    );
    assert_eq!(
        reason,
        "no backup of `apim-weu` in storage account `drsyncneu`, container `apim-backups` (catalog rebuilt from its sidecar blobs): there is nothing to restore"
    );

    let old = record("apim-weu", now - days(31), Consistency::Consistent, 3);
    let older = record("apim-weu", now - days(40), Consistency::Consistent, 4);
    let reason = why(
        &[older.clone(), old.clone(), other_source.clone()],
        "apim-weu",
        "drsyncneu",
        "apim-backups",
        now,
    );
    assert!(reason.starts_with("no valid backup of `apim-weu` in storage account `drsyncneu`, container `apim-backups`: 2 backup(s), none restorable; 2 expired"), "{reason}");
    assert!(
        reason.contains(&format!("`{}`, expired at 2026-11-26T12:00:00Z", old.name)),
        "{reason}"
    );
    assert!(!reason.contains("suspect"), "{reason}");

    // Exactly at its expiry instant a backup is no longer valid.
    let edge = record("apim-weu", now - days(30), Consistency::Consistent, 5);
    let reason = why(
        std::slice::from_ref(&edge),
        "apim-weu",
        "drsyncneu",
        "apim-backups",
        now,
    );
    assert!(reason.contains("1 expired"), "{reason}");

    let suspect = record("apim-weu", now - days(2), Consistency::Suspect, 6);
    let reason = why(
        &[old.clone(), suspect.clone()],
        "apim-weu",
        "drsyncneu",
        "apim-backups",
        now,
    );
    assert!(
        reason.contains("2 backup(s), none restorable; 1 expired"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!(
            "1 suspect (the configuration changed while it ran, so it may mix old and new content; drsync does not restore suspect backups): the newest is `{}`",
            suspect.name
        )),
        "{reason}"
    );
    assert!(!reason.contains("looks restorable"), "{reason}");
}

#[test]
fn the_suspect_last_resort_is_the_newest_restorable_suspect_backup() {
    use super::runner::newest_restorable_suspect as pick;
    let now = t0();
    let days = chrono::Duration::days;
    let expired = record("apim-weu", now - days(31), Consistency::Suspect, 1);
    let older = record("apim-weu", now - days(3), Consistency::Suspect, 2);
    let newer = record("apim-weu", now - days(2), Consistency::Suspect, 3);
    let consistent = record("apim-weu", now - days(1), Consistency::Consistent, 4);
    let other = record("apim-other", now - days(1), Consistency::Suspect, 5);
    let all = [expired.clone(), older, newer.clone(), consistent, other];
    assert_eq!(
        pick(&all, "apim-weu", "drsyncneu", "apim-backups", now),
        Some(&newer)
    );
    assert_eq!(
        pick(&all, "apim-weu", "drsyncweu", "apim-backups", now),
        None
    );
    assert_eq!(
        pick(&[expired], "apim-weu", "drsyncneu", "apim-backups", now),
        None
    );
}
