//! The request pipeline: the only place that sends requests to ARM.
//!
//! For every call, in order: pin the URL to the ARM endpoint's host, wait for the
//! subscription's read or write limiter and for any hold (a 429's Retry-After, a slow-down as
//! `x-ms-ratelimit-remaining-*` runs low), attach a bearer token from the cache and an
//! `x-ms-client-request-id`, send, classify the answer, and let the pure
//! [`RetryPolicy`](crate::retry::RetryPolicy) decide. A 401 drops the token and retries once.
//! A non-idempotent request (backup, restore) whose fate is unknown is never resent.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::{Rng, SeedableRng};
use tracing::Instrument;
use url::Url;

use drsync_core::{Clock, Timestamp};

use crate::credential::{TokenCache, TokenCredential};
use crate::error::{ArmErrorBody, Error, Result, display_url};
use crate::lro;
use crate::retry::{
    FailureClass, RetryDecision, RetryPolicy, classify_status, is_definite_refusal,
    ratelimit_remaining, server_retry_after, slow_down,
};
use crate::security::{authority, check_credential_url, harden};

/// Which ARM token bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Read,
    Write,
}

/// One logical request.
pub(crate) struct Request {
    pub method: reqwest::Method,
    pub url: Url,
    pub body: Option<serde_json::Value>,
    pub kind: Kind,
    /// Whether sending it twice is harmless. Backup and restore POSTs are not.
    pub idempotent: bool,
    /// For messages and spans: `get service`, `begin backup`.
    pub operation: String,
    /// For messages and spans: the service name, or the subscription for listings.
    pub service: String,
    /// This is a GET of a polling URL: an answer that reports the operation's failure (see
    /// [`lro::is_operation_failure`]) is returned as a response for the poller to read instead
    /// of being retried or turned into an error. Anything else (a 5xx with a generic code, a
    /// 401/403, a 429) is handled like any read.
    pub raw_client_errors: bool,
    /// Secrets this request carries in its body (a named value's value, an account key): a
    /// server may echo them back, so they are removed from every error the request produces,
    /// including the retry warnings in the log.
    pub secrets: Vec<drsync_core::Secret>,
}

/// Not derived: the body of a backup or restore with `AccessKey` access holds the account key.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &display_url(&self.url))
            .field("body", &self.body.as_ref().map(|_| "<redacted>"))
            .field("kind", &self.kind)
            .field("idempotent", &self.idempotent)
            .field("operation", &self.operation)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Counters, for benchmarks and tests.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub sent: AtomicU64,
    pub throttled: AtomicU64,
    pub retries: AtomicU64,
    pub server_errors: AtomicU64,
    pub transport_errors: AtomicU64,
    pub unauthorized: AtomicU64,
    pub slowdowns: AtomicU64,
}

/// How fast drsync lets itself call ARM, per subscription: its own token buckets, kept inside
/// ARM's.
///
/// ARM's documented per-subscription buckets are reads 250 refilled at 25/s and writes 200
/// refilled at 10/s ("Understand how Azure Resource Manager throttles requests",
/// <https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling>;
/// PROTOCOL.md section 4). The defaults pace at 90 % of those ([`ArmLimits::PACING`]): at
/// exactly Azure's rates, clock skew between drsync and ARM and requests that ARM counts but
/// drsync does not see (other tools, the portal) let a few 429s through under load (`drsync
/// bench` measured 0-4 at 100 % and none at 90 %, docs/benchmarks.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ArmLimits {
    /// Whether drsync paces itself (governor limiters and slow-down). Off, it relies on 429s
    /// and Retry-After alone; benchmarks compare the two.
    pub enabled: bool,
    /// Read refill per second: default 22.5 (90 % of ARM's 25/s).
    pub reads_per_second: f64,
    /// Read bucket size: default 225 (90 % of ARM's 250).
    pub read_burst: u32,
    /// Write refill per second: default 9 (90 % of ARM's 10/s).
    pub writes_per_second: f64,
    /// Write bucket size: default 180 (90 % of ARM's 200).
    pub write_burst: u32,
    /// Below this many remaining requests (`x-ms-ratelimit-remaining-*`), space requests out.
    pub low_water: u64,
}

