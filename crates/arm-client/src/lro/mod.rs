//! ARM long-running operations, sans-IO.
//!
//! A backup or restore POST answers `202 Accepted` with a `Location` header (and sometimes
//! `Azure-AsyncOperation`); the client then polls until the operation ends. This module is
//! the pure state machine of that protocol:
//! - [`start`] reads the POST's answer: done at once (`200` with the resource) or a
//!   [`PollState`] to poll;
//! - [`on_response`] takes the state, one polling answer and the current time, and returns the
//!   new state and what to do [`Next`]: poll `url` at instant `after`, done, or failed.
//!
//! Rules (PROTOCOL.md section 1, ARM's async-operation guidelines):
//! - `Azure-AsyncOperation` takes precedence over `Location`. Its body's `status` is compared
//!   case-insensitively: `Succeeded` ends it, `Failed`/`Canceled` fail it with the body's
//!   `error`, anything else (unknown statuses included) keeps polling. On success the final
//!   resource is read from the `Location` URL (`final-state-via: location`), or from the
//!   resource itself when there was none.
//! - With `Location`, `202` means still running (a new `Location` replaces the polling URL),
//!   `200` means done with the resource in the body (an empty `200`/`204` means done: the
//!   resource is then read with a GET), a `4xx`/`5xx` means the operation failed.
//! - The next poll happens after the answer's `Retry-After` (see
//!   [`crate::retry::server_retry_after`]), or after [`PollerConfig::default_interval`] when
//!   there is none or it asks for no wait at all (`Retry-After: 0`, a date in the past: as
//!   azure-core does, so such a server is not polled in a tight loop), never later than the
//!   deadline; an operation still running at its deadline
//!   fails with [`LroFailure::Timeout`].
//! - Every URL a server hands over must stay on the original resource's host (see
//!   [`crate::security::pin_url`]); otherwise the operation fails with
//!   [`LroFailure::ForeignHost`] before the token could be sent there.
//!
//! Which polling answers are the operation's failure is decided here too
//! ([`is_operation_failure`]); the others never reach this machine: the async driver retries
//! transient ones (429, a 5xx with a generic code) and reports the rest (401, and a 403: the
//! caller may start operations but not read their results, PROTOCOL.md section 1) as errors
//! that leave the state untouched, so polling can resume, also from a persisted state in
//! another process. A 403 is deliberately not a failure of the operation: the backup or
//! restore may well be running, and reporting it failed could make the caller start another.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use drsync_core::Timestamp;

use crate::error::ArmErrorBody;
use crate::retry::server_retry_after;
use crate::security::pin_url;

#[cfg(test)]
mod tests;

/// The header ARM uses for operation-status URLs.
pub const AZURE_ASYNC_OPERATION: &str = "azure-asyncoperation";

/// Which long-running operation is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LroOperation {
    /// `POST .../backup`.
    Backup,
    /// `POST .../restore`.
    Restore,
    /// `PUT .../namedValues/{name}` (answered `202` when the value is being saved).
    PutNamedValue,
    /// `DELETE .../service/{name}`.
    DeleteService,
}

impl LroOperation {
    /// `backup`, `restore`, `named value update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::PutNamedValue => "named value update",
            Self::DeleteService => "delete",
        }
    }
}

/// What the polling URL is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollKind {
    /// A `Location` URL: `202` while running, `200` with the resource when done.
    Location,
    /// An `Azure-AsyncOperation` URL: a status document.
    AzureAsyncOperation,
    /// The operation succeeded; the URL is where the final resource is read.
    FinalResult,
}

/// The poller's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    /// The wait between polls when the server sends no `Retry-After`. The Python SDK uses
    /// 30 s, which is right for Azure (backups take minutes) and far too slow for the
    /// emulator; tests and the embedded mode set a few hundred milliseconds.
    pub default_interval: Duration,
    /// How long an operation may run before drsync stops waiting for it. A restore can take
    /// 30 minutes or more (PROTOCOL.md section 2); the default is 2 hours.
    pub max_wait: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(30),
            max_wait: Duration::from_secs(2 * 3600),
        }
    }
}

