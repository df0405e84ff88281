//! `drsync drills list|show`: the reports of past drills, clones, failovers and failbacks, kept
//! in the state directory (`{state}/drills/{id}/report.json`, `report.md`, `junit.xml`).
//! `drsync drills cleanup`: deletes a dedicated drill service, never a configured one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use drsync_core::ServiceRef;
use drsync_core::config::Config;
use drsync_planner::drill::ReportStore;
use drsync_planner::drill::report::{DrillKind, DrillReport, ObjectiveStatus, junit_xml};

use super::drill::{Session, confirm, is_resource_id};
use crate::exit::{Coded, Exit};

/// Arguments of `drsync drills`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The configuration file (TOML); its state directory holds the reports.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Sub,
}

/// `drills` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// List every report, oldest first.
    List {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = ListFormat::Text)]
        output: ListFormat,
    },
    /// Delete a dedicated drill service: one that is not in the configuration and that a
    /// drill restored into (`drsync drill --target RESOURCE_ID`). Configured services are
    /// never deleted.
    Cleanup {
        /// The drill service: its name or ARM resource id.
        #[arg(long, value_name = "SERVICE")]
        target: String,
        /// Do not ask for confirmation (required when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Print one report.
    Show {
        /// The report id, or a unique prefix of it.
        id: String,
        /// Which rendering.
        #[arg(long, short = 'f', value_enum, default_value_t = ShowFormat::Markdown)]
        format: ShowFormat,
    },
}

/// How `drills list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A table.
    Text,
    /// A JSON array of report summaries.
    Json,
}

/// How `drills show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    /// For people.
    Markdown,
    /// The versioned JSON report (docs/report-schema.json).
    Json,
    /// JUnit XML, for CI.
    Junit,
}

/// Runs the command.
pub fn run(args: &Args) -> anyhow::Result<Exit> {
    let Some(config_path) = &args.config else {
        return Err(Coded::new(Exit::Usage, anyhow::anyhow!("--config FILE is required")).into());
    };
    if let Sub::Cleanup { target, yes } = &args.command {
        return super::sync::runtime()?.block_on(cleanup(config_path, target, *yes));
    }
    let config = super::load_config(config_path)?;
    let store = ReportStore::new(&config.state.dir);
    match &args.command {
        Sub::List { output } => {
            let reports = store.list()?;
            match output {
                ListFormat::Text => print!("{}", table(&reports)),
                ListFormat::Json => {
                    let rows: Vec<serde_json::Value> = reports.iter().map(summary).collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                }
            }
        }
        Sub::Cleanup { .. } => unreachable!("handled above"),
        Sub::Show { id, format } => {
            let report = store.load(id).map_err(|e| Coded::new(Exit::Usage, e))?;
            match format {
                ShowFormat::Markdown => print!("{}", report.to_markdown()),
                ShowFormat::Json => println!("{}", report.to_json()),
                ShowFormat::Junit => print!("{}", junit_xml(&[&report])),
            }
        }
    }
    Ok(Exit::Success)
}

/// `drills cleanup`: deletes a dedicated drill service after the checks of [`cleanup_target`]
/// and a confirmation.
async fn cleanup(config_path: &Path, target: &str, yes: bool) -> anyhow::Result<Exit> {
    let session = Session::open(config_path).await?;
    let reports = ReportStore::new(&session.state_dir).list()?;
    let service = cleanup_target(&session.config, &reports, target)
        .map_err(|e| Coded::new(Exit::Usage, anyhow::anyhow!(e)))?;
    let arm = session.arm()?;
    let id = service.resource_id();
    if let Err(e) = confirm(
        yes,
        &format!(
            "Delete the drill service `{}` ({id})? It and its configuration are gone for good.",
            service.name
        ),
        &service.name,
    ) {
        session.close().await?;
        return Err(e);
    }
    eprintln!("deleting `{}` ...", service.name);
    let result = arm.delete_service(&service).await;
    session.close().await?;
    result.map_err(|e| {
        Coded::new(
            Exit::Failed,
            anyhow::anyhow!("cannot delete `{}`: {e}", service.name),
        )
    })?;
    println!("deleted drill service `{}` ({id})", service.name);
    Ok(Exit::Success)
}

/// Which service `drills cleanup --target TARGET` may delete: never one in the configuration
/// (any role, also after a failover), and only one a drill restored into, as its reports
/// record it (the newest such report gives the resource id). `target` is a name or a resource
/// id. The error says why not.
pub fn cleanup_target(
    config: &Config,
    reports: &[DrillReport],
    target: &str,
) -> Result<ServiceRef, String> {
    let by_id = is_resource_id(target);
    let wanted = if by_id {
        Some(
            ServiceRef::parse_resource_id(target)
                .map_err(|e| format!("`{target}` is not a service resource id: {e}"))?,
        )
    } else {
        None
    };
    let name = wanted.as_ref().map_or(target, |w| w.name.as_str());
    if let Some(s) = config
        .services
        .iter()
        .find(|s| s.service.name.eq_ignore_ascii_case(name))
    {
        return Err(format!(
            "refusing to delete `{}`: it is a configured {} ({}); `drills cleanup` deletes only dedicated drill services that are not in the configuration",
            s.service.name,
            s.role,
            s.service.resource_id()
        ));
    }
    let drilled = reports
        .iter()
        .filter(|r| r.kind == DrillKind::Drill)
        .filter(|r| match &wanted {
            Some(w) => r.target.resource_id.eq_ignore_ascii_case(&w.resource_id()),
            None => r.target.name.eq_ignore_ascii_case(name),
        })
        .max_by_key(|r| r.started_at);
    let Some(report) = drilled else {
        return Err(format!(
            "refusing to delete `{target}`: no drill report has it as its target; `drills cleanup` deletes only services that `drsync drill --target` restored into"
        ));
    };
    ServiceRef::parse_resource_id(&report.target.resource_id).map_err(|e| {
        format!(
            "report `{}` records target `{}` with a resource id that does not parse: {e}",
            report.id, report.target.name
        )
    })
}

