//! The TOML configuration. Filled in by the foundation issue's configuration work.
