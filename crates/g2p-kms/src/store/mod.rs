//! The key store: the ROOT → master → base hierarchy of spec section 6 over a [`Backend`]
//! (SQLite in a data directory, or PostgreSQL shared by replicas), private keys wrapped under
//! the key-encryption key, lazy rotation, thumbprint lookup for decryption.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::KerCode;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kek::Kek;
use crate::policy::Policies;

pub mod backend;
mod certs;
mod generate;
mod lookup;
mod minting;
pub mod postgres;
mod record;
pub mod sqlite;

pub use backend::{Backend, Contents, Import, StoredKey};
pub use certs::CsrSubject;
pub(crate) use certs::generate_pkcs8;
use lookup::RecordCache;
pub use minting::Minting;
use minting::MintingRules;
pub use postgres::{PostgresBackend, PostgresOptions};
use record::load_private;
pub use record::{KeyKind, KeyRecord, LoadedKey};
pub use sqlite::SqliteBackend;

/// Schema version an SQLite store keeps in `meta` for its backups (the schema itself is
/// versioned by the migrations).
pub const SCHEMA_VERSION: i64 = 1;
const SECONDS_PER_DAY: i64 = 86_400;
/// Most unwrapped private keys kept in memory.
const CACHED_PRIVATE_KEYS: u64 = 1024;

/// How a store starts.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Key policies.
    pub policies: Policies,
    /// Applications whose master keys are created on first start.
    pub initial_applications: Vec<String>,
    /// Pairs `(application, reference)` crypto calls may make keys for, besides the master
    /// keys of the initial applications (default: `REGISTRATION`/`ENCRYPT`, `ID_REPO`/`""`,
    /// `KERNEL`/`SIGN`, the pairs the Keymanager provider uses by default).
    pub declared: BTreeSet<(String, String)>,
    /// Let crypto calls make keys for undeclared pairs too (ids checked, rate-limited), as
    /// the MOSIP Keymanager does.
    pub admit_unknown_references: bool,
    /// Most keys made per minute for undeclared pairs (default 30).
    pub undeclared_keys_per_minute: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        let pair = |a: &str, r: &str| (a.to_string(), r.to_string());
        StoreOptions {
            policies: Policies::default(),
            initial_applications: ["REGISTRATION", "ID_REPO", "KERNEL", "OPENG2P"]
                .into_iter()
                .map(String::from)
                .collect(),
            declared: [
                pair("REGISTRATION", "ENCRYPT"),
                pair("ID_REPO", ""),
                pair("KERNEL", "SIGN"),
            ]
            .into(),
            admit_unknown_references: false,
            undeclared_keys_per_minute: 30,
        }
    }
}

/// The key store.
pub struct KeyStore {
    backend: Box<dyn Backend>,
    kek: Kek,
    /// The store's KEK check value when this process opened it.
    kek_check: std::sync::OnceLock<Vec<u8>>,
    policies: Policies,
    /// Unwrapped private keys of recently used records, by alias.
    loaded: moka::sync::Cache<String, Arc<LoadedKey>>,
    minting: MintingRules,
    records: Mutex<RecordCache>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn random_alias() -> Result<String, KmsError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KmsError::Internal("no randomness".into()))?;
    Ok(hex::encode(bytes))
}

impl KeyStore {
    /// Opens (or creates) the SQLite store in `dir`, as [`KeyStore::open_with`].
    ///
    /// # Errors
    /// [`KmsError::Config`] when the directory cannot be used, the schema is newer than this
    /// program, or the keys were wrapped under another key-encryption key.
    pub fn open(dir: &Path, kek: Kek, options: StoreOptions) -> Result<Self, KmsError> {
        Self::open_with(Box::new(SqliteBackend::open(dir)?), kek, options)
    }

    /// Opens the store kept in `backend`: checks the key-encryption key against it (the
    /// first process to open a new store records its check value) and creates the ROOT and
    /// initial master keys when missing.
    ///
    /// # Errors
    /// [`KmsError::Config`] when the keys were wrapped under another key-encryption key;
    /// database errors.
    pub fn open_with(
        backend: Box<dyn Backend>,
        kek: Kek,
        options: StoreOptions,
    ) -> Result<Self, KmsError> {
        let store = KeyStore {
            backend,
            kek,
            kek_check: std::sync::OnceLock::new(),
            policies: options.policies,
            loaded: moka::sync::Cache::new(CACHED_PRIVATE_KEYS),
            records: Mutex::new(RecordCache::default()),
            minting: MintingRules::new(
                options.declared,
                options.admit_unknown_references,
                options.undeclared_keys_per_minute,
            ),
        };
        store.check_kek()?;
        // Each key as of its own moment: making one takes a while.
        store.ensure_root(now())?;
        for app in &options.initial_applications {
            store.current_key_for(app, "", now(), Minting::Admin)?;
            store.declare(app, "");
            if app == "KERNEL" {
                store.current_key_for("KERNEL", "SIGN", now(), Minting::Admin)?;
            }
        }
        Ok(store)
    }

