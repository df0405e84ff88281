//! Retry-policy tables, status classification, `Retry-After` parsing (seconds, HTTP-date,
//! milliseconds, absurd values) and the slow-down rule. Pure: no clock, no I/O.

use super::*;
use chrono::TimeZone;
use http::HeaderMap;

fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn statuses_are_classified() {
    let table = [
        (429, FailureClass::Throttled),
        (408, FailureClass::Server),
        (500, FailureClass::Server),
        (502, FailureClass::Server),
        (503, FailureClass::Server),
        (504, FailureClass::Server),
        (400, FailureClass::Client),
        (403, FailureClass::Client),
        (404, FailureClass::Client),
        (409, FailureClass::Client),
        (501, FailureClass::Fatal),
        (505, FailureClass::Fatal),
        (302, FailureClass::Fatal),
    ];
    for (status, class) in table {
        assert_eq!(classify_status(status), class, "{status}");
    }
}

#[test]
fn policy_table() {
    // Jitter 0 makes the backoff exact: 0.8, 1.6, 3.2, ... capped at 60 s.
    let p = RetryPolicy {
        jitter: 0.0,
        ..RetryPolicy::default()
    };
    use FailureClass::*;
    use RetryDecision::*;
    let s0 = Duration::ZERO;
    let table: &[(u32, Duration, FailureClass, Option<Duration>, RetryDecision)] = &[
        (1, s0, Transient, None, Retry(secs(0.8))),
        (2, s0, Server, None, Retry(secs(1.6))),
        (3, s0, Throttled, None, Retry(secs(3.2))),
        (7, s0, Server, None, Retry(secs(51.2))),
        (8, s0, Server, None, Retry(secs(60.0))),
        (9, s0, Server, None, Retry(secs(60.0))),
        // The tenth attempt is the last.
        (10, s0, Server, None, GiveUp),
        // The server's Retry-After wins when it is longer, and may exceed max_delay.
        (1, s0, Throttled, Some(secs(17.0)), Retry(secs(17.0))),
        (1, s0, Throttled, Some(secs(120.0)), Retry(secs(120.0))),
        // ... and the backoff wins when the server asks for less.
        (4, s0, Throttled, Some(secs(1.0)), Retry(secs(6.4))),
        // Never retried.
        (1, s0, Client, None, GiveUp),
        (1, s0, Fatal, Some(secs(1.0)), GiveUp),
        // The elapsed cap: no retry that would start after 600 s.
        (2, secs(598.0), Server, None, Retry(secs(1.6))),
        (2, secs(598.5), Server, None, GiveUp),
        (1, secs(599.2), Server, None, Retry(secs(0.8))),
        (1, secs(500.0), Throttled, Some(secs(101.0)), GiveUp),
    ];
    for (attempt, elapsed, class, after, want) in table {
        assert_eq!(
            p.decide(*attempt, *elapsed, *class, *after, 0.0),
            *want,
            "attempt {attempt}, elapsed {elapsed:?}, {class:?}, {after:?}"
        );
    }
}

#[test]
fn jitter_spreads_the_upper_half() {
    let p = RetryPolicy::default(); // jitter 0.5
    assert_eq!(p.backoff(3, 0.0), secs(1.6));
    assert!((p.backoff(3, 0.5).as_secs_f64() - 2.4).abs() < 1e-6);
    assert!(p.backoff(3, 0.999_999) <= secs(3.2));
    // Out-of-range samples are clamped.
    assert_eq!(p.backoff(3, 7.0), secs(3.2));
    assert_eq!(p.backoff(3, -1.0), secs(1.6));
    // Huge attempt numbers do not overflow.
    assert_eq!(p.backoff(u32::MAX, 1.0), secs(60.0));
}

#[test]
fn retry_after_seconds_date_and_milliseconds() {
    let n = now();
    assert_eq!(
        server_retry_after(&headers(&[("retry-after", "7")]), n),
        Some(secs(7.0))
    );
    assert_eq!(
        server_retry_after(&headers(&[("retry-after", " 0 ")]), n),
        Some(Duration::ZERO)
    );
    // An HTTP-date, 90 s ahead of now.
    assert_eq!(
        server_retry_after(
            &headers(&[("retry-after", "Fri, 27 Nov 2026 12:01:30 GMT")]),
            n
        ),
        Some(secs(90.0))
    );
    // A date in the past: no wait.
    assert_eq!(
        server_retry_after(
            &headers(&[("retry-after", "Fri, 27 Nov 2026 11:00:00 GMT")]),
            n
        ),
        Some(Duration::ZERO)
    );
    // Milliseconds are more precise and win over seconds.
    assert_eq!(
        server_retry_after(
            &headers(&[("retry-after", "2"), ("retry-after-ms", "1500")]),
            n
        ),
        Some(secs(1.5))
    );
    assert_eq!(
        server_retry_after(
            &headers(&[("retry-after", "2"), ("x-ms-retry-after-ms", "250")]),
            n
        ),
        Some(secs(0.25))
    );
    // Garbage is ignored, falling back to the next header.
    assert_eq!(
        server_retry_after(
            &headers(&[("retry-after-ms", "soon"), ("retry-after", "3")]),
            n
        ),
        Some(secs(3.0))
    );
    assert_eq!(
        server_retry_after(&headers(&[("retry-after", "later")]), n),
        None
    );
    assert_eq!(
        server_retry_after(&headers(&[("retry-after", "-5")]), n),
        None
    );
    assert_eq!(server_retry_after(&HeaderMap::new(), n), None);
}

#[test]
fn slowing_down_as_the_bucket_empties() {
    let h = headers(&[
        ("x-ms-ratelimit-remaining-subscription-reads", "240"),
        ("x-ms-ratelimit-remaining-tenant-reads", "12"),
    ]);
    assert_eq!(ratelimit_remaining(&h), Some(12));
    assert_eq!(ratelimit_remaining(&HeaderMap::new()), None);
    assert_eq!(slow_down(21, 20, 25.0), None);
    assert_eq!(slow_down(20, 20, 25.0), Some(secs(1.0 / 25.0)));
    assert_eq!(slow_down(0, 20, 25.0), Some(secs(21.0 / 25.0)));
    assert_eq!(slow_down(0, 20, 10.0), Some(secs(2.1)));
    assert_eq!(slow_down(0, 20, 0.0), None);
}

// See: #4. What a backup or restore POST may be resent after.
#[test]
fn only_definite_refusals_allow_resending_a_backup_or_restore() {
    let table = [
        (429, false, true),
        (429, true, true),
        (503, true, true),
        (503, false, false),
        (500, true, false),
        (500, false, false),
        (502, true, false),
        (504, false, false),
        (408, true, false),
    ];
    for (status, has_retry_after, refused) in table {
        assert_eq!(
            is_definite_refusal(status, has_retry_after),
            refused,
            "{status} retry-after {has_retry_after}"
        );
    }
}

#[test]
fn absurd_retry_after_values_do_not_panic() {
    let n = now();
    assert_eq!(
        server_retry_after(&headers(&[("retry-after-ms", "1e300")]), n),
        Some(Duration::MAX)
    );
    assert_eq!(
        server_retry_after(&headers(&[("retry-after", "18446744073709551615")]), n),
        Some(Duration::from_secs(u64::MAX))
    );
    // The policy then gives up instead of sleeping for ever.
    let p = RetryPolicy::default();
    assert_eq!(
        p.decide(
            1,
            Duration::ZERO,
            FailureClass::Throttled,
            Some(Duration::MAX),
            0.5
        ),
        RetryDecision::GiveUp
    );
}
