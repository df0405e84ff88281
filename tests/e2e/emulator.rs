//! End-to-end: the emulator over real sockets. Every behaviour and refusal of issue 3: Entra ID
//! and managed identity tokens, ARM authentication and api-versions, services and child
//! entities, backup and restore with their refusals, throttling, faults, the control API, the
//! spec's example shapes and Microsoft's Python SDK.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use drsync_core::{Clock, ManualClock};
use drsync_tests::emulator::*;
use reqwest::Method;
use serde_json::{Value, json};

type R = anyhow::Result<()>;

fn manual_clock() -> Arc<ManualClock> {
    let start = drsync_core::SystemClock.now();
    Arc::new(ManualClock::new(start))
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

async fn token_request(
    t: &TestEmulator,
    path: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<(u16, Value)> {
    let r = t
        .http
        .post(format!("{}{path}", t.base()))
        .form(form)
        .send()
        .await?;
    Ok((r.status().as_u16(), body_json(r).await?))
}

// ---------------------------------------------------------------------------------------------
// Entra ID and managed identity.

#[tokio::test]
async fn client_credentials_tokens_v2_and_v1() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let v2 = format!("/{TENANT}/oauth2/v2.0/token");
    let (status, body) = token_request(
        &t,
        &v2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["expires_in"].is_u64(),
        "v2 numbers are integers: {body}"
    );
    let token = body["access_token"].as_str().unwrap().to_owned();
    let r = t
        .http
        .get(format!(
            "{}{}?api-version={API}",
            t.base(),
            TestEmulator::service_path("apim-weu")
        ))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // v1: resource instead of scope, numeric fields as strings.
    let (status, body) = token_request(
        &t,
        &format!("/{TENANT}/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("resource", "https://management.azure.com/"),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["expires_in"].is_string() && body["expires_on"].is_string(),
        "{body}"
    );
    assert_eq!(body["expires_in"], "3599");

    // Refusals.
    let base = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("scope", "https://management.azure.com/.default"),
    ];
    let mut wrong = base.to_vec();
    wrong.push(("client_secret", "nope"));
    let (status, body) = token_request(&t, &v2, &wrong).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    assert!(body["error_codes"][0] == 7000215 && body["trace_id"].is_string());
    assert!(!body.to_string().contains(CLIENT_SECRET));

    let (status, body) = token_request(
        &t,
        &v2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "99999999-9999-9999-9999-999999999999"),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ],
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );

    let mut right = base.to_vec();
    right.push(("client_secret", CLIENT_SECRET));
    let (status, body) =
        token_request(&t, "/other.onmicrosoft.com/oauth2/v2.0/token", &right).await?;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("AADSTS90002"),
        "{body}"
    );

    let (status, body) = token_request(
        &t,
        &v2,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://management.azure.com/"),
        ],
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );

    let (status, body) = token_request(&t, &v2, &[("grant_type", "password")]).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Token endpoint outage.
    t.state().set_faults(FaultConfig {
        token_endpoint_down: true,
        ..FaultConfig::default()
    })?;
    let (status, body) = token_request(&t, &v2, &right).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    assert_eq!(t.count("token-v2"), 7);
    assert_eq!(t.count("token-v1"), 1);
    Ok(())
}

#[tokio::test]
async fn managed_identity_endpoint_needs_metadata_header() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        t.base()
    );
    let r = t.http.get(&url).send().await?;
    assert_eq!(r.status(), 400);
    let body = body_json(r).await?;
    assert_eq!(
        body["error_description"],
        "Required metadata header not specified"
    );

    let r = t.http.get(&url).header("Metadata", "true").send().await?;
    assert_eq!(r.status(), 200);
    let body = body_json(r).await?;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://management.azure.com/");
    for field in ["expires_in", "expires_on", "not_before"] {
        assert!(body[field].is_string(), "{field} must be a string: {body}");
    }
    let token = body["access_token"].as_str().unwrap();
    let svc = format!(
        "{}{}?api-version={API}",
        t.base(),
        TestEmulator::service_path("apim-weu")
    );
    assert_eq!(
        t.http.get(&svc).bearer_auth(token).send().await?.status(),
        200
    );

    // A storage token is refused by ARM.
    let storage = url.replace(
        "https://management.azure.com/",
        "https://storage.azure.com/",
    );
    let r = t
        .http
        .get(&storage)
        .header("Metadata", "true")
        .send()
        .await?;
    let token = body_json(r).await?["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t.http.get(&svc).bearer_auth(token).send().await?;
    assert_eq!(r.status(), 401);
    assert_eq!(
        error_code(&body_json(r).await?),
        "InvalidAuthenticationTokenAudience"
    );

    // An unknown user-assigned client id.
    let r = t
        .http
        .get(format!("{url}&client_id=abc"))
        .header("Metadata", "true")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    Ok(())
}

