//! Microsoft Entra ID access tokens.
//!
//! One trait, [`TokenCredential`], and its implementations:
//! - [`ClientSecretCredential`]: a service principal's client secret, against the v2.0
//!   (`/oauth2/v2.0/token`, `scope=`) or v1 (`/oauth2/token`, `resource=`) endpoint of the
//!   configured authority host (the only host the secret is ever sent to);
//! - [`ManagedIdentityCredential`]: the instance metadata service (IMDS), at a configurable
//!   address so tests can point it at the emulator;
//! - [`AzureCliCredential`]: `az account get-access-token --output json`;
//! - [`StaticTokenCredential`]: a token handed in (the emulator, a pipeline's own token).
//!
//! [`TokenCache`] wraps any of them: it refreshes 5 minutes before expiry (as the Azure SDKs
//! do; earlier for short-lived tokens), makes one token request however many callers wait
//! (single flight), and drops a token that a server rejected with 401.
//!
//! Token responses are parsed by pure functions ([`parse_token_response`],
//! [`parse_cli_output`]); the credentials only move bytes. Tokens are [`Secret`]s: they never
//! appear in `Debug`, `Display`, errors or logs.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::TimeZone;
use drsync_core::{Clock, Secret, Timestamp};
use tracing::Instrument as _;
use url::Url;

use crate::error::{Error, Result, redact};
use crate::security::{check_credential_url, harden, is_loopback};

#[cfg(test)]
mod tests;

/// The scope of Azure Resource Manager tokens.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// The scope of Azure Storage data-plane tokens.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// The default Entra ID authority host (the public cloud).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The instance metadata service's token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// How long before expiry the cache fetches a new token: 5 minutes, as the Azure SDKs do.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How long a token request may take before it is abandoned.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A bearer token and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The token. Never printed.
    pub token: Secret,
    /// When it stops being accepted.
    pub expires_on: Timestamp,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// Something that can produce Entra ID access tokens for a scope.
#[async_trait::async_trait]
pub trait TokenCredential: Send + Sync + fmt::Debug {
    /// A token for `scope` (for example [`ARM_SCOPE`]). Implementations do not cache; wrap
    /// them in a [`TokenCache`].
    async fn get_token(&self, scope: &str) -> Result<AccessToken>;
}

/// The v1 `resource` (and IMDS `resource`) for a v2.0 scope: `https://management.azure.com/.default`
/// becomes `https://management.azure.com/`.
pub fn scope_to_resource(scope: &str) -> String {
    let base = scope.strip_suffix("/.default").unwrap_or(scope);
    if base.ends_with('/') {
        base.to_owned()
    } else {
        format!("{base}/")
    }
}

fn json_number_or_string(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The non-empty string field `name` of a token answer, as a [`Secret`].
fn token_field(v: &serde_json::Value, name: &str) -> Option<Secret> {
    v.get(name)
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(Secret::new)
}

/// `expires_on` in epoch seconds (a number or a string), if the answer has one.
fn expires_on_field(v: &serde_json::Value) -> Option<std::result::Result<Timestamp, String>> {
    let on = json_number_or_string(v.get("expires_on"))?;
    Some(
        chrono::Utc
            .timestamp_opt(on, 0)
            .single()
            .ok_or_else(|| "expires_on is out of range".to_owned()),
    )
}

/// Parses a token endpoint's JSON answer: Entra ID v2.0 (`expires_in` an integer), v1 and IMDS
/// (numbers as strings, `expires_on` in epoch seconds). `expires_on` wins over
/// `expires_in` when both are present. `now` is when the request was made.
pub fn parse_token_response(
    body: &[u8],
    now: Timestamp,
) -> std::result::Result<AccessToken, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the token response is not JSON: {e}"))?;
    let token = token_field(&v, "access_token").ok_or("the token response has no access_token")?;
    let expires_on = if let Some(on) = expires_on_field(&v) {
        on?
    } else if let Some(secs) = json_number_or_string(v.get("expires_in")) {
        // Checked: a server's absurd `expires_in` is an error, not an overflow panic.
        chrono::Duration::try_seconds(secs)
            .and_then(|d| now.checked_add_signed(d))
            .ok_or("expires_in is out of range")?
    } else {
        return Err("the token response has neither expires_on nor expires_in".into());
    };
    Ok(AccessToken { token, expires_on })
}

