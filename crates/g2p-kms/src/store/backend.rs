//! What a key store keeps its rows in: the [`Backend`] trait, implemented by SQLite (one data
//! directory, the embedded default) and PostgreSQL (one database shared by replicas).
//!
//! A backend stores and finds rows; the [`super::KeyStore`] above it owns the hierarchy, the
//! key-encryption key and the caches. What must hold across processes is the backend's job:
//! at most one current key per pair (a database lock, never an in-process mutex) and a change
//! stamp that moves whenever any process changed the keys, so caches are emptied in time.

use crate::error::KmsError;

/// A value that differs whenever the keys may have changed since it was taken.
pub type Stamp = (i64, u64);

/// A key's row as stored: its record and its private half, wrapped under the key-encryption
/// key (`None` for a partner's certificate). `Debug` leaves the wrapped key out.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Internal alias (random hex), also the context the private key is wrapped under.
    pub alias: String,
    /// Application id.
    pub application_id: String,
    /// Reference id.
    pub reference_id: String,
    /// The MOSIP keyId.
    pub key_id: String,
    /// The MOSIP unique identifier the key id derives from.
    pub unique_identifier: String,
    /// Upper-hex SHA-256 of the certificate.
    pub thumbprint: String,
    /// The certificate, DER.
    pub certificate: Vec<u8>,
    /// The wrapped private key.
    pub private_key: Option<Vec<u8>>,
    /// Generation time, Unix seconds.
    pub generated_at: i64,
    /// Expiry time, Unix seconds.
    pub expires_at: i64,
    /// `root`, `master`, `sign`, `base` or `partner`.
    pub kind: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("application_id", &self.application_id)
            .field("reference_id", &self.reference_id)
            .field("key_id", &self.key_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Everything a store holds, as stored (keys still wrapped): what a migration copies and a
/// backup writes.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Every key row, oldest first.
    pub keys: Vec<StoredKey>,
    /// Token realms' signing keys, wrapped: `(realm name, wrapped key)`.
    pub realm_keys: Vec<(String, Vec<u8>)>,
    /// The check value of the key-encryption key the keys are wrapped under.
    pub kek_check: Option<Vec<u8>>,
}

/// What an import may replace.
#[derive(Debug, Clone, Copy)]
pub enum Import<'a> {
    /// Nothing: the store must be empty (no keys, realm keys or KEK check value).
    IntoEmpty,
    /// Anything.
    Replacing,
    /// Exactly these contents (as [`Backend::export`] gave them): if anything changed since,
    /// nothing is written.
    ReplacingExactly(&'a Contents),
}

/// Whether two exports hold the same (keys compared in alias order: backends order keys made
/// in the same second differently).
pub fn same_contents(a: &Contents, b: &Contents) -> bool {
    let by_alias = |c: &Contents| {
        let mut keys = c.keys.clone();
        keys.sort_by(|x, y| x.alias.cmp(&y.alias));
        keys
    };
    a.kek_check == b.kek_check && a.realm_keys == b.realm_keys && by_alias(a) == by_alias(b)
}

/// The error for an import into a store that changed since it was read.
pub(crate) fn changed(location: &str) -> KmsError {
    KmsError::Config(format!(
        "the key store in {location} changed while it was being rewritten (is a kms serve still running on it?); nothing was changed: stop what uses it and run again"
    ))
}

/// The error for storing a key under a KEK the store no longer uses.
pub(crate) fn kek_changed(location: &str) -> KmsError {
    KmsError::Config(format!(
        "the key-encryption key of {location} was changed (kms migrate-kek) since this process opened it; restart it with the new one"
    ))
}

/// What [`Backend::store_current`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The key is stored, the pair's current key.
    Ours,
    /// Another process's key was live already (its record, without the private key): use it.
    Theirs(Box<StoredKey>),
}

