//! Poller timelines against a manual clock (exact poll instants), URL replacement and
//! precedence, statuses, failures, deadlines and host pinning. Pure: no I/O.

use super::*;
use chrono::TimeZone;
use drsync_core::{Clock, ManualClock};
use http::HeaderMap;

const RES: &str = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1?api-version=2024-05-01";
const OPS: &str = "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1/operationresults/";

fn t0() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .unwrap()
}

fn op(id: &str) -> String {
    format!("{OPS}{id}?api-version=2024-05-01")
}

/// A scripted answer: status, headers, body.
struct Ans {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn ans(status: u16, headers: &[(&'static str, &str)], body: &str) -> Ans {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, v.parse().unwrap());
    }
    Ans {
        status,
        headers: h,
        body: body.as_bytes().to_vec(),
    }
}

impl Ans {
    fn r(&self) -> LroResponse<'_> {
        LroResponse {
            status: self.status,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

fn config(default_secs: u64, max_wait_secs: u64) -> PollerConfig {
    PollerConfig {
        default_interval: Duration::from_secs(default_secs),
        max_wait: Duration::from_secs(max_wait_secs),
    }
}

const SERVICE_BODY: &str = r#"{"id":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1","name":"apimService1","properties":{"provisioningState":"Succeeded"}}"#;

/// Drives the machine like the async driver does, but on a manual clock: advances the clock
/// to each `after`, feeds the next scripted answer, and records (seconds since start, URL).
fn drive(
    start_answer: Ans,
    answers: Vec<Ans>,
    config: &PollerConfig,
) -> (Vec<(i64, String)>, Next) {
    let clock = ManualClock::new(t0());
    let state = match start(
        LroOperation::Restore,
        RES,
        start_answer.r(),
        clock.now(),
        config,
    )
    .unwrap()
    {
        Started::Pending(s) => s,
        Started::Done(_) => panic!("expected a pending operation"),
    };
    let mut state = state;
    let mut next = next_of(&state);
    let mut polls = Vec::new();
    let mut answers = answers.into_iter();
    loop {
        let Next::Poll { url, after } = next.clone() else {
            return (polls, next);
        };
        assert!(after >= clock.now(), "a poll scheduled in the past");
        clock.set(after);
        polls.push(((after - t0()).num_seconds(), url));
        let a = answers
            .next()
            .expect("the machine polled more often than scripted");
        let (s, n) = on_response(state, a.r(), clock.now(), config);
        // The state always agrees with the instruction.
        if let Next::Poll { url, after } = &n {
            assert_eq!((&s.url, s.next_poll_at), (url, *after));
        }
        state = s;
        next = n;
    }
}

#[test]
fn location_timeline_with_retry_after_default_and_a_new_location() {
    let (polls, end) = drive(
        ans(202, &[("location", &op("a")), ("retry-after", "10")], ""),
        vec![
            ans(202, &[], ""),
            ans(202, &[("location", &op("b")), ("retry-after", "5")], ""),
            ans(202, &[("retry-after", "Fri, 27 Nov 2026 12:01:15 GMT")], ""),
            ans(
                202,
                &[("retry-after-ms", "1500"), ("retry-after", "60")],
                "",
            ),
            ans(200, &[], SERVICE_BODY),
        ],
        &config(30, 3600),
    );
    let instants: Vec<i64> = polls.iter().map(|p| p.0).collect();
    // 10 (Retry-After), +30 (the default), +5, then the HTTP-date 12:01:15, then 1.5 s
    // (milliseconds win), truncated to whole seconds here.
    assert_eq!(instants, [10, 40, 45, 75, 76]);
    let urls: Vec<&str> = polls.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(urls, [op("a"), op("a"), op("b"), op("b"), op("b")]);
    let Next::Done(Some(body)) = end else {
        panic!("{end:?}")
    };
    assert_eq!(body["name"], "apimService1");
}

#[test]
fn async_operation_statuses_are_case_insensitive_and_unknown_ones_keep_polling() {
    let status = |s: &str| format!(r#"{{"status":"{s}"}}"#);
    let (polls, end) = drive(
        ans(
            202,
            &[
                ("location", &op("final")),
                ("azure-asyncoperation", &op("async")),
                ("retry-after", "3"),
            ],
            "",
        ),
        vec![
            ans(200, &[], &status("InProgress")),
            ans(200, &[("retry-after", "7")], &status("Restoring")),
            ans(200, &[], ""),
            ans(200, &[], &status("succeeded")),
            // final-state-via: location, read at once.
            ans(200, &[], SERVICE_BODY),
        ],
        &config(4, 3600),
    );
    assert_eq!(
        polls,
        [
            (3, op("async")),
            (7, op("async")),
            (14, op("async")),
            (18, op("async")),
            (18, op("final")),
        ]
    );
    assert!(matches!(end, Next::Done(Some(_))), "{end:?}");
}

#[test]
fn async_operation_without_location_reads_the_resource() {
    let (polls, end) = drive(
        ans(201, &[("azure-asyncoperation", &op("x"))], ""),
        vec![
            ans(200, &[], r#"{"status":"SUCCEEDED"}"#),
            ans(200, &[], SERVICE_BODY),
        ],
        &config(2, 3600),
    );
    assert_eq!(polls, [(2, op("x")), (2, RES.to_owned())]);
    assert!(matches!(end, Next::Done(Some(_))));
}

#[test]
fn failures_keep_the_arm_error() {
    let (_, end) = drive(
        ans(202, &[("azure-asyncoperation", &op("x"))], ""),
        vec![ans(
            200,
            &[],
            r#"{"status":"Failed","error":{"code":"RestoreFailed","message":"Cannot restore: current SKU is 'StandardV2', backup SKU is 'Standard'"}}"#,
        )],
        &config(1, 3600),
    );
    let Next::Failed(LroFailure::Operation { status, body }) = end else {
        panic!("{end:?}")
    };
    assert_eq!(status, "Failed");
    assert_eq!(body.code, "RestoreFailed");
    assert!(body.message.contains("StandardV2"));

    let (_, end) = drive(
        ans(202, &[("azure-asyncoperation", &op("x"))], ""),
        vec![ans(200, &[], r#"{"status":"Canceled"}"#)],
        &config(1, 3600),
    );
    let Next::Failed(LroFailure::Operation { status, body }) = end else {
        panic!("{end:?}")
    };
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("Canceled", "Canceled")
    );

    // A Location URL answering 4xx: the operation failed.
    let (polls, end) = drive(
        ans(202, &[("location", &op("a"))], ""),
        vec![
            ans(202, &[], ""),
            ans(
                400,
                &[],
                r#"{"error":{"code":"InvalidParameters","message":"CORS is enabled","details":[{"code":"Cors","message":"disable it"}]}}"#,
            ),
        ],
        &config(5, 3600),
    );
    assert_eq!(polls.len(), 2);
    let Next::Failed(LroFailure::Operation { status, body }) = end else {
        panic!("{end:?}")
    };
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("400", "InvalidParameters")
    );
    assert_eq!(body.details[0].code, "Cors");
}

#[test]
fn the_deadline_caps_the_wait() {
    let (polls, end) = drive(
        ans(202, &[("location", &op("a"))], ""),
        vec![
            ans(202, &[], ""),
            ans(202, &[("retry-after", "600")], ""),
            ans(202, &[], ""),
        ],
        &config(25, 60),
    );
    let instants: Vec<i64> = polls.iter().map(|p| p.0).collect();
    // 25, 50, then Retry-After 600 is clamped to the deadline at 60, where it gives up.
    assert_eq!(instants, [25, 50, 60]);
    assert_eq!(end, Next::Failed(LroFailure::Timeout));
}

#[test]
fn foreign_polling_urls_are_refused_before_any_request() {
    let cfg = config(1, 60);
    let now = t0();
    let evil = ans(
        202,
        &[("location", "https://evil.example.com/steal?x=1")],
        "",
    );
    let err = start(LroOperation::Backup, RES, evil.r(), now, &cfg).unwrap_err();
    assert!(matches!(err, LroFailure::ForeignHost(_)), "{err:?}");
    let evil = ans(
        202,
        &[("azure-asyncoperation", "http://management.azure.com/x")],
        "",
    );
    assert!(matches!(
        start(LroOperation::Backup, RES, evil.r(), now, &cfg),
        Err(LroFailure::ForeignHost(_))
    ));

    // Mid-operation: a new Location on another host fails the operation, the URL unchanged.
    let (polls, end) = drive(
        ans(202, &[("location", &op("a"))], ""),
        vec![ans(
            202,
            &[(
                "location",
                "https://management.azure.com.evil.example.com/x",
            )],
            "",
        )],
        &cfg,
    );
    assert_eq!(polls.len(), 1);
    assert!(
        matches!(end, Next::Failed(LroFailure::ForeignHost(_))),
        "{end:?}"
    );
}

#[test]
fn start_reads_the_post_answer() {
    let cfg = config(30, 3600);
    let now = t0();
    let done = ans(200, &[], SERVICE_BODY);
    assert!(matches!(
        start(LroOperation::Backup, RES, done.r(), now, &cfg),
        Ok(Started::Done(Some(_)))
    ));

    let bare = ans(202, &[], "");
    assert!(matches!(
        start(LroOperation::Backup, RES, bare.r(), now, &cfg),
        Err(LroFailure::BadResponse(_))
    ));

    let conflict = ans(
        409,
        &[],
        r#"{"error":{"code":"Conflict","message":"another operation is in progress"}}"#,
    );
    let Err(LroFailure::Operation { status, body }) =
        start(LroOperation::Backup, RES, conflict.r(), now, &cfg)
    else {
        panic!()
    };
    assert_eq!((status.as_str(), body.code.as_str()), ("409", "Conflict"));

    // The spec example's `location` header, lower case; the default interval applies.
    let pending = ans(
        202,
        &[("location", &op("dGVjaGVkX01hbmFnZVJvbGVfNWRiNGI3Ng=="))],
        "",
    );
    let Ok(Started::Pending(state)) = start(LroOperation::Backup, RES, pending.r(), now, &cfg)
    else {
        panic!()
    };
    assert_eq!(state.kind, PollKind::Location);
    assert_eq!(state.next_poll_at, now + chrono::Duration::seconds(30));
    assert_eq!(state.deadline, now + chrono::Duration::hours(1));
    assert_eq!(state.location.as_deref(), Some(state.url.as_str()));
}

#[test]
fn an_empty_200_on_a_location_url_reads_the_resource() {
    let (polls, end) = drive(
        ans(202, &[("location", &op("a"))], ""),
        vec![ans(200, &[], ""), ans(200, &[], SERVICE_BODY)],
        &config(1, 60),
    );
    assert_eq!(polls, [(1, op("a")), (1, RES.to_owned())]);
    assert!(matches!(end, Next::Done(Some(_))));
}

#[test]
fn poll_state_round_trips_through_json_and_resumes_identically() {
    let cfg = config(30, 3600);
    let now = t0();
    let a = ans(202, &[("location", &op("a")), ("retry-after", "10")], "");
    let Ok(Started::Pending(state)) = start(LroOperation::Restore, RES, a.r(), now, &cfg) else {
        panic!()
    };
    let json = serde_json::to_string(&state).unwrap();
    assert!(json.contains(r#""operation":"restore""#), "{json}");
    assert!(json.contains(r#""kind":"location""#), "{json}");
    let back: PollState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    let later = now + chrono::Duration::seconds(10);
    let r = ans(202, &[], "");
    assert_eq!(
        on_response(back, r.r(), later, &cfg),
        on_response(state, r.r(), later, &cfg)
    );
}

// See: #4. Which error answers of a polling URL are the operation's failure.
#[test]
fn operation_failures_versus_problems_of_the_poll() {
    let table = [
        (400, "InvalidParameters", true),
        (404, "OperationNotFound", true),
        (409, "Conflict", true),
        (500, "BackupFailed", true),
        (500, "RestoreFailed", true),
        (500, "InternalServerError", false),
        (500, "", false),
        (503, "serviceunavailable", false),
        (502, "BadGateway", false),
        (504, "GatewayTimeout", false),
        (401, "ExpiredAuthenticationToken", false),
        (403, "AuthorizationFailed", false),
        (403, "", false),
        (408, "RequestTimeout", false),
        (429, "SubscriptionRequestsThrottled", false),
    ];
    for (status, code, failure) in table {
        assert_eq!(
            is_operation_failure(status, code),
            failure,
            "{status} {code}"
        );
    }
}

// See: #4. A server's absurd Retry-After, or a configured max_wait of centuries, saturates
// instead of overflowing the timestamp.
#[test]
fn absurd_waits_saturate_at_the_deadline() {
    let now = t0();
    for retry_after in [
        ("retry-after", "99999999999999"),
        ("retry-after", "18446744073709551615"),
        ("retry-after-ms", "1e300"),
    ] {
        let a = ans(202, &[("location", &op("a")), retry_after], "");
        let Ok(Started::Pending(state)) =
            start(LroOperation::Backup, RES, a.r(), now, &config(30, 3600))
        else {
            panic!()
        };
        assert_eq!(state.next_poll_at, state.deadline, "{retry_after:?}");
        let (state, next) = on_response(state, a.r(), now, &config(30, 3600));
        assert_eq!(next_of(&state), next);
        assert_eq!(state.next_poll_at, state.deadline);
    }
    let forever = PollerConfig {
        default_interval: Duration::from_secs(1),
        max_wait: Duration::MAX,
    };
    let a = ans(202, &[("location", &op("a"))], "");
    let Ok(Started::Pending(state)) = start(LroOperation::Backup, RES, a.r(), now, &forever) else {
        panic!()
    };
    assert_eq!(state.deadline, chrono::DateTime::<chrono::Utc>::MAX_UTC);
    assert_eq!(state.next_poll_at, now + chrono::Duration::seconds(1));
}

// See: #4 and PROTOCOL.md section 1. Gaps of the timeline tests: a new Location on a final
// read, Azure-AsyncOperation replacing itself, a Location kept for the final read while the
// async URL polls, and an error status from the final read.
#[test]
fn urls_replaced_mid_operation_and_errors_from_the_final_read() {
    let status = |s: &str| format!(r#"{{"status":"{s}"}}"#);
    let (polls, end) = drive(
        ans(
            202,
            &[
                ("azure-asyncoperation", &op("async1")),
                ("location", &op("final1")),
            ],
            "",
        ),
        vec![
            ans(
                200,
                &[
                    ("azure-asyncoperation", &op("async2")),
                    ("location", &op("final2")),
                ],
                &status("inprogress"),
            ),
            ans(200, &[], &status("Succeeded")),
            // The final URL says "not yet" and moves: follow it like a Location URL.
            ans(
                202,
                &[("location", &op("final3")), ("retry-after", "2")],
                "",
            ),
            ans(200, &[], SERVICE_BODY),
        ],
        &config(5, 3600),
    );
    assert_eq!(
        polls,
        [
            (5, op("async1")),
            (10, op("async2")),
            (10, op("final2")),
            (12, op("final3")),
        ]
    );
    assert!(matches!(end, Next::Done(Some(_))), "{end:?}");

    // A 5xx with an operation code from the Location URL is the operation's failure.
    let (_, end) = drive(
        ans(202, &[("location", &op("a"))], ""),
        vec![ans(
            500,
            &[],
            r#"{"error":{"code":"BackupFailed","message":"midway"}}"#,
        )],
        &config(1, 60),
    );
    let Next::Failed(LroFailure::Operation { status, body }) = end else {
        panic!("{end:?}")
    };
    assert_eq!(
        (status.as_str(), body.code.as_str()),
        ("500", "BackupFailed")
    );

    // An async status document without a status (or not JSON) keeps polling, up to the
    // deadline.
    let (polls, end) = drive(
        ans(202, &[("azure-asyncoperation", &op("x"))], ""),
        vec![ans(200, &[], "not json"), ans(200, &[], "{}")],
        &config(30, 40),
    );
    assert_eq!(polls.iter().map(|p| p.0).collect::<Vec<_>>(), [30, 40]);
    assert_eq!(end, Next::Failed(LroFailure::Timeout));
}

// See: #4. A server asking for no wait at all is polled at the default interval, not in a
// tight loop (azure-core does the same).
#[test]
fn a_zero_retry_after_falls_back_to_the_default_interval() {
    let (polls, end) = drive(
        ans(202, &[("location", &op("a")), ("retry-after", "0")], ""),
        vec![
            ans(202, &[("retry-after-ms", "0")], ""),
            ans(202, &[("retry-after", "Fri, 27 Nov 2026 11:00:00 GMT")], ""),
            ans(202, &[("retry-after-ms", "250")], ""),
            ans(200, &[], SERVICE_BODY),
        ],
        &config(20, 3600),
    );
    let instants: Vec<i64> = polls.iter().map(|p| p.0).collect();
    assert_eq!(instants, [20, 40, 60, 60]);
    assert!(matches!(end, Next::Done(Some(_))));
}
