//! The HTTP front: one handler that routes Entra ID, IMDS, ARM and control requests.
//!
//! ARM paths are matched case-insensitively, as ARM does. Every request is recorded in the
//! request log with what it was (`backup-post`, `poll`, ...). For ARM requests the pipeline is:
//! added latency, random drop/500/503, authentication, api-version, region availability,
//! throttling, then the operation itself; `x-ms-ratelimit-remaining-subscription-*` headers
//! are added to every response under `/subscriptions/{id}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use drsync_core::{Region, SkuTier};
use rand::Rng as _;
use serde_json::{Value, json};

use crate::envelope::{Envelope, Payload, SkuJson, Source};
use crate::model::{
    ArmError, BlobLocation, ChildKind, Operation, OperationKind, OperationStatus, Plan,
    ProvisioningState, RequestRecord, Service, ServiceKey, ts,
};
use crate::ops::{self, AccessRequest, ServiceIdentity};
use crate::state::{App, Audience, Inner};
use crate::throttle::{RequestClass, SubscriptionBuckets, Take};

/// API versions the emulator serves (PROTOCOL.md section 1; the three).
pub const SUPPORTED_API_VERSIONS: [&str; 3] = ["2021-08-01", "2022-08-01", "2024-05-01"];

/// The largest request body accepted.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// A response plus what the log should say about it.
pub(crate) struct Answer {
    response: Box<Response>,
    error_code: Option<String>,
    dropped: bool,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        let mut r = (
            StatusCode::from_u16(status).expect("valid status"),
            axum::Json(body),
        )
            .into_response();
        r.headers_mut().insert(
            "x-ms-request-id",
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("ascii"),
        );
        Self {
            response: Box::new(r),
            error_code: None,
            dropped: false,
        }
    }

    fn empty(status: u16) -> Self {
        let r = Response::builder()
            .status(status)
            .body(Body::empty())
            .expect("valid response");
        Self {
            response: Box::new(r),
            error_code: None,
            dropped: false,
        }
    }

    pub(crate) fn arm_error(e: &ArmError) -> Self {
        let mut a = Self::json(e.status, e.body());
        a.error_code = Some(e.code.clone());
        a
    }

    /// An Entra-style OAuth error.
    fn oauth_error(
        now: drsync_core::Timestamp,
        status: u16,
        error: &str,
        aadsts: u32,
        description: &str,
    ) -> Self {
        let body = json!({
            "error": error,
            "error_description": format!("AADSTS{aadsts}: {description}"),
            "error_codes": [aadsts],
            "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string(),
        });
        let mut a = Self::json(status, body);
        a.error_code = Some(error.to_owned());
        a
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.response.headers_mut().insert(
            name,
            HeaderValue::from_str(&value).expect("header value is ascii"),
        );
        self
    }

    /// A connection dropped without a response: the body stream fails before any byte.
    fn dropped() -> Self {
        let stream = futures::stream::once(async {
            Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected fault: connection dropped",
            ))
        });
        let response = Response::builder()
            .status(200)
            .body(Body::from_stream(stream))
            .expect("valid response");
        Self {
            response: Box::new(response),
            error_code: None,
            dropped: true,
        }
    }
}

/// A JSON response (for the control API).
pub(crate) fn json_answer(status: u16, body: Value) -> Answer {
    Answer::json(status, body)
}

/// What a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    TokenV2 {
        tenant: String,
    },
    TokenV1 {
        tenant: String,
    },
    ManagedIdentity,
    Control,
    ListBySubscription {
        sub: String,
    },
    ListByResourceGroup {
        sub: String,
        rg: String,
    },
    Service {
        key: ServiceKey,
    },
    Backup {
        key: ServiceKey,
    },
    Restore {
        key: ServiceKey,
    },
    OperationResult {
        key: ServiceKey,
        id: String,
    },
    OperationStatus {
        key: ServiceKey,
        id: String,
    },
    SyncState {
        key: ServiceKey,
    },
    ChildList {
        key: ServiceKey,
        kind: ChildKind,
    },
    Child {
        key: ServiceKey,
        kind: ChildKind,
        name: String,
    },
    Unknown {
        sub: Option<String>,
    },
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match l.as_slice() {
        ["_emulator", ..] => return Route::Control,
        [_, "oauth2", "v2.0", "token"] => {
            return Route::TokenV2 {
                tenant: segs[0].to_owned(),
            };
        }
        [_, "oauth2", "token"] => {
            return Route::TokenV1 {
                tenant: segs[0].to_owned(),
            };
        }
        ["metadata", "identity", "oauth2", "token"] => return Route::ManagedIdentity,
        _ => {}
    }
    if l.first() != Some(&"subscriptions") || segs.len() < 2 {
        return Route::Unknown { sub: None };
    }
    let sub = segs[1].to_ascii_lowercase();
    match l.as_slice() {
        [_, _, "providers", "microsoft.apimanagement", "service"] => {
            return Route::ListBySubscription { sub };
        }
        [
            _,
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.apimanagement",
            "service",
        ] => {
            return Route::ListByResourceGroup {
                sub,
                rg: segs[3].to_owned(),
            };
        }
        _ => {}
    }
    let is_service = l.len() >= 8
        && l[2] == "resourcegroups"
        && l[4] == "providers"
        && l[5] == "microsoft.apimanagement"
        && l[6] == "service";
    if !is_service {
        return Route::Unknown { sub: Some(sub) };
    }
    let key = ServiceKey::new(&sub, segs[3], segs[7]);
    let rest = &l[8..];
    match rest {
        [] => Route::Service { key },
        ["backup"] => Route::Backup { key },
        ["restore"] => Route::Restore { key },
        ["operationresults", _] => Route::OperationResult {
            key,
            id: segs[9].to_owned(),
        },
        ["operationsstatus", _] => Route::OperationStatus {
            key,
            id: segs[9].to_owned(),
        },
        ["tenant", "configuration", "syncstate"] => Route::SyncState { key },
        [kind] => match ChildKind::parse(kind) {
            Some(kind) => Route::ChildList { key, kind },
            None => Route::Unknown { sub: Some(sub) },
        },
        [kind, _] => match ChildKind::parse(kind) {
            Some(kind) => Route::Child {
                key,
                kind,
                name: segs[9].to_owned(),
            },
            None => Route::Unknown { sub: Some(sub) },
        },
        _ => Route::Unknown { sub: Some(sub) },
    }
}

fn kind_name(route: &Route, method: &Method) -> &'static str {
    match route {
        Route::TokenV2 { .. } => "token-v2",
        Route::TokenV1 { .. } => "token-v1",
        Route::ManagedIdentity => "managed-identity-token",
        Route::Control => "control",
        Route::ListBySubscription { .. } | Route::ListByResourceGroup { .. } => "service-list",
        Route::Service { .. } => match *method {
            Method::PUT => "service-put",
            Method::PATCH => "service-patch",
            Method::DELETE => "service-delete",
            _ => "service-get",
        },
        Route::Backup { .. } => "backup-post",
        Route::Restore { .. } => "restore-post",
        Route::OperationResult { .. } => "poll",
        Route::OperationStatus { .. } => "async-poll",
        Route::SyncState { .. } => "sync-state",
        Route::ChildList { .. } => "child-list",
        Route::Child { .. } => match *method {
            Method::PUT => "child-put",
            Method::DELETE => "child-delete",
            _ => "child-get",
        },
        Route::Unknown { .. } => "unknown",
    }
}

