//! The HTTP front: one handler that routes Entra ID, IMDS, ARM and control requests.
//!
//! ARM paths are matched case-insensitively, as ARM does. Every request is recorded in the
//! request log with what it was (`backup-post`, `poll`, ...). A body over 4 MB is refused with
//! 413 before anything else. For ARM requests the pipeline is:
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
    // A body over the limit is refused as ARM refuses it, not read as an empty body.
    let (body, too_large) = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => (b, false),
        Err(_) => (bytes::Bytes::new(), true),
    };
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
        _ if too_large => Answer::arm_error(&ArmError::new(
            413,
            "RequestEntityTooLarge",
            format!(
                "The request content size exceeds the maximum of {} MB.",
                BODY_LIMIT / (1024 * 1024)
            ),
        )),
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
    let mut response = *answer.response;
    if !answer.dropped && route != Route::Control {
        // ARM echoes the client's request id and names the correlation id.
        let headers = response.headers_mut();
        if let Some(id) = req.headers.get("x-ms-client-request-id") {
            headers.insert("x-ms-client-request-id", id.clone());
        }
        let correlation = uuid::Uuid::new_v4().to_string();
        headers.insert(
            "x-ms-correlation-request-id",
            HeaderValue::from_str(&correlation).expect("a uuid is ascii"),
        );
    }
    response
}

async fn latency(app: &App) {
    let ms = app.inner.lock().faults.latency_ms;
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

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
        Route::Unknown { sub } => sub.clone(),
        _ => service_key_of(route).map(|key| key.subscription.clone()),
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

mod entra;
mod operations;
mod services;
#[cfg(test)]
mod tests;

use entra::token;
use operations::{async_poll, poll, start_backup_restore};
use services::{
    delete_child, delete_service, get_child, get_service, list_children, list_services, put_child,
    put_service, sync_state,
};
