//! Making keys (spec 6.3): a new RSA key, its certificate issued by the key above it in the
//! hierarchy (ROOT self-signed, master keys by ROOT, base and sign keys by their master), and
//! its record stored as the pair's current key unless another process made one meanwhile.

use std::sync::Arc;

use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::KerCode;
use g2p_mosip::key_id::{key_id_from_unique_identifier, unique_identifier_of};
use rcgen::Issuer;
use zeroize::Zeroizing;

use super::backend::Stored;
use super::certs::{certificate_params, generate_pkcs8, rcgen_key};
use super::record::load_private;
use super::{
    KeyKind, KeyRecord, KeyStore, LoadedKey, Minting, SECONDS_PER_DAY, StoredKey, random_alias,
};
use crate::error::KmsError;

/// A key just made, not yet stored.
struct NewKey {
    pkcs8: Zeroizing<Vec<u8>>,
    certificate: CertificateInfo,
}

impl KeyStore {
    /// Makes the current key of `(app, ref)` (with `replace`, in place of the current one):
    /// KER-KMS-002 for an application without a policy, KER-KMS-016 for base keys of ROOT,
    /// KERNEL or PARTNER.
    pub(super) fn generate(
        &self,
        application_id: &str,
        reference_id: &str,
        at: i64,
        replace: bool,
    ) -> Result<Arc<LoadedKey>, KmsError> {
        let kind = KeyKind::of(application_id, reference_id);
        let policy = self.policy_of(application_id)?;
        let issuer = self.issuer_of(kind, (application_id, reference_id), at)?;
        let expires_at = at + policy.validity_days * SECONDS_PER_DAY;
        let key = self.make_key(
            kind,
            application_id,
            reference_id,
            (at, expires_at),
            issuer.as_deref(),
        )?;
        let record =
            match self.store_current((application_id, reference_id), (at, replace), kind, &key)? {
                Ok(record) => record,
                // Another process sharing the store made a key meanwhile: it is the current one.
                Err(theirs) => return self.load(&theirs),
            };
        tracing::info!(app = application_id, reference = reference_id, key_id = %record.key_id, kind = kind.as_str(), "generated a key");
        let alias = record.alias.clone();
        let loaded = Arc::new(load_private(record, &key.pkcs8)?);
        self.loaded.insert(alias, loaded.clone());
        Ok(loaded)
    }

    /// The key that certifies a new key of `kind`: none for ROOT, ROOT's for master keys, the
    /// application's master key for base and sign keys.
    fn issuer_of(
        &self,
        kind: KeyKind,
        (application_id, reference_id): (&str, &str),
        at: i64,
    ) -> Result<Option<Arc<LoadedKey>>, KmsError> {
        mintable(application_id, reference_id)?;
        match kind {
            KeyKind::Root => Ok(None),
            KeyKind::Master => Ok(Some(self.current_key_for(
                "ROOT",
                "",
                at,
                Minting::Admin,
            )?)),
            KeyKind::Sign | KeyKind::Base => Ok(Some(self.current_key_for(
                application_id,
                "",
                at,
                Minting::Admin,
            )?)),
            KeyKind::Partner => Err(KmsError::Internal("partner keys are uploaded".into())),
        }
    }

    /// A new RSA-2048 key and its certificate, valid over `validity` (Unix seconds).
    fn make_key(
        &self,
        kind: KeyKind,
        application_id: &str,
        reference_id: &str,
        (not_before, not_after): (i64, i64),
        issuer: Option<&LoadedKey>,
    ) -> Result<NewKey, KmsError> {
        let internal = |e: rcgen::Error| KmsError::Internal(format!("certificate: {e}"));
        let pkcs8 = generate_pkcs8()?;
        let key_pair = rcgen_key(&pkcs8)?;
        let params = certificate_params(kind, application_id, reference_id, not_before, not_after)?;
        let certificate = match issuer {
            None => params.self_signed(&key_pair).map_err(internal)?,
            Some(issuer) => {
                let issuer_pair = rcgen_key(&self.private_pkcs8(&issuer.record)?)?;
                let r = &issuer.record;
                let issuer_params = certificate_params(
                    r.kind,
                    &r.application_id,
                    &r.reference_id,
                    r.generated_at,
                    r.expires_at,
                )?;
                let issuer = Issuer::new(issuer_params, &issuer_pair);
                params.signed_by(&key_pair, &issuer).map_err(internal)?
            }
        };
        let certificate = CertificateInfo::from_der(certificate.der())
            .map_err(|e| KmsError::Internal(format!("new certificate: {e}")))?;
        Ok(NewKey { pkcs8, certificate })
    }

