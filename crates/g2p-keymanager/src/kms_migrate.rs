//! `g2p-keymanager kms migrate` (a data directory's store into a database) and
//! `kms migrate-kek` (every key re-wrapped under another key-encryption key).

use std::path::{Path, PathBuf};

use clap::Args;
use g2p_config::Config;

use crate::audit::Audit;
use crate::failure::Failure;
use crate::kms_cmd::{DataDirArg, audit_whole, env, kek_kind, redacted};

/// `kms migrate` arguments. `Debug` hides the database URL (it may hold a password).
#[derive(Args)]
pub struct MigrateArgs {
    /// The data directory whose key store is copied; its `kek` file (or `$G2P_KMS_KEK`) is
    /// the key-encryption key, which the replicas must then be given.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The database to copy into, `postgres://…` (default `[kms] database_url`, else
    /// `$G2P_KMS_DATABASE_URL`; the environment keeps a password out of the process list).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// A PEM file of CA certificates for the database server (default `[kms] database_ca`).
    #[arg(long, value_name = "PEM")]
    pub database_ca: Option<PathBuf>,
    /// Replace a key store the database already holds (its keys are lost).
    #[arg(long)]
    pub force: bool,
}

/// `kms migrate-kek` arguments.
#[derive(Debug, Args)]
pub struct MigrateKekArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Where the key-encryption key goes: `pkcs11` (a new non-extractable key in the token
    /// that `--pkcs11-*` or `[kms.kek]` name) or `file` (a new random key in the data
    /// directory's `kek`). The current one is what `--kek` or `[kms.kek] source` says.
    #[arg(long, value_name = "SOURCE", value_parser = ["file", "pkcs11"])]
    pub to: String,
}

impl std::fmt::Debug for MigrateArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrateArgs")
            .field("from", &self.from)
            .field("to", &redacted(self.to.as_ref()))
            .field("database_ca", &self.database_ca)
            .field("force", &self.force)
            .finish()
    }
}

/// Runs `kms migrate-kek`.
pub fn migrate_kek(args: &MigrateKekArgs, config: &Config, audit: &Audit) -> Result<(), Failure> {
    let result = migrate_kek_command(args, config).map_err(Failure::from);
    audit_whole(audit, "migrate-kek", &result);
    let (summary, after) = result?;
    let text = format!(
        "re-wrapped {} private keys and {} realm keys under the new key-encryption key\n{after}\n",
        summary.private_keys, summary.realm_keys
    );
    crate::io::write_output(None, text.as_bytes())
}

/// Runs `kms migrate`.
pub fn migrate(args: &MigrateArgs, config: &Config, audit: &Audit) -> Result<(), Failure> {
    let result = migrate_command(args, config).map_err(Failure::from);
    audit_whole(audit, "migrate", &result);
    let summary = result?;
    let text = format!(
        "copied {} into the database{}\n{} keys ({} with a private key), realm keys: {}; a ciphertext sealed before the copy under each of {} encryption keys decrypts from the database\nstart the replicas with the same key-encryption key and --database-url\n",
        args.from.display(),
        if summary.replaced {
            ", replacing the store it held"
        } else {
            ""
        },
        summary.keys,
        summary.private_keys,
        if summary.realms.is_empty() {
            "none".to_string()
        } else {
            summary.realms.join(", ")
        },
        summary.verified_ciphertexts
    );
    crate::io::write_output(None, text.as_bytes())
}

