//! The overrides file of `drsync clone`: named values replaced after the restore.
//!
//! ```toml
//! [named_values]
//! backend-url = "https://orders.staging.contoso.internal"          # a literal, not secret
//! payments-key = { env = "STAGING_PAYMENTS_KEY", secret = true }  # from the environment
//! feature-flag = { value = "off" }
//! ```
//!
//! Values read from the environment are held as [`Secret`]s; none is ever printed.

use std::collections::BTreeMap;

use drsync_core::Secret;

use super::runner::NamedValueOverride;

/// What is wrong with an overrides file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverridesError {
    /// The file does not parse.
    #[error("overrides file {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An entry is not usable.
    #[error("overrides file {path}: named value `{name}`: {reason}")]
    Entry {
        /// The file.
        path: String,
        /// The named value.
        name: String,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    named_values: BTreeMap<String, Entry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Entry {
    Literal(String),
    Table(TableEntry),
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableEntry {
    value: Option<String>,
    env: Option<String>,
    #[serde(default)]
    secret: bool,
}

/// Parses an overrides file; `env` reads environment variables.
pub fn parse_overrides(
    text: &str,
    path: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<NamedValueOverride>, OverridesError> {
    let file: File = toml::from_str(text).map_err(|e| OverridesError::Parse {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (name, entry) in file.named_values {
        let bad = |reason: String| OverridesError::Entry {
            path: path.into(),
            name: name.clone(),
            reason,
        };
        if name.is_empty()
            || name.len() > 256
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(
                "names are 1-256 letters, digits, `-`, `_` or `.`".into()
            ));
        }
        let (value, secret) = match entry {
            Entry::Literal(v) => (v, false),
            Entry::Table(TableEntry {
                value: Some(v),
                env: None,
                secret,
            }) => (v, secret),
            Entry::Table(TableEntry {
                value: None,
                env: Some(var),
                secret,
            }) => {
                let v = env(&var)
                    .ok_or_else(|| bad(format!("environment variable `{var}` is not set")))?;
                (v, secret)
            }
            Entry::Table(_) => return Err(bad("give exactly one of `value` or `env`".into())),
        };
        if value.is_empty() {
            return Err(bad("the value is empty".into()));
        }
        out.push(NamedValueOverride {
            name,
            value: Secret::new(value),
            secret,
        });
    }
    if out.is_empty() {
        return Err(OverridesError::Parse {
            path: path.into(),
            reason: "no [named_values] entries".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "STAGING_KEY").then(|| "s3cret".to_string())
    }

    #[test]
    fn literals_tables_and_environment_values_parse() {
        let text = r#"
            [named_values]
            backend-url = "https://staging"
            key = { env = "STAGING_KEY", secret = true }
            flag = { value = "off" }
        "#;
        let o = parse_overrides(text, "o.toml", env).unwrap();
        let got: Vec<(&str, &str, bool)> = o
            .iter()
            .map(|o| (o.name.as_str(), o.value.expose(), o.secret))
            .collect();
        assert_eq!(
            got,
            [
                ("backend-url", "https://staging", false),
                ("flag", "off", false),
                ("key", "s3cret", true)
            ]
        );
        assert!(!format!("{o:?}").contains("s3cret"), "secrets never print");
    }

    #[test]
    fn bad_entries_name_the_file_and_the_value() {
        let check = |text: &str, want: &str| {
            let e = parse_overrides(text, "o.toml", env)
                .unwrap_err()
                .to_string();
            assert_eq!(e, want);
        };
        check(
            "[named_values]\nk = { env = \"MISSING\" }",
            "overrides file o.toml: named value `k`: environment variable `MISSING` is not set",
        );
        check(
            "[named_values]\nk = { env = \"STAGING_KEY\", value = \"x\" }",
            "overrides file o.toml: named value `k`: give exactly one of `value` or `env`",
        );
        check(
            "[named_values]\nk = \"\"",
            "overrides file o.toml: named value `k`: the value is empty",
        );
        check(
            "[named_values]\n\"a b\" = \"x\"",
            "overrides file o.toml: named value `a b`: names are 1-256 letters, digits, `-`, `_` or `.`",
        );
        check("", "overrides file o.toml: no [named_values] entries");
        let e = parse_overrides("[other]\n", "o.toml", env)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("overrides file o.toml: "), "{e}");
    }
}
