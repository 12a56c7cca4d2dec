//! Compact JWS (RFC 7515) as the MOSIP Keymanager writes it: RS256 (or PS256), attached or
//! detached payload (appendix F), `kid`, `x5c`, `x5t#S256`, `x5u` headers.
//!
//! A token is first parsed into an [`UnverifiedJws`], whose payload can only be read as
//! untrusted; [`UnverifiedJws::verify`] checks it against a [`JwkSet`] and yields a
//! [`VerifiedJws`]. Only RS256 and PS256 are accepted: `none`, HMAC and anything else are
//! refused, whatever the key set holds.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RSA_PSS_2048_8192_SHA256,
    RSA_PSS_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use serde::{Deserialize, Serialize};

use crate::jwk::{JwkSet, KeyUse};
use crate::{Error, SignatureError, b64, cert::CertificateInfo};

/// The signature algorithms this product signs with and accepts: RS256 and PS256. Anything
/// else (`none`, HMAC, ...) is refused when a token is parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[default]
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1-SHA-256, 32-byte salt).
    #[serde(rename = "PS256")]
    Ps256,
}

impl Alg {
    /// The JOSE name, e.g. `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
        }
    }

    /// The algorithm called `name`.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] with [`SignatureError::UnsupportedAlgorithm`].
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "RS256" => Ok(Alg::Rs256),
            "PS256" => Ok(Alg::Ps256),
            other => Err(Error::InvalidSignature(
                SignatureError::UnsupportedAlgorithm(other.to_string()),
            )),
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JOSE header. Members are serialized in the order KM13 writes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JwsHeader {
    /// Signature algorithm.
    pub alg: Alg,
    /// Certificate chain, standard base64 DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// b64u SHA-256 of the signing certificate.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
    /// Certificate URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5u: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// RFC 7797: `false` means the payload is not base64url-encoded in the signing input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64: Option<bool>,
    /// Critical extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<Vec<String>>,
}

impl JwsHeader {
    /// An RS256 header with a key id.
    pub fn rs256(kid: Option<String>) -> Self {
        JwsHeader {
            alg: Alg::Rs256,
            kid,
            ..Default::default()
        }
    }

    /// The header's b64u JSON, the first segment of a token.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and options cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        b64::encode_b64u(&json)
    }

    /// Whether the payload travels unencoded: `b64: false` (RFC 7797), honoured only when
    /// `crit` lists `b64` as the RFC requires; otherwise the payload is base64url as usual.
    fn unencoded_payload(&self) -> bool {
        self.b64 == Some(false)
            && self
                .crit
                .as_ref()
                .is_some_and(|crit| crit.iter().any(|c| c == "b64"))
    }
}

/// The bytes a signature covers: `header_b64 '.' payload`, the payload base64url-encoded
/// unless `unencoded` (RFC 7797), in which case it is taken byte for byte.
fn signing_input(header_b64: &str, payload: &[u8], unencoded: bool) -> Vec<u8> {
    let mut input = Vec::with_capacity(header_b64.len() + 1 + payload.len() * 4 / 3 + 4);
    input.extend_from_slice(header_b64.as_bytes());
    input.push(b'.');
    if unencoded {
        input.extend_from_slice(payload);
    } else {
        input.extend_from_slice(b64::encode_b64u(payload).as_bytes());
    }
    input
}