/// Parses an Entra ID error answer (`error`, `error_description`) into one line. The
/// description's first line only: it never contains the secret, but it can be long.
fn token_error_message(status: u16, body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let code = v.get("error").and_then(|e| e.as_str()).unwrap_or("");
    let desc = v
        .get("error_description")
        .and_then(|e| e.as_str())
        .and_then(|d| d.lines().next())
        .unwrap_or("");
    if code.is_empty() && desc.is_empty() {
        format!("HTTP {status}")
    } else {
        redact(&format!("HTTP {status} {code}: {desc}"))
    }
}

/// The HTTP client of a credential that talks to `url`: no redirects (a `307` would re-post
/// the client secret wherever it points), no proxy for plain-HTTP (loopback, IMDS) hosts.
fn http_client(url: &Url) -> Result<reqwest::Client> {
    harden(
        reqwest::Client::builder().timeout(TOKEN_REQUEST_TIMEOUT),
        url,
    )
    .build()
    .map_err(|e| Error::InvalidConfig(format!("cannot build an HTTP client: {e}")))
}

fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 256
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

async fn send_token_request(
    source_name: &str,
    req: reqwest::RequestBuilder,
    clock: &dyn Clock,
) -> Result<AccessToken> {
    let cred_err = |message: String, transient: bool| Error::Credential {
        source_name: source_name.into(),
        message,
        transient,
    };
    let now = clock.now();
    let resp = req
        .send()
        .await
        .map_err(|e| cred_err(format!("request failed: {}", e.without_url()), true))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| cred_err(format!("reading the answer: {}", e.without_url()), true))?;
    if !(200..300).contains(&status) {
        let transient = matches!(status, 408 | 429 | 500..=599);
        return Err(cred_err(token_error_message(status, &body), transient));
    }
    parse_token_response(&body, now).map_err(|m| cred_err(m, false))
}

/// Which Entra ID token endpoint a [`ClientSecretCredential`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointVersion {
    /// `/{tenant}/oauth2/v2.0/token` with `scope=`.
    V2,
    /// `/{tenant}/oauth2/token` with `resource=`.
    V1,
}

/// A service principal authenticating with a client secret.
pub struct ClientSecretCredential {
    token_url: Url,
    version: TokenEndpointVersion,
    client_id: String,
    client_secret: Secret,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ClientSecretCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretCredential")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish()
    }
}

impl ClientSecretCredential {
    /// A credential for `client_id` in `tenant`, asking `authority_host` (for example
    /// [`DEFAULT_AUTHORITY_HOST`], or the emulator's loopback address) and no other host.
    pub fn new(
        authority_host: &Url,
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: Secret,
        version: TokenEndpointVersion,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        check_credential_url(authority_host)?;
        if !valid_tenant(tenant) {
            return Err(Error::InvalidConfig(format!(
                "tenant `{tenant}` is not a tenant id or domain name"
            )));
        }
        let client_id = client_id.into();
        if client_id.trim().is_empty() {
            return Err(Error::InvalidConfig("client_id is empty".into()));
        }
        let mut base = authority_host.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let path = match version {
            TokenEndpointVersion::V2 => format!("{tenant}/oauth2/v2.0/token"),
            TokenEndpointVersion::V1 => format!("{tenant}/oauth2/token"),
        };
        let token_url = base
            .join(&path)
            .map_err(|e| Error::InvalidConfig(format!("authority host: {e}")))?;
        Ok(Self {
            http: http_client(&token_url)?,
            token_url,
            version,
            client_id,
            client_secret,
            clock,
        })
    }

    /// The token endpoint this credential posts to.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// The form fields of a token request (the secret included): pure, for tests.
    pub fn form(&self, scope: &str) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("client_secret", self.client_secret.expose().to_owned()),
        ];
        match self.version {
            TokenEndpointVersion::V2 => form.push(("scope", scope.to_owned())),
            TokenEndpointVersion::V1 => form.push(("resource", scope_to_resource(scope))),
        }
        form
    }
}

#[async_trait::async_trait]
impl TokenCredential for ClientSecretCredential {
    async fn get_token(&self, scope: &str) -> Result<AccessToken> {
        let name = match self.version {
            TokenEndpointVersion::V2 => "client secret (v2.0 endpoint)",
            TokenEndpointVersion::V1 => "client secret (v1 endpoint)",
        };
        let span = tracing::debug_span!("token", credential = name, scope);
        let req = self
            .http
            .post(self.token_url.clone())
            .form(&self.form(scope));
        send_token_request(name, req, self.clock.as_ref())
            .instrument(span)
            .await
    }
}