impl Default for ArmLimits {
    /// [`ArmLimits::PACING`] of ARM's documented buckets: reads 22.5/s (burst 225), writes 9/s
    /// (burst 180).
    fn default() -> Self {
        Self {
            enabled: true,
            reads_per_second: Self::AZURE_READS_PER_SECOND * Self::PACING,
            read_burst: (f64::from(Self::AZURE_READ_BURST) * Self::PACING).round() as u32,
            writes_per_second: Self::AZURE_WRITES_PER_SECOND * Self::PACING,
            write_burst: (f64::from(Self::AZURE_WRITE_BURST) * Self::PACING).round() as u32,
            low_water: 20,
        }
    }
}

impl ArmLimits {
    /// ARM's documented subscription read refill, per second.
    pub const AZURE_READS_PER_SECOND: f64 = 25.0;
    /// ARM's documented subscription read bucket size.
    pub const AZURE_READ_BURST: u32 = 250;
    /// ARM's documented subscription write refill, per second.
    pub const AZURE_WRITES_PER_SECOND: f64 = 10.0;
    /// ARM's documented subscription write bucket size.
    pub const AZURE_WRITE_BURST: u32 = 200;
    /// The fraction of ARM's rates the defaults use.
    pub const PACING: f64 = 0.9;

    fn quota(rate: f64, burst: u32, what: &str) -> Result<Quota> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Error::InvalidConfig(format!(
                "{what} per second must be positive, got {rate}"
            )));
        }
        let burst = NonZeroU32::new(burst)
            .ok_or_else(|| Error::InvalidConfig(format!("{what} burst must be at least 1")))?;
        let period = Duration::from_secs_f64(1.0 / rate);
        let quota = Quota::with_period(period).ok_or_else(|| {
            Error::InvalidConfig(format!("{what} per second is too high: {rate}"))
        })?;
        Ok(quota.allow_burst(burst))
    }

    fn refill(&self, kind: Kind) -> f64 {
        match kind {
            Kind::Read => self.reads_per_second,
            Kind::Write => self.writes_per_second,
        }
    }
}

