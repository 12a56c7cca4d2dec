//! The `[kms]` table of the configuration file: the embedded key manager's data directory,
//! key policies, and what `kms serve` listens on and admits.
//!
//! ```toml
//! [kms]
//! data_dir = "/var/lib/g2p-keymanager"
//! # database_url = "postgres://g2p_kms@db.internal/keys?sslmode=require"  (replicas)
//! listen = "127.0.0.1:8088"
//! admit_unknown_applications = false
//! clients = [{ id = "openg2p-admin-client", secret = "...", roles = ["KEY_MAKER"] }]
//!
//! [kms.references]
//! RESIDENT = ["ENCRYPT"]
//!
//! [kms.policies.SOCIAL_REGISTRY]
//! validity_days = 730
//! pre_expire_days = 30
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::error::KmsError;
use crate::policy::{KeyPolicy, Policies};
use crate::server::auth::{Client, DEFAULT_CLIENT_ROLES};
use crate::store::StoreOptions;

/// The environment variable naming the data directory when none is configured.
pub const DATA_DIR_ENV: &str = "G2P_DATA_DIR";
/// The data directory when none is configured at all.
pub const DEFAULT_DATA_DIR: &str = "g2p-data";
/// The environment variable naming the key store's database when none is configured.
pub const DATABASE_URL_ENV: &str = "G2P_KMS_DATABASE_URL";

/// `[kms]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsSettings {
    /// Data directory (default `$G2P_DATA_DIR`, else `./g2p-data`).
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL database holding the keys instead of the data directory, shared by
    /// replicas (`postgres://…`; also `$G2P_KMS_DATABASE_URL`). `Debug` hides it.
    pub database_url: Option<secrecy::SecretString>,
    /// A PEM file of CA certificates for the database server's certificate.
    pub database_ca: Option<PathBuf>,
    /// Most connections each process keeps to the database (default 16).
    pub database_pool_size: Option<usize>,
    /// `kms serve` address (default `127.0.0.1:8088`).
    pub listen: Option<SocketAddr>,
    /// Realm of the token endpoint (default `openg2p`).
    pub realm: Option<String>,
    /// The URL clients reach `kms serve` at (a load balancer's, in front of replicas): the
    /// issuer of its tokens. Default: the address it listens on.
    pub public_url: Option<String>,
    /// Lifetime of issued tokens, seconds (default 300).
    pub token_lifetime: Option<i64>,
    /// Clients of the token endpoint.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Key policies by application, added to (or replacing rows of) the spec's table.
    #[serde(default)]
    pub policies: BTreeMap<String, KeyPolicy>,
    /// Give applications without a policy the standard one (1095 / 60 days) instead of
    /// refusing them with KER-KMS-002.
    #[serde(default)]
    pub admit_unknown_applications: bool,
    /// Applications whose master keys are made at first start (default REGISTRATION, ID_REPO,
    /// KERNEL, OPENG2P).
    pub initial_applications: Option<Vec<String>>,
    /// References, by application, whose keys crypto calls may make on first use, besides
    /// the defaults (`REGISTRATION` `ENCRYPT`, `ID_REPO` `""`, `KERNEL` `SIGN`) and the
    /// pairs the configured providers use: `[kms.references] RESIDENT = ["ENCRYPT"]`.
    #[serde(default)]
    pub references: BTreeMap<String, Vec<String>>,
    /// Let crypto calls make keys for any other pair too (ids checked, rate-limited), as the
    /// MOSIP Keymanager does.
    #[serde(default)]
    pub admit_unknown_references: bool,
    /// Most keys made per minute for undeclared pairs (default 30).
    pub undeclared_keys_per_minute: Option<u32>,
    /// `kms serve`: longest a request may take, seconds (default 30).
    pub request_timeout: Option<f64>,
    /// `kms serve`: most requests served at once (default 256).
    pub max_concurrent_requests: Option<usize>,
    /// `[kms.tls]`: read by the command that serves the key manager.
    #[serde(default)]
    pub tls: Option<serde::de::IgnoredAny>,
    /// `[kms.kek]`: where the key-encryption key is (default: the data directory's `kek`
    /// file, or `G2P_KMS_KEK` when set).
    #[serde(default)]
    pub kek: KekSettings,
}

/// Where the key-encryption key is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KekKind {
    /// `G2P_KMS_KEK` when set, else the data directory's `kek` file (made for a new store).
    #[default]
    File,
    /// `G2P_KMS_KEK`, which must be set.
    Env,
    /// A non-extractable key in a PKCS#11 token; the PIN from `G2P_KMS_PKCS11_PIN`.
    Pkcs11,
}

/// `[kms.kek]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KekSettings {
    /// `file` (the default), `env` or `pkcs11`.
    #[serde(default)]
    pub source: KekKind,
    /// PKCS#11: the library's path.
    pub module: Option<PathBuf>,
    /// PKCS#11: the token's label.
    pub token_label: Option<String>,
    /// PKCS#11: the slot's id (instead of the token's label).
    pub slot: Option<u64>,
    /// PKCS#11: the key's label (default `g2p-kms-kek`).
    pub key_label: Option<String>,
}