/// Everything needed to continue polling an operation, in this process or another.
///
/// Serializable so the planner can checkpoint it (it holds no secret: ARM polling URLs are
/// opaque ids, and the token is fetched again by whoever resumes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    /// The operation.
    pub operation: LroOperation,
    /// The service's resource URL (`{arm}/subscriptions/.../service/{name}?api-version=...`).
    /// Every polling URL must be on its host.
    pub resource_url: String,
    /// What [`PollState::url`] is.
    pub kind: PollKind,
    /// The URL to poll next.
    pub url: String,
    /// The latest `Location` URL, where the final result is read (`final-state-via: location`).
    pub location: Option<String>,
    /// When the operation was started.
    pub started_at: Timestamp,
    /// When to poll next.
    pub next_poll_at: Timestamp,
    /// When to stop waiting.
    pub deadline: Timestamp,
    /// How many polling answers have been processed.
    pub polls: u32,
    /// The last status reported (`InProgress`, `202`, ...), for progress displays.
    pub last_status: Option<String>,
}

/// One polling answer (or the POST's answer, for [`start`]).
#[derive(Debug, Clone, Copy)]
pub struct LroResponse<'a> {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: &'a http::HeaderMap,
    /// Body.
    pub body: &'a [u8],
}

/// Why an operation is over without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LroFailure {
    /// The operation reported failure: a `Failed`/`Canceled` status or an error status code.
    Operation {
        /// The status (`Failed`, `Canceled`, or an HTTP status code).
        status: String,
        /// ARM's error.
        body: Box<ArmErrorBody>,
    },
    /// Still running at the deadline.
    Timeout,
    /// The server handed over a URL on another host (or not a URL at all).
    ForeignHost(String),
    /// The answer does not follow the protocol.
    BadResponse(String),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// GET `url` at instant `after`.
    Poll {
        /// The URL.
        url: String,
        /// Not before this instant.
        after: Timestamp,
    },
    /// Done; the body holds the final resource when the server sent it.
    Done(Option<serde_json::Value>),
    /// Over, without success.
    Failed(LroFailure),
}

/// The result of [`start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// The POST completed synchronously; the body holds the resource when there was one.
    Done(Option<serde_json::Value>),
    /// Poll.
    Pending(PollState),
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn json_body(body: &[u8]) -> Option<serde_json::Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

