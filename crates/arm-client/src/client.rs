//! [`ArmClient`]: API Management operations over the pipeline, and the async driver of the
//! long-running-operation poller.
//!
//! Every method builds its URL and body with the pure helpers of [`crate::apim`], sends them
//! through the pipeline (limits, token, retries) and parses the answer into typed results.
//! Backup and restore return at once with a [`LroStart`]: the caller may checkpoint the
//! [`PollState`] and continue with [`ArmClient::poll_once`] or [`ArmClient::wait`], here or
//! in another process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::de::DeserializeOwned;
use url::Url;

use drsync_core::{Clock, ServiceRef, SubscriptionId};

use crate::apim::{
    ApiSummary, ApimService, BackupRestoreRequest, NamedValueSummary, Page, ProductSummary,
    SyncState, WireApiProps, WireItem, WireNamedValueProps, WireProductProps, backup_restore_body,
};
use crate::credential::{ARM_SCOPE, TokenCache, TokenCredential};
use crate::error::{Error, Result};
use crate::lro::{
    self, LroFailure, LroOperation, LroResponse, Next, PollKind, PollState, PollerConfig, Started,
};
use crate::pipeline::{Kind, Pipeline, Request, Response};
use crate::retry::RetryPolicy;
use crate::security::{check_credential_url, pin_url};

pub use crate::pipeline::ArmLimits;

/// The default api-version: the newest stable one with backup and restore.
pub const DEFAULT_API_VERSION: &str = "2024-05-01";

/// At most this many pages are followed in one listing (a loop guard).
const MAX_PAGES: usize = 10_000;

/// The client's settings.
#[derive(Debug, Clone)]
pub struct ArmClientConfig {
    /// The ARM endpoint: `https://management.azure.com/`, or the emulator's loopback URL.
    pub endpoint: Url,
    /// The api-version of every call (default [`DEFAULT_API_VERSION`]).
    pub api_version: String,
    /// Pacing per subscription.
    pub limits: ArmLimits,
    /// Retries.
    pub retry: RetryPolicy,
    /// Polling of long-running operations.
    pub poller: PollerConfig,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The token scope (default [`ARM_SCOPE`]).
    pub scope: String,
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
    /// A seed for the retry jitter (tests); `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
}

impl ArmClientConfig {
    /// Defaults for `endpoint`.
    pub fn new(endpoint: Url) -> Self {
        Self {
            endpoint,
            api_version: DEFAULT_API_VERSION.into(),
            limits: ArmLimits::default(),
            retry: RetryPolicy::default(),
            poller: PollerConfig::default(),
            user_agent: format!("drsync/{}", env!("CARGO_PKG_VERSION")),
            scope: ARM_SCOPE.into(),
            request_timeout: Duration::from_secs(60),
            jitter_seed: None,
        }
    }
}

/// The answer to a backup or restore POST.
#[allow(clippy::large_enum_variant)] // Built once per operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LroStart {
    /// ARM completed it synchronously.
    Done(ApimService),
    /// Running: poll it (and checkpoint the state first, if you want to resume after a crash).
    Pending(PollState),
}

/// The result of one poll.
#[allow(clippy::large_enum_variant)] // Built once per poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStep {
    /// Still running; poll again at `state.next_poll_at`.
    Pending(PollState),
    /// Finished successfully.
    Done(ApimService),
}

/// Counters of what the client sent and received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// HTTP requests sent to ARM (every attempt counts).
    pub requests_sent: u64,
    /// `429` answers received.
    pub throttled_429: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// `408`/`5xx` answers received.
    pub server_errors: u64,
    /// Connection failures, and token requests that failed transiently (Entra ID unreachable,
    /// throttling or failing): both are retried.
    pub transport_errors: u64,
    /// `401` answers received.
    pub unauthorized_401: u64,
    /// Slow-downs because `x-ms-ratelimit-remaining-*` ran low.
    pub slowdowns: u64,
    /// Tokens fetched from the credential.
    pub token_fetches: u64,
}

/// An authenticated, paced, retrying Azure Resource Manager client for API Management.
#[derive(Debug, Clone)]
pub struct ArmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipeline: Pipeline,
    api_version: String,
    poller: PollerConfig,
}

fn op_failed(operation: LroOperation, service: &str, f: LroFailure, waited: Duration) -> Error {
    let operation = format!("{} of {service}", operation.as_str());
    match f {
        LroFailure::Operation { status, body } => Error::OperationFailed {
            operation,
            status,
            body,
        },
        LroFailure::Timeout => Error::PollTimeout { operation, waited },
        LroFailure::ForeignHost(message) => Error::Decode { operation, message },
        LroFailure::BadResponse(message) => Error::Decode { operation, message },
    }
}

fn service_name_of(resource_url: &str) -> String {
    Url::parse(resource_url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(String::from))
        })
        .unwrap_or_default()
}