/// Parsed pieces of a request.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub raw_query: Option<String>,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    pub base: String,
}

/// The one handler.
pub(crate) async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let raw_query = parts.uri.query().map(str::to_owned);
    let query: BTreeMap<String, String> = raw_query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query,
        raw_query,
        headers: parts.headers,
        body,
        base: format!("http://{host}"),
    };
    let route = route(&req.path);
    let time = app.now();
    let answer = match &route {
        Route::Control => crate::control::handle(&app, &req).await,
        Route::TokenV2 { .. } | Route::TokenV1 { .. } | Route::ManagedIdentity => {
            latency(&app).await;
            token(&app, &route, &req)
        }
        _ => {
            latency(&app).await;
            arm(&app, &route, &req).await
        }
    };
    let status = if answer.dropped {
        0
    } else {
        answer.response.status().as_u16()
    };
    let kind = kind_name(&route, &req.method);
    app.inner.lock().record(RequestRecord {
        seq: 0,
        time,
        method: req.method.to_string(),
        path: req.path.clone(),
        query: req.raw_query.clone(),
        status,
        kind: kind.to_owned(),
        error_code: answer.error_code.clone(),
    });
    tracing::debug!(method = %req.method, path = %req.path, status, kind, "request");
    *answer.response
}

async fn latency(app: &App) {
    let ms = app.inner.lock().faults.latency_ms;
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Entra ID and managed identity.

const ARM_RESOURCE: &str = "https://management.azure.com/";

fn audience_of(resource: &str) -> Audience {
    let r = resource.trim_end_matches("/.default").trim_end_matches('/');
    if r.eq_ignore_ascii_case("https://management.azure.com")
        || r.eq_ignore_ascii_case("https://management.core.windows.net")
    {
        Audience::Arm
    } else {
        Audience::Other(r.to_owned())
    }
}

fn token(app: &App, route: &Route, req: &Req) -> Answer {
    if app.inner.lock().faults.token_endpoint_down {
        let mut a = Answer::json(
            503,
            json!({"error": "temporarily_unavailable",
            "error_description": "AADSTS90033: A transient error has occurred. Please try again.",
            "error_codes": [90033]}),
        );
        a.error_code = Some("temporarily_unavailable".into());
        return a.header("retry-after", "1".into());
    }
    let lifetime = app.config.token_lifetime_secs;
    match route {
        Route::ManagedIdentity => {
            if !app.config.managed_identity_endpoint {
                return Answer::empty(404);
            }
            if req.method != Method::GET {
                return Answer::oauth_error(
                    app.now(),
                    405,
                    "invalid_request",
                    50011,
                    "The managed identity endpoint accepts GET only.",
                );
            }
            let metadata = req.headers.get("metadata").and_then(|v| v.to_str().ok());
            if !metadata.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                let mut a = Answer::json(
                    400,
                    json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
                );
                a.error_code = Some("invalid_request".into());
                return a;
            }
            let Some(resource) = req.query.get("resource") else {
                let mut a = Answer::json(
                    400,
                    json!({"error": "invalid_request", "error_description": "Required query variable 'resource' is missing"}),
                );
                a.error_code = Some("invalid_request".into());
                return a;
            };
            if let Some(cid) = req.query.get("client_id")
                && !app
                    .config
                    .managed_identity_client_ids
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(cid))
            {
                let mut a = Answer::json(
                    400,
                    json!({"error": "invalid_request", "error_description": "Identity not found"}),
                );
                a.error_code = Some("invalid_request".into());
                return a;
            }
            let mut inner = app.inner.lock();
            let (tok, exp) = app.mint_token(
                &mut inner,
                audience_of(resource),
                chrono::Duration::seconds(lifetime as i64),
            );
            let now = app.now_with(&inner).timestamp();
            Answer::json(
                200,
                json!({
                    "access_token": tok.expose(),
                    "client_id": req.query.get("client_id").cloned().unwrap_or_else(|| "00000000-0000-0000-0000-0000000001d1".into()),
                    "expires_in": lifetime.to_string(),
                    "expires_on": exp.timestamp().to_string(),
                    "ext_expires_in": lifetime.to_string(),
                    "not_before": now.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                }),
            )
        }
        Route::TokenV2 { tenant } | Route::TokenV1 { tenant } => {
            let v1 = matches!(route, Route::TokenV1 { .. });
            if req.method != Method::POST {
                return Answer::oauth_error(
                    app.now(),
                    405,
                    "invalid_request",
                    900561,
                    "The endpoint only accepts POST requests.",
                );
            }
            let form: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body)
                .into_owned()
                .collect();
            match form.get("grant_type").map(String::as_str) {
                Some("client_credentials") => {}
                Some(other) => {
                    return Answer::oauth_error(
                        app.now(),
                        400,
                        "unsupported_grant_type",
                        70003,
                        &format!("The app requested an unsupported grant type '{other}'."),
                    );
                }
                None => {
                    return Answer::oauth_error(
                        app.now(),
                        400,
                        "invalid_request",
                        900144,
                        "The request body must contain the following parameter: 'grant_type'.",
                    );
                }
            }
            let Some(client_id) = form.get("client_id") else {
                return Answer::oauth_error(
                    app.now(),
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_id'.",
                );
            };
            let resource = if v1 {
                form.get("resource")
                    .cloned()
                    .unwrap_or_else(|| ARM_RESOURCE.into())
            } else {
                match form.get("scope") {
                    Some(s) if s.ends_with("/.default") => s.clone(),
                    Some(s) => {
                        return Answer::oauth_error(
                            app.now(),
                            400,
                            "invalid_scope",
                            1002012,
                            &format!(
                                "The provided value for scope {s} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                            ),
                        );
                    }
                    None => {
                        return Answer::oauth_error(
                            app.now(),
                            400,
                            "invalid_request",
                            900144,
                            "The request body must contain the following parameter: 'scope'.",
                        );
                    }
                }
            };
            let tenant_ok = tenant.eq_ignore_ascii_case(&app.config.tenant_id)
                || app
                    .config
                    .apps
                    .iter()
                    .any(|a| a.tenant.eq_ignore_ascii_case(tenant));
            if !tenant_ok {
                return Answer::oauth_error(
                    app.now(),
                    400,
                    "invalid_request",
                    90002,
                    &format!(
                        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                    ),
                );
            }
            let Some(app_reg) = app
                .config
                .apps
                .iter()
                .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
            else {
                return Answer::oauth_error(
                    app.now(),
                    400,
                    "unauthorized_client",
                    700016,
                    &format!(
                        "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                    ),
                );
            };
            let secret_ok = form
                .get("client_secret")
                .is_some_and(|s| s == app_reg.client_secret.expose());
            if !secret_ok {
                return Answer::oauth_error(
                    app.now(),
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                );
            }
            let mut inner = app.inner.lock();
            let (tok, exp) = app.mint_token(
                &mut inner,
                audience_of(&resource),
                chrono::Duration::seconds(lifetime as i64),
            );
            let now = app.now_with(&inner).timestamp();
            if v1 {
                Answer::json(
                    200,
                    json!({
                        "token_type": "Bearer",
                        "expires_in": lifetime.to_string(),
                        "ext_expires_in": lifetime.to_string(),
                        "expires_on": exp.timestamp().to_string(),
                        "not_before": now.to_string(),
                        "resource": resource,
                        "access_token": tok.expose(),
                    }),
                )
            } else {
                Answer::json(
                    200,
                    json!({
                        "token_type": "Bearer",
                        "expires_in": lifetime,
                        "ext_expires_in": lifetime,
                        "access_token": tok.expose(),
                    }),
                )
            }
        }
        _ => Answer::empty(404),
    }
}

