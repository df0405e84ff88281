//! End-to-end: azurite_blob.
