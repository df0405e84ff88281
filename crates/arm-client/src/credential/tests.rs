//! Token-response shapes, token-cache refresh edges and single flight, request building for
//! every credential kind, redaction, and redirects from a token endpoint (over a loopback
//! socket).

use super::*;
use drsync_core::ManualClock;
use std::sync::Mutex;

fn t0() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

fn mins(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

/// The token the cache hands out for `scope`, as text.
async fn tok(cache: &TokenCache, scope: &str) -> String {
    cache
        .get_token(scope)
        .await
        .unwrap()
        .token
        .expose()
        .to_owned()
}

#[test]
fn token_responses_in_every_shape() {
    let now = t0();
    // v2.0: integer expires_in.
    let v2 = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ.v2"}"#;
    let t = parse_token_response(v2, now).unwrap();
    assert_eq!(t.token.expose(), "eyJ.v2");
    assert_eq!(t.expires_on, now + chrono::Duration::seconds(3599));
    // v1: strings, expires_on wins.
    let v1 = br#"{"token_type":"Bearer","expires_in":"3599","expires_on":"1795780800","resource":"https://management.azure.com/","access_token":"eyJ.v1"}"#;
    let t = parse_token_response(v1, now).unwrap();
    assert_eq!(
        t.expires_on,
        chrono::Utc.timestamp_opt(1_795_780_800, 0).unwrap()
    );
    // v1 with only a string expires_in.
    let t = parse_token_response(br#"{"access_token":"a","expires_in":"60"}"#, now).unwrap();
    assert_eq!(t.expires_on, now + chrono::Duration::seconds(60));
    // IMDS: all strings.
    let imds = br#"{"access_token":"eyJ.mi","client_id":"c","expires_in":"86399","expires_on":"1795867199","ext_expires_in":"86399","not_before":"1795780499","resource":"https://management.azure.com/","token_type":"Bearer"}"#;
    assert_eq!(
        parse_token_response(imds, now).unwrap().token.expose(),
        "eyJ.mi"
    );

    for (bad, why) in [
        (&br#"{"expires_in":5}"#[..], "no access_token"),
        (br#"{"access_token":"","expires_in":5}"#, "no access_token"),
        (br#"{"access_token":"a"}"#, "neither"),
        (br#"{"access_token":"a","expires_in":"soon"}"#, "neither"),
        (b"<html>", "not JSON"),
    ] {
        let err = parse_token_response(bad, now).unwrap_err();
        assert!(err.contains(why), "{err}");
    }
}

#[test]
fn token_errors_keep_the_code_not_the_secret() {
    let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}"#;
    assert_eq!(
        token_error_message(401, body),
        "HTTP 401 invalid_client: AADSTS7000215: Invalid client secret provided."
    );
    assert_eq!(token_error_message(503, b""), "HTTP 503");
}

#[test]
fn scopes_become_resources() {
    assert_eq!(
        scope_to_resource(ARM_SCOPE),
        "https://management.azure.com/"
    );
    assert_eq!(
        scope_to_resource(STORAGE_SCOPE),
        "https://storage.azure.com/"
    );
    assert_eq!(
        scope_to_resource("https://vault.azure.net"),
        "https://vault.azure.net/"
    );
}

#[test]
fn client_secret_requests_go_to_the_authority_host_only() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0()));
    let authority = Url::parse(DEFAULT_AUTHORITY_HOST).unwrap();
    let secret = Secret::new("s3cr3t-value");
    let v2 = ClientSecretCredential::new(
        &authority,
        "contoso.onmicrosoft.com",
        "app",
        secret.clone(),
        TokenEndpointVersion::V2,
        clock.clone(),
    )
    .unwrap();
    assert_eq!(
        v2.token_url().as_str(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(
        v2.form(ARM_SCOPE),
        [
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", "app".to_owned()),
            ("client_secret", "s3cr3t-value".to_owned()),
            ("scope", ARM_SCOPE.to_owned()),
        ]
    );
    let v1 = ClientSecretCredential::new(
        &authority,
        "t",
        "app",
        secret.clone(),
        TokenEndpointVersion::V1,
        clock.clone(),
    )
    .unwrap();
    assert_eq!(
        v1.token_url().as_str(),
        "https://login.microsoftonline.com/t/oauth2/token"
    );
    assert_eq!(
        v1.form(ARM_SCOPE)[3],
        ("resource", "https://management.azure.com/".to_owned())
    );

    // An authority with a path keeps it; the emulator's loopback authority is allowed.
    let local = Url::parse("http://127.0.0.1:4000/login").unwrap();
    let c = ClientSecretCredential::new(
        &local,
        "t",
        "app",
        secret.clone(),
        TokenEndpointVersion::V2,
        clock.clone(),
    )
    .unwrap();
    assert_eq!(
        c.token_url().as_str(),
        "http://127.0.0.1:4000/login/t/oauth2/v2.0/token"
    );

    // Never a secret over plain HTTP to a real host; tenants cannot smuggle paths or hosts.
    let plain = Url::parse("http://login.microsoftonline.com").unwrap();
    let err = ClientSecretCredential::new(
        &plain,
        "t",
        "app",
        secret.clone(),
        TokenEndpointVersion::V2,
        clock.clone(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InsecureUrl { .. }), "{err}");
    for tenant in ["", "../evil", "a/b", "evil.com/x?", "t@evil.com"] {
        let r = ClientSecretCredential::new(
            &authority,
            tenant,
            "app",
            secret.clone(),
            TokenEndpointVersion::V2,
            clock.clone(),
        );
        assert!(r.is_err(), "{tenant}");
    }

    let dbg = format!("{v2:?}");
    assert!(!dbg.contains("s3cr3t"), "{dbg}");
}

#[test]
fn managed_identity_requests() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0()));
    let mi = ManagedIdentityCredential::new(None, None, clock.clone()).unwrap();
    assert_eq!(
        mi.request_url(ARM_SCOPE).as_str(),
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
    );
    let local = Url::parse("http://127.0.0.1:9999/msi/token").unwrap();
    let ua =
        ManagedIdentityCredential::new(Some(local), Some("cid".into()), clock.clone()).unwrap();
    assert!(
        ua.request_url(STORAGE_SCOPE)
            .as_str()
            .ends_with("resource=https%3A%2F%2Fstorage.azure.com%2F&client_id=cid")
    );
    let bad = Url::parse("http://10.1.2.3/token").unwrap();
    assert!(ManagedIdentityCredential::new(Some(bad), None, clock).is_err());
}

#[test]
fn azure_cli_output() {
    let utc = chrono::Utc;
    let new_cli = r#"{"accessToken":"eyJ.cli","expiresOn":"2026-11-27 13:00:00.000000","expires_on":1795784400,"subscription":"s","tenant":"t","tokenType":"Bearer"}"#;
    let t = parse_cli_output(new_cli, &utc).unwrap();
    assert_eq!(t.token.expose(), "eyJ.cli");
    assert_eq!(
        t.expires_on,
        chrono::Utc.timestamp_opt(1_795_784_400, 0).unwrap()
    );
    // Older CLIs: only a local time. Read in the given zone (UTC+2 here).
    let old_cli = r#"{"accessToken":"eyJ.old","expiresOn":"2026-11-27 14:00:00.123456","tokenType":"Bearer"}"#;
    let plus2 = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
    let t = parse_cli_output(old_cli, &plus2).unwrap();
    assert_eq!(
        t.expires_on,
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .unwrap()
            + chrono::Duration::microseconds(123_456)
    );
    assert!(parse_cli_output("ERROR: Please run 'az login'", &utc).is_err());
    assert!(parse_cli_output(r#"{"accessToken":"x","expiresOn":"tomorrow"}"#, &utc).is_err());
    let cli = AzureCliCredential::new(Some("contoso".into()));
    assert_eq!(
        cli.args(ARM_SCOPE).join(" "),
        "account get-access-token --output json --scope https://management.azure.com/.default --tenant contoso"
    );
}

#[tokio::test]
async fn a_missing_cli_is_a_clear_error() {
    let cli = AzureCliCredential::new(None).with_program("definitely-not-az-drsync");
    let err = cli.get_token(ARM_SCOPE).await.unwrap_err().to_string();
    assert!(err.contains("not on PATH"), "{err}");
}

#[test]
fn refresh_instants() {
    let t = t0();
    // A one-hour token is refreshed 5 minutes before expiry.
    assert_eq!(refresh_at(t, t + mins(60)), t + mins(55));
    // A 4-minute token half-way through its life, not at once.
    assert_eq!(refresh_at(t, t + mins(4)), t + mins(2));
    // Exactly 10 minutes: both rules agree.
    assert_eq!(refresh_at(t, t + mins(10)), t + mins(5));
    // Already expired: now.
    assert_eq!(refresh_at(t, t - mins(1)), t);
    // Never expiring: no overflow.
    let max = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    assert_eq!(
        refresh_at(t, max),
        max - chrono::Duration::from_std(REFRESH_MARGIN).unwrap()
    );
}

/// A credential that hands out `tok-1`, `tok-2`, ... valid for `lifetime`, optionally slowly,
/// or fails when told to.
#[derive(Debug)]
struct Counting {
    clock: Arc<ManualClock>,
    lifetime: chrono::Duration,
    calls: Mutex<u32>,
    fail: Mutex<bool>,
    delay: Duration,
}

impl Counting {
    fn new(clock: Arc<ManualClock>, lifetime: chrono::Duration) -> Self {
        Self {
            clock,
            lifetime,
            calls: Mutex::new(0),
            fail: Mutex::new(false),
            delay: Duration::ZERO,
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for Counting {
    async fn get_token(&self, _scope: &str) -> Result<AccessToken> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if *self.fail.lock().unwrap() {
            return Err(Error::Credential {
                source_name: "test".into(),
                message: "down".into(),
                transient: true,
            });
        }
        let n = {
            let mut c = self.calls.lock().unwrap();
            *c += 1;
            *c
        };
        Ok(AccessToken {
            token: Secret::new(format!("tok-{n}")),
            expires_on: self.clock.now() + self.lifetime,
        })
    }
}

/// A cache over a [`Counting`] credential of one-hour tokens, on a manual clock.
fn counting_cache() -> (Arc<ManualClock>, Arc<Counting>, TokenCache) {
    let clock = Arc::new(ManualClock::new(t0()));
    let inner = Arc::new(Counting::new(clock.clone(), mins(60)));
    let cache = TokenCache::new(inner.clone(), clock.clone());
    (clock, inner, cache)
}

#[tokio::test]
async fn cache_refreshes_five_minutes_before_expiry() {
    let (clock, _inner, cache) = counting_cache();
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-1");
    clock.advance(mins(55) - chrono::Duration::seconds(1));
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-1");
    // Exactly at the refresh instant: a new token.
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-2");
    assert_eq!(cache.fetch_count(), 2);
    // Scopes are cached separately.
    assert_eq!(tok(&cache, STORAGE_SCOPE).await, "tok-3");
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-2");
}

#[tokio::test]
async fn a_failed_refresh_keeps_a_still_valid_token_until_it_expires() {
    let (clock, inner, cache) = counting_cache();
    cache.get_token(ARM_SCOPE).await.unwrap();
    *inner.fail.lock().unwrap() = true;
    clock.advance(mins(57));
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-1");
    clock.advance(mins(3));
    let err = cache.get_token(ARM_SCOPE).await.unwrap_err();
    assert!(matches!(err, Error::Credential { .. }), "{err}");
    *inner.fail.lock().unwrap() = false;
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-2");
}

#[tokio::test]
async fn invalidate_drops_only_the_rejected_token() {
    let (_clock, _inner, cache) = counting_cache();
    let first = cache.get_token(ARM_SCOPE).await.unwrap();
    cache.invalidate(ARM_SCOPE, &first).await;
    let second = cache.get_token(ARM_SCOPE).await.unwrap();
    assert_eq!(second.token.expose(), "tok-2");
    // A late 401 for the old token must not drop the new one.
    cache.invalidate(ARM_SCOPE, &first).await;
    assert_eq!(tok(&cache, ARM_SCOPE).await, "tok-2");
    assert_eq!(cache.fetch_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_one_request_for_many_callers() {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut slow = Counting::new(clock.clone(), mins(60));
    slow.delay = Duration::from_millis(50);
    let cache = Arc::new(TokenCache::new(Arc::new(slow), clock.clone()));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_token(ARM_SCOPE)
                    .await
                    .unwrap()
                    .token
                    .expose()
                    .to_owned()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "tok-1");
    }
    assert_eq!(cache.fetch_count(), 1);
}

#[test]
fn tokens_never_print() {
    let t = AccessToken {
        token: Secret::new("eyJhbGciOi.secret"),
        expires_on: t0(),
    };
    let dbg = format!("{t:?}");
    assert!(!dbg.contains("eyJ"), "{dbg}");
    let s = StaticTokenCredential::new(Secret::new("eyJhbGciOi.secret"), None);
    assert!(!format!("{s:?}").contains("eyJ"));
}

// See: #4. A server's absurd `expires_in` is an error, not an overflow panic.
#[test]
fn absurd_expiry_values_are_errors() {
    let now = t0();
    for body in [
        &br#"{"access_token":"a","expires_in":9223372036854775807}"#[..],
        br#"{"access_token":"a","expires_in":"-9223372036854775808"}"#,
        br#"{"access_token":"a","expires_on":"9223372036854775807"}"#,
    ] {
        let err = parse_token_response(body, now).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
    }
}

// See: #4. A token endpoint answering with a redirect does not get the client secret re-posted
// elsewhere.
#[tokio::test]
async fn token_endpoints_redirecting_elsewhere_are_not_followed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_url = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = reached.clone();
    tokio::spawn(async move {
        if elsewhere.accept().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let authority = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority_url = Url::parse(&format!("http://{}", authority.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = authority.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let resp = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere_url}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        sock.write_all(resp.as_bytes()).await.unwrap();
    });
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0()));
    let cred = ClientSecretCredential::new(
        &authority_url,
        "t",
        "app",
        Secret::new("s3cr3t-value"),
        TokenEndpointVersion::V2,
        clock,
    )
    .unwrap();
    let err = cred.get_token(ARM_SCOPE).await.unwrap_err();
    assert!(matches!(err, Error::Credential { .. }), "{err}");
    assert!(err.to_string().contains("HTTP 307"), "{err}");
    tokio::task::yield_now().await;
    assert!(!reached.load(Ordering::SeqCst), "the redirect was followed");
}

#[test]
fn token_errors_and_cli_messages_are_redacted() {
    let body = br#"{"error":"invalid_request","error_description":"AADSTS900144: bad request client_secret=abc123 Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig"}"#;
    let msg = token_error_message(400, body);
    assert!(!msg.contains("abc123") && !msg.contains("eyJ"), "{msg}");
    assert!(msg.contains("AADSTS900144"), "{msg}");
}