impl ArmClient {
    /// A client for `config.endpoint` with tokens from `credential` (cached by the client).
    pub fn new(
        config: ArmClientConfig,
        credential: Arc<dyn TokenCredential>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        check_credential_url(&config.endpoint)?;
        if config.endpoint.cannot_be_a_base() || config.endpoint.host_str().is_none() {
            return Err(Error::InvalidConfig(format!(
                "ARM endpoint `{}` is not a base URL",
                crate::error::display_url(&config.endpoint)
            )));
        }
        if config.api_version.trim().is_empty() {
            return Err(Error::InvalidConfig("api_version is empty".into()));
        }
        let pipeline = Pipeline::new(
            config.endpoint,
            credential,
            clock,
            config.scope,
            config.retry,
            config.limits,
            &config.user_agent,
            config.request_timeout,
            config.jitter_seed,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                pipeline,
                api_version: config.api_version,
                poller: config.poller,
            }),
        })
    }

    /// The ARM endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.inner.pipeline.endpoint
    }

    /// The api-version in use.
    pub fn api_version(&self) -> &str {
        &self.inner.api_version
    }

    /// The client's token cache (shared by all its calls).
    pub fn token_cache(&self) -> &Arc<TokenCache> {
        &self.inner.pipeline.tokens
    }

    /// What the client has sent and received so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.inner.pipeline.metrics;
        MetricsSnapshot {
            requests_sent: m.sent.load(Ordering::Relaxed),
            throttled_429: m.throttled.load(Ordering::Relaxed),
            retries: m.retries.load(Ordering::Relaxed),
            server_errors: m.server_errors.load(Ordering::Relaxed),
            transport_errors: m.transport_errors.load(Ordering::Relaxed),
            unauthorized_401: m.unauthorized.load(Ordering::Relaxed),
            slowdowns: m.slowdowns.load(Ordering::Relaxed),
            token_fetches: self.inner.pipeline.tokens.fetch_count(),
        }
    }

    /// `{endpoint}/{segments...}?api-version=...`.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.pipeline.endpoint.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut path = url.path_segments_mut().expect("checked base URL");
            path.pop_if_empty();
            path.extend(segments);
        }
        url.query_pairs_mut()
            .append_pair("api-version", &self.inner.api_version);
        url
    }

    /// The resource URL of a service, optionally with a child path.
    pub fn service_url(&self, service: &ServiceRef, child: &[&str]) -> Url {
        let mut segs = vec![
            "subscriptions",
            service.subscription.as_str(),
            "resourceGroups",
            &service.resource_group,
            "providers",
            "Microsoft.ApiManagement",
            "service",
            &service.name,
        ];
        segs.extend_from_slice(child);
        self.url(&segs)
    }

    fn get_request(&self, url: Url, operation: &str, service: &str) -> Request {
        Request {
            method: reqwest::Method::GET,
            url,
            body: None,
            kind: Kind::Read,
            idempotent: true,
            operation: operation.into(),
            service: service.into(),
            raw_client_errors: false,
            secrets: Vec::new(),
        }
    }

    fn parse<T: DeserializeOwned>(resp: &Response, operation: &str) -> Result<T> {
        serde_json::from_slice(&resp.body).map_err(|e| Error::Decode {
            operation: operation.into(),
            message: format!("invalid JSON: {e}"),
        })
    }

    fn parse_service(body: &serde_json::Value, operation: &str) -> Result<ApimService> {
        ApimService::from_json(body).map_err(|message| Error::Decode {
            operation: operation.into(),
            message,
        })
    }

    /// `GET .../service/{name}`.
    pub async fn get_service(&self, service: &ServiceRef) -> Result<ApimService> {
        let op = "get service";
        let resp = self
            .inner
            .pipeline
            .send(self.get_request(self.service_url(service, &[]), op, &service.name))
            .await?;
        Self::parse_service(&Self::parse(&resp, op)?, op)
    }

    /// Lists the services of a subscription, or of one resource group, following `nextLink`.
    pub async fn list_services(
        &self,
        subscription: &SubscriptionId,
        resource_group: Option<&str>,
    ) -> Result<Vec<ApimService>> {
        let url = match resource_group {
            Some(rg) => self.url(&[
                "subscriptions",
                subscription.as_str(),
                "resourceGroups",
                rg,
                "providers",
                "Microsoft.ApiManagement",
                "service",
            ]),
            None => self.url(&[
                "subscriptions",
                subscription.as_str(),
                "providers",
                "Microsoft.ApiManagement",
                "service",
            ]),
        };
        let items: Vec<serde_json::Value> = self
            .list_pages(url, "list services", subscription.as_str())
            .await?;
        items
            .iter()
            .map(|v| Self::parse_service(v, "list services"))
            .collect()
    }

    async fn list_pages<T: DeserializeOwned>(
        &self,
        first: Url,
        operation: &str,
        service: &str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            if !seen.insert(url.to_string()) || seen.len() > MAX_PAGES {
                return Err(Error::Decode {
                    operation: operation.into(),
                    message: "nextLink loops or the listing has too many pages".into(),
                });
            }
            let resp = self
                .inner
                .pipeline
                .send(self.get_request(url, operation, service))
                .await?;
            let page: Page<T> = Self::parse(&resp, operation)?;
            if let Some(link) = page.next() {
                next = Some(pin_url(&self.inner.pipeline.endpoint, link)?);
            }
            out.extend(page.value);
        }
        Ok(out)
    }

    /// Starts a backup of `service` into the request's storage account and container.
    pub async fn begin_backup(
        &self,
        service: &ServiceRef,
        req: &BackupRestoreRequest,
    ) -> Result<LroStart> {
        self.begin(LroOperation::Backup, service, req).await
    }

    /// Starts a restore of the request's backup into `service`.
    pub async fn begin_restore(
        &self,
        service: &ServiceRef,
        req: &BackupRestoreRequest,
    ) -> Result<LroStart> {
        self.begin(LroOperation::Restore, service, req).await
    }

    async fn begin(
        &self,
        operation: LroOperation,
        service: &ServiceRef,
        req: &BackupRestoreRequest,
    ) -> Result<LroStart> {
        let body = backup_restore_body(req, &self.inner.api_version)?;
        let url = self.service_url(service, &[operation.as_str()]);
        let resource_url = self.service_url(service, &[]).to_string();
        let op_name = format!("begin {}", operation.as_str());
        let request = Request {
            method: reqwest::Method::POST,
            url,
            body: Some(body),
            kind: Kind::Write,
            idempotent: false,
            operation: op_name.clone(),
            service: service.name.clone(),
            raw_client_errors: false,
            secrets: match &req.access {
                crate::apim::BackupAccess::AccessKey(key) => vec![key.clone()],
                _ => Vec::new(),
            },
        };
        tracing::info!(service = %service.name, backup = %req.backup_name, "starting {}", operation.as_str());
        let resp = self.inner.pipeline.send(request).await?;
        let now = self.inner.pipeline.clock.now();
        let lro_resp = LroResponse {
            status: resp.status,
            headers: &resp.headers,
            body: &resp.body,
        };
        match lro::start(operation, &resource_url, lro_resp, now, &self.inner.poller) {
            Ok(Started::Done(Some(body))) => {
                Ok(LroStart::Done(Self::parse_service(&body, &op_name)?))
            }
            Ok(Started::Done(None)) => Ok(LroStart::Done(self.get_service(service).await?)),
            Ok(Started::Pending(state)) => Ok(LroStart::Pending(state)),
            Err(f) => Err(op_failed(operation, &service.name, f, Duration::ZERO)),
        }
    }

    /// Polls once, now (whatever `state.next_poll_at` says): the new state, or the result.
    /// On a transport or retry-exhausted error the given state is still valid: poll again.
    pub async fn poll_once(&self, state: &PollState) -> Result<PollStep> {
        let pinned = Url::parse(&state.resource_url).map_err(|e| Error::Decode {
            operation: "resume polling".into(),
            message: format!("resource URL in the poll state is not a URL: {e}"),
        })?;
        // The state may come from a checkpoint: check it against this client's endpoint.
        pin_url(&self.inner.pipeline.endpoint, pinned.as_str())?;
        let url = pin_url(&pinned, &state.url)?;
        let service = service_name_of(&state.resource_url);
        let op_name = format!("poll {}", state.operation.as_str());
        let mut request = self.get_request(url, &op_name, &service);
        request.raw_client_errors = true;
        let resp = self.inner.pipeline.send(request).await?;
        let now = self.inner.pipeline.clock.now();
        let lro_resp = LroResponse {
            status: resp.status,
            headers: &resp.headers,
            body: &resp.body,
        };
        let (new_state, next) = lro::on_response(state.clone(), lro_resp, now, &self.inner.poller);
        let waited = (now - state.started_at).to_std().unwrap_or_default();
        match next {
            Next::Poll { .. } => Ok(PollStep::Pending(new_state)),
            Next::Done(Some(body)) => Ok(PollStep::Done(Self::parse_service(&body, &op_name)?)),
            Next::Done(None) => {
                let url = pin_url(&self.inner.pipeline.endpoint, &state.resource_url)?;
                let resp = self
                    .inner
                    .pipeline
                    .send(self.get_request(url, "get service", &service))
                    .await?;
                Ok(PollStep::Done(Self::parse_service(
                    &Self::parse(&resp, "get service")?,
                    "get service",
                )?))
            }
            Next::Failed(f) => Err(op_failed(state.operation, &service, f, waited)),
        }
    }

    /// Polls until the operation ends, sleeping until each `next_poll_at`. `progress` sees
    /// every new state (checkpoint it there to resume after a crash).
    pub async fn wait(
        &self,
        mut state: PollState,
        mut progress: impl FnMut(&PollState) + Send,
    ) -> Result<ApimService> {
        loop {
            let now = self.inner.pipeline.clock.now();
            if state.next_poll_at > now {
                tokio::time::sleep((state.next_poll_at - now).to_std().unwrap_or_default()).await;
            }
            match self.poll_once(&state).await? {
                PollStep::Done(svc) => return Ok(svc),
                PollStep::Pending(s) => {
                    progress(&s);
                    state = s;
                }
            }
        }
    }

    /// `GET .../tenant/configuration/syncState`: when the configuration last changed.
    pub async fn sync_state(&self, service: &ServiceRef) -> Result<SyncState> {
        let op = "get syncState";
        let url = self.service_url(service, &["tenant", "configuration", "syncState"]);
        let resp = self
            .inner
            .pipeline
            .send(self.get_request(url, op, &service.name))
            .await?;
        let v: serde_json::Value = Self::parse(&resp, op)?;
        SyncState::from_json(&v).map_err(|message| Error::Decode {
            operation: op.into(),
            message,
        })
    }

    /// Lists a child collection of a service (`apis`, `products`, `namedValues`), all pages.
    async fn list_children<W, T>(
        &self,
        service: &ServiceRef,
        child: &str,
        operation: &str,
    ) -> Result<Vec<T>>
    where
        W: DeserializeOwned,
        T: From<W>,
    {
        let items: Vec<W> = self
            .list_pages(
                self.service_url(service, &[child]),
                operation,
                &service.name,
            )
            .await?;
        Ok(items.into_iter().map(T::from).collect())
    }

    /// Lists the service's APIs.
    pub async fn list_apis(&self, service: &ServiceRef) -> Result<Vec<ApiSummary>> {
        self.list_children::<WireItem<WireApiProps>, _>(service, "apis", "list apis")
            .await
    }

    /// Lists the service's products.
    pub async fn list_products(&self, service: &ServiceRef) -> Result<Vec<ProductSummary>> {
        self.list_children::<WireItem<WireProductProps>, _>(service, "products", "list products")
            .await
    }

    /// Lists the service's named values (secret values are never kept).
    pub async fn list_named_values(&self, service: &ServiceRef) -> Result<Vec<NamedValueSummary>> {
        self.list_children::<WireItem<WireNamedValueProps>, _>(
            service,
            "namedValues",
            "list named values",
        )
        .await
    }
}

