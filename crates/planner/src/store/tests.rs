use super::*;
use chrono::TimeZone;

fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

fn stores() -> Vec<(Checkpoints, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    vec![
        (Checkpoints::in_memory(), None),
        (Checkpoints::open(dir.path()).unwrap(), Some(dir)),
    ]
}

fn plan() -> Plan {
    Plan::sync(&crate::testing::demo(), &[], &[], now(), None, false).unwrap()
}

#[test]
fn runs_and_steps_round_trip() {
    for (cp, _dir) in stores() {
        let run = RunRecord {
            schema_version: SCHEMA_VERSION,
            run_id: Uuid::from_u128(7),
            started_at: now(),
            updated_at: now(),
            finished_at: None,
            status: RunStatus::Running,
            continue_on_error: false,
            plan: plan(),
        };
        cp.put_run(&run).unwrap();
        assert_eq!(cp.run(run.run_id).unwrap().unwrap(), run);
        assert_eq!(cp.find_run("00000000").unwrap().unwrap().run_id, run.run_id);
        let mut step = StepRecord::pending(run.run_id, "contoso-dr/backup", now());
        step.state = StepState::Accepted {
            at: now(),
            poll: serde_json::json!({"url": "https://x/op"}),
        };
        cp.put_step(&step).unwrap();
        cp.put_step(&StepRecord::pending(
            run.run_id,
            "contoso-dr/preflight",
            now(),
        ))
        .unwrap();
        cp.put_step(&StepRecord::pending(Uuid::from_u128(8), "other", now()))
            .unwrap();
        let steps = cp.steps(run.run_id).unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            cp.step(run.run_id, "contoso-dr/backup").unwrap().unwrap(),
            step
        );
    }
}

#[test]
fn sled_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cp = Checkpoints::open(dir.path()).unwrap();
        cp.put_step(&StepRecord::pending(Uuid::from_u128(1), "s", now()))
            .unwrap();
    }
    let cp = Checkpoints::open(dir.path()).unwrap();
    assert!(cp.step(Uuid::from_u128(1), "s").unwrap().is_some());
}

#[test]
fn leases_exclude_other_owners_until_expiry() {
    for (cp, _dir) in stores() {
        let ttl = chrono::Duration::minutes(10);
        let svc = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ApiManagement/service/a";
        let mine = cp.try_lease(svc, "run1/step", ttl, now()).unwrap().unwrap();
        assert_eq!(mine.expires_at, now() + ttl);
        // The same owner may retake (resume) and extend.
        let again = cp
            .try_lease(svc, "run1/step", ttl, now() + chrono::Duration::minutes(1))
            .unwrap();
        assert!(again.is_ok());
        // Somebody else is refused while it is valid (case-insensitive ids) ...
        let held = cp
            .try_lease(&svc.to_uppercase(), "run2/step", ttl, now())
            .unwrap()
            .unwrap_err();
        assert_eq!(held.owner, "run1/step");
        // ... and may take it once expired.
        let later = now() + chrono::Duration::minutes(12);
        assert!(cp.try_lease(svc, "run2/step", ttl, later).unwrap().is_ok());
        // Releasing someone else's lease does nothing; releasing your own frees it.
        cp.release_lease(svc, "run1/step").unwrap();
        assert!(cp.try_lease(svc, "run3/step", ttl, later).unwrap().is_err());
        cp.release_lease(svc, "run2/step").unwrap();
        assert!(cp.try_lease(svc, "run3/step", ttl, later).unwrap().is_ok());
    }
}

#[test]
fn newer_schema_is_refused_with_a_clear_message() {
    let kv = Arc::new(MemoryKv::default());
    kv.put(Tree::Runs, "x", br#"{"schema_version": 9}"#.to_vec())
        .unwrap();
    let cp = Checkpoints::new(kv);
    let err = cp.runs().unwrap_err().to_string();
    assert!(err.contains("schema version 9 is newer"), "{err}");
}

#[test]
fn restore_records_are_keyed_by_target_case_insensitively() {
    for (cp, _dir) in stores() {
        for (target, at) in [("apim-NEU", 1), ("apim-neu", 2)] {
            cp.put_restore(&RestoreDoc {
                schema_version: 1,
                target: target.into(),
                backup: BackupName::new(
                    "apim-weu",
                    now() + chrono::Duration::seconds(at),
                    Uuid::nil(),
                ),
                restored_at: now(),
                run_id: Uuid::nil(),
            })
            .unwrap();
        }
        let all = cp.restores().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].backup.started_at(),
            now() + chrono::Duration::seconds(2)
        );
    }
}

#[test]
fn a_step_record_without_a_target_reading_still_loads() {
    let mut step = StepRecord::pending(Uuid::from_u128(7), "contoso-dr/restore/apim-neu", now());
    step.state = StepState::Intent { at: now() };
    let mut json = serde_json::to_value(&step).unwrap();
    json.as_object_mut().unwrap().remove("target_before");
    let bytes = serde_json::to_vec(&json).unwrap();
    let old: StepRecord = decode("k", &bytes).unwrap();
    assert_eq!(old, step);
    assert_eq!(old.schema_version, SCHEMA_VERSION);
}

#[test]
fn a_change_reading_sees_only_a_strictly_later_change() {
    let t = now();
    let at = |secs| Some(t + chrono::Duration::seconds(secs));
    let r = ChangeReading { changed: at(0) };
    assert!(r.changed_since(at(1)));
    assert!(!r.changed_since(at(0)), "the same change date is no change");
    assert!(!r.changed_since(at(-1)));
    assert!(!r.changed_since(None));
    let never = ChangeReading { changed: None };
    assert!(never.changed_since(at(0)));
    assert!(!never.changed_since(None));
}
