//! `drsync validate --config FILE`: checks a configuration without contacting Azure and prints
//! its topology: services by role, storage, and every replication edge.
//!
//! Two layers of checks run, both offline: the configuration rules of `drsync_core::config`
//! (syntax, names, references, SKUs, durations, secret references) and then the planner's
//! topology rules (`drsync_planner::Topology`: cycles, one source per target, SKU tiers on each
//! edge, a DR standby outside its primary's region, roles that fit the edges). On failure every
//! problem is reported (not just the first), each with file, `line:column`, field and hint, and
//! the exit code is 2. Topology warnings (backups kept in the primary's region) are printed to
//! stderr in the same form and do not fail the command.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::PathBuf;

use anyhow::Context as _;
use drsync_core::StorageAccess;
use drsync_core::config::{
    ArmEndpoint, Config, ConfigError, ConfigErrors, CredentialConfig, Role, StorageEndpoint,
    format_duration,
};
use drsync_planner::{Topology, TopologyError, TopologyErrors, TopologyWarning};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::exit::{Coded, Exit};

/// Arguments of `drsync validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let path = &args.config;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read configuration file `{}`", path.display()))
        .map_err(|e| Coded::new(Exit::Usage, e))?;
    let config = Config::parse(&text, path)?;
    let topology = Topology::from_config(&config)
        .map_err(|errors| topology_errors(&config, &text, &errors))?;
    for w in topology.warnings() {
        eprintln!("{}", topology_warning(&config, &text, w));
    }
    print!("{}", summary(&config));
    Ok(Exit::Success)
}

/// The planner's topology errors as configuration errors: each points at the replication
/// entry (its `from`, `to` element or `storage`) that creates the problem, with a hint.
pub fn topology_errors(config: &Config, text: &str, errors: &TopologyErrors) -> ConfigErrors {
    let doc = Doc::new(config, text);
    let mut out: Vec<ConfigError> = errors.0.iter().map(|e| doc.error(e)).collect();
    out.sort_by_key(|e| (e.line, e.column));
    ConfigErrors { errors: out }
}

/// A topology warning, rendered like a configuration error but prefixed `warning:`.
pub fn topology_warning(config: &Config, text: &str, warning: &TopologyWarning) -> String {
    let doc = Doc::new(config, text);
    let rendered = doc.warning(warning).to_string();
    let rendered = rendered.trim_end();
    match rendered.strip_prefix("error: ") {
        Some(rest) => format!("warning: {rest}"),
        None => rendered.to_owned(),
    }
}

/// Where things are in the configuration file: the spanned TOML document beside the checked
/// model (which keeps no positions).
struct Doc<'a> {
    config: &'a Config,
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

/// A field of the file and the bytes it spans.
struct Locus {
    field: String,
    span: Range<usize>,
}

impl<'a> Doc<'a> {
    fn new(config: &'a Config, text: &'a str) -> Self {
        // Positions count from after a byte order mark, as `Config::parse` counts them.
        let text = drsync_core::config::strip_bom(text);
        // The text parsed before (Config::parse succeeded), so this cannot fail; if it did, the
        // errors would still be reported, at the top of the file.
        let root = DeTable::parse(text).ok();
        Self { config, text, root }
    }