/// Signs `payload` with `key` as a compact JWS under `header` (its `alg` chooses RS256 or
/// PS256; `b64: false` signs the payload unencoded). A `detached` token leaves the middle
/// segment empty; the verifier supplies the payload.
///
/// # Errors
/// [`Error::InvalidInput`] for an attached unencoded payload that cannot sit in a compact
/// token (not UTF-8, or holding a `.`); [`Error::SigningFailed`] when the key cannot sign.
pub fn sign(
    key: &RsaKeyPair,
    header: &JwsHeader,
    payload: &[u8],
    detached: bool,
) -> Result<String, Error> {
    let unencoded = header.unencoded_payload();
    let attached_segment = match (detached, unencoded) {
        (true, _) => String::new(),
        (false, false) => b64::encode_b64u(payload),
        (false, true) => match std::str::from_utf8(payload) {
            Ok(text) if !text.contains('.') => text.to_string(),
            _ => {
                return Err(Error::invalid_input(
                    "an attached unencoded (b64: false) payload must be UTF-8 text without '.'",
                ));
            }
        },
    };
    let header_b64 = header.encode();
    let input = signing_input(&header_b64, payload, unencoded);
    let alg = match header.alg {
        Alg::Rs256 => &RSA_PKCS1_SHA256,
        Alg::Ps256 => &RSA_PSS_SHA256,
    };
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(alg, &SystemRandom::new(), &input, &mut signature)
        .map_err(|_| Error::SigningFailed)?;
    Ok(format!(
        "{header_b64}.{attached_segment}.{}",
        b64::encode_b64u(&signature)
    ))
}

/// A parsed token whose signature has not been checked.
#[derive(Debug, Clone)]
pub struct UnverifiedJws {
    header: JwsHeader,
    header_b64: String,
    payload: Option<Vec<u8>>,
    signature: Vec<u8>,
}

