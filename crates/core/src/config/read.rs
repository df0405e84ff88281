//! A small typed reader over toml's spanned document (`toml::de::DeTable`).
//!
//! Serde stops at the first error; a configuration check must report all of them, each with a
//! position. So the document is parsed once into spanned values and read field by field here:
//! every accessor records a positioned error in the [`Collector`] and returns `None` when the
//! value is missing or has the wrong type, and the caller carries on.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Collector;

/// A value with the byte span it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct At<T> {
    pub(crate) value: T,
    pub(crate) span: Range<usize>,
}

/// One TOML table being read, with its dotted path for error messages.
pub(crate) struct Table<'d, 'i> {
    table: &'d DeTable<'i>,
    /// The table's span: its header (`[azure]`, `[[service]]`) or the inline table.
    pub(crate) span: Range<usize>,
    /// `azure.credential`, `service[1]`, or empty for the document root.
    pub(crate) path: String,
}

impl<'d, 'i> Table<'d, 'i> {
    pub(crate) fn root(doc: &'d Spanned<DeTable<'i>>) -> Self {
        Self {
            table: doc.get_ref(),
            span: 0..0,
            path: String::new(),
        }
    }

    /// A table that is not (or not yet) in the document, such as an absent `[state]`; errors
    /// about it point at `span`.
    pub(crate) fn detached(table: &'d DeTable<'i>, span: Range<usize>, path: String) -> Self {
        Self { table, span, path }
    }

    /// The span of `key` itself (not its value).
    pub(crate) fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(k, _)| k.span())
    }

    /// Whether `key` holds a string.
    pub(crate) fn is_str(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.get_ref().is_str())
    }

    /// Whether `key` holds an array.
    pub(crate) fn is_array(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.get_ref().is_array())
    }

    /// Whether `key` holds a boolean.
    pub(crate) fn is_bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.get_ref().is_bool())
    }

    /// The `name` string of this table and its span, if it has one.
    pub(crate) fn name_value(&self) -> Option<At<&'d str>> {
        let v = self.get("name")?;
        v.get_ref().as_str().map(|s| At {
            value: s,
            span: v.span(),
        })
    }

    /// The dotted path of `key` in this table.
    pub(crate) fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The string at `key` and its span, without recording anything when it is absent or not a
    /// string (the section's own reader reports that).
    pub(crate) fn raw_str(&self, key: &str) -> Option<At<&'d str>> {
        let v = self.get(key)?;
        v.get_ref().as_str().map(|s| At {
            value: s,
            span: v.span(),
        })
    }

    /// Whether `key` is present.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.table.get(key).is_some()
    }

    fn get(&self, key: &str) -> Option<&'d Spanned<DeValue<'i>>> {
        self.table.get(key)
    }

    /// Reports every key not in `allowed`, with a suggestion for near misses.
    pub(crate) fn deny_unknown(&self, c: &mut Collector<'_>, allowed: &[&str]) {
        for (key, _) in self.table.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let hint = match closest(name, allowed) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("known keys here: {}", allowed.join(", ")),
            };
            let what = if self.path.is_empty() {
                "unknown section or key".to_owned()
            } else {
                format!("unknown key in `{}`", self.path)
            };
            // The value is not echoed: an unknown key may be a misspelt secret field
            // (`client_secert = "..."`), which the secret-word check of snippets cannot see.
            c.error_key_only(
                key.span(),
                self.field(name),
                format!("{what}: `{name}`"),
                Some(hint),
            );
        }
    }

    /// Reports that a required `key` is missing, at the table's header.
    pub(crate) fn missing(&self, c: &mut Collector<'_>, key: &str, hint: &str) {
        let place = if self.path.is_empty() {
            "the configuration".to_owned()
        } else {
            format!("`{}`", self.path)
        };
        c.error(
            self.span.clone(),
            self.field(key),
            format!("missing required field `{key}` in {place}"),
            Some(hint.to_owned()),
        );
    }

    fn wrong_type(&self, c: &mut Collector<'_>, key: &str, v: &Spanned<DeValue<'_>>, want: &str) {
        let found = if is_secret_key(key) {
            kind_of(v.get_ref()).to_owned()
        } else {
            describe(v.get_ref())
        };
        c.error(
            v.span(),
            self.field(key),
            format!("expected {want}, found {found}"),
            Some(type_hint(key, &self.field(key), want)),
        );
    }

    /// An optional string.
    pub(crate) fn str(&self, c: &mut Collector<'_>, key: &str) -> Option<At<&'d str>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(At {
                value: s.as_ref(),
                span: v.span(),
            }),
            _ => {
                self.wrong_type(c, key, v, "a string");
                None
            }
        }
    }

    /// A required string: reports it missing (with `hint`) when absent.
    pub(crate) fn req_str(
        &self,
        c: &mut Collector<'_>,
        key: &str,
        hint: &str,
    ) -> Option<At<&'d str>> {
        if !self.has(key) {
            self.missing(c, key, hint);
        }
        self.str(c, key)
    }

    /// An optional integer.
    pub(crate) fn int(&self, c: &mut Collector<'_>, key: &str) -> Option<At<i64>> {
        let v = self.get(key)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.wrong_type(c, key, v, "an integer");
                return None;
            }
        };
        match parsed {
            Some(value) => Some(At {
                value,
                span: v.span(),
            }),
            None => {
                c.error(
                    v.span(),
                    self.field(key),
                    "integer out of range",
                    Some("use a whole number between 1 and a few thousand".into()),
                );
                None
            }
        }
    }

    /// An optional number; integers are accepted where a float is expected.
    pub(crate) fn float(&self, c: &mut Collector<'_>, key: &str) -> Option<At<f64>> {
        let v = self.get(key)?;
        let parsed = match v.get_ref() {
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|i| i as f64),
            _ => {
                self.wrong_type(c, key, v, "a number");
                return None;
            }
        };
        match parsed {
            Some(value) => Some(At {
                value,
                span: v.span(),
            }),
            None => {
                c.error(
                    v.span(),
                    self.field(key),
                    "not a number",
                    Some(format!("write a plain number such as {key} = 2.5")),
                );
                None
            }
        }
    }

    /// An optional boolean.
    pub(crate) fn bool(&self, c: &mut Collector<'_>, key: &str) -> Option<At<bool>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(At {
                value: *b,
                span: v.span(),
            }),
            _ => {
                self.wrong_type(c, key, v, "true or false");
                None
            }
        }
    }

    /// An optional sub-table (`[azure.credential]` or an inline table).
    pub(crate) fn table(&self, c: &mut Collector<'_>, key: &str) -> Option<Table<'d, 'i>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Table {
                table: t,
                span: v.span(),
                path: self.field(key),
            }),
            _ => {
                self.wrong_type(c, key, v, "a table");
                None
            }
        }
    }

    /// An array of tables (`[[service]]` or `service = [{...}]`); empty when absent.
    pub(crate) fn tables(&self, c: &mut Collector<'_>, key: &str) -> Vec<Table<'d, 'i>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(
                c,
                key,
                v,
                format!("an array of tables (`[[{key}]]`)").as_str(),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.field(key));
            match item.get_ref() {
                DeValue::Table(t) => out.push(Table {
                    table: t,
                    span: item.span(),
                    path,
                }),
                other => c.error(
                    item.span(),
                    path,
                    format!("expected a table, found {}", describe(other)),
                    Some(format!("write each entry as a [[{key}]] section")),
                ),
            }
        }
        out
    }

    /// An optional table of strings (`env = { KEY = "value" }`): its keys and values with their
    /// spans; a value that is not a string is reported.
    pub(crate) fn str_table(
        &self,
        c: &mut Collector<'_>,
        key: &str,
    ) -> Option<Vec<(At<&'d str>, At<&'d str>)>> {
        let sub = self.table(c, key)?;
        let mut out = Vec::new();
        for (k, v) in sub.table.iter() {
            let name: &'d str = k.get_ref();
            match v.get_ref() {
                DeValue::String(s) => out.push((
                    At {
                        value: name,
                        span: k.span(),
                    },
                    At {
                        value: s.as_ref(),
                        span: v.span(),
                    },
                )),
                other => c.error(
                    v.span(),
                    sub.field(name),
                    format!("expected a string, found {}", describe(other)),
                    Some(format!("write the value in quotes: {name} = \"...\"")),
                ),
            }
        }
        Some(out)
    }

    /// An optional array of strings.
    pub(crate) fn str_array(
        &self,
        c: &mut Collector<'_>,
        key: &str,
    ) -> Option<At<Vec<At<&'d str>>>> {
        let v = self.get(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(c, key, v, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(At {
                    value: s.as_ref(),
                    span: item.span(),
                }),
                other => c.error(
                    item.span(),
                    format!("{}[{i}]", self.field(key)),
                    format!("expected a string, found {}", describe(other)),
                    Some("write each element in quotes, as in [\"a\", \"b\"]".into()),
                ),
            }
        }
        Some(At {
            value: out,
            span: v.span(),
        })
    }
}

