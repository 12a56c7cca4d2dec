//! Errors of the embedded key manager, each with its Keymanager error code.

use g2p_encryption::{ErrorKind, ProviderError};
use g2p_mosip::cipher::CipherError;
use g2p_mosip::{KerCode, ServiceError};

/// A failure with the KER code the MOSIP Keymanager uses for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// A refusal or validation error with its KER code.
    #[error("{code}: {message}")]
    Ker {
        /// The code, e.g. `KER-KMS-025`.
        code: KerCode,
        /// Human-readable message (the spec's text where it has one).
        message: String,
    },
    /// The store or its configuration cannot be used.
    #[error("key store: {0}")]
    Config(String),
    /// A database or internal failure (KER-KMS-500); details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// The key store's database does not answer (KER-KMS-500, HTTP 503): worth retrying.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}

impl KmsError {
    /// A KER error with the Keymanager's message for the code.
    pub fn ker(code: KerCode) -> Self {
        Self::ker_with(code, code.message())
    }

    /// A KER error with its own message.
    pub fn ker_with(code: KerCode, message: impl Into<String>) -> Self {
        KmsError::Ker {
            code,
            message: message.into(),
        }
    }

    /// `KER-KMS-005`, the code of every validation error, with a message naming the member.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::ker_with(KerCode::Kms005, message)
    }

    /// The KER code.
    pub fn code(&self) -> KerCode {
        match self {
            KmsError::Ker { code, .. } => *code,
            KmsError::Config(_) | KmsError::Internal(_) | KmsError::Unavailable(_) => {
                KerCode::Kms500
            }
        }
    }

    /// The message without the code.
    pub fn message(&self) -> String {
        match self {
            KmsError::Ker { message, .. } => message.clone(),
            KmsError::Config(m) => m.clone(),
            KmsError::Internal(_) => KerCode::Kms500.message().into(),
            // The cause (host, driver message) goes to the log, not to the client.
            KmsError::Unavailable(_) => {
                "the key store is unavailable (its database does not answer); try again later"
                    .into()
            }
        }
    }

    /// The error as it goes into a response's `errors`.
    pub fn to_service_error(&self) -> ServiceError {
        ServiceError::new(self.code(), self.message())
    }
}

impl From<CipherError> for KmsError {
    fn from(e: CipherError) -> Self {
        Self::from(e.to_service_error())
    }
}

impl From<ServiceError> for KmsError {
    fn from(e: ServiceError) -> Self {
        match e.code() {
            Some(code) => KmsError::ker_with(code, e.message),
            None => KmsError::Internal(e.to_string()),
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
            KmsError::Ker { code, .. } => code.class().error_kind().unwrap_or(ErrorKind::Internal),
            KmsError::Config(_) => ErrorKind::Configuration,
            KmsError::Internal(_) => ErrorKind::Internal,
            KmsError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<KmsError> for g2p_encryption::Error {
    fn from(e: KmsError) -> Self {
        g2p_encryption::Error::Provider(Box::new(e))
    }
}
