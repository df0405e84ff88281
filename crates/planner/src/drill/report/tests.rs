use std::time::Duration;

use super::*;
use crate::drill::snapshot::ItemKind;
use crate::drill::verify::{Difference, ItemCount, VerificationReport};

fn at(s: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().into()
}

fn mins(m: u64) -> Option<Duration> {
    Some(Duration::from_secs(m * 60))
}

#[test]
fn recovery_time_is_judged_against_the_rto() {
    let start = at("2026-11-27T12:00:00Z");
    let o = Objective::recovery_time(start, Some(at("2026-11-27T12:30:00Z")), mins(45));
    assert_eq!(
        (o.actual_seconds, o.status),
        (Some(1800), ObjectiveStatus::Met)
    );
    let o = Objective::recovery_time(start, Some(at("2026-11-27T12:46:00Z")), mins(45));
    assert_eq!(o.status, ObjectiveStatus::Missed);
    let o = Objective::recovery_time(start, Some(at("2026-11-27T12:45:00Z")), mins(45));
    assert_eq!(
        o.status,
        ObjectiveStatus::Met,
        "exactly on the objective meets it"
    );
    let o = Objective::recovery_time(start, Some(at("2026-11-27T12:46:00Z")), None);
    assert_eq!(o.status, ObjectiveStatus::NotSet);
    let o = Objective::recovery_time(start, None, mins(45));
    assert_eq!(
        (o.actual_seconds, o.status),
        (None, ObjectiveStatus::Unknown)
    );
}

#[test]
fn recovery_point_is_the_change_the_backup_lacks() {
    let backup = at("2026-11-27T11:00:00Z");
    let now = at("2026-11-27T12:00:00Z");
    // The primary has not changed since the backup started: nothing is lost.
    let o = Objective::recovery_point(backup, Some(at("2026-11-27T10:00:00Z")), now, mins(60));
    assert_eq!(
        (o.actual_seconds, o.status),
        (Some(0), ObjectiveStatus::Met)
    );
    assert_eq!(o.basis, Some(RecoveryPointBasis::PrimaryLastChange));
    // It changed 90 minutes after: 90 minutes of changes are missing.
    let o = Objective::recovery_point(backup, Some(at("2026-11-27T12:30:00Z")), now, mins(60));
    assert_eq!(
        (o.actual_seconds, o.status),
        (Some(5400), ObjectiveStatus::Missed)
    );
    // Unknown last change (the primary is unreachable): the backup's age bounds it.
    let o = Objective::recovery_point(backup, None, now, mins(30));
    assert_eq!(
        (o.actual_seconds, o.status),
        (Some(3600), ObjectiveStatus::Missed)
    );
    assert_eq!(o.basis, Some(RecoveryPointBasis::BackupAge));
}

pub(crate) fn sample(outcome_fails: bool) -> DrillReport {
    let src = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-weu/providers/Microsoft.ApiManagement/service/apim-weu";
    let dst = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-neu/providers/Microsoft.ApiManagement/service/apim-neu";
    let t0 = at("2026-11-27T12:00:00Z");
    let hook = HookRecord {
        name: "smoke <test> & \"quotes\"".into(),
        phase: Phase::Verify,
        when: HookWhen::After,
        command: "curl -fsS $DRSYNC_TARGET_GATEWAY_URL".into(),
        started_at: at("2026-11-27T12:21:00Z"),
        finished_at: at("2026-11-27T12:21:02Z"),
        status: if outcome_fails {
            Status::Failed
        } else {
            Status::Passed
        },
        exit_code: Some(if outcome_fails { 7 } else { 0 }),
        timed_out: false,
        message: outcome_fails.then(|| "exited with status 7".into()),
        stdout: "ok ```fenced``` \u{1}\n".into(),
        stderr: String::new(),
    };
    let phase = |p, s: &str, e: &str, status| PhaseRecord {
        phase: p,
        status,
        started_at: Some(at(s)),
        finished_at: Some(at(e)),
        message: None,
        hooks: vec![],
    };
    let mut verify = phase(
        Phase::Verify,
        "2026-11-27T12:20:00Z",
        "2026-11-27T12:21:02Z",
        Status::Passed,
    );
    verify.hooks.push(hook);
    if outcome_fails {
        verify.status = Status::Failed;
        verify.message = Some("after-hook `smoke` failed: exited with status 7".into());
    }
    let differences = if outcome_fails {
        vec![Difference::Missing {
            item: ItemKind::Api,
            name: "payments".into(),
        }]
    } else {
        vec![]
    };
    let mut r = DrillReport {
        schema_version: REPORT_SCHEMA_VERSION,
        id: "drill-apim-neu-20261127T120000Z-0123abcd".into(),
        kind: DrillKind::Drill,
        edge: "contoso-dr".into(),
        drsync_version: "0.0.0".into(),
        started_at: t0,
        finished_at: at("2026-11-27T12:21:02Z"),
        outcome: Status::Failed,
        failures: vec![],
        source: ServiceInfo {
            name: "apim-weu".into(),
            resource_id: src.into(),
            region: Some("westeurope".into()),
            gateway_url: Some("https://apim-weu.azure-api.net".into()),
        },
        target: ServiceInfo {
            name: "apim-neu".into(),
            resource_id: dst.into(),
            region: Some("northeurope".into()),
            gateway_url: None,
        },
        backup: Some(BackupInfo {
            name: "apim-weu.20261127T120000Z.0123abcd".into(),
            started_at: t0,
            created_at: at("2026-11-27T12:05:00Z"),
            expires_at: at("2026-12-27T12:05:00Z"),
            consistency: Consistency::Consistent,
            storage_account: "drsyncneu".into(),
            container: "apim-backups".into(),
            reused: false,
        }),
        phases: vec![
            phase(
                Phase::Preflight,
                "2026-11-27T12:00:00Z",
                "2026-11-27T12:00:01Z",
                Status::Passed,
            ),
            phase(
                Phase::Backup,
                "2026-11-27T12:00:01Z",
                "2026-11-27T12:05:00Z",
                Status::Passed,
            ),
            phase(
                Phase::Restore,
                "2026-11-27T12:05:00Z",
                "2026-11-27T12:20:00Z",
                Status::Passed,
            ),
            verify,
        ],
        verification: Some(VerificationReport {
            source: Some(src.into()),
            target: dst.into(),
            counts: vec![
                ItemCount {
                    item: ItemKind::Api,
                    expected: 2,
                    actual: if outcome_fails { 1 } else { 2 },
                },
                ItemCount {
                    item: ItemKind::Product,
                    expected: 1,
                    actual: 1,
                },
                ItemCount {
                    item: ItemKind::NamedValue,
                    expected: 3,
                    actual: 3,
                },
            ],
            checked: ItemKind::ALL.to_vec(),
            overridden: vec![],
            differences,
        }),
        objectives: Objectives {
            recovery_time: Objective::recovery_time(t0, Some(at("2026-11-27T12:21:00Z")), mins(45)),
            recovery_point: Objective::recovery_point(
                t0,
                Some(at("2026-11-27T11:00:00Z")),
                t0,
                mins(60),
            ),
        },
    };
    r.settle();
    r
}

