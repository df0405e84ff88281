//! Blob storage, behind one trait so drsync and the emulator see the same bytes.
//!
//! A [`BlobStore`] is one storage account. Implementations:
//! - [`LocalDirStore`]: a directory per account, containers as sub-directories (embedded mode).
//! - the Azure implementation (Azure Storage and Azurite), added by the arm-client work.
//!
//! The trait deliberately covers only what drsync needs: container checks, listing under a
//! prefix, head, small reads and writes (catalog sidecars, emulator backup envelopes), delete.

use std::fmt;

use bytes::Bytes;

use drsync_core::Timestamp;

mod local;

pub use local::LocalDirStore;

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
