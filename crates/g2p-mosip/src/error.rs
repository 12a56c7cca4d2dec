//! `ServiceError` and the KER codes (spec 1.4, 1.5).

use serde::{Deserialize, Serialize};

/// One entry of a response's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceError {
    /// e.g. `KER-FSE-004`.
    #[serde(rename = "errorCode")]
    pub error_code: String,
    /// Human text; may be absent (`null`) on the real service.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub message: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl ServiceError {
    /// An error with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ServiceError {
            error_code: code.to_string(),
            message: message.into(),
        }
    }

    /// What kind of failure the code denotes.
    pub fn class(&self) -> KerClass {
        classify(&self.error_code)
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.trim().is_empty() {
            f.write_str(&self.error_code)
        } else {
            write!(f, "{}: {}", self.error_code, self.message.trim())
        }
    }
}

/// KER codes used by the endpoints in scope.
#[allow(missing_docs)]
pub mod codes {
    pub const ATH_401: &str = "KER-ATH-401";
    pub const ATH_403: &str = "KER-ATH-403";
    pub const CRY_002: &str = "KER-CRY-002";
    pub const CRY_003: &str = "KER-CRY-003";
    pub const CRY_011: &str = "KER-CRY-011";
    pub const CRY_012: &str = "KER-CRY-012";
    pub const FSE_002: &str = "KER-FSE-002";
    pub const FSE_004: &str = "KER-FSE-004";
    pub const FSE_005: &str = "KER-FSE-005";
    pub const FSE_006: &str = "KER-FSE-006";
    pub const JWS_103: &str = "KER-JWS-103";
    pub const JWS_105: &str = "KER-JWS-105";
    pub const JWS_106: &str = "KER-JWS-106";
    pub const JWS_107: &str = "KER-JWS-107";
    pub const JWS_108: &str = "KER-JWS-108";
    pub const KMA_005: &str = "KER-KMA-005";
    pub const KMS_002: &str = "KER-KMS-002";
    pub const KMS_003: &str = "KER-KMS-003";
    pub const KMS_005: &str = "KER-KMS-005";
    pub const KMS_009: &str = "KER-KMS-009";
    pub const KMS_010: &str = "KER-KMS-010";
    pub const KMS_011: &str = "KER-KMS-011";
    pub const KMS_012: &str = "KER-KMS-012";
    pub const KMS_013: &str = "KER-KMS-013";
    pub const KMS_016: &str = "KER-KMS-016";
    pub const KMS_018: &str = "KER-KMS-018";
    pub const KMS_019: &str = "KER-KMS-019";
    pub const KMS_020: &str = "KER-KMS-020";
    pub const KMS_021: &str = "KER-KMS-021";
    pub const KMS_023: &str = "KER-KMS-023";
    pub const KMS_024: &str = "KER-KMS-024";
    pub const KMS_025: &str = "KER-KMS-025";
    pub const KMS_500: &str = "KER-KMS-500";
}

/// What a KER code means for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KerClass {
    /// Authentication failed or the role is missing (`KER-ATH-*`).
    Auth,
    /// The request was malformed (`KER-KMS-005`, `KER-CRY-003`, `KER-JWS-103/106`, ...).
    InvalidInput,
    /// The ciphertext was refused: tag mismatch, wrong key, unknown thumbprint, wrong app.
    DecryptionRefused,
    /// The signature material was refused (`KER-JWS-105/107`).
    SignatureRefused,
    /// The key manager is not set up for this request (unknown app, master-key encryption,
    /// no access, missing keys).
    Configuration,
    /// An internal error of the key manager.
    Internal,
}

/// Classifies a KER code.
pub fn classify(code: &str) -> KerClass {
    use codes::*;
    match code {
        ATH_401 | ATH_403 => KerClass::Auth,
        KMS_005 | CRY_003 | JWS_103 | JWS_106 | FSE_006 | KMS_009 => KerClass::InvalidInput,
        FSE_002 | FSE_004 | FSE_005 | KMS_019 | KMS_023 | KMS_024 | KMS_025 | KMS_018 => {
            KerClass::DecryptionRefused
        }
        JWS_105 | JWS_107 => KerClass::SignatureRefused,
        CRY_011 | CRY_012 | JWS_108 | KMS_002 | KMS_003 | KMS_010 | KMS_011 | KMS_012 | KMS_016
        | KMS_020 | KMS_021 | KMA_005 | KMS_013 => KerClass::Configuration,
        _ => KerClass::Internal,
    }
}

/// Why a Keymanager response is not a success (spec 1.4: "success is HTTP 200 && errors
/// null-or-empty && response non-null").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// HTTP 401: no token, or it is invalid or expired. The body may not parse (spec Q4).
    #[error("authentication failed (HTTP 401{})", code_suffix(.0))]
    Unauthorized(Option<ServiceError>),
    /// HTTP 403: the token lacks the role for this endpoint.
    #[error("forbidden (HTTP 403{})", code_suffix(.0))]
    Forbidden(Option<ServiceError>),
    /// HTTP 200 with a non-empty `errors` array: the Keymanager refused the request.
    #[error("{}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Service(Vec<ServiceError>),
    /// Any other HTTP status, with the KER error when the body carries one.
    #[error("HTTP {status}{}", code_suffix(.error))]
    Status {
        /// HTTP status code.
        status: u16,
        /// The first error in the body, if it parsed.
        error: Option<ServiceError>,
    },
    /// HTTP 200 with a body that is not the expected wrapper.
    #[error("invalid response body: {0}")]
    InvalidBody(String),
}

fn code_suffix(error: &Option<ServiceError>) -> String {
    error.as_ref().map(|e| format!(", {e}")).unwrap_or_default()
}

impl EnvelopeError {
    /// The first KER error carried, if any.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            EnvelopeError::Unauthorized(e) | EnvelopeError::Forbidden(e) => e.as_ref(),
            EnvelopeError::Service(errors) => errors.first(),
            EnvelopeError::Status { error, .. } => error.as_ref(),
            EnvelopeError::InvalidBody(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify("KER-FSE-004"), KerClass::DecryptionRefused);
        assert_eq!(classify("KER-KMS-005"), KerClass::InvalidInput);
        assert_eq!(classify("KER-CRY-011"), KerClass::Configuration);
        assert_eq!(classify("KER-ATH-401"), KerClass::Auth);
        assert_eq!(classify("KER-XYZ-999"), KerClass::Internal);
    }

    #[test]
    fn display_names_code_and_message() {
        let e = ServiceError::new("KER-FSE-004", "Tag mismatch");
        assert_eq!(e.to_string(), "KER-FSE-004: Tag mismatch");
        let parsed: ServiceError =
            serde_json::from_str(r#"{"errorCode":"KER-KMS-500","message":null}"#).unwrap();
        assert_eq!(parsed.to_string(), "KER-KMS-500");
        assert_eq!(
            EnvelopeError::Status {
                status: 500,
                error: Some(parsed)
            }
            .to_string(),
            "HTTP 500, KER-KMS-500"
        );
    }
}