impl KekSettings {
    /// The PKCS#11 part.
    pub fn pkcs11(&self) -> crate::pkcs11::Pkcs11Settings {
        crate::pkcs11::Pkcs11Settings {
            module: self.module.clone(),
            token_label: self.token_label.clone(),
            slot: self.slot,
            key_label: self.key_label.clone(),
        }
    }

    /// The key these settings name (`env` read through `env`): for a store that exists
    /// already (`store_exists`), or one shared by replicas (`shared`), none is made up — a
    /// file KEK must be there, a token's key must be found.
    ///
    /// # Errors
    /// [`KmsError::Config`] naming what is missing or wrong.
    pub fn load(
        &self,
        kind: KekKind,
        dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        (store_exists, shared): (bool, bool),
    ) -> Result<crate::Kek, KmsError> {
        let from_env = env(crate::kek::KEK_ENV).filter(|v| !v.trim().is_empty());
        match kind {
            KekKind::Pkcs11 => {
                let pin = env(crate::pkcs11::PIN_ENV)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        KmsError::Config(format!(
                            "the PKCS#11 token's user PIN is needed: set {}",
                            crate::pkcs11::PIN_ENV
                        ))
                    })?;
                let token = crate::pkcs11::TokenKek::open(&self.pkcs11(), &pin, !store_exists)?;
                Ok(crate::Kek::token(token))
            }
            KekKind::Env => {
                let value = from_env.ok_or_else(|| {
                    KmsError::Config(format!(
                        "[kms.kek] source = \"env\" but {} is not set",
                        crate::kek::KEK_ENV
                    ))
                })?;
                crate::Kek::load(dir, Some(&value))
            }
            KekKind::File if shared => crate::Kek::load_existing(dir, from_env.as_deref()),
            KekKind::File => crate::Kek::load(dir, from_env.as_deref()),
        }
    }
}

/// One client of the token endpoint. `Debug` shows no secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// `client_id`.
    pub id: String,
    /// `client_secret`.
    pub secret: secrecy::SecretString,
    /// Realm roles in its tokens (default: the crypto and admin roles).
    pub roles: Option<Vec<String>>,
}