/// Named-value updates and service deletion: ARM `PUT`/`DELETE`s that may answer `202` and
/// are then polled to completion with the same state machine as backups and restores.
impl ArmClient {
    /// `PUT .../namedValues/{name}` with `{"properties":{"displayName","value","secret"}}`:
    /// creates or replaces a named value, and waits for it to be saved (`200`/`201` carry the
    /// item; a `202` is polled to completion). The value is a [`Secret`]: it is sent, never
    /// logged, and removed from any error text the server sends back.
    pub async fn put_named_value(
        &self,
        service: &ServiceRef,
        name: &str,
        display_name: &str,
        value: &drsync_core::Secret,
        secret: bool,
    ) -> Result<NamedValueSummary> {
        let op = "put named value";
        let body = crate::apim::named_value_body(name, display_name, value, secret)?;
        let url = self.service_url(service, &["namedValues", name]);
        let request = Request {
            method: reqwest::Method::PUT,
            url: url.clone(),
            body: Some(body),
            kind: Kind::Write,
            // A PUT of the same content twice leaves the same state.
            idempotent: true,
            operation: op.into(),
            service: service.name.clone(),
            raw_client_errors: false,
            // Removed from every error and retry warning, should ARM echo it.
            secrets: vec![value.clone()],
        };
        tracing::info!(service = %service.name, named_value = %name, secret, "replacing a named value");
        let scrub = |e: Error| e.scrubbed(&[value.expose()]);
        let resp = self.inner.pipeline.send(request).await.map_err(scrub)?;
        let item = match resp.status {
            200 | 201 if !resp.body.is_empty() => Some(Self::parse(&resp, op).map_err(scrub)?),
            _ => self
                .finish_resource_lro(
                    LroOperation::PutNamedValue,
                    service,
                    url.as_str(),
                    &resp,
                    true,
                )
                .await
                .map_err(scrub)?,
        };
        let item = match item {
            Some(item) => item,
            None => {
                let resp = self
                    .inner
                    .pipeline
                    .send(self.get_request(url, "get named value", &service.name))
                    .await?;
                Self::parse(&resp, "get named value")?
            }
        };
        crate::apim::named_value_from_json(&item).map_err(|message| Error::Decode {
            operation: op.into(),
            message,
        })
    }

