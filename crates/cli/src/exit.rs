//! Exit codes, and how a command's outcome becomes one.
//!
//! The codes are part of drsync's interface (documented in the README):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | an operation failed (Azure error, a step failed, a preflight check refused) |
//! | 2 | configuration or usage error |
//! | 3 | a drill failed its objectives or its verification; for `failover`/`failback`, the roles changed but an after-promote hook or an objective failed; for `clone`, an override failed |
//! | 4 | interrupted (Ctrl-C) with state saved: run the same command again to resume |
//! | 5 | another drsync process holds a lease on a service |
//!
//! A command returns `anyhow::Result<Exit>`: `Ok(Exit::Success)` normally, another `Exit` when
//! it finished but the outcome is not a success (a drill that missed its RTO returns
//! `Ok(Exit::DrillFailed)`). An error maps to 1 unless it is a configuration error
//! ([`drsync_core::ConfigErrors`], or a secret reference that cannot be resolved:
//! [`SecretError`] anywhere in its chain, such as an unset `env:` variable or a missing `file:`)
//! or carries an explicit code via [`Coded`].

use std::fmt;
use std::process::ExitCode;

use drsync_core::ConfigErrors;
use drsync_core::secret::SecretError;

/// drsync's documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Success = 0,
    /// 1: an operation failed.
    Failed = 1,
    /// 2: configuration or usage error.
    Usage = 2,
    /// 3: a drill failed its objectives or verification.
    DrillFailed = 3,
    /// 4: interrupted with state saved; run again to resume.
    Interrupted = 4,
    /// 5: another drsync process holds a lease on a service.
    Leased = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error that carries its exit code: `Err(Coded::new(Exit::Leased, error).into())`.
#[derive(Debug)]
pub struct Coded {
    /// The exit code to use.
    pub exit: Exit,
    /// The error to print.
    pub error: anyhow::Error,
}

impl Coded {
    /// Attaches `exit` to `error`.
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Coded {}

/// The exit code for an error.
pub fn classify(error: &anyhow::Error) -> Exit {
    if let Some(coded) = error.downcast_ref::<Coded>() {
        coded.exit
    } else if error.downcast_ref::<ConfigErrors>().is_some()
        || error.chain().any(|e| e.is::<SecretError>())
    {
        Exit::Usage
    } else {
        Exit::Failed
    }
}

/// Prints an error (if any) to stderr and returns the process exit code.
pub fn report(outcome: anyhow::Result<Exit>) -> ExitCode {
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            let exit = classify(&error);
            if let Some(errors) = error.downcast_ref::<ConfigErrors>() {
                // Already formatted: one block per error with file:line:column, field and hint.
                eprintln!("{errors}");
            } else {
                eprintln!("error: {error:#}");
            }
            exit.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn errors_map_to_documented_codes() {
        let failed = anyhow::anyhow!("ARM answered 500");
        assert_eq!(classify(&failed), Exit::Failed);
        let leased = anyhow::Error::new(Coded::new(Exit::Leased, anyhow::anyhow!("held")));
        assert_eq!(classify(&leased), Exit::Leased);
        // An unresolvable secret reference is a configuration problem, however deeply wrapped.
        let unset: Result<(), SecretError> =
            Err(SecretError::MissingEnv("AZURE_CLIENT_SECRET".into()));
        let unset = unset
            .context("client secret")
            .context("log in")
            .unwrap_err();
        assert_eq!(classify(&unset), Exit::Usage);
    }
}