pub(crate) struct Pipeline {
    pub endpoint: Url,
    http: reqwest::Client,
    pub tokens: Arc<TokenCache>,
    scope: String,
    pub clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    limits: ArmLimits,
    readers: DefaultKeyedRateLimiter<String>,
    writers: DefaultKeyedRateLimiter<String>,
    holds: parking_lot::Mutex<HashMap<(String, Kind), Timestamp>>,
    rng: parking_lot::Mutex<rand::rngs::StdRng>,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("endpoint", &self.endpoint.as_str())
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The subscription a URL is about (`/subscriptions/{id}/...`), the bucket key.
fn subscription_of(url: &Url) -> String {
    let mut segs = url.path_segments().into_iter().flatten();
    while let Some(s) = segs.next() {
        if s.eq_ignore_ascii_case("subscriptions") {
            return segs.next().unwrap_or("").to_ascii_lowercase();
        }
    }
    String::new()
}

fn std_duration(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

#[allow(clippy::too_many_arguments)]
impl Pipeline {
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        clock: Arc<dyn Clock>,
        scope: String,
        retry: RetryPolicy,
        limits: ArmLimits,
        user_agent: &str,
        request_timeout: Duration,
        seed: Option<u64>,
    ) -> Result<Self> {
        check_credential_url(&endpoint)?;
        let builder = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(10).min(request_timeout))
            .user_agent(user_agent);
        let http = harden(builder, &endpoint)
            .build()
            .map_err(|e| Error::InvalidConfig(format!("cannot build an HTTP client: {e}")))?;
        let readers = RateLimiter::keyed(ArmLimits::quota(
            limits.reads_per_second,
            limits.read_burst,
            "reads",
        )?);
        let writers = RateLimiter::keyed(ArmLimits::quota(
            limits.writes_per_second,
            limits.write_burst,
            "writes",
        )?);
        let rng = match seed {
            Some(s) => rand::rngs::StdRng::seed_from_u64(s),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        Ok(Self {
            endpoint,
            http,
            tokens: Arc::new(TokenCache::new(credential, clock.clone())),
            scope,
            clock,
            retry,
            limits,
            readers,
            writers,
            holds: parking_lot::Mutex::new(HashMap::new()),
            rng: parking_lot::Mutex::new(rng),
            metrics: Metrics::default(),
        })
    }

    fn hold(&self, sub: &str, kind: Kind, until: Timestamp) {
        let mut holds = self.holds.lock();
        let e = holds.entry((sub.to_owned(), kind)).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    async fn pace(&self, sub: &str, kind: Kind) {
        if self.limits.enabled {
            let key = sub.to_owned();
            match kind {
                Kind::Read => self.readers.until_key_ready(&key).await,
                Kind::Write => self.writers.until_key_ready(&key).await,
            }
        }
        // Holds: a 429's Retry-After applies to every request of the bucket, not only the
        // one that got it; a slow-down spaces requests out. One sleep (not a loop on the
        // clock), so an injected clock that does not move cannot hang a request.
        let until = self.holds.lock().get(&(sub.to_owned(), kind)).copied();
        let now = self.clock.now();
        if let Some(u) = until.filter(|u| *u > now) {
            tokio::time::sleep(std_duration(u - now)).await;
        }
    }

    fn observe_headers(&self, sub: &str, kind: Kind, headers: &http::HeaderMap) {
        if !self.limits.enabled {
            return;
        }
        if let Some(remaining) = ratelimit_remaining(headers) {
            if let Some(d) = slow_down(remaining, self.limits.low_water, self.limits.refill(kind)) {
                self.metrics.slowdowns.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    remaining,
                    delay_ms = d.as_millis() as u64,
                    "ARM rate limit running low; slowing down"
                );
                let until = self.clock.now() + chrono::Duration::from_std(d).unwrap_or_default();
                self.hold(sub, kind, until);
            }
        }
    }

    fn sample(&self) -> f64 {
        self.rng.lock().random::<f64>()
    }

    /// Sends `req` with limiting, authentication and retries.
    pub async fn send(&self, req: Request) -> Result<Response> {
        let span = tracing::info_span!("arm", service = %req.service, operation = %req.operation);
        let secrets = req.secrets.clone();
        let values: Vec<&str> = secrets.iter().map(drsync_core::Secret::expose).collect();
        self.send_inner(req)
            .instrument(span)
            .await
            .map_err(|e| e.scrubbed(&values))
    }

    async fn send_inner(&self, req: Request) -> Result<Response> {
        if req.url.scheme() != self.endpoint.scheme()
            || authority(&req.url) != authority(&self.endpoint)
        {
            return Err(Error::ForeignHost {
                url: display_url(&req.url),
                expected: authority(&self.endpoint),
            });
        }
        check_credential_url(&req.url)?;
        let sub = subscription_of(&req.url);
        let request_id = uuid::Uuid::new_v4().to_string();
        let started = self.clock.now();
        let mut attempt: u32 = 0;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let span = tracing::debug_span!("attempt", attempt, request_id = %request_id);
            let outcome = self.attempt(&req, &sub, &request_id).instrument(span).await;
            let elapsed = std_duration(self.clock.now() - started);
            let (class, server_after, error) = match outcome {
                Attempt::Done(resp) => return Ok(resp),
                Attempt::Unauthorized { token, resp } if !reauthenticated => {
                    // Drop the token and try once more with a fresh one; not a retry attempt.
                    reauthenticated = true;
                    attempt -= 1;
                    tracing::info!("ARM answered 401; fetching a new token and retrying once");
                    self.tokens.invalidate(&self.scope, &token).await;
                    let _ = resp;
                    continue;
                }
                Attempt::Unauthorized { resp, .. } => {
                    return Err(self.arm_error(&req, resp, attempt));
                }
                Attempt::Status(resp) => {
                    let class = classify_status(resp.status);
                    if class == FailureClass::Throttled {
                        self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
                    } else if class == FailureClass::Server {
                        self.metrics.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let after = server_retry_after(&resp.headers, self.clock.now());
                    // A failure that would be retried, after a request that must not be sent
                    // twice: unless the answer is a definite refusal (429, 503 with
                    // Retry-After), ARM may have started the operation. Never resend it.
                    if !req.idempotent
                        && class.is_retryable()
                        && !is_definite_refusal(resp.status, after.is_some())
                    {
                        let body = ArmErrorBody::parse(&resp.body);
                        return Err(Error::OutcomeUnknown {
                            operation: format!("{} {}", req.operation, req.service),
                            message: format!(
                                "HTTP {} {}: {}",
                                resp.status, body.code, body.message
                            ),
                        });
                    }
                    if req.raw_client_errors
                        && lro::is_operation_failure(
                            resp.status,
                            &ArmErrorBody::parse(&resp.body).code,
                        )
                    {
                        return Ok(resp);
                    }
                    (class, after, self.arm_error(&req, resp, attempt))
                }
                Attempt::Transport { message, sent } => {
                    self.metrics
                        .transport_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if sent && !req.idempotent {
                        return Err(Error::OutcomeUnknown {
                            operation: format!("{} {}", req.operation, req.service),
                            message,
                        });
                    }
                    let error = Error::Transport {
                        operation: format!("{} {}", req.operation, req.service),
                        message,
                        sent,
                        attempts: attempt,
                    };
                    (FailureClass::Transient, None, error)
                }
                Attempt::TokenUnavailable(e) => {
                    self.metrics
                        .transport_errors
                        .fetch_add(1, Ordering::Relaxed);
                    (FailureClass::Transient, None, e)
                }
                Attempt::Fatal(e) => return Err(e),
            };
            match self
                .retry
                .decide(attempt, elapsed, class, server_after, self.sample())
            {
                RetryDecision::GiveUp => return Err(error),
                RetryDecision::Retry(wait) => {
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    // Status and code only: the server's message may echo what was sent.
                    let values: Vec<&str> = req
                        .secrets
                        .iter()
                        .map(drsync_core::Secret::expose)
                        .collect();
                    let summary = error.scrubbed(&values).retry_summary();
                    tracing::warn!(?class, attempt, wait_ms = wait.as_millis() as u64, error = %summary, "retrying");
                    if class == FailureClass::Throttled {
                        // Everyone on this bucket waits, not only this request.
                        let until =
                            self.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
                        self.hold(&sub, req.kind, until);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn arm_error(&self, req: &Request, resp: Response, attempts: u32) -> Error {
        let request_id = resp
            .headers
            .get("x-ms-request-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        Error::Arm {
            operation: format!("{} {}", req.operation, req.service),
            status: resp.status,
            body: Box::new(ArmErrorBody::parse(&resp.body)),
            request_id,
            attempts,
        }
    }

    async fn attempt(&self, req: &Request, sub: &str, request_id: &str) -> Attempt {
        self.pace(sub, req.kind).await;
        let token = match self.tokens.get_token(&self.scope).await {
            Ok(t) => t,
            // Entra ID unreachable, throttling or failing: retried like a connection failure
            // (nothing was sent to ARM), and reported as itself when the policy gives up.
            Err(e) if e.is_retryable() => return Attempt::TokenUnavailable(e),
            Err(e) => return Attempt::Fatal(e),
        };
        let mut builder = self
            .http
            .request(req.method.clone(), req.url.clone())
            .bearer_auth(token.token.expose())
            .header("x-ms-client-request-id", request_id)
            .header("accept", "application/json");
        if let Some(body) = &req.body {
            builder = builder
                .header("content-type", "application/json")
                .body(serde_json::to_vec(body).expect("JSON values serialize"));
        }
        self.metrics.sent.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(method = %req.method, url = %display_url(&req.url), "sending");
        let resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                // A connect error means nothing reached the server; anything else (timeout,
                // reset mid-request) may have.
                let sent = !e.is_connect();
                return Attempt::Transport {
                    message: e.without_url().to_string(),
                    sent,
                };
            }
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Transport {
                    message: format!("reading the answer: {}", e.without_url()),
                    sent: true,
                };
            }
        };
        self.observe_headers(sub, req.kind, &headers);
        tracing::debug!(status, "answered");
        let resp = Response {
            status,
            headers,
            body,
        };
        match status {
            200..=299 => Attempt::Done(resp),
            401 => {
                self.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
                Attempt::Unauthorized { token, resp }
            }
            _ => Attempt::Status(resp),
        }
    }
}

enum Attempt {
    Done(Response),
    Unauthorized {
        token: crate::credential::AccessToken,
        resp: Response,
    },
    Status(Response),
    Transport {
        message: String,
        sent: bool,
    },
    TokenUnavailable(Error),
    Fatal(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_key_is_the_subscription() {
        let u = Url::parse(
            "https://management.azure.com/subscriptions/ABC/resourceGroups/x?api-version=1",
        )
        .unwrap();
        assert_eq!(subscription_of(&u), "abc");
        let u = Url::parse("https://management.azure.com/providers/x").unwrap();
        assert_eq!(subscription_of(&u), "");
    }

    #[test]
    fn default_limits_pace_at_ninety_percent_of_azure() {
        let d = ArmLimits::default();
        assert!(d.enabled);
        assert_eq!(d.reads_per_second, 22.5);
        assert_eq!(d.read_burst, 225);
        assert_eq!(d.writes_per_second, 9.0);
        assert_eq!(d.write_burst, 180);
        // The configuration's `[limits]` defaults are the same numbers.
        let c = drsync_core::config::Limits::default();
        assert_eq!(c.arm_reads_per_second, d.reads_per_second);
        assert_eq!(c.arm_read_burst, d.read_burst);
        assert_eq!(c.arm_writes_per_second, d.writes_per_second);
        assert_eq!(c.arm_write_burst, d.write_burst);
    }

    #[test]
    fn limits_are_validated() {
        assert!(ArmLimits::quota(25.0, 250, "reads").is_ok());
        assert!(ArmLimits::quota(0.0, 250, "reads").is_err());
        assert!(ArmLimits::quota(f64::NAN, 250, "reads").is_err());
        assert!(ArmLimits::quota(10.0, 0, "writes").is_err());
    }

    // See: #4. A backup request's body holds the account key: Debug never shows it.
    #[test]
    fn request_debug_hides_the_body() {
        let req = Request {
            method: reqwest::Method::POST,
            url: Url::parse("https://management.azure.com/subscriptions/s/x/backup?sig=q").unwrap(),
            body: Some(serde_json::json!({"accessKey": "S3CRETKEY"})),
            kind: Kind::Write,
            idempotent: false,
            operation: "begin backup".into(),
            service: "apim".into(),
            raw_client_errors: false,
            secrets: Vec::new(),
        };
        let dbg = format!("{req:?}");
        assert!(
            !dbg.contains("S3CRETKEY") && !dbg.contains("sig=q"),
            "{dbg}"
        );
        assert!(dbg.contains("begin backup"), "{dbg}");
    }
}