    /// `DELETE .../service/{name}`: deletes an API Management service and waits until it is
    /// gone (`200`/`204` at once; a `202` is polled to completion). Deleting a service that
    /// does not exist succeeds (ARM answers `204`).
    pub async fn delete_service(&self, service: &ServiceRef) -> Result<()> {
        let op = "delete service";
        let url = self.service_url(service, &[]);
        let request = Request {
            method: reqwest::Method::DELETE,
            url: url.clone(),
            body: None,
            kind: Kind::Write,
            idempotent: true,
            operation: op.into(),
            service: service.name.clone(),
            raw_client_errors: false,
            secrets: Vec::new(),
        };
        tracing::info!(service = %service.name, "deleting the service");
        let resp = self.inner.pipeline.send(request).await?;
        match resp.status {
            200 | 204 => Ok(()),
            _ => self
                .finish_resource_lro(
                    LroOperation::DeleteService,
                    service,
                    url.as_str(),
                    &resp,
                    false,
                )
                .await
                .map(drop),
        }
    }

    /// Follows the long-running operation `first` started on `resource_url` to its end. With
    /// `read_final`, returns the final resource when an answer carries it (`None`: read it
    /// with a GET); without, the operation's success is all that is wanted (a deletion).
    async fn finish_resource_lro(
        &self,
        operation: LroOperation,
        service: &ServiceRef,
        resource_url: &str,
        first: &Response,
        read_final: bool,
    ) -> Result<Option<serde_json::Value>> {
        let now = self.inner.pipeline.clock.now();
        let started = lro::start(
            operation,
            resource_url,
            LroResponse {
                status: first.status,
                headers: &first.headers,
                body: &first.body,
            },
            now,
            &self.inner.poller,
        )
        .map_err(|f| op_failed(operation, &service.name, f, Duration::ZERO))?;
        let mut state = match started {
            Started::Done(body) => return Ok(body),
            Started::Pending(state) => state,
        };
        let op_name = format!("poll {}", operation.as_str());
        loop {
            if state.kind == PollKind::FinalResult && !read_final {
                return Ok(None);
            }
            let now = self.inner.pipeline.clock.now();
            if state.next_poll_at > now {
                tokio::time::sleep((state.next_poll_at - now).to_std().unwrap_or_default()).await;
            }
            let url = pin_url(&self.inner.pipeline.endpoint, &state.url)?;
            let mut request = self.get_request(url, &op_name, &service.name);
            request.raw_client_errors = true;
            let resp = self.inner.pipeline.send(request).await?;
            let now = self.inner.pipeline.clock.now();
            let waited = (now - state.started_at).to_std().unwrap_or_default();
            let (new_state, next) = lro::on_response(
                state,
                LroResponse {
                    status: resp.status,
                    headers: &resp.headers,
                    body: &resp.body,
                },
                now,
                &self.inner.poller,
            );
            match next {
                Next::Poll { .. } => state = new_state,
                Next::Done(body) => return Ok(if read_final { body } else { None }),
                Next::Failed(f) => return Err(op_failed(operation, &service.name, f, waited)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::StaticTokenCredential;
    use crate::error::ArmErrorBody;
    use drsync_core::{ManualClock, Secret};

    fn client(endpoint: &str) -> Result<ArmClient> {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(chrono::DateTime::UNIX_EPOCH));
        let cred = Arc::new(StaticTokenCredential::new(Secret::new("tok"), None));
        ArmClient::new(
            ArmClientConfig::new(Url::parse(endpoint).unwrap()),
            cred,
            clock,
        )
    }

    fn sref() -> ServiceRef {
        let sub = SubscriptionId::parse("00000000-0000-0000-0000-000000000000").unwrap();
        ServiceRef::new(sub, "rg1", "apimService1").unwrap()
    }

    #[test]
    fn endpoints_must_be_https_or_loopback() {
        assert!(client("https://management.azure.com").is_ok());
        assert!(client("http://127.0.0.1:8080").is_ok());
        assert!(matches!(
            client("http://management.azure.com"),
            Err(Error::InsecureUrl { .. })
        ));
    }

    #[test]
    fn urls_follow_the_arm_layout() {
        let c = client("https://management.azure.com/").unwrap();
        assert_eq!(
            c.service_url(&sref(), &["backup"]).as_str(),
            "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1/backup?api-version=2024-05-01"
        );
        let c = client("http://127.0.0.1:4000").unwrap();
        assert_eq!(
            c.service_url(&sref(), &["tenant", "configuration", "syncState"])
                .path(),
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1/tenant/configuration/syncState"
        );
    }

    #[tokio::test]
    async fn a_poll_state_pointing_elsewhere_sends_nothing() {
        let c = client("https://management.azure.com").unwrap();
        let resource = c.service_url(&sref(), &[]).to_string();
        let state = PollState {
            operation: LroOperation::Restore,
            resource_url: resource.clone(),
            kind: lro::PollKind::Location,
            url: "https://evil.example.com/operationresults/1".into(),
            location: None,
            started_at: chrono::DateTime::UNIX_EPOCH,
            next_poll_at: chrono::DateTime::UNIX_EPOCH,
            deadline: chrono::DateTime::UNIX_EPOCH + chrono::Duration::hours(1),
            polls: 0,
            last_status: None,
        };
        let err = c.poll_once(&state).await.unwrap_err();
        assert!(matches!(err, Error::ForeignHost { .. }), "{err}");
        // A checkpoint from another ARM endpoint is refused too.
        let other = client("https://management.usgovcloudapi.net").unwrap();
        let state = PollState {
            url: resource.clone(),
            ..state
        };
        let err = other.poll_once(&state).await.unwrap_err();
        assert!(matches!(err, Error::ForeignHost { .. }), "{err}");
        assert_eq!(c.metrics().requests_sent + other.metrics().requests_sent, 0);
        assert_eq!(c.metrics().token_fetches + other.metrics().token_fetches, 0);
    }

    /// A one-request-per-connection HTTP server answering from a script; `None` drops the
    /// connection after reading the request. Returns its base URL and the request heads.
    async fn scripted(
        script: Vec<Option<(u16, &'static str, &'static str)>>,
    ) -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
        scripted_owned(
            script
                .into_iter()
                .map(|a| a.map(|(s, h, b)| (s, h.to_owned(), b.to_owned())))
                .collect(),
        )
        .await
    }

    /// [`scripted`] with answers built at run time; a body of `ECHO` answers with the
    /// request head, as a misbehaving proxy's error page might.
    async fn scripted_owned(
        script: Vec<Option<(u16, String, String)>>,
    ) -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            for answer in script {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                seen.lock().push(head.clone());
                if let Some((status, headers, body)) = answer {
                    let body = if body == "ECHO" { head } else { body };
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    sock.write_all(resp.as_bytes()).await.unwrap();
                }
                drop(sock);
            }
        });
        (base, heads)
    }

    fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    const SERVICE: &str = r#"{"id":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1","name":"apimService1","sku":{"name":"Developer","capacity":1},"properties":{"provisioningState":"Succeeded"}}"#;

    fn fast(base: &str) -> ArmClient {
        let mut cfg = ArmClientConfig::new(Url::parse(base).unwrap());
        cfg.retry.base_delay = Duration::from_millis(5);
        cfg.jitter_seed = Some(1);
        let cred = Arc::new(StaticTokenCredential::new(Secret::new("tok-abc"), None));
        ArmClient::new(cfg, cred, Arc::new(drsync_core::SystemClock)).unwrap()
    }

    #[tokio::test]
    async fn every_attempt_carries_the_token_and_one_client_request_id() {
        let (base, heads) = scripted(vec![
            Some((
                503,
                "retry-after-ms: 20\r\n",
                r#"{"error":{"code":"ServiceUnavailable","message":"busy"}}"#,
            )),
            None,
            Some((
                401,
                "",
                r#"{"error":{"code":"ExpiredAuthenticationToken","message":"expired"}}"#,
            )),
            Some((200, "", SERVICE)),
        ])
        .await;
        let c = fast(&base);
        let svc = c.get_service(&sref()).await.unwrap();
        assert_eq!(svc.sku().unwrap().tier, drsync_core::SkuTier::Developer);
        let heads = heads.lock().clone();
        assert_eq!(heads.len(), 4);
        let ids: Vec<&str> = heads
            .iter()
            .map(|h| header_of(h, "x-ms-client-request-id").unwrap())
            .collect();
        assert!(uuid::Uuid::parse_str(ids[0]).is_ok(), "{ids:?}");
        assert!(
            ids.iter().all(|i| *i == ids[0]),
            "one id across retries: {ids:?}"
        );
        for h in &heads {
            assert!(h.starts_with("GET /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1?api-version=2024-05-01 "), "{h}");
            assert_eq!(header_of(h, "authorization"), Some("Bearer tok-abc"));
            assert!(header_of(h, "user-agent").unwrap().starts_with("drsync/"));
        }
        // The cached token never shows in the client's Debug output.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("tok-abc"), "{dbg}");
        let m = c.metrics();
        assert_eq!(
            (
                m.requests_sent,
                m.server_errors,
                m.transport_errors,
                m.unauthorized_401,
                m.retries
            ),
            (4, 1, 1, 1, 2)
        );
    }

    #[tokio::test]
    async fn a_dropped_backup_post_is_reported_not_resent() {
        let (base, heads) = scripted(vec![None, Some((202, "", ""))]).await;
        let c = fast(&base);
        let req = crate::apim::BackupRestoreRequest {
            storage_account: "acct".into(),
            container: "backups".into(),
            backup_name: "b1".into(),
            access: crate::apim::BackupAccess::AccessKey(Secret::new("S3CRETKEY")),
        };
        let err = c.begin_backup(&sref(), &req).await.unwrap_err();
        assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
        assert!(!err.to_string().contains("S3CRETKEY"));
        let heads = heads.lock().clone();
        assert_eq!(heads.len(), 1, "exactly one POST");
        assert!(heads[0].starts_with("POST "), "{}", heads[0]);
        assert_eq!(
            header_of(&heads[0], "content-type"),
            Some("application/json")
        );
    }

    #[tokio::test]
    async fn throttling_answers_and_low_remaining_counts_slow_down() {
        let (base, heads) = scripted(vec![
            Some((
                429,
                "retry-after: 1\r\nretry-after-ms: 30\r\n",
                r#"{"error":{"code":"SubscriptionRequestsThrottled","message":"slow down"}}"#,
            )),
            Some((
                200,
                "x-ms-ratelimit-remaining-subscription-reads: 3\r\n",
                SERVICE,
            )),
            Some((
                200,
                "x-ms-ratelimit-remaining-subscription-reads: 240\r\n",
                SERVICE,
            )),
        ])
        .await;
        let mut cfg = ArmClientConfig::new(Url::parse(&base).unwrap());
        cfg.retry.base_delay = Duration::from_millis(5);
        cfg.limits.reads_per_second = 1000.0;
        cfg.jitter_seed = Some(3);
        let cred = Arc::new(StaticTokenCredential::new(Secret::new("t"), None));
        let c = ArmClient::new(cfg, cred, Arc::new(drsync_core::SystemClock)).unwrap();
        c.get_service(&sref()).await.unwrap();
        c.get_service(&sref()).await.unwrap();
        assert_eq!(heads.lock().len(), 3);
        let m = c.metrics();
        assert_eq!(
            (m.throttled_429, m.retries, m.slowdowns),
            (1, 1, 1),
            "{m:?}"
        );
    }

    fn backup_request() -> crate::apim::BackupRestoreRequest {
        crate::apim::BackupRestoreRequest {
            storage_account: "acct".into(),
            container: "backups".into(),
            backup_name: "b1".into(),
            access: crate::apim::BackupAccess::AccessKey(Secret::new("S3CRETKEY")),
        }
    }

    const ACCEPTED: (u16, &str, &str) = (
        202,
        "location: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1/operationresults/op1?api-version=2024-05-01\r\n",
        "",
    );

    // See: #4. Which failed answers to a backup POST are definite refusals (resent) and which
    // leave its fate unknown (never resent).
    #[tokio::test]
    async fn a_backup_post_is_resent_only_after_a_definite_refusal() {
        let err_body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        // Unknown fate: exactly one POST, OutcomeUnknown with the status, not retryable.
        for (status, headers, code) in [
            (500, "", "InternalServerError"),
            (502, "", "BadGateway"),
            (504, "", "GatewayTimeout"),
            (408, "", "RequestTimeout"),
            (503, "", "ServiceUnavailable"),
        ] {
            let (base, heads) = scripted_owned(vec![
                Some((status, headers.to_owned(), err_body(code))),
                Some((ACCEPTED.0, ACCEPTED.1.to_owned(), String::new())),
            ])
            .await;
            let err = fast(&base)
                .begin_backup(&sref(), &backup_request())
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::OutcomeUnknown { .. }),
                "{status}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("HTTP {status} {code}")),
                "{err}"
            );
            assert!(!err.is_retryable() && err.may_have_been_sent());
            assert!(!err.to_string().contains("S3CRETKEY"));
            assert_eq!(heads.lock().len(), 1, "{status}: sent exactly once");
        }
        // Definite refusals: resent, and the second answer starts the operation.
        for (status, headers) in [
            (429, "retry-after-ms: 10\r\n"),
            (429, ""),
            (503, "retry-after-ms: 10\r\n"),
            (503, "retry-after: 0\r\n"),
        ] {
            let (base, heads) = scripted_owned(vec![
                Some((status, headers.to_owned(), err_body("Busy"))),
                Some((ACCEPTED.0, ACCEPTED.1.to_owned(), String::new())),
            ])
            .await;
            let started = fast(&base)
                .begin_backup(&sref(), &backup_request())
                .await
                .unwrap();
            assert!(
                matches!(started, LroStart::Pending(_)),
                "{status} {headers}"
            );
            let heads = heads.lock().clone();
            assert_eq!(heads.len(), 2, "{status} {headers}");
            assert!(heads.iter().all(|h| h.starts_with("POST ")));
        }
        // A client error is a definite answer, reported as such and not resent.
        let (base, heads) =
            scripted_owned(vec![Some((409, String::new(), err_body("Conflict")))]).await;
        let err = fast(&base)
            .begin_backup(&sref(), &backup_request())
            .await
            .unwrap_err();
        assert_eq!(
            (err.status(), err.arm_code()),
            (Some(409), Some("Conflict"))
        );
        assert_eq!(heads.lock().len(), 1);
    }

    fn pending_state(c: &ArmClient, url: &str) -> PollState {
        PollState {
            operation: LroOperation::Restore,
            resource_url: c.service_url(&sref(), &[]).to_string(),
            kind: lro::PollKind::Location,
            url: url.to_owned(),
            location: Some(url.to_owned()),
            started_at: chrono::DateTime::UNIX_EPOCH,
            next_poll_at: chrono::DateTime::UNIX_EPOCH,
            deadline: chrono::DateTime::<chrono::Utc>::MAX_UTC,
            polls: 0,
            last_status: None,
        }
    }

    // See: #4 and PROTOCOL.md section 1: "403 while polling when the caller may start but not
    // read operation results". The operation may be running: not its failure.
    #[tokio::test]
    async fn a_403_while_polling_is_an_error_of_the_poll_not_the_operations_failure() {
        let forbidden = r#"{"error":{"code":"AuthorizationFailed","message":"The client does not have authorization to perform action 'Microsoft.ApiManagement/service/operationresults/read'"}}"#;
        let (base, heads) = scripted(vec![Some((403, "", forbidden))]).await;
        let c = fast(&base);
        let state = pending_state(
            &c,
            &format!(
                "{base}/subscriptions/00000000-0000-0000-0000-000000000000/operationresults/1"
            ),
        );
        let err = c.poll_once(&state).await.unwrap_err();
        assert!(matches!(err, Error::Arm { status: 403, .. }), "{err}");
        assert_eq!(err.arm_code(), Some("AuthorizationFailed"));
        assert_eq!(heads.lock().len(), 1, "a 403 is not retried");

        // The table of polling answers: the operation's failure, or a problem of the poll.
        for (status, code, operation_failed) in [
            (400, "InvalidParameters", true),
            (404, "OperationNotFound", true),
            (409, "Conflict", true),
            (500, "RestoreFailed", true),
            (403, "AuthorizationFailed", false),
            (403, "", false),
        ] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            let (base, _) = scripted_owned(vec![Some((status, String::new(), body))]).await;
            let c = fast(&base);
            let state = pending_state(&c, &format!("{base}/op"));
            let err = c.poll_once(&state).await.unwrap_err();
            assert_eq!(
                matches!(err, Error::OperationFailed { .. }),
                operation_failed,
                "{status} {code}: {err}"
            );
        }
    }

    // See: #4. A nextLink to another host (here: another port) is refused; the token is not
    // sent there.
    #[tokio::test]
    async fn a_next_link_to_a_foreign_host_is_refused_before_the_token_goes_there() {
        let (elsewhere, foreign_heads) = scripted(vec![Some((200, "", r#"{"value":[]}"#))]).await;
        let page = format!(
            r#"{{"value":[{SERVICE}],"nextLink":"{elsewhere}/subscriptions/x/providers/Microsoft.ApiManagement/service?page=2"}}"#
        );
        let (base, heads) = scripted_owned(vec![Some((200, String::new(), page))]).await;
        let c = fast(&base);
        let sub = sref().subscription;
        let err = c.list_services(&sub, None).await.unwrap_err();
        assert!(matches!(err, Error::ForeignHost { .. }), "{err}");
        assert!(!err.to_string().contains("page=2"), "{err}");
        assert_eq!(heads.lock().len(), 1);
        tokio::task::yield_now().await;
        assert!(
            foreign_heads.lock().is_empty(),
            "nothing reached the foreign host"
        );
    }

    // See: #4. Redirects are never followed: the bearer token (or a backup body with its
    // account key) must not travel to wherever a 3xx points.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (elsewhere, foreign_heads) = scripted(vec![Some((200, "", SERVICE))]).await;
        let redirecting = |status: u16| {
            let to = format!("location: {elsewhere}/stolen\r\n");
            scripted_owned(vec![Some((status, to, String::new()))])
        };
        for status in [301, 302, 307, 308] {
            let (base, heads) = redirecting(status).await;
            let err = fast(&base).get_service(&sref()).await.unwrap_err();
            assert_eq!(err.status(), Some(status), "{err}");
            assert_eq!(heads.lock().len(), 1);
            let (base, heads) = redirecting(status).await;
            let err = fast(&base)
                .begin_backup(&sref(), &backup_request())
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(status), "{err}");
            assert!(!err.to_string().contains("S3CRETKEY"), "{err}");
            assert_eq!(heads.lock().len(), 1);
        }
        tokio::task::yield_now().await;
        assert!(
            foreign_heads.lock().is_empty(),
            "nothing followed a redirect"
        );
    }

    // See: #4. An error page that echoes the request (a misbehaving proxy) must not put the
    // bearer token into the error, hence into logs.
    #[tokio::test]
    async fn an_error_body_echoing_the_authorization_header_is_redacted() {
        let (base, heads) = scripted(vec![Some((400, "", "ECHO"))]).await;
        let c = fast(&base);
        let err = c.get_service(&sref()).await.unwrap_err();
        assert!(
            heads.lock()[0].contains("Bearer tok-abc"),
            "the server saw the token"
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains("tok-abc"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    /// A credential failing with the given errors first, then handing out `tok-abc`.
    #[derive(Debug)]
    struct Flaky(parking_lot::Mutex<Vec<Error>>);

    #[async_trait::async_trait]
    impl TokenCredential for Flaky {
        async fn get_token(&self, _scope: &str) -> Result<crate::credential::AccessToken> {
            match self.0.lock().pop() {
                Some(e) => Err(e),
                None => Ok(crate::credential::AccessToken {
                    token: Secret::new("tok-abc"),
                    expires_on: chrono::DateTime::<chrono::Utc>::MAX_UTC,
                }),
            }
        }
    }

    fn cred_err(transient: bool) -> Error {
        Error::Credential {
            source_name: "test".into(),
            message: "HTTP 503 temporarily_unavailable".into(),
            transient,
        }
    }

    // See: #4. A token endpoint blip is retried (nothing was sent to ARM); a refusal is final.
    #[tokio::test]
    async fn transient_token_failures_are_retried_and_refusals_are_not() {
        let (base, heads) = scripted(vec![Some((200, "", SERVICE))]).await;
        let mut cfg = ArmClientConfig::new(Url::parse(&base).unwrap());
        cfg.retry.base_delay = Duration::from_millis(5);
        let flaky = Arc::new(Flaky(parking_lot::Mutex::new(vec![
            cred_err(true),
            cred_err(true),
        ])));
        let c = ArmClient::new(cfg.clone(), flaky, Arc::new(drsync_core::SystemClock)).unwrap();
        c.get_service(&sref()).await.unwrap();
        let m = c.metrics();
        assert_eq!(
            (m.token_fetches, m.retries, m.requests_sent),
            (3, 2, 1),
            "{m:?}"
        );
        assert_eq!(heads.lock().len(), 1);

        let refused = Arc::new(Flaky(parking_lot::Mutex::new(vec![cred_err(false)])));
        let c = ArmClient::new(cfg.clone(), refused, Arc::new(drsync_core::SystemClock)).unwrap();
        let err = c.get_service(&sref()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Credential {
                    transient: false,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!((c.metrics().retries, c.metrics().requests_sent), (0, 0));

        // Retries exhausted: the credential's own error comes back, not a generic one.
        cfg.retry.max_attempts = 2;
        let down = Arc::new(Flaky(parking_lot::Mutex::new(vec![
            cred_err(true),
            cred_err(true),
            cred_err(true),
        ])));
        let c = ArmClient::new(cfg, down, Arc::new(drsync_core::SystemClock)).unwrap();
        let err = c.get_service(&sref()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Credential {
                    transient: true,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.is_retryable() && !err.may_have_been_sent());
        assert_eq!((c.metrics().retries, c.metrics().requests_sent), (1, 0));
    }

    fn fast_polling(base: &str) -> ArmClient {
        let mut cfg = ArmClientConfig::new(Url::parse(base).unwrap());
        cfg.retry.base_delay = Duration::from_millis(5);
        cfg.poller.default_interval = Duration::from_millis(5);
        cfg.jitter_seed = Some(1);
        let cred = Arc::new(StaticTokenCredential::new(Secret::new("tok-abc"), None));
        ArmClient::new(cfg, cred, Arc::new(drsync_core::SystemClock)).unwrap()
    }

    const NV_PATH: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1/namedValues/backend-key";

    #[tokio::test]
    async fn a_named_value_put_sends_the_body_and_follows_a_202_to_the_saved_item() {
        let (base, heads) = scripted_owned(vec![
            Some((202, "location: /LOC\r\nretry-after-ms: 5\r\n".into(), String::new())),
            Some((202, "retry-after-ms: 5\r\n".into(), String::new())),
            Some((
                200,
                String::new(),
                format!(r#"{{"id":"{NV_PATH}","name":"backend-key","properties":{{"displayName":"backend-key","secret":true}}}}"#),
            )),
        ])
        .await;
        // The scripted server cannot know its own address in advance: it answers with a
        // relative Location, which the poller resolves against (and pins to) the resource's host.
        let c = fast_polling(&base);
        let value = Secret::new("p4ssw0rd-value");
        let nv = c
            .put_named_value(&sref(), "backend-key", "backend-key", &value, true)
            .await;
        let heads = heads.lock().clone();
        let nv = nv.unwrap_or_else(|e| panic!("{e}; requests: {heads:#?}"));
        assert_eq!(nv.name, "backend-key");
        assert!(nv.secret);
        assert_eq!(nv.value, None, "a secret's value is not kept");
        assert_eq!(heads.len(), 3, "{heads:#?}");
        assert!(
            heads[0].starts_with(&format!("PUT {NV_PATH}?api-version=2024-05-01 ")),
            "{}",
            heads[0]
        );
        assert!(heads[1].starts_with("GET /LOC "), "{}", heads[1]);
        assert!(heads[2].starts_with("GET /LOC "), "{}", heads[2]);
    }

    /// A `std::io::Write` into a shared buffer, for capturing the log in tests.
    #[derive(Clone, Default)]
    struct LogBuf(Arc<parking_lot::Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogBuf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock()).into_owned()
        }
    }

    // See: #6. A server echoing the value of a named value (or an account key) in a retried
    // 5xx/429 body must not put it in the retry warning, nor in the final error.
    #[tokio::test]
    async fn values_echoed_in_retried_answers_reach_neither_the_log_nor_the_error() {
        let log = LogBuf::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let echo = |status: u16, headers: &str| {
            Some((
                status,
                headers.to_string(),
                r#"{"error":{"code":"InternalError","message":"cannot save value 'p4ssw0rd-value' now","details":[{"code":"Echo","message":"p4ssw0rd-value"}]}}"#.to_string(),
            ))
        };
        let saved = format!(
            r#"{{"id":"{NV_PATH}","name":"backend-key","properties":{{"displayName":"backend-key","secret":true}}}}"#
        );
        let (base, heads) = scripted_owned(vec![
            echo(503, ""),
            echo(429, "retry-after-ms: 5\r\n"),
            Some((200, String::new(), saved)),
        ])
        .await;
        let c = fast_polling(&base);
        let value = Secret::new("p4ssw0rd-value");
        let nv = c
            .put_named_value(&sref(), "backend-key", "backend-key", &value, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nv.name, "backend-key");
        assert_eq!(heads.lock().len(), 3, "two retries, then the answer");
        let text = log.text();
        assert_eq!(text.matches("retrying").count(), 2, "{text}");
        assert!(text.contains("HTTP 503 InternalError"), "{text}");
        assert!(!text.contains("p4ssw0rd-value"), "{text}");
        assert!(
            !text.contains("cannot save value"),
            "no server message in retry warnings: {text}"
        );

        // Retries exhausted: the final error names the status and code, never the value.
        let (base, _) = scripted_owned((0..10).map(|_| echo(500, "")).collect()).await;
        let mut cfg = ArmClientConfig::new(Url::parse(&base).unwrap());
        cfg.retry.base_delay = Duration::from_millis(1);
        cfg.retry.max_attempts = 2;
        cfg.jitter_seed = Some(1);
        let cred = Arc::new(StaticTokenCredential::new(Secret::new("tok-abc"), None));
        let c = ArmClient::new(cfg, cred, Arc::new(drsync_core::SystemClock)).unwrap();
        let err = c
            .put_named_value(&sref(), "backend-key", "backend-key", &value, false)
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("InternalError"), "{shown}");
        assert!(!shown.contains("p4ssw0rd-value"), "{shown}");
        assert!(!log.text().contains("p4ssw0rd-value"), "{}", log.text());
    }

    #[test]
    fn scrubbing_reaches_every_text_of_an_error() {
        let body = ArmErrorBody {
            code: "Bad".into(),
            message: "value K3Y-VALUE refused".into(),
            target: Some("K3Y-VALUE".into()),
            details: vec![ArmErrorBody {
                code: "D".into(),
                message: "again K3Y-VALUE".into(),
                target: None,
                details: Vec::new(),
                additional_info: vec![serde_json::json!({"v": "K3Y-VALUE"})],
            }],
            additional_info: Vec::new(),
        };
        let errors = [
            Error::Arm {
                operation: "put".into(),
                status: 500,
                body: Box::new(body.clone()),
                request_id: None,
                attempts: 1,
            },
            Error::OperationFailed {
                operation: "put".into(),
                status: "Failed".into(),
                body: Box::new(body),
            },
            Error::Transport {
                operation: "put".into(),
                message: "reset after K3Y-VALUE".into(),
                sent: true,
                attempts: 1,
            },
            Error::OutcomeUnknown {
                operation: "put".into(),
                message: "K3Y-VALUE".into(),
            },
            Error::Decode {
                operation: "put".into(),
                message: "K3Y-VALUE".into(),
            },
        ];
        for e in errors {
            let e = e.scrubbed(&["K3Y-VALUE", ""]);
            let shown = format!("{e} {e:?} {}", e.retry_summary());
            assert!(!shown.contains("K3Y-VALUE"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_refused_named_value_put_never_shows_the_value() {
        let (base, heads) = scripted(vec![Some((
            400,
            "",
            r#"{"error":{"code":"ValidationError","message":"Value 'p4ssw0rd-value' is not allowed."}}"#,
        ))])
        .await;
        let c = fast_polling(&base);
        let err = c
            .put_named_value(
                &sref(),
                "backend-key",
                "backend-key",
                &Secret::new("p4ssw0rd-value"),
                true,
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("p4ssw0rd-value"), "{text}");
        assert!(text.contains("ValidationError"), "{text}");
        assert!(!format!("{err:?}").contains("p4ssw0rd-value"));
        assert_eq!(heads.lock().len(), 1, "a 400 is not retried");
        // Bad input is refused before anything is sent.
        let err = c
            .put_named_value(&sref(), "a b", "a b", &Secret::new("x"), false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        let err = c
            .put_named_value(&sref(), "k", "k", &Secret::new(""), false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert_eq!(c.metrics().requests_sent, 1);
    }

    #[tokio::test]
    async fn a_service_delete_waits_for_its_operation_and_reports_its_failure() {
        let (base, heads) = scripted(vec![
            Some((
                202,
                "azure-asyncoperation: /ops/d1\r\nretry-after-ms: 5\r\n",
                "",
            )),
            Some((200, "retry-after-ms: 5\r\n", r#"{"status":"InProgress"}"#)),
            Some((200, "", r#"{"status":"Succeeded"}"#)),
        ])
        .await;
        let c = fast_polling(&base);
        c.delete_service(&sref()).await.unwrap();
        let heads = heads.lock().clone();
        assert_eq!(heads.len(), 3, "no GET of the deleted service: {heads:#?}");
        assert!(heads[0].starts_with("DELETE /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/apimService1?api-version=2024-05-01 "), "{}", heads[0]);
        assert!(heads[1].starts_with("GET /ops/d1 "), "{}", heads[1]);

        // 204 (nothing to delete) is success at once; a failed operation is an error.
        let (base, _) = scripted(vec![
            Some((204, "", "")),
            Some((202, "azure-asyncoperation: /ops/d2\r\nretry-after-ms: 5\r\n", "")),
            Some((
                200,
                "",
                r#"{"status":"Failed","error":{"code":"Conflict","message":"an operation is running"}}"#,
            )),
        ])
        .await;
        let c = fast_polling(&base);
        c.delete_service(&sref()).await.unwrap();
        let err = c.delete_service(&sref()).await.unwrap_err();
        assert!(matches!(err, Error::OperationFailed { .. }), "{err}");
        assert!(err.to_string().contains("delete of apimService1"), "{err}");
    }
}