fn pinned(resource_url: &str, text: &str) -> Result<String, LroFailure> {
    let base = Url::parse(resource_url)
        .map_err(|e| LroFailure::BadResponse(format!("resource URL is not a URL: {e}")))?;
    pin_url(&base, text)
        .map(String::from)
        .map_err(|e| LroFailure::ForeignHost(e.to_string()))
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `now + d`, saturating: a server's absurd `Retry-After` (or a configured `max_wait` of
/// centuries) must not overflow the timestamp and panic.
fn after(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_add_signed(to_chrono(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// The wait before the next poll: the answer's Retry-After when it asks for one, else the
/// default interval.
fn poll_delay(headers: &http::HeaderMap, now: Timestamp, config: &PollerConfig) -> Duration {
    server_retry_after(headers, now)
        .filter(|d| !d.is_zero())
        .unwrap_or(config.default_interval)
}

/// Error codes that say "the endpoint had a problem", not "the operation failed": a polling
/// URL answering 5xx with one of these (or with no code) is retried.
pub fn is_generic_server_code(code: &str) -> bool {
    const GENERIC: [&str; 6] = [
        "",
        "InternalServerError",
        "ServiceUnavailable",
        "GatewayTimeout",
        "BadGateway",
        "RequestTimeout",
    ];
    GENERIC.iter().any(|g| g.eq_ignore_ascii_case(code.trim()))
}

/// Whether an error answer (`status` >= 400, ARM error `code`) from a polling URL reports the
/// operation's failure, as opposed to a problem with the poll itself:
/// - `401` (the token; refreshed once), `403` (the caller may not read operation results:
///   the operation's fate is unknown), `408` and `429` are problems of the poll;
/// - any other `4xx` is the operation's failure (PROTOCOL.md section 1);
/// - a `5xx` is the operation's failure when it carries an operation-specific code
///   (`BackupFailed`, `RestoreFailed`), a hiccup of the endpoint otherwise
///   ([`is_generic_server_code`]).
pub fn is_operation_failure(status: u16, code: &str) -> bool {
    match status {
        401 | 403 | 408 | 429 => false,
        400..=499 => true,
        500..=599 => !is_generic_server_code(code),
        _ => false,
    }
}

/// Reads the POST's answer. `resource_url` is the service's URL (its host pins all polling
/// URLs); `now` is when the answer arrived.
pub fn start(
    operation: LroOperation,
    resource_url: &str,
    resp: LroResponse<'_>,
    now: Timestamp,
    config: &PollerConfig,
) -> Result<Started, LroFailure> {
    match resp.status {
        200 | 204 if json_body(resp.body).is_some() => Ok(Started::Done(json_body(resp.body))),
        200 | 201 | 202 | 204 => {
            let location = header(resp.headers, "location")
                .map(|l| pinned(resource_url, l))
                .transpose()?;
            let async_op = header(resp.headers, AZURE_ASYNC_OPERATION)
                .map(|l| pinned(resource_url, l))
                .transpose()?;
            let (kind, url) = match (&async_op, &location) {
                (Some(a), _) => (PollKind::AzureAsyncOperation, a.clone()),
                (None, Some(l)) => (PollKind::Location, l.clone()),
                (None, None) if resp.status == 202 || resp.status == 201 => {
                    return Err(LroFailure::BadResponse(format!(
                        "{} without a Location or Azure-AsyncOperation header",
                        resp.status
                    )));
                }
                (None, None) => (PollKind::FinalResult, resource_url.to_owned()),
            };
            let delay = if kind == PollKind::FinalResult {
                Duration::ZERO
            } else {
                poll_delay(resp.headers, now, config)
            };
            let deadline = after(now, config.max_wait);
            Ok(Started::Pending(PollState {
                operation,
                resource_url: resource_url.to_owned(),
                kind,
                url,
                location,
                started_at: now,
                next_poll_at: after(now, delay).min(deadline),
                deadline,
                polls: 0,
                last_status: Some(resp.status.to_string()),
            }))
        }
        s if s >= 400 => Err(LroFailure::Operation {
            status: s.to_string(),
            body: Box::new(ArmErrorBody::parse(resp.body)),
        }),
        s => Err(LroFailure::BadResponse(format!(
            "unexpected HTTP {s} to the {} request",
            operation.as_str()
        ))),
    }
}

/// What the state's next step is, before any answer: poll its URL at its instant.
pub fn next_of(state: &PollState) -> Next {
    Next::Poll {
        url: state.url.clone(),
        after: state.next_poll_at,
    }
}

fn failed(state: PollState, failure: LroFailure) -> (PollState, Next) {
    (state, Next::Failed(failure))
}

/// Keeps polling: schedules the next poll after the answer's Retry-After or the default.
fn keep_polling(
    mut state: PollState,
    resp: LroResponse<'_>,
    now: Timestamp,
    config: &PollerConfig,
) -> (PollState, Next) {
    if now >= state.deadline {
        return failed(state, LroFailure::Timeout);
    }
    let delay = poll_delay(resp.headers, now, config);
    state.next_poll_at = after(now, delay).min(state.deadline);
    let next = next_of(&state);
    (state, next)
}

/// Reads the final resource next, immediately.
fn final_get(mut state: PollState, now: Timestamp) -> (PollState, Next) {
    state.kind = PollKind::FinalResult;
    state.url = state
        .location
        .clone()
        .unwrap_or_else(|| state.resource_url.clone());
    state.next_poll_at = now;
    let next = next_of(&state);
    (state, next)
}

/// Advances the machine with one polling answer received at `now`.
pub fn on_response(
    mut state: PollState,
    resp: LroResponse<'_>,
    now: Timestamp,
    config: &PollerConfig,
) -> (PollState, Next) {
    state.polls += 1;
    if resp.status >= 400 {
        state.last_status = Some(resp.status.to_string());
        let body = Box::new(ArmErrorBody::parse(resp.body));
        return failed(
            state,
            LroFailure::Operation {
                status: resp.status.to_string(),
                body,
            },
        );
    }
    // Any URL the answer hands over must stay on the resource's host.
    let new_location =
        match header(resp.headers, "location").map(|l| pinned(&state.resource_url, l)) {
            Some(Err(f)) => return failed(state, f),
            Some(Ok(l)) => Some(l),
            None => None,
        };
    let new_async =
        match header(resp.headers, AZURE_ASYNC_OPERATION).map(|l| pinned(&state.resource_url, l)) {
            Some(Err(f)) => return failed(state, f),
            Some(Ok(l)) => Some(l),
            None => None,
        };

    match state.kind {
        PollKind::Location => match resp.status {
            200 | 201 | 204 => {
                state.last_status = Some(resp.status.to_string());
                match json_body(resp.body) {
                    Some(body) => (state, Next::Done(Some(body))),
                    None => {
                        state.location = None;
                        final_get(state, now)
                    }
                }
            }
            202 => {
                state.last_status = Some("202".into());
                if let Some(l) = new_location {
                    state.url = l.clone();
                    state.location = Some(l);
                }
                keep_polling(state, resp, now, config)
            }
            s => failed(
                state,
                LroFailure::BadResponse(format!("unexpected HTTP {s} while polling")),
            ),
        },
        PollKind::AzureAsyncOperation => {
            if !matches!(resp.status, 200..=202) {
                let msg = format!(
                    "unexpected HTTP {} from the operation status URL",
                    resp.status
                );
                return failed(state, LroFailure::BadResponse(msg));
            }
            if let Some(a) = new_async {
                state.url = a;
            }
            if let Some(l) = new_location {
                state.location = Some(l);
            }
            let doc = json_body(resp.body).unwrap_or_default();
            let status = doc
                .get("status")
                .and_then(|s| s.as_str())
                .unwrap_or("")
                .to_owned();
            state.last_status = Some(if status.is_empty() {
                resp.status.to_string()
            } else {
                status.clone()
            });
            match status.to_ascii_lowercase().as_str() {
                "succeeded" => final_get(state, now),
                "failed" | "canceled" | "cancelled" => {
                    let body = doc
                        .get("error")
                        .and_then(|e| serde_json::from_value::<ArmErrorBody>(e.clone()).ok())
                        .unwrap_or_else(|| ArmErrorBody {
                            code: status.clone(),
                            message: format!("the operation ended with status {status}"),
                            ..ArmErrorBody::default()
                        });
                    failed(
                        state,
                        LroFailure::Operation {
                            status,
                            body: Box::new(body),
                        },
                    )
                }
                // InProgress, and any status ARM adds later: keep polling.
                _ => keep_polling(state, resp, now, config),
            }
        }
        PollKind::FinalResult => match resp.status {
            202 => {
                // The final URL says "not yet": follow it like a Location URL.
                state.kind = PollKind::Location;
                if let Some(l) = new_location {
                    state.url = l.clone();
                    state.location = Some(l);
                }
                state.last_status = Some("202".into());
                keep_polling(state, resp, now, config)
            }
            _ => {
                state.last_status = Some(resp.status.to_string());
                let body = json_body(resp.body);
                (state, Next::Done(body))
            }
        },
    }
}
