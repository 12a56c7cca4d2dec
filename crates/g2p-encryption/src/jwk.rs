//! JSON Web Keys (RFC 7517) built from the key manager's X.509 certificates.

use serde::{Deserialize, Serialize};

use crate::cert::CertificateInfo;
use crate::{Error, b64};

/// What a key is for (`use`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUse {
    /// Encryption (`enc`).
    Enc,
    /// Signature (`sig`).
    Sig,
}

/// One RSA public key with its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// Modulus, b64u.
    pub n: String,
    /// Public exponent, b64u.
    pub e: String,
    /// Key id: the key manager's `keyId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `enc` or `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<KeyUse>,
    /// `RS256` for signing keys, `RSA-OAEP-256` for encryption keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Certificate chain, standard base64 DER (leaf first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x5c: Vec<String>,
    /// b64u SHA-1 of the certificate DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    /// b64u SHA-256 of the certificate DER.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Jwk {
    /// Builds the JWK of a certificate's RSA key.
    pub fn from_certificate(cert: &CertificateInfo, kid: Option<String>, key_use: KeyUse) -> Self {
        let alg = match key_use {
            KeyUse::Sig => "RS256",
            KeyUse::Enc => "RSA-OAEP-256",
        };
        Jwk {
            kty: "RSA".into(),
            n: b64::encode_b64u(cert.modulus()),
            e: b64::encode_b64u(cert.exponent()),
            kid,
            key_use: Some(key_use),
            alg: Some(alg.into()),
            x5c: vec![b64::encode_b64(cert.der())],
            x5t: Some(b64::encode_b64u(&cert.sha1())),
            x5t_s256: Some(b64::encode_b64u(&cert.sha256())),
        }
    }

    /// The DER of the leaf certificate in `x5c`, if any.
    ///
    /// # Errors
    /// [`Error::InvalidCertificate`] when `x5c[0]` is not base64.
    pub fn certificate_der(&self) -> Result<Option<Vec<u8>>, Error> {
        self.x5c
            .first()
            .map(|c| {
                b64::decode_lenient(c).map_err(|e| {
                    Error::InvalidCertificate(format!("x5c of key {:?}: {e}", self.kid))
                })
            })
            .transpose()
    }

    /// Modulus and exponent as bytes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `n` or `e` is not base64url or the key is not RSA.
    pub fn rsa_components(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        if self.kty != "RSA" {
            return Err(Error::invalid_input(format!(
                "key {:?} is {} not RSA",
                self.kid, self.kty
            )));
        }
        let n = b64::decode_b64u(&self.n)
            .map_err(|e| Error::invalid_input(format!("n of key {:?}: {e}", self.kid)))?;
        let e = b64::decode_b64u(&self.e)
            .map_err(|e| Error::invalid_input(format!("e of key {:?}: {e}", self.kid)))?;
        Ok((n, e))
    }
}

/// A JWK set (`{"keys": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// The key with this `kid`.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// Appends the keys of another set, skipping keys already present (same `kid` and `use`).
    pub fn extend(&mut self, other: JwkSet) {
        for key in other.keys {
            if !self
                .keys
                .iter()
                .any(|k| k.kid == key.kid && k.key_use == key.key_use && k.n == key.n)
            {
                self.keys.push(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_jose_member_names() {
        let jwk = Jwk {
            kty: "RSA".into(),
            n: "AQAB".into(),
            e: "AQAB".into(),
            kid: Some("k".into()),
            key_use: Some(KeyUse::Sig),
            alg: Some("RS256".into()),
            x5c: vec!["AA==".into()],
            x5t: Some("t".into()),
            x5t_s256: Some("s".into()),
        };
        let v = serde_json::to_value(&jwk).unwrap();
        assert_eq!(v["use"], "sig");
        assert_eq!(v["x5t#S256"], "s");
        assert_eq!(v["x5c"][0], "AA==");
        let back: Jwk = serde_json::from_value(v).unwrap();
        assert_eq!(back, jwk);
        let mut set = JwkSet {
            keys: vec![jwk.clone()],
        };
        set.extend(JwkSet { keys: vec![jwk] });
        assert_eq!(set.keys.len(), 1);
        assert!(set.find("k").is_some());
        assert!(set.find("other").is_none());
    }

    #[test]
    fn non_rsa_keys_are_refused() {
        let jwk = Jwk {
            kty: "EC".into(),
            n: String::new(),
            e: String::new(),
            kid: None,
            key_use: None,
            alg: None,
            x5c: vec![],
            x5t: None,
            x5t_s256: None,
        };
        assert!(jwk.rsa_components().is_err());
    }
}
