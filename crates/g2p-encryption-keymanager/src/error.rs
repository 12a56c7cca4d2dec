//! Typed errors of the Keymanager provider.

use std::time::Duration;

use g2p_encryption::{ErrorKind, ProviderError};
use g2p_mosip::KerClass;

/// Everything that can go wrong talking to a MOSIP Keymanager.
///
/// Messages name the URL, status and KER code; they never contain the client secret, a
/// token or data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeymanagerError {
    /// The request could not be sent or the answer not received.
    #[error("cannot reach {url}: {reason}")]
    Transport {
        /// Endpoint URL (no query).
        url: String,
        /// What failed (connection refused, TLS, ...).
        reason: String,
    },
    /// No answer within the configured timeout.
    #[error("{url} did not answer within {}", human(*after))]
    Timeout {
        /// Endpoint URL.
        url: String,
        /// The time the attempt had.
        after: Duration,
    },
    /// The Keymanager answered with an HTTP error status.
    #[error("{url} answered HTTP {status}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    HttpStatus {
        /// Endpoint URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// KER code and message, when the body carried one.
        code: Option<String>,
        /// The answer's `Retry-After`, when it had one (429, 503).
        retry_after: Option<Duration>,
    },
    /// Calls to this Keymanager (or token endpoint) fail fast: it failed `failures` times in
    /// a row, and is tried again with one probe after the cool-down.
    #[error("kms_unavailable: {url} failed {failures} times in a row; calls fail fast for {} s more, then one probe decides", retry_in.as_secs().max(1))]
    CircuitOpen {
        /// The Keymanager API base or token endpoint.
        url: String,
        /// Failures that opened the circuit.
        failures: u32,
        /// Time left before the probe.
        retry_in: Duration,
    },
    /// Every attempt failed with an error worth retrying; `last` is the last one.
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<KeymanagerError>,
    },
    /// The caller's deadline left no time for (another) attempt.
    #[error("{url}: {what}")]
    Deadline {
        /// Endpoint URL.
        url: String,
        /// What could not be done in time, and what happened before.
        what: String,
    },
    /// The Keymanager refused the request with a KER error (HTTP 200 with `errors`).
    #[error("keymanager error {code}: {message}")]
    Keymanager {
        /// e.g. `KER-FSE-004`.
        code: String,
        /// The Keymanager's message.
        message: String,
    },
    /// The token endpoint refused the client (RFC 6749 error), or the Keymanager kept
    /// answering 401 after a fresh token.
    #[error("authentication failed at {url}: {error}{}", description.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Auth {
        /// Token or Keymanager URL.
        url: String,
        /// RFC 6749 `error`, or `HTTP 401`.
        error: String,
        /// `error_description`.
        description: Option<String>,
    },
    /// The answer could not be read.
    #[error("invalid response from {url}: {reason}")]
    InvalidResponse {
        /// Endpoint URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Configuration is missing or wrong.
    #[error("keymanager configuration: {0}")]
    Configuration(String),
}

impl ProviderError for KeymanagerError {
    fn kind(&self) -> ErrorKind {
        match self {
            KeymanagerError::Transport { .. } => ErrorKind::Unavailable,
            KeymanagerError::Timeout { .. } => ErrorKind::Timeout,
            KeymanagerError::HttpStatus { status, .. } if *status == 403 => ErrorKind::Auth,
            KeymanagerError::HttpStatus { status, .. } if transient_status(*status) => {
                ErrorKind::Unavailable
            }
            KeymanagerError::HttpStatus { .. } => ErrorKind::Remote,
            KeymanagerError::CircuitOpen { .. } => ErrorKind::Unavailable,
            KeymanagerError::GaveUp { last, .. } => last.kind(),
            KeymanagerError::Deadline { .. } => ErrorKind::Timeout,
            KeymanagerError::Keymanager { code, .. } => {
                KerClass::of(code).error_kind().unwrap_or(ErrorKind::Remote)
            }
            KeymanagerError::Auth { .. } => ErrorKind::Auth,
            KeymanagerError::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            KeymanagerError::Configuration(_) => ErrorKind::Configuration,
        }
    }
}

/// `2 s`, or `300 ms` under a second.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) && d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Statuses that say "not now" rather than "not this": a gateway or the service itself is
/// overloaded or restarting (502, 503, 504), or asks the client to slow down (429, 408).
fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 502 | 503 | 504)
}

impl KeymanagerError {
    /// Whether the same request may succeed if sent again: the connection failed or broke
    /// before an answer, no answer came in time, or the status says "not now" (408, 429,
    /// 502, 503, 504, with or without a MOSIP envelope). Never for a client error, a KER
    /// error (HTTP 200 with `errors`), a refused ciphertext, an answer that cannot be read,
    /// nor an open circuit.
    pub fn retryable(&self) -> bool {
        match self {
            KeymanagerError::Transport { .. } | KeymanagerError::Timeout { .. } => true,
            KeymanagerError::HttpStatus { status, .. } => transient_status(*status),
            _ => false,
        }
    }