// ---------------------------------------------------------------------------------------------
// ARM.

fn www_authenticate(tenant: &str, description: &str) -> String {
    format!(
        "Bearer authorization_uri=\"https://login.windows.net/{tenant}\", error=\"invalid_token\", error_description=\"{description}\""
    )
}

fn unauthorized(app: &App, code: &str, message: String) -> Answer {
    Answer::arm_error(&ArmError::new(401, code, message.clone())).header(
        "www-authenticate",
        www_authenticate(&app.config.tenant_id, &message.replace('"', "'")),
    )
}

fn authenticate(app: &App, inner: &Inner, req: &Req) -> Result<(), Answer> {
    let Some(header) = req.headers.get("authorization") else {
        return Err(unauthorized(
            app,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
        ));
    };
    let header = header.to_str().unwrap_or("");
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Err(unauthorized(
            app,
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .into(),
        ));
    };
    let Some(info) = inner.tokens.get(token.trim()) else {
        return Err(unauthorized(
            app,
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
        ));
    };
    let now = app.now_with(inner);
    if info.expires_at <= now {
        return Err(unauthorized(
            app,
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                ts(info.expires_at),
                ts(now)
            ),
        ));
    }
    if let Audience::Other(aud) = &info.audience {
        return Err(unauthorized(
            app,
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{aud}'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'."
            ),
        ));
    }
    Ok(())
}

fn check_api_version(req: &Req) -> Result<String, ArmError> {
    let Some(v) = req.query.get("api-version") else {
        return Err(ArmError::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let well_formed = {
        let date = v.strip_suffix("-preview").unwrap_or(v);
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
    };
    if !well_formed {
        return Err(ArmError::new(
            400,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                SUPPORTED_API_VERSIONS.join(",")
            ),
        ));
    }
    if !SUPPORTED_API_VERSIONS.contains(&v.as_str()) {
        return Err(ArmError::new(
            400,
            "NoRegisteredProviderFound",
            format!(
                "No registered resource provider found for location 'global' and API version '{v}' for type 'service'. The supported api-versions are '{}'.",
                SUPPORTED_API_VERSIONS.join(", ")
            ),
        ));
    }
    Ok(v.clone())
}

fn subscription_of(route: &Route) -> Option<String> {
    match route {
        Route::ListBySubscription { sub } | Route::ListByResourceGroup { sub, .. } => {
            Some(sub.clone())
        }
        Route::Service { key }
        | Route::Backup { key }
        | Route::Restore { key }
        | Route::OperationResult { key, .. }
        | Route::OperationStatus { key, .. }
        | Route::SyncState { key }
        | Route::ChildList { key, .. }
        | Route::Child { key, .. } => Some(key.subscription.clone()),
        Route::Unknown { sub } => sub.clone(),
        _ => None,
    }
}

fn service_key_of(route: &Route) -> Option<&ServiceKey> {
    match route {
        Route::Service { key }
        | Route::Backup { key }
        | Route::Restore { key }
        | Route::OperationResult { key, .. }
        | Route::OperationStatus { key, .. }
        | Route::SyncState { key }
        | Route::ChildList { key, .. }
        | Route::Child { key, .. } => Some(key),
        _ => None,
    }
}

fn buckets<'a>(app: &App, inner: &'a mut Inner, sub: &str) -> &'a mut SubscriptionBuckets {
    let now = app.now_with(inner);
    let t = app.config.throttle;
    inner
        .buckets
        .entry(sub.to_owned())
        .or_insert_with(|| SubscriptionBuckets::new(&t, now))
}

async fn arm(app: &Arc<App>, route: &Route, req: &Req) -> Answer {
    let sub = subscription_of(route);
    let mut answer = arm_inner(app, route, req).await;
    if let (Some(sub), false) = (sub, answer.dropped) {
        let mut inner = app.inner.lock();
        let now = app.now_with(&inner);
        for (name, remaining) in buckets(app, &mut inner, &sub).remaining(now) {
            answer = answer.header(name, remaining.to_string());
        }
    }
    answer
}

async fn arm_inner(app: &Arc<App>, route: &Route, req: &Req) -> Answer {
    // Injected transport faults come first: they happen in front of ARM.
    {
        let mut inner = app.inner.lock();
        let f = inner.faults.clone();
        let roll: f64 = inner.rng.random();
        if roll < f.drop_connection {
            return Answer::dropped();
        }
        if roll < f.drop_connection + f.status_500 {
            return Answer::arm_error(&ArmError::new(
                500,
                "InternalServerError",
                "Encountered internal server error. (injected fault)",
            ));
        }
        if roll < f.drop_connection + f.status_500 + f.status_503 {
            return Answer::arm_error(&ArmError::new(503, "ServiceUnavailable", "The service is temporarily unavailable. Please retry the request. (injected fault)"))
                .header("retry-after", "1".into());
        }
        if let Err(a) = authenticate(app, &inner, req) {
            return a;
        }
    }
    let api_version = match check_api_version(req) {
        Ok(v) => v,
        Err(e) => return Answer::arm_error(&e),
    };
    if let Some(sub) = subscription_of(route)
        && drsync_core::SubscriptionId::parse(&sub).is_err()
    {
        return Answer::arm_error(&ArmError::new(
            400,
            "InvalidSubscriptionId",
            format!("The provided subscription identifier '{sub}' is malformed or invalid."),
        ));
    }
    // A service in a region that is down cannot be reached.
    if let Some(key) = service_key_of(route) {
        let inner = app.inner.lock();
        if let Some(svc) = inner.services.get(key)
            && inner.faults.region_down(svc.region)
        {
            return Answer::arm_error(&ArmError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "The resource provider in region '{}' is unavailable. Please retry later.",
                    svc.region.display_name()
                ),
            ));
        }
    }
    if let Some(sub) = subscription_of(route) {
        let mut inner = app.inner.lock();
        let now = app.now_with(&inner);
        let class = RequestClass::of(req.method.as_str());
        let take = buckets(app, &mut inner, &sub).take(class, now);
        if let Take::Throttled { retry_after_secs } = take {
            let which = class.word();
            return Answer::arm_error(&ArmError::new(
                429,
                "SubscriptionRequestsThrottled",
                format!("Number of '{which}' requests for subscription '{sub}' exceeded the limit. Please try again after '{retry_after_secs}' seconds."),
            ))
            .header("retry-after", retry_after_secs.to_string());
        }
    }
    ops::settle(app).await;
    let m = &req.method;
    match route {
        Route::ListBySubscription { sub } if *m == Method::GET => {
            list_services(app, req, sub, None)
        }
        Route::ListByResourceGroup { sub, rg } if *m == Method::GET => {
            list_services(app, req, sub, Some(rg))
        }
        Route::Service { key } => match *m {
            Method::GET => get_service(app, key),
            Method::PUT => put_service(app, req, key, &api_version, false),
            Method::PATCH => put_service(app, req, key, &api_version, true),
            Method::DELETE => delete_service(app, key),
            _ => method_not_allowed(m),
        },
        Route::Backup { key } if *m == Method::POST => {
            start_backup_restore(app, req, key, &api_version, OperationKind::Backup).await
        }
        Route::Restore { key } if *m == Method::POST => {
            start_backup_restore(app, req, key, &api_version, OperationKind::Restore).await
        }
        Route::OperationResult { key, id } if *m == Method::GET => poll(app, req, key, id),
        Route::OperationStatus { key, id } if *m == Method::GET => {
            async_poll(app, req, key, id, &api_version)
        }
        Route::SyncState { key } if *m == Method::GET => sync_state(app, key),
        Route::ChildList { key, kind } if *m == Method::GET => list_children(app, req, key, *kind),
        Route::Child { key, kind, name } => match *m {
            Method::GET => get_child(app, key, *kind, name),
            Method::PUT => put_child(app, req, key, *kind, name),
            Method::DELETE => delete_child(app, key, *kind, name),
            _ => method_not_allowed(m),
        },
        Route::Unknown { .. } => Answer::arm_error(&ArmError::new(
            400,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for the path '{}'.",
                req.path
            ),
        )),
        _ => method_not_allowed(m),
    }
}

