//! Errors of the embedded key manager, each with its Keymanager error code.

use g2p_encryption::{ErrorKind, ProviderError};
use g2p_mosip::error::{KerClass, classify};

/// A failure with the KER code the MOSIP Keymanager uses for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// A refusal or validation error with its KER code.
    #[error("{code}: {message}")]
    Ker {
        /// e.g. `KER-KMS-025`.
        code: &'static str,
        /// Human-readable message (the spec's text where it has one).
        message: String,
    },
    /// The store or its configuration cannot be used.
    #[error("key store: {0}")]
    Config(String),
    /// A database or internal failure (KER-KMS-500); details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl KmsError {
    /// A KER error.
    pub fn ker(code: &'static str, message: impl Into<String>) -> Self {
        KmsError::Ker {
            code,
            message: message.into(),
        }
    }

    /// The KER code.
    pub fn code(&self) -> &'static str {
        match self {
            KmsError::Ker { code, .. } => code,
            KmsError::Config(_) | KmsError::Internal(_) => g2p_mosip::error::codes::KMS_500,
        }
    }

    /// The message without the code.
    pub fn message(&self) -> String {
        match self {
            KmsError::Ker { message, .. } => message.clone(),
            KmsError::Config(m) => m.clone(),
            KmsError::Internal(_) => "Internal server error".into(),
        }
    }
}

impl From<rusqlite::Error> for KmsError {
    fn from(e: rusqlite::Error) -> Self {
        KmsError::Internal(format!("database: {e}"))
    }
}

impl ProviderError for KmsError {
    fn kind(&self) -> ErrorKind {
        match self {
            KmsError::Ker { code, .. } => match classify(code) {
                KerClass::InvalidInput => ErrorKind::InvalidInput,
                KerClass::DecryptionRefused | KerClass::SignatureRefused => ErrorKind::Refused,
                KerClass::Configuration => ErrorKind::Configuration,
                KerClass::Auth => ErrorKind::Auth,
                _ => ErrorKind::Internal,
            },
            KmsError::Config(_) => ErrorKind::Configuration,
            KmsError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<KmsError> for g2p_encryption::Error {
    fn from(e: KmsError) -> Self {
        g2p_encryption::Error::Provider(Box::new(e))
    }
}
