//! Request bodies and response parsing against the examples of the API Management 2024-05-01
//! specification (`/work/shared/azure-rest-api-specs`, or `$DRSYNC_SPECS_DIR`).

use super::*;
use serde_json::Value;
use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    let dir = match std::env::var_os("DRSYNC_SPECS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/azure-rest-api-specs")
        }
    };
    let examples = dir.join("stable/2024-05-01/examples");
    assert!(
        examples.is_dir(),
        "the API Management spec examples are missing: expected {} (set DRSYNC_SPECS_DIR to the azure-rest-api-specs copy)",
        examples.display()
    );
    examples
}

fn example(name: &str) -> Value {
    let path = examples_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Builds the request the example describes from its own fields, the way drsync would.
fn request_from(params: &Value) -> BackupRestoreRequest {
    let s = |k: &str| {
        params[k]
            .as_str()
            .unwrap_or_else(|| panic!("example lacks {k}"))
            .to_owned()
    };
    let access = match params["accessType"].as_str().unwrap_or("AccessKey") {
        "AccessKey" => BackupAccess::AccessKey(Secret::new(s("accessKey"))),
        "SystemAssignedManagedIdentity" => BackupAccess::SystemAssignedIdentity,
        "UserAssignedManagedIdentity" => BackupAccess::UserAssignedIdentity {
            client_id: s("clientId"),
        },
        other => panic!("unknown accessType {other}"),
    };
    BackupRestoreRequest {
        storage_account: s("storageAccount"),
        container: s("containerName"),
        backup_name: s("backupName"),
        access,
    }
}

#[test]
fn backup_and_restore_bodies_match_the_spec_examples_field_for_field() {
    for name in [
        "ApiManagementBackupWithAccessKey.json",
        "ApiManagementBackupWithSystemManagedIdentity.json",
        "ApiManagementBackupWithUserAssignedManagedIdentity.json",
        "ApiManagementRestoreWithAccessKey.json",
    ] {
        let ex = example(name);
        let version = ex["parameters"]["api-version"].as_str().unwrap();
        assert_eq!(version, crate::client::DEFAULT_API_VERSION);
        let expected = &ex["parameters"]["parameters"];
        let body = backup_restore_body(&request_from(expected), version).unwrap();
        assert_eq!(&body, expected, "{name}");
    }
}

#[test]
fn old_api_versions_get_only_the_access_key_fields() {
    let req = BackupRestoreRequest {
        storage_account: "acct".into(),
        container: "c".into(),
        backup_name: "b".into(),
        access: BackupAccess::AccessKey(Secret::new("k")),
    };
    let body = backup_restore_body(&req, "2020-12-01").unwrap();
    assert_eq!(
        body,
        serde_json::json!({"storageAccount":"acct","containerName":"c","backupName":"b","accessKey":"k"})
    );
    let mi = BackupRestoreRequest {
        access: BackupAccess::SystemAssignedIdentity,
        ..req.clone()
    };
    let err = backup_restore_body(&mi, "2020-12-01")
        .unwrap_err()
        .to_string();
    assert!(err.contains("2021-04-01-preview"), "{err}");
    assert!(backup_restore_body(&mi, "2021-04-01-preview").is_ok());
    let empty = BackupRestoreRequest {
        backup_name: " ".into(),
        ..req.clone()
    };
    assert!(backup_restore_body(&empty, "2024-05-01").is_err());
    let no_client = BackupRestoreRequest {
        access: BackupAccess::UserAssignedIdentity {
            client_id: String::new(),
        },
        ..req.clone()
    };
    assert!(backup_restore_body(&no_client, "2024-05-01").is_err());
}

#[test]
fn requests_never_print_the_key() {
    let req = BackupRestoreRequest {
        storage_account: "acct".into(),
        container: "c".into(),
        backup_name: "b".into(),
        access: BackupAccess::AccessKey(Secret::new("Eby8vdM02xNOcqFl")),
    };
    let dbg = format!("{req:?}");
    assert!(!dbg.contains("Eby8"), "{dbg}");
    assert!(dbg.contains("AccessKey"), "{dbg}");
}

#[test]
fn access_from_configuration() {
    let key_ref = drsync_core::SecretRef::Env("KEY".into());
    let a = BackupAccess::from_storage_access(
        &StorageAccess::AccountKey(key_ref.clone()),
        Some(Secret::new("k")),
    );
    assert_eq!(a.unwrap(), BackupAccess::AccessKey(Secret::new("k")));
    let err =
        BackupAccess::from_storage_access(&StorageAccess::AccountKey(key_ref), None).unwrap_err();
    assert!(err.to_string().contains("env:KEY"), "{err}");
    let ua = StorageAccess::UserAssignedIdentity {
        client_id: "cid".into(),
    };
    assert_eq!(
        BackupAccess::from_storage_access(&ua, None).unwrap(),
        BackupAccess::UserAssignedIdentity {
            client_id: "cid".into()
        }
    );
}

#[test]
fn the_service_example_parses() {
    let ex = example("ApiManagementServiceGetService.json");
    let svc = ApimService::from_json(&ex["responses"]["200"]["body"]).unwrap();
    assert_eq!(svc.name, "OGF-Z3-06162021-Premium");
    assert_eq!(svc.location, "East US");
    assert_eq!(
        svc.sku().unwrap(),
        Sku {
            tier: SkuTier::Premium,
            capacity: 1
        }
    );
    assert_eq!(svc.provisioning_state, ProvisioningState::Succeeded);
    assert_eq!(svc.target_provisioning_state, None);
    assert_eq!(svc.etag.as_deref(), Some("AAAAAAAWN/4="));
    assert_eq!(
        svc.gateway_url.as_deref(),
        Some("https://ogf-z3-06162021-premium.azure-api.net")
    );
    assert_eq!(svc.hostnames.len(), 5);
    assert_eq!(
        svc.hostnames[1].host_name,
        "gateway.current.int-azure-api.net"
    );
    assert_eq!(
        svc.hostnames[1].certificate_source.as_deref(),
        Some("Custom")
    );
    assert!(svc.hostnames[1].default_ssl_binding);
    let id = svc.identity.as_ref().unwrap();
    assert_eq!(id.kind, "SystemAssigned, UserAssigned");
    assert_eq!(
        id.principal_id.as_deref(),
        Some("306205e7-b21a-41bf-92e2-3e28af30041e")
    );
    assert_eq!(
        id.user_assigned.values().next().unwrap().as_deref(),
        Some("8d9791f2-0cdf-41f4-9e66-cdc39b496789")
    );
    assert_eq!(
        svc.created_at.unwrap().to_rfc3339(),
        "2021-06-16T09:40:00.945355600+00:00"
    );
    let r = svc.service_ref().unwrap();
    assert_eq!(
        (r.resource_group.as_str(), r.name.as_str()),
        ("rg1", "OGF-Z3-06162021-Premium")
    );

    // The backup example's 200 body, too.
    let ex = example("ApiManagementBackupWithAccessKey.json");
    let svc = ApimService::from_json(&ex["responses"]["200"]["body"]).unwrap();
    assert_eq!(svc.name, "apimService1");
    assert_eq!(svc.tags.len(), 3);
}

#[test]
fn service_listings_parse() {
    for name in [
        "ApiManagementListServiceBySubscription.json",
        "ApiManagementListServiceBySubscriptionAndResourceGroup.json",
    ] {
        let ex = example(name);
        let page: Page<Value> =
            serde_json::from_value(ex["responses"]["200"]["body"].clone()).unwrap();
        assert!(!page.value.is_empty(), "{name}");
        for v in &page.value {
            let svc = ApimService::from_json(v).unwrap();
            assert!(!svc.name.is_empty() && !svc.sku_name.is_empty(), "{name}");
        }
    }
}

#[test]
fn provisioning_states_parse_case_insensitively() {
    assert_eq!(
        ProvisioningState::parse("updating"),
        ProvisioningState::Updating
    );
    assert_eq!(
        ProvisioningState::parse("TerminationFailed"),
        ProvisioningState::TerminationFailed
    );
    assert_eq!(
        ProvisioningState::parse("Upgrading"),
        ProvisioningState::Other("Upgrading".into())
    );
    assert_eq!(
        ProvisioningState::parse("Upgrading").to_string(),
        "Upgrading"
    );
}

#[test]
fn sync_state_in_both_shapes() {
    let ex = example("ApiManagementTenantAccessSyncState.json");
    let wrapped = SyncState::from_json(&ex["responses"]["200"]["body"]).unwrap();
    assert_eq!(
        wrapped.configuration_change_date.unwrap().to_rfc3339(),
        "2021-04-13T00:11:43.862781+00:00"
    );
    assert_eq!(
        wrapped.sync_date.unwrap().to_rfc3339(),
        "2021-04-13T01:15:53.982499500+00:00"
    );
    assert_eq!(wrapped.is_synced, Some(true));
    assert_eq!(wrapped.branch.as_deref(), Some("master"));
    assert!(
        wrapped
            .last_operation_id
            .unwrap()
            .ends_with("6074f0bd093a9d0dac3d7347")
    );
    // 2020-12-01 returns the same fields unwrapped.
    let flat = ex["responses"]["200"]["body"]["properties"].clone();
    let flat = SyncState::from_json(&flat).unwrap();
    assert_eq!(
        flat.configuration_change_date,
        SyncState::from_json(&ex["responses"]["200"]["body"])
            .unwrap()
            .configuration_change_date
    );
    assert_eq!(
        flat.commit_id.as_deref(),
        Some("de891c2342c7058dde45e5e624eae7e558c94683")
    );
    // Never synced: no dates.
    let empty =
        SyncState::from_json(&serde_json::json!({"properties": {"isExport": false}})).unwrap();
    assert_eq!(empty.configuration_change_date, None);
}

fn page_of<P: serde::de::DeserializeOwned>(name: &str) -> Page<WireItem<P>> {
    serde_json::from_value(example(name)["responses"]["200"]["body"].clone()).unwrap()
}

#[test]
fn child_listings_parse_and_empty_next_links_end_paging() {
    let apis = page_of::<WireApiProps>("ApiManagementListApis.json");
    let apis: Vec<ApiSummary> = apis.value.into_iter().map(Into::into).collect();
    let echo = apis.iter().find(|a| a.name == "echo-api").unwrap();
    assert_eq!(echo.display_name.as_deref(), Some("Echo API"));
    assert_eq!(echo.path.as_deref(), Some("echo"));
    assert_eq!(
        echo.service_url.as_deref(),
        Some("http://echoapi.cloudapp.net/api")
    );
    assert_eq!(echo.protocols, ["https"]);
    assert_eq!(echo.is_current, Some(true));
    assert_eq!(apis[1].api_version.as_deref(), Some("v1"));

    let products = page_of::<WireProductProps>("ApiManagementListProducts.json");
    assert_eq!(products.next(), None, "an empty nextLink ends paging");
    let products: Vec<ProductSummary> = products.value.into_iter().map(Into::into).collect();
    let starter = products.iter().find(|p| p.name == "starter").unwrap();
    assert_eq!(starter.subscriptions_limit, Some(1));
    assert_eq!(starter.approval_required, Some(false));
    assert_eq!(starter.state.as_deref(), Some("published"));

    let nvs = page_of::<WireNamedValueProps>("ApiManagementListNamedValues.json");
    assert_eq!(nvs.next(), None);
    let nvs: Vec<NamedValueSummary> = nvs.value.into_iter().map(Into::into).collect();
    assert_eq!(nvs[0].value.as_deref(), Some("propValue"));
    assert!(!nvs[0].secret);
    assert!(nvs[1].secret);
    assert_eq!(nvs[1].value, None);
    assert_eq!(
        nvs[1].key_vault_secret_id.as_deref(),
        Some("https://contoso.vault.azure.net/secrets/aadSecret")
    );
    assert_eq!(nvs[1].tags, ["foo", "bar"]);
}

#[test]
fn a_secret_value_is_dropped_even_if_the_server_sends_it() {
    let page: Page<WireItem<WireNamedValueProps>> = serde_json::from_value(serde_json::json!({
        "value": [{"id": "/x/namedValues/k", "name": "k", "properties": {"displayName": "k", "secret": true, "value": "hunter2"}}],
        "nextLink": "https://management.azure.com/next?page=2"
    }))
    .unwrap();
    assert_eq!(
        page.next(),
        Some("https://management.azure.com/next?page=2")
    );
    let nv: NamedValueSummary = page.value.into_iter().next().unwrap().into();
    assert_eq!(nv.value, None);
    assert!(!format!("{nv:?}").contains("hunter2"));
}

#[test]
fn a_named_value_put_body_carries_exactly_display_name_value_and_secret() {
    let body = named_value_body(
        "backend-url",
        "Backend.URL_1",
        &Secret::new("https://b"),
        false,
    )
    .unwrap();
    assert_eq!(
        body,
        serde_json::json!({"properties": {"displayName": "Backend.URL_1", "value": "https://b", "secret": false}})
    );
    for (name, display, value) in [
        ("a b", "ab", "v"),
        ("", "ab", "v"),
        ("ab", "a/b", "v"),
        ("ab", "ab", ""),
    ] {
        let err = named_value_body(name, display, &Secret::new(value), true).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }
    let long = "x".repeat(4097);
    assert!(named_value_body("k", "k", &Secret::new(long), true).is_err());
    // The answer parses like a listed item; a secret's value is dropped.
    let nv = named_value_from_json(&serde_json::json!({
        "id": "/x/namedValues/k", "name": "k",
        "properties": {"displayName": "k", "secret": true, "value": "hunter2"}
    }))
    .unwrap();
    assert_eq!((nv.name.as_str(), nv.secret, nv.value), ("k", true, None));
    assert!(named_value_from_json(&serde_json::json!([1])).is_err());
}