/// `kms migrate-kek`: the current key, the new one, the re-wrap; what to do next.
fn migrate_kek_command(
    args: &MigrateKekArgs,
    config: &Config,
) -> Result<(g2p_kms::migrate::RewrapSummary, String), g2p_kms::KmsError> {
    use g2p_kms::settings::KekKind;
    let table = args.dir.settings(config);
    let dir = table.data_dir(args.dir.data_dir.as_deref(), env);
    let shared = table.database(env).is_some();
    let backend = table.backend(&dir, env)?;
    let from = table
        .kek
        .load(table.kek.source, &dir, &env, (true, shared))?;
    if kek_kind(&args.to) == KekKind::Pkcs11 {
        if table.kek.source == KekKind::Pkcs11 {
            return Err(g2p_kms::KmsError::Config(
                "the key-encryption key is in the token already; to leave it, --to file".into(),
            ));
        }
        let to = table
            .kek
            .load(KekKind::Pkcs11, &dir, &env, (false, shared))?;
        let summary = g2p_kms::migrate::rewrap(backend.as_ref(), &from, &to)?;
        let after = format!(
            "the store is now wrapped under the {}: start with --kek pkcs11 and the same --pkcs11-* flags (or [kms.kek] source = \"pkcs11\"), and remove the old key ({}) once every replica runs so",
            to.source(),
            from.source()
        );
        return Ok((summary, after));
    }
    let fresh = dir.join("kek.new");
    let to = new_kek_file(&fresh, &dir)?;
    let summary = match g2p_kms::migrate::rewrap(backend.as_ref(), &from, &to) {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&fresh);
            return Err(e);
        }
    };
    let target = dir.join(g2p_kms::kek::KEK_FILE);
    std::fs::rename(&fresh, &target).map_err(|e| {
        g2p_kms::KmsError::Config(format!(
            "the store is wrapped under the key in {}, which could not be moved to {}: {e}; move it by hand",
            fresh.display(),
            target.display()
        ))
    })?;
    let _ = g2p_encryption::files::sync_dir(&dir);
    let after = format!(
        "the new key is {}{}; start with --kek file (the default){}",
        target.display(),
        if shared {
            " — give every replica a copy"
        } else {
            ""
        },
        if env(g2p_kms::kek::KEK_ENV).is_some() {
            ", and unset G2P_KMS_KEK (it holds the old key)"
        } else {
            ""
        }
    );
    Ok((summary, after))
}

/// A new random key-encryption key in `fresh` (beside the store in `dir`), written before
/// anything is wrapped under it — so nothing ever is under a key that is nowhere — and never
/// over a file left there.
fn new_kek_file(fresh: &Path, dir: &Path) -> Result<g2p_kms::Kek, g2p_kms::KmsError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(bytes.as_mut_slice())
        .map_err(|_| g2p_kms::KmsError::Internal("no randomness".into()))?;
    let created = g2p_encryption::files::create_private_once(fresh, bytes.as_slice())
        .map_err(|e| g2p_kms::KmsError::Config(format!("cannot write {}: {e}", fresh.display())))?;
    if !created {
        return Err(g2p_kms::KmsError::Config(format!(
            "{} exists (left by an earlier migrate-kek?): if the store opens with it, move it to {}; else remove it and run again",
            fresh.display(),
            dir.join(g2p_kms::kek::KEK_FILE).display()
        )));
    }
    g2p_kms::Kek::from_bytes(bytes.as_slice())
}

/// `kms migrate`: the source's key-encryption key, the target's connection, the copy.
fn migrate_command(
    args: &MigrateArgs,
    config: &Config,
) -> Result<g2p_kms::migrate::MigrationSummary, g2p_kms::KmsError> {
    let table = DataDirArg {
        data_dir: None,
        database_url: args.to.clone(),
        database_ca: args.database_ca.clone(),
        kek: None,
        pkcs11_module: None,
        pkcs11_token_label: None,
        pkcs11_slot: None,
        pkcs11_key_label: None,
    }
    .settings(config);
    let database = table.database(env).ok_or_else(|| {
        g2p_kms::KmsError::Config(
            "kms migrate needs the database to copy into: --to postgres://… (or $G2P_KMS_DATABASE_URL)".into(),
        )
    })?;
    let kek = table
        .kek
        .load(table.kek.source, &args.from, &env, (true, true))?;
    let target = g2p_kms::store::PostgresBackend::connect(&database)?;
    g2p_kms::migrate::migrate(&args.from, kek, Box::new(target), args.force)
}
