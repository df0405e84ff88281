//! The crate's error type.
//!
//! Every variant says what failed and, through [`Error::may_have_been_sent`], whether the
//! request may have reached Azure. No variant ever carries a secret: tokens, client secrets
//! and account keys are [`drsync_core::Secret`]s and are never formatted into messages, and
//! text that a server sent back (an error body, which a misbehaving proxy may fill with the
//! request it received) passes through [`redact`] before it is kept.

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
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
    /// message is the (truncated) text. Credentials in the text are [redacted](redact).
    pub fn parse(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Wrapped {
            error: ArmErrorBody,
        }
        if let Ok(w) = serde_json::from_slice::<Wrapped>(body) {
            return w.error.redacted();
        }
        if let Ok(b) = serde_json::from_slice::<ArmErrorBody>(body) {
            if !b.code.is_empty() || !b.message.is_empty() {
                return b.redacted();
            }
        }
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(512).collect();
        Self {
            message: text.trim().to_owned(),
            ..Self::default()
        }
        .redacted()
    }

    /// The same body with [`redact`] applied to every text in it, details included.
    pub fn redacted(self) -> Self {
        Self {
            code: redact(&self.code),
            message: redact(&self.message),
            target: self.target.as_deref().map(redact),
            details: self.details.into_iter().map(Self::redacted).collect(),
            additional_info: self.additional_info.into_iter().map(redact_json).collect(),
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

    /// A token could not be obtained. Nothing was sent to ARM.
    #[error("cannot obtain an access token from {source_name}: {message}")]
    Credential {
        /// Which credential (`client secret (v2.0)`, `managed identity`, `Azure CLI`, ...).
        source_name: String,
        /// What went wrong (never the secret or the token).
        message: String,
        /// Whether asking again may succeed: the token endpoint was unreachable or answered
        /// `408`, `429` or `5xx`. The pipeline retries these like any transient failure; a
        /// refusal (`invalid_client`, a CLI that is not logged in) is final.
        transient: bool,
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
    /// The same error with every occurrence of each of `values` (secrets this request sent,
    /// such as a named value's value or an account key, that a server may echo back) replaced
    /// by `<redacted>`, in every text it carries. Empty values are ignored.
    pub fn scrubbed(self, values: &[&str]) -> Self {
        let values: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return self;
        }
        let clean = |s: String| {
            values.iter().fold(s, |s, v| {
                if s.contains(v) {
                    s.replace(v, "<redacted>")
                } else {
                    s
                }
            })
        };
        fn clean_body(b: ArmErrorBody, clean: &dyn Fn(String) -> String) -> ArmErrorBody {
            ArmErrorBody {
                code: clean(b.code),
                message: clean(b.message),
                target: b.target.map(clean),
                details: b
                    .details
                    .into_iter()
                    .map(|d| clean_body(d, clean))
                    .collect(),
                additional_info: b
                    .additional_info
                    .into_iter()
                    .map(|v| {
                        serde_json::from_str(&clean(v.to_string()))
                            .unwrap_or(serde_json::Value::Null)
                    })
                    .collect(),
            }
        }
        match self {
            Self::InvalidConfig(m) => Self::InvalidConfig(clean(m)),
            Self::Credential {
                source_name,
                message,
                transient,
            } => Self::Credential {
                source_name,
                message: clean(message),
                transient,
            },
            Self::Arm {
                operation,
                status,
                body,
                request_id,
                attempts,
            } => Self::Arm {
                operation,
                status,
                body: Box::new(clean_body(*body, &clean)),
                request_id,
                attempts,
            },
            Self::Transport {
                operation,
                message,
                sent,
                attempts,
            } => Self::Transport {
                operation,
                message: clean(message),
                sent,
                attempts,
            },
            Self::OutcomeUnknown { operation, message } => Self::OutcomeUnknown {
                operation,
                message: clean(message),
            },
            Self::OperationFailed {
                operation,
                status,
                body,
            } => Self::OperationFailed {
                operation,
                status,
                body: Box::new(clean_body(*body, &clean)),
            },
            Self::Decode { operation, message } => Self::Decode {
                operation,
                message: clean(message),
            },
            other => other,
        }
    }

    /// A one-line description for retry warnings in the log: what failed and how (status and
    /// error code, or the transport failure), never the server's free-text message, which may
    /// echo what the request carried.
    pub fn retry_summary(&self) -> String {
        let text = match self {
            Self::Arm {
                operation,
                status,
                body,
                ..
            } => format!("{operation}: HTTP {status} {}", body.code),
            Self::OperationFailed {
                operation,
                status,
                body,
            } => format!("{operation}: {status} {}", body.code),
            Self::Transport {
                operation, sent, ..
            } => format!(
                "{operation}: transport failure{}",
                if *sent {
                    " (the request may have been sent)"
                } else {
                    ""
                }
            ),
            Self::Credential {
                source_name,
                transient,
                ..
            } => format!(
                "cannot obtain an access token from {source_name}{}",
                if *transient { " (transient)" } else { "" }
            ),
            other => other.to_string(),
        };
        redact(&text)
    }

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
            Self::Credential { transient, .. } => *transient,
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

/// Bearer tokens and Shared Key signatures after their scheme (`Authorization: Bearer ...`).
static AUTH_SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(bearer|sharedkey|sharedkeylite)(\s+)[^\s"',;<>\\]+"#).expect("valid regex")
});
/// Anything shaped like a JSON Web Token (Entra ID access tokens are JWTs).
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*").expect("valid regex")
});
/// Named secrets: SAS signatures, token fields, client secrets, account keys, in query,
/// form, header or JSON syntax (`sig=...`, `"accessKey":"..."`).
static NAMED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(sig|access_token|refresh_token|client_secret|clientsecret|accesskey|accountkey|account_key|password)(["']?\s*[=:]\s*["']?)[^\s"'&,;}<>\\]+"#,
    )
    .expect("valid regex")
});

