//! Configuration errors: each names the file, `line:column`, the field and a hint.
//!
//! Errors are collected, not returned at the first one: [`ConfigErrors`] holds all of them,
//! sorted by position. Rendering shows the offending source line with a caret under the
//! value, except for lines that may hold a secret, which are never echoed.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the offending value (or key, or table header).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted path of the field, such as `service[1].sku` or `replication[0].retention`
    /// (indices count entries of an array of tables from 0). `<toml>` for syntax errors.
    pub field: String,
    /// What is wrong. Never contains a secret value.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The source line and the highlighted column range within it (in characters), unless the
    /// line may hold a secret.
    pub snippet: Option<(String, Range<usize>)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "error: {}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.field,
            self.message
        )?;
        let gutter = self.line.to_string().len();
        if let Some((text, range)) = &self.snippet {
            let pad = " ".repeat(gutter);
            let marks = "^".repeat(range.len().max(1));
            writeln!(f, "{pad} |")?;
            writeln!(f, "{} | {}", self.line, text)?;
            writeln!(f, "{pad} | {}{marks}", " ".repeat(range.start))?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{} = hint: {hint}", " ".repeat(gutter))?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration file, in source order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The errors, sorted by line and column.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always false: a `ConfigErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Iterates over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "{e}")?;
        }
        let n = self.errors.len();
        let file = self
            .errors
            .first()
            .map(|e| e.file.display().to_string())
            .unwrap_or_default();
        write!(f, "{n} error{} in {file}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Keys whose lines are never echoed in error snippets, because their values may be secrets.
pub(crate) const SECRET_WORDS: [&str; 5] = ["secret", "key", "token", "password", "sas"];

/// Turns byte offsets into positions and collects errors for one file.
pub(crate) struct Collector<'s> {
    file: PathBuf,
    source: &'s str,
    line_starts: Vec<usize>,
    errors: Vec<ConfigError>,
}

impl<'s> Collector<'s> {
    pub(crate) fn new(file: PathBuf, source: &'s str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            source,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// 1-based (line, column in characters) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.source[start..floor_char(self.source, offset)]
            .chars()
            .count();
        (line + 1, column + 1)
    }

    /// Records an error at `span` (byte range in the source).
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.position(span.start);
        let snippet = self.snippet(line, span);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            field: field.into(),
            message: message.into(),
            hint,
            snippet,
        });
    }

    /// Records an error at a key (`span` is the key's bytes) whose value must not be echoed:
    /// the snippet shows the line only up to the end of the key.
    pub(crate) fn error_key_only(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let (line, column) = self.position(span.start);
        let start = self.line_starts[line - 1];
        let end = floor_char(self.source, span.end.max(start));
        let head = &self.source[start..end];
        // A key spanning lines (impossible in valid TOML) gets no snippet at all.
        let snippet = (!head.contains('\n')).then(|| {
            let from = column - 1;
            let to = head.chars().count().max(from + 1);
            (format!("{} = ...", head.replace('\t', " ")), from..to)
        });
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            field: field.into(),
            message: message.into(),
            hint,
            snippet,
        });
    }

    fn snippet(&self, line: usize, span: Range<usize>) -> Option<(String, Range<usize>)> {
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).map_or(self.source.len(), |&e| e);
        let text = self.source[start..end].trim_end_matches(['\n', '\r']);
        let lower = text.to_ascii_lowercase();
        if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
            return None;
        }
        let from = self.source[start..floor_char(self.source, span.start.max(start))]
            .chars()
            .count();
        let to_byte = floor_char(self.source, span.end.clamp(span.start, start + text.len()));
        let to = self.source[start..to_byte.max(start)]
            .chars()
            .count()
            .max(from + 1);
        Some((text.replace('\t', " "), from..to))
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(crate) fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| (e.line, e.column));
        self.errors.dedup();
        Err(ConfigErrors {
            errors: self.errors,
        })
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