    /// Stores `key` as the current key of the pair, its private half wrapped under the
    /// key-encryption key, in one transaction holding the pair's lock: `Ok` with its record,
    /// or `Err` with the record of the key another process made first (never with `replace`).
    fn store_current(
        &self,
        (application_id, reference_id): (&str, &str),
        (at, replace): (i64, bool),
        kind: KeyKind,
        key: &NewKey,
    ) -> Result<Result<KeyRecord, KeyRecord>, KmsError> {
        let alias = random_alias()?;
        let wrapped = self.kek.wrap(alias.as_bytes(), &key.pkcs8)?;
        let margin = self.pre_expire_seconds(kind, application_id);
        let expires_at = key.certificate.not_after();
        let thumbprint = hex::encode_upper(key.certificate.sha256());
        let (unique_identifier, key_id) = key_identity(application_id, reference_id, &thumbprint)?;
        let row = StoredKey {
            alias: alias.clone(),
            application_id: application_id.into(),
            reference_id: reference_id.into(),
            key_id: key_id.clone(),
            unique_identifier,
            thumbprint: thumbprint.clone(),
            certificate: key.certificate.der().to_vec(),
            private_key: Some(wrapped),
            generated_at: at,
            expires_at,
            kind: kind.as_str().into(),
        };
        let kek_check = self
            .kek_check
            .get()
            .ok_or_else(|| KmsError::Internal("the store was not opened".into()))?;
        if let Stored::Theirs(theirs) =
            self.backend
                .store_current(&row, (margin, replace), kek_check)?
        {
            return Ok(Err(super::record::into_record(*theirs)?));
        }
        Ok(Ok(KeyRecord {
            alias,
            application_id: application_id.into(),
            reference_id: reference_id.into(),
            key_id,
            thumbprint,
            certificate: key.certificate.clone(),
            generated_at: at,
            expires_at,
            kind,
        }))
    }
}

/// Whether the hierarchy has room for a key of `(app, ref)`: not `ROOT` with a reference (a
/// second, self-signed CA), not a base key of `ROOT`, `KERNEL` or `PARTNER` (KER-KMS-016).
///
/// # Errors
/// KER-KMS-016 naming the pair.
pub(super) fn mintable(application_id: &str, reference_id: &str) -> Result<(), KmsError> {
    let refused = match KeyKind::of(application_id, reference_id) {
        KeyKind::Root => !reference_id.is_empty(),
        KeyKind::Base => matches!(application_id, "ROOT" | "KERNEL" | "PARTNER"),
        _ => false,
    };
    if refused {
        return Err(KmsError::ker_with(
            KerCode::Kms016,
            format!(
                "{} ({application_id}/{reference_id})",
                KerCode::Kms016.message()
            ),
        ));
    }
    Ok(())
}

/// The unique identifier and key id of a new key (spec 6.5): the key id is the Keymanager's
/// `b64u(SHA-256(hex(SHA-1(value))))`, with the certificate's thumbprint in the value
/// (`app_ref_THUMBPRINT`, as the Keymanager does for uploaded certificates) rather than the
/// day, so that two key managers never give two keys one id. Key ids are opaque to clients.
pub(super) fn key_identity(
    application_id: &str,
    reference_id: &str,
    thumbprint_hex: &str,
) -> Result<(String, String), KmsError> {
    let unique_identifier =
        unique_identifier_of(&format!("{application_id}_{reference_id}_{thumbprint_hex}"));
    let key_id = key_id_from_unique_identifier(&unique_identifier)
        .ok_or_else(|| KmsError::Internal("key id".into()))?;
    Ok((unique_identifier, key_id))
}