/// Removes credentials from text that came from a server or another program (error bodies,
/// `az` output): bearer tokens and Shared Key signatures after their scheme, anything shaped
/// like a JWT, and the values of secret-looking fields. Everything else is kept, so the
/// message stays useful.
pub fn redact(text: &str) -> String {
    let text = AUTH_SCHEME.replace_all(text, "$1$2<redacted>");
    let text = JWT.replace_all(&text, "<redacted>");
    NAMED.replace_all(&text, "$1$2<redacted>").into_owned()
}

fn redact_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(redact(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(redact_json).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, redact_json(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: #4. What a server echoes back must not carry credentials into errors and logs.
    #[test]
    fn credentials_in_server_text_are_redacted() {
        let table = [
            (
                "Authorization: Bearer abc.def-ghi",
                "Authorization: Bearer <redacted>",
            ),
            (
                "authorization: bearer\tXYZ, next",
                "authorization: bearer\t<redacted>, next",
            ),
            (
                "Authorization: SharedKey devstoreaccount1:c2lnbmF0dXJl=",
                "Authorization: SharedKey <redacted>",
            ),
            (
                "token eyJhbGciOi.eyJzdWIiOi.c2ln here",
                "token <redacted> here",
            ),
            (
                "https://a.blob.core.windows.net/c/b?sv=2021&sig=abc%2Bdef&se=1",
                "https://a.blob.core.windows.net/c/b?sv=2021&sig=<redacted>&se=1",
            ),
            (
                r#"{"accessKey":"a2V5PT0=","x":1}"#,
                r#"{"accessKey":"<redacted>","x":1}"#,
            ),
            (
                "client_secret=s3cr3t&scope=x",
                "client_secret=<redacted>&scope=x",
            ),
            // Ordinary messages are untouched.
            (
                "Cannot restore: current SKU is 'StandardV2', backup SKU is 'Standard'",
                "Cannot restore: current SKU is 'StandardV2', backup SKU is 'Standard'",
            ),
            ("The signature is invalid", "The signature is invalid"),
        ];
        for (input, want) in table {
            assert_eq!(redact(input), want, "{input}");
        }
    }

    #[test]
    fn parsed_error_bodies_are_redacted_everywhere() {
        let body = br#"{"error":{"code":"BadRequest","message":"got Bearer tok1","target":"sig=t2","details":[{"code":"D","message":"accountKey=k3"}],"additionalInfo":[{"info":{"echo":"Bearer tok4"}}]}}"#;
        let parsed = ArmErrorBody::parse(body);
        let text = format!("{parsed:?}");
        for secret in ["tok1", "t2", "k3", "tok4"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert_eq!(parsed.code, "BadRequest");
        let html =
            ArmErrorBody::parse(b"<html>GET / HTTP/1.1\r\nAuthorization: Bearer tok5</html>");
        assert!(!html.message.contains("tok5"), "{}", html.message);
    }
}