#[test]
fn settle_collects_failures_from_phases_verification_and_objectives() {
    let ok = sample(false);
    assert!(ok.passed(), "{:?}", ok.failures);
    let bad = sample(true);
    assert_eq!(
        bad.failures,
        [
            "phase verify failed: after-hook `smoke` failed: exited with status 7",
            "verification: API `payments` is in the source but missing from the restored service",
        ]
    );
    let mut slow = sample(false);
    slow.objectives.recovery_time.status = ObjectiveStatus::Missed;
    slow.settle();
    assert_eq!(
        slow.failures,
        ["recovery time 21m exceeds the objective 45m"]
    );
}

#[test]
fn json_round_trips_and_refuses_other_versions() {
    let r = sample(true);
    let back = DrillReport::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    v["schema_version"] = 2.into();
    let e = DrillReport::from_json(&v.to_string()).unwrap_err();
    assert_eq!(
        e,
        "report schema version 2 is not supported (this drsync reads version 1)"
    );
    assert_eq!(
        DrillReport::from_json("{}").unwrap_err(),
        "not a drsync report: no schema_version"
    );
}

#[test]
fn markdown_names_the_verdict_the_differences_and_the_hook_output() {
    let md = sample(true).to_markdown();
    expect_test::expect![[r#"
        # drsync drill `drill-apim-neu-20261127T120000Z-0123abcd`: FAILED

        | | |
        |---|---|
        | Edge | `contoso-dr` |
        | Source | `apim-weu` (westeurope) |
        | Target | `apim-neu` (northeurope) |
        | Backup | `apim-weu.20261127T120000Z.0123abcd` (taken by this run, consistent, expires 2026-12-27 12:05:00Z) |
        | Started | 2026-11-27 12:00:00Z |
        | Finished | 2026-11-27 12:21:02Z |
        | Recovery time | 21m (objective 45m): met |
        | Recovery point | 0s (objective 1h): met |

        ## Failures

        - phase verify failed: after-hook `smoke` failed: exited with status 7
        - verification: API `payments` is in the source but missing from the restored service

        ## Phases

        | Phase | Status | Started | Duration | Notes |
        |---|---|---|---|---|
        | preflight | passed | 12:00:00 | 1s |  |
        | backup | passed | 12:00:01 | 4m 59s |  |
        | restore | passed | 12:05:00 | 15m |  |
        | verify | failed | 12:20:00 | 1m 2s | after-hook `smoke` failed: exited with status 7 |

        ## Verification

        - APIs: 2 in the source, 1 restored
        - products: 1 in the source, 1 restored
        - named values: 3 in the source, 3 restored

        Differences:

        - API `payments` is in the source but missing from the restored service

        ## Hooks

        ### smoke <test> & "quotes" (after verify): failed

        `curl -fsS $DRSYNC_TARGET_GATEWAY_URL`: exited with status 7

        stdout:

        ````
        ok ```fenced``` 
        ````

    "#]]
    .assert_eq(&md);
}

#[test]
fn junit_escapes_and_counts() {
    let xml = junit_xml(&[&sample(true), &sample(false)]);
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"drsync drills\" tests=\"22\" failures=\"3\""), "{xml}");
    assert!(
        xml.contains("name=\"hook smoke &lt;test&gt; &amp; &quot;quotes&quot; (after verify)\"")
    );
    assert!(!xml.contains('\u{1}'), "control characters are dropped");
    assert!(xml.contains(r#"<failure message="1 difference(s): API `payments` is in the source but missing from the restored service" type="VerificationFailed">"#));
}