#[tokio::test]
async fn arm_refuses_missing_unknown_and_expired_tokens() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let url = format!(
        "{}{}?api-version={API}",
        t.base(),
        TestEmulator::service_path("apim-weu")
    );

    let r = t.http.get(&url).send().await?;
    assert_eq!(r.status(), 401);
    let www = header(&r, "www-authenticate").expect("WWW-Authenticate");
    assert!(www.starts_with("Bearer authorization_uri="), "{www}");
    assert_eq!(error_code(&body_json(r).await?), "AuthenticationFailed");

    let r = t.http.get(&url).bearer_auth("made-up").send().await?;
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").is_some());
    assert_eq!(
        error_code(&body_json(r).await?),
        "InvalidAuthenticationToken"
    );

    let r = t
        .http
        .get(&url)
        .header("Authorization", "Basic abc")
        .send()
        .await?;
    assert_eq!(
        error_code(&body_json(r).await?),
        "AuthenticationFailedInvalidHeader"
    );

    let short = t.emu.mint_token(Duration::from_secs(60)).token;
    let r = t.http.get(&url).bearer_auth(short.expose()).send().await?;
    assert_eq!(r.status(), 200);
    t.advance(61);
    let r = t.http.get(&url).bearer_auth(short.expose()).send().await?;
    assert_eq!(r.status(), 401);
    let body = body_json(r).await?;
    assert_eq!(error_code(&body), "ExpiredAuthenticationToken");
    assert!(
        error_message(&body).contains("is earlier than current UTC time"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn api_versions_are_checked_like_arm() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let path = TestEmulator::service_path("apim-weu");
    let r = t
        .arm(Method::GET, &path)
        .header("x-ms-client-request-id", "my-request-1")
        .send()
        .await?;
    assert_eq!(
        header(&r, "x-ms-client-request-id").as_deref(),
        Some("my-request-1")
    );
    assert!(header(&r, "x-ms-correlation-request-id").is_some());
    assert!(header(&r, "x-ms-request-id").is_some());
    for v in ["2021-08-01", "2022-08-01", "2024-05-01"] {
        let (status, body) = t.get(&format!("{path}?api-version={v}")).await?;
        assert_eq!(status, 200, "{v}: {body}");
    }
    let (status, body) = t.get(&format!("{path}?api-version=2019-01-01")).await?;
    assert_eq!(
        (status, error_code(&body)),
        (400, "NoRegisteredProviderFound"),
        "{body}"
    );
    assert!(error_message(&body).contains("2024-05-01"));
    let (status, body) = t.get(&format!("{path}?api-version=latest")).await?;
    assert_eq!(
        (status, error_code(&body)),
        (400, "InvalidApiVersionParameter")
    );
    let (status, body) = t.get(&format!("{path}?x=1")).await?;
    assert_eq!(
        (status, error_code(&body)),
        (400, "MissingApiVersionParameter")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Services and child entities.

#[tokio::test]
async fn service_lifecycle_listing_and_paging() -> R {
    let t = TestEmulator::start_with(|c| {
        c.time_scale = 0.0001;
        c.page_size = 2;
    })
    .await?;
    let path = TestEmulator::service_path("apim-new");
    let r = t
        .arm(Method::PUT, &path)
        .json(&json!({
            "location": "West Europe",
            "sku": {"name": "Premium", "capacity": 1},
            "identity": {"type": "SystemAssigned"},
            "tags": {"env": "test"},
            "properties": {"publisherEmail": "a@contoso.com", "publisherName": "Contoso"}
        }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let location = header(&r, "location").expect("Location on create");
    let body = body_json(r).await?;
    assert_eq!(body["properties"]["provisioningState"], "Activating");
    assert!(body["identity"]["principalId"].is_string());
    assert_eq!(body["location"], "West Europe");
    let (status, done) = t.poll_until_done(&location).await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["properties"]["provisioningState"], "Succeeded");

    // PUT with a missing publisher is refused.
    let r = t
        .arm(Method::PUT, &TestEmulator::service_path("apim-bad"))
        .json(&json!({"location": "westeurope", "sku": {"name": "Premium"}, "properties": {}}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    // PATCH tags moves the etag.
    let (_, before) = t.get(&path).await?;
    let r = t
        .arm(Method::PATCH, &path)
        .json(&json!({"tags": {"env": "prod"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let after = body_json(r).await?;
    assert_eq!(after["tags"]["env"], "prod");
    assert_ne!(before["etag"], after["etag"]);

    // Listing with paging by resource group and by subscription.
    for n in ["apim-a", "apim-b", "apim-c"] {
        t.seed(n, "northeurope")?;
    }
    let other = ServiceSeed {
        resource_group: "rg-other".into(),
        ..ServiceSeed::new(SUB, "rg-other", "apim-z", "westeurope")
    };
    t.seed_with(other)?;
    let mut names = Vec::new();
    let mut next = Some(format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service"
    ));
    let mut pages = 0;
    while let Some(url) = next {
        let (status, page) = t.get(&url).await?;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for v in page["value"].as_array().unwrap() {
            names.push(v["name"].as_str().unwrap().to_owned());
        }
        next = page["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(pages, 2);
    assert_eq!(names, ["apim-a", "apim-b", "apim-c", "apim-new"]);
    let (_, page) = t
        .get(&format!(
            "/subscriptions/{SUB}/providers/Microsoft.ApiManagement/service"
        ))
        .await?;
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let (_, page2) = t.get(page["nextLink"].as_str().unwrap()).await?;
    let (_, page3) = t.get(page2["nextLink"].as_str().unwrap()).await?;
    assert_eq!(page3["value"].as_array().unwrap().len(), 1);
    assert!(page3.get("nextLink").is_none());

    // DELETE, then 404 like ARM.
    let r = t.arm(Method::DELETE, &path).send().await?;
    assert_eq!(r.status(), 200);
    let (status, body) = t.get(&path).await?;
    assert_eq!((status, error_code(&body)), (404, "ResourceNotFound"));
    let r = t.arm(Method::DELETE, &path).send().await?;
    assert_eq!(r.status(), 204);
    Ok(())
}

#[tokio::test]
async fn child_entities_move_change_date_and_etag() -> R {
    let t = TestEmulator::start_with(|c| c.page_size = 2).await?;
    t.seed("apim-weu", "westeurope")?;
    let svc = TestEmulator::service_path("apim-weu");
    let (_, sync0) = t
        .get(&format!("{svc}/tenant/configuration/syncState"))
        .await?;
    assert_eq!(
        sync0["type"],
        "Microsoft.ApiManagement/service/tenant/syncState"
    );
    let (_, svc0) = t.get(&svc).await?;
    t.advance(5);

    let r = t
        .arm(Method::PUT, &format!("{svc}/apis/orders"))
        .json(&json!({"properties": {"displayName": "Orders", "path": "orders", "protocols": ["https"]}}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let body = body_json(r).await?;
    assert_eq!(body["type"], "Microsoft.ApiManagement/service/apis");
    assert_eq!(body["name"], "orders");
    let (_, sync1) = t
        .get(&format!("{svc}/tenant/configuration/syncState"))
        .await?;
    let (_, svc1) = t.get(&svc).await?;
    assert_ne!(
        sync0["properties"]["configurationChangeDate"],
        sync1["properties"]["configurationChangeDate"]
    );
    assert_ne!(svc0["etag"], svc1["etag"]);

    // Update answers 200; list pages (sample echo-api + orders + one more).
    let r = t
        .arm(Method::PUT, &format!("{svc}/apis/orders"))
        .json(&json!({"properties": {"displayName": "Orders v2", "path": "orders"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    t.arm(Method::PUT, &format!("{svc}/apis/zeta"))
        .json(&json!({"properties": {"displayName": "Zeta", "path": "z"}}))
        .send()
        .await?;
    let (_, page) = t.get(&format!("{svc}/apis")).await?;
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    assert_eq!(page["count"], 3);
    let (_, page2) = t.get(page["nextLink"].as_str().unwrap()).await?;
    assert_eq!(page2["value"][0]["name"], "zeta");

    // Products and named values; secret values are not served.
    let r = t
        .arm(Method::PUT, &format!("{svc}/namedValues/db-password"))
        .json(&json!({"properties": {"displayName": "db-password", "value": "s3cret", "secret": true}}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let (status, nv) = t.get(&format!("{svc}/namedValues/db-password")).await?;
    assert_eq!(status, 200);
    assert!(nv["properties"].get("value").is_none(), "{nv}");
    let (status, _) = t.get(&format!("{svc}/products/starter")).await?;
    assert_eq!(status, 200);

    // DELETE, then 404; a body without properties is refused.
    let r = t
        .arm(Method::DELETE, &format!("{svc}/products/starter"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (status, _) = t.get(&format!("{svc}/products/starter")).await?;
    assert_eq!(status, 404);
    let r = t
        .arm(Method::PUT, &format!("{svc}/apis/bad"))
        .json(&json!({"displayName": "x"}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert!(t.count("child-put") >= 4);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Backup and restore.

fn blob_path(t: &TestEmulator, account: &str, container: &str, blob: &str) -> std::path::PathBuf {
    t.dir.path().join(account).join(container).join(blob)
}

#[tokio::test]
async fn backup_and_restore_with_access_key() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let mut standby = ServiceSeed::new(SUB, RG, "apim-neu", "northeurope");
    standby.principal_id = Some("99999999-0000-0000-0000-000000000001".into());
    t.seed_with(standby)?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.b1");

    let r = t.post_op("apim-weu", "backup", &body).await?;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").expect("Location");
    assert!(location.contains("/operationresults/") && location.contains("api-version=2024-05-01"));
    let ra: u64 = header(&r, "retry-after").unwrap().parse()?;
    assert!(ra >= 1);
    assert!(header(&r, "retry-after-ms").is_some());
    assert!(header(&r, "x-ms-ratelimit-remaining-subscription-writes").is_some());
    // The backup holds the configuration as it was when it started.
    let svc = TestEmulator::service_path("apim-weu");
    let r2 = t
        .arm(Method::PUT, &format!("{svc}/apis/late"))
        .json(&json!({"properties": {"displayName": "Late", "path": "late"}}))
        .send()
        .await?;
    assert_eq!(
        r2.status(),
        201,
        "child changes are allowed during a backup"
    );
    let (status, done) = t.poll_until_done(&location).await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["name"], "apim-weu");
    assert_eq!(done["properties"]["provisioningState"], "Succeeded");
    let blob = std::fs::read(blob_path(&t, ACCOUNT, "apim-backups", "apim-weu.b1"))?;
    let env: Value = serde_json::from_slice(&blob)?;
    assert_eq!(env["format"], "drsync-emulator-backup");
    assert_eq!(env["format_version"], 1);
    assert_eq!(env["payload"]["sku"]["name"], "Premium");
    assert_eq!(env["checksum"]["algorithm"], "sha256");
    assert!(
        env["payload"]["configuration"]["apis"]
            .get("late")
            .is_none()
    );
    assert!(
        env["payload"]["configuration"]["apis"]
            .get("echo-api")
            .is_some()
    );

    // Restore into the standby: configuration replaced, identity/SKU/hostnames kept.
    let custom = json!({"type": "Proxy", "hostName": "api-dr.contoso.com", "negotiateClientCertificate": false,
                        "defaultSslBinding": true, "certificateSource": "Custom"});
    let r = t
        .arm(Method::PATCH, &TestEmulator::service_path("apim-neu"))
        .json(&json!({"properties": {"hostnameConfigurations": [custom]}}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (_, before) = t.get(&TestEmulator::service_path("apim-neu")).await?;
    assert_eq!(
        before["properties"]["hostnameConfigurations"][1]["hostName"],
        "api-dr.contoso.com"
    );
    let (status, done) = t.run_op("apim-neu", "restore", &body).await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["name"], "apim-neu");
    assert_eq!(
        done["identity"]["principalId"],
        "99999999-0000-0000-0000-000000000001"
    );
    assert_eq!(done["sku"], before["sku"]);
    assert_eq!(
        done["properties"]["hostnameConfigurations"],
        before["properties"]["hostnameConfigurations"]
    );
    let cfg = t.state().configuration(SUB, RG, "apim-neu").unwrap();
    assert!(cfg.apis.contains_key("echo-api") && !cfg.apis.contains_key("late"));
    assert!(cfg.products.contains_key("starter"));
    let (_, sync) = t
        .get(&format!(
            "{}/tenant/configuration/syncState",
            TestEmulator::service_path("apim-neu")
        ))
        .await?;
    assert!(sync["properties"]["lastOperationId"].is_string());
    assert_eq!(t.count("backup-post"), 1);
    assert_eq!(t.count("restore-post"), 1);
    assert!(t.count("poll") >= 2);
    Ok(())
}

#[tokio::test]
async fn managed_identity_access_needs_identity_and_grant() -> R {
    let t = TestEmulator::start(0.001).await?;
    let id = t.seed("apim-weu", "westeurope")?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-noid", "westeurope").without_identity())?;
    let body = identity_body(ACCOUNT, "apim-backups", "apim-weu.mi");

    let (status, err) = t.run_op("apim-weu", "backup", &body).await?;
    assert_eq!((status, error_code(&err)), (400, "BackupFailed"), "{err}");
    assert!(
        error_message(&err).contains("Storage Blob Data Contributor"),
        "{err}"
    );

    let (status, err) = t.run_op("apim-noid", "backup", &body).await?;
    assert_eq!(status, 400);
    assert!(error_message(&err).contains("not enabled"), "{err}");

    // Grant through the control API.
    let r = t
        .http
        .post(format!("{}/_emulator/storage/{ACCOUNT}/grants", t.base()))
        .json(&json!({"principal": id}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let (status, done) = t.run_op("apim-weu", "backup", &body).await?;
    assert_eq!(status, 200, "{done}");
    assert!(blob_path(&t, ACCOUNT, "apim-backups", "apim-weu.mi").is_file());

    // User-assigned: the client id must be attached and granted.
    let mut seed = ServiceSeed::new(SUB, RG, "apim-uai", "westeurope");
    seed.user_assigned_identities.push(UserAssignedIdentity {
        resource_id: "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/dr".into(),
        client_id: "c1c1c1c1-0000-0000-0000-000000000001".into(),
        principal_id: "p1p1p1p1-0000-0000-0000-000000000001".into(),
    });
    t.seed_with(seed)?;
    let uai = json!({"storageAccount": ACCOUNT, "containerName": "apim-backups", "backupName": "apim-uai.b",
                     "accessType": "UserAssignedManagedIdentity", "clientId": "c1c1c1c1-0000-0000-0000-000000000001"});
    let (status, _) = t.run_op("apim-uai", "backup", &uai).await?;
    assert_eq!(status, 400);
    t.state()
        .grant(ACCOUNT, "c1c1c1c1-0000-0000-0000-000000000001")?;
    let (status, done) = t.run_op("apim-uai", "backup", &uai).await?;
    assert_eq!(status, 200, "{done}");
    let mut other = uai.clone();
    other["clientId"] = json!("00000000-dead-0000-0000-000000000000");
    let (status, err) = t.run_op("apim-uai", "backup", &other).await?;
    assert_eq!(status, 400);
    assert!(error_message(&err).contains("not assigned"), "{err}");
    Ok(())
}

#[tokio::test]
async fn service_is_updating_and_refuses_management_calls_during_an_operation() -> R {
    // A manual clock: the backup (300 s) cannot end while the test looks at it.
    let t = TestEmulator::start_with_clock(manual_clock(), |_| {}).await?;
    t.seed("apim-weu", "westeurope")?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.busy");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").unwrap();
    let path = TestEmulator::service_path("apim-weu");
    let (_, svc) = t.get(&path).await?;
    assert_eq!(svc["properties"]["provisioningState"], "Updating");

    let r = t.post_op("apim-weu", "backup", &body).await?;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(&body_json(r).await?), "Conflict");
    let r = t.post_op("apim-weu", "restore", &body).await?;
    assert_eq!(r.status(), 409);
    let r = t
        .arm(Method::PUT, &path)
        .json(
            &json!({"location": "westeurope", "sku": {"name": "Premium", "capacity": 2},
                      "properties": {"publisherEmail": "a@b.c", "publisherName": "n"}}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 409);
    let r = t
        .arm(Method::PATCH, &path)
        .json(&json!({"tags": {}}))
        .send()
        .await?;
    assert_eq!(r.status(), 409);
    let r = t.arm(Method::DELETE, &path).send().await?;
    assert_eq!(r.status(), 409);
    // A poll right away is still running: the operation is not done before its time.
    let r = t.arm(Method::GET, &location).send().await?;
    assert_eq!(r.status(), 202);
    assert!(header(&r, "location").is_some());
    t.advance(600);
    let (status, _) = t.poll_until_done(&location).await?;
    assert_eq!(status, 200);
    let (_, svc) = t.get(&path).await?;
    assert_eq!(svc["properties"]["provisioningState"], "Succeeded");
    Ok(())
}

#[tokio::test]
async fn restore_refusals() -> R {
    let mut t = TestEmulator::start(0.0005).await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-std", "northeurope").sku("Standard", 1))?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-cons", "northeurope").sku("Consumption", 0))?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-v2", "northeurope").sku("StandardV2", 1))?;
    t.seed("apim-neu", "northeurope")?;
    let good = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.r1");
    let (status, _) = t.run_op("apim-weu", "backup", &good).await?;
    assert_eq!(status, 200);

    // SKU mismatch.
    let (status, err) = t.run_op("apim-std", "restore", &good).await?;
    assert_eq!((status, error_code(&err)), (400, "RestoreFailed"));
    assert_eq!(
        error_message(&err),
        "Cannot restore: current SKU is 'Standard', backup SKU is 'Premium'"
    );

    // Unsupported tiers are refused when the request is made.
    for name in ["apim-cons", "apim-v2"] {
        let r = t.post_op(name, "restore", &good).await?;
        assert_eq!(r.status(), 400);
        assert_eq!(
            error_code(&body_json(r).await?),
            "MethodNotAllowedInPricingTier"
        );
        let r = t.post_op(name, "backup", &good).await?;
        assert_eq!(r.status(), 400);
    }

    // Unknown account, wrong key, missing container, missing blob.
    let cases = [
        (
            access_key_body("nosuchacct", ACCOUNT_KEY, "apim-backups", "apim-weu.r1"),
            "was not found",
        ),
        (
            access_key_body(ACCOUNT, "d3Jvbmc=", "apim-backups", "apim-weu.r1"),
            "access key is not valid",
        ),
        (
            access_key_body(ACCOUNT, ACCOUNT_KEY, "nocontainer", "apim-weu.r1"),
            "Container 'nocontainer' was not found",
        ),
        (
            access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.none"),
            "Backup blob 'apim-weu.none' was not found",
        ),
    ];
    for (body, expect) in cases {
        let (status, err) = t.run_op("apim-neu", "restore", &body).await?;
        assert_eq!((status, error_code(&err)), (400, "RestoreFailed"), "{err}");
        assert!(error_message(&err).contains(expect), "{expect}: {err}");
        assert!(!err.to_string().contains(ACCOUNT_KEY));
    }

    // Altered and truncated blobs.
    let path = blob_path(&t, ACCOUNT, "apim-backups", "apim-weu.r1");
    let original = std::fs::read(&path)?;
    let altered = String::from_utf8(original.clone())?.replace("Echo API", "Evil API");
    std::fs::write(blob_path(&t, ACCOUNT, "apim-backups", "altered"), altered)?;
    std::fs::write(
        blob_path(&t, ACCOUNT, "apim-backups", "truncated"),
        &original[..original.len() / 3],
    )?;
    for (blob, expect) in [
        ("altered", "checksum does not match"),
        ("truncated", "truncated"),
    ] {
        let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", blob);
        let (status, err) = t.run_op("apim-neu", "restore", &body).await?;
        assert_eq!(status, 400);
        assert!(
            error_message(&err).contains("is corrupt") && error_message(&err).contains(expect),
            "{err}"
        );
    }

    // Expired by the emulator's clock.
    t.advance(31 * 24 * 3600);
    t.refresh_token();
    let (status, err) = t.run_op("apim-neu", "restore", &good).await?;
    assert_eq!((status, error_code(&err)), (400, "RestoreFailed"));
    assert_eq!(error_message(&err), "Cannot restore: backup expired");
    // A failed restore leaves the target usable.
    let (_, svc) = t.get(&TestEmulator::service_path("apim-neu")).await?;
    assert_eq!(svc["properties"]["provisioningState"], "Succeeded");
    Ok(())
}

#[tokio::test]
async fn backup_container_rules_depend_on_api_version() -> R {
    let t = TestEmulator::start(0.0005).await?;
    t.seed("apim-weu", "westeurope")?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "fresh", "apim-weu.c");
    let path = format!(
        "{}/backup?api-version=2021-08-01",
        TestEmulator::service_path("apim-weu")
    );
    let r = t.arm(Method::POST, &path).json(&body).send().await?;
    assert_eq!(r.status(), 202);
    let (status, err) = t.poll_until_done(&header(&r, "location").unwrap()).await?;
    assert_eq!(status, 400);
    assert!(
        error_message(&err).contains("Container 'fresh' was not found"),
        "{err}"
    );
    let (status, _) = t.run_op("apim-weu", "backup", &body).await?;
    assert_eq!(status, 200, "2024-05-01 creates the container");
    assert!(blob_path(&t, ACCOUNT, "fresh", "apim-weu.c").is_file());
    Ok(())
}

#[tokio::test]
async fn backup_bodies_are_validated_per_access_type() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let cases = [
        json!({"containerName": "c", "backupName": "b", "accessType": "AccessKey", "accessKey": "k"}),
        json!({"storageAccount": ACCOUNT, "backupName": "b", "accessKey": "k"}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "accessKey": "k"}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b"}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b", "accessType": "AccessKey"}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b", "accessType": "UserAssignedManagedIdentity"}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b", "accessType": "SystemAssignedManagedIdentity", "accessKey": "k"}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b", "accessType": "Sas"}),
    ];
    for body in &cases {
        let r = t.post_op("apim-weu", "backup", body).await?;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(
            error_code(&body_json(r).await?),
            "InvalidParameters",
            "{body}"
        );
    }
    let r = t
        .arm(
            Method::POST,
            &format!("{}/backup", TestEmulator::service_path("apim-weu")),
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&body_json(r).await?), "InvalidRequestContent");
    let r = t
        .post_op(
            "apim-missing",
            "backup",
            &access_key_body(ACCOUNT, ACCOUNT_KEY, "c", "b"),
        )
        .await?;
    assert_eq!(r.status(), 404);
    // Default accessType is AccessKey.
    let r = t
        .post_op("apim-weu", "backup", &json!({"storageAccount": ACCOUNT, "containerName": "apim-backups", "backupName": "d", "accessKey": ACCOUNT_KEY}))
        .await?;
    assert_eq!(r.status(), 202);
    Ok(())
}

#[tokio::test]
async fn azure_async_operation_header_mode() -> R {
    let t =
        TestEmulator::start_with_clock(manual_clock(), |c| c.async_operation_header = true).await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-std", "northeurope").sku("Standard", 1))?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.async");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    assert_eq!(r.status(), 202);
    // See: review of #3: ARM sends `Location` beside `Azure-AsyncOperation`; the SDKs read a
    // POST's final resource from it.
    let location = header(&r, "location").expect("Location beside Azure-AsyncOperation");
    assert!(
        location.contains("/service/apim-weu/operationresults/"),
        "{location}"
    );
    assert!(header(&r, "retry-after").is_some() && header(&r, "retry-after-ms").is_some());
    let url = header(&r, "azure-asyncoperation").expect("Azure-AsyncOperation");
    let r = t.arm(Method::GET, &url).send().await?;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "retry-after").is_some());
    let first = body_json(r).await?;
    assert_eq!(first["status"], "InProgress");
    assert!(first["startTime"].is_string() && first.get("endTime").is_none());
    t.advance(400);
    let (_, last) = t.get(&url).await?;
    assert_eq!(last["status"], "Succeeded", "{last}");
    assert!(last["endTime"].is_string());
    assert!(t.count("async-poll") >= 2);
    let (status, svc) = t.get(&location).await?;
    assert_eq!(
        (status, svc["name"].as_str()),
        (200, Some("apim-weu")),
        "{svc}"
    );

    let r = t.post_op("apim-std", "restore", &body).await?;
    let url = header(&r, "azure-asyncoperation").unwrap();
    t.advance(600);
    let (_, last) = t.get(&url).await?;
    assert_eq!(last["status"], "Failed");
    assert_eq!(last["error"]["code"], "RestoreFailed");
    Ok(())
}

#[tokio::test]
async fn durations_at_time_scale_one_are_as_configured() -> R {
    let clock = manual_clock();
    let t = TestEmulator::start_with_clock(clock, |c| {
        c.time_scale = 1.0;
        c.durations.backup_secs = 300.0;
        c.durations.restore_secs = 1800.0;
        c.durations.jitter = 0.0;
    })
    .await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-neu", "northeurope"))?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.t");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    let location = header(&r, "location").unwrap();
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
    t.advance(299);
    let r = t.arm(Method::GET, &location).send().await?;
    assert_eq!(r.status(), 202, "not done before 300 s");
    assert_eq!(header(&r, "retry-after-ms").as_deref(), Some("1000"));
    t.advance(1);
    let r = t.arm(Method::GET, &location).send().await?;
    assert_eq!(r.status(), 200, "done at 300 s");

    let r = t.post_op("apim-neu", "restore", &body).await?;
    let location = header(&r, "location").unwrap();
    t.advance(1799);
    assert_eq!(t.arm(Method::GET, &location).send().await?.status(), 202);
    let cfg = t.state().configuration(SUB, RG, "apim-neu").unwrap();
    assert!(
        cfg.apis.is_empty(),
        "a restore changes nothing before it completes"
    );
    t.advance(1);
    assert_eq!(t.arm(Method::GET, &location).send().await?.status(), 200);
    let cfg = t.state().configuration(SUB, RG, "apim-neu").unwrap();
    assert!(cfg.apis.contains_key("echo-api"), "replaced on completion");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Throttling and faults.

#[tokio::test]
async fn throttling_per_subscription() -> R {
    let clock = manual_clock();
    let t = TestEmulator::start_with_clock(clock, |c| {
        c.throttle.read_bucket = 3;
        c.throttle.read_refill_per_sec = 1.0;
        c.throttle.write_bucket = 2;
        c.throttle.write_refill_per_sec = 0.5;
        c.throttle.delete_bucket = 1;
        c.throttle.delete_refill_per_sec = 0.1;
    })
    .await?;
    t.seed("apim-weu", "westeurope")?;
    let path = TestEmulator::service_path("apim-weu");
    for expected in ["2", "1", "0"] {
        let r = t.arm(Method::GET, &path).send().await?;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "x-ms-ratelimit-remaining-subscription-reads").as_deref(),
            Some(expected)
        );
        assert_eq!(
            header(&r, "x-ms-ratelimit-remaining-subscription-writes").as_deref(),
            Some("2")
        );
    }
    let r = t.arm(Method::GET, &path).send().await?;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        error_code(&body_json(r).await?),
        "SubscriptionRequestsThrottled"
    );
    t.advance(1);
    assert_eq!(t.arm(Method::GET, &path).send().await?.status(), 200);

    // Writes have their own bucket.
    for _ in 0..2 {
        let r = t
            .arm(Method::PATCH, &path)
            .json(&json!({"tags": {"a": "b"}}))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    let r = t
        .arm(Method::PATCH, &path)
        .json(&json!({"tags": {"a": "b"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("2"));

    // Deletes too, with their own header.
    let gone = TestEmulator::service_path("apim-gone");
    let r = t.arm(Method::DELETE, &gone).send().await?;
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "x-ms-ratelimit-remaining-subscription-deletes").as_deref(),
        Some("0")
    );
    let r = t.arm(Method::DELETE, &gone).send().await?;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after").as_deref(), Some("10"));
    assert!(error_message(&body_json(r).await?).contains("'delete' requests"));
    Ok(())
}

#[tokio::test]
async fn injected_faults() -> R {
    let t = TestEmulator::start(0.0005).await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed("apim-neu", "northeurope")?;
    let path = TestEmulator::service_path("apim-weu");

    let set = |f: FaultConfig| t.state().set_faults(f);
    set(FaultConfig {
        status_500: 1.0,
        ..FaultConfig::default()
    })?;
    let (status, body) = t.get(&path).await?;
    assert_eq!((status, error_code(&body)), (500, "InternalServerError"));
    set(FaultConfig {
        status_503: 1.0,
        ..FaultConfig::default()
    })?;
    let (status, _) = t.get(&path).await?;
    assert_eq!(status, 503);
    set(FaultConfig {
        drop_connection: 1.0,
        ..FaultConfig::default()
    })?;
    let dropped = match t.arm(Method::GET, &path).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(dropped, "the connection must be dropped");
    assert_eq!(t.emu.request_log().last().unwrap().status, 0);

    // Faults set through the control API; a seeded generator decides.
    let r = t
        .http
        .put(format!("{}/_emulator/faults", t.base()))
        .json(&json!({"status_500": 0.5, "latency_ms": 5}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(t.get(&path).await?.0);
    }
    assert!(codes.contains(&500) && codes.contains(&200), "{codes:?}");

    // Operations failing midway.
    set(FaultConfig {
        operation_failure: 1.0,
        ..FaultConfig::default()
    })?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.f");
    let (status, err) = t.run_op("apim-weu", "backup", &body).await?;
    assert_eq!((status, error_code(&err)), (500, "BackupFailed"));
    assert!(!blob_path(&t, ACCOUNT, "apim-backups", "apim-weu.f").exists());

    // A whole region down: services there are unreachable, storage there too.
    set(FaultConfig {
        unavailable_regions: vec!["West Europe".into()],
        ..FaultConfig::default()
    })?;
    let (status, err) = t.get(&path).await?;
    assert_eq!((status, error_code(&err)), (503, "ServiceUnavailable"));
    let (status, _) = t.get(&TestEmulator::service_path("apim-neu")).await?;
    assert_eq!(status, 200);
    let weu = access_key_body(ACCOUNT_WEU, ACCOUNT_WEU_KEY, "apim-backups", "apim-neu.x");
    let (status, err) = t.run_op("apim-neu", "backup", &weu).await?;
    assert_eq!(
        (status, error_code(&err)),
        (503, "ServiceUnavailable"),
        "{err}"
    );
    let bad = FaultConfig {
        status_500: 2.0,
        ..FaultConfig::default()
    };
    assert!(set(bad).is_err());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Control API and state.

#[tokio::test]
async fn control_api_seed_clock_log_reset_and_state() -> R {
    // A manual clock: operations (backup 300 s) end only when the test advances the clock.
    let mut t = TestEmulator::start_with_clock(manual_clock(), |_| {}).await?;
    let base = t.base();
    let ctl = |p: &str| format!("{base}/_emulator/{p}");
    let seed = json!({"services": [{"subscription": SUB, "resource_group": RG, "name": "apim-seeded",
        "location": "westeurope", "sku": "Developer", "capacity": 1, "sample_config": true,
        "system_assigned_identity": true}]});
    let r = t.http.post(ctl("seed")).json(&seed).send().await?;
    assert_eq!(r.status(), 200);
    let (status, svc) = t.get(&TestEmulator::service_path("apim-seeded")).await?;
    assert_eq!(status, 200);
    assert_eq!(svc["sku"]["name"], "Developer");
    let r = t
        .http
        .post(ctl("seed"))
        .json(&json!({"services": [{"name": "x"}]}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    let c0 = body_json(t.http.get(ctl("clock")).send().await?).await?;
    let r = t
        .http
        .post(ctl("clock/advance"))
        .json(&json!({"seconds": 3600}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let c1 = body_json(t.http.get(ctl("clock")).send().await?).await?;
    assert!(c1["offset_ms"].as_i64().unwrap() >= 3_600_000 && c0["offset_ms"] == 0);
    let r = t
        .http
        .post(ctl("clock/advance"))
        .json(&json!({"seconds": -1}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    // Tokens minted by the control API work on ARM.
    let tok = body_json(
        t.http
            .post(ctl("tokens"))
            .json(&json!({"lifetime_secs": 600}))
            .send()
            .await?,
    )
    .await?;
    let r = t
        .http
        .get(format!(
            "{}{}?api-version={API}",
            t.base(),
            TestEmulator::service_path("apim-seeded")
        ))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // A backup, then the structured log counts POSTs and polls.
    t.refresh_token();
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-seeded.l");
    let r = t.post_op("apim-seeded", "backup", &body).await?;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").unwrap();
    assert_eq!(t.arm(Method::GET, &location).send().await?.status(), 202);
    t.advance(400);
    let (status, _) = t.poll_until_done(&location).await?;
    assert_eq!(status, 200);
    let log = body_json(t.http.get(ctl("requests")).send().await?).await?;
    let entries = log["requests"].as_array().unwrap();
    let posts: Vec<_> = entries
        .iter()
        .filter(|e| e["kind"] == "backup-post")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["method"], "POST");
    assert_eq!(posts[0]["status"], 202);
    assert!(
        posts[0]["time"].is_string() && posts[0]["path"].as_str().unwrap().ends_with("/backup")
    );
    assert!(entries.iter().any(|e| e["kind"] == "poll"));

    // Dump with a running operation, load into a fresh emulator, and finish it there.
    let r = t
        .post_op(
            "apim-seeded",
            "backup",
            &access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-seeded.d"),
        )
        .await?;
    let location = header(&r, "location").unwrap();
    let dump = body_json(t.http.get(ctl("state")).send().await?).await?;
    assert_eq!(dump["format"], "drsync-emulator-state");
    let dir = t.dir.path().to_owned();
    let mut t2 = TestEmulator::start_with(|c| {
        c.time_scale = 0.0005;
        c.storage_accounts = test_config(&dir, 0.0005).storage_accounts;
    })
    .await?;
    let r = t2
        .http
        .put(format!("{}/_emulator/state", t2.base()))
        .json(&dump)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    t2.refresh_token();
    let (_, svc) = t2.get(&TestEmulator::service_path("apim-seeded")).await?;
    assert_eq!(svc["properties"]["provisioningState"], "Updating");
    t2.advance(400);
    t2.refresh_token();
    let location2 = location.replace(&t.base(), &t2.base());
    let (status, _) = t2.poll_until_done(&location2).await?;
    assert_eq!(status, 200);
    assert!(
        dir.join(ACCOUNT)
            .join("apim-backups")
            .join("apim-seeded.d")
            .is_file()
    );

    // Reset empties everything.
    let r = t.http.post(ctl("reset")).send().await?;
    assert_eq!(r.status(), 200);
    t.refresh_token();
    let (status, _) = t.get(&TestEmulator::service_path("apim-seeded")).await?;
    assert_eq!(status, 404);
    let r = t.http.get(ctl("nope")).send().await?;
    assert_eq!(r.status(), 404);
    Ok(())
}

#[tokio::test]
async fn in_process_dump_and_load_round_trip() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let json = t.state().dump_state_json();
    let t2 = TestEmulator::start(0.001).await?;
    t2.state().load_state_json(&json)?;
    assert_eq!(
        t2.state().service_json(SUB, RG, "apim-weu"),
        t.state().service_json(SUB, RG, "apim-weu")
    );
    assert!(
        t2.state()
            .load_state_json("{\"format\":\"other\"}")
            .is_err()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The spec's examples.

fn read_example(dir: &Path, name: &str) -> anyhow::Result<Value> {
    let path = dir.join(name);
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn keys(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every key the emulator writes in `ours` also appears in one of the examples' objects.
fn assert_keys_within(ours: &Value, examples: &[&Value], what: &str) {
    let mut allowed = std::collections::BTreeSet::new();
    for e in examples {
        allowed.extend(keys(e));
    }
    let extra: Vec<_> = keys(ours).difference(&allowed).cloned().collect();
    assert!(
        extra.is_empty(),
        "{what}: keys not in the spec examples: {extra:?}"
    );
}

#[tokio::test]
async fn spec_examples_are_accepted_and_shapes_match() -> R {
    let dir = spec_examples()?;
    let ex_sub = "00000000-0000-0000-0000-000000000000";
    let t = TestEmulator::start_with(|c| {
        c.time_scale = 0.0005;
        let root = c.storage_accounts[0].backend_dir().join("..");
        for (name, key) in [("teststorageaccount", "**************************************************"), ("contosorpstorage", "unused")] {
            c.storage_accounts.push(StorageAccountConfig {
                name: name.into(),
                region: "westus".into(),
                key: drsync_core::Secret::new(key),
                backend: StorageBackend::LocalDir { path: root.join(name) },
                granted_identities: vec![format!("/subscriptions/{ex_sub}/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1")],
            });
        }
    })
    .await?;
    let mut seed = ServiceSeed::new(ex_sub, "rg1", "apimService1", "West US").with_sample_config();
    seed.user_assigned_identities.push(UserAssignedIdentity {
        resource_id: format!("/subscriptions/{ex_sub}/resourceGroups/rg1/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rg1UserIdentity"),
        client_id: "XXXXX-a154-4830-XXXX-46a12da1a1e2".into(),
        principal_id: "00000000-a100-4478-0000-d65d98118ba0".into(),
    });
    t.seed_with(seed)?;
    t.state()
        .grant("contosorpstorage", "XXXXX-a154-4830-XXXX-46a12da1a1e2")?;
    let svc_path = format!(
        "/subscriptions/{ex_sub}/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1"
    );

    let get_example = read_example(&dir, "ApiManagementServiceGetService.json")?;
    let mut final_bodies = Vec::new();
    for (file, op) in [
        ("ApiManagementBackupWithAccessKey.json", "backup"),
        (
            "ApiManagementBackupWithSystemManagedIdentity.json",
            "backup",
        ),
        (
            "ApiManagementBackupWithUserAssignedManagedIdentity.json",
            "backup",
        ),
        ("ApiManagementRestoreWithAccessKey.json", "restore"),
    ] {
        let ex = read_example(&dir, file)?;
        let mut body = ex["parameters"]["parameters"].clone();
        let api = ex["parameters"]["api-version"].as_str().unwrap();
        // Azure Storage container names are lowercase: the examples' `backupContainer` would be
        // refused by storage itself (the emulator accepts the request and fails the operation,
        // checked below), so the success path uses its lowercase spelling.
        let verbatim = body.clone();
        let container = body["containerName"].as_str().unwrap().to_lowercase();
        body["containerName"] = json!(container);
        let url = format!("{svc_path}/{op}?api-version={api}");
        let r = t.arm(Method::POST, &url).json(&verbatim).send().await?;
        assert_eq!(r.status(), 202, "{file}");
        let loc = header(&r, "location").expect("location");
        let ex_loc = ex["responses"]["202"]["headers"]["location"]
            .as_str()
            .unwrap();
        let shape = |u: &str| {
            let path = u.split_once("/subscriptions/").unwrap().1;
            let (path, query) = path.split_once('?').unwrap();
            let segs: Vec<_> = path.split('/').collect();
            (
                segs.len(),
                segs[..8].join("/").to_lowercase(),
                query.to_owned(),
            )
        };
        assert_eq!(shape(&loc), shape(ex_loc), "{file}: Location shape");
        let (status, done) = t.poll_until_done(&loc).await?;
        if verbatim["containerName"] != body["containerName"] {
            assert_eq!(
                status, 400,
                "{file}: uppercase container refused by storage: {done}"
            );
            assert!(error_message(&done).contains("backupContainer"), "{done}");
            let r = t.arm(Method::POST, &url).json(&body).send().await?;
            assert_eq!(r.status(), 202);
            let (status, done) = t.poll_until_done(&header(&r, "location").unwrap()).await?;
            assert_eq!(status, 200, "{file}: {done}");
            final_bodies.push((file, ex, done));
        } else {
            assert_eq!(status, 200, "{file}: {done}");
            final_bodies.push((file, ex, done));
        }
    }
    for (file, ex, ours) in &final_bodies {
        let example = &ex["responses"]["200"]["body"];
        assert_keys_within(
            ours,
            &[example, &get_example["responses"]["200"]["body"]],
            file,
        );
        for k in [
            "id",
            "name",
            "type",
            "tags",
            "location",
            "etag",
            "properties",
            "sku",
        ] {
            assert!(ours.get(k).is_some(), "{file}: missing {k}");
        }
        assert_keys_within(
            &ours["properties"],
            &[
                &example["properties"],
                &get_example["responses"]["200"]["body"]["properties"],
            ],
            file,
        );
        assert_keys_within(&ours["sku"], &[&example["sku"]], file);
        for h in ours["properties"]["hostnameConfigurations"]
            .as_array()
            .unwrap()
        {
            let ex_h: Vec<&Value> =
                get_example["responses"]["200"]["body"]["properties"]["hostnameConfigurations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .collect();
            assert_keys_within(h, &ex_h, "hostnameConfigurations");
        }
        assert_eq!(ours["type"], example["type"]);
        assert_eq!(ours["properties"]["provisioningState"], "Succeeded");
    }

    // GET service: identity shape.
    let (_, ours) = t.get(&format!("{svc_path}?api-version=2024-05-01")).await?;
    let ex_body = &get_example["responses"]["200"]["body"];
    assert_eq!(keys(&ours["identity"]), keys(&ex_body["identity"]));
    assert_eq!(ours["identity"]["type"], "SystemAssigned, UserAssigned");
    let ex_uai = ex_body["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    let our_uai = ours["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(keys(our_uai), keys(ex_uai));
    assert_keys_within(&ours["systemData"], &[&ex_body["systemData"]], "systemData");

    // syncState and the list examples.
    let ex = read_example(&dir, "ApiManagementTenantAccessSyncState.json")?;
    let (_, ours) = t
        .get(&format!(
            "{svc_path}/tenant/configuration/syncState?api-version=2024-05-01"
        ))
        .await?;
    let exb = &ex["responses"]["200"]["body"];
    assert_eq!(keys(&ours), keys(exb));
    assert_eq!(keys(&ours["properties"]), keys(&exb["properties"]));
    assert_eq!(ours["type"], exb["type"]);
    for (file, seg) in [
        ("ApiManagementListApis.json", "apis"),
        ("ApiManagementListProducts.json", "products"),
        ("ApiManagementListNamedValues.json", "namedValues"),
    ] {
        let ex = read_example(&dir, file)?;
        let (status, ours) = t
            .get(&format!("{svc_path}/{seg}?api-version=2024-05-01"))
            .await?;
        assert_eq!(status, 200);
        let exb = &ex["responses"]["200"]["body"];
        assert_keys_within(&ours, &[exb], file);
        let ex_item = &exb["value"][0];
        let item = &ours["value"][0];
        assert_eq!(keys(item), keys(ex_item), "{file}");
        assert_eq!(item["type"], ex_item["type"], "{file}");
        // The example items themselves are accepted by PUT and served back with their fields.
        for ex_item in exb["value"].as_array().unwrap() {
            let name = ex_item["name"].as_str().unwrap();
            let r = t
                .arm(
                    Method::PUT,
                    &format!("{svc_path}/{seg}/{name}?api-version=2024-05-01"),
                )
                .json(&json!({"properties": ex_item["properties"]}))
                .send()
                .await?;
            assert!(r.status() == 201 || r.status() == 200, "{file}: {name}");
            let got = body_json(r).await?;
            assert_eq!(got["id"], ex_item["id"], "{file}");
            assert_eq!(keys(&got), keys(ex_item));
        }
    }
    for file in [
        "ApiManagementListServiceBySubscription.json",
        "ApiManagementListServiceBySubscriptionAndResourceGroup.json",
    ] {
        let ex = read_example(&dir, file)?;
        let p = &ex["parameters"];
        let url = match p.get("resourceGroupName") {
            Some(rg) => format!(
                "/subscriptions/{ex_sub}/resourceGroups/{}/providers/Microsoft.ApiManagement/service?api-version=2024-05-01",
                rg.as_str().unwrap()
            ),
            None => format!(
                "/subscriptions/{ex_sub}/providers/Microsoft.ApiManagement/service?api-version=2024-05-01"
            ),
        };
        let (status, ours) = t.get(&url).await?;
        assert_eq!(status, 200, "{file}");
        assert_keys_within(&ours, &[&ex["responses"]["200"]["body"]], file);
        let ex_item = &ex["responses"]["200"]["body"]["value"][0];
        assert_keys_within(&ours["value"][0], &[ex_item, ex_body], file);
    }
    Ok(())
}

trait BackendDir {
    fn backend_dir(&self) -> std::path::PathBuf;
}

impl BackendDir for StorageAccountConfig {
    fn backend_dir(&self) -> std::path::PathBuf {
        match &self.backend {
            StorageBackend::LocalDir { path } => path.clone(),
            other => panic!("test accounts are local directories, not {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Microsoft's Python SDK.

#[tokio::test]
async fn python_sdk_conformance() -> R {
    python_sdk_conformance_with(false).await
}

// See: review of #3: the SDK must also finish through the `Azure-AsyncOperation` path, where
// the final GET of a POST goes to the `Location` URL.
#[tokio::test]
async fn python_sdk_conformance_azure_async_operation_mode() -> R {
    python_sdk_conformance_with(true).await
}

async fn python_sdk_conformance_with(async_header: bool) -> R {
    let python = python_venv().await?;
    let t = TestEmulator::start_with(|c| {
        c.time_scale = 0.0005;
        c.async_operation_header = async_header;
    })
    .await?;
    let src = t.seed("apim-weu", "westeurope")?;
    let dst = t.seed("apim-neu", "northeurope")?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-std", "northeurope").sku("Standard", 1))?;
    t.state().grant(ACCOUNT, &src)?;
    t.state().grant(ACCOUNT, &dst)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sdk_conformance.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("EMU_BASE_URL", format!("{}/", t.base()))
        .env("EMU_TOKEN", &t.token)
        .env("EMU_SUBSCRIPTION", SUB)
        .env("EMU_RG", RG)
        .env("EMU_SOURCE", "apim-weu")
        .env("EMU_TARGET", "apim-neu")
        .env("EMU_MISMATCH", "apim-std")
        .env("EMU_ACCOUNT", ACCOUNT)
        .env("EMU_ACCOUNT_KEY", ACCOUNT_KEY)
        .env("EMU_CONTAINER", "apim-backups")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK conformance failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
    // The SDK really went through the emulator's operations.
    assert_eq!(t.count("backup-post"), 2);
    assert_eq!(t.count("restore-post"), 3);
    let polls = if async_header { "async-poll" } else { "poll" };
    assert!(t.count(polls) >= 5, "{polls}");
    if async_header {
        // One final GET of the Location URL per successful operation.
        assert_eq!(t.count("poll"), 4);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Storage through Azurite.

#[tokio::test]
async fn backups_go_through_an_azure_blob_endpoint() -> R {
    use drsync_tests::azurite::{self, Azurite};
    let azurite = tokio::task::spawn_blocking(Azurite::start).await??;
    let endpoint = azurite.blob_endpoint();
    let t = TestEmulator::start_with(|c| {
        c.time_scale = 0.0005;
        c.storage_accounts.push(StorageAccountConfig {
            name: "azuritebacked".into(),
            region: "northeurope".into(),
            key: drsync_core::Secret::new("ZW11bGF0ZWQta2V5"),
            backend: StorageBackend::AzureBlob {
                endpoint: endpoint.clone(),
                account: Some(azurite::ACCOUNT.into()),
                key: Some(drsync_core::Secret::new(azurite::KEY)),
            },
            granted_identities: Vec::new(),
        });
    })
    .await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed("apim-neu", "northeurope")?;
    let body = access_key_body(
        "azuritebacked",
        "ZW11bGF0ZWQta2V5",
        "apim-backups",
        "apim-weu.az",
    );
    let (status, done) = t.run_op("apim-weu", "backup", &body).await?;
    assert_eq!(status, 200, "{done}");
    // drsync's own Azure store sees exactly the blob the emulator wrote.
    let store = drsync_arm_client::blob::AzureBlobStore::new(
        azurite::ACCOUNT,
        drsync_arm_client::Url::parse(&endpoint)?,
        drsync_arm_client::blob::BlobAuth::SharedKey(drsync_core::Secret::new(azurite::KEY)),
    )?;
    use drsync_arm_client::blob::BlobStore as _;
    let names: Vec<String> = store
        .list("apim-backups", "apim-weu.")
        .await?
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["apim-weu.az"]);
    let bytes = store.get("apim-backups", "apim-weu.az").await?;
    let env: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(env["format"], "drsync-emulator-backup");
    let (status, done) = t.run_op("apim-neu", "restore", &body).await?;
    assert_eq!(status, 200, "{done}");
    let missing = access_key_body("azuritebacked", "ZW11bGF0ZWQta2V5", "nocontainer", "x");
    let (status, err) = t.run_op("apim-neu", "restore", &missing).await?;
    assert_eq!(status, 400);
    assert!(
        error_message(&err).contains("Container 'nocontainer' was not found"),
        "{err}"
    );
    drop(azurite);
    Ok(())
}

#[tokio::test]
async fn static_and_registered_tokens() -> R {
    let t = TestEmulator::start_with(|c| {
        c.static_tokens.push(drsync_emulator::StaticToken {
            token: drsync_core::Secret::new("static-token-for-tests"),
            lifetime_secs: 120,
        });
    })
    .await?;
    t.seed("apim-weu", "westeurope")?;
    let url = format!(
        "{}{}?api-version={API}",
        t.base(),
        TestEmulator::service_path("apim-weu")
    );
    let r = t
        .http
        .get(&url)
        .bearer_auth("static-token-for-tests")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    t.state().register_token(
        &drsync_core::Secret::new("registered-token"),
        Duration::from_secs(600),
    )?;
    let r = t
        .http
        .get(&url)
        .bearer_auth("registered-token")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    t.advance(121);
    let r = t
        .http
        .get(&url)
        .bearer_auth("static-token-for-tests")
        .send()
        .await?;
    assert_eq!(
        r.status(),
        401,
        "the static token expired after its lifetime"
    );
    let r = t
        .http
        .get(&url)
        .bearer_auth("registered-token")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    Ok(())
}

#[tokio::test]
async fn shutdown_completes_with_idle_client_connections() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let (status, _) = t.get(&TestEmulator::service_path("apim-weu")).await?;
    assert_eq!(status, 200);
    let TestEmulator {
        emu,
        http,
        token,
        dir: _dir,
    } = t;
    let base = emu.base_url();
    tokio::time::timeout(Duration::from_secs(10), emu.shutdown()).await??;
    let r = http
        .get(format!("{base}/_emulator/health"))
        .bearer_auth(token)
        .send()
        .await;
    assert!(r.is_err(), "nothing listens after shutdown");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The documented fixture files.

#[tokio::test]
async fn fixture_files_parse_and_drive_an_emulator() -> R {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/emulator");
    let read = |name: &str| std::fs::read_to_string(fixtures.join(name));
    let mut config: EmulatorConfig = serde_json::from_str(&read("config.json")?)?;
    let faults: FaultConfig = serde_json::from_str(&read("faults.json")?)?;
    faults.validate()?;
    assert!(faults.operation_failure > 0.0);
    let seed: drsync_emulator::Seed = serde_json::from_str(&read("seed.json")?)?;
    assert_eq!(seed.services.len(), 2);
    let dir = tempfile::tempdir()?;
    config.storage_accounts[0].backend = StorageBackend::LocalDir {
        path: dir.path().join("drsyncneu"),
    };
    config.services = seed.services;
    let emu = Emulator::start(config).await?;
    let http = reqwest::Client::new();
    let path = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ApiManagement/service/apim-contoso-weu",
        emu.base_url()
    );
    let r = http
        .get(format!("{path}/namedValues?api-version={API}"))
        .bearer_auth("fixture-static-token")
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let body = body_json(r).await?;
    assert!(
        body["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "orders-key")
    );
    // The fixture grants the primary's identity on the account: a managed-identity backup works.
    let r = http
        .post(format!("{path}/backup?api-version={API}"))
        .bearer_auth("fixture-static-token")
        .json(&identity_body(
            "drsyncneu",
            "apim-backups",
            "apim-contoso-weu.fixture",
        ))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let location = header(&r, "location").unwrap();
    emu.state().advance_clock(Duration::from_secs(3600));
    // The operation is now due; the emulator's ticker completes it (writing the blob) within
    // a few ticks, and until then a poll answers 202, as Azure's does. Poll like a client,
    // a bounded number of times.
    let mut status = 202;
    for _ in 0..250 {
        let r = http
            .get(&location)
            .bearer_auth("fixture-static-token")
            .send()
            .await?;
        status = r.status().as_u16();
        if status != 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert!(
        dir.path()
            .join("drsyncneu/apim-backups/apim-contoso-weu.fixture")
            .is_file()
    );
    emu.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn service_updates_sku_identity_etag_and_location_rules() -> R {
    let t = TestEmulator::start_with_clock(manual_clock(), |c| c.durations.jitter = 0.0).await?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-weu", "westeurope").without_identity())?;
    let path = TestEmulator::service_path("apim-weu");

    // Enabling the system identity gives a principal id.
    let r = t
        .arm(Method::PATCH, &path)
        .json(&json!({"identity": {"type": "SystemAssigned"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let etag = header(&r, "etag").expect("ETag");
    let body = body_json(r).await?;
    assert!(body["identity"]["principalId"].is_string(), "{body}");
    assert_eq!(format!("\"{}\"", body["etag"].as_str().unwrap()), etag);

    // A stale If-Match is refused; the current one is accepted.
    let r = t
        .arm(Method::PATCH, &path)
        .header("If-Match", "\"AAAAAAAAAAA=\"")
        .json(&json!({"tags": {}}))
        .send()
        .await?;
    assert_eq!(r.status(), 412);
    assert_eq!(error_code(&body_json(r).await?), "PreconditionFailed");
    let r = t
        .arm(Method::PATCH, &path)
        .header("If-Match", etag)
        .json(&json!({"tags": {"a": "1"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // A capacity change is a long-running update (900 s at time scale 1).
    let r = t
        .arm(Method::PATCH, &path)
        .json(&json!({"sku": {"name": "Premium", "capacity": 2}}))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let location = header(&r, "location").expect("Location for a scale operation");
    assert_eq!(
        body_json(r).await?["properties"]["provisioningState"],
        "Updating"
    );
    t.advance(899);
    assert_eq!(t.arm(Method::GET, &location).send().await?.status(), 202);
    t.advance(1);
    let (status, done) = t.poll_until_done(&location).await?;
    assert_eq!(status, 200);
    assert_eq!(done["sku"]["capacity"], 2);
    assert_eq!(done["properties"]["provisioningState"], "Succeeded");

    // The location cannot change; subscription ids must be GUIDs.
    let r = t
        .arm(Method::PUT, &path)
        .json(
            &json!({"location": "northeurope", "sku": {"name": "Premium", "capacity": 2},
                      "properties": {"publisherEmail": "a@b.c", "publisherName": "n"}}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&body_json(r).await?), "InvalidResourceLocation");
    let (status, body) = t
        .get("/subscriptions/not-a-guid/providers/Microsoft.ApiManagement/service")
        .await?;
    assert_eq!((status, error_code(&body)), (400, "InvalidSubscriptionId"));
    let r = t
        .arm(Method::PUT, &TestEmulator::service_path("apim-x"))
        .json(&json!({"location": "Atlantis", "sku": {"name": "Premium"},
                      "properties": {"publisherEmail": "a@b.c", "publisherName": "n"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(
        error_code(&body_json(r).await?),
        "LocationNotAvailableForResourceType"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_routes_operations_and_disabled_endpoints() -> R {
    let t = TestEmulator::start_with(|c| c.managed_identity_endpoint = false).await?;
    t.seed("apim-weu", "westeurope")?;
    let svc = TestEmulator::service_path("apim-weu");
    let (status, body) = t.get(&format!("{svc}/operationresults/nope")).await?;
    assert_eq!((status, error_code(&body)), (404, "OperationNotFound"));
    let (status, body) = t.get(&format!("{svc}/users")).await?;
    assert_eq!((status, error_code(&body)), (400, "InvalidResourceType"));
    let r = t.arm(Method::POST, &svc).json(&json!({})).send().await?;
    assert_eq!(r.status(), 405);
    let r = t
        .http
        .get(format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
            t.base()
        ))
        .header("Metadata", "true")
        .send()
        .await?;
    assert_eq!(
        r.status(),
        404,
        "the managed identity endpoint is switched off"
    );
    // Creating a service in a region that is down fails like the region's provider would.
    t.state().set_faults(FaultConfig {
        unavailable_regions: vec!["eastus".into()],
        ..FaultConfig::default()
    })?;
    let r = t
        .arm(Method::PUT, &TestEmulator::service_path("apim-eus"))
        .json(
            &json!({"location": "East US", "sku": {"name": "Developer", "capacity": 1},
                      "properties": {"publisherEmail": "a@b.c", "publisherName": "n"}}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Review findings (each test names what it guards).

/// Sends a raw HTTP/1.1 request and returns every byte the server wrote before closing.
async fn raw_exchange(t: &TestEmulator, path: &str) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(t.emu.addr()).await?;
    let req = format!(
        "GET {path}?api-version={API} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        t.emu.addr(),
        t.token
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await?;
    // A reset is as good as a close: nothing more can arrive.
    if let Err(e) = read {
        anyhow::ensure!(e.kind() == std::io::ErrorKind::ConnectionReset, "{e}");
    }
    Ok(out)
}

#[tokio::test]
async fn dropped_connections_send_no_response_bytes() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let path = TestEmulator::service_path("apim-weu");
    let normal = raw_exchange(&t, &path).await?;
    assert!(
        normal.starts_with(b"HTTP/1.1 200"),
        "control: a normal answer"
    );
    t.state().set_faults(FaultConfig {
        drop_connection: 1.0,
        ..FaultConfig::default()
    })?;
    let dropped = raw_exchange(&t, &path).await?;
    assert!(
        dropped.is_empty(),
        "a dropped connection must not send a status line: {:?}",
        String::from_utf8_lossy(&dropped)
    );
    Ok(())
}

// See: review of #3: two simultaneous backup (or restore) POSTs on one service yield exactly one
// 202 and one 409, also when both are past the first busy check while storage is read
// (2021-08-01 backups check the container, restores read the blob).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_backups_on_one_service_give_one_202_and_one_409() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-src", "westeurope")?;
    let src = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-src.base");
    assert_eq!(t.run_op("apim-src", "backup", &src).await?.0, 200);
    let post = |name: String, op: &'static str, version: &'static str, body: Value| {
        let req = t
            .arm(
                Method::POST,
                &format!(
                    "{}/{op}?api-version={version}",
                    TestEmulator::service_path(&name)
                ),
            )
            .json(&body);
        async move { Ok::<u16, anyhow::Error>(req.send().await?.status().as_u16()) }
    };
    for round in 0..8 {
        let name = format!("apim-race{round}");
        t.seed(&name, "westeurope")?;
        let a = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", &format!("{name}.a"));
        let b = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", &format!("{name}.b"));
        let (ra, rb) = tokio::join!(
            post(name.clone(), "backup", "2021-08-01", a),
            post(name.clone(), "backup", "2021-08-01", b)
        );
        let mut statuses = [ra?, rb?];
        statuses.sort_unstable();
        assert_eq!(statuses, [202, 409], "backup round {round}");

        let target = format!("apim-rtarget{round}");
        t.seed(&target, "northeurope")?;
        let (ra, rb) = tokio::join!(
            post(target.clone(), "restore", API, src.clone()),
            post(target.clone(), "restore", API, src.clone())
        );
        let mut statuses = [ra?, rb?];
        statuses.sort_unstable();
        assert_eq!(statuses, [202, 409], "restore round {round}");
    }
    Ok(())
}

#[tokio::test]
async fn remaining_headers_on_401_404_and_429() -> R {
    let t = TestEmulator::start(0.001).await?;
    let path = TestEmulator::service_path("apim-missing");
    let r = t
        .http
        .get(format!("{}{path}?api-version={API}", t.base()))
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    for h in ["reads", "writes", "deletes"] {
        assert!(
            header(&r, &format!("x-ms-ratelimit-remaining-subscription-{h}")).is_some(),
            "401 lacks {h}"
        );
    }
    // ARM's challenge: three quoted parameters, the authority naming the tenant.
    let www = header(&r, "www-authenticate").unwrap();
    let tenant = EmulatorConfig::default().tenant_id;
    let expect = format!(
        "Bearer authorization_uri=\"https://login.windows.net/{tenant}\", error=\"invalid_token\", error_description=\""
    );
    assert!(
        www.starts_with(&expect) && www.ends_with('"') && www.matches('"').count() == 6,
        "{www}"
    );
    let r = t.arm(Method::GET, &path).send().await?;
    assert_eq!(r.status(), 404);
    assert!(header(&r, "x-ms-ratelimit-remaining-subscription-reads").is_some());
    Ok(())
}

// See: review of #3: anyone can check a backup blob's checksum with the documented recipe
// (SHA-256 of the payload as compact JSON with sorted keys), a blob copied to another account
// and container restores, and a field added to the payload or an unknown format version fails
// the restore.
#[tokio::test]
async fn envelope_checksum_recipe_copies_and_versions() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed("apim-neu", "northeurope")?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.env");
    assert_eq!(t.run_op("apim-weu", "backup", &body).await?.0, 200);
    let path = blob_path(&t, ACCOUNT, "apim-backups", "apim-weu.env");

    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("jq -jcS .payload \"$1\" | sha256sum")
        .arg("sh")
        .arg(&path)
        .output()?;
    assert!(out.status.success());
    let expect = String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let env: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    assert_eq!(env["checksum"]["value"], expect.as_str());

    // Copied to the other account, in another container: still a valid backup.
    let copy = blob_path(&t, ACCOUNT_WEU, "elsewhere", "copied");
    std::fs::create_dir_all(copy.parent().unwrap())?;
    std::fs::copy(&path, &copy)?;
    let from_copy = access_key_body(ACCOUNT_WEU, ACCOUNT_WEU_KEY, "elsewhere", "copied");
    let (status, svc) = t.run_op("apim-neu", "restore", &from_copy).await?;
    assert_eq!(status, 200, "{svc}");

    let mut added = env.clone();
    added["payload"]["extra"] = json!("smuggled");
    let mut version2 = env.clone();
    version2["format_version"] = json!(2);
    for (name, doc, expect) in [
        ("added", added, "checksum does not match"),
        ("v2", version2, "format version 2"),
    ] {
        std::fs::write(
            blob_path(&t, ACCOUNT, "apim-backups", name),
            serde_json::to_vec(&doc)?,
        )?;
        let b = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", name);
        let (status, err) = t.run_op("apim-neu", "restore", &b).await?;
        assert_eq!((status, error_code(&err)), (400, "RestoreFailed"), "{err}");
        assert!(error_message(&err).contains(expect), "{name}: {err}");
    }
    Ok(())
}

// See: review of #3: a finished operation's poll answers the same again and again; an unknown
// operation id is 404; a non-string `accessType` is refused instead of read as `AccessKey`.
#[tokio::test]
async fn polls_after_completion_repeat_and_unknown_ids_are_404() -> R {
    let t = TestEmulator::start_with_clock(manual_clock(), |_| {}).await?;
    t.seed("apim-weu", "westeurope")?;
    t.seed_with(ServiceSeed::new(SUB, RG, "apim-std", "northeurope").sku("Standard", 1))?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.rep");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    let location = header(&r, "location").unwrap();
    // PROTOCOL.md section 1's shape, to the character.
    let prefix = format!(
        "{}{}/operationresults/",
        t.base(),
        TestEmulator::service_path("apim-weu")
    );
    let id = location
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix("?api-version=2024-05-01"))
        .unwrap_or_else(|| panic!("{location}"));
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );
    t.advance(400);
    for _ in 0..3 {
        let (status, svc) = t.get(&location).await?;
        assert_eq!((status, svc["name"].as_str()), (200, Some("apim-weu")));
    }
    let r = t.post_op("apim-std", "restore", &body).await?;
    let failed = header(&r, "location").unwrap();
    t.advance(2000);
    for _ in 0..3 {
        let (status, err) = t.get(&failed).await?;
        assert_eq!((status, error_code(&err)), (400, "RestoreFailed"));
    }
    let unknown = format!(
        "{}/operationresults/00000000000000000000000000000000",
        TestEmulator::service_path("apim-weu")
    );
    let (status, err) = t.get(&unknown).await?;
    assert_eq!((status, error_code(&err)), (404, "OperationNotFound"));
    // Another service's operation id is unknown on this one.
    let (status, _) = t
        .get(&format!(
            "{}/operationresults/{id}",
            TestEmulator::service_path("apim-std")
        ))
        .await?;
    assert_eq!(status, 404);

    for bad in [
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b", "accessType": 1, "accessKey": ACCOUNT_KEY}),
        json!({"storageAccount": ACCOUNT, "containerName": "c", "backupName": "b", "accessKey": ACCOUNT_KEY, "clientId": 7}),
    ] {
        let r = t.post_op("apim-weu", "backup", &bad).await?;
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(error_code(&body_json(r).await?), "InvalidParameters");
    }
    Ok(())
}

// See: review of #3: a backup POST takes a write token, a poll a read token.
#[tokio::test]
async fn backup_posts_are_writes_and_polls_are_reads() -> R {
    let t = TestEmulator::start_with_clock(manual_clock(), |c| {
        c.throttle.read_bucket = 10;
        c.throttle.write_bucket = 10;
    })
    .await?;
    t.seed("apim-weu", "westeurope")?;
    let remaining = |r: &reqwest::Response| {
        (
            header(r, "x-ms-ratelimit-remaining-subscription-reads"),
            header(r, "x-ms-ratelimit-remaining-subscription-writes"),
        )
    };
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.cls");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    assert_eq!(r.status(), 202);
    assert_eq!(remaining(&r), (Some("10".into()), Some("9".into())));
    let r = t
        .arm(Method::GET, &header(&r, "location").unwrap())
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    assert_eq!(remaining(&r), (Some("9".into()), Some("9".into())));
    Ok(())
}

// See: review of #3: the same seed and the same request sequence give the same faults.
#[tokio::test]
async fn faults_are_reproducible_with_a_seed() -> R {
    async fn statuses(seed: u64) -> anyhow::Result<Vec<u16>> {
        let t = TestEmulator::start_with(|c| {
            c.seed = seed;
            c.faults.status_500 = 0.3;
            c.faults.status_503 = 0.3;
        })
        .await?;
        t.seed("apim-weu", "westeurope")?;
        let path = TestEmulator::service_path("apim-weu");
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(t.get(&path).await?.0);
        }
        Ok(out)
    }
    let a = statuses(7).await?;
    assert!(
        a.contains(&200) && a.contains(&500) && a.contains(&503),
        "{a:?}"
    );
    assert_eq!(a, statuses(7).await?, "same seed, same faults");
    assert_ne!(a, statuses(8).await?, "another seed, other faults");
    Ok(())
}

// See: review of #3: a state dump taken while a backup runs, loaded into another emulator,
// finishes there: the poll completes and the blob lands in that emulator's storage.
#[tokio::test]
async fn dump_and_load_mid_operation_resumes_it() -> R {
    let t = TestEmulator::start_with_clock(manual_clock(), |c| c.durations.jitter = 0.0).await?;
    t.seed("apim-weu", "westeurope")?;
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.mid");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    let location = header(&r, "location").unwrap();
    t.advance(100);
    let dump = t
        .http
        .get(format!("{}/_emulator/state", t.base()))
        .send()
        .await?
        .text()
        .await?;

    let t2 = TestEmulator::start_with_clock(manual_clock(), |_| {}).await?;
    // A dump whose busy service names no running operation is refused, not loaded as a
    // service stuck in `Updating`.
    let mut orphan: Value = serde_json::from_str(&dump)?;
    orphan["operations"] = json!([]);
    let r = t2
        .http
        .put(format!("{}/_emulator/state", t2.base()))
        .json(&orphan)
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    assert_eq!(
        t2.get(&TestEmulator::service_path("apim-weu")).await?.0,
        404
    );
    let r = t2
        .http
        .put(format!("{}/_emulator/state", t2.base()))
        .header("content-type", "application/json")
        .body(dump)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let moved = location.replace(&t.base(), &t2.base());
    let (_, svc) = t2.get(&TestEmulator::service_path("apim-weu")).await?;
    assert_eq!(svc["properties"]["provisioningState"], "Updating");
    assert_eq!(t2.arm(Method::GET, &moved).send().await?.status(), 202);
    // The remaining 200 s of the 300 s backup.
    t2.advance(199);
    assert_eq!(t2.arm(Method::GET, &moved).send().await?.status(), 202);
    t2.advance(2);
    let (status, svc) = t2.poll_until_done(&moved).await?;
    assert_eq!((status, svc["name"].as_str()), (200, Some("apim-weu")));
    assert!(blob_path(&t2, ACCOUNT, "apim-backups", "apim-weu.mid").is_file());
    assert!(!blob_path(&t, ACCOUNT, "apim-backups", "apim-weu.mid").exists());
    Ok(())
}

// See: review of #3: a body over the 4 MB limit is refused with 413, not read as empty.
#[tokio::test]
async fn oversized_bodies_are_refused_with_413() -> R {
    let t = TestEmulator::start(0.001).await?;
    t.seed("apim-weu", "westeurope")?;
    let big = "x".repeat(5 * 1024 * 1024);
    let r = t
        .arm(
            Method::PUT,
            &format!("{}/apis/big", TestEmulator::service_path("apim-weu")),
        )
        .json(&json!({"properties": {"displayName": big, "path": "big"}}))
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(&body_json(r).await?), "RequestEntityTooLarge");
    Ok(())
}

// Durability. See: the embedded-mode resume flake found at integration (a drsync crash right
// after an `Accepted` checkpoint lost the operation the in-process emulator had accepted).

#[tokio::test]
async fn with_a_state_file_an_accepted_operation_is_on_disk_before_the_answer() -> R {
    let state_dir = tempfile::tempdir()?;
    let state_file = state_dir.path().join("emulator.json");
    let file = state_file.clone();
    let t = TestEmulator::start_with(move |c| {
        c.time_scale = 1.0; // The backup stays running for the whole test.
        c.state_file = Some(file);
    })
    .await?;
    t.seed("apim-weu", "westeurope")?;
    assert!(!state_file.exists(), "seeding in-process is not a request");
    let body = access_key_body(ACCOUNT, ACCOUNT_KEY, "apim-backups", "apim-weu.durable");
    let r = t.post_op("apim-weu", "backup", &body).await?;
    assert_eq!(r.status(), 202);
    // Read the file as the answer arrives: the accepted operation must already be in it, so a
    // process that dies now and reloads the file still finds it.
    let dump: Value = serde_json::from_str(&std::fs::read_to_string(&state_file)?)?;
    let ops = dump["operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 1, "{dump:#}");
    assert_eq!(ops[0]["status"], "Running", "{dump:#}");
    // Reads do not rewrite it.
    let before = std::fs::metadata(&state_file)?.modified()?;
    let (status, _) = t.get(&TestEmulator::service_path("apim-weu")).await?;
    assert_eq!(status, 200);
    assert_eq!(std::fs::metadata(&state_file)?.modified()?, before);
    Ok(())
}
