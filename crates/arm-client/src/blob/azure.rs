//! Azure Blob Storage (and Azurite) behind [`BlobStore`].
//!
//! Blob operations (list, head, get, put, delete) go through the `object_store` crate, one
//! `MicrosoftAzure` instance per container. What `object_store` lacks is signed here by hand
//! (PROTOCOL.md section 6): the container check (`HEAD ?restype=container`, whose
//! `x-ms-error-code: ContainerNotFound` makes [`BlobError::ContainerNotFound`] distinct from a
//! missing blob) and container creation.
//!
//! Authentication: the account key (Shared Key) or an Entra ID token for
//! `https://storage.azure.com/.default`. Endpoints: `https://{account}.blob.core.windows.net`
//! or a path-style loopback URL such as Azurite's `http://127.0.0.1:10000/devstoreaccount1`;
//! plain HTTP to any other host is refused.
//!
//! Neither the key nor a token ever appears in `Debug`, errors or logs.
//!
//! Redirects: the hand-signed requests never follow one. `object_store`'s own client follows
//! them (it exposes no switch), but `reqwest` drops the `Authorization` header whenever the
//! scheme, host or port changes, so neither the Shared Key signature nor a token can follow a
//! redirect to another origin.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use hmac::{Hmac, Mac};
use object_store::azure::{AzureCredential, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use sha2::Sha256;
use url::Url;

use drsync_core::{Clock, Secret, SystemClock};

use super::{BlobError, BlobMeta, BlobResult, BlobStore};
use crate::credential::{STORAGE_SCOPE, TokenCache, TokenCredential};
use crate::error::{Error, Result, redact};
use crate::security::{check_credential_url, harden, is_loopback};

/// The storage service version drsync's hand-signed requests ask for (supports OAuth).
pub const STORAGE_VERSION: &str = "2021-08-06";

/// How drsync authenticates to a storage account.
#[derive(Clone)]
pub enum BlobAuth {
    /// The account key (Shared Key). Never printed.
    SharedKey(Secret),
    /// Entra ID tokens for the storage scope.
    Token(Arc<TokenCache>),
}

impl fmt::Debug for BlobAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKey(_) => f.write_str("SharedKey(<redacted>)"),
            Self::Token(_) => f.write_str("Token"),
        }
    }
}

/// One Azure storage account's blob service.
pub struct AzureBlobStore {
    account: String,
    endpoint: Url,
    auth: BlobAuth,
    key: Option<Vec<u8>>,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    stores: parking_lot::Mutex<HashMap<String, Arc<MicrosoftAzure>>>,
}

impl fmt::Debug for AzureBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBlobStore")
            .field("account", &self.account)
            .field("endpoint", &self.endpoint.as_str())
            .field("auth", &self.auth)
            .finish()
    }
}

#[derive(Debug)]
struct StorageTokenProvider(Arc<TokenCache>);

#[async_trait::async_trait]
impl object_store::CredentialProvider for StorageTokenProvider {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let token =
            self.0
                .get_token(STORAGE_SCOPE)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "MicrosoftAzure",
                    source: Box::new(e),
                })?;
        Ok(Arc::new(AzureCredential::BearerToken(
            token.token.expose().to_owned(),
        )))
    }
}

/// The Shared Key string-to-sign of a request without a body (PROTOCOL.md section 6): the
/// verb, 11 standard header lines (all empty here: no body, no conditions), the sorted
/// `x-ms-*` headers, then `/{account}{path}` and the sorted query parameters.
pub fn string_to_sign(
    method: &str,
    url: &Url,
    account: &str,
    ms_headers: &[(&str, &str)],
) -> String {
    let mut s = String::new();
    s.push_str(method);
    s.push('\n');
    for _ in 0..11 {
        s.push('\n');
    }
    let mut headers: Vec<(String, &str)> = ms_headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim()))
        .collect();
    headers.sort();
    for (k, v) in headers {
        s.push_str(&k);
        s.push(':');
        s.push_str(v);
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(url.path());
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    params.sort();
    for (k, v) in params {
        s.push('\n');
        s.push_str(&k);
        s.push(':');
        s.push_str(&v);
    }
    s
}

