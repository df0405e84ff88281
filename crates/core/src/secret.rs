//! Secrets and the references that name them.
//!
//! A [`Secret`] never prints its value: `Debug` and `Display` show `<redacted>`, and it is not
//! `Serialize`, so it cannot end up in a checkpoint or a report by accident. Configuration holds
//! only [`SecretRef`]s (`env:NAME` or `file:PATH`); resolving one is I/O, which this crate does not
//! do: the caller passes in how to read the environment and files.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value: a client secret, a storage account key, a bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself. Call only at the point where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from. Never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An environment variable, written `env:NAME`.
    Env(String),
    /// A file whose content (trimmed of surrounding white space) is the secret, written `file:PATH`.
    File(PathBuf),
}

/// Why a secret reference is not valid or cannot be resolved. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text is not `env:NAME` or `file:PATH`; it may be a literal secret.
    #[error(
        "expected a secret reference `env:NAME` or `file:PATH`, found a literal value (never put secrets in the configuration)"
    )]
    Literal,
    /// `env:` or `file:` with nothing after it.
    #[error("secret reference `{0}` names nothing")]
    Empty(String),
    /// The environment variable is not set.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file `{path}`: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error, as text.
        reason: String,
    },
    /// The variable or file is empty.
    #[error("secret from `{0}` is empty")]
    EmptyValue(String),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`. Anything else is refused as a possible literal secret.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() {
                return Err(SecretError::Empty(text.to_owned()));
            }
            Ok(Self::Env(name.to_owned()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(SecretError::Empty(text.to_owned()));
            }
            Ok(Self::File(PathBuf::from(path)))
        } else {
            Err(SecretError::Literal)
        }
    }

    /// Resolves the reference with the given environment lookup and file reader.
    pub fn resolve_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
        read_file: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Secret, SecretError> {
        let value = match self {
            Self::Env(name) => env(name).ok_or_else(|| SecretError::MissingEnv(name.clone()))?,
            Self::File(path) => read_file(path).map_err(|e| SecretError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(SecretError::EmptyValue(self.to_string()));
        }
        Ok(Secret::new(value))
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl std::str::FromStr for SecretRef {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(<redacted>))");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn references_parse_and_literals_are_refused() {
        assert_eq!(
            SecretRef::parse("env:AZ").unwrap(),
            SecretRef::Env("AZ".into())
        );
        assert_eq!(
            SecretRef::parse("file:/run/k").unwrap(),
            SecretRef::File("/run/k".into())
        );
        assert_eq!(SecretRef::parse("s3cr3t~value"), Err(SecretError::Literal));
        assert_eq!(
            SecretRef::parse("env:"),
            Err(SecretError::Empty("env:".into()))
        );
        let err = SecretRef::parse("Eby8vdM02xNOcqFl==")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("Eby8"), "{err}");
    }

    #[test]
    fn resolution_reads_through_the_given_functions() {
        let env = |n: &str| (n == "K").then(|| " v \n".to_owned());
        let no_file = |_: &Path| Err(std::io::Error::other("nope"));
        let r = SecretRef::Env("K".into())
            .resolve_with(env, no_file)
            .unwrap();
        assert_eq!(r.expose(), "v");
        let err = SecretRef::Env("X".into())
            .resolve_with(env, no_file)
            .unwrap_err();
        assert_eq!(err, SecretError::MissingEnv("X".into()));
        let err = SecretRef::File("/k".into())
            .resolve_with(env, no_file)
            .unwrap_err();
        assert!(err.to_string().contains("/k"));
    }
}
