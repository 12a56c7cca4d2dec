//! The gateway's error answer: `{"error": "<kind>", "description": "..."}` with a status that
//! says whose fault it is.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use g2p_encryption::{Error, ErrorKind};

use crate::api::ErrorBody;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable kind, e.g. `invalid_base64`.
    pub kind: &'static str,
    /// What is wrong, for a person. Never internals or secrets on a 5xx.
    pub description: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, kind: &'static str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            description: description.into(),
        }
    }

    /// 400 with `kind`.
    pub fn bad_request(kind: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, description)
    }

    /// The body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.kind.to_string(),
            description: self.description.clone(),
        }
    }

    /// Maps a provider error. Client faults keep their description (it names the field or
    /// the check); server-side faults are logged in full and answered generically.
    pub fn from_provider(error: &Error, provider: &str) -> Self {
        if let Error::UnknownProvider(name) = error {
            return Self::bad_request(
                "unknown_provider",
                format!("no provider named {name:?} is configured"),
            );
        }
        let kind = error.kind();
        let (status, api_kind, description) = match kind {
            ErrorKind::InvalidInput => {
                (StatusCode::BAD_REQUEST, "invalid_input", error.to_string())
            }
            ErrorKind::Refused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused",
                error.to_string(),
            ),
            ErrorKind::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "kms_timeout",
                "the key manager did not answer in time".to_string(),
            ),
            // An open circuit (the provider's message starts `kms_unavailable:`) fails fast
            // without trying; say so, without the key manager's address.
            ErrorKind::Unavailable if error.to_string().starts_with("kms_unavailable:") => (
                StatusCode::BAD_GATEWAY,
                "kms_unavailable",
                "the key manager failed repeatedly; calls fail fast until a probe after the cool-down finds it back".to_string(),
            ),
            ErrorKind::Unavailable => (
                StatusCode::BAD_GATEWAY,
                "kms_unavailable",
                "the key manager could not be reached".to_string(),
            ),
            ErrorKind::Auth => (
                StatusCode::BAD_GATEWAY,
                "kms_auth",
                "the gateway could not authenticate to the key manager".to_string(),
            ),
            ErrorKind::Remote | ErrorKind::InvalidResponse => (
                StatusCode::BAD_GATEWAY,
                "kms_error",
                "the key manager answered with an error".to_string(),
            ),
            ErrorKind::Configuration => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "configuration",
                "the provider is not configured correctly".to_string(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".to_string(),
            ),
        };
        if status.is_server_error() {
            tracing::error!(provider, kind = %kind, error = %error, "provider failed");
        }
        Self::new(status, api_kind, description)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use g2p_encryption::SignatureError;

    #[test]
    fn statuses_follow_kinds() {
        let e = ApiError::from_provider(&Error::invalid_input("data: bad"), "p");
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::BAD_REQUEST, "invalid_input")
        );
        assert!(e.description.contains("data: bad"));
        let e = ApiError::from_provider(&Error::DecryptionFailed("tag mismatch"), "p");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = ApiError::from_provider(&Error::InvalidSignature(SignatureError::Mismatch), "p");
        assert_eq!(e.kind, "refused");
        let e = ApiError::from_provider(&Error::UnknownProvider("x".into()), "p");
        assert_eq!(
            (e.status, e.kind),
            (StatusCode::BAD_REQUEST, "unknown_provider")
        );
        let e = ApiError::from_provider(&Error::Configuration("secret path /x".into()), "p");
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !e.description.contains("/x"),
            "5xx leaks detail: {}",
            e.description
        );
    }
}