impl KmsSettings {
    /// The data directory: `given` (a command-line flag), else the table's, else
    /// `$G2P_DATA_DIR` (read through `env`), else `./g2p-data`.
    pub fn data_dir(&self, given: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> PathBuf {
        given
            .map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .or_else(|| env(DATA_DIR_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The store's options: the spec's policies plus the configured ones.
    ///
    /// # Errors
    /// [`KmsError::Config`] naming a policy whose days do not make sense.
    pub fn store_options(&self) -> Result<StoreOptions, KmsError> {
        let mut options = StoreOptions::default();
        for (app, policy) in &self.policies {
            if policy.validity_days <= 0
                || policy.pre_expire_days < 0
                || policy.pre_expire_days >= policy.validity_days
            {
                return Err(KmsError::Config(format!(
                    "kms.policies.{app}: validity_days must be positive and pre_expire_days between 0 and validity_days"
                )));
            }
            options.policies.set(app, *policy);
        }
        if self.admit_unknown_applications {
            options
                .policies
                .admit_unknown_applications(Some(Policies::standard()));
        }
        if let Some(apps) = &self.initial_applications {
            options.initial_applications = apps.clone();
        }
        for (app, references) in &self.references {
            for reference in references {
                options.declared.insert((app.clone(), reference.clone()));
            }
        }
        options.admit_unknown_references = self.admit_unknown_references;
        if let Some(n) = self.undeclared_keys_per_minute {
            options.undeclared_keys_per_minute = n;
        }
        Ok(options)
    }

    /// The key store's database: the table's `database_url`, else `$G2P_KMS_DATABASE_URL`
    /// (read through `env`); `None`: the data directory's SQLite store.
    pub fn database(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<crate::store::PostgresOptions> {
        let url = self.database_url.clone().or_else(|| {
            env(DATABASE_URL_ENV)
                .filter(|u| !u.trim().is_empty())
                .map(secrecy::SecretString::from)
        })?;
        Some(crate::store::PostgresOptions {
            url,
            ca: self.database_ca.clone(),
            pool_size: self
                .database_pool_size
                .unwrap_or(crate::store::postgres::DEFAULT_POOL_SIZE),
        })
    }

    /// The backend of the configured store without opening a key store over it (for
    /// administration that works on rows: `kms migrate-kek`).
    ///
    /// # Errors
    /// As [`crate::store::PostgresBackend::connect`] and [`crate::store::SqliteBackend::open`];
    /// [`KmsError::Config`] when `dir` holds no store.
    pub fn backend(
        &self,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Box<dyn crate::store::Backend>, KmsError> {
        match self.database(&env) {
            Some(database) => Ok(Box::new(crate::store::PostgresBackend::connect(&database)?)),
            None if dir.join(crate::kek::STORE_FILE).is_file() => {
                Ok(Box::new(crate::store::SqliteBackend::open(dir)?))
            }
            None => Err(KmsError::Config(format!(
                "no key store in {} ({} is missing)",
                dir.display(),
                crate::kek::STORE_FILE
            ))),
        }
    }

    /// Opens the embedded key manager with these settings: over the configured database
    /// (the key-encryption key must then be given: `G2P_KMS_KEK`, read through `env`, or a
    /// `kek` file in `dir`), else over the SQLite store in `dir` (its `kek` file made on
    /// first start); the policies, the initial applications.
    ///
    /// # Errors
    /// A wrong or unreadable key-encryption key, an unusable directory or database, a bad
    /// policy ([`KmsError::Config`]); database failures ([`KmsError::Internal`]).
    pub fn open(
        &self,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<crate::Kms, KmsError> {
        self.open_store(dir, env, false)
    }

    fn open_store(
        &self,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
        must_exist: bool,
    ) -> Result<crate::Kms, KmsError> {
        use crate::store::Backend;
        match self.database(&env) {
            Some(database) => {
                let backend = crate::store::PostgresBackend::connect(&database)?;
                let exists = backend.has_keys("ROOT", "")?;
                if must_exist && !exists {
                    return Err(KmsError::Config(format!(
                        "no key store in the {}; check the database URL, or create a store by starting `kms serve` once (or `kms migrate` an existing one into it)",
                        backend.location()
                    )));
                }
                let kek = self.kek.load(self.kek.source, dir, &env, (exists, true))?;
                crate::Kms::open_with(Box::new(backend), kek, self.store_options()?)
            }
            None => {
                let exists = dir.join(crate::kek::STORE_FILE).is_file();
                let kek = self.kek.load(self.kek.source, dir, &env, (exists, false))?;
                crate::Kms::open(dir, kek, self.store_options()?)
            }
        }
    }

    /// Opens the key store that must already be in `dir` (for administration: listing,
    /// rotating, backing up), as [`KmsSettings::open`] otherwise.
    ///
    /// # Errors
    /// [`KmsError::Config`] naming the directory when it holds no key store, so that a
    /// mistyped directory does not mint a new one; otherwise as [`KmsSettings::open`].
    pub fn open_existing(
        &self,
        dir: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<crate::Kms, KmsError> {
        let store = dir.join(crate::kek::STORE_FILE);
        if self.database(&env).is_none() && !store.is_file() {
            return Err(KmsError::Config(format!(
                "no key store in {} ({} is missing); check the data directory, or create a store by starting `kms serve` or `serve` once",
                dir.display(),
                crate::kek::STORE_FILE
            )));
        }
        self.open_store(dir, env, true)
    }

    /// `kms serve`'s limits.
    ///
    /// # Errors
    /// [`KmsError::Config`] for a timeout that is not a positive number of seconds, or a
    /// limit of zero requests.
    pub fn server_options(&self) -> Result<crate::server::ServerOptions, KmsError> {
        let defaults = crate::server::ServerOptions::default();
        let request_timeout = match self.request_timeout {
            None => defaults.request_timeout,
            Some(t) => std::time::Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    KmsError::Config(format!(
                        "kms.request_timeout must be a positive number of seconds, not {t}"
                    ))
                })?,
        };
        let max_concurrent_requests = match self.max_concurrent_requests {
            None => defaults.max_concurrent_requests,
            Some(0) => {
                return Err(KmsError::Config(
                    "kms.max_concurrent_requests must be at least 1".into(),
                ));
            }
            Some(n) => n,
        };
        Ok(crate::server::ServerOptions {
            request_timeout,
            max_concurrent_requests,
        })
    }

    /// The configured clients.
    pub fn clients(&self) -> Vec<Client> {
        self.clients
            .iter()
            .map(|c| {
                Client::new(
                    &c.id,
                    c.secret.expose_secret(),
                    c.roles.clone().unwrap_or_else(|| {
                        DEFAULT_CLIENT_ROLES.iter().map(|r| r.to_string()).collect()
                    }),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_directory_order_and_policy_checks() {
        let table = KmsSettings {
            data_dir: Some("/from/table".into()),
            ..KmsSettings::default()
        };
        let env = |k: &str| (k == DATA_DIR_ENV).then(|| "/from/env".to_string());
        assert_eq!(
            table.data_dir(Some(Path::new("/flag")), env),
            Path::new("/flag")
        );
        assert_eq!(table.data_dir(None, env), Path::new("/from/table"));
        let empty = KmsSettings::default();
        assert_eq!(empty.data_dir(None, env), Path::new("/from/env"));
        assert_eq!(empty.data_dir(None, |_| None), Path::new(DEFAULT_DATA_DIR));
        let mut bad = KmsSettings::default();
        bad.policies.insert(
            "X".into(),
            KeyPolicy {
                validity_days: 10,
                pre_expire_days: 10,
            },
        );
        let e = bad.store_options().unwrap_err();
        assert!(e.to_string().contains("kms.policies.X"), "{e}");
    }
}