/// How to write a value of the expected type.
fn type_hint(key: &str, field: &str, want: &str) -> String {
    match want {
        "a string" if matches!(key, "rpo" | "retention" | "rto" | "timeout") => {
            format!("write a duration with its unit, in quotes: {key} = \"1h\" (units: s, m, h, d)")
        }
        "a string" => format!("put the value in quotes: {key} = \"...\""),
        "an integer" => format!("write a whole number without quotes: {key} = 2"),
        "a number" => format!("write a number without quotes: {key} = 0.5"),
        "true or false" => format!("write {key} = true or {key} = false, without quotes"),
        "a table" => format!("write it as a section: [{field}] followed by its keys"),
        "an array of strings" => format!("write a list: {key} = [\"a\", \"b\"]"),
        _ => format!("write each entry as a [[{key}]] section"),
    }
}

fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) if s.len() <= 40 && !looks_secret(s) => format!("the string \"{s}\""),
        DeValue::String(_) => "a string".to_owned(),
        DeValue::Integer(i) => format!("the integer {}", i.as_str()),
        DeValue::Float(f) => format!("the number {}", f.as_str()),
        DeValue::Boolean(b) => format!("`{b}`"),
        DeValue::Datetime(_) => "a date-time".to_owned(),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// What kind of value `v` is, without its content.
fn kind_of(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a number",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Whether a key may hold a secret (`client_secret`, `key`, `token`): its value is never
/// echoed, whatever its type.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    super::error::SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// Whether a string could be a credential; such strings are never echoed.
fn looks_secret(s: &str) -> bool {
    s.len() >= 16 && !s.contains(' ')
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}