fn summary(r: &DrillReport) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "kind": r.kind,
        "edge": r.edge,
        "source": r.source.name,
        "target": r.target.name,
        "started_at": r.started_at,
        "outcome": r.outcome,
        "recovery_time_seconds": r.objectives.recovery_time.actual_seconds,
        "recovery_point_seconds": r.objectives.recovery_point.actual_seconds,
        "failures": r.failures.len(),
    })
}

/// The `drills list` table.
pub fn table(reports: &[DrillReport]) -> String {
    let mut out = String::new();
    if reports.is_empty() {
        out.push_str("no drill reports yet (run `drsync drill`)\n");
        return out;
    }
    let id_w = reports.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        out,
        "{:<id_w$}  {:<8}  {:<20}  {:<7}  {:>14}  {:>14}",
        "ID", "KIND", "STARTED", "OUTCOME", "RECOVERY TIME", "RECOVERY POINT"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<id_w$}  {:<8}  {:<20}  {:<7}  {:>14}  {:>14}",
            r.id,
            r.kind.as_str(),
            r.started_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            r.outcome.as_str(),
            figure(
                r.objectives.recovery_time.actual_seconds,
                r.objectives.recovery_time.status
            ),
            figure(
                r.objectives.recovery_point.actual_seconds,
                r.objectives.recovery_point.status
            ),
        );
    }
    out
}

fn figure(seconds: Option<u64>, status: ObjectiveStatus) -> String {
    let Some(s) = seconds else { return "-".into() };
    let d = humanize(s);
    match status {
        ObjectiveStatus::Missed => format!("{d} MISSED"),
        _ => d,
    }
}

fn humanize(s: u64) -> String {
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m{sec:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_like_durations_and_flag_misses() {
        assert_eq!(figure(None, ObjectiveStatus::Unknown), "-");
        assert_eq!(figure(Some(42), ObjectiveStatus::Met), "42s");
        assert_eq!(figure(Some(65), ObjectiveStatus::NotSet), "1m05s");
        assert_eq!(
            figure(Some(3 * 3600 + 120), ObjectiveStatus::Missed),
            "3h02m MISSED"
        );
    }

    #[test]
    fn the_table_lists_reports_or_says_there_are_none() {
        assert_eq!(table(&[]), "no drill reports yet (run `drsync drill`)\n");
        let text = include_str!("../../../../tests/fixtures/drills/report-v1.json");
        let report = DrillReport::from_json(text).unwrap();
        let t = table(std::slice::from_ref(&report));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID ") && lines[0].contains("RECOVERY POINT"));
        assert!(
            lines[1].starts_with(&report.id) && lines[1].contains("passed"),
            "{t}"
        );
        let row = summary(&report);
        assert_eq!(row["outcome"], "passed");
        assert_eq!(row["target"], "apim-contoso-neu");
    }

    #[test]
    fn cleanup_deletes_only_drilled_services_outside_the_configuration() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let config = Config::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        let text = include_str!("../../../../tests/fixtures/drills/report-v1.json");
        let configured = DrillReport::from_json(text).unwrap();
        // The fixture drilled into the configured standby: never deletable.
        let e = cleanup_target(
            &config,
            std::slice::from_ref(&configured),
            "apim-contoso-neu",
        )
        .unwrap_err();
        assert!(e.contains("it is a configured standby"), "{e}");
        let id = "/subscriptions/6f1d3c2a-5b4e-4f8a-9c7d-2e1f0a9b8c7d/resourceGroups/rg-apim-drill/providers/Microsoft.ApiManagement/service/apim-contoso-drill";
        let mut drilled = configured.clone();
        drilled.target.name = "apim-contoso-drill".into();
        drilled.target.resource_id = id.into();
        let reports = [configured, drilled.clone()];
        // By name or by resource id, the report's resource id is used.
        for target in ["apim-contoso-drill", "APIM-contoso-drill", id] {
            let s = cleanup_target(&config, &reports, target).unwrap();
            assert_eq!(s.resource_id(), id, "{target}");
        }
        // Another resource group than the drilled one: not drilled.
        let other = id.replace("rg-apim-drill", "rg-prod");
        let e = cleanup_target(&config, &reports, &other).unwrap_err();
        assert!(e.contains("no drill report has it as its target"), "{e}");
        // Only drills count: a clone's target is not a drill service.
        let mut clone = drilled;
        clone.kind = DrillKind::Clone;
        let e = cleanup_target(&config, &[clone], "apim-contoso-drill").unwrap_err();
        assert!(e.contains("no drill report"), "{e}");
        let e = cleanup_target(&config, &reports, "/subscriptions/x").unwrap_err();
        assert!(e.contains("is not a service resource id"), "{e}");
    }
}
