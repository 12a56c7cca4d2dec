//! One error type for every provider.

use std::fmt;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is: used by callers (the CLI's exit codes, the gateway's
/// HTTP statuses) to react without reading error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input is malformed (bad base64, not a JWS, not JSON, ...).
    InvalidInput,
    /// A ciphertext or a signature was refused: it does not decrypt or does not verify.
    Refused,
    /// The provider is not configured correctly (unknown application, missing setting, ...).
    Configuration,
    /// The key manager or the auth server could not be reached.
    Unavailable,
    /// The key manager or the auth server did not answer in time.
    Timeout,
    /// The key manager answered with an error of its own.
    Remote,
    /// The auth server refused the client's credentials.
    Auth,
    /// The key manager answered something this client cannot read.
    InvalidResponse,
    /// A bug or an unexpected state on our side.
    Internal,
}

impl ErrorKind {
    /// A short stable name, e.g. `invalid_input`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Refused => "refused",
            ErrorKind::Configuration => "configuration",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Remote => "remote",
            ErrorKind::Auth => "auth",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error raised by a particular provider, with its own detail, classified by kind.
pub trait ProviderError: std::error::Error + Send + Sync + 'static {
    /// The kind of failure.
    fn kind(&self) -> ErrorKind;
}

/// Why a signature was not accepted. Says *that* verification failed and which check
/// refused it, never anything about key material.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature does not match the signing input under the selected key.
    Mismatch,
    /// The header names a key id that is not among the trusted keys.
    UnknownKey(String),
    /// The header carries a certificate (`x5c`) or a hash (`x5t#S256`) that is not one of the
    /// trusted certificates.
    UntrustedCertificate,
    /// No trusted key fits the token (no `kid`, no certificate, no signing key).
    NoKey,
    /// The certificate of the key that fits is not valid now (expired, or not yet valid).
    OutsideValidity,
    /// The `alg` is not RS256 or PS256.
    UnsupportedAlgorithm(String),
    /// A detached JWS was given without its payload.
    MissingPayload,
    /// The remote verifier answered that the signature is not valid.
    RemoteVerdict(String),
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureError::Mismatch => f.write_str("signature does not match"),
            SignatureError::UnknownKey(kid) => write!(f, "unknown key id {kid:?}"),
            SignatureError::UntrustedCertificate => {
                f.write_str("certificate in the header is not one of the key manager's")
            }
            SignatureError::NoKey => f.write_str("no trusted key matches the token"),
            SignatureError::OutsideValidity => {
                f.write_str("the signing key's certificate is not valid now")
            }
            SignatureError::UnsupportedAlgorithm(alg) => {
                write!(
                    f,
                    "algorithm {alg:?} is not accepted (RS256 and PS256 only)"
                )
            }
            SignatureError::MissingPayload => f.write_str("detached JWS given without its payload"),
            SignatureError::RemoteVerdict(message) => {
                write!(f, "key manager says: {message}")
            }
        }
    }
}

/// The error of every [`crate::EncryptionProvider`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed input: the message names the field and what is wrong with it.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The signature was not accepted.
    #[error("invalid signature: {0}")]
    InvalidSignature(SignatureError),
    /// The ciphertext was refused (wrong key, wrong salt/aad, or tampered). Deliberately says
    /// no more, to give no oracle.
    #[error("decryption failed: {0}")]
    DecryptionFailed(&'static str),
    /// A certificate could not be read.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// Configuration is missing or wrong.
    #[error("configuration error: {0}")]
    Configuration(String),
    /// No provider is registered under this name.
    #[error("unknown provider {0:?}")]
    UnknownProvider(String),
    /// A provider-specific failure (transport, remote error, ...).
    #[error("{0}")]
    Provider(Box<dyn ProviderError>),
    /// A private key could not sign (a failure of the machine's cryptography).
    #[error("signing failed")]
    SigningFailed,
}

impl Error {
    /// The kind of failure, for mapping to exit codes or HTTP statuses.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) | Error::InvalidCertificate(_) => ErrorKind::InvalidInput,
            Error::InvalidSignature(_) | Error::DecryptionFailed(_) => ErrorKind::Refused,
            Error::Configuration(_) | Error::UnknownProvider(_) => ErrorKind::Configuration,
            Error::Provider(inner) => inner.kind(),
            Error::SigningFailed => ErrorKind::Internal,
        }
    }

    /// The one answer for a ciphertext a provider will not open, whatever refused it (the key
    /// unwrap, the tag check, an unknown key): which check failed is not the caller's
    /// business, and telling would make an oracle.
    pub fn ciphertext_refused() -> Self {
        Error::DecryptionFailed(
            "the data does not decrypt with this provider's keys, salt and aad (tampered, sealed for another key manager, or under other settings)",
        )
    }

    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("remote said no")]
    struct Remote;

    impl ProviderError for Remote {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Remote
        }
    }

    #[test]
    fn kinds_follow_variants() {
        assert_eq!(Error::invalid_input("x").kind(), ErrorKind::InvalidInput);
        assert_eq!(
            Error::InvalidSignature(SignatureError::Mismatch).kind(),
            ErrorKind::Refused
        );
        assert_eq!(Error::DecryptionFailed("tag").kind(), ErrorKind::Refused);
        assert_eq!(
            Error::UnknownProvider("x".into()).kind(),
            ErrorKind::Configuration
        );
        let provider = Error::Provider(Box::new(Remote));
        assert_eq!(provider.kind(), ErrorKind::Remote);
        assert_eq!(provider.to_string(), "remote said no");
    }

    #[test]
    fn messages_name_the_problem() {
        let e = Error::InvalidSignature(SignatureError::UnknownKey("k1".into()));
        assert_eq!(e.to_string(), "invalid signature: unknown key id \"k1\"");
        assert_eq!(ErrorKind::InvalidResponse.as_str(), "invalid_response");
    }
}