/// A managed identity, through the instance metadata service (IMDS).
pub struct ManagedIdentityCredential {
    endpoint: Url,
    client_id: Option<String>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for ManagedIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedIdentityCredential")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl ManagedIdentityCredential {
    /// The system-assigned identity (`client_id` `None`) or a user-assigned one, asking the
    /// IMDS at `endpoint` (`None`: [`IMDS_ENDPOINT`]). Only HTTPS, loopback or the link-local
    /// IMDS address are accepted.
    pub fn new(
        endpoint: Option<Url>,
        client_id: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let endpoint = match endpoint {
            Some(e) => e,
            None => Url::parse(IMDS_ENDPOINT).expect("valid constant"),
        };
        let imds = endpoint.host_str() == Some("169.254.169.254");
        let ok = endpoint.scheme() == "https"
            || (endpoint.scheme() == "http" && (imds || is_loopback(&endpoint)));
        if !ok {
            return Err(Error::InsecureUrl {
                url: crate::error::display_url(&endpoint),
                reason: "the managed identity endpoint must be HTTPS, loopback or 169.254.169.254"
                    .into(),
            });
        }
        Ok(Self {
            http: http_client(&endpoint)?,
            endpoint,
            client_id,
            clock,
        })
    }

    /// The request URL for a scope: pure, for tests.
    pub fn request_url(&self, scope: &str) -> Url {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("api-version", "2018-02-01")
            .append_pair("resource", &scope_to_resource(scope));
        if let Some(id) = &self.client_id {
            url.query_pairs_mut().append_pair("client_id", id);
        }
        url
    }
}

#[async_trait::async_trait]
impl TokenCredential for ManagedIdentityCredential {
    async fn get_token(&self, scope: &str) -> Result<AccessToken> {
        let span = tracing::debug_span!("token", credential = "managed identity", scope);
        let req = self
            .http
            .get(self.request_url(scope))
            .header("Metadata", "true");
        send_token_request("managed identity", req, self.clock.as_ref())
            .instrument(span)
            .await
    }
}

/// Parses `az account get-access-token --output json`. Newer CLIs give `expires_on` (epoch
/// seconds); older ones only `expiresOn`, a local time without zone, read in `local`.
pub fn parse_cli_output<Tz: TimeZone>(
    stdout: &str,
    local: &Tz,
) -> std::result::Result<AccessToken, String> {
    let v: serde_json::Value = serde_json::from_str(stdout)
        .map_err(|e| format!("`az account get-access-token` did not print JSON: {e}"))?;
    let token = token_field(&v, "accessToken")
        .ok_or("`az account get-access-token` printed no accessToken")?;
    let expires_on = if let Some(on) = expires_on_field(&v) {
        on?
    } else {
        let text = v
            .get("expiresOn")
            .and_then(|t| t.as_str())
            .ok_or("`az account get-access-token` printed neither expires_on nor expiresOn")?;
        let naive = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .map_err(|e| format!("expiresOn `{text}`: {e}"))?;
        local
            .from_local_datetime(&naive)
            .earliest()
            .ok_or_else(|| format!("expiresOn `{text}` does not exist in the local time zone"))?
            .with_timezone(&chrono::Utc)
    };
    Ok(AccessToken { token, expires_on })
}

/// The signed-in Azure CLI user (`az login`), through `az account get-access-token`.
#[derive(Debug, Clone)]
pub struct AzureCliCredential {
    program: String,
    tenant: Option<String>,
}

impl AzureCliCredential {
    /// Runs `az` from `PATH`, optionally for another tenant than the CLI's default.
    pub fn new(tenant: Option<String>) -> Self {
        Self {
            program: "az".into(),
            tenant,
        }
    }

    /// Runs `program` instead of `az` (tests, unusual installs).
    pub fn with_program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// The arguments passed to the CLI: pure, for tests.
    pub fn args(&self, scope: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "account",
            "get-access-token",
            "--output",
            "json",
            "--scope",
            scope,
        ]
        .into_iter()
        .map(String::from)
        .collect();
        if let Some(t) = &self.tenant {
            args.extend(["--tenant".into(), t.clone()]);
        }
        args
    }
}

