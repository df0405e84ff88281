use super::*;
use crate::testing::{demo, service_ref};
use chrono::TimeZone;
use drsync_core::{BackupRecord, Sku, SkuTier};
use expect_test::expect;

fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

fn backup(service: &str, age: chrono::Duration, consistency: Consistency) -> CatalogEntry {
    let created = now() - age;
    let run = Uuid::from_u128(0x1234_5678_0000_0000_0000_0000_0000_0000);
    CatalogEntry {
        record: BackupRecord {
            name: BackupName::new(service, created, run),
            source: service_ref(service),
            sku: Sku {
                tier: SkuTier::Premium,
                capacity: 1,
            },
            storage_account: "neubackups".into(),
            container: "apim-backups".into(),
            created_at: created,
            expires_at: BackupRecord::expiry_for(created),
            change_marker: None,
            consistency,
        },
        run_id: Some(run),
    }
}

use uuid::Uuid;

fn restored(target: &str, b: &CatalogEntry) -> RestoreEntry {
    RestoreEntry {
        schema_version: 1,
        target: target.into(),
        backup: b.record.name.clone(),
        restored_at: now(),
        run_id: Uuid::nil(),
    }
}

#[test]
fn first_sync_plan_renders_as_table_json_and_dot() {
    let plan = Plan::sync(&demo(), &[], &[], now(), None, false).unwrap();
    expect![[r#"
        #  STEP                         ACTION                                                      AFTER                                    REASON
        1  contoso-dr/preflight         check apim-weu, apim-neu, apim-stg and storage neu-backups  -                                        checks before any change
        2  contoso-dr/backup            back up apim-weu into neu-backups                           contoso-dr/preflight                     first sync: no valid backup yet
        3  contoso-dr/restore/apim-neu  restore the backup of contoso-dr/backup into apim-neu       contoso-dr/preflight, contoso-dr/backup  new backup
        4  contoso-dr/verify/apim-neu   verify apim-neu against apim-weu                            contoso-dr/restore/apim-neu              confirm the restore
        5  contoso-dr/restore/apim-stg  restore the backup of contoso-dr/backup into apim-stg       contoso-dr/preflight, contoso-dr/backup  new backup
        6  contoso-dr/verify/apim-stg   verify apim-stg against apim-weu                            contoso-dr/restore/apim-stg              confirm the restore
    "#]]
    .assert_eq(&plan.to_table());
    expect![[r#"
        digraph plan {
          rankdir=LR;
          node [shape=box, fontname="monospace"];
          "contoso-dr/preflight" [label="preflight\ncheck apim-weu, apim-neu, apim-stg and storage neu-backups\n(checks before any change)"];
          "contoso-dr/backup" [label="backup\nback up apim-weu into neu-backups\n(first sync: no valid backup yet)"];
          "contoso-dr/restore/apim-neu" [label="restore\nrestore the backup of contoso-dr/backup into apim-neu\n(new backup)"];
          "contoso-dr/verify/apim-neu" [label="verify\nverify apim-neu against apim-weu\n(confirm the restore)"];
          "contoso-dr/restore/apim-stg" [label="restore\nrestore the backup of contoso-dr/backup into apim-stg\n(new backup)"];
          "contoso-dr/verify/apim-stg" [label="verify\nverify apim-stg against apim-weu\n(confirm the restore)"];
          "contoso-dr/preflight" -> "contoso-dr/backup";
          "contoso-dr/preflight" -> "contoso-dr/restore/apim-neu";
          "contoso-dr/backup" -> "contoso-dr/restore/apim-neu";
          "contoso-dr/restore/apim-neu" -> "contoso-dr/verify/apim-neu";
          "contoso-dr/preflight" -> "contoso-dr/restore/apim-stg";
          "contoso-dr/backup" -> "contoso-dr/restore/apim-stg";
          "contoso-dr/restore/apim-stg" -> "contoso-dr/verify/apim-stg";
        }
    "#]]
    .assert_eq(&plan.to_dot());
    let json: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["steps"][1]["reason"]["reason"], "first_sync");
    assert_eq!(
        json["steps"][2]["action"]["backup"]["step"],
        "contoso-dr/backup"
    );
    let back: Plan = serde_json::from_str(&plan.to_json()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn same_inputs_same_plan() {
    let b = [backup(
        "apim-weu",
        chrono::Duration::hours(3),
        Consistency::Consistent,
    )];
    let a = Plan::sync(&demo(), &b, &[], now(), None, false).unwrap();
    let c = Plan::sync(&demo(), &b, &[], now(), None, false).unwrap();
    assert_eq!(a.to_json(), c.to_json());
}

#[test]
fn reasons_follow_rpo_force_and_restores() {
    let fresh = backup(
        "apim-weu",
        chrono::Duration::minutes(10),
        Consistency::Consistent,
    );
    let old = backup(
        "apim-weu",
        chrono::Duration::minutes(90),
        Consistency::Consistent,
    );
    let reasons = |plan: &Plan| -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| format!("{}: {}", s.id, s.reason))
            .collect()
    };

    // Older than the one-hour RPO: a new backup.
    let plan = Plan::sync(&demo(), std::slice::from_ref(&old), &[], now(), None, false).unwrap();
    assert_eq!(
        reasons(&plan)[1],
        "contoso-dr/backup: newest backup is 1h 30m old, older than the RPO of 1h 0m"
    );

    // Fresh backup, one target holds it, the other does not.
    let plan = Plan::sync(
        &demo(),
        std::slice::from_ref(&fresh),
        &[restored("apim-neu", &fresh)],
        now(),
        None,
        false,
    )
    .unwrap();
    expect![[r#"
        [
            "contoso-dr/preflight: checks before any change",
            "contoso-dr/restore/apim-stg: target behind: never restored",
            "contoso-dr/verify/apim-stg: confirm the restore",
        ]
    "#]]
    .assert_debug_eq(&reasons(&plan));
    assert_eq!(plan.up_to_date.len(), 1);
    assert!(
        plan.to_table()
            .contains("up to date: apim-neu holds apim-weu.")
    );

    // Everything current: nothing to do.
    let plan = Plan::sync(
        &demo(),
        std::slice::from_ref(&fresh),
        &[restored("apim-neu", &fresh), restored("apim-stg", &fresh)],
        now(),
        None,
        false,
    )
    .unwrap();
    assert!(plan.is_empty());
    assert!(plan.to_table().starts_with("Nothing to do"));

    // --force takes a backup anyway.
    let plan = Plan::sync(
        &demo(),
        std::slice::from_ref(&fresh),
        &[],
        now(),
        None,
        true,
    )
    .unwrap();
    assert_eq!(reasons(&plan)[1], "contoso-dr/backup: forced (--force)");

    // A suspect backup does not count as valid.
    let suspect = backup(
        "apim-weu",
        chrono::Duration::minutes(5),
        Consistency::Suspect,
    );
    let plan = Plan::sync(&demo(), &[suspect], &[], now(), None, false).unwrap();
    assert_eq!(
        reasons(&plan)[1],
        "contoso-dr/backup: first sync: no valid backup yet"
    );
}

#[test]
fn only_limits_the_plan_to_one_service() {
    let plan = Plan::sync(&demo(), &[], &[], now(), Some("apim-stg"), false).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "contoso-dr/preflight",
            "contoso-dr/backup",
            "contoso-dr/restore/apim-stg",
            "contoso-dr/verify/apim-stg"
        ]
    );
    let err = Plan::sync(&demo(), &[], &[], now(), Some("apim-xyz"), false).unwrap_err();
    expect![
        "service `apim-xyz` is not part of any replication (check the [[replication]] entries)"
    ]
    .assert_eq(&err.to_string());
}

#[test]
fn backup_and_restore_plans() {
    let plan = Plan::backup(&demo(), "apim-weu", now()).unwrap();
    assert_eq!(plan.steps.len(), 2);
    assert!(Plan::backup(&demo(), "apim-neu", now()).is_err());

    let b = backup(
        "apim-weu",
        chrono::Duration::hours(1),
        Consistency::Consistent,
    );
    let plan = Plan::restore(
        &demo(),
        std::slice::from_ref(&b),
        &b.record.name,
        "apim-neu",
        now(),
    )
    .unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "contoso-dr/preflight",
            "contoso-dr/restore/apim-neu",
            "contoso-dr/verify/apim-neu"
        ]
    );
    let err = Plan::restore(&demo(), &[], &b.record.name, "apim-neu", now()).unwrap_err();
    assert!(err.to_string().contains("is not in the catalog"), "{err}");
    let err = Plan::restore(
        &demo(),
        std::slice::from_ref(&b),
        &b.record.name,
        "apim-weu",
        now(),
    )
    .unwrap_err();
    expect!["service `apim-weu` is not the target of any replication; drsync restores only into configured targets"]
        .assert_eq(&err.to_string());
}

#[test]
fn human_durations() {
    assert_eq!(human(Duration::from_secs(40)), "40s");
    assert_eq!(human(Duration::from_secs(3900)), "1h 5m");
    assert_eq!(human(Duration::from_secs(3 * 86_400 + 7200)), "3d 2h");
}