    /// The `i`th table of the array of tables `[[section]]`.
    fn entry(&self, section: &str, i: usize) -> Option<&Spanned<DeValue<'a>>> {
        self.root
            .as_ref()?
            .get_ref()
            .get(section)?
            .get_ref()
            .as_array()?
            .get(i)
    }

    fn entry_key(&self, section: &str, i: usize, key: &str) -> Locus {
        let entry = self.entry(section, i);
        let span = entry
            .and_then(|e| e.get_ref().as_table())
            .and_then(|t| t.get(key))
            .map(Spanned::span)
            .or_else(|| entry.map(Spanned::span))
            .unwrap_or(0..0);
        Locus {
            field: format!("{section}[{i}].{key}"),
            span,
        }
    }

    fn replication_index(&self, name: &str) -> Option<usize> {
        self.config.replications.iter().position(|r| r.name == name)
    }

    fn service_index(&self, name: &str) -> Option<usize> {
        self.config
            .services
            .iter()
            .position(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// `replication[i].key` of the replication called `name`.
    fn replication_key(&self, name: &str, key: &str) -> Locus {
        match self.replication_index(name) {
            Some(i) => self.entry_key("replication", i, key),
            None => Locus {
                field: "replication".into(),
                span: 0..0,
            },
        }
    }

    /// The element of `replication[i].to` that names `target`.
    fn target(&self, replication: &str, target: &str) -> Locus {
        let Some(i) = self.replication_index(replication) else {
            return self.replication_key(replication, "to");
        };
        let Some(j) = self.config.replications[i]
            .to
            .iter()
            .position(|t| t.eq_ignore_ascii_case(target))
        else {
            return self.entry_key("replication", i, "to");
        };
        let element = self
            .entry("replication", i)
            .and_then(|e| e.get_ref().as_table())
            .and_then(|t| t.get("to"))
            .and_then(|to| to.get_ref().as_array())
            .and_then(|a| a.get(j))
            .map(Spanned::span);
        match element {
            Some(span) => Locus {
                field: format!("replication[{i}].to[{j}]"),
                span,
            },
            None => self.entry_key("replication", i, "to"),
        }
    }

    /// `service[k].key` of the service called `name`, as `service[k].key at line N`.
    fn service_field(&self, name: &str, key: &str) -> String {
        match self.service_index(name) {
            Some(k) => {
                let at = self.entry_key("service", k, key);
                format!("{} at line {}", at.field, self.line_of(at.span.start))
            }
            None => format!("service `{name}`"),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        position(self.text, offset).0
    }

    /// Replications with an edge `from -> to`, in file order.
    fn edges(&self, from: &str, to: &str) -> Vec<usize> {
        self.config
            .replications
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.from.eq_ignore_ascii_case(from) && r.to.iter().any(|t| t.eq_ignore_ascii_case(to))
            })
            .map(|(i, _)| i)
            .collect()
    }

    fn error(&self, e: &TopologyError) -> ConfigError {
        let (locus, hint) = match e {
            TopologyError::UnknownService {
                replication,
                service,
            } => {
                let is_from = self
                    .config
                    .replication(replication)
                    .is_some_and(|r| r.from.eq_ignore_ascii_case(service));
                let locus = if is_from {
                    self.replication_key(replication, "from")
                } else {
                    self.target(replication, service)
                };
                (
                    locus,
                    "add a [[service]] entry with this name, or fix the name".into(),
                )
            }
            TopologyError::UnknownStorage { replication, .. } => (
                self.replication_key(replication, "storage"),
                "add a [[storage]] entry with this name, or fix the name".into(),
            ),
            TopologyError::Cycle { path } => self.cycle(path),
            TopologyError::TwoSources { target, .. } => self.two_sources(target),
            TopologyError::SkuMismatch {
                replication,
                from,
                from_sku,
                to,
                ..
            } => (
                self.target(replication, to),
                format!(
                    "give `{to}` the {} tier ({}), or restore `{from}` into a {} service: a restore cannot change the tier",
                    from_sku.tier,
                    self.service_field(to, "sku"),
                    from_sku.tier
                ),
            ),
            TopologyError::UnsupportedTier {
                replication,
                service,
                ..
            } => {
                let is_from = self
                    .config
                    .replication(replication)
                    .is_some_and(|r| r.from.eq_ignore_ascii_case(service));
                let locus = if is_from {
                    self.replication_key(replication, "from")
                } else {
                    self.target(replication, service)
                };
                (
                    locus,
                    format!(
                        "change {} to Developer, Basic, Standard or Premium",
                        self.service_field(service, "sku")
                    ),
                )
            }
            TopologyError::StandbyInPrimaryRegion {
                replication,
                standby,
                region,
                ..
            } => {
                let pair = region
                    .pair()
                    .map(|p| format!(" (the paired region of {region} is {p})"))
                    .unwrap_or_default();
                (
                    self.target(replication, standby),
                    format!(
                        "put the standby in another region{pair}, or set role = \"staging\" in {} if it is a same-region copy",
                        self.service_field(standby, "role")
                    ),
                )
            }
            TopologyError::ConflictingRole {
                replication,
                service,
                used_as,
                ..
            } => {
                let locus = if *used_as == "source" {
                    self.replication_key(replication, "from")
                } else {
                    self.target(replication, service)
                };
                (
                    locus,
                    format!("the role is set in {}", self.service_field(service, "role")),
                )
            }
            // A rule added to the planner later: still reported, at the first replication.
            _ => (
                self.entry_key("replication", 0, "from"),
                "see docs/configuration.md, \"Topology rules\"".into(),
            ),
        };
        self.config_error(locus, e.to_string(), Some(hint))
    }

    /// A cycle is reported at the edge written last in the file: usually the one just added.
    fn cycle(&self, path: &str) -> (Locus, String) {
        let names: Vec<&str> = path.split(" -> ").collect();
        let mut on_cycle: Vec<(usize, &str)> = names
            .windows(2)
            .filter_map(|w| self.edges(w[0], w[1]).last().map(|&i| (i, w[1])))
            .collect();
        on_cycle.sort_by_key(|(i, _)| *i);
        on_cycle.dedup_by_key(|(i, _)| *i);
        let Some(&(last, to)) = on_cycle.last() else {
            return (
                self.entry_key("replication", 0, "to"),
                "remove one replication edge of the cycle".into(),
            );
        };
        let list: Vec<String> = on_cycle
            .iter()
            .map(|(i, _)| {
                let at = self.entry_key("replication", *i, "from");
                format!(
                    "`{}` at line {}",
                    self.config.replications[*i].name,
                    self.line_of(at.span.start)
                )
            })
            .collect();
        (
            self.target(&self.config.replications[last].name, to),
            format!(
                "remove one edge of the cycle from these replications: {}; drsync copies a primary to its standbys and staging clones, never back",
                list.join(", ")
            ),
        )
    }

    /// A target with two sources is reported at the last replication that names it.
    fn two_sources(&self, target: &str) -> (Locus, String) {
        let naming: Vec<usize> = self
            .config
            .replications
            .iter()
            .enumerate()
            .filter(|(_, r)| r.to.iter().any(|t| t.eq_ignore_ascii_case(target)))
            .map(|(i, _)| i)
            .collect();
        let list: Vec<String> = naming
            .iter()
            .map(|&i| {
                let at = self.target(&self.config.replications[i].name, target);
                format!("{} at line {}", at.field, self.line_of(at.span.start))
            })
            .collect();
        let locus = match naming.last() {
            Some(&i) => self.target(&self.config.replications[i].name, target),
            None => self.entry_key("replication", 0, "to"),
        };
        (
            locus,
            format!(
                "keep `{target}` in the `to` list of one replication only; it is named in {}",
                list.join(", ")
            ),
        )
    }

    fn warning(&self, w: &TopologyWarning) -> ConfigError {
        match w {
            TopologyWarning::StorageInPrimaryRegion { replication, .. } => self.config_error(
                self.replication_key(replication, "storage"),
                w.to_string(),
                Some(
                    "point `storage` at a [[storage]] entry whose region is not the primary's"
                        .into(),
                ),
            ),
            // A warning added to the planner later: still shown, at the top of the file.
            _ => self.config_error(
                Locus {
                    field: "replication".into(),
                    span: 0..0,
                },
                w.to_string(),
                None,
            ),
        }
    }

    fn config_error(&self, locus: Locus, message: String, hint: Option<String>) -> ConfigError {
        let (line, column) = position(self.text, locus.span.start);
        ConfigError {
            file: self.config.source_path.clone(),
            line,
            column,
            field: locus.field,
            message,
            hint,
            snippet: snippet(self.text, locus.span),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[start..offset].chars().count() + 1)
}

/// The source line holding `span.start` and the highlighted character range within it, unless
/// the line may hold a secret (the configuration checks' rule: such lines are never echoed).
fn snippet(text: &str, span: Range<usize>) -> Option<(String, Range<usize>)> {
    const SECRET_WORDS: [&str; 5] = ["secret", "key", "token", "password", "sas"];
    let at = floor_char(text, span.start);
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let source = text[start..end].trim_end_matches('\r');
    let lower = source.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return None;
    }
    let upto = floor_char(text, span.end.clamp(at, start + source.len()));
    let from = text[start..at].chars().count();
    let to = text[start..upto].chars().count().max(from + 1);
    Some((source.replace('\t', " "), from..to))
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The topology of a checked configuration, as printed on success.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    write_summary(&mut out, config).expect("writing to a String cannot fail");
    out
}

