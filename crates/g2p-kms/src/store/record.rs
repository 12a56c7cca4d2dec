//! Key records: what a key is, its public record as stored, and its unwrapped private half.

use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use aws_lc_rs::signature::RsaKeyPair;
use g2p_encryption::cert::CertificateInfo;

use crate::error::KmsError;

/// What a key is in the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Self-signed root.
    Root,
    /// An application's master key (`referenceId` `""`), signed by ROOT.
    Master,
    /// `KERNEL`/`SIGN`, the platform signing key, signed by the KERNEL master.
    Sign,
    /// A base (encryption) key, signed by the application's master.
    Base,
    /// A partner's certificate, without a private key.
    Partner,
}

impl KeyKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            KeyKind::Root => "root",
            KeyKind::Master => "master",
            KeyKind::Sign => "sign",
            KeyKind::Base => "base",
            KeyKind::Partner => "partner",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self, KmsError> {
        Ok(match s {
            "root" => KeyKind::Root,
            "master" => KeyKind::Master,
            "sign" => KeyKind::Sign,
            "base" => KeyKind::Base,
            "partner" => KeyKind::Partner,
            other => return Err(KmsError::Internal(format!("unknown key kind {other:?}"))),
        })
    }

    /// The kind of key `(app, ref)` names.
    pub fn of(application_id: &str, reference_id: &str) -> Self {
        match (application_id, reference_id) {
            ("ROOT", _) => KeyKind::Root,
            (_, "") => KeyKind::Master,
            ("KERNEL", "SIGN") => KeyKind::Sign,
            _ => KeyKind::Base,
        }
    }
}

/// A key's public record.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Internal alias (random hex).
    pub alias: String,
    /// Application id.
    pub application_id: String,
    /// Reference id (`""` for master keys).
    pub reference_id: String,
    /// The MOSIP keyId (spec 6.5), also the JWS `kid`.
    pub key_id: String,
    /// Upper-hex SHA-256 of the certificate.
    pub thumbprint: String,
    /// The certificate.
    pub certificate: CertificateInfo,
    /// Generation time, unix seconds.
    pub generated_at: i64,
    /// Expiry time, unix seconds.
    pub expires_at: i64,
    /// Place in the hierarchy.
    pub kind: KeyKind,
}

/// A key with its private half unwrapped, ready for RSA operations.
pub struct LoadedKey {
    /// The public record.
    pub record: KeyRecord,
    decrypting: OaepPrivateDecryptingKey,
    signing: RsaKeyPair,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("key_id", &self.record.key_id)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    /// RSA-OAEP decryption key.
    pub fn decrypting(&self) -> &OaepPrivateDecryptingKey {
        &self.decrypting
    }

    /// RSA signing key.
    pub fn signing(&self) -> &RsaKeyPair {
        &self.signing
    }
}

pub(super) fn load_private(record: KeyRecord, pkcs8: &[u8]) -> Result<LoadedKey, KmsError> {
    let decrypting = PrivateDecryptingKey::from_pkcs8(pkcs8)
        .ok()
        .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
        .ok_or(())
        .map_err(|_| KmsError::Internal(format!("key {} does not load", record.alias)))?;
    let signing = RsaKeyPair::from_pkcs8(pkcs8)
        .map_err(|_| KmsError::Internal(format!("key {} does not load", record.alias)))?;
    Ok(LoadedKey {
        record,
        decrypting,
        signing,
    })
}

/// The record of a stored key (its certificate parsed).
pub(super) fn into_record(key: super::StoredKey) -> Result<KeyRecord, KmsError> {
    Ok(KeyRecord {
        certificate: CertificateInfo::from_der(&key.certificate)
            .map_err(|e| KmsError::Internal(format!("stored certificate: {e}")))?,
        kind: KeyKind::parse(&key.kind)?,
        alias: key.alias,
        application_id: key.application_id,
        reference_id: key.reference_id,
        key_id: key.key_id,
        thumbprint: key.thumbprint,
        generated_at: key.generated_at,
        expires_at: key.expires_at,
    })
}
