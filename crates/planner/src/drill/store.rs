//! Drill reports on disk, in the state directory: `{state}/drills/{id}/report.json`,
//! `report.md` and `junit.xml`. Each file is written to a temporary name and renamed, so a
//! crash never leaves half a report.

use std::path::{Path, PathBuf};

use super::report::{DrillReport, junit_xml};

/// What went wrong reading or writing reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A report file is not a readable report.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No report has this id (or id prefix).
    #[error("no drill report `{0}` (see `drsync drills list`)")]
    NotFound(String),
    /// Several reports start with this prefix.
    #[error("`{prefix}` matches several reports: {}", matches.join(", "))]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// The reports it matches.
        matches: Vec<String>,
    },
}

/// Where one report's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPaths {
    /// The report's directory.
    pub dir: PathBuf,
    /// `report.json`.
    pub json: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `junit.xml`.
    pub junit: PathBuf,
}

/// The reports under one state directory.
#[derive(Debug, Clone)]
pub struct ReportStore {
    dir: PathBuf,
}

impl ReportStore {
    /// The store of the state directory `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("drills"),
        }
    }

    /// The directory holding every report.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the report `id` is (or would be) kept.
    pub fn paths(&self, id: &str) -> ReportPaths {
        let dir = self.dir.join(id);
        ReportPaths {
            json: dir.join("report.json"),
            markdown: dir.join("report.md"),
            junit: dir.join("junit.xml"),
            dir,
        }
    }

    /// Writes the report's three renderings.
    pub fn save(&self, report: &DrillReport) -> Result<ReportPaths, StoreError> {
        let paths = self.paths(&report.id);
        std::fs::create_dir_all(&paths.dir).map_err(|source| StoreError::Io {
            path: paths.dir.clone(),
            source,
        })?;
        write_atomic(&paths.json, &report.to_json())?;
        write_atomic(&paths.markdown, &report.to_markdown())?;
        write_atomic(&paths.junit, &junit_xml(&[report]))?;
        Ok(paths)
    }

    /// Every report, oldest first.
    pub fn list(&self) -> Result<Vec<DrillReport>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut reports = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let json = entry.path().join("report.json");
            if json.is_file() {
                reports.push(read(&json)?);
            }
        }
        reports.sort_by(|a, b| {
            a.started_at
                .cmp(&b.started_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(reports)
    }

    /// The report with this id, or the only one whose id starts with it.
    pub fn load(&self, id: &str) -> Result<DrillReport, StoreError> {
        let exact = self.paths(id).json;
        if !id.is_empty() && !id.contains(['/', '\\']) && exact.is_file() {
            return read(&exact);
        }
        let matches: Vec<DrillReport> = self
            .list()?
            .into_iter()
            .filter(|r| r.id.starts_with(id))
            .collect();
        match matches.len() {
            0 => Err(StoreError::NotFound(id.into())),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(StoreError::Ambiguous {
                prefix: id.into(),
                matches: matches.into_iter().map(|r| r.id).collect(),
            }),
        }
    }
}

fn read(path: &Path) -> Result<DrillReport, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
        path: path.into(),
        source,
    })?;
    DrillReport::from_json(&text).map_err(|reason| StoreError::Corrupt {
        path: path.into(),
        reason,
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|source| StoreError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| StoreError::Io {
        path: path.into(),
        source,
    })
}