#[async_trait::async_trait]
impl TokenCredential for AzureCliCredential {
    async fn get_token(&self, scope: &str) -> Result<AccessToken> {
        // A CLI that fails is not logged in, or is told a bad tenant: not worth retrying.
        let cred_err = |message: String| Error::Credential {
            source_name: "Azure CLI".into(),
            message,
            transient: false,
        };
        if let Some(t) = &self.tenant {
            if !valid_tenant(t) {
                return Err(Error::InvalidConfig(format!("tenant `{t}` is not valid")));
            }
        }
        let run = tokio::process::Command::new(&self.program)
            .args(self.args(scope))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(TOKEN_REQUEST_TIMEOUT, run)
            .await
            .map_err(|_| cred_err("`az account get-access-token` did not answer within 30 s".into()))?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    cred_err(format!(
                        "`{}` is not on PATH: install the Azure CLI and run `az login`, or choose another credential kind",
                        self.program
                    ))
                } else {
                    cred_err(format!("cannot run `{}`: {e}", self.program))
                }
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            return Err(cred_err(redact(&format!(
                "`az account get-access-token` failed ({}): {first}",
                out.status
            ))));
        }
        parse_cli_output(&String::from_utf8_lossy(&out.stdout), &chrono::Local).map_err(cred_err)
    }
}

/// A token handed in from outside: the emulator's, or one minted by another tool.
#[derive(Debug, Clone)]
pub struct StaticTokenCredential {
    token: AccessToken,
}

impl StaticTokenCredential {
    /// A token valid until `expires_on` (`None`: treated as never expiring; the server is the
    /// judge, and a 401 is reported as such).
    pub fn new(token: Secret, expires_on: Option<Timestamp>) -> Self {
        let expires_on = expires_on.unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        Self {
            token: AccessToken { token, expires_on },
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for StaticTokenCredential {
    async fn get_token(&self, _scope: &str) -> Result<AccessToken> {
        Ok(self.token.clone())
    }
}

/// When a token fetched at `fetched_at` should be replaced: [`REFRESH_MARGIN`] before it
/// expires, or half-way through its life if that is shorter (so a 4-minute token is not
/// fetched again on every call).
pub fn refresh_at(fetched_at: Timestamp, expires_on: Timestamp) -> Timestamp {
    let lifetime = expires_on.signed_duration_since(fetched_at);
    if lifetime <= chrono::Duration::zero() {
        return fetched_at;
    }
    let margin = chrono::Duration::from_std(REFRESH_MARGIN).expect("small");
    let margin = margin.min(lifetime / 2);
    expires_on.checked_sub_signed(margin).unwrap_or(expires_on)
}

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    refresh_at: Timestamp,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// A caching, single-flight wrapper around a [`TokenCredential`].
pub struct TokenCache {
    inner: Arc<dyn TokenCredential>,
    clock: Arc<dyn Clock>,
    slots: parking_lot::Mutex<HashMap<String, Slot>>,
    fetches: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("inner", &self.inner)
            .field("fetches", &self.fetches.load(Ordering::Relaxed))
            .finish()
    }
}

impl TokenCache {
    /// Caches tokens from `inner`, judging expiry by `clock`.
    pub fn new(inner: Arc<dyn TokenCredential>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner,
            clock,
            slots: parking_lot::Mutex::new(HashMap::new()),
            fetches: AtomicU64::new(0),
        }
    }

    fn slot(&self, scope: &str) -> Slot {
        self.slots
            .lock()
            .entry(scope.to_owned())
            .or_default()
            .clone()
    }

    /// How many times the inner credential was asked for a token.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Drops the cached token for `scope` if it is `rejected` (a server answered 401 to it),
    /// so the next call fetches a new one. A token fetched meanwhile by another caller is kept.
    pub async fn invalidate(&self, scope: &str, rejected: &AccessToken) {
        let slot = self.slot(scope);
        let mut guard = slot.lock().await;
        if guard
            .as_ref()
            .is_some_and(|c| c.token.token == rejected.token)
        {
            tracing::debug!(scope, "dropping a rejected token");
            *guard = None;
        }
    }
}

#[async_trait::async_trait]
impl TokenCredential for TokenCache {
    async fn get_token(&self, scope: &str) -> Result<AccessToken> {
        let slot = self.slot(scope);
        // Holding the slot's lock across the fetch is the single flight: every other caller
        // for this scope waits here and then finds the fresh token.
        let mut guard = slot.lock().await;
        let now = self.clock.now();
        if let Some(c) = guard.as_ref() {
            if now < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.inner.get_token(scope).await {
            Ok(token) => {
                let refresh_at = refresh_at(now, token.expires_on);
                *guard = Some(Cached {
                    token: token.clone(),
                    refresh_at,
                });
                Ok(token)
            }
            Err(e) => match guard.as_ref() {
                // A refresh failed but the old token is still valid: use it, try again later.
                Some(c) if now < c.token.expires_on => {
                    tracing::warn!(scope, error = %e, "token refresh failed; using the cached token until it expires");
                    Ok(c.token.clone())
                }
                _ => Err(e),
            },
        }
    }
}
