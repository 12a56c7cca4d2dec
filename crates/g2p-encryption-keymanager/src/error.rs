//! Typed errors of the Keymanager provider.

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
    #[error("{url} did not answer within {seconds} s")]
    Timeout {
        /// Endpoint URL.
        url: String,
        /// The timeout.
        seconds: u64,
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
            KeymanagerError::HttpStatus { .. } => ErrorKind::Remote,
            KeymanagerError::Keymanager { code, .. } => {
                KerClass::of(code).error_kind().unwrap_or(ErrorKind::Remote)
            }
            KeymanagerError::Auth { .. } => ErrorKind::Auth,
            KeymanagerError::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            KeymanagerError::Configuration(_) => ErrorKind::Configuration,
        }
    }
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
            seconds: timeout.as_secs(),
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
        };
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
            seconds: 3,
        }
        .into();
        assert_eq!(wrapped.kind(), ErrorKind::Timeout);
    }
}
