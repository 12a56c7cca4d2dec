//! `ServiceError`, the KER codes with their messages and meaning (spec 1.4, 1.5), and why a
//! Keymanager answer is not a success.

use g2p_encryption::ErrorKind;
use serde::{Deserialize, Serialize};

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
    /// A failure of the key manager itself.
    Internal,
}

impl KerClass {
    /// The class of a code as it travels on the wire; codes this crate does not know are
    /// [`KerClass::Internal`].
    pub fn of(code: &str) -> Self {
        KerCode::parse(code).map_or(KerClass::Internal, KerCode::class)
    }

    /// What the class means to a caller of a provider. `None` for [`KerClass::Internal`]: a
    /// failure of the key manager itself, which a client reports as the remote side's error
    /// and the embedded key manager as its own internal one.
    pub fn error_kind(self) -> Option<ErrorKind> {
        match self {
            KerClass::Auth => Some(ErrorKind::Auth),
            KerClass::InvalidInput => Some(ErrorKind::InvalidInput),
            KerClass::DecryptionRefused | KerClass::SignatureRefused => Some(ErrorKind::Refused),
            KerClass::Configuration => Some(ErrorKind::Configuration),
            KerClass::Internal => None,
        }
    }
}

macro_rules! ker_codes {
    ($($variant:ident = $code:literal, $class:ident, $message:literal;)*) => {
        /// The KER codes of the endpoints in scope, each with the Keymanager's message and
        /// what it means (spec 1.5).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum KerCode {
            $(
                #[doc = concat!("`", $code, "`: ", $message)]
                $variant,
            )*
        }

        impl KerCode {
            /// Every code.
            pub const ALL: &'static [KerCode] = &[$(KerCode::$variant,)*];

            /// The code as written on the wire, e.g. `KER-FSE-004`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(KerCode::$variant => $code,)*
                }
            }

            /// The Keymanager's message for the code.
            pub const fn message(self) -> &'static str {
                match self {
                    $(KerCode::$variant => $message,)*
                }
            }

            /// What the code means for a caller.
            pub const fn class(self) -> KerClass {
                match self {
                    $(KerCode::$variant => KerClass::$class,)*
                }
            }
        }
    };
}

ker_codes! {
    Ath401 = "KER-ATH-401", Auth, "Authentication Failed";
    Ath403 = "KER-ATH-403", Auth, "Forbidden";
    Cry002 = "KER-CRY-002", Internal, "public key is invalid";
    Cry003 = "KER-CRY-003", InvalidInput, "data sent to decrypt is without key splitter or invalid";
    Cry011 = "KER-CRY-011", Configuration, "Not Allowed to preform encryption with Master Key. Use Base/Encrypt key to encrypt data.";
    Cry012 = "KER-CRY-012", Configuration, "Not Allowed to preform decryption for the provided application id and with authentication token";
    Fse002 = "KER-FSE-002", DecryptionRefused, "check input data length";
    Fse004 = "KER-FSE-004", DecryptionRefused, "encrypted data is corrupted";
    Fse005 = "KER-FSE-005", DecryptionRefused, "ecrypted data size is not valid";
    Fse006 = "KER-FSE-006", InvalidInput, "data is null or length is 0";
    Jws103 = "KER-JWS-103", InvalidInput, "Data to sign is not valid JSON.";
    Jws104 = "KER-JWS-104", Internal, "Error - Unable to sign the data.";
    Jws105 = "KER-JWS-105", SignatureRefused, "Error - Unable to verify the data.";
    Jws106 = "KER-JWS-106", InvalidInput, "Signature data to verify not valid.";
    Jws107 = "KER-JWS-107", SignatureRefused, "Signature verification certificate not valid.";
    Jws108 = "KER-JWS-108", Configuration, "Signing data not allowed for the authenticated token.";
    Kma005 = "KER-KMA-005", Configuration, "Error occured while processing exception:";
    Kms002 = "KER-KMS-002", Configuration, "ApplicationId not found in Key Policy. Key/CSR generation not allowed.";
    Kms003 = "KER-KMS-003", Configuration, "No unique alias is found";
    Kms005 = "KER-KMS-005", InvalidInput, "Invalid request";
    Kms009 = "KER-KMS-009", InvalidInput, "Invalid Response Object Type.";
    Kms010 = "KER-KMS-010", Configuration, "Reference Id Not Supported for the Application ID.";
    Kms011 = "KER-KMS-011", Configuration, "Root Key not available to sign.";
    Kms012 = "KER-KMS-012", Configuration, "Key Generation Process is not completed.";
    Kms013 = "KER-KMS-013", Configuration, "Certificate Parsing Error.";
    Kms016 = "KER-KMS-016", Configuration, "Not allowed to generate new key pair for other domains or not allowed to generate base key.";
    Kms017 = "KER-KMS-017", Configuration, "Certificate Not found in keystore table.";
    Kms018 = "KER-KMS-018", DecryptionRefused, "Not Allowed to perform decryption with other domain key.";
    Kms019 = "KER-KMS-019", DecryptionRefused, "Not able to decrypt Symmetric Key using the Private Key.";
    Kms020 = "KER-KMS-020", Configuration, "Signing operation not allowed for the provided application id & reference id.";
    Kms021 = "KER-KMS-021", Configuration, "Key Revocation not allowed.";
    Kms023 = "KER-KMS-023", DecryptionRefused, "More than one key alias found for the provided thumbprint.";
    Kms024 = "KER-KMS-024", DecryptionRefused, "Application Id & Reference Id not matching with the input thumbprint.";
    Kms025 = "KER-KMS-025", DecryptionRefused, "Key Not found for the thumbprint prepended in encrypted data.";
    Kms026 = "KER-KMS-026", Configuration, "Key Generation Not allowed for the input application id.";
    Kms500 = "KER-KMS-500", Internal, "Internal server error";
}

