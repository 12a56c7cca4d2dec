//! Base64 helpers.
//!
//! Everything we *emit* is base64url without padding (b64u), as the MOSIP Keymanager does.
//! On *input* we accept what the Keymanager accepts (Java's decoders, protocol spec 0.2):
//! the URL-safe alphabet first, then the standard one; padding optional; non-zero trailing
//! bits ignored; but no whitespace, no partial padding (`QQ=`), no lone final character and
//! no mixed alphabets.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// Why a string is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid base64 ({reason})")]
pub struct Base64Error {
    reason: &'static str,
}

/// base64url without padding.
pub fn encode_b64u(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 with padding (used for `x5c`).
pub fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64 the way the MOSIP Keymanager does: URL-safe first, then standard.
///
/// # Errors
/// [`Base64Error`] when neither alphabet decodes the whole string.
pub fn decode_lenient(input: &str) -> Result<Vec<u8>, Base64Error> {
    check_padding(input)?;
    URL_LENIENT
        .decode(input)
        .or_else(|_| STD_LENIENT.decode(input))
        .map_err(|_| Base64Error {
            reason: "characters outside one base64 alphabet, or a bad length",
        })
}

/// Decodes base64url only (padding optional), as KM13 does for `dataToSign` and as JWS
/// segments are written.
///
/// # Errors
/// [`Base64Error`] when the string is not base64url.
pub fn decode_b64u(input: &str) -> Result<Vec<u8>, Base64Error> {
    check_padding(input)?;
    URL_LENIENT.decode(input).map_err(|_| Base64Error {
        reason: "characters outside the base64url alphabet, or a bad length",
    })
}

/// Java rejects partial padding (`QQ=`): padding, when present, must complete a quantum.
fn check_padding(input: &str) -> Result<(), Base64Error> {
    if input.is_empty() {
        return Err(Base64Error { reason: "empty" });
    }
    let pads = input.bytes().rev().take_while(|b| *b == b'=').count();
    if pads > 0 && (pads > 2 || !input.len().is_multiple_of(4)) {
        return Err(Base64Error {
            reason: "incomplete padding",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_url_safe_without_padding() {
        assert_eq!(encode_b64u(&[0xfb, 0xff]), "-_8");
        assert_eq!(encode_b64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn accepts_what_java_accepts() {
        for input in ["-_8", "-_8=", "+/8=", "+/8", "QQ", "QQ==", "QR"] {
            assert!(decode_lenient(input).is_ok(), "{input}");
        }
        // trailing bits are ignored: "QR" decodes like "QQ"
        assert_eq!(decode_lenient("QR").unwrap(), b"A");
        assert_eq!(
            decode_lenient("-_8").unwrap(),
            decode_lenient("+/8=").unwrap()
        );
    }

    #[test]
    fn rejects_what_java_rejects() {
        for input in ["QQ=", "Q", "QQ\n", "Q Q", "-/8", "", "QQ===", "@@@"] {
            assert!(decode_lenient(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn url_only_decoder_refuses_standard_alphabet() {
        assert!(decode_b64u("+/8=").is_err());
        assert_eq!(decode_b64u("-_8").unwrap(), vec![0xfb, 0xff]);
    }
}