fn method_not_allowed(m: &Method) -> Answer {
    Answer::arm_error(&ArmError::new(
        405,
        "MethodNotAllowed",
        format!("The method '{m}' is not allowed on this resource."),
    ))
}

fn not_found(key: &ServiceKey) -> ArmError {
    ArmError::new(
        404,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.ApiManagement/service/{}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            key.name, key.resource_group
        ),
    )
}

fn conflict(svc: &Service, inner: &Inner) -> ArmError {
    let what = svc
        .active_operation
        .as_ref()
        .and_then(|id| inner.operations.get(id))
        .map(|o| format!("{:?}", o.kind))
        .unwrap_or_else(|| "another operation".into());
    ArmError::new(
        409,
        "Conflict",
        format!(
            "The API Management service '{}' is {} ({what} in progress). Retry when the operation has finished.",
            svc.name,
            svc.state.as_str()
        ),
    )
}

fn page<T: Clone>(
    items: &[T],
    req: &Req,
    page_size: usize,
) -> Result<(Vec<T>, Option<usize>), ArmError> {
    let skip = match req
        .query
        .get("$skiptoken")
        .or_else(|| req.query.get("$skipToken"))
    {
        Some(t) => t.parse::<usize>().map_err(|_| {
            ArmError::new(
                400,
                "InvalidSkipToken",
                format!("The skip token '{t}' is not valid."),
            )
        })?,
        None => 0,
    };
    let end = (skip + page_size).min(items.len());
    let slice = items.get(skip..end).map(<[T]>::to_vec).unwrap_or_default();
    Ok((slice, (end < items.len()).then_some(end)))
}

fn next_link(req: &Req, next: Option<usize>) -> Option<String> {
    next.map(|n| {
        let q = req
            .query
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("$skiptoken"));
        let qs = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(q)
            .finish();
        // ARM writes `$skipToken` literally.
        format!("{}{}?{qs}&$skipToken={n}", req.base, req.path)
    })
}

fn list_services(app: &App, req: &Req, sub: &str, rg: Option<&String>) -> Answer {
    let inner = app.inner.lock();
    let items: Vec<Value> = inner
        .services
        .values()
        .filter(|s| {
            s.subscription == sub && rg.is_none_or(|rg| s.resource_group.eq_ignore_ascii_case(rg))
        })
        .map(|s| s.to_json(&app.config.tenant_id))
        .collect();
    match page(&items, req, app.config.page_size) {
        Ok((value, next)) => {
            let mut body = json!({"value": value});
            if let Some(link) = next_link(req, next) {
                body["nextLink"] = json!(link);
            }
            Answer::json(200, body)
        }
        Err(e) => Answer::arm_error(&e),
    }
}

fn get_service(app: &App, key: &ServiceKey) -> Answer {
    let inner = app.inner.lock();
    match inner.services.get(key) {
        Some(s) => Answer::json(200, s.to_json(&app.config.tenant_id))
            .header("etag", format!("\"{}\"", s.etag())),
        None => Answer::arm_error(&not_found(key)),
    }
}

fn parse_body(req: &Req) -> Result<Value, ArmError> {
    if req.body.is_empty() {
        return Err(ArmError::new(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: the body is empty.",
        ));
    }
    let v: Value = serde_json::from_slice(&req.body).map_err(|e| {
        ArmError::new(
            400,
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(ArmError::new(
            400,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: expected a JSON object.",
        ));
    }
    Ok(v)
}

fn validation(message: impl Into<String>) -> ArmError {
    ArmError::new(400, "ValidationError", message)
}

fn if_match(req: &Req, svc: &Service) -> Result<(), ArmError> {
    if let Some(m) = req.headers.get("if-match").and_then(|v| v.to_str().ok()) {
        let m = m.trim().trim_matches('"');
        if m != "*" && m != svc.etag() {
            return Err(ArmError::new(
                412,
                "PreconditionFailed",
                format!(
                    "The etag '{m}' does not match the resource's current etag '{}'.",
                    svc.etag()
                ),
            ));
        }
    }
    Ok(())
}

/// Applies identity settings from a PUT/PATCH body.
fn apply_identity(inner: &mut Inner, svc: &mut Service, identity: &Value) -> Result<(), ArmError> {
    let ty = identity
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("None");
    let parts: Vec<String> = ty
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    let valid = parts
        .iter()
        .all(|p| matches!(p.as_str(), "none" | "systemassigned" | "userassigned"));
    if !valid {
        return Err(validation(format!(
            "Identity type '{ty}' is not valid: use None, SystemAssigned, UserAssigned or 'SystemAssigned, UserAssigned'."
        )));
    }
    let system = parts.iter().any(|p| p == "systemassigned");
    let user = parts.iter().any(|p| p == "userassigned");
    if system && svc.principal_id.is_none() {
        svc.principal_id = Some(inner.guid());
    } else if !system {
        svc.principal_id = None;
    }
    if user {
        let Some(map) = identity
            .get("userAssignedIdentities")
            .and_then(Value::as_object)
        else {
            return Err(validation(
                "Identity type UserAssigned needs 'userAssignedIdentities'.",
            ));
        };
        let mut list = Vec::new();
        for id in map.keys() {
            let existing = svc
                .user_assigned
                .iter()
                .find(|u| u.resource_id.eq_ignore_ascii_case(id))
                .cloned();
            list.push(
                existing.unwrap_or_else(|| crate::config::UserAssignedIdentity {
                    resource_id: id.clone(),
                    client_id: inner.guid(),
                    principal_id: inner.guid(),
                }),
            );
        }
        svc.user_assigned = list;
    } else {
        svc.user_assigned.clear();
    }
    Ok(())
}

fn parse_sku(v: &Value) -> Result<(SkuTier, u32), ArmError> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| validation("The 'sku.name' property is required."))?;
    let tier = SkuTier::parse(name).map_err(|e| validation(e.to_string()))?;
    let capacity = match v.get("capacity") {
        None | Some(Value::Null) => 1,
        Some(c) => c
            .as_u64()
            .and_then(|c| u32::try_from(c).ok())
            .ok_or_else(|| {
                validation("The 'sku.capacity' property must be a non-negative integer.")
            })?,
    };
    Ok((tier, capacity))
}