/// `base64(HMAC-SHA256(key, string_to_sign))`.
pub fn shared_key_signature(key: &[u8], string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl AzureBlobStore {
    /// A store for `account` at `endpoint` (see the module docs for the accepted forms).
    pub fn new(account: impl Into<String>, endpoint: Url, auth: BlobAuth) -> Result<Self> {
        Self::with_clock(account, endpoint, auth, Arc::new(SystemClock))
    }

    /// Like [`AzureBlobStore::new`], dating hand-signed requests with `clock`.
    pub fn with_clock(
        account: impl Into<String>,
        mut endpoint: Url,
        auth: BlobAuth,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let account = account.into();
        if !drsync_core::storage::valid_account_name(&account) {
            return Err(Error::InvalidConfig(format!(
                "storage account `{account}` is not valid (3-24 lowercase letters and digits)"
            )));
        }
        check_credential_url(&endpoint)?;
        if endpoint.cannot_be_a_base() || endpoint.query().is_some() {
            // Without the query: it could be a SAS token, signature included.
            return Err(Error::InvalidConfig(format!(
                "blob endpoint `{}` must be a plain base URL, without a query (drsync signs requests itself; a SAS is not supported)",
                crate::error::display_url(&endpoint)
            )));
        }
        if let Ok(mut p) = endpoint.path_segments_mut() {
            p.pop_if_empty();
        }
        let key = match &auth {
            BlobAuth::SharedKey(k) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(k.expose().trim())
                    .map_err(|_| {
                        Error::InvalidConfig(format!(
                            "the account key of `{account}` is not base64"
                        ))
                    })?,
            ),
            BlobAuth::Token(_) => None,
        };
        let http = harden(
            reqwest::Client::builder().timeout(Duration::from_secs(60)),
            &endpoint,
        )
        .build()
        .map_err(|e| Error::InvalidConfig(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            account,
            endpoint,
            auth,
            key,
            http,
            clock,
            stores: parking_lot::Mutex::new(HashMap::new()),
        })
    }

    /// The blob service endpoint.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    fn other(&self, message: impl fmt::Display) -> BlobError {
        BlobError::Other {
            account: self.account.clone(),
            message: redact(&message.to_string()),
        }
    }

    fn check_container(&self, container: &str) -> BlobResult<()> {
        if drsync_core::storage::valid_container_name(container) {
            Ok(())
        } else {
            Err(BlobError::InvalidName(container.into()))
        }
    }

    fn path(blob: &str) -> BlobResult<ObjectPath> {
        if blob.is_empty() || blob.ends_with('/') {
            return Err(BlobError::InvalidName(blob.into()));
        }
        ObjectPath::parse(blob).map_err(|_| BlobError::InvalidName(blob.into()))
    }

    fn store(&self, container: &str) -> BlobResult<Arc<MicrosoftAzure>> {
        self.check_container(container)?;
        if let Some(s) = self.stores.lock().get(container) {
            return Ok(s.clone());
        }
        let mut endpoint = self.endpoint.to_string();
        while endpoint.ends_with('/') {
            endpoint.pop();
        }
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(&self.account)
            .with_container_name(container)
            .with_endpoint(endpoint)
            .with_allow_http(self.endpoint.scheme() == "http" && is_loopback(&self.endpoint));
        builder = match &self.auth {
            BlobAuth::SharedKey(k) => builder.with_access_key(k.expose().trim()),
            BlobAuth::Token(cache) => {
                builder.with_credentials(Arc::new(StorageTokenProvider(cache.clone())))
            }
        };
        let store = Arc::new(builder.build().map_err(|e| self.other(e))?);
        self.stores
            .lock()
            .insert(container.to_owned(), store.clone());
        Ok(store)
    }

    fn container_url(&self, container: &str, extra: &[(&str, &str)]) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .expect("base URL")
            .pop_if_empty()
            .push(container);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("restype", "container");
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Sends a hand-signed, body-less container request.
    async fn container_request(
        &self,
        method: reqwest::Method,
        container: &str,
    ) -> BlobResult<reqwest::Response> {
        let url = self.container_url(container, &[]);
        let date = httpdate::fmt_http_date(self.clock.now().into());
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header("x-ms-date", &date)
            .header("x-ms-version", STORAGE_VERSION);
        if method == reqwest::Method::PUT {
            req = req.header("content-length", "0");
        }
        req = match (&self.auth, &self.key) {
            (BlobAuth::SharedKey(_), Some(key)) => {
                let sts = string_to_sign(
                    method.as_str(),
                    &url,
                    &self.account,
                    &[("x-ms-date", &date), ("x-ms-version", STORAGE_VERSION)],
                );
                let sig = shared_key_signature(key, &sts);
                req.header("authorization", format!("SharedKey {}:{sig}", self.account))
            }
            (BlobAuth::Token(cache), _) => {
                let token =
                    cache
                        .get_token(STORAGE_SCOPE)
                        .await
                        .map_err(|e| BlobError::AccessDenied {
                            account: self.account.clone(),
                            message: e.to_string(),
                        })?;
                req.bearer_auth(token.token.expose())
            }
            (BlobAuth::SharedKey(_), None) => unreachable!("the key is decoded at construction"),
        };
        req.send().await.map_err(|e| {
            self.other(format!(
                "{method} container `{container}`: {}",
                e.without_url()
            ))
        })
    }

    fn error_code(resp: &reqwest::Response) -> String {
        resp.headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// Turns an `object_store` error into a [`BlobError`], asking the service whether the
    /// container exists when the error is a 404 (a missing container and a missing blob are
    /// both `NotFound` there).
    async fn map_err(&self, container: &str, blob: &str, e: object_store::Error) -> BlobError {
        // object_store's messages quote the service's answer: keep them, minus credentials.
        let text = redact(&e.to_string());
        let not_found =
            matches!(e, object_store::Error::NotFound { .. }) || text.contains("ContainerNotFound");
        match e {
            _ if not_found => match self.container_exists(container).await {
                Ok(false) => BlobError::ContainerNotFound {
                    account: self.account.clone(),
                    container: container.into(),
                },
                Ok(true) => BlobError::BlobNotFound {
                    account: self.account.clone(),
                    container: container.into(),
                    blob: blob.into(),
                },
                Err(other) => other,
            },
            object_store::Error::Unauthenticated { .. }
            | object_store::Error::PermissionDenied { .. } => BlobError::AccessDenied {
                account: self.account.clone(),
                message: text,
            },
            _ => self.other(text),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for AzureBlobStore {
    fn account(&self) -> &str {
        &self.account
    }

    async fn container_exists(&self, container: &str) -> BlobResult<bool> {
        self.check_container(container)?;
        let resp = self
            .container_request(reqwest::Method::HEAD, container)
            .await?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            401 | 403 => Err(BlobError::AccessDenied {
                account: self.account.clone(),
                message: format!(
                    "HTTP {} {}",
                    resp.status().as_u16(),
                    Self::error_code(&resp)
                ),
            }),
            s => Err(self.other(format!(
                "container check of `{container}`: HTTP {s} {}",
                Self::error_code(&resp)
            ))),
        }
    }

    async fn create_container(&self, container: &str) -> BlobResult<()> {
        self.check_container(container)?;
        let resp = self
            .container_request(reqwest::Method::PUT, container)
            .await?;
        let code = Self::error_code(&resp);
        match resp.status().as_u16() {
            201 | 200 => Ok(()),
            409 if code == "ContainerAlreadyExists" || code.is_empty() => Ok(()),
            401 | 403 => Err(BlobError::AccessDenied {
                account: self.account.clone(),
                message: format!("HTTP {} {code}", resp.status().as_u16()),
            }),
            s => Err(self.other(format!("creating container `{container}`: HTTP {s} {code}"))),
        }
    }

    async fn list(&self, container: &str, prefix: &str) -> BlobResult<Vec<BlobMeta>> {
        let store = self.store(container)?;
        // object_store lists by path segment; list the enclosing "directory" and filter.
        let dir = prefix
            .rfind('/')
            .map(|i| &prefix[..i])
            .filter(|d| !d.is_empty());
        let dir = dir
            .map(ObjectPath::parse)
            .transpose()
            .map_err(|_| BlobError::InvalidName(prefix.into()))?;
        let listed: std::result::Result<Vec<_>, _> = store.list(dir.as_ref()).try_collect().await;
        let listed = match listed {
            Ok(l) => l,
            Err(e) => return Err(self.map_err(container, prefix, e).await),
        };
        let mut out: Vec<BlobMeta> = listed
            .into_iter()
            .map(|m| BlobMeta {
                name: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .filter(|m| m.name.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        // An empty listing of a missing container is an error, as in LocalDirStore.
        if out.is_empty() && !self.container_exists(container).await? {
            return Err(BlobError::ContainerNotFound {
                account: self.account.clone(),
                container: container.into(),
            });
        }
        Ok(out)
    }

    async fn head(&self, container: &str, blob: &str) -> BlobResult<Option<BlobMeta>> {
        let store = self.store(container)?;
        let path = Self::path(blob)?;
        match store.head(&path).await {
            Ok(m) => Ok(Some(BlobMeta {
                name: blob.into(),
                size: m.size,
                last_modified: m.last_modified,
            })),
            Err(e) => match self.map_err(container, blob, e).await {
                BlobError::BlobNotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn get(&self, container: &str, blob: &str) -> BlobResult<Bytes> {
        let store = self.store(container)?;
        let path = Self::path(blob)?;
        let result = match store.get(&path).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(b) => Ok(b),
            Err(e) => Err(self.map_err(container, blob, e).await),
        }
    }

    async fn put(&self, container: &str, blob: &str, data: Bytes) -> BlobResult<()> {
        let store = self.store(container)?;
        let path = Self::path(blob)?;
        match store.put(&path, PutPayload::from_bytes(data)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_err(container, blob, e).await),
        }
    }

    async fn delete(&self, container: &str, blob: &str) -> BlobResult<()> {
        let store = self.store(container)?;
        let path = Self::path(blob)?;
        match store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(container, blob, e).await {
                BlobError::BlobNotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_sign_follows_the_shared_key_layout() {
        let url = Url::parse("http://127.0.0.1:10000/devstoreaccount1/backups?restype=container")
            .unwrap();
        let sts = string_to_sign(
            "HEAD",
            &url,
            "devstoreaccount1",
            &[
                ("x-ms-version", "2021-08-06"),
                ("x-ms-date", "Fri, 27 Nov 2026 12:00:00 GMT"),
            ],
        );
        expect_test::expect![[r#"
            HEAD











            x-ms-date:Fri, 27 Nov 2026 12:00:00 GMT
            x-ms-version:2021-08-06
            /devstoreaccount1/devstoreaccount1/backups
            restype:container"#]]
        .assert_eq(&sts);
    }

    #[test]
    fn signature_is_hmac_sha256_base64() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = shared_key_signature(b"Jefe", "what do ya want for nothing?");
        let hex: String = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn keys_never_print_and_bad_endpoints_are_refused() {
        let key = Secret::new(base64::engine::general_purpose::STANDARD.encode(b"very-secret-key"));
        let store = AzureBlobStore::new(
            "devstoreaccount1",
            Url::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap(),
            BlobAuth::SharedKey(key.clone()),
        )
        .unwrap();
        let dbg = format!("{store:?}");
        assert!(!dbg.contains(key.expose()), "{dbg}");
        let err = AzureBlobStore::new(
            "acct",
            Url::parse("http://acct.blob.core.windows.net").unwrap(),
            BlobAuth::SharedKey(key.clone()),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InsecureUrl { .. }), "{err}");
        let err = AzureBlobStore::new(
            "acct",
            Url::parse("https://acct.blob.core.windows.net").unwrap(),
            BlobAuth::SharedKey(Secret::new("not base64 !!")),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("not base64 !!"), "{err}");
    }
}
