//! `drsync drills list|show`: the reports of past drills, clones, failovers and failbacks, kept
//! in the state directory (`{state}/drills/{id}/report.json`, `report.md`, `junit.xml`).

use std::fmt::Write as _;
use std::path::PathBuf;

use drsync_planner::drill::ReportStore;
use drsync_planner::drill::report::{DrillReport, ObjectiveStatus, junit_xml};

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
}