/// Adds the polling header (`Location` or `Azure-AsyncOperation`) and the retry hints.
fn polling_headers(app: &App, mut a: Answer, req: &Req, svc: &Service, op: &Operation) -> Answer {
    let base = format!("{}{}", req.base, svc.id());
    let remaining_ms = (op.completes_at - app.now()).num_milliseconds().max(0);
    let (secs, ms) = retry_after(remaining_ms);
    if app.config.async_operation_header {
        a = a.header(
            "azure-asyncoperation",
            format!(
                "{base}/operationsStatus/{}?api-version={}",
                op.id, op.api_version
            ),
        );
    } else {
        a = a.header(
            "location",
            format!(
                "{base}/operationresults/{}?api-version={}",
                op.id, op.api_version
            ),
        );
    }
    a.header("retry-after", secs.to_string())
        .header("retry-after-ms", ms.to_string())
}

/// `Retry-After` (whole seconds, 1..=60) and `retry-after-ms` (10..=60000) for an operation with
/// `remaining_ms` to go: the client is told to come back when it should be done.
fn retry_after(remaining_ms: i64) -> (i64, i64) {
    let ms = remaining_ms.clamp(10, 60_000);
    let secs = ((remaining_ms + 999) / 1000).clamp(1, 60);
    (secs, ms)
}

fn start_operation(
    app: &App,
    inner: &mut Inner,
    key: &ServiceKey,
    kind: OperationKind,
    api_version: &str,
    plan: Plan,
    fail_after_fraction: Option<f64>,
) -> Operation {
    let now = app.now_with(inner);
    let full = ops::duration(app, inner, kind);
    let d = match fail_after_fraction {
        Some(f) => {
            chrono::Duration::milliseconds((full.num_milliseconds() as f64 * f).round() as i64)
        }
        None => full,
    };
    let id = format!(
        "{}",
        uuid::Builder::from_random_bytes(inner.rng.random())
            .into_uuid()
            .simple()
    );
    let op = Operation {
        id: id.clone(),
        kind,
        service: key.clone(),
        api_version: api_version.to_owned(),
        started_at: now,
        completes_at: now + d,
        plan,
        status: OperationStatus::Running,
        ended_at: None,
    };
    inner.operations.insert(id.clone(), op.clone());
    if let Some(svc) = inner.services.get_mut(key) {
        svc.active_operation = Some(id);
        if kind != OperationKind::Create {
            svc.state = ProvisioningState::Updating;
        }
        svc.touch(now);
    }
    op
}

fn put_service(app: &App, req: &Req, key: &ServiceKey, api_version: &str, patch: bool) -> Answer {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return Answer::arm_error(&e),
    };
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let tenant = app.config.tenant_id.clone();
    let props = body.get("properties").cloned().unwrap_or(json!({}));
    let existing = inner.services.get(key).cloned();
    let Some(mut svc) = existing else {
        if patch {
            return Answer::arm_error(&not_found(key));
        }
        // Create.
        let location = match body.get("location").and_then(Value::as_str) {
            Some(l) => l,
            None => return Answer::arm_error(&validation("The 'location' property is required.")),
        };
        let region = match Region::parse(location) {
            Ok(r) => r,
            Err(_) => {
                return Answer::arm_error(&ArmError::new(
                    400,
                    "LocationNotAvailableForResourceType",
                    format!(
                        "The provided location '{location}' is not available for resource type 'Microsoft.ApiManagement/service'."
                    ),
                ));
            }
        };
        let (sku, capacity) = match body.get("sku").map(parse_sku) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Answer::arm_error(&e),
            None => return Answer::arm_error(&validation("The 'sku' property is required.")),
        };
        let (Some(email), Some(pname)) = (
            props.get("publisherEmail").and_then(Value::as_str),
            props.get("publisherName").and_then(Value::as_str),
        ) else {
            return Answer::arm_error(&validation(
                "The 'properties.publisherEmail' and 'properties.publisherName' properties are required.",
            ));
        };
        let Ok(sub) = drsync_core::SubscriptionId::parse(&key.subscription) else {
            return Answer::arm_error(&ArmError::new(
                400,
                "InvalidSubscriptionId",
                format!(
                    "The provided subscription identifier '{}' is malformed or invalid.",
                    key.subscription
                ),
            ));
        };
        let (rg, name) = path_names(req);
        if drsync_core::service::validate_service_name(&name).is_err() {
            return Answer::arm_error(&validation(format!(
                "The service name '{name}' is invalid: 1-50 letters, digits or hyphens, starting with a letter and not ending with a hyphen."
            )));
        }
        if inner.faults.region_down(region) {
            return Answer::arm_error(&ArmError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "The resource provider in region '{}' is unavailable. Please retry later.",
                    region.display_name()
                ),
            ));
        }
        let mut svc = Service {
            subscription: sub.as_str().to_owned(),
            resource_group: rg,
            name,
            region,
            sku,
            capacity,
            principal_id: None,
            user_assigned: Vec::new(),
            publisher_email: email.to_owned(),
            publisher_name: pname.to_owned(),
            tags: tags_of(&body),
            state: ProvisioningState::Activating,
            created_at: now,
            modified_at: now,
            configuration_change_date: now,
            version: 1,
            custom_hostnames: custom_hostnames(&props),
            config: crate::model::Configuration::sample(),
            active_operation: None,
            last_operation_id: None,
        };
        if let Some(identity) = body.get("identity")
            && let Err(e) = apply_identity(&mut inner, &mut svc, identity)
        {
            return Answer::arm_error(&e);
        }
        inner.services.insert(key.clone(), svc);
        let op = start_operation(
            app,
            &mut inner,
            key,
            OperationKind::Create,
            api_version,
            Plan::Provision,
            None,
        );
        let svc = inner.services[key].clone();
        let a = Answer::json(201, svc.to_json(&tenant));
        drop(inner);
        return polling_headers(app, a, req, &svc, &op);
    };
    // Update.
    if svc.active_operation.is_some() || svc.state != ProvisioningState::Succeeded {
        let e = conflict(&svc, &inner);
        return Answer::arm_error(&e);
    }
    if let Err(e) = if_match(req, &svc) {
        return Answer::arm_error(&e);
    }
    if let Some(location) = body.get("location").and_then(Value::as_str)
        && Region::parse(location).ok() != Some(svc.region)
    {
        return Answer::arm_error(&ArmError::new(
            400,
            "InvalidResourceLocation",
            format!(
                "The resource '{}' already exists in location '{}' in resource group '{}'. A resource with the same name cannot be created in location '{location}'.",
                svc.name,
                svc.region.name(),
                svc.resource_group
            ),
        ));
    }
    let mut sku_changed = false;
    if let Some(sku) = body.get("sku") {
        match parse_sku(sku) {
            Ok((tier, cap)) => {
                sku_changed = (tier, cap) != (svc.sku, svc.capacity);
                svc.sku = tier;
                svc.capacity = cap;
            }
            Err(e) => return Answer::arm_error(&e),
        }
    }
    if body.get("tags").is_some() || !patch {
        svc.tags = tags_of(&body);
    }
    if let Some(e) = props.get("publisherEmail").and_then(Value::as_str) {
        svc.publisher_email = e.to_owned();
    }
    if let Some(n) = props.get("publisherName").and_then(Value::as_str) {
        svc.publisher_name = n.to_owned();
    }
    if props.get("hostnameConfigurations").is_some() {
        svc.custom_hostnames = custom_hostnames(&props);
    }
    if let Some(identity) = body.get("identity")
        && let Err(e) = apply_identity(&mut inner, &mut svc, identity)
    {
        return Answer::arm_error(&e);
    }
    svc.touch(now);
    inner.services.insert(key.clone(), svc);
    if sku_changed {
        let op = start_operation(
            app,
            &mut inner,
            key,
            OperationKind::Update,
            api_version,
            Plan::Provision,
            None,
        );
        let svc = inner.services[key].clone();
        let a = Answer::json(200, svc.to_json(&tenant));
        drop(inner);
        return polling_headers(app, a, req, &svc, &op);
    }
    let svc = &inner.services[key];
    Answer::json(200, svc.to_json(&tenant)).header("etag", format!("\"{}\"", svc.etag()))
}

