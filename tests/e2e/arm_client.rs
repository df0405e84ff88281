//! End-to-end: `drsync_arm_client::ArmClient` against the emulator over real sockets: tokens
//! from the emulator's Entra ID endpoint, backup and restore to completion, throttling storms,
//! injected 500/503 and dropped connections (never resent after a backup POST), a token
//! endpoint outage, an expired token mid-operation, and a restore resumed by another client
//! from its serialized poll state.

use std::sync::Arc;
use std::time::Duration;

use drsync_arm_client::{
    ArmClient, ArmClientConfig, BackupAccess, BackupRestoreRequest, ClientSecretCredential, Error,
    LroStart, PollState, ProvisioningState, RetryPolicy, TokenEndpointVersion, Url,
};
use drsync_core::{Clock, Secret, ServiceRef, SubscriptionId, SystemClock};
use drsync_tests::emulator::{
    ACCOUNT, ACCOUNT_KEY, CLIENT_ID, CLIENT_SECRET, EmulatorConfig, FaultConfig, RG, SUB, TENANT,
    TestEmulator,
};

const CONTAINER: &str = "apim-backups";

fn svc(name: &str) -> ServiceRef {
    ServiceRef::new(SubscriptionId::parse(SUB).unwrap(), RG, name).unwrap()
}

fn config(emu: &TestEmulator, limiter: bool) -> ArmClientConfig {
    let mut cfg = ArmClientConfig::new(Url::parse(&emu.base()).unwrap());
    // The emulator answers in milliseconds; Azure's 30 s default would only slow tests down.
    cfg.poller.default_interval = Duration::from_millis(100);
    cfg.retry = RetryPolicy {
        max_attempts: 12,
        max_elapsed: Duration::from_secs(120),
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
        jitter: 0.5,
    };
    cfg.limits.enabled = limiter;
    cfg.jitter_seed = Some(7);
    cfg
}

fn client_with(emu: &TestEmulator, cfg: ArmClientConfig) -> ArmClient {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let authority = Url::parse(&emu.base()).unwrap();
    let credential = ClientSecretCredential::new(
        &authority,
        TENANT,
        CLIENT_ID,
        Secret::new(CLIENT_SECRET),
        TokenEndpointVersion::V2,
        clock.clone(),
    )
    .unwrap();
    ArmClient::new(cfg, Arc::new(credential), clock).unwrap()
}

fn client(emu: &TestEmulator) -> ArmClient {
    client_with(emu, config(emu, true))
}

fn request(backup: &str) -> BackupRestoreRequest {
    BackupRestoreRequest {
        storage_account: ACCOUNT.into(),
        container: CONTAINER.into(),
        backup_name: backup.into(),
        access: BackupAccess::AccessKey(Secret::new(ACCOUNT_KEY)),
    }
}

async fn prepare(emu: &TestEmulator) {
    emu.seed("apim-weu", "westeurope").unwrap();
    emu.seed("apim-neu", "northeurope").unwrap();
    let store = emu.state().store(ACCOUNT).expect("the test account");
    store.create_container(CONTAINER).await.unwrap();
}

async fn run_backup(client: &ArmClient, backup: &str) {
    match client
        .begin_backup(&svc("apim-weu"), &request(backup))
        .await
        .unwrap()
    {
        LroStart::Pending(state) => {
            client.wait(state, |_| {}).await.unwrap();
        }
        LroStart::Done(_) => {}
    }
}

