//! What the command prints on failure and the exit code it returns.

use g2p_encryption::{Error, ErrorKind};

/// Exit code: the verification or decryption was refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: usage or configuration error (including malformed input).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the key manager or the auth server could not be reached or answered an error.
pub const EXIT_UNAVAILABLE: u8 = 3;

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
        Failure {
            exit: Failure::exit_code(e.kind()),
            message: e.to_string(),
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
        ] {
            assert_eq!(Failure::exit_code(kind), 3, "{kind}");
        }
        let f = Failure::from(Error::invalid_input("bad base64"));
        assert_eq!(
            (f.exit, f.message.as_str()),
            (2, "invalid input: bad base64")
        );
    }
}