/// Resource group and service name as written in the request path.
fn path_names(req: &Req) -> (String, String) {
    let segs: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    (
        segs.get(3).copied().unwrap_or_default().to_owned(),
        segs.get(7).copied().unwrap_or_default().to_owned(),
    )
}

fn tags_of(body: &Value) -> BTreeMap<String, String> {
    body.get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn custom_hostnames(props: &Value) -> Vec<Value> {
    props
        .get("hostnameConfigurations")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|h| {
                    !h.get("hostName")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.ends_with(".azure-api.net"))
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn delete_service(app: &App, key: &ServiceKey) -> Answer {
    let mut inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::empty(204);
    };
    if svc.active_operation.is_some() {
        let e = conflict(svc, &inner);
        return Answer::arm_error(&e);
    }
    inner.services.remove(key);
    Answer::empty(200)
}

async fn start_backup_restore(
    app: &Arc<App>,
    req: &Req,
    key: &ServiceKey,
    api_version: &str,
    kind: OperationKind,
) -> Answer {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return Answer::arm_error(&e),
    };
    let params = match BackupParams::parse(&body) {
        Ok(p) => p,
        Err(e) => return Answer::arm_error(&e),
    };
    // Checks that need no storage, under the lock.
    let (svc, now) = {
        let inner = app.inner.lock();
        let Some(svc) = inner.services.get(key) else {
            return Answer::arm_error(&not_found(key));
        };
        if svc.active_operation.is_some() || svc.state != ProvisioningState::Succeeded {
            return Answer::arm_error(&conflict(svc, &inner));
        }
        if !svc.sku.supports_backup_restore() {
            let what = if kind == OperationKind::Backup {
                "Backup"
            } else {
                "Restore"
            };
            return Answer::arm_error(&ArmError::new(
                400,
                "MethodNotAllowedInPricingTier",
                format!(
                    "{what} is not supported in the '{}' pricing tier. Backup and restore are available in Developer, Basic, Standard and Premium.",
                    svc.sku
                ),
            ));
        }
        (svc.clone(), app.now_with(&inner))
    };
    let loc = BlobLocation {
        account: params.storage_account.clone(),
        container: params.container.clone(),
        blob: params.backup_name.clone(),
    };
    let who = ServiceIdentity {
        id: svc.id(),
        principal_id: svc.principal_id.clone(),
        user_assigned: svc.user_assigned.clone(),
    };
    let access_checked = {
        let inner = app.inner.lock();
        ops::check_access(
            app,
            &inner,
            kind,
            &params.storage_account,
            &params.access,
            &who,
        )
    };
    // Checks that read storage, outside the lock.
    let plan: Result<Plan, ArmError> = match access_checked {
        Err(e) => Err(e),
        Ok(()) => match kind {
            OperationKind::Backup => {
                let store = app.accounts[&loc.account].store.clone();
                let create_container = api_version != "2021-08-01";
                let container_ok = if create_container {
                    Ok(())
                } else {
                    match store.container_exists(&loc.container).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(ops::blob_failure(
                            kind,
                            &loc,
                            &drsync_arm_client::blob::BlobError::ContainerNotFound {
                                account: loc.account.clone(),
                                container: loc.container.clone(),
                            },
                        )),
                        Err(e) => Err(ops::blob_failure(kind, &loc, &e)),
                    }
                };
                container_ok.map(|()| Plan::WriteBackup {
                    to: loc.clone(),
                    envelope: Box::new(Envelope::seal(Payload {
                        source: Source {
                            id: svc.id(),
                            name: svc.name.clone(),
                            location: svc.region.name().into(),
                        },
                        sku: SkuJson {
                            name: svc.sku.as_str().into(),
                            capacity: svc.capacity,
                        },
                        created_at: now,
                        api_version: api_version.to_owned(),
                        configuration_change_date: svc.configuration_change_date,
                        configuration: svc.config.clone(),
                    })),
                    create_container,
                })
            }
            _ => ops::read_backup(app, &loc, svc.sku, now)
                .await
                .map(|env| Plan::ApplyRestore {
                    config: env.payload.configuration,
                }),
        },
    };
    let mut inner = app.inner.lock();
    // Re-check: another request may have started an operation while storage was read.
    match inner.services.get(key) {
        None => return Answer::arm_error(&not_found(key)),
        Some(s) if s.active_operation.is_some() => {
            let e = conflict(s, &inner);
            return Answer::arm_error(&e);
        }
        Some(_) => {}
    }
    let failure_roll: f64 = inner.rng.random();
    let (plan, fraction) = match plan {
        Err(e) => (
            Plan::Fail(e),
            Some(app.config.durations.validation_fraction),
        ),
        Ok(_) if failure_roll < inner.faults.operation_failure => (
            Plan::Fail(ArmError::new(
                500,
                kind.failure_code(),
                format!(
                    "The {} operation failed unexpectedly midway (injected fault). Retry the operation.",
                    if kind == OperationKind::Backup {
                        "backup"
                    } else {
                        "restore"
                    }
                ),
            )),
            Some(0.5),
        ),
        Ok(p) => (p, None),
    };
    let op = start_operation(app, &mut inner, key, kind, api_version, plan, fraction);
    let svc = inner.services[key].clone();
    drop(inner);
    polling_headers(app, Answer::empty(202), req, &svc, &op)
}

/// The backup/restore request body, validated per access type.
#[derive(Debug)]
struct BackupParams {
    storage_account: String,
    container: String,
    backup_name: String,
    access: AccessRequest,
}