impl UnverifiedJws {
    /// Parses a compact JWS (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the segment that is malformed.
    pub fn parse(compact: &str) -> Result<Self, Error> {
        let compact = compact.trim();
        let mut parts = compact.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::invalid_input(
                "JWS must have three dot-separated segments",
            ));
        };
        let header_json = b64::decode_b64u(h)
            .map_err(|e| Error::invalid_input(format!("JWS header segment: {e}")))?;
        let header = parse_header(&header_json)?;
        let unencoded = header.unencoded_payload();
        let payload = match (p.is_empty(), unencoded) {
            (true, _) => None,
            (false, true) => Some(p.as_bytes().to_vec()),
            (false, false) => Some(
                b64::decode_b64u(p)
                    .map_err(|e| Error::invalid_input(format!("JWS payload segment: {e}")))?,
            ),
        };
        if s.is_empty() {
            return Err(Error::invalid_input("JWS signature segment is empty"));
        }
        let signature = b64::decode_b64u(s)
            .map_err(|e| Error::invalid_input(format!("JWS signature segment: {e}")))?;
        Ok(UnverifiedJws {
            header,
            header_b64: h.to_string(),
            payload,
            signature,
        })
    }

    /// The (unverified) header.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// Whether the token was sent without its payload.
    pub fn is_detached(&self) -> bool {
        self.payload.is_none()
    }

    /// The payload, **not yet verified**.
    pub fn unverified_payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// Supplies the payload of a detached token. If the token carries a payload of its own,
    /// the two must be equal.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the token carries a different payload.
    pub fn attach_payload(&mut self, payload: &[u8]) -> Result<(), Error> {
        match &self.payload {
            Some(own) if own.as_slice() != payload => Err(Error::invalid_input(
                "a payload was given for a JWS that carries a different one",
            )),
            Some(_) => Ok(()),
            None => {
                self.payload = Some(payload.to_vec());
                Ok(())
            }
        }
    }

    fn signing_input(&self) -> Result<Vec<u8>, SignatureError> {
        let payload = self
            .payload
            .as_ref()
            .ok_or(SignatureError::MissingPayload)?;
        Ok(signing_input(
            &self.header_b64,
            payload,
            self.header.unencoded_payload(),
        ))
    }

    /// Verifies against a key set (see [`VerificationKeys::from_jwks`]).
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] with the check that refused the token.
    pub fn verify(&self, keys: &JwkSet) -> Result<VerifiedJws, Error> {
        self.verify_with(&VerificationKeys::from_jwks(keys)?)
    }

    /// Verifies against prepared keys, pinned to them: a token whose `kid` is unknown, or
    /// whose `x5c` / `x5t#S256` names a certificate outside the set, is refused, and so is one
    /// whose key's certificate is not valid now.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] with the check that refused the token;
    /// [`Error::InvalidInput`] for an unsupported critical header.
    pub fn verify_with(&self, keys: &VerificationKeys) -> Result<VerifiedJws, Error> {
        let alg = self.header.alg;
        self.check_crit()?;
        let input = self.signing_input().map_err(Error::InvalidSignature)?;
        let mut candidates = self.candidates(keys).map_err(Error::InvalidSignature)?;
        // A key counts only while its certificate is valid, as the Keymanager's /jwtVerify
        // has it (KER-JWS-107).
        let now = crate::clock::Clock::system().unix_seconds();
        candidates.retain(|k| k.valid_at(now));
        if candidates.is_empty() {
            return Err(Error::InvalidSignature(SignatureError::OutsideValidity));
        }
        for key in candidates {
            if key.verify(alg, &input, &self.signature) {
                return Ok(VerifiedJws {
                    header: self.header.clone(),
                    payload: self.payload.clone().unwrap_or_default(),
                    key_id: key.kid.clone().or_else(|| self.header.kid.clone()),
                });
            }
        }
        Err(Error::InvalidSignature(SignatureError::Mismatch))
    }

    /// Checks, without verifying the signature, that the keys the header names (`kid`, `x5c`,
    /// `x5t#S256`) are among `keys`: for a token about to be sent to a remote verifier that
    /// would trust a key the header brings along.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] with [`SignatureError::UnknownKey`] or
    /// [`SignatureError::UntrustedCertificate`].
    pub fn check_named_key(&self, keys: &VerificationKeys) -> Result<(), Error> {
        self.candidates(keys)
            .map(|_| ())
            .map_err(Error::InvalidSignature)
    }

    /// Accepts the token on the word of a remote verifier (the Keymanager's `/jwtVerify`).
    /// Only providers that have just received a positive verdict for this exact token should
    /// call this.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] when the token has no payload.
    pub fn accept_remote_verdict(self) -> Result<VerifiedJws, Error> {
        let payload = self
            .payload
            .ok_or(Error::InvalidSignature(SignatureError::MissingPayload))?;
        Ok(VerifiedJws {
            key_id: self.header.kid.clone(),
            header: self.header,
            payload,
        })
    }

    fn check_crit(&self) -> Result<(), Error> {
        match &self.header.crit {
            Some(crit) if crit.iter().any(|c| c != "b64") => Err(Error::invalid_input(format!(
                "unsupported critical JWS header parameters {crit:?}"
            ))),
            _ => Ok(()),
        }
    }

    fn candidates<'k>(
        &self,
        keys: &'k VerificationKeys,
    ) -> Result<Vec<&'k TrustedKey>, SignatureError> {
        let header_cert = match &self.header.x5c {
            Some(chain) => Some(
                chain
                    .first()
                    .and_then(|c| b64::decode_lenient(c).ok())
                    .ok_or(SignatureError::UntrustedCertificate)?,
            ),
            None => None,
        };
        let header_hash = match &self.header.x5t_s256 {
            Some(h) => Some(b64::decode_b64u(h).map_err(|_| SignatureError::UntrustedCertificate)?),
            None => None,
        };
        let mut candidates: Vec<&TrustedKey> = match &self.header.kid {
            Some(kid) => {
                let found: Vec<_> = keys
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if found.is_empty() {
                    return Err(SignatureError::UnknownKey(kid.clone()));
                }
                found
            }
            None => keys.keys.iter().collect(),
        };
        if let Some(der) = &header_cert {
            candidates.retain(|k| k.cert_der.as_deref() == Some(der.as_slice()));
        }
        if let Some(hash) = &header_hash {
            candidates
                .retain(|k| k.cert_sha256.as_ref().map(|h| h.as_slice()) == Some(hash.as_slice()));
        }
        if candidates.is_empty() {
            return Err(if header_cert.is_some() || header_hash.is_some() {
                SignatureError::UntrustedCertificate
            } else {
                SignatureError::NoKey
            });
        }
        Ok(candidates)
    }
}