/// Which rows a lookup wants.
#[derive(Debug, Clone, Copy)]
pub enum Query<'a> {
    /// Every row, oldest first.
    All,
    /// The rows of a pair, oldest first.
    Pair(&'a str, &'a str),
    /// The row with this upper-hex thumbprint.
    Thumbprint(&'a str),
    /// The row with this key id.
    KeyId(&'a str),
    /// The pair's current keys at `at`, newest first: not partner certificates, generated
    /// by `at`, and `at` before their expiry less `margin` seconds.
    Current {
        /// Application id.
        application_id: &'a str,
        /// Reference id.
        reference_id: &'a str,
        /// The time, Unix seconds.
        at: i64,
        /// Seconds before expiry a key stops being current.
        margin: i64,
    },
}

/// What a key store keeps its rows in. Every method may block on the database; none may
/// panic in an async context.
pub trait Backend: Send + Sync {
    /// Where the keys are, for messages (never a password).
    fn location(&self) -> String;

    /// The change stamp (see [`Stamp`]).
    ///
    /// # Errors
    /// Database errors.
    fn stamp(&self) -> Result<Stamp, KmsError>;

    /// Rows as `query` says, without their private keys (in [`StoredKey::private_key`]:
    /// `None`).
    ///
    /// # Errors
    /// Database errors.
    fn select(&self, query: Query<'_>) -> Result<Vec<StoredKey>, KmsError>;

    /// Whether the pair has keys of its own (current or older, not partner certificates).
    ///
    /// # Errors
    /// Database errors.
    fn has_keys(&self, application_id: &str, reference_id: &str) -> Result<bool, KmsError>;

    /// The wrapped private key of `alias`; `None` when the row has none (a partner's).
    ///
    /// # Errors
    /// Database errors; an internal error when there is no such row.
    fn wrapped_private(&self, alias: &str) -> Result<Option<Vec<u8>>, KmsError>;

    /// Stores `key` as the current key of its pair in one transaction holding the pair's
    /// lock — refused when the store's KEK check value is no longer `kek_check` (the one this
    /// process opened it with: `kms migrate-kek` ran since) — unless another key of the pair
    /// is live at `key.generated_at` (not ended, less
    /// `margin`; made before or after that moment): then nothing is written and the answer is
    /// that key, the newest such. With `replace`, the live keys are ended (expiry one minute
    /// before) in the same transaction and `key` is always stored.
    ///
    /// # Errors
    /// Database errors.
    fn store_current(
        &self,
        key: &StoredKey,
        margin_and_replace: (i64, bool),
        kek_check: &[u8],
    ) -> Result<Stored, KmsError>;

    /// Sets the expiry of `alias`.
    ///
    /// # Errors
    /// Database errors.
    fn set_expiry(&self, alias: &str, expires_at: i64) -> Result<(), KmsError>;

    /// Stores a partner's certificate unless one with its thumbprint is stored already;
    /// whether it was stored.
    ///
    /// # Errors
    /// Database errors.
    fn insert_partner(&self, key: &StoredKey) -> Result<bool, KmsError>;

    /// The stored check value of the key-encryption key, storing `fresh` first when the
    /// store has none (the first process wins).
    ///
    /// # Errors
    /// Database errors.
    fn kek_check(&self, fresh: &[u8]) -> Result<Vec<u8>, KmsError>;

    /// The wrapped signing key of token realm `name`, storing what `fresh` makes when there
    /// is none (the first process wins).
    ///
    /// # Errors
    /// Database or file errors.
    fn realm_key(
        &self,
        name: &str,
        fresh: &dyn Fn() -> Result<Vec<u8>, KmsError>,
    ) -> Result<Vec<u8>, KmsError>;

    /// Everything stored, in one consistent read.
    ///
    /// # Errors
    /// Database errors.
    fn export(&self) -> Result<Contents, KmsError>;

    /// Writes `contents` in one transaction, in place of what the store holds, as `mode`
    /// allows — checked in that transaction, with the store locked.
    ///
    /// # Errors
    /// [`KmsError::Config`] when the store holds what `mode` does not allow; database
    /// errors. Nothing is written then.
    fn import(&self, contents: &Contents, mode: Import<'_>) -> Result<(), KmsError>;

    /// Whether the store can be used now (the database answers).
    ///
    /// # Errors
    /// What is wrong, for `/readyz`.
    fn ready(&self) -> Result<(), KmsError>;

    /// Whether the backend is told of changes now (SQLite always is; PostgreSQL while its
    /// listener is connected and its heartbeat comes back).
    fn watching(&self) -> bool {
        true
    }

    /// Lookups ([`Backend::select`]) made so far: what the caches above save.
    fn reads(&self) -> u64;

    /// Whether a lookup goes over the network (and so is kept off async workers).
    fn remote(&self) -> bool {
        false
    }
}

/// The error for an import into a store that is not empty.
pub(crate) fn occupied(location: &str, keys: i64, realm_keys: i64) -> KmsError {
    KmsError::Config(format!(
        "the {location} already holds a key store ({keys} keys, {realm_keys} realm keys); migrate into an empty one, or give --force to replace it"
    ))
}
