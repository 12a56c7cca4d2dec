//! `kms migrate`: moves a key store from a data directory (SQLite) into another backend (a
//! PostgreSQL database for replicas) without re-issuing a key.
//!
//! Every key is copied as it is stored (still wrapped under the key-encryption key), with
//! every certificate, partner certificate, realm signing key and the key-encryption key's
//! check value. Before anything is written: the key-encryption key must open the source's
//! check value and every private key and realm key in it, and the target must hold no key
//! store (unless forced, which replaces it). Before the copy, a sample of ciphertexts is
//! sealed under the source's encryption keys; after it, the copy is read back and compared row
//! by row, and the sample must decrypt through a key manager over the target.
//!
//! Key policies are configuration (`[kms.policies]`), not store contents: the replicas must
//! be given the same ones.

use std::path::Path;

use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::cipher::{CipherParams, Sealer};

use crate::error::KmsError;
use crate::kek::{KEK_ENV, Kek};
use crate::store::backend::same_contents;
use crate::store::{Backend, Contents, Import, SqliteBackend, StoreOptions};

/// Most ciphertexts sealed before a migration and decrypted after it.
const SAMPLE: usize = 8;

/// What a migration copied and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSummary {
    /// Key records copied (keys, and partner certificates).
    pub keys: usize,
    /// Of them, records with a private key.
    pub private_keys: usize,
    /// Realms whose token signing key was copied.
    pub realms: Vec<String>,
    /// Ciphertexts sealed before the copy that decrypted after it.
    pub verified_ciphertexts: usize,
    /// Whether the target held a store that was replaced (`--force`).
    pub replaced: bool,
}

fn config(message: String) -> KmsError {
    KmsError::Config(message)
}

/// Copies the SQLite store in `from` into `to` (see the module's documentation); `kek` must
/// be the store's key-encryption key.
///
/// # Errors
/// [`KmsError::Config`] naming what is wrong: no store in `from`, a key-encryption key that
/// does not open it, a key that does not unwrap, a target that holds a store (without
/// `force`), a copy that does not read back the same, a sample that does not decrypt.
pub fn migrate(
    from: &Path,
    kek: Kek,
    to: Box<dyn Backend>,
    force: bool,
) -> Result<MigrationSummary, KmsError> {
    let store_file = from.join(crate::kek::STORE_FILE);
    if !store_file.is_file() {
        return Err(config(format!(
            "no key store in {} ({} is missing); check the data directory",
            from.display(),
            crate::kek::STORE_FILE
        )));
    }
    let source = SqliteBackend::open(from)?.export()?;
    check_source(&source, &kek, from)?;
    let existing = to.export()?;
    let occupied = !existing.keys.is_empty()
        || !existing.realm_keys.is_empty()
        || existing.kek_check.is_some();
    if occupied && !force {
        return Err(config(format!(
            "the {} already holds a key store ({} keys, {} realm keys); migrate into an empty database, or give --force to replace it",
            to.location(),
            existing.keys.len(),
            existing.realm_keys.len()
        )));
    }
    let samples = seal_samples(&source)?;
    // Checked again inside the import's transaction: a store made meanwhile (a replica
    // started against the database) is not deleted without --force.
    let mode = if force {
        Import::Replacing
    } else {
        Import::IntoEmpty
    };
    to.import(&source, mode)?;
    verify_copy(&source, &samples, to, kek)?;
    // A key made in the source during the copy (a `kms serve` still running on it) would be
    // missing from the target.
    if !same_contents(&SqliteBackend::open(from)?.export()?, &source) {
        return Err(config(format!(
            "the key store in {} changed during the copy (is a kms serve still running on it?); stop what uses it and migrate again with --force",
            from.display()
        )));
    }
    Ok(MigrationSummary {
        keys: source.keys.len(),
        private_keys: source
            .keys
            .iter()
            .filter(|k| k.private_key.is_some())
            .count(),
        realms: source.realm_keys.iter().map(|(n, _)| n.clone()).collect(),
        verified_ciphertexts: samples.len(),
        replaced: occupied,
    })
}