impl KerCode {
    /// The code written as `text`, if this crate knows it.
    pub fn parse(text: &str) -> Option<Self> {
        KerCode::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for KerCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message of `KER-CRY-003` when a binary value is not base64 (the leading space is the
/// Keymanager's).
pub const NOT_BASE64_MESSAGE: &str = " input data is not base64 encoded";

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
    pub fn new(code: KerCode, message: impl Into<String>) -> Self {
        ServiceError {
            error_code: code.as_str().to_string(),
            message: message.into(),
        }
    }

    /// The code, if this crate knows it.
    pub fn code(&self) -> Option<KerCode> {
        KerCode::parse(&self.error_code)
    }

    /// What kind of failure the code denotes.
    pub fn class(&self) -> KerClass {
        KerClass::of(&self.error_code)
    }
}

impl From<KerCode> for ServiceError {
    fn from(code: KerCode) -> Self {
        ServiceError::new(code, code.message())
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
        assert_eq!(KerClass::of("KER-FSE-004"), KerClass::DecryptionRefused);
        assert_eq!(KerClass::of("KER-KMS-005"), KerClass::InvalidInput);
        assert_eq!(KerClass::of("KER-CRY-011"), KerClass::Configuration);
        assert_eq!(KerClass::of("KER-ATH-401"), KerClass::Auth);
        assert_eq!(KerClass::of("KER-XYZ-999"), KerClass::Internal);
        assert_eq!(KerClass::of("KER-JWS-107"), KerClass::SignatureRefused);
        assert_eq!(
            KerClass::DecryptionRefused.error_kind(),
            Some(ErrorKind::Refused)
        );
        assert_eq!(KerClass::Internal.error_kind(), None);
    }

    #[test]
    fn codes_are_distinct_and_round_trip() {
        for code in KerCode::ALL {
            assert_eq!(KerCode::parse(code.as_str()), Some(*code));
            assert!(code.as_str().starts_with("KER-"), "{code}");
            assert!(!code.message().is_empty(), "{code}");
        }
        let mut names: Vec<_> = KerCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KerCode::ALL.len());
    }

    #[test]
    fn display_names_code_and_message() {
        let e = ServiceError::new(KerCode::Fse004, "Tag mismatch");
        assert_eq!(e.to_string(), "KER-FSE-004: Tag mismatch");
        assert_eq!(e.code(), Some(KerCode::Fse004));
        assert_eq!(
            ServiceError::from(KerCode::Kms025).to_string(),
            "KER-KMS-025: Key Not found for the thumbprint prepended in encrypted data."
        );
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
