//! The key manager's operations, shared by [`crate::LocalProvider`] and the server: the
//! spec's encrypt (4), decrypt (4.4, 4.5), jwtSign (5.1) and jwtVerify (5.3, made strict).

use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RSA_PSS_SHA256};
use g2p_encryption::cert::CertificateInfo;
use g2p_encryption::{Jwk, JwkSet, JwsHeader, KeyUse, UnverifiedJws, b64};
use g2p_mosip::cipher::{self, CipherError, CipherParams, Sealer};
use g2p_mosip::error::codes;
use time::OffsetDateTime;

use crate::error::KmsError;
use crate::kek::Kek;
use crate::store::{KeyKind, KeyRecord, KeyStore, StoreOptions, hex_upper};

/// JWS signature algorithms the key manager signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PSS with SHA-256.
    Ps256,
}

/// What to sign and how.
#[derive(Debug, Clone)]
pub struct SignSpec<'a> {
    /// Signing key application (`""` → `KERNEL`).
    pub application_id: &'a str,
    /// Signing key reference (`""` → master key; `SIGN` only with `KERNEL`).
    pub reference_id: &'a str,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// Attached (`true`) or detached.
    pub include_payload: bool,
    /// Add `x5c`.
    pub include_certificate: bool,
    /// Add `x5t#S256`.
    pub include_cert_hash: bool,
    /// Add `x5u`.
    pub certificate_url: Option<&'a str>,
    /// Algorithm.
    pub algorithm: SignAlgorithm,
    /// `false`: RFC 7797 unencoded payload (`b64: false`).
    pub b64: bool,
}

