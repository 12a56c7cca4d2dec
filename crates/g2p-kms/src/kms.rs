//! The key manager's operations, shared by [`crate::LocalProvider`] and the server: the
//! spec's encrypt (4), decrypt (4.4, 4.5), jwtSign (5.1) and jwtVerify (5.3, made strict).

use std::path::Path;
use std::sync::Arc;

use g2p_encryption::cert::CertificateInfo;
use g2p_encryption::{Alg, Error, Jwk, JwkSet, JwsHeader, KeyUse, UnverifiedJws, b64, jws};
use g2p_mosip::KerCode;
use g2p_mosip::cipher::{self, CipherParams, Sealer};
use time::OffsetDateTime;

use crate::error::KmsError;
use crate::kek::Kek;
use crate::store::{Backend, KeyKind, KeyRecord, KeyStore, Minting, StoreOptions};

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
    pub algorithm: Alg,
    /// `false`: RFC 7797 unencoded payload (`b64: false`).
    pub b64: bool,
}

/// The key manager: a key store and the operations over it.
#[derive(Debug)]
pub struct Kms {
    store: KeyStore,
    /// Sealers of recently used keys, by alias (public-key material only).
    sealers: moka::sync::Cache<String, Arc<Sealer>>,
}

/// Most sealers kept: one per encryption key in use.
const CACHED_SEALERS: u64 = 256;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Kms {
    /// Opens the store in `dir`.
    ///
    /// # Errors
    /// See [`KeyStore::open`].
    pub fn open(dir: &Path, kek: Kek, options: StoreOptions) -> Result<Self, KmsError> {
        Ok(Self::over(KeyStore::open(dir, kek, options)?))
    }

    /// Opens the store kept in `backend` (a PostgreSQL database shared by replicas, say).
    ///
    /// # Errors
    /// See [`KeyStore::open_with`].
    pub fn open_with(
        backend: Box<dyn Backend>,
        kek: Kek,
        options: StoreOptions,
    ) -> Result<Self, KmsError> {
        Ok(Self::over(KeyStore::open_with(backend, kek, options)?))
    }

    fn over(store: KeyStore) -> Self {
        Kms {
            store,
            sealers: moka::sync::Cache::new(CACHED_SEALERS),
        }
    }

    /// The key store.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// The id of the key a ciphertext names by its thumbprint (`thumbprint:HEX` when the
    /// store has no such key), for audit lines; `None` when it names none. Called on async
    /// workers: a store whose lookups go over the network answers from its cache only
    /// (`thumbprint:HEX` for a key not looked up yet).
    pub fn key_of_ciphertext(&self, ciphertext: &[u8]) -> Option<String> {
        let thumbprint = g2p_mosip::cipher::parse(ciphertext)
            .ok()?
            .thumbprint_hex()?;
        let found = if self.store.backend().remote() {
            self.store.cached_record_by_thumbprint(&thumbprint)
        } else {
            self.store.record_by_thumbprint(&thumbprint).ok().flatten()
        };
        Some(found.map_or_else(|| format!("thumbprint:{thumbprint}"), |r| r.key_id))
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
            return Err(KmsError::ker(KerCode::Cry011));
        }
        if plaintext.is_empty() {
            return Err(KmsError::ker(KerCode::Fse006));
        }
        let key = self
            .store
            .current_key(application_id, reference_id, now())?;
        let sealer = match self.sealers.get(&key.record.alias) {
            Some(sealer) => sealer,
            None => {
                let sealer = Arc::new(Sealer::new(&key.record.certificate)?);
                self.sealers
                    .insert(key.record.alias.clone(), sealer.clone());
                sealer
            }
        };
        Ok(sealer.seal(params, plaintext)?)
    }

    /// [`Kms::encrypt`] when the current key of `(app, ref)` and its sealer are already in
    /// memory — no query, no key generation, nothing that blocks — else `None`. Cheap enough
    /// to run on an async worker.
    pub fn encrypt_if_ready(
        &self,
        application_id: &str,
        reference_id: &str,
        params: &CipherParams,
        plaintext: &[u8],
    ) -> Option<Result<Vec<u8>, KmsError>> {
        if plaintext.is_empty() || reference_id.trim().is_empty() {
            return None;
        }
        let alias = self
            .store
            .cached_current_alias(application_id, reference_id, now())
            .ok()??;
        let sealer = self.sealers.get(&alias)?;
        Some(sealer.seal(params, plaintext).map_err(KmsError::from))
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
        let parsed = cipher::parse(blob)?;
        let Some(thumbprint) = parsed.thumbprint else {
            // Legacy data without a thumbprint: try the pair's keys, newest first.
            let mut last = KmsError::ker(KerCode::Kms025);
            for record in self.store.all(application_id, reference_id)?.iter().rev() {
                let key = self.store.load(record)?;
                match cipher::open(key.decrypting(), params, blob) {
                    Ok(pt) => return Ok(pt),
                    Err(e) => last = e.into(),
                }
            }
            return Err(last);
        };
        let record = self
            .store
            .record_by_thumbprint(&hex::encode_upper(thumbprint))?
            .ok_or_else(|| KmsError::ker(KerCode::Kms025))?;
        if record.application_id != application_id {
            return Err(KmsError::ker(KerCode::Kms024));
        }
        let key = self.store.load(&record)?;
        Ok(cipher::open(key.decrypting(), params, blob)?)
    }

    /// Signs a payload as a compact JWS with the current key of the pair (spec 5.1).
    ///
    /// # Errors
    /// KER-KMS-020 for a pair that may not sign; KER-KMA-005 when the certificate is not
    /// valid now; KER-KMS-005 for an attached unencoded payload that is not text.
    pub fn sign(&self, spec: &SignSpec<'_>) -> Result<String, KmsError> {
        let (app, reference) = if spec.application_id.trim().is_empty() {
            ("KERNEL", "SIGN")
        } else {
            (spec.application_id, spec.reference_id)
        };
        if !matches!(KeyKind::of(app, reference), KeyKind::Master | KeyKind::Sign) {
            return Err(KmsError::ker(KerCode::Kms020));
        }
        let at = now();
        let key = self.store.current_key(app, reference, at)?;
        let cert = &key.record.certificate;
        if at < cert.not_before() || at > cert.not_after() {
            return Err(KmsError::ker_with(
                KerCode::Kma005,
                "Error occured while processing exception: signing certificate is not valid now",
            ));
        }
        let header = JwsHeader {
            alg: spec.algorithm,
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
        jws::sign(key.signing(), &header, spec.payload, !spec.include_payload).map_err(
            |e| match e {
                Error::InvalidInput(message) => KmsError::invalid(message),
                _ => KmsError::ker(KerCode::Jws104),
            },
        )
    }

    /// Verifies a compact JWS (spec 5.3), strictly and within the requested pair (blank
    /// application: `KERNEL`/`SIGN`): a certificate (`x5c`), certificate hash (`x5t#S256`) or
    /// key id (`kid`) in the header counts only if it is one of the pair's keys, current or
    /// older (a partner certificate uploaded under the pair included); without any, the given
    /// PEM, else the pair's current key. Returns whether the signature is valid.
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
        let parsed = match parse_for_verification(token, actual_data)? {
            Some(parsed) => parsed,
            None => return Ok(false),
        };
        let pair = if application_id.trim().is_empty() {
            ("KERNEL", "SIGN")
        } else {
            (application_id, reference_id)
        };
        let Some(certificate) = self.verification_certificate(&parsed, pair, certificate_pem)?
        else {
            return Ok(false);
        };
        let at = now();
        if at < certificate.not_before() || at > certificate.not_after() {
            return Err(KmsError::ker(KerCode::Jws107));
        }
        let set = JwkSet {
            keys: vec![Jwk::from_certificate(
                &certificate,
                parsed.header().kid.clone(),
                KeyUse::Sig,
            )],
        };
        match parsed.verify(&set) {
            Ok(_) => Ok(true),
            Err(Error::InvalidSignature(_)) => Ok(false),
            Err(e) => Err(KmsError::ker_with(
                KerCode::Jws105,
                format!("{} ({e})", KerCode::Jws105.message()),
            )),
        }
    }

    /// The certificate a token is checked against: the pair's key its `x5c`, `x5t#S256` or
    /// `kid` names, else the given PEM, else the pair's current one. `None` when the header
    /// names a key that is not one of the pair's.
    fn verification_certificate(
        &self,
        parsed: &UnverifiedJws,
        (app, reference): (&str, &str),
        certificate_pem: Option<&str>,
    ) -> Result<Option<CertificateInfo>, KmsError> {
        let h = parsed.header();
        let named = h.x5c.is_some() || h.x5t_s256.is_some() || h.kid.is_some();
        if named {
            let keys = self.store.all(app, reference)?;
            return Ok(keys
                .into_iter()
                .find(|record| names_record(h, record))
                .map(|record| record.certificate));
        }
        if let Some(pem) = certificate_pem.filter(|p| !p.trim().is_empty()) {
            return CertificateInfo::from_pem(pem).map(Some).map_err(|e| {
                KmsError::ker_with(
                    KerCode::Kms013,
                    format!("{} ({e})", KerCode::Kms013.message()),
                )
            });
        }
        Ok(Some(
            self.store
                .current_key(app, reference, now())?
                .record
                .certificate
                .clone(),
        ))
    }

    /// Lets crypto calls make keys for `(app, ref)` (see [`crate::store::Minting`]).
    pub fn declare(&self, application_id: &str, reference_id: &str) {
        self.store.declare(application_id, reference_id);
    }

    /// The current certificate of `(app, ref)` for a crypto call (`getCertificate`), the key
    /// made when none is current and the pair may have one (see [`crate::store::Minting`]).
    ///
    /// # Errors
    /// KER-KMS-026 for an undeclared pair; key policy errors.
    pub fn certificate(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<KeyRecord, KmsError> {
        self.certificate_for(application_id, reference_id, Minting::OnUse)
    }

    /// The current certificate of `(app, ref)`, made when none is current as `minting`
    /// allows (the administrator's `generateMasterKey` makes any pair's).
    ///
    /// # Errors
    /// As [`Kms::certificate`].
    pub fn certificate_for(
        &self,
        application_id: &str,
        reference_id: &str,
        minting: Minting,
    ) -> Result<KeyRecord, KmsError> {
        Ok(self
            .store
            .current_key_for(application_id, reference_id, now(), minting)?
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

/// Parses a token for `/jwtVerify`, putting `actual_data` (b64u) in place of a detached
/// payload. `None` for a token whose algorithm is refused: not valid, rather than malformed.
///
/// # Errors
/// KER-JWS-106 for a token that is not a compact JWS, KER-JWS-105 for a detached token
/// without `actualData`.
fn parse_for_verification(
    token: &str,
    actual_data: Option<&str>,
) -> Result<Option<UnverifiedJws>, KmsError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, middle, signature] = parts.as_slice() else {
        return Err(KmsError::ker(KerCode::Jws106));
    };
    let middle = actual_data
        .filter(|a| !a.trim().is_empty())
        .unwrap_or(middle);
    let parsed = match UnverifiedJws::parse(&format!("{header}.{middle}.{signature}")) {
        Ok(parsed) => parsed,
        Err(Error::InvalidSignature(_)) => return Ok(None),
        Err(_) => return Err(KmsError::ker(KerCode::Jws106)),
    };
    if parsed.is_detached() {
        return Err(KmsError::ker_with(
            KerCode::Jws105,
            format!(
                "{} (detached JWS without actualData)",
                KerCode::Jws105.message()
            ),
        ));
    }
    Ok(Some(parsed))
}

/// Whether the header's key reference points at `record`: its certificate (`x5c`) if it
/// carries one, else its certificate hash (`x5t#S256`), else its key id (`kid`).
fn names_record(header: &JwsHeader, record: &KeyRecord) -> bool {
    let certificate = &record.certificate;
    if let Some(chain) = &header.x5c {
        return chain
            .first()
            .and_then(|c| b64::decode_lenient(c).ok())
            .is_some_and(|der| der == certificate.der());
    }
    if let Some(hash) = &header.x5t_s256 {
        return b64::decode_b64u(hash).is_ok_and(|bytes| bytes == certificate.sha256());
    }
    header.kid.as_ref().is_some_and(|kid| *kid == record.key_id)
}