    /// Whether the failure says the service is out (for the circuit breaker and for serving
    /// cached keys through an outage): as [`KeymanagerError::retryable`] but for 408 and 429,
    /// which an answering service sends.
    pub fn is_outage(&self) -> bool {
        match self {
            KeymanagerError::HttpStatus { status, .. } => matches!(status, 502..=504),
            KeymanagerError::GaveUp { last, .. } => last.is_outage(),
            KeymanagerError::CircuitOpen { .. } => true,
            other => other.retryable(),
        }
    }

    /// How long the service asked the client to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KeymanagerError::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label of the cause, for metrics: `connect`, `timeout`, `http_503`, ...
    pub fn label(&self) -> String {
        match self {
            KeymanagerError::Transport { .. } => "transport".into(),
            KeymanagerError::Timeout { .. } => "timeout".into(),
            KeymanagerError::HttpStatus { status, .. } => format!("http_{status}"),
            KeymanagerError::Keymanager { .. } => "ker".into(),
            KeymanagerError::Auth { .. } => "auth".into(),
            KeymanagerError::InvalidResponse { .. } => "invalid_response".into(),
            KeymanagerError::Configuration(_) => "configuration".into(),
            KeymanagerError::CircuitOpen { .. } => "circuit_open".into(),
            KeymanagerError::GaveUp { last, .. } => last.label(),
            KeymanagerError::Deadline { .. } => "deadline".into(),
        }
    }
}

/// The delay a `Retry-After` header asks for: seconds, or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Classifies a reqwest failure: timeout, or transport with the underlying cause (the
/// outer message only repeats the URL).
pub(crate) fn transport_error(
    url: &str,
    error: &reqwest::Error,
    timeout: std::time::Duration,
) -> KeymanagerError {
    if error.is_timeout() {
        return KeymanagerError::Timeout {
            url: url.into(),
            after: timeout,
        };
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    let reason = if causes.is_empty() {
        let mut text = error.to_string();
        if let Some(at) = text.find(" for url (") {
            text.truncate(at);
        }
        text
    } else {
        causes.join(": ")
    };
    KeymanagerError::Transport {
        url: url.into(),
        reason,
    }
}

impl From<KeymanagerError> for g2p_encryption::Error {
    fn from(e: KeymanagerError) -> Self {
        g2p_encryption::Error::Provider(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let e = KeymanagerError::Keymanager {
            code: "KER-FSE-004".into(),
            message: "Tag mismatch".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert_eq!(e.to_string(), "keymanager error KER-FSE-004: Tag mismatch");
        let e = KeymanagerError::Keymanager {
            code: "KER-CRY-011".into(),
            message: "m".into(),
        };
        assert_eq!(e.kind(), ErrorKind::Configuration);
        let e = KeymanagerError::HttpStatus {
            url: "http://km/decrypt".into(),
            status: 500,
            code: Some("KER-KMS-500".into()),
            retry_after: None,
        };
        assert!(!e.retryable() && !e.is_outage());
        assert_eq!(
            e.to_string(),
            "http://km/decrypt answered HTTP 500 (KER-KMS-500)"
        );
        let e = KeymanagerError::Auth {
            url: "http://kc/token".into(),
            error: "invalid_client".into(),
            description: Some("Invalid client".into()),
        };
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(e.to_string().contains("invalid_client (Invalid client)"));
        let wrapped: g2p_encryption::Error = KeymanagerError::Timeout {
            url: "u".into(),
            after: Duration::from_millis(300),
        }
        .into();
        assert_eq!(wrapped.kind(), ErrorKind::Timeout);
        assert_eq!(wrapped.to_string(), "u did not answer within 300 ms");
    }

    #[test]
    fn what_is_retried() {
        let status = |status| KeymanagerError::HttpStatus {
            url: "u".into(),
            status,
            code: None,
            retry_after: None,
        };
        for s in [408, 429, 502, 503, 504] {
            assert!(status(s).retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 500, 501] {
            assert!(!status(s).retryable(), "{s}");
        }
        assert!(status(503).is_outage() && !status(429).is_outage());
        assert_eq!(status(503).kind(), ErrorKind::Unavailable);
        let ker = KeymanagerError::Keymanager {
            code: "KER-KMS-005".into(),
            message: "Invalid request".into(),
        };
        assert!(!ker.retryable() && !ker.is_outage());
        let gave_up = KeymanagerError::GaveUp {
            attempts: 4,
            last: Box::new(status(503)),
        };
        assert!(!gave_up.retryable() && gave_up.is_outage());
        assert_eq!(gave_up.kind(), ErrorKind::Unavailable);
        assert_eq!(
            gave_up.to_string(),
            "u answered HTTP 503 (gave up after 4 attempts)"
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(30);
        let date = soon
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let wait = parse_retry_after(&date).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 +0000"),
            Some(Duration::ZERO)
        );
        // The IMF-fixdate servers send.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }
}