/// The copy in `to` reads back as `source`, and through a key manager over it every sample
/// decrypts and every realm key opens.
fn verify_copy(
    source: &Contents,
    samples: &[Sample],
    to: Box<dyn Backend>,
    kek: Kek,
) -> Result<(), KmsError> {
    let copied = to.export()?;
    if !same_contents(&copied, source) {
        return Err(config(format!(
            "the copy in the {} does not read back as the source ({} of {} keys, {} of {} realm keys); run the migration again with --force",
            to.location(),
            copied.keys.len(),
            source.keys.len(),
            copied.realm_keys.len(),
            source.realm_keys.len()
        )));
    }
    let options = StoreOptions {
        initial_applications: Vec::new(),
        ..StoreOptions::default()
    };
    let location = to.location();
    let kms = crate::Kms::open_with(to, kek, options)?;
    for sample in samples {
        let opened = kms
            .decrypt(
                &sample.application_id,
                &sample.reference_id,
                &CipherParams::default(),
                &sample.ciphertext,
            )
            .map_err(|e| {
                config(format!(
                    "a ciphertext sealed under key {} before the migration does not decrypt from the {location}: {}",
                    sample.key_id,
                    e.message()
                ))
            })?;
        if opened != sample.plaintext {
            return Err(config(format!(
                "a ciphertext sealed under key {} decrypts to other bytes from the {location}",
                sample.key_id
            )));
        }
    }
    for (name, _) in &source.realm_keys {
        kms.store().realm_key(name)?;
    }
    Ok(())
}

/// What `kms migrate-kek` re-wrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapSummary {
    /// Private keys re-wrapped.
    pub private_keys: usize,
    /// Realm signing keys re-wrapped.
    pub realm_keys: usize,
}

/// Re-wraps every private key and realm key of the store in `backend` from the key-encryption
/// key `from` to `to`, in one transaction: each is unwrapped with `from`, wrapped with `to`,
/// and the new wrapping is opened again before anything is written; the store's check value
/// becomes `to`'s. Nothing is re-issued: key ids, certificates and ciphertexts stay as they
/// are. Stop every process that uses the store first (they hold keys wrapped the old way).
///
/// # Errors
/// [`KmsError::Config`] when `from` does not open the store or one of its keys; database
/// errors. Nothing is written then.
pub fn rewrap(backend: &dyn Backend, from: &Kek, to: &Kek) -> Result<RewrapSummary, KmsError> {
    let original = backend.export()?;
    let mut contents = original.clone();
    let location = backend.location();
    if !contents.kek_check.as_ref().is_some_and(|c| from.made(c)) {
        return Err(config(format!(
            "the key-encryption key ({}) does not open the key store in {location}; nothing was changed",
            from.source()
        )));
    }
    let rewrapped = |context: &[u8], wrapped: &[u8], what: &str| -> Result<Vec<u8>, KmsError> {
        let plain = from.unwrap(context, wrapped).ok_or_else(|| {
            config(format!(
                "{what} in {location} does not unwrap: the store is damaged; nothing was changed"
            ))
        })?;
        let again = to.wrap(context, &plain)?;
        if to.unwrap(context, &again).as_deref().map(Vec::as_slice) != Some(plain.as_slice()) {
            return Err(config(format!(
                "{what} does not open again under the new key-encryption key ({}); nothing was changed",
                to.source()
            )));
        }
        Ok(again)
    };
    let mut private_keys = 0;
    for key in &mut contents.keys {
        if let Some(wrapped) = &key.private_key {
            let what = format!("key {}", key.key_id);
            key.private_key = Some(rewrapped(key.alias.as_bytes(), wrapped, &what)?);
            private_keys += 1;
        }
    }
    for (name, wrapped) in &mut contents.realm_keys {
        let context = crate::keyfile::realm_context(name);
        *wrapped = rewrapped(
            context.as_bytes(),
            wrapped,
            &format!("the signing key of realm {name}"),
        )?;
    }
    contents.kek_check = Some(to.check_value()?);
    // Written only if the store is still what was read (a process that made a key meanwhile
    // would lose it otherwise).
    backend.import(&contents, Import::ReplacingExactly(&original))?;
    let after = backend.export()?;
    if !after.kek_check.as_ref().is_some_and(|c| to.made(c)) {
        return Err(config(format!(
            "the store in {location} does not read back under the new key-encryption key"
        )));
    }
    Ok(RewrapSummary {
        private_keys,
        realm_keys: contents.realm_keys.len(),
    })
}

/// The key opens the source's check value, every private key and every realm key.
fn check_source(source: &Contents, kek: &Kek, from: &Path) -> Result<(), KmsError> {
    if !source.kek_check.as_ref().is_some_and(|c| kek.made(c)) {
        return Err(config(format!(
            "the key-encryption key does not open the key store in {} (wrong {KEK_ENV} or kek file); nothing was copied",
            from.display()
        )));
    }
    for key in &source.keys {
        if let Some(wrapped) = &key.private_key
            && kek.unwrap(key.alias.as_bytes(), wrapped).is_none()
        {
            return Err(config(format!(
                "key {} in {} does not unwrap: the store is damaged; nothing was copied",
                key.key_id,
                from.display()
            )));
        }
    }
    for (name, wrapped) in &source.realm_keys {
        crate::keyfile::unwrap_realm_key(kek, name, wrapped, &from.display().to_string())?;
    }
    Ok(())
}

