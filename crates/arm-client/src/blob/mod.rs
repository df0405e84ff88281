//! Blob storage, behind one trait so drsync and the emulator see the same bytes.
//!
//! A [`BlobStore`] is one storage account. Implementations:
//! - [`LocalDirStore`]: a directory per account, containers as sub-directories (embedded mode).
//! - [`AzureBlobStore`]: Azure Storage and Azurite, with an account key or an Entra token.
//!
//! [`open`] picks one for a [`StorageTarget`]: `dir:PATH` endpoints are local directories,
//! `https://` URLs are Azure, `http://` is accepted only for loopback hosts (Azurite).
//!
//! The trait deliberately covers only what drsync needs: container checks, listing under a
//! prefix, head, small reads and writes (catalog sidecars, emulator backup envelopes), delete.

use std::fmt;

use bytes::Bytes;

use drsync_core::Timestamp;

mod azure;
mod local;

pub use azure::{AzureBlobStore, BlobAuth, STORAGE_VERSION, shared_key_signature, string_to_sign};
pub use local::LocalDirStore;

use std::sync::Arc;

use drsync_core::{Secret, StorageTarget};

use crate::credential::{TokenCache, TokenCredential};
use crate::error::{Error, Result};

/// What a blob operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The container does not exist (`ContainerNotFound`); distinct from a missing blob.
    #[error("container `{container}` does not exist in storage account `{account}`")]
    ContainerNotFound {
        /// The account.
        account: String,
        /// The container.
        container: String,
    },
    /// The blob does not exist.
    #[error("blob `{container}/{blob}` does not exist in storage account `{account}`")]
    BlobNotFound {
        /// The account.
        account: String,
        /// The container.
        container: String,
        /// The blob.
        blob: String,
    },
    /// The storage service refused the credentials.
    #[error("storage account `{account}` refused access: {message}")]
    AccessDenied {
        /// The account.
        account: String,
        /// What the service said.
        message: String,
    },
    /// A name is not valid for the storage service.
    #[error("invalid name `{0}`")]
    InvalidName(String),
    /// Anything else: I/O, transport, unexpected responses.
    #[error("storage account `{account}`: {message}")]
    Other {
        /// The account.
        account: String,
        /// What went wrong.
        message: String,
    },
}

/// The result type of blob operations.
pub type BlobResult<T> = std::result::Result<T, BlobError>;

/// A blob's name and properties, as a listing or a head returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    /// The full blob name within its container.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When the blob was last written.
    pub last_modified: Timestamp,
}

/// One storage account's blob service.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug {
    /// The storage account's name.
    fn account(&self) -> &str;
    /// Whether the container exists.
    async fn container_exists(&self, container: &str) -> BlobResult<bool>;
    /// Creates the container; succeeds if it already exists.
    async fn create_container(&self, container: &str) -> BlobResult<()>;
    /// Lists the blobs whose names start with `prefix`, sorted by name.
    async fn list(&self, container: &str, prefix: &str) -> BlobResult<Vec<BlobMeta>>;
    /// A blob's properties, or `None` if the blob does not exist.
    async fn head(&self, container: &str, blob: &str) -> BlobResult<Option<BlobMeta>>;
    /// Reads a whole blob.
    async fn get(&self, container: &str, blob: &str) -> BlobResult<Bytes>;
    /// Writes a whole blob, replacing any previous content.
    async fn put(&self, container: &str, blob: &str, data: Bytes) -> BlobResult<()>;
    /// Deletes a blob; succeeds if it was already gone.
    async fn delete(&self, container: &str, blob: &str) -> BlobResult<()>;
}

/// Opens the blob store of a storage target.
///
/// - `dir:PATH`: a [`LocalDirStore`] rooted at `PATH` (the account's containers are its
///   sub-directories); no credentials needed.
/// - `https://...` or `http://<loopback>...`: an [`AzureBlobStore`] authenticated with `key`
///   (Shared Key) when given, else with tokens from `credential`.
///
/// Plain HTTP to any host other than loopback is refused, as is an Azure endpoint with neither
/// a key nor a credential.
pub fn open(
    target: &StorageTarget,
    key: Option<Secret>,
    credential: Option<Arc<dyn TokenCredential>>,
) -> Result<Arc<dyn BlobStore>> {
    let endpoint = target.endpoint.trim();
    if let Some(path) = endpoint.strip_prefix("dir:") {
        if path.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "storage account `{}`: endpoint `dir:` names no directory",
                target.account
            )));
        }
        return Ok(Arc::new(LocalDirStore::new(target.account.clone(), path)));
    }
    let url = url::Url::parse(endpoint).map_err(|e| {
        Error::InvalidConfig(format!(
            "storage account `{}`: endpoint `{}` is not a URL or `dir:PATH`: {e}",
            target.account,
            crate::error::redact(endpoint)
        ))
    })?;
    let auth = match (key, credential) {
        (Some(key), _) => BlobAuth::SharedKey(key),
        (None, Some(credential)) => BlobAuth::Token(Arc::new(TokenCache::new(
            credential,
            Arc::new(drsync_core::SystemClock),
        ))),
        (None, None) => {
            return Err(Error::InvalidConfig(format!(
                "storage account `{}` needs an account key or an Entra ID credential",
                target.account
            )));
        }
    };
    Ok(Arc::new(AzureBlobStore::new(
        target.account.clone(),
        url,
        auth,
    )?))
}

#[cfg(test)]
mod open_tests {
    use super::*;
    use drsync_core::StorageAccess;

    fn target(endpoint: &str) -> StorageTarget {
        StorageTarget {
            account: "drsyncneu".into(),
            container: "apim-backups".into(),
            endpoint: endpoint.into(),
            access: StorageAccess::SystemAssignedIdentity,
        }
    }

    fn key() -> Option<Secret> {
        Some(Secret::new("a2V5"))
    }

    #[tokio::test]
    async fn dir_endpoints_open_a_local_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = open(
            &target(&format!("dir:{}", tmp.path().display())),
            None,
            None,
        )
        .unwrap();
        store.create_container("apim-backups").await.unwrap();
        assert!(tmp.path().join("apim-backups").is_dir());
        assert!(open(&target("dir:"), None, None).is_err());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(
            open(
                &target("http://127.0.0.1:10000/devstoreaccount1"),
                key(),
                None
            )
            .is_ok()
        );
        assert!(
            open(
                &target("https://drsyncneu.blob.core.windows.net"),
                key(),
                None
            )
            .is_ok()
        );
        let err = open(
            &target("http://drsyncneu.blob.core.windows.net"),
            key(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InsecureUrl { .. }), "{err}");
        let err = open(
            &target("https://drsyncneu.blob.core.windows.net"),
            None,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("needs an account key"), "{err}");
        assert!(open(&target("not a url"), key(), None).is_err());
    }

    // See: #4. An endpoint carrying a SAS token is refused without printing its signature.
    #[test]
    fn endpoints_with_a_sas_are_refused_without_echoing_it() {
        for endpoint in [
            "https://drsyncneu.blob.core.windows.net/?sv=2022-11-02&sig=S1GNATURE%3D",
            "https://user:PASSW0RD@drsyncneu.blob.core.windows.net/?sig=S1GNATURE",
            "drsyncneu.blob.core.windows.net?sig=S1GNATURE",
        ] {
            let err = open(&target(endpoint), key(), None)
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("S1GNATURE") && !err.contains("PASSW0RD"),
                "{err}"
            );
        }
    }
}
