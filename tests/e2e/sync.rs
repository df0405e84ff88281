//! End-to-end: sync.