#[tokio::test]
async fn backup_and_restore_complete_and_reads_are_typed() {
    let emu = TestEmulator::start(0.001).await.unwrap();
    prepare(&emu).await;
    let client = client(&emu);

    let weu = client.get_service(&svc("apim-weu")).await.unwrap();
    assert_eq!(weu.name, "apim-weu");
    assert_eq!(weu.provisioning_state, ProvisioningState::Succeeded);
    assert_eq!(weu.sku().unwrap().tier, drsync_core::SkuTier::Premium);
    assert_eq!(weu.service_ref().unwrap(), svc("apim-weu"));

    let all = client
        .list_services(&svc("apim-weu").subscription, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let in_rg = client
        .list_services(&svc("apim-weu").subscription, Some(RG))
        .await
        .unwrap();
    assert_eq!(in_rg.len(), 2);

    let apis = client.list_apis(&svc("apim-weu")).await.unwrap();
    assert!(
        apis.iter().any(|a| a.path.as_deref() == Some("echo")),
        "{apis:?}"
    );
    let products = client.list_products(&svc("apim-weu")).await.unwrap();
    assert!(products.iter().any(|p| p.name == "starter"), "{products:?}");
    let named = client.list_named_values(&svc("apim-weu")).await.unwrap();
    assert!(
        named.iter().all(|n| !n.secret || n.value.is_none()),
        "{named:?}"
    );
    let before = client.sync_state(&svc("apim-weu")).await.unwrap();

    // Backup: POST, poll, done; the blob is where the key-based access put it.
    let backup = "apim-weu.20261127T120000Z.0a1b2c3d";
    let LroStart::Pending(state) = client
        .begin_backup(&svc("apim-weu"), &request(backup))
        .await
        .unwrap()
    else {
        panic!("the emulator answers 202 to a backup")
    };
    let mut seen = Vec::new();
    let done = client.wait(state, |s| seen.push(s.polls)).await.unwrap();
    assert_eq!(done.name, "apim-weu");
    assert_eq!(done.provisioning_state, ProvisioningState::Succeeded);
    let blob = emu
        .state()
        .store(ACCOUNT)
        .unwrap()
        .head(CONTAINER, backup)
        .await
        .unwrap();
    assert!(blob.is_some_and(|b| b.size > 0));

    // Restore into the standby.
    let LroStart::Pending(state) = client
        .begin_restore(&svc("apim-neu"), &request(backup))
        .await
        .unwrap()
    else {
        panic!("the emulator answers 202 to a restore")
    };
    let restored = client.wait(state, |_| {}).await.unwrap();
    assert_eq!(restored.name, "apim-neu");
    let neu_apis = client.list_apis(&svc("apim-neu")).await.unwrap();
    assert_eq!(neu_apis.len(), apis.len());
    assert!(
        client
            .sync_state(&svc("apim-weu"))
            .await
            .unwrap()
            .configuration_change_date
            >= before.configuration_change_date
    );

    assert_eq!(emu.count("backup-post"), 1);
    assert_eq!(emu.count("restore-post"), 1);
    assert_eq!(emu.count("token-v2"), 1, "one token for the whole session");
    let m = client.metrics();
    assert_eq!(m.token_fetches, 1);
    assert_eq!(m.throttled_429, 0);
}

#[tokio::test]
async fn azure_async_operation_headers_are_followed_too() {
    let emu = TestEmulator::start_with(|c| c.async_operation_header = true)
        .await
        .unwrap();
    prepare(&emu).await;
    let client = client(&emu);
    let LroStart::Pending(state) = client
        .begin_backup(
            &svc("apim-weu"),
            &request("apim-weu.20261127T120000Z.aaaaaaaa"),
        )
        .await
        .unwrap()
    else {
        panic!("202 expected")
    };
    assert_eq!(state.kind, drsync_arm_client::PollKind::AzureAsyncOperation);
    let done = client.wait(state, |_| {}).await.unwrap();
    assert_eq!(done.name, "apim-weu");
    assert!(emu.count("async-poll") >= 1);
}

/// Fires `n` reads at once and returns the client's metrics.
async fn storm(emu: &TestEmulator, limiter: bool, n: usize) -> drsync_arm_client::MetricsSnapshot {
    let mut cfg = config(emu, limiter);
    // The client's limits match the emulator's (small) buckets below.
    cfg.limits.reads_per_second = 20.0;
    cfg.limits.read_burst = 20;
    let client = client_with(emu, cfg);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get_service(&svc("apim-weu")).await })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(
            got.is_ok(),
            "no operation may fail in a throttling storm: {got:?}"
        );
    }
    client.metrics()
}

