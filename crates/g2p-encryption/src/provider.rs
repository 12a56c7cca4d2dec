//! The provider abstraction.

use async_trait::async_trait;

use crate::Error;
use crate::jwk::JwkSet;
use crate::jws::VerifiedJws;

/// What to sign.
#[derive(Debug, Clone, PartialEq)]
pub enum SignPayload {
    /// A JSON document, signed as its compact serialization.
    Json(serde_json::Value),
    /// A JSON document as written (the caller has checked it is JSON), signed byte for byte,
    /// so that the very same bytes verify a detached signature.
    JsonBytes(Vec<u8>),
    /// UTF-8 text, signed as its bytes.
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl SignPayload {
    /// The bytes that end up in the JWS payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            // Serializing a `Value` to a Vec cannot fail.
            SignPayload::Json(value) => serde_json::to_vec(value).unwrap_or_default(),
            SignPayload::Text(text) => text.as_bytes().to_vec(),
            SignPayload::JsonBytes(bytes) | SignPayload::Bytes(bytes) => bytes.clone(),
        }
    }

    /// Whether the payload is a JSON document.
    pub fn is_json(&self) -> bool {
        matches!(self, SignPayload::Json(_) | SignPayload::JsonBytes(_))
    }
}

/// How to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOptions {
    /// Put the payload in the token (`true`, the default) or leave it detached.
    pub include_payload: bool,
    /// Add the signing certificate as `x5c`.
    pub include_certificate: bool,
    /// Add the certificate's SHA-256 as `x5t#S256`.
    pub include_cert_hash: bool,
    /// Add `x5u` with this URL.
    pub certificate_url: Option<String>,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            include_payload: true,
            include_certificate: false,
            include_cert_hash: false,
            certificate_url: None,
        }
    }
}

/// The keys a provider works with, by MOSIP application and reference id: for audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairs {
    /// `(application, reference)` of the encryption key.
    pub encrypt: (String, String),
    /// `(application, reference)` of the signing key.
    pub sign: (String, String),
}

/// What a provider did to reach its key manager, counted since it was made (`bench` reports
/// it beside its figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// Calls to the key manager's API.
    pub calls: u64,
    /// Attempts that were retries of a failed one.
    pub retries: u64,
    /// Requests to the token endpoint.
    pub token_fetches: u64,
    /// Cached keys served past their time through an outage.
    pub stale_served: u64,
}

/// Encryption, decryption, JWS signing and verification, and key publication, without the
/// caller ever holding a private key.
///
/// Object safe: hold it as `Arc<dyn EncryptionProvider>`. Every method can fail with
/// [`Error`]; [`Error::kind`] tells the caller whether its input was bad, the data was
/// refused, or the backing key manager failed.
#[async_trait]
pub trait EncryptionProvider: Send + Sync + std::fmt::Debug {
    /// A short description of the backend, for logs and health output (e.g. `keymanager`).
    fn kind(&self) -> &'static str;

    /// Encrypts raw bytes; returns the raw ciphertext (MOSIP hybrid format).
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error>;

    /// Decrypts a raw ciphertext produced by [`EncryptionProvider::encrypt`] (or by the
    /// Keymanager with the same application, reference, salt and aad).
    ///
    /// Fails with [`crate::ErrorKind::Refused`] when the ciphertext does not decrypt.
    async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, Error>;

    /// Signs a payload as a compact JWS.
    async fn jwt_sign(&self, payload: &SignPayload, options: &SignOptions)
    -> Result<String, Error>;

    /// Verifies a compact JWS; `detached_payload` supplies the payload of a detached token.
    ///
    /// Fails with [`Error::InvalidSignature`] when the token does not verify.
    async fn jwt_verify(
        &self,
        jws: &str,
        detached_payload: Option<&[u8]>,
    ) -> Result<VerifiedJws, Error>;

    /// The public keys: encryption keys (`use: enc`) and signature keys (`use: sig`).
    async fn jwks(&self) -> Result<JwkSet, Error>;

    /// The key that sealed `ciphertext` — its key id, or `thumbprint:HEX` when only the
    /// thumbprint is known — for audit records; `None` when the ciphertext names none.
    fn ciphertext_key(&self, ciphertext: &[u8]) -> Option<String> {
        let _ = ciphertext;
        None
    }

    /// The application and reference ids of the provider's keys, when it has such ids.
    fn key_pairs(&self) -> Option<KeyPairs> {
        None
    }

    /// Its calls to a remote key manager so far; `None` for a provider that makes none.
    fn call_counts(&self) -> Option<CallCounts> {
        None
    }

    /// Checks that the provider can serve requests now, for readiness probes: the key
    /// manager is reachable and, for a remote one, a token is obtainable. The default asks
    /// for the public keys.
    async fn ready(&self) -> Result<(), Error> {
        self.jwks().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes() {
        let json = SignPayload::Json(serde_json::json!({"a": 1}));
        assert_eq!(json.to_bytes(), br#"{"a":1}"#);
        assert!(json.is_json());
        assert_eq!(SignPayload::Text("é".into()).to_bytes(), "é".as_bytes());
        assert_eq!(SignPayload::Bytes(vec![0, 1]).to_bytes(), vec![0, 1]);
        assert!(SignOptions::default().include_payload);
    }
}
