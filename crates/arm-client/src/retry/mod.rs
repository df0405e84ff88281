//! Deciding whether and when to try again. Pure: no clock, no sleep, no randomness of its own.
//!
//! First a failure is classified ([`classify_status`], [`FailureClass`]), then
//! [`RetryPolicy::decide`] turns (attempt, elapsed, class, the server's `Retry-After`, a
//! jitter sample) into [`RetryDecision::Retry`] or [`RetryDecision::GiveUp`]. The wait is
//! never shorter than what the server asked for ([`server_retry_after`]).
//!
//! [`slow_down`] is the gentler half of throttling: as `x-ms-ratelimit-remaining-*` runs low,
//! requests are spaced out before ARM has to answer 429.
//!
//! The numbers and why:
//! - backoff starts at 0.8 s and doubles (the Azure SDKs' `retry_backoff_factor` of 0.8),
//!   capped at 60 s a wait, with the upper half jittered so parallel clients spread out;
//! - at most 10 attempts (the Python SDK's `retry_total` of 10) and 10 minutes in all.
//!
//! A request that must not be sent twice (a backup or restore POST) is retried only after a
//! [definite refusal](is_definite_refusal); any other failure after it was sent leaves its
//! fate unknown, and the pipeline reports that instead of resending.

use std::time::Duration;

use drsync_core::Timestamp;

#[cfg(test)]
mod tests;

/// What kind of failure a response or transport error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// `429 Too Many Requests`: wait (at least Retry-After) and try again.
    Throttled,
    /// The connection failed (refused, reset, timed out): try again if it is safe to.
    Transient,
    /// A server error (`408`, `500`, `502`, `503`, `504`): try again.
    Server,
    /// A client error (`4xx` other than 408/429): the same request will fail the same way.
    Client,
    /// Anything that cannot get better by retrying (bad configuration, undecodable answers).
    Fatal,
}

impl FailureClass {
    /// Whether this class is ever retried.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::Server)
    }
}

/// Classifies an HTTP status that is not a success.
pub fn classify_status(status: u16) -> FailureClass {
    match status {
        429 => FailureClass::Throttled,
        408 | 500 | 502 | 503 | 504 => FailureClass::Server,
        400..=499 => FailureClass::Client,
        _ => FailureClass::Fatal,
    }
}

/// Whether a failed answer to a request that must not be sent twice (a backup or restore
/// POST) says for certain that the request was not acted upon, so sending it again cannot
/// start a second operation.
///
/// - `429`: ARM throttles before it dispatches a request to the resource provider
///   (PROTOCOL.md section 4): refused.
/// - `503` with a `Retry-After` (`has_retry_after`): the front door shedding load: refused.
/// - `500`, `502`, `504`, `408` and a `503` without `Retry-After` may come from a gateway or
///   a resource provider after the operation was accepted: unknown.
///
/// Client errors (`4xx`) are definite answers too, but they are never retried anyway, and a
/// `401` is handled before this (the token is refreshed once).
pub fn is_definite_refusal(status: u16, has_retry_after: bool) -> bool {
    match status {
        429 => true,
        503 => has_retry_after,
        _ => false,
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop and report the last error.
    GiveUp,
}

/// The retry policy's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included.
    pub max_attempts: u32,
    /// No retry is scheduled that would start later than this after the first attempt.
    pub max_elapsed: Duration,
    /// The first backoff; it doubles with every attempt.
    pub base_delay: Duration,
    /// The longest backoff the policy chooses by itself (a server's Retry-After may be longer).
    pub max_delay: Duration,
    /// The jittered fraction of each backoff, 0.0 to 1.0: with 0.5 a 4 s backoff becomes
    /// 2-4 s.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            max_elapsed: Duration::from_secs(600),
            base_delay: Duration::from_millis(800),
            max_delay: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt + 1`, for a jitter sample in `[0, 1)`.
    pub fn backoff(&self, attempt: u32, sample: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let sample = sample.clamp(0.0, 1.0);
        raw.mul_f64(1.0 - jitter + jitter * sample)
    }

    /// Decides after attempt number `attempt` (1 for the first) failed with `class`, `elapsed`
    /// after the first attempt started, the server having asked for `server_after` (if it
    /// did). `sample` is a uniform random number in `[0, 1)` for the jitter.
    pub fn decide(
        &self,
        attempt: u32,
        elapsed: Duration,
        class: FailureClass,
        server_after: Option<Duration>,
        sample: f64,
    ) -> RetryDecision {
        if !class.is_retryable() || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let wait = self
            .backoff(attempt, sample)
            .max(server_after.unwrap_or_default());
        if elapsed.saturating_add(wait) > self.max_elapsed {
            return RetryDecision::GiveUp;
        }
        RetryDecision::Retry(wait)
    }
}

/// The wait a response asks for, from the most precise header present: `retry-after-ms` or
/// `x-ms-retry-after-ms` (milliseconds), else `Retry-After` (integer seconds or an HTTP-date,
/// measured from `now`; a date in the past means no wait). Unparsable values are ignored.
pub fn server_retry_after(headers: &http::HeaderMap, now: Timestamp) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = text(name).and_then(|t| t.parse::<f64>().ok()) {
            if ms.is_finite() && ms >= 0.0 {
                // A value too large for a `Duration` is a wish to wait forever, not a panic.
                return Some(Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::MAX));
            }
        }
    }
    parse_retry_after(text("retry-after")?, now)
}

/// Parses one `Retry-After` value: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at: Timestamp = chrono::DateTime::from(at);
    Some(
        at.signed_duration_since(now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The lowest `x-ms-ratelimit-remaining-{subscription,tenant}-{reads,writes,deletes}` value
/// in a response, if any.
pub fn ratelimit_remaining(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-ratelimit-remaining-"))
        .filter_map(|(_, v)| v.to_str().ok()?.trim().parse::<u64>().ok())
        .min()
}

/// How long to hold back the next request of a bucket whose `remaining` requests fell to or
/// below `low_water`: the time the bucket needs to refill to `low_water + 1` at
/// `refill_per_second`. `None` while there is headroom.
pub fn slow_down(remaining: u64, low_water: u64, refill_per_second: f64) -> Option<Duration> {
    if remaining > low_water || refill_per_second <= 0.0 {
        return None;
    }
    let missing = (low_water - remaining + 1) as f64;
    Some(Duration::from_secs_f64(missing / refill_per_second))
}