/// A ciphertext sealed before the migration.
struct Sample {
    application_id: String,
    reference_id: String,
    key_id: String,
    plaintext: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Seals a probe under up to [`SAMPLE`] encryption keys of the source, newest first.
fn seal_samples(source: &Contents) -> Result<Vec<Sample>, KmsError> {
    let mut samples = Vec::new();
    for key in source
        .keys
        .iter()
        .rev()
        .filter(|k| k.kind == "base" && k.private_key.is_some())
        .take(SAMPLE)
    {
        let certificate = CertificateInfo::from_der(&key.certificate)
            .map_err(|e| KmsError::Internal(format!("stored certificate: {e}")))?;
        let plaintext = format!("g2p-kms migration probe {}", key.key_id).into_bytes();
        let ciphertext = Sealer::new(&certificate)?.seal(&CipherParams::default(), &plaintext)?;
        samples.push(Sample {
            application_id: key.application_id.clone(),
            reference_id: key.reference_id.clone(),
            key_id: key.key_id.clone(),
            plaintext,
            ciphertext,
        });
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyStore;

    #[test]
    fn a_store_moves_between_directories_whole_and_a_full_target_is_refused() {
        let from = tempfile::tempdir().unwrap();
        let kek = Kek::load(from.path(), None).unwrap();
        let store = KeyStore::open(from.path(), kek, StoreOptions::default()).unwrap();
        store.rotate("REGISTRATION", "ENCRYPT").unwrap();
        store.rotate("REGISTRATION", "ENCRYPT").unwrap();
        store.realm_key("openg2p").unwrap();
        let listed = store.list().unwrap().len();
        drop(store);
        let to = tempfile::tempdir().unwrap();
        let target = || Box::new(SqliteBackend::open(to.path()).unwrap());
        let key = || Kek::load(from.path(), None).unwrap();
        let summary = migrate(from.path(), key(), target(), false).unwrap();
        assert_eq!(summary.keys, listed);
        assert_eq!(summary.realms, vec!["openg2p".to_string()]);
        assert!(summary.verified_ciphertexts >= 2, "{summary:?}");
        assert!(!summary.replaced);
        // Not again without --force; with it, the same result.
        let e = migrate(from.path(), key(), target(), false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(
            migrate(from.path(), key(), target(), true)
                .unwrap()
                .replaced
        );
        // Another key-encryption key copies nothing.
        let empty = tempfile::tempdir().unwrap();
        let other = Kek::from_bytes(&[3u8; 32]).unwrap();
        let e = migrate(
            from.path(),
            other,
            Box::new(SqliteBackend::open(empty.path()).unwrap()),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        assert!(
            SqliteBackend::open(empty.path())
                .unwrap()
                .export()
                .unwrap()
                .keys
                .is_empty()
        );
        let e = migrate(to.path().join("nowhere").as_path(), key(), target(), true).unwrap_err();
        assert!(e.to_string().contains("no key store"), "{e}");
    }

    #[test]
    fn rewrapping_moves_a_store_to_another_key_without_reissuing_any() {
        let dir = tempfile::tempdir().unwrap();
        let old = || Kek::load(dir.path(), None).unwrap();
        let kms = crate::Kms::open(dir.path(), old(), StoreOptions::default()).unwrap();
        let params = CipherParams::default();
        let sealed = kms
            .encrypt("REGISTRATION", "ENCRYPT", &params, b"kept")
            .unwrap();
        let realm = kms.store().realm_key("openg2p").unwrap();
        let ids: Vec<String> = kms
            .store()
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.key_id)
            .collect();
        drop(kms);
        let new = || Kek::from_bytes(&[0x42; 32]).unwrap();
        let backend = SqliteBackend::open(dir.path()).unwrap();
        // The wrong current key changes nothing.
        let e = rewrap(&backend, &new(), &old()).unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        let summary = rewrap(&backend, &old(), &new()).unwrap();
        assert_eq!(summary.private_keys, ids.len());
        assert_eq!(summary.realm_keys, 1);
        drop(backend);
        let e = crate::Kms::open(dir.path(), old(), StoreOptions::default()).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let kms = crate::Kms::open(dir.path(), new(), StoreOptions::default()).unwrap();
        let after: Vec<String> = kms
            .store()
            .list()
            .unwrap()
            .into_iter()
            .map(|r| r.key_id)
            .collect();
        assert_eq!(after, ids);
        assert_eq!(
            kms.decrypt("REGISTRATION", "ENCRYPT", &params, &sealed)
                .unwrap(),
            b"kept"
        );
        assert_eq!(*kms.store().realm_key("openg2p").unwrap(), *realm);
    }
}