impl BackupParams {
    fn parse(body: &Value) -> Result<Self, ArmError> {
        let invalid = |m: String| ArmError::new(400, "InvalidParameters", m);
        let field = |name: &str| -> Result<String, ArmError> {
            match body.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
                Some(Value::String(_)) | None | Some(Value::Null) => Err(invalid(format!(
                    "'{name}' is required and must not be empty."
                ))),
                Some(_) => Err(invalid(format!("'{name}' must be a string."))),
            }
        };
        let opt = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let storage_account = field("storageAccount")?;
        let container = field("containerName")?;
        let backup_name = field("backupName")?;
        if backup_name.len() > 1024 {
            return Err(invalid(
                "'backupName' must be at most 1024 characters.".into(),
            ));
        }
        let access_type = opt("accessType").unwrap_or_else(|| "AccessKey".into());
        let access_key = opt("accessKey");
        let client_id = opt("clientId");
        match access_type.as_str() {
            "AccessKey" => {
                if access_key.as_deref().is_none_or(|k| k.trim().is_empty()) {
                    return Err(invalid(
                        "'accessKey' is required when 'accessType' is 'AccessKey'.".into(),
                    ));
                }
                if client_id.is_some() {
                    return Err(invalid("'clientId' is only valid when 'accessType' is 'UserAssignedManagedIdentity'.".into()));
                }
            }
            "SystemAssignedManagedIdentity" | "UserAssignedManagedIdentity" => {
                if access_key.is_some() {
                    return Err(invalid(format!(
                        "'accessKey' must not be set when 'accessType' is '{access_type}'."
                    )));
                }
                if access_type == "UserAssignedManagedIdentity" && client_id.is_none() {
                    return Err(invalid("'clientId' is required when 'accessType' is 'UserAssignedManagedIdentity'.".into()));
                }
                if access_type == "SystemAssignedManagedIdentity" && client_id.is_some() {
                    return Err(invalid("'clientId' is only valid when 'accessType' is 'UserAssignedManagedIdentity'.".into()));
                }
            }
            other => {
                return Err(invalid(format!(
                    "'accessType' '{other}' is not valid: use AccessKey, SystemAssignedManagedIdentity or UserAssignedManagedIdentity."
                )));
            }
        }
        Ok(Self {
            storage_account,
            container,
            backup_name,
            access: AccessRequest {
                access_type,
                access_key: access_key.map(drsync_core::Secret::new),
                client_id,
            },
        })
    }
}

fn find_op(
    app: &App,
    key: &ServiceKey,
    id: &str,
) -> Result<(Operation, Option<Service>), ArmError> {
    let inner = app.inner.lock();
    match inner.operations.get(id) {
        Some(op) if &op.service == key => Ok((op.clone(), inner.services.get(key).cloned())),
        _ => Err(ArmError::new(
            404,
            "OperationNotFound",
            format!(
                "The operation '{id}' was not found for service '{}'.",
                key.name
            ),
        )),
    }
}

fn poll(app: &App, req: &Req, key: &ServiceKey, id: &str) -> Answer {
    let (op, svc) = match find_op(app, key, id) {
        Ok(x) => x,
        Err(e) => return Answer::arm_error(&e),
    };
    match (&op.status, svc) {
        (OperationStatus::Running | OperationStatus::Completing, Some(svc)) => {
            let remaining_ms = (op.completes_at - app.now()).num_milliseconds().max(0);
            let (secs, ms) = retry_after(remaining_ms);
            Answer::empty(202)
                .header(
                    "location",
                    format!(
                        "{}{}/operationresults/{}?api-version={}",
                        req.base,
                        svc.id(),
                        op.id,
                        op.api_version
                    ),
                )
                .header("retry-after", secs.to_string())
                .header("retry-after-ms", ms.to_string())
        }
        (OperationStatus::Failed(e), _) => Answer::arm_error(e),
        (_, Some(svc)) => Answer::json(200, svc.to_json(&app.config.tenant_id)),
        (_, None) => Answer::arm_error(&not_found(key)),
    }
}

fn async_poll(app: &App, req: &Req, key: &ServiceKey, id: &str, api_version: &str) -> Answer {
    let (op, _) = match find_op(app, key, id) {
        Ok(x) => x,
        Err(e) => return Answer::arm_error(&e),
    };
    let url = format!("{}{}", req.base, req.path);
    let mut body = json!({"id": format!("{url}?api-version={api_version}"), "name": op.id, "startTime": ts(op.started_at)});
    match &op.status {
        OperationStatus::Running | OperationStatus::Completing => {
            body["status"] = json!("InProgress");
            let remaining_ms = (op.completes_at - app.now()).num_milliseconds().max(0);
            let (secs, ms) = retry_after(remaining_ms);
            return Answer::json(200, body)
                .header("retry-after", secs.to_string())
                .header("retry-after-ms", ms.to_string());
        }
        OperationStatus::Succeeded => body["status"] = json!("Succeeded"),
        OperationStatus::Failed(e) => {
            body["status"] = json!("Failed");
            body["error"] = json!({"code": e.code, "message": e.message});
        }
    }
    if let Some(end) = op.ended_at {
        body["endTime"] = json!(ts(end));
    }
    Answer::json(200, body)
}

fn sync_state(app: &App, key: &ServiceKey) -> Answer {
    use sha2::Digest as _;
    let inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let digest = sha2::Sha256::digest(serde_json::to_vec(&svc.config).expect("config serializes"));
    let commit: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    let last_op = svc
        .last_operation_id
        .as_ref()
        .map(|id| {
            json!(format!(
                "{}/tenant/configuration/operationResults/{id}",
                svc.id()
            ))
        })
        .unwrap_or(Value::Null);
    Answer::json(
        200,
        json!({
            "id": format!("{}/tenant/configuration/syncState", svc.id()),
            "type": "Microsoft.ApiManagement/service/tenant/syncState",
            "name": "syncState",
            "properties": {
                "branch": "master",
                "commitId": commit,
                "isExport": false,
                "isSynced": false,
                "isGitEnabled": false,
                "syncDate": ts(svc.created_at),
                "configurationChangeDate": ts(svc.configuration_change_date),
                "lastOperationId": last_op,
            }
        }),
    )
}

/// A child as served: secret named values do not show their value (as in APIM).
fn served_child(svc: &Service, kind: ChildKind, name: &str, props: &Value) -> Value {
    let mut props = props.clone();
    if kind == ChildKind::NamedValues
        && props.get("secret").and_then(Value::as_bool) == Some(true)
        && let Some(o) = props.as_object_mut()
    {
        o.remove("value");
    }
    svc.child_json(kind, name, &props)
}

fn list_children(app: &App, req: &Req, key: &ServiceKey, kind: ChildKind) -> Answer {
    let inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let items: Vec<Value> = svc
        .config
        .children(kind)
        .iter()
        .map(|(n, p)| served_child(svc, kind, n, p))
        .collect();
    match page(&items, req, app.config.page_size) {
        Ok((value, next)) => {
            let mut body = json!({"value": value, "count": items.len()});
            if let Some(link) = next_link(req, next) {
                body["nextLink"] = json!(link);
            }
            Answer::json(200, body)
        }
        Err(e) => Answer::arm_error(&e),
    }
}

fn child_not_found(kind: ChildKind, name: &str) -> ArmError {
    ArmError::new(
        404,
        "ResourceNotFound",
        format!("The {} '{name}' was not found.", kind.segment()),
    )
}

