//! `drsync validate --config FILE`: checks a configuration without contacting Azure and prints
//! its topology: services by role, storage, and every replication edge.
//!
//! On failure every problem is reported (not just the first), each with file, `line:column`,
//! field and hint, and the exit code is 2. Graph rules (cycles, one source per target, SKU
//! pairs) are the planner's and are not checked here.

use std::fmt::Write as _;
use std::path::PathBuf;

use drsync_core::StorageAccess;
use drsync_core::config::{
    ArmEndpoint, Config, CredentialConfig, Role, StorageEndpoint, format_duration,
};

use crate::exit::Exit;

/// Arguments of `drsync validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let config = super::load_config(&args.config)?;
    print!("{}", summary(&config));
    Ok(Exit::Success)
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
