//! What the command prints on failure and the exit code it returns.

use g2p_config::ConfigError;
use g2p_encryption::{Error, ErrorKind, ProviderError};
use g2p_kms::KmsError;

/// Exit code: the verification or decryption was refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: usage or configuration error (including malformed input).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the key manager failed or could not be reached: the remote Keymanager, its
/// auth server, or the embedded key store.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code: this machine failed the command: an address already in use, a file that cannot
/// be read or written.
pub const EXIT_SYSTEM: u8 = 4;

/// A failure: one line for stderr and an exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub exit: u8,
    /// One line naming the cause.
    pub message: String,
}

impl Failure {
    /// A usage or configuration error.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            exit: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// A failure of this machine (I/O, an address in use).
    pub fn system(message: impl Into<String>) -> Self {
        Failure {
            exit: EXIT_SYSTEM,
            message: message.into(),
        }
    }

    /// A failure of a kind, with its message.
    pub fn of_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            exit: Failure::exit_code(kind),
            message: message.into(),
        }
    }

    /// The exit code for an error kind.
    pub fn exit_code(kind: ErrorKind) -> u8 {
        match kind {
            ErrorKind::Refused => EXIT_REFUSED,
            ErrorKind::InvalidInput | ErrorKind::Configuration => EXIT_USAGE,
            _ => EXIT_UNAVAILABLE,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::of_kind(e.kind(), e.to_string())
    }
}

impl From<KmsError> for Failure {
    fn from(e: KmsError) -> Self {
        let message = match &e {
            // Say what failed, which the generic KER message would not.
            KmsError::Internal(detail) => format!("embedded key store: {detail}"),
            other => other.to_string(),
        };
        Failure::of_kind(e.kind(), message)
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Kms(kms) => kms.into(),
            other => Failure::of_kind(other.kind(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_exit_codes() {
        assert_eq!(Failure::exit_code(ErrorKind::Refused), 1);
        assert_eq!(Failure::exit_code(ErrorKind::InvalidInput), 2);
        assert_eq!(Failure::exit_code(ErrorKind::Configuration), 2);
        for kind in [
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Remote,
            ErrorKind::Auth,
            ErrorKind::InvalidResponse,
            ErrorKind::Internal,
        ] {
            assert_eq!(Failure::exit_code(kind), 3, "{kind}");
        }
        let f = Failure::from(Error::invalid_input("bad base64"));
        assert_eq!(
            (f.exit, f.message.as_str()),
            (2, "invalid input: bad base64")
        );
        // A database failure of the embedded store is the key manager failing, not a usage
        // error; a wrong key-encryption key is a configuration error.
        let f = Failure::from(KmsError::Internal("database: disk I/O error".into()));
        assert_eq!(f.exit, 3);
        assert!(f.message.contains("disk I/O error"), "{}", f.message);
        let f = Failure::from(ConfigError::Kms(KmsError::Config("wrong kek".into())));
        assert_eq!(f.exit, 2);
    }
}