    fn check_kek(&self) -> Result<(), KmsError> {
        let fresh = self.kek.check_value()?;
        let stored = self.backend.kek_check(&fresh)?;
        if stored == fresh {
            tracing::warn!(
                store = %self.backend.location(),
                "created a new key store in {}; keep its key-encryption key safe",
                self.backend.location()
            );
        }
        if self.kek.made(&stored) {
            let _ = self.kek_check.set(stored);
            Ok(())
        } else {
            Err(KmsError::Config(format!(
                "the key-encryption key does not match the keys in {} (wrong {}); refusing to start",
                self.backend.location(),
                self.kek.source()
            )))
        }
    }

    /// Where the keys are kept (a file, or a database; never a password).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The backend the keys are kept in.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Whether the store answers now (for `/readyz`).
    ///
    /// # Errors
    /// What is wrong.
    pub fn ready(&self) -> Result<(), KmsError> {
        self.backend.ready()
    }

    /// The signing key of token realm `name`, kept in the store under the same
    /// key-encryption key (SQLite: a file beside it, see [`crate::keyfile::realm_key`];
    /// PostgreSQL: a table, shared by the replicas); created on first use.
    ///
    /// # Errors
    /// [`KmsError::Config`] for a bad realm name or a key that does not unwrap.
    pub fn realm_key(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let wrapped = self
            .backend
            .realm_key(name, &|| crate::keyfile::new_realm_key(&self.kek, name))?;
        crate::keyfile::unwrap_realm_key(&self.kek, name, &wrapped, &self.backend.location())
    }

