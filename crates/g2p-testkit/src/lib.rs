//! Test support for g2p-keymanager: RSA keys with certificates, a fake MOSIP Keymanager
//! with a Keycloak-like token endpoint, served on `127.0.0.1:0`, and throwaway PostgreSQL
//! clusters.
//!
//! Everything here is written from the protocol spec independently of `g2p-mosip` and
//! `g2p-encryption` (it depends on neither), so that a test in which our client talks to
//! this fake checks our code against a second reading of the spec, not against itself.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Test support: failing loudly is the right behaviour here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
pub mod cipher;
pub mod fake;
pub mod hostile;
pub mod jose;
pub mod keys;
pub mod postgres;
pub mod softhsm;

pub use fake::{FakeKeymanager, FakeOptions};
pub use keys::TestKey;

/// base64url without padding.
pub fn b64u(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url (padding optional) or standard base64, panicking on anything else.
pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let t = text.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
        .expect("base64")
}