/// A token whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJws {
    header: JwsHeader,
    payload: Vec<u8>,
    key_id: Option<String>,
}

impl VerifiedJws {
    /// The header.
    pub fn header(&self) -> &JwsHeader {
        &self.header
    }

    /// The verified payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload parsed as JSON.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the payload is not JSON.
    pub fn payload_json(&self) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| Error::invalid_input(format!("verified payload is not JSON: {e}")))
    }

    /// The id of the key that verified it.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// The payload bytes.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

/// Parses a JOSE header; an `alg` other than RS256 or PS256 is a refused signature, not a
/// malformed token.
fn parse_header(json: &[u8]) -> Result<JwsHeader, Error> {
    let malformed = |e: serde_json::Error| {
        Error::invalid_input(format!("JWS header is not a valid JOSE header: {e}"))
    };
    let value: serde_json::Value = serde_json::from_slice(json).map_err(malformed)?;
    if let Some(name) = value.get("alg").and_then(serde_json::Value::as_str) {
        Alg::parse(name)?;
    }
    serde_json::from_value(value).map_err(malformed)
}

/// Signature keys prepared once for many verifications.
#[derive(Debug, Default)]
pub struct VerificationKeys {
    keys: Vec<TrustedKey>,
}

#[derive(Debug)]
struct TrustedKey {
    kid: Option<String>,
    cert_der: Option<Vec<u8>>,
    cert_sha256: Option<[u8; 32]>,
    /// The certificate's notBefore and notAfter (Unix seconds), when the key has one.
    validity: Option<(i64, i64)>,
    rs256: ParsedPublicKey,
    ps256: ParsedPublicKey,
}

impl TrustedKey {
    fn valid_at(&self, now: i64) -> bool {
        self.validity
            .is_none_or(|(not_before, not_after)| not_before <= now && now <= not_after)
    }

    fn verify(&self, alg: Alg, input: &[u8], sig: &[u8]) -> bool {
        let key = match alg {
            Alg::Rs256 => &self.rs256,
            Alg::Ps256 => &self.ps256,
        };
        key.verify_sig(input, sig).is_ok()
    }
}

impl VerificationKeys {
    /// Prepares the signature keys of a set (keys marked `use: enc` are left out).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] / [`Error::InvalidCertificate`] for a key that does not parse.
    pub fn from_jwks(set: &JwkSet) -> Result<Self, Error> {
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in set.keys.iter().filter(|k| k.key_use != Some(KeyUse::Enc)) {
            let (n, e) = jwk.rsa_components()?;
            let cert_der = jwk.certificate_der()?;
            let mut validity = None;
            if let Some(der) = &cert_der {
                let cert = CertificateInfo::from_der(der)?;
                if cert.modulus() != n.as_slice() || cert.exponent() != e.as_slice() {
                    return Err(Error::InvalidCertificate(format!(
                        "x5c of key {:?} does not hold the key's n and e",
                        jwk.kid
                    )));
                }
                validity = Some((cert.not_before(), cert.not_after()));
            }
            let components = RsaPublicKeyComponents { n: &n, e: &e };
            let parse = |alg| {
                components.to_parsed_public_key(alg).map_err(|_| {
                    Error::invalid_input(format!(
                        "key {:?} is not a usable RSA public key",
                        jwk.kid
                    ))
                })
            };
            keys.push(TrustedKey {
                kid: jwk.kid.clone(),
                cert_sha256: cert_der.as_ref().map(|d| sha256(d)),
                cert_der,
                validity,
                rs256: parse(&RSA_PKCS1_2048_8192_SHA256)?,
                ps256: parse(&RSA_PSS_2048_8192_SHA256)?,
            });
        }
        Ok(VerificationKeys { keys })
    }

    /// Whether a key with this id is present.
    pub fn contains_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of signature keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no signature key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref());
    out
}
