//! One module per subcommand, each with an `Args` struct and a `run` function, plus what they
//! share: loading the configuration file.

pub mod backup;
pub mod bench;
pub mod catalog;
pub mod clone;
pub mod drill;
pub mod drills;
pub mod failover;
pub mod plan;
pub mod restore;
pub mod runs;
pub mod status;
pub mod sync;
pub mod validate;

use std::path::Path;

use anyhow::Context as _;
use drsync_core::Config;

use crate::exit::{Coded, Exit};

/// Reads and checks a configuration file. A missing or unreadable file is a usage error
/// (exit 2), as is any problem in its content ([`drsync_core::ConfigErrors`]).
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file `{}`", path.display()))
        .map_err(|e| Coded::new(Exit::Usage, e))?;
    let config = Config::parse(&text, path)?;
    tracing::debug!(
        path = %path.display(),
        services = config.services.len(),
        replications = config.replications.len(),
        "configuration loaded"
    );
    Ok(config)
}