#[tokio::test]
async fn a_429_storm_is_absorbed_with_and_without_the_limiter() {
    let small = |c: &mut EmulatorConfig| {
        c.throttle.read_bucket = 20;
        c.throttle.read_refill_per_sec = 20.0;
    };
    let emu_off = TestEmulator::start_with(small).await.unwrap();
    emu_off.seed("apim-weu", "westeurope").unwrap();
    let off = storm(&emu_off, false, 80).await;
    let emu_on = TestEmulator::start_with(small).await.unwrap();
    emu_on.seed("apim-weu", "westeurope").unwrap();
    let on = storm(&emu_on, true, 80).await;
    println!(
        "429 storm, 80 concurrent reads against a 20-request bucket refilling 20/s: \
         limiter off: {} x 429 in {} requests; limiter on: {} x 429 in {} requests",
        off.throttled_429, off.requests_sent, on.throttled_429, on.requests_sent
    );
    assert!(
        off.throttled_429 > 0,
        "the storm must actually throttle: {off:?}"
    );
    assert!(
        on.throttled_429 < off.throttled_429,
        "off {off:?} / on {on:?}"
    );
    assert_eq!(
        on.requests_sent,
        80 + on.throttled_429 + on.server_errors + on.transport_errors
    );
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_retried() {
    let emu = TestEmulator::start(0.001).await.unwrap();
    prepare(&emu).await;
    let client = client(&emu);
    client.get_service(&svc("apim-weu")).await.unwrap(); // Token fetched before the faults.
    emu.state()
        .set_faults(FaultConfig {
            status_500: 0.15,
            status_503: 0.15,
            drop_connection: 0.1,
            ..FaultConfig::default()
        })
        .unwrap();
    for _ in 0..15 {
        client.get_service(&svc("apim-weu")).await.unwrap();
        client.list_apis(&svc("apim-weu")).await.unwrap();
    }
    let m = client.metrics();
    println!("with 40% of requests failing: {m:?}");
    assert!(m.server_errors > 0 && m.transport_errors > 0, "{m:?}");
    assert_eq!(m.retries, m.server_errors + m.transport_errors);
    let faulted = emu
        .request_log()
        .iter()
        .filter(|r| r.status == 0 || r.status >= 500)
        .count() as u64;
    assert_eq!(faulted, m.server_errors + m.transport_errors);
}

#[tokio::test]
async fn a_backup_post_whose_fate_is_unknown_is_never_resent() {
    let emu = TestEmulator::start(0.001).await.unwrap();
    prepare(&emu).await;
    let client = client(&emu);
    client.get_service(&svc("apim-weu")).await.unwrap();

    emu.state()
        .set_faults(FaultConfig {
            drop_connection: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let err = client
        .begin_backup(
            &svc("apim-weu"),
            &request("apim-weu.20261127T120000Z.bbbbbbbb"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
    assert!(err.may_have_been_sent());
    assert!(!err.is_retryable());
    assert_eq!(emu.count("backup-post"), 1, "sent exactly once");
    assert!(!err.to_string().contains(ACCOUNT_KEY));

    // A 500 may come after ARM accepted the operation: not resent either.
    emu.state()
        .set_faults(FaultConfig {
            status_500: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let err = client
        .begin_backup(
            &svc("apim-weu"),
            &request("apim-weu.20261127T120000Z.bbbbbbbc"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
    assert!(
        err.to_string().contains("HTTP 500 InternalServerError"),
        "{err}"
    );
    assert_eq!(emu.count("backup-post"), 2, "the second backup sent once");

    // A 503 is a definite refusal: the POST is retried, then reported with the ARM code.
    emu.state()
        .set_faults(FaultConfig {
            status_503: 1.0,
            ..FaultConfig::default()
        })
        .unwrap();
    let mut cfg = config(&emu, true);
    cfg.retry.max_attempts = 3;
    let short = client_with(&emu, cfg);
    let err = short
        .begin_restore(&svc("apim-neu"), &request("nope"))
        .await
        .unwrap_err();
    let Error::Arm {
        status,
        body,
        attempts,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (*status, body.code.as_str(), *attempts),
        (503, "ServiceUnavailable", 3)
    );
    assert_eq!(emu.count("restore-post"), 3);
}

#[tokio::test]
async fn a_token_endpoint_outage_is_ridden_out() {
    let emu = TestEmulator::start(0.001).await.unwrap();
    prepare(&emu).await;
    emu.state()
        .set_faults(FaultConfig {
            token_endpoint_down: true,
            ..FaultConfig::default()
        })
        .unwrap();
    let client = client(&emu);
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.get_service(&svc("apim-weu")).await })
    };
    // Entra ID answers 503 until it recovers; the call waits instead of failing.
    // (A client that gave up at once would end the call: then the unwrap below reports it.)
    while emu.count("token-v2") < 2 && !call.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.state().set_faults(FaultConfig::default()).unwrap();
    let svc = call.await.unwrap().unwrap();
    assert_eq!(svc.name, "apim-weu");
    let m = client.metrics();
    assert!(m.token_fetches >= 3 && m.transport_errors >= 2, "{m:?}");
    assert_eq!(m.requests_sent, 1, "ARM saw one request: {m:?}");
}

#[tokio::test]
async fn an_expired_token_is_refreshed_mid_operation() {
    // Backups take 3 s of emulator time at this scale; the clock jump below ends it.
    let emu = TestEmulator::start(0.01).await.unwrap();
    prepare(&emu).await;
    let client = client(&emu);
    let LroStart::Pending(state) = client
        .begin_backup(
            &svc("apim-weu"),
            &request("apim-weu.20261127T120000Z.cccccccc"),
        )
        .await
        .unwrap()
    else {
        panic!("202 expected")
    };
    // Two hours pass on the emulator: the cached token (one hour) has expired there, although
    // the client's own clock says it is fresh. The next poll gets 401 and must recover.
    emu.advance(7200);
    let done = client.wait(state, |_| {}).await.unwrap();
    assert_eq!(done.name, "apim-weu");
    let m = client.metrics();
    assert_eq!(m.unauthorized_401, 1, "{m:?}");
    assert_eq!(m.token_fetches, 2, "{m:?}");
    assert_eq!(emu.count("token-v2"), 2);
    let expired = emu
        .request_log()
        .iter()
        .filter(|r| r.error_code.as_deref() == Some("ExpiredAuthenticationToken"))
        .count();
    assert_eq!(expired, 1);
}

#[tokio::test]
async fn a_restore_resumes_in_a_new_client_without_a_second_post() {
    let emu = TestEmulator::start(0.002).await.unwrap();
    prepare(&emu).await;
    let backup = "apim-weu.20261127T120000Z.dddddddd";
    run_backup(&client(&emu), backup).await;

    let first = client(&emu);
    let LroStart::Pending(state) = first
        .begin_restore(&svc("apim-neu"), &request(backup))
        .await
        .unwrap()
    else {
        panic!("202 expected")
    };
    // Poll once, checkpoint, and drop the client (as a crash would).
    let state = match first.poll_once(&state).await.unwrap() {
        drsync_arm_client::PollStep::Pending(s) => s,
        drsync_arm_client::PollStep::Done(_) => panic!("a restore takes seconds at this scale"),
    };
    let checkpoint = serde_json::to_string(&state).unwrap();
    assert!(!checkpoint.contains(ACCOUNT_KEY) && !checkpoint.contains(CLIENT_SECRET));
    drop(first);

    let second = client(&emu);
    let resumed: PollState = serde_json::from_str(&checkpoint).unwrap();
    let done = second.wait(resumed, |_| {}).await.unwrap();
    assert_eq!(done.name, "apim-neu");
    assert_eq!(
        emu.count("restore-post"),
        1,
        "the restore was POSTed exactly once"
    );
    assert!(emu.count("poll") >= 2);
}

#[tokio::test]
async fn listings_follow_next_links() {
    let emu = TestEmulator::start_with(|c| c.page_size = 2).await.unwrap();
    for i in 0..5 {
        emu.seed(&format!("apim-{i}"), "westeurope").unwrap();
    }
    let client = client(&emu);
    let mut names: Vec<String> = client
        .list_services(&svc("apim-0").subscription, None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    assert_eq!(names, ["apim-0", "apim-1", "apim-2", "apim-3", "apim-4"]);
    assert_eq!(emu.count("service-list"), 3);
}

async fn reads_with(
    emu: &TestEmulator,
    credential: Arc<dyn drsync_arm_client::TokenCredential>,
) -> Result<(), Error> {
    let client = ArmClient::new(config(emu, true), credential, Arc::new(SystemClock))?;
    client.get_service(&svc("apim-weu")).await.map(|_| ())
}

#[tokio::test]
async fn every_credential_kind_gets_a_working_token() {
    let emu = TestEmulator::start(0.001).await.unwrap();
    emu.seed("apim-weu", "westeurope").unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let authority = Url::parse(&emu.base()).unwrap();
    let secret = |s: &str| Secret::new(s);

    // Client secret, v1 endpoint (string-typed numbers).
    let v1 = ClientSecretCredential::new(
        &authority,
        TENANT,
        CLIENT_ID,
        secret(CLIENT_SECRET),
        TokenEndpointVersion::V1,
        clock.clone(),
    )
    .unwrap();
    reads_with(&emu, Arc::new(v1)).await.unwrap();
    assert_eq!(emu.count("token-v1"), 1);

    // Managed identity, through the emulator's IMDS-like endpoint.
    let imds = Url::parse(&format!("{}/metadata/identity/oauth2/token", emu.base())).unwrap();
    let mi =
        drsync_arm_client::ManagedIdentityCredential::new(Some(imds), None, clock.clone()).unwrap();
    reads_with(&emu, Arc::new(mi)).await.unwrap();
    assert_eq!(emu.count("managed-identity-token"), 1);

    // A static token.
    let minted = emu.emu.mint_token(Duration::from_secs(600));
    let fixed = drsync_arm_client::StaticTokenCredential::new(
        minted.token.clone(),
        Some(minted.expires_on),
    );
    reads_with(&emu, Arc::new(fixed)).await.unwrap();

    // The Azure CLI: a stand-in `az` printing what `az account get-access-token` prints.
    let dir = tempfile::tempdir().unwrap();
    let az = dir.path().join("az");
    let out = serde_json::json!({
        "accessToken": minted.token.expose(),
        "expires_on": minted.expires_on.timestamp(),
        "tokenType": "Bearer",
    });
    std::fs::write(&az, format!("#!/bin/sh\ncat <<'JSON'\n{out}\nJSON\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cli = drsync_arm_client::AzureCliCredential::new(None).with_program(az.to_string_lossy());
    reads_with(&emu, Arc::new(cli)).await.unwrap();

    // A wrong secret: a credential error naming Entra's code, never the secret.
    let wrong = ClientSecretCredential::new(
        &authority,
        TENANT,
        CLIENT_ID,
        secret("wrong-secret-123"),
        TokenEndpointVersion::V2,
        clock.clone(),
    )
    .unwrap();
    let err = reads_with(&emu, Arc::new(wrong)).await.unwrap_err();
    assert!(matches!(err, Error::Credential { .. }), "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("wrong-secret-123"), "{err}");
    assert!(!err.may_have_been_sent());

    // A static token the server does not know: 401, retried once, then reported.
    let bogus = drsync_arm_client::StaticTokenCredential::new(secret("not-a-token"), None);
    let err = reads_with(&emu, Arc::new(bogus)).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(err.arm_code(), Some("InvalidAuthenticationToken"));
}

#[tokio::test]
async fn named_values_are_created_and_replaced_and_services_deleted() {
    let emu = TestEmulator::start(0.001).await.unwrap();
    prepare(&emu).await;
    let client = client(&emu);
    let stg = svc("apim-neu");
    let secret = Secret::new("nv-Secret-81f3");

    // Created (201), then replaced (200) under the same name, whatever its case.
    let nv = client
        .put_named_value(
            &stg,
            "backend-url",
            "backend-url",
            &Secret::new("https://a"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        (nv.name.as_str(), nv.value.as_deref(), nv.secret),
        ("backend-url", Some("https://a"), false)
    );
    let nv = client
        .put_named_value(&stg, "Backend-URL", "Backend", &secret, true)
        .await
        .unwrap();
    assert_eq!(nv.name, "backend-url");
    assert_eq!(nv.display_name.as_deref(), Some("Backend"));
    assert!(nv.secret);
    assert_eq!(nv.value, None, "a secret's value is not returned");
    let listed = client.list_named_values(&stg).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].value, None);
    // The emulator stored exactly what was sent.
    let config = emu.state().configuration(SUB, RG, "apim-neu").unwrap();
    assert_eq!(
        config.named_values["backend-url"],
        serde_json::json!({"displayName": "Backend", "value": "nv-Secret-81f3", "secret": true})
    );
    let puts: Vec<_> = emu
        .emu
        .request_log()
        .into_iter()
        .filter(|r| r.kind == "child-put")
        .collect();
    assert_eq!(puts.len(), 2);
    assert!(!format!("{puts:?}").contains("nv-Secret-81f3"));

    // A missing service is an error that names the call, never the value.
    let err = client
        .put_named_value(&svc("apim-nope"), "k", "k", &secret, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("put named value"), "{err}");
    assert!(!err.to_string().contains("nv-Secret-81f3"));

    // Deleted; deleting again (nothing left) succeeds too.
    client.delete_service(&stg).await.unwrap();
    assert!(emu.state().configuration(SUB, RG, "apim-neu").is_none());
    let err = client.get_service(&stg).await.unwrap_err();
    assert!(matches!(err, Error::Arm { status: 404, .. }), "{err}");
    client.delete_service(&stg).await.unwrap();
    assert!(emu.state().configuration(SUB, RG, "apim-weu").is_some());
}
