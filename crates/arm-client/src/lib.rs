//! Entra ID, Azure Resource Manager and Blob storage client for drsync.
//!
//! # Layout
//! - [`blob`]: the `BlobStore` trait (one storage account) and its implementations.

pub mod blob;
