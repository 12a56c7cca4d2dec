//! The key store: SQLite in a data directory, the ROOT → master → base hierarchy of spec
//! section 6, private keys wrapped under the key-encryption key, lazy rotation, thumbprint
//! lookup for decryption.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::KerCode;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::KmsError;
use crate::kek::Kek;
use crate::policy::Policies;

mod certs;
mod generate;
mod lookup;
mod minting;
mod record;

pub use certs::CsrSubject;
pub(crate) use certs::generate_pkcs8;
use lookup::RecordCache;
pub use minting::Minting;
use minting::MintingRules;
use record::load_private;
pub use record::{KeyKind, KeyRecord, LoadedKey};

/// Schema version written in `meta`; a store with a newer one is refused.
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
    path: PathBuf,
    conn: Mutex<Connection>,
    kek: Kek,
    policies: Policies,
    /// Unwrapped private keys of recently used records, by alias.
    loaded: moka::sync::Cache<String, Arc<LoadedKey>>,
    minting: MintingRules,
    records: Mutex<RecordCache>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
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
    /// Opens (or creates) the store in `dir`, checks the key-encryption key against it and
    /// creates the ROOT and initial master keys when missing.
    ///
    /// # Errors
    /// [`KmsError::Config`] when the directory cannot be used, the schema is newer than this
    /// program, or the keys were wrapped under another key-encryption key.
    pub fn open(dir: &Path, kek: Kek, options: StoreOptions) -> Result<Self, KmsError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            KmsError::Config(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(crate::kek::STORE_FILE);
        let new = !path.exists();
        let conn = Connection::open(&path)
            .map_err(|e| KmsError::Config(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = KeyStore {
            path,
            conn: Mutex::new(conn),
            kek,
            policies: options.policies,
            loaded: moka::sync::Cache::new(CACHED_PRIVATE_KEYS),
            records: Mutex::new(RecordCache::default()),
            minting: MintingRules::new(
                options.declared,
                options.admit_unknown_references,
                options.undeclared_keys_per_minute,
            ),
        };
        store.migrate()?;
        store.check_kek()?;
        if new {
            tracing::warn!(
                data_dir = %dir.display(),
                "created a new key store (keys.db) in {}; keep its key-encryption key safe",
                dir.display()
            );
        }
        let at = now();
        store.ensure_root(at)?;
        for app in &options.initial_applications {
            store.current_key_for(app, "", at, Minting::Admin)?;
            store.declare(app, "");
            if app == "KERNEL" {
                store.current_key_for("KERNEL", "SIGN", at, Minting::Admin)?;
            }
        }
        Ok(store)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), KmsError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        let version: Option<i64> = tx
            .query_row(
                "SELECT value FROM meta WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version {
            None => {
                tx.execute_batch(
                    "CREATE TABLE keys (
                        alias TEXT PRIMARY KEY,
                        application_id TEXT NOT NULL,
                        reference_id TEXT NOT NULL,
                        key_id TEXT NOT NULL UNIQUE,
                        unique_identifier TEXT NOT NULL UNIQUE,
                        thumbprint TEXT NOT NULL UNIQUE,
                        certificate BLOB NOT NULL,
                        private_key BLOB,
                        generated_at INTEGER NOT NULL,
                        expires_at INTEGER NOT NULL,
                        kind TEXT NOT NULL
                    );
                    CREATE INDEX keys_by_app_ref ON keys (application_id, reference_id, generated_at);",
                )?;
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION],
                )?;
                let check = self.kek.check_value()?;
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ('kek_check', ?1)",
                    params![check],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(KmsError::Config(format!(
                    "{} has schema version {v}; this program knows up to {SCHEMA_VERSION}",
                    self.path.display()
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn check_kek(&self) -> Result<(), KmsError> {
        let check: Vec<u8> =
            self.conn()
                .query_row("SELECT value FROM meta WHERE name = 'kek_check'", [], |r| {
                    r.get(0)
                })?;
        if self.kek.made(&check) {
            Ok(())
        } else {
            Err(KmsError::Config(format!(
                "the key-encryption key does not match the keys in {} (wrong {} or kek file); refusing to start",
                self.path.display(),
                crate::kek::KEK_ENV
            )))
        }
    }

    /// The store's database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The signing key of token realm `name`, kept beside the store under the same
    /// key-encryption key (see [`crate::keyfile::realm_key`]).
    ///
    /// # Errors
    /// As [`crate::keyfile::realm_key`].
    pub fn realm_key(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::keyfile::realm_key(dir, &self.kek, name)
    }

    /// The policy table.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    fn ensure_root(&self, at: i64) -> Result<(), KmsError> {
        let exists: Option<String> = self
            .conn()
            .query_row(
                "SELECT alias FROM keys WHERE kind = 'root' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
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
        let wrapped: Option<Vec<u8>> = self.conn().query_row(
            "SELECT private_key FROM keys WHERE alias = ?1",
            params![record.alias],
            |r| r.get(0),
        )?;
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
        self.generate(application_id, reference_id, at)
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
        let found: Option<i64> = self
            .conn()
            .query_row(
                "SELECT 1 FROM keys WHERE application_id = ?1 AND reference_id = ?2 AND kind != 'partner' LIMIT 1",
                params![application_id, reference_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Makes a new current key for `(app, ref)` now; the old ones keep decrypting.
    ///
    /// # Errors
    /// As [`KeyStore::current_key`].
    pub fn rotate(&self, application_id: &str, reference_id: &str) -> Result<KeyRecord, KmsError> {
        let at = now();
        self.expire_current(application_id, reference_id, at)?;
        Ok(self
            .generate(application_id, reference_id, at)?
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
        self.conn().execute(
            "UPDATE keys SET expires_at = ?1 WHERE alias = ?2",
            params![at - 60 + margin.min(0), current.alias],
        )?;
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
        self.conn().execute(
            "INSERT INTO keys (alias, application_id, reference_id, key_id, unique_identifier, thumbprint, certificate, private_key, generated_at, expires_at, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8, ?9, 'partner')",
            params![alias, application_id, reference_id, key_id, unique_identifier, thumbprint, info.der(), at, info.not_after()],
        )?;
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