fn write_summary(w: &mut String, config: &Config) -> std::fmt::Result {
    writeln!(
        w,
        "{}: configuration is valid",
        config.source_path.display()
    )?;
    writeln!(w)?;

    let azure = &config.azure;
    match &azure.endpoint {
        ArmEndpoint::Embedded => {
            let scale = config.embedded.map_or(1.0, |e| e.time_scale);
            writeln!(
                w,
                "Azure:    built-in emulator (embedded), time scale {scale}"
            )?;
        }
        ArmEndpoint::Url(url) => {
            let tenant = azure.tenant.as_deref().unwrap_or("-");
            writeln!(
                w,
                "Azure:    {url}, tenant {tenant}, authority {}",
                azure.authority_host
            )?;
        }
    }
    if let Some(credential) = &azure.credential {
        let detail = match credential {
            CredentialConfig::ClientSecret {
                client_id,
                client_secret,
            } => {
                format!("client secret for app {client_id} from {client_secret}")
            }
            CredentialConfig::ManagedIdentity {
                client_id: Some(id),
            } => {
                format!("user-assigned managed identity {id}")
            }
            CredentialConfig::ManagedIdentity { client_id: None } => {
                "system-assigned managed identity".to_owned()
            }
            CredentialConfig::AzureCli => "Azure CLI sign-in".to_owned(),
            CredentialConfig::StaticToken { token } => format!("static token from {token}"),
        };
        writeln!(w, "Login:    {detail}")?;
    }
    writeln!(w, "API:      api-version {}", azure.api_version)?;
    writeln!(w, "State:    {}", config.state.dir.display())?;
    let l = &config.limits;
    writeln!(
        w,
        "Limits:   {} concurrent steps; ARM reads {}/s (burst {}), writes {}/s (burst {})",
        l.concurrency,
        l.arm_reads_per_second,
        l.arm_read_burst,
        l.arm_writes_per_second,
        l.arm_write_burst
    )?;

    writeln!(w)?;
    writeln!(w, "Services ({}):", config.services.len())?;
    let name_width = config
        .services
        .iter()
        .map(|s| s.name().len())
        .max()
        .unwrap_or(0);
    for role in Role::ALL {
        let services: Vec<_> = config.services_with_role(role).collect();
        if services.is_empty() {
            continue;
        }
        writeln!(w, "  {role}")?;
        for s in services {
            writeln!(
                w,
                "    {:name_width$}  {:14} {:20} {}/{}",
                s.name(),
                s.region.name(),
                s.sku.to_string(),
                s.service.subscription,
                s.service.resource_group,
            )?;
        }
    }

    writeln!(w)?;
    writeln!(w, "Storage ({}):", config.storage.len())?;
    for s in &config.storage {
        let t = &s.target;
        let access = match &t.access {
            StorageAccess::AccountKey(key) => format!("account key from {key}"),
            StorageAccess::SystemAssignedIdentity => "system-assigned identity".to_owned(),
            StorageAccess::UserAssignedIdentity { client_id } => {
                format!("user-assigned identity {client_id}")
            }
        };
        let endpoint = match s.endpoint() {
            StorageEndpoint::Dir(path) => format!("local directory {}", path.display()),
            StorageEndpoint::Https(url) | StorageEndpoint::LoopbackHttp(url) => url,
        };
        writeln!(
            w,
            "  {}: {}/{} in {}, {access}, {endpoint}",
            s.name,
            t.account,
            t.container,
            s.region.name()
        )?;
    }

    writeln!(w)?;
    let edges = config.replication_targets();
    writeln!(
        w,
        "Replications ({} replication{}, {} edge{}):",
        config.replications.len(),
        if config.replications.len() == 1 {
            ""
        } else {
            "s"
        },
        edges.len(),
        if edges.len() == 1 { "" } else { "s" }
    )?;
    if config.replications.is_empty() {
        writeln!(w, "  none: nothing will be backed up or restored")?;
    }
    for r in &config.replications {
        let mut line = format!(
            "  {}: RPO {}, retention {}",
            r.name,
            format_duration(r.rpo),
            format_duration(r.retention)
        );
        if let Some(rto) = r.rto {
            write!(line, ", RTO {}", format_duration(rto))?;
        }
        write!(line, ", via storage {}", r.storage)?;
        let checks: Vec<&str> = [
            (r.verify.apis, "apis"),
            (r.verify.products, "products"),
            (r.verify.named_values, "named values"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if checks.is_empty() {
            line.push_str(", no verification");
        } else {
            write!(line, ", verify {}", checks.join(", "))?;
        }
        writeln!(w, "{line}")?;
        for e in config.edges_of(r) {
            writeln!(
                w,
                "    {} ({}, {}) -> {} ({}, {}, {})",
                e.from.name(),
                e.from.region.name(),
                e.from.sku.tier,
                e.to.name(),
                e.to.region.name(),
                e.to.sku.tier,
                e.to.role
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CYCLE: &str = r#"
[azure]
endpoint = "embedded"

[[storage]]
name = "neu"
account = "drsyncneu"
region = "northeurope"
container = "apim-backups"
endpoint = "dir:storage"
access = "system_identity"

[[service]]
name = "apim-a"
subscription = "6f1d3c2a-5b4e-4f8a-9c7d-2e1f0a9b8c7d"
resource_group = "rg"
region = "westeurope"
sku = "Premium"
role = "primary"

[[service]]
name = "apim-b"
subscription = "6f1d3c2a-5b4e-4f8a-9c7d-2e1f0a9b8c7d"
resource_group = "rg"
region = "northeurope"
sku = "Premium"
role = "primary"

[[replication]]
from = "apim-a"
to = ["apim-b"]
storage = "neu"
rpo = "1h"
retention = "7d"

[[replication]]
from = "apim-b"
to = ["apim-a"]
storage = "neu"
rpo = "1h"
retention = "7d"
"#;

    #[test]
    fn positions_count_characters_from_one() {
        let text = "a = 1\nnäme = \"x\"\n";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 6), (2, 1));
        // `=` after a two-byte character is the 6th character of line 2.
        assert_eq!(position(text, 12), (2, 6));
        assert_eq!(position(text, text.len()), (3, 1));
    }

    #[test]
    fn snippets_mark_the_span_and_never_echo_secret_lines() {
        let text = "to = [\"apim-b\"]\nkey = \"env:K\"\n";
        let (line, range) = snippet(text, 6..14).unwrap();
        assert_eq!(line, "to = [\"apim-b\"]");
        assert_eq!(range, 6..14);
        assert_eq!(snippet(text, 17..20), None);
    }

    #[test]
    fn topology_errors_point_at_the_replication_entries() {
        let config = Config::parse(CYCLE, Path::new("drsync.toml")).unwrap();
        let errors = Topology::from_config(&config).unwrap_err();
        let errors = topology_errors(&config, CYCLE, &errors);
        let got: Vec<(usize, usize, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column, e.field.as_str()))
            .collect();
        // The cycle at the edge written last; each primary is also used as a target.
        assert_eq!(
            got,
            vec![
                (31, 7, "replication[0].to[0]"),
                (38, 7, "replication[1].to[0]"),
                (38, 7, "replication[1].to[0]"),
            ],
            "{errors}"
        );
        let cycle = errors.iter().find(|e| e.message.contains("cycle")).unwrap();
        assert_eq!(cycle.line, 38);
        assert_eq!(
            cycle
                .hint
                .as_deref()
                .unwrap_or_default()
                .matches(" at line ")
                .count(),
            2,
            "{cycle}"
        );
        assert!(errors.iter().all(|e| e.file == Path::new("drsync.toml")));
    }
}
