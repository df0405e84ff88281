//! End-to-end: config_errors.
