//! Durations and storage access rules, without a server.

use std::sync::Arc;

use chrono::TimeZone;
use drsync_core::{ManualClock, Secret};

use super::*;
use crate::config::{EmulatorConfig, StorageAccountConfig, StorageBackend, UserAssignedIdentity};

fn app(tweak: impl FnOnce(&mut EmulatorConfig)) -> App {
    let mut config = EmulatorConfig::default();
    config.storage_accounts.push(StorageAccountConfig {
        name: "acct".into(),
        region: "northeurope".into(),
        key: Secret::new("a2V5"),
        backend: StorageBackend::LocalDir {
            path: std::env::temp_dir().join("drsync-emulator-unit"),
        },
        granted_identities: vec![
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/granted"
                .into(),
        ],
    });
    tweak(&mut config);
    let start = chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap();
    App::new(config, Arc::new(ManualClock::new(start))).unwrap()
}

#[test]
fn durations_are_base_times_scale_within_jitter() {
    let a = app(|c| {
        c.time_scale = 0.01;
        c.durations.jitter = 0.0;
    });
    let mut inner = a.inner.lock();
    assert_eq!(
        duration(&a, &mut inner, OperationKind::Backup),
        chrono::Duration::seconds(3)
    );
    assert_eq!(
        duration(&a, &mut inner, OperationKind::Restore),
        chrono::Duration::seconds(18)
    );
    drop(inner);

    let a = app(|c| c.durations.jitter = 0.2);
    let mut inner = a.inner.lock();
    let seen: Vec<i64> = (0..50)
        .map(|_| duration(&a, &mut inner, OperationKind::Backup).num_milliseconds())
        .collect();
    assert!(
        seen.iter().all(|ms| (240_000..=360_000).contains(ms)),
        "{seen:?}"
    );
    assert!(seen.iter().any(|ms| *ms != seen[0]), "jitter varies");
}

#[test]
fn same_seed_same_durations() {
    let run = || {
        let a = app(|_| {});
        let mut inner = a.inner.lock();
        (0..5)
            .map(|_| duration(&a, &mut inner, OperationKind::Restore))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

fn who(principal: Option<&str>, name: &str) -> ServiceIdentity {
    ServiceIdentity {
        id: format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/{name}"
        ),
        principal_id: principal.map(str::to_owned),
        user_assigned: vec![UserAssignedIdentity {
            resource_id: "/uai/dr".into(),
            client_id: "cid".into(),
            principal_id: "upid".into(),
        }],
    }
}

fn access(ty: &str, key: Option<&str>, client: Option<&str>) -> AccessRequest {
    AccessRequest {
        access_type: ty.into(),
        access_key: key.map(Secret::new),
        client_id: client.map(str::to_owned),
    }
}

#[test]
fn storage_access_rules() {
    let a = app(|_| {});
    let inner = a.inner.lock();
    let check = |acct: &str, req: AccessRequest, w: ServiceIdentity| {
        check_access(&a, &inner, OperationKind::Backup, acct, &req, &w).map_err(|e| e.message)
    };
    assert!(
        check(
            "acct",
            access("AccessKey", Some("a2V5"), None),
            who(None, "x")
        )
        .is_ok()
    );
    let e = check(
        "acct",
        access("AccessKey", Some("bad"), None),
        who(None, "x"),
    )
    .unwrap_err();
    assert!(
        e.contains("access key is not valid") && !e.contains("a2V5"),
        "{e}"
    );
    let e = check(
        "nope",
        access("AccessKey", Some("a2V5"), None),
        who(None, "x"),
    )
    .unwrap_err();
    assert!(e.contains("'nope' was not found"), "{e}");
    let sys = access("SystemAssignedManagedIdentity", None, None);
    assert!(check("acct", sys.clone(), who(Some("p"), "granted")).is_ok());
    let e = check("acct", sys.clone(), who(Some("p"), "other")).unwrap_err();
    assert!(e.contains("Storage Blob Data Contributor"), "{e}");
    let e = check("acct", sys, who(None, "granted")).unwrap_err();
    assert!(e.contains("not enabled"), "{e}");
    let uai = access("UserAssignedManagedIdentity", None, Some("cid"));
    assert!(
        check("acct", uai.clone(), who(None, "x"))
            .unwrap_err()
            .contains("not authorized")
    );
    drop(inner);
    a.inner
        .lock()
        .grants
        .insert("acct".into(), vec!["upid".into()]);
    let inner = a.inner.lock();
    let ok = check_access(
        &a,
        &inner,
        OperationKind::Backup,
        "acct",
        &uai,
        &who(None, "x"),
    );
    assert!(ok.is_ok());
}

#[test]
fn storage_in_a_down_region_is_unavailable() {
    let a = app(|c| c.faults.unavailable_regions = vec!["North Europe".into()]);
    let inner = a.inner.lock();
    let e = check_access(
        &a,
        &inner,
        OperationKind::Restore,
        "acct",
        &access("AccessKey", Some("a2V5"), None),
        &who(None, "x"),
    )
    .unwrap_err();
    assert_eq!((e.status, e.code.as_str()), (503, "ServiceUnavailable"));
}
