//! The crate's error type.
//!
//! Every variant says what failed and, through [`Error::may_have_been_sent`], whether the
//! request may have reached Azure. No variant ever carries a secret: tokens, client secrets
//! and account keys are [`drsync_core::Secret`]s and are never formatted into messages.

use std::time::Duration;

use serde::Deserialize;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An ARM error body, `{"error": {"code", "message", "target", "details", "additionalInfo"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ArmErrorBody {
    /// The machine-readable code (`SubscriptionRequestsThrottled`, `RestoreFailed`, ...).
    #[serde(default)]
    pub code: String,
    /// The human-readable message.
    #[serde(default)]
    pub message: String,
    /// What the error is about, when ARM says.
    #[serde(default)]
    pub target: Option<String>,
    /// Nested errors.
    #[serde(default)]
    pub details: Vec<ArmErrorBody>,
    /// Additional information, kept as JSON.
    #[serde(default, rename = "additionalInfo")]
    pub additional_info: Vec<serde_json::Value>,
}

impl ArmErrorBody {
    /// Parses an ARM error response body. Accepts the wrapped `{"error": {...}}` form and the
    /// bare `{code, message}` form some endpoints use; anything else becomes a body whose
    /// message is the (truncated) text.
    pub fn parse(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Wrapped {
            error: ArmErrorBody,
        }
        if let Ok(w) = serde_json::from_slice::<Wrapped>(body) {
            return w.error;
        }
        if let Ok(b) = serde_json::from_slice::<ArmErrorBody>(body) {
            if !b.code.is_empty() || !b.message.is_empty() {
                return b;
            }
        }
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(512).collect();
        Self {
            message: text.trim().to_owned(),
            ..Self::default()
        }
    }

    /// The details' codes and messages on one line, for error messages.
    fn details_line(&self) -> String {
        if self.details.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .details
            .iter()
            .map(|d| format!("{}: {}", d.code, d.message))
            .collect();
        format!(" (details: {})", parts.join("; "))
    }
}

/// What can go wrong talking to Entra ID, ARM or storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client's configuration or a request's input is not valid. Nothing was sent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A bearer token would have gone over plain HTTP to a host that is not loopback, or a
    /// secret to a URL that is not allowed. Nothing was sent.
    #[error("refusing to send credentials to `{url}`: {reason}")]
    InsecureUrl {
        /// The refused URL (without its query string).
        url: String,
        /// Why.
        reason: String,
    },

    /// A polling or paging URL points at a different host than the ARM endpoint; following it
    /// would hand the bearer token to someone else. Nothing was sent.
    #[error("refusing to follow `{url}`: its host is not the ARM endpoint's host `{expected}`")]
    ForeignHost {
        /// The refused URL (without its query string).
        url: String,
        /// The ARM endpoint's host.
        expected: String,
    },

    /// A token could not be obtained.
    #[error("cannot obtain an access token from {source_name}: {message}")]
    Credential {
        /// Which credential (`client secret (v2.0)`, `managed identity`, `Azure CLI`, ...).
        source_name: String,
        /// What went wrong (never the secret or the token).
        message: String,
    },

    /// ARM (or Entra ID) answered with an error status.
    #[error("{operation}: HTTP {status} {}: {}{}", body.code, body.message, body.details_line())]
    Arm {
        /// What drsync was doing (`get service apim-weu`, `begin backup apim-weu`).
        operation: String,
        /// The HTTP status.
        status: u16,
        /// The parsed error body.
        body: Box<ArmErrorBody>,
        /// ARM's `x-ms-request-id`, for support tickets.
        request_id: Option<String>,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The request could not be completed over the network.
    #[error("{operation}: {message} (after {attempts} attempt(s){})", if *sent { "; the request may have been sent" } else { "" })]
    Transport {
        /// What drsync was doing.
        operation: String,
        /// The transport error, as text.
        message: String,
        /// Whether the request may have reached the server.
        sent: bool,
        /// How many attempts were made.
        attempts: u32,
    },

    /// A backup or restore POST was sent and then the connection failed (timeout, reset, a
    /// gateway error) before ARM answered: the operation may or may not have started. The
    /// client never resends it; the caller, which holds the checkpoint, decides (typically by
    /// looking at the service's provisioning state).
    #[error(
        "{operation}: the request was sent but its outcome is unknown ({message}); it was NOT resent: check the service's state before trying again"
    )]
    OutcomeUnknown {
        /// What drsync was doing.
        operation: String,
        /// What happened on the wire.
        message: String,
    },

    /// A long-running operation finished unsuccessfully.
    #[error("{operation} failed: {}: {}{}", body.code, body.message, body.details_line())]
    OperationFailed {
        /// Which operation.
        operation: String,
        /// The final status (`Failed`, `Canceled`) or HTTP status of the polling response.
        status: String,
        /// ARM's error.
        body: Box<ArmErrorBody>,
    },

    /// A long-running operation did not finish before its deadline. It may still be running.
    #[error("{operation} did not finish within {waited:?}; it may still be running")]
    PollTimeout {
        /// Which operation.
        operation: String,
        /// How long drsync waited.
        waited: Duration,
    },

    /// A response could not be understood.
    #[error("{operation}: unexpected response: {message}")]
    Decode {
        /// What drsync was doing.
        operation: String,
        /// What was wrong.
        message: String,
    },
}

impl Error {
    /// Whether the request may have reached Azure (so a non-idempotent request may have had
    /// its effect). `false` means it certainly was not sent.
    pub fn may_have_been_sent(&self) -> bool {
        match self {
            Self::InvalidConfig(_)
            | Self::InsecureUrl { .. }
            | Self::ForeignHost { .. }
            | Self::Credential { .. } => false,
            Self::Transport { sent, .. } => *sent,
            Self::Arm { .. }
            | Self::OutcomeUnknown { .. }
            | Self::OperationFailed { .. }
            | Self::PollTimeout { .. }
            | Self::Decode { .. } => true,
        }
    }

    /// Whether trying the same call again later may succeed (the client already retried what
    /// its policy allows). An [`Error::OutcomeUnknown`] is deliberately not retryable: resending
    /// could start a second backup or restore.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Arm { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Self::Transport { .. } | Self::PollTimeout { .. } => true,
            Self::OperationFailed { body, .. } => {
                matches!(body.code.as_str(), "Conflict" | "ServiceUnavailable")
            }
            _ => false,
        }
    }

    /// ARM's error code, when there is one.
    pub fn arm_code(&self) -> Option<&str> {
        match self {
            Self::Arm { body, .. } | Self::OperationFailed { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    /// The HTTP status, when ARM answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Arm { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A URL for messages: scheme, host, port and path, never the query (which could carry a
/// signature).
pub(crate) fn display_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    u.to_string()
}
