//! Routing, api-versions, body validation and paging, without a socket.

use super::operations::{BackupParams, retry_after};
use super::*;

#[test]
fn routes_are_case_insensitive() {
    let sub = "00000000-0000-0000-0000-000000000001";
    let base = format!(
        "/subscriptions/{sub}/resourceGroups/RG/providers/Microsoft.ApiManagement/service/Apim1"
    );
    assert!(matches!(route(&base), Route::Service { .. }));
    assert!(matches!(route(&base.to_lowercase()), Route::Service { .. }));
    assert!(matches!(
        route(&format!("{base}/BACKUP")),
        Route::Backup { .. }
    ));
    assert!(matches!(
        route(&format!("{base}/operationResults/abc")),
        Route::OperationResult { .. }
    ));
    assert!(matches!(
        route(&format!("{base}/namedValues/x")),
        Route::Child {
            kind: ChildKind::NamedValues,
            ..
        }
    ));
    assert!(matches!(
        route(&format!("{base}/tenant/configuration/syncState")),
        Route::SyncState { .. }
    ));
    assert!(matches!(
        route(&format!(
            "/subscriptions/{sub}/providers/Microsoft.ApiManagement/service"
        )),
        Route::ListBySubscription { .. }
    ));
    assert!(matches!(
        route("/contoso.onmicrosoft.com/oauth2/v2.0/token"),
        Route::TokenV2 { .. }
    ));
    assert!(matches!(route("/t/oauth2/token"), Route::TokenV1 { .. }));
    assert!(matches!(
        route(&format!("{base}/users")),
        Route::Unknown { .. }
    ));
}

fn parse(v: Value) -> Result<BackupParams, String> {
    BackupParams::parse(&v).map_err(|e| e.message)
}

#[test]
fn backup_bodies_per_access_type() {
    let p = parse(
        json!({"storageAccount": "a", "containerName": "c", "backupName": "b", "accessKey": "k"}),
    )
    .unwrap();
    assert_eq!(p.access.access_type, "AccessKey");
    assert!(
        parse(
            json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
        "accessType": "SystemAssignedManagedIdentity"})
        )
        .is_ok()
    );
    assert!(
        parse(
            json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
        "accessType": "UserAssignedManagedIdentity", "clientId": "x"})
        )
        .is_ok()
    );
    let err =
        parse(json!({"storageAccount": "a", "containerName": "c", "backupName": "b"})).unwrap_err();
    assert!(err.contains("'accessKey' is required"), "{err}");
    let err = parse(
        json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
        "accessType": "UserAssignedManagedIdentity"}),
    )
    .unwrap_err();
    assert!(err.contains("'clientId' is required"), "{err}");
    let err = parse(
        json!({"storageAccount": "a", "containerName": "", "backupName": "b", "accessKey": "k"}),
    )
    .unwrap_err();
    assert!(err.contains("'containerName'"), "{err}");
    let err = parse(
        json!({"storageAccount": 5, "containerName": "c", "backupName": "b", "accessKey": "k"}),
    )
    .unwrap_err();
    assert!(err.contains("must be a string"), "{err}");
    // Secrets never appear in refusals.
    let err = parse(
        json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
        "accessType": "SystemAssignedManagedIdentity", "accessKey": "topsecret"}),
    )
    .unwrap_err();
    assert!(!err.contains("topsecret"), "{err}");
}

fn req_with_query(q: &str) -> Req {
    Req {
        method: Method::GET,
        path: "/".into(),
        query: url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect(),
        raw_query: Some(q.into()),
        headers: HeaderMap::new(),
        body: bytes::Bytes::new(),
        base: "http://127.0.0.1".into(),
    }
}

#[test]
fn api_versions() {
    for v in SUPPORTED_API_VERSIONS {
        assert_eq!(
            check_api_version(&req_with_query(&format!("api-version={v}"))).unwrap(),
            v
        );
    }
    let code = |q: &str| check_api_version(&req_with_query(q)).unwrap_err().code;
    assert_eq!(code("api-version=2020-12-01"), "NoRegisteredProviderFound");
    assert_eq!(
        code("api-version=2021-04-01-preview"),
        "NoRegisteredProviderFound"
    );
    assert_eq!(code("api-version=v2"), "InvalidApiVersionParameter");
    assert_eq!(code("other=1"), "MissingApiVersionParameter");
}

#[test]
fn pages_and_next_links() {
    let items: Vec<u32> = (0..5).collect();
    let r = req_with_query("api-version=2024-05-01");
    assert_eq!(page(&items, &r, 2).unwrap(), (vec![0, 1], Some(2)));
    let link = next_link(&r, Some(2)).unwrap();
    assert_eq!(
        link,
        "http://127.0.0.1/?api-version=2024-05-01&$skipToken=2"
    );
    let r = req_with_query("api-version=2024-05-01&$skipToken=4");
    assert_eq!(page(&items, &r, 2).unwrap(), (vec![4], None));
    let r = req_with_query("$skipToken=zz");
    assert_eq!(page(&items, &r, 2).unwrap_err().code, "InvalidSkipToken");
}

#[test]
fn retry_after_points_at_the_expected_end() {
    assert_eq!(retry_after(0), (1, 10));
    assert_eq!(retry_after(1500), (2, 1500));
    assert_eq!(retry_after(3_600_000), (60, 60_000));
}
