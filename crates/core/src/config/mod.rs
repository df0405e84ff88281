//! The TOML configuration: parsed and checked without touching Azure, the network or the disk.
//!
//! [`Config::parse`] takes the file's text and its path (for messages and for resolving relative
//! paths) and returns either a checked [`Config`] or [`ConfigErrors`]: every mistake in the file,
//! each naming the file, `line:column`, the field (`service[1].sku`) and a hint. Reading the file
//! is the caller's job (the CLI), as is resolving secret references.
//!
//! What is checked here: TOML syntax, unknown keys (typos), types, required fields, names
//! (services, storage accounts, containers), GUIDs, regions, SKUs that cannot back up or restore,
//! duplicate names, references from replications to services and storage, durations (RPO,
//! retention at most 30 days and at least the RPO), hooks (`[[replication.hooks]]`: phase, side,
//! command, timeout, environment, kinds), and that secrets are references (`env:NAME`,
//! `file:PATH`), never literals.
//!
//! What is not: anything that needs the replication graph (cycles, one source per target, SKU
//! pairs, standby regions). That belongs to the planner (`drsync_planner::Topology`);
//! `drsync validate` runs both.
//!
//! # Layout
//! - `model`: the checked types ([`Config`] and its parts) and lookups.
//! - `error`: [`ConfigError`], [`ConfigErrors`] and the position bookkeeping.
//! - `read`: a typed reader over toml's spanned document that records errors and carries on.
//! - `check`: the rules, section by section.

mod check;
mod error;
mod model;
mod read;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use check::{
    DEFAULT_API_VERSION, DEFAULT_AUTHORITY_HOST, DEFAULT_HOOK_TIMEOUT, DEFAULT_STATE_DIR,
    MAX_RETENTION, STABLE_API_VERSIONS,
};
pub use error::{ConfigError, ConfigErrors};
pub use model::{
    ArmEndpoint, AzureConfig, Config, CredentialConfig, EmbeddedConfig, HookCommandConfig,
    HookConfig, HookKind, HookPhase, HookWhen, Limits, ReplicationConfig, ReplicationEdge, Role,
    ServiceConfig, StateConfig, StorageConfig, StorageEndpoint, VerifyConfig,
};

impl Config {
    /// Parses and checks a configuration. `path` is where `text` was read from: it appears in
    /// every error, and relative paths in the file (`state.dir`, `dir:` storage endpoints,
    /// `file:` secret references) are resolved against its directory.
    ///
    /// A UTF-8 byte order mark (which some Windows editors write) is ignored, so columns on the
    /// first line count the characters the user sees; Windows line endings and tabs need nothing
    /// special (a tab counts as one column).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let text = strip_bom(text);
        let mut c = error::Collector::new(path.to_path_buf(), text);
        let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
        // Only the first syntax error is reported: the parser's recovery after it produces
        // follow-on errors that are noise, and checking a document the parser had to guess at
        // would add more.
        if let Some(e) = syntax.first() {
            let span = e.span().unwrap_or(0..0);
            c.error(
                span,
                "<toml>",
                format!("TOML syntax error: {}", e.message().trim()),
                Some(syntax_hint(e.message())),
            );
            return Err(c.finish().expect_err("a syntax error was recorded"));
        }
        let config = check::config(&read::Table::root(&doc), path, &mut c);
        c.finish()?;
        Ok(config.expect("no errors were recorded, so every part was read"))
    }
}

/// `text` without a leading UTF-8 byte order mark. Positions in [`ConfigError`]s refer to the
/// text after it; a caller that maps its own spans (as `drsync validate` does for topology
/// errors) must strip it the same way.
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Formats a duration the way the configuration writes it: `14d`, `1h`, `1h 30m`, `45s`.
pub fn format_duration(d: std::time::Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (size, unit) in UNITS {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if parts.is_empty() {
        parts.push(format!("{}ms", d.as_millis()));
    }
    parts.join(" ")
}

fn syntax_hint(message: &str) -> String {
    if message.contains("duplicate") || message.contains("redefin") {
        "each key and each [table] may appear once; use [[name]] for a repeated entry".into()
    } else {
        "check quotes, commas, `=` between key and value and closing brackets; an unclosed `[` or `\"` \
         is reported where the parser noticed it, which can be a later line"
            .into()
    }
}