fn get_child(app: &App, key: &ServiceKey, kind: ChildKind, name: &str) -> Answer {
    let inner = app.inner.lock();
    let Some(svc) = inner.services.get(key) else {
        return Answer::arm_error(&not_found(key));
    };
    match svc
        .config
        .children(kind)
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some((n, p)) => Answer::json(200, served_child(svc, kind, n, p)),
        None => Answer::arm_error(&child_not_found(kind, name)),
    }
}

fn put_child(app: &App, req: &Req, key: &ServiceKey, kind: ChildKind, name: &str) -> Answer {
    let body = match parse_body(req) {
        Ok(b) => b,
        Err(e) => return Answer::arm_error(&e),
    };
    let Some(props) = body.get("properties").filter(|p| p.is_object()).cloned() else {
        return Answer::arm_error(&validation("The 'properties' object is required."));
    };
    if name.is_empty() || name.len() > 256 || name.contains(['/', '\\', '?', '#', '*']) {
        return Answer::arm_error(&validation(format!("The name '{name}' is invalid.")));
    }
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let Some(svc) = inner.services.get_mut(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let children = svc.config.children_mut(kind);
    let existing = children
        .keys()
        .find(|n| n.eq_ignore_ascii_case(name))
        .cloned();
    let stored_name = existing.clone().unwrap_or_else(|| name.to_owned());
    children.insert(stored_name.clone(), props.clone());
    svc.config_changed(now);
    let status = if existing.is_some() { 200 } else { 201 };
    let svc = &inner.services[key];
    Answer::json(status, served_child(svc, kind, &stored_name, &props))
        .header("etag", format!("\"{}\"", svc.etag()))
}

fn delete_child(app: &App, key: &ServiceKey, kind: ChildKind, name: &str) -> Answer {
    let mut inner = app.inner.lock();
    let now = app.now_with(&inner);
    let Some(svc) = inner.services.get_mut(key) else {
        return Answer::arm_error(&not_found(key));
    };
    let children = svc.config.children_mut(kind);
    match children
        .keys()
        .find(|n| n.eq_ignore_ascii_case(name))
        .cloned()
    {
        Some(n) => {
            children.remove(&n);
            svc.config_changed(now);
            Answer::empty(200)
        }
        None => Answer::empty(204),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_case_insensitive() {
        let sub = "00000000-0000-0000-0000-000000000001";
        let base = format!(
            "/subscriptions/{sub}/resourceGroups/RG/providers/Microsoft.ApiManagement/service/Apim1"
        );
        assert!(matches!(route(&base), Route::Service { .. }));
        assert!(matches!(route(&base.to_lowercase()), Route::Service { .. }));
        assert!(matches!(
            route(&format!("{base}/BACKUP")),
            Route::Backup { .. }
        ));
        assert!(matches!(
            route(&format!("{base}/operationResults/abc")),
            Route::OperationResult { .. }
        ));
        assert!(matches!(
            route(&format!("{base}/namedValues/x")),
            Route::Child {
                kind: ChildKind::NamedValues,
                ..
            }
        ));
        assert!(matches!(
            route(&format!("{base}/tenant/configuration/syncState")),
            Route::SyncState { .. }
        ));
        assert!(matches!(
            route(&format!(
                "/subscriptions/{sub}/providers/Microsoft.ApiManagement/service"
            )),
            Route::ListBySubscription { .. }
        ));
        assert!(matches!(
            route("/contoso.onmicrosoft.com/oauth2/v2.0/token"),
            Route::TokenV2 { .. }
        ));
        assert!(matches!(route("/t/oauth2/token"), Route::TokenV1 { .. }));
        assert!(matches!(
            route(&format!("{base}/users")),
            Route::Unknown { .. }
        ));
    }

    fn parse(v: Value) -> Result<BackupParams, String> {
        BackupParams::parse(&v).map_err(|e| e.message)
    }

    #[test]
    fn backup_bodies_per_access_type() {
        let p = parse(json!({"storageAccount": "a", "containerName": "c", "backupName": "b", "accessKey": "k"})).unwrap();
        assert_eq!(p.access.access_type, "AccessKey");
        assert!(
            parse(
                json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
            "accessType": "SystemAssignedManagedIdentity"})
            )
            .is_ok()
        );
        assert!(
            parse(
                json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
            "accessType": "UserAssignedManagedIdentity", "clientId": "x"})
            )
            .is_ok()
        );
        let err = parse(json!({"storageAccount": "a", "containerName": "c", "backupName": "b"}))
            .unwrap_err();
        assert!(err.contains("'accessKey' is required"), "{err}");
        let err = parse(
            json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
            "accessType": "UserAssignedManagedIdentity"}),
        )
        .unwrap_err();
        assert!(err.contains("'clientId' is required"), "{err}");
        let err = parse(json!({"storageAccount": "a", "containerName": "", "backupName": "b", "accessKey": "k"})).unwrap_err();
        assert!(err.contains("'containerName'"), "{err}");
        let err = parse(
            json!({"storageAccount": 5, "containerName": "c", "backupName": "b", "accessKey": "k"}),
        )
        .unwrap_err();
        assert!(err.contains("must be a string"), "{err}");
        // Secrets never appear in refusals.
        let err = parse(
            json!({"storageAccount": "a", "containerName": "c", "backupName": "b",
            "accessType": "SystemAssignedManagedIdentity", "accessKey": "topsecret"}),
        )
        .unwrap_err();
        assert!(!err.contains("topsecret"), "{err}");
    }

    fn req_with_query(q: &str) -> Req {
        Req {
            method: Method::GET,
            path: "/".into(),
            query: url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect(),
            raw_query: Some(q.into()),
            headers: HeaderMap::new(),
            body: bytes::Bytes::new(),
            base: "http://127.0.0.1".into(),
        }
    }

    #[test]
    fn api_versions() {
        for v in SUPPORTED_API_VERSIONS {
            assert_eq!(
                check_api_version(&req_with_query(&format!("api-version={v}"))).unwrap(),
                v
            );
        }
        let code = |q: &str| check_api_version(&req_with_query(q)).unwrap_err().code;
        assert_eq!(code("api-version=2020-12-01"), "NoRegisteredProviderFound");
        assert_eq!(
            code("api-version=2021-04-01-preview"),
            "NoRegisteredProviderFound"
        );
        assert_eq!(code("api-version=v2"), "InvalidApiVersionParameter");
        assert_eq!(code("other=1"), "MissingApiVersionParameter");
    }

    #[test]
    fn pages_and_next_links() {
        let items: Vec<u32> = (0..5).collect();
        let r = req_with_query("api-version=2024-05-01");
        assert_eq!(page(&items, &r, 2).unwrap(), (vec![0, 1], Some(2)));
        let link = next_link(&r, Some(2)).unwrap();
        assert_eq!(
            link,
            "http://127.0.0.1/?api-version=2024-05-01&$skipToken=2"
        );
        let r = req_with_query("api-version=2024-05-01&$skipToken=4");
        assert_eq!(page(&items, &r, 2).unwrap(), (vec![4], None));
        let r = req_with_query("$skipToken=zz");
        assert_eq!(page(&items, &r, 2).unwrap_err().code, "InvalidSkipToken");
    }

    #[test]
    fn retry_after_points_at_the_expected_end() {
        assert_eq!(retry_after(0), (1, 10));
        assert_eq!(retry_after(1500), (2, 1500));
        assert_eq!(retry_after(3_600_000), (60, 60_000));
    }
}