    /// The policy table.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    fn ensure_root(&self, at: i64) -> Result<(), KmsError> {
        if !self.backend.has_keys("ROOT", "")? {
            self.current_key_for("ROOT", "", at, Minting::Admin)?;
        }
        Ok(())
    }

    /// The private key behind a record (unwrapped once, then cached).
    ///
    /// # Errors
    /// KER-KMS-018 for a partner certificate; internal errors when the key does not unwrap.
    pub fn load(&self, record: &KeyRecord) -> Result<Arc<LoadedKey>, KmsError> {
        if let Some(key) = self.loaded.get(&record.alias) {
            return Ok(key);
        }
        let pkcs8 = self.private_pkcs8(record)?;
        let loaded = Arc::new(load_private(record.clone(), &pkcs8)?);
        self.loaded.insert(record.alias.clone(), loaded.clone());
        Ok(loaded)
    }

    /// The private key of `record`, unwrapped (PKCS#8 DER).
    ///
    /// # Errors
    /// KER-KMS-018 for a record without a private key (a partner certificate); internal
    /// errors when it does not unwrap.
    fn private_pkcs8(&self, record: &KeyRecord) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let wrapped = self.backend.wrapped_private(&record.alias)?;
        let wrapped = wrapped.ok_or_else(|| KmsError::ker(KerCode::Kms018))?;
        self.kek
            .unwrap(record.alias.as_bytes(), &wrapped)
            .ok_or_else(|| KmsError::Internal(format!("key {} does not unwrap", record.alias)))
    }

    fn pre_expire_seconds(&self, kind: KeyKind, application_id: &str) -> i64 {
        let days = match kind {
            KeyKind::Base => self.policies.base_pre_expire_days(),
            _ => self
                .policies
                .get(application_id)
                .map_or(0, |p| p.pre_expire_days),
        };
        days * SECONDS_PER_DAY
    }

    /// Lets crypto calls make keys for `(app, ref)` (a pair a provider uses, say).
    pub fn declare(&self, application_id: &str, reference_id: &str) {
        self.minting.declare(application_id, reference_id);
    }

    /// The current key of `(app, ref)` for a crypto call, made when none is current (spec
    /// 6.3) if the pair is declared or already has keys (see [`Minting::OnUse`]).
    ///
    /// # Errors
    /// KER-KMS-026 for an undeclared pair, KER-KMS-002 (no policy), KER-KMS-016 (no base keys
    /// for ROOT/KERNEL/PARTNER).
    pub fn current_key(
        &self,
        application_id: &str,
        reference_id: &str,
        at: i64,
    ) -> Result<Arc<LoadedKey>, KmsError> {
        self.current_key_for(application_id, reference_id, at, Minting::OnUse)
    }

    /// The current key of `(app, ref)`, made when none is current as `minting` allows.
    ///
    /// # Errors
    /// As [`KeyStore::current_key`].
    pub fn current_key_for(
        &self,
        application_id: &str,
        reference_id: &str,
        at: i64,
        minting: Minting,
    ) -> Result<Arc<LoadedKey>, KmsError> {
        if let Some(record) = self.current_record(application_id, reference_id, at)? {
            return self.load(&record);
        }
        if minting == Minting::OnUse && !self.has_keys(application_id, reference_id)? {
            // An unknown application or a pair the hierarchy has no room for says so first,
            // before the pair counts against the limit of undeclared keys.
            self.policy_of(application_id)?;
            generate::mintable(application_id, reference_id)?;
            self.minting.may_mint(application_id, reference_id)?;
        }
        self.generate(application_id, reference_id, at, false)
    }

    /// The key policy of an application.
    ///
    /// # Errors
    /// KER-KMS-002 for an application without one.
    fn policy_of(&self, application_id: &str) -> Result<crate::policy::KeyPolicy, KmsError> {
        self.policies.get(application_id).ok_or_else(|| {
            KmsError::ker_with(
                KerCode::Kms002,
                format!("{} ({application_id})", KerCode::Kms002.message()),
            )
        })
    }

    /// Whether the pair has keys of its own (current or older).
    fn has_keys(&self, application_id: &str, reference_id: &str) -> Result<bool, KmsError> {
        self.backend.has_keys(application_id, reference_id)
    }

    /// Makes a new current key for `(app, ref)` now; the old ones keep decrypting. The old
    /// key stops being current in the transaction that stores the new one, so no process
    /// sees the pair without a current key, nor with two.
    ///
    /// # Errors
    /// As [`KeyStore::current_key`].
    pub fn rotate(&self, application_id: &str, reference_id: &str) -> Result<KeyRecord, KmsError> {
        Ok(self
            .generate(application_id, reference_id, now(), true)?
            .record
            .clone())
    }

    /// Ends the current key of `(app, ref)` (its expiry becomes now − 1 minute); the next
    /// request generates a new one. Returns whether a key was current.
    ///
    /// # Errors
    /// Database errors.
    pub fn expire_current(
        &self,
        application_id: &str,
        reference_id: &str,
        at: i64,
    ) -> Result<bool, KmsError> {
        let Some(current) = self.current_record(application_id, reference_id, at)? else {
            return Ok(false);
        };
        let margin = self.pre_expire_seconds(current.kind, application_id);
        // The key stops being current at expires_at - margin; set it in the past.
        self.backend
            .set_expiry(&current.alias, at - 60 + margin.min(0))?;
        Ok(true)
    }

    /// A PKCS#10 certificate signing request (PEM) for the key of `record`, so that a CA can
    /// certify it (spec 3.7 `CSR`). Subject fields not given default to the certificate's.
    ///
    /// # Errors
    /// KER-KMS-018 for a partner certificate (no private key); internal errors otherwise.
    pub fn certificate_request(
        &self,
        record: &KeyRecord,
        subject: &CsrSubject,
    ) -> Result<String, KmsError> {
        if record.kind == KeyKind::Partner {
            return Err(KmsError::ker_with(
                KerCode::Kms018,
                "Not Allowed to perform this operation with other domain key.",
            ));
        }
        let pkcs8 = self.private_pkcs8(record)?;
        certs::certificate_request(record, &pkcs8, subject)
    }

    /// Stores a partner's certificate (no private key) under `(app, ref)` so that its
    /// signatures verify here. Returns its record.
    ///
    /// # Errors
    /// KER-KMS-013 for a certificate that does not parse.
    pub fn upload_partner_certificate(
        &self,
        application_id: &str,
        reference_id: &str,
        pem: &str,
    ) -> Result<KeyRecord, KmsError> {
        let info = CertificateInfo::from_pem(pem).map_err(|e| {
            KmsError::ker_with(
                KerCode::Kms013,
                format!("{} ({e})", KerCode::Kms013.message()),
            )
        })?;
        let thumbprint = hex::encode_upper(info.sha256());
        if let Some(existing) = self.record_by_thumbprint(&thumbprint)? {
            return Ok(existing);
        }
        let (unique_identifier, key_id) =
            generate::key_identity(application_id, reference_id, &thumbprint)?;
        let alias = random_alias()?;
        let at = now();
        let stored = self.backend.insert_partner(&StoredKey {
            alias: alias.clone(),
            application_id: application_id.into(),
            reference_id: reference_id.into(),
            key_id: key_id.clone(),
            unique_identifier,
            thumbprint: thumbprint.clone(),
            certificate: info.der().to_vec(),
            private_key: None,
            generated_at: at,
            expires_at: info.not_after(),
            kind: KeyKind::Partner.as_str().into(),
        })?;
        if !stored {
            // Another process stored it meanwhile.
            return self
                .record_by_thumbprint(&thumbprint)?
                .ok_or_else(|| KmsError::Internal("uploaded certificate vanished".into()));
        }
        Ok(KeyRecord {
            alias,
            application_id: application_id.into(),
            reference_id: reference_id.into(),
            key_id,
            thumbprint,
            generated_at: at,
            expires_at: info.not_after(),
            certificate: info,
            kind: KeyKind::Partner,
        })
    }
}