/// The key manager: a key store and the operations over it.
#[derive(Debug)]
pub struct Kms {
    store: KeyStore,
    sealers: std::sync::Mutex<std::collections::HashMap<String, Arc<Sealer>>>,
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn cipher_error(e: &CipherError) -> KmsError {
    let message = match e {
        CipherError::TagMismatch => "Tag mismatch".to_string(),
        CipherError::UnwrapFailed => {
            "Not able to decrypt Symmetric Key using the Private Key.".to_string()
        }
        CipherError::NoSplitter | CipherError::EmptyKeyPart => {
            "data sent to decrypt is without key splitter or invalid".to_string()
        }
        other => other.to_string(),
    };
    KmsError::ker(e.ker_code(), message)
}

impl Kms {
    /// Opens the store in `dir`.
    ///
    /// # Errors
    /// See [`KeyStore::open`].
    pub fn open(dir: &Path, kek: Kek, options: StoreOptions) -> Result<Self, KmsError> {
        Ok(Kms {
            store: KeyStore::open(dir, kek, options)?,
            sealers: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The key store.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Encrypts with the current base key of `(app, ref)` (spec 3.1, 4).
    ///
    /// # Errors
    /// KER-CRY-011 for master or signing keys, KER-FSE-006 for empty data, key errors.
    pub fn encrypt(
        &self,
        application_id: &str,
        reference_id: &str,
        params: &CipherParams,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        if reference_id.trim().is_empty()
            || (application_id == "KERNEL" && matches!(reference_id, "SIGN" | "IDENTITY_CACHE"))
        {
            return Err(KmsError::ker(
                codes::CRY_011,
                "Not Allowed to preform encryption with Master Key. Use Base/Encrypt key to encrypt data.",
            ));
        }
        if plaintext.is_empty() {
            return Err(KmsError::ker(codes::FSE_006, "data is null or length is 0"));
        }
        let key = self
            .store
            .current_key(application_id, reference_id, now())?;
        let sealer = {
            let mut sealers = self.sealers.lock().unwrap_or_else(|p| p.into_inner());
            match sealers.get(&key.record.alias) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(
                        Sealer::new(&key.record.certificate).map_err(|e| cipher_error(&e))?,
                    );
                    sealers.insert(key.record.alias.clone(), s.clone());
                    s
                }
            }
        };
        sealer.seal(params, plaintext).map_err(|e| cipher_error(&e))
    }

    /// Decrypts: the key is found by the thumbprint in the data and must belong to
    /// `application_id` (spec 3.2, 4.4, 4.5).
    ///
    /// # Errors
    /// KER-CRY-003 (no splitter), KER-KMS-025 (unknown thumbprint), KER-KMS-024 (another
    /// application's key), KER-KMS-019 (unwrap), KER-FSE-004 (tag), KER-FSE-002 (short).
    pub fn decrypt(
        &self,
        application_id: &str,
        reference_id: &str,
        params: &CipherParams,
        blob: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let parsed = cipher::parse(blob).map_err(|e| cipher_error(&e))?;
        let Some(thumbprint) = parsed.thumbprint else {
            // Legacy data without a thumbprint: try the pair's keys, newest first.
            let mut last = KmsError::ker(
                codes::KMS_025,
                "Key Not found for the thumbprint prepended in encrypted data.",
            );
            for record in self.store.all(application_id, reference_id)?.iter().rev() {
                let key = self.store.load(record)?;
                match cipher::open(key.decrypting(), params, blob) {
                    Ok(pt) => return Ok(pt),
                    Err(e) => last = cipher_error(&e),
                }
            }
            return Err(last);
        };
        let record = self
            .store
            .record_by_thumbprint(&hex_upper(thumbprint))?
            .ok_or_else(|| {
                KmsError::ker(
                    codes::KMS_025,
                    "Key Not found for the thumbprint prepended in encrypted data.",
                )
            })?;
        if record.application_id != application_id {
            return Err(KmsError::ker(
                codes::KMS_024,
                "Application Id & Reference Id not matching with the input thumbprint.",
            ));
        }
        let key = self.store.load(&record)?;
        cipher::open(key.decrypting(), params, blob).map_err(|e| cipher_error(&e))
    }

    /// Signs a payload as a compact JWS with the current key of the pair (spec 5.1).
    ///
    /// # Errors
    /// KER-KMS-020 for a pair that may not sign; KER-KMA-005 when the certificate is not
    /// valid now.
    pub fn sign(&self, spec: &SignSpec<'_>) -> Result<String, KmsError> {
        let (app, reference) = if spec.application_id.trim().is_empty() {
            ("KERNEL", "SIGN")
        } else {
            (spec.application_id, spec.reference_id)
        };
        if !matches!(KeyKind::of(app, reference), KeyKind::Master | KeyKind::Sign) {
            return Err(KmsError::ker(
                codes::KMS_020,
                "Signing operation not allowed for the provided application id & reference id.",
            ));
        }
        let at = now();
        let key = self.store.current_key(app, reference, at)?;
        let cert = &key.record.certificate;
        if at < cert.not_before() || at > cert.not_after() {
            return Err(KmsError::ker(
                codes::KMA_005,
                "Error occured while processing exception: signing certificate is not valid now",
            ));
        }
        let header = JwsHeader {
            alg: match spec.algorithm {
                SignAlgorithm::Rs256 => "RS256".into(),
                SignAlgorithm::Ps256 => "PS256".into(),
            },
            x5c: spec
                .include_certificate
                .then(|| vec![b64::encode_b64(cert.der())]),
            x5t_s256: spec
                .include_cert_hash
                .then(|| b64::encode_b64u(&cert.sha256())),
            x5u: spec
                .certificate_url
                .filter(|u| !u.trim().is_empty())
                .map(String::from),
            kid: Some(key.record.key_id.clone()),
            typ: None,
            b64: (!spec.b64).then_some(false),
            crit: (!spec.b64).then(|| vec!["b64".to_string()]),
        };
        let header_b64 = header.encode();
        let payload_segment = if spec.b64 {
            b64::encode_b64u(spec.payload)
        } else {
            String::from_utf8(spec.payload.to_vec()).map_err(|_| {
                KmsError::ker(
                    codes::KMS_005,
                    "an unencoded (b64: false) payload must be UTF-8 text",
                )
            })?
        };
        let input = format!("{header_b64}.{payload_segment}");
        let alg = match spec.algorithm {
            SignAlgorithm::Rs256 => &RSA_PKCS1_SHA256,
            SignAlgorithm::Ps256 => &RSA_PSS_SHA256,
        };
        let mut signature = vec![0u8; key.signing().public_modulus_len()];
        key.signing()
            .sign(alg, &SystemRandom::new(), input.as_bytes(), &mut signature)
            .map_err(|_| KmsError::ker("KER-JWS-104", "Error - Unable to sign the data."))?;
        let sig = b64::encode_b64u(&signature);
        Ok(if spec.include_payload {
            format!("{input}.{sig}")
        } else {
            format!("{header_b64}..{sig}")
        })
    }

    /// Verifies a compact JWS (spec 5.3), strictly: a certificate in the header counts only
    /// if this key manager holds it; otherwise the key named by `kid`; otherwise the given
    /// PEM; otherwise the current key of the pair. Returns whether the signature is valid.
    ///
    /// # Errors
    /// KER-JWS-106 (not a JWS), KER-JWS-107 (certificate outside its validity), KER-KMS-013
    /// (bad PEM), key errors.
    pub fn verify(
        &self,
        token: &str,
        actual_data: Option<&str>,
        application_id: &str,
        reference_id: &str,
        certificate_pem: Option<&str>,
    ) -> Result<bool, KmsError> {
        let invalid = || KmsError::ker(codes::JWS_106, "Signature data to verify not valid.");
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [header, middle, signature] = parts.as_slice() else {
            return Err(invalid());
        };
        let middle = actual_data
            .filter(|a| !a.trim().is_empty())
            .unwrap_or(middle);
        let compact = format!("{header}.{middle}.{signature}");
        let parsed = UnverifiedJws::parse(&compact).map_err(|_| invalid())?;
        if parsed.is_detached() {
            return Err(KmsError::ker(
                codes::JWS_105,
                "Error - Unable to verify the data. (detached JWS without actualData)",
            ));
        }
        let h = parsed.header();
        let certificate: CertificateInfo = if let Some(chain) = &h.x5c {
            let Some(der) = chain.first().and_then(|c| b64::decode_lenient(c).ok()) else {
                return Ok(false);
            };
            let thumbprint =
                hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref());
            match self.store.record_by_thumbprint(&thumbprint)? {
                Some(record) => record.certificate,
                None => return Ok(false),
            }
        } else if let Some(hash) = &h.x5t_s256 {
            let Ok(bytes) = b64::decode_b64u(hash) else {
                return Ok(false);
            };
            match self.store.record_by_thumbprint(&hex_upper(&bytes))? {
                Some(record) => record.certificate,
                None => return Ok(false),
            }
        } else if let Some(kid) = &h.kid {
            match self.store.record_by_key_id(kid)? {
                Some(record) => record.certificate,
                None => return Ok(false),
            }
        } else if let Some(pem) = certificate_pem.filter(|p| !p.trim().is_empty()) {
            CertificateInfo::from_pem(pem).map_err(|e| {
                KmsError::ker(codes::KMS_013, format!("Certificate Parsing Error. ({e})"))
            })?
        } else {
            let (app, reference) = if application_id.trim().is_empty() {
                ("KERNEL", "SIGN")
            } else {
                (application_id, reference_id)
            };
            self.store
                .current_key(app, reference, now())?
                .record
                .certificate
                .clone()
        };
        let at = now();
        if at < certificate.not_before() || at > certificate.not_after() {
            return Err(KmsError::ker(
                "KER-JWS-107",
                "Signature verification certificate not valid.",
            ));
        }
        let set = JwkSet {
            keys: vec![Jwk::from_certificate(
                &certificate,
                h.kid.clone(),
                KeyUse::Sig,
            )],
        };
        match parsed.verify(&set) {
            Ok(_) => Ok(true),
            Err(g2p_encryption::Error::InvalidSignature(_)) => Ok(false),
            Err(e) => Err(KmsError::ker(
                codes::JWS_105,
                format!("Error - Unable to verify the data. ({e})"),
            )),
        }
    }

    /// The current certificate of `(app, ref)`, generating the key when none is current.
    ///
    /// # Errors
    /// Key policy errors.
    pub fn certificate(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<KeyRecord, KmsError> {
        Ok(self
            .store
            .current_key(application_id, reference_id, now())?
            .record
            .clone())
    }

    /// Every certificate of `(app, ref)`, oldest first; `[]` for an unknown pair.
    ///
    /// # Errors
    /// Database errors.
    pub fn all_certificates(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<Vec<KeyRecord>, KmsError> {
        self.store.all(application_id, reference_id)
    }
}
