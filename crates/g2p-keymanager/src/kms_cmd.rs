//! `g2p-keymanager kms ...`: the embedded key manager's server and key administration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use g2p_config::Config;
use g2p_kms::keyfile;
use g2p_kms::server::auth::{Client, Realm};
use g2p_kms::server::{ServerState, app};
use g2p_kms::{KeyRecord, Kms, KmsSettings};

use crate::audit::Audit;
use crate::failure::Failure;
use crate::service::{TlsArgs, TlsSettings, serve, transport};
use g2p_encryption::audit::AuditLog;

/// `kms` subcommands.
#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Serve the MOSIP Keymanager API and a Keycloak-compatible token endpoint.
    Serve(ServeArgs),
    /// Inspect or rotate keys in the data directory.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write a backup of the key store: its keys still wrapped under the key-encryption key
    /// (which is not in the backup: keep it apart), and the realms' token signing keys.
    /// Consistent while `kms serve` runs.
    Backup(BackupArgs),
    /// Restore a backup into a data directory that holds no key store, after checking that
    /// it is intact and that the key-encryption key opens every key in it.
    Restore(RestoreArgs),
    /// Copy the key store of a data directory into a PostgreSQL database, for replicas: every
    /// key (still wrapped), certificate and realm key; checked by reading the copy back and
    /// decrypting, through the database, ciphertexts sealed before the copy.
    Migrate(crate::kms_migrate::MigrateArgs),
    /// Move the key-encryption key: re-wrap every private key and realm key under a new one
    /// (`--to pkcs11`: into an HSM; `--to file`: back to a file, or a new file), in one
    /// transaction, each checked; nothing is re-issued. Stop `kms serve` first.
    MigrateKek(crate::kms_migrate::MigrateKekArgs),
}

/// `kms backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The backup file (replaced whole if it exists; created readable by its owner only).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `kms restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Data directory to restore into (default `[kms] data_dir`, else `$G2P_DATA_DIR`, else
    /// `./g2p-data`); it must hold no key store.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The backup file `kms backup` wrote.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
    /// The key-encryption key the backup was made under (the `kek` file of the store it was
    /// taken from), copied into the data directory. Without it: `$G2P_KMS_KEK`, else a
    /// `kek` file already in the data directory.
    #[arg(long, value_name = "FILE")]
    pub kek_file: Option<PathBuf>,
}

/// `kms keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key: application, reference, keyId, thumbprint, validity.
    List(DataDirArg),
    /// Make a new current key for an application/reference (old keys keep decrypting);
    /// prints it as `list` does.
    Rotate(RotateArgs),
}

/// Where the keys are: the data directory, or a database. `Debug` hides the database URL.
#[derive(Args)]
pub struct DataDirArg {
    /// Data directory (default `[kms] data_dir`, else `$G2P_DATA_DIR`, else `./g2p-data`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the keys in this PostgreSQL database instead, shared by replicas:
    /// `postgres://…` (default `[kms] database_url`, else `$G2P_KMS_DATABASE_URL`; the
    /// environment keeps a password out of the process list). The key-encryption key must
    /// then be given: `$G2P_KMS_KEK`, or a `kek` file in the data directory.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// A PEM file of CA certificates for the database server (default `[kms] database_ca`).
    #[arg(long, value_name = "PEM")]
    pub database_ca: Option<PathBuf>,
    /// Where the key-encryption key is: `file` (the data directory's `kek`, or
    /// `$G2P_KMS_KEK` when set), `env` (`$G2P_KMS_KEK`) or `pkcs11` (a non-extractable key in
    /// a PKCS#11 token; the user PIN from `$G2P_KMS_PKCS11_PIN`). Default `[kms.kek] source`.
    #[arg(long, value_name = "SOURCE", value_parser = ["file", "env", "pkcs11"])]
    pub kek: Option<String>,
    /// PKCS#11: the library, e.g. /usr/lib/softhsm/libsofthsm2.so (default `[kms.kek] module`).
    #[arg(long, value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// PKCS#11: the token's label (default `[kms.kek] token_label`).
    #[arg(long, value_name = "LABEL")]
    pub pkcs11_token_label: Option<String>,
    /// PKCS#11: the slot's id, instead of the token's label (default `[kms.kek] slot`).
    #[arg(long, value_name = "ID")]
    pub pkcs11_slot: Option<u64>,
    /// PKCS#11: the key's label (default `[kms.kek] key_label`, else `g2p-kms-kek`).
    #[arg(long, value_name = "LABEL")]
    pub pkcs11_key_label: Option<String>,
}

/// The `[kms.kek] source` a flag names.
pub(crate) fn kek_kind(name: &str) -> g2p_kms::settings::KekKind {
    match name {
        "env" => g2p_kms::settings::KekKind::Env,
        "pkcs11" => g2p_kms::settings::KekKind::Pkcs11,
        _ => g2p_kms::settings::KekKind::File,
    }
}

/// `Some("[redacted]")` for a given URL.
pub(crate) fn redacted(url: Option<&String>) -> Option<&'static str> {
    url.map(|_| "[redacted]")
}

impl std::fmt::Debug for DataDirArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDirArg")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redacted(self.database_url.as_ref()))
            .field("database_ca", &self.database_ca)
            .field("kek", &self.kek)
            .field("pkcs11_module", &self.pkcs11_module)
            .field("pkcs11_token_label", &self.pkcs11_token_label)
            .field("pkcs11_slot", &self.pkcs11_slot)
            .field("pkcs11_key_label", &self.pkcs11_key_label)
            .finish()
    }
}

impl DataDirArg {
    /// The `[kms]` table with these flags applied.
    pub(crate) fn settings(&self, config: &Config) -> KmsSettings {
        let mut table = config.kms().clone();
        if let Some(url) = &self.database_url {
            table.database_url = Some(url.clone().into());
        }
        if let Some(ca) = &self.database_ca {
            table.database_ca = Some(ca.clone());
        }
        if let Some(kind) = &self.kek {
            table.kek.source = kek_kind(kind);
        }
        if let Some(module) = &self.pkcs11_module {
            table.kek.module = Some(module.clone());
        }
        if let Some(label) = &self.pkcs11_token_label {
            table.kek.token_label = Some(label.clone());
        }
        if let Some(slot) = self.pkcs11_slot {
            table.kek.slot = Some(slot);
        }
        if let Some(label) = &self.pkcs11_key_label {
            table.kek.key_label = Some(label.clone());
        }
        table
    }
}

/// `kms keys rotate` arguments.
#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Application id, e.g. REGISTRATION.
    #[arg(long)]
    pub app: String,
    /// Reference id (empty for the master key).
    #[arg(long = "ref", default_value = "")]
    pub reference: String,
}

/// `kms serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `[kms] listen`, else 127.0.0.1:8088; port 0 picks a
    /// free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Realm of the token endpoint (default: `[kms] realm`, else `openg2p`).
    #[arg(long)]
    pub realm: Option<String>,
    /// The URL clients reach the key manager at, e.g. a load balancer's in front of
    /// replicas (default: `[kms] public_url`, else the address it listens on). Tokens name
    /// it as their issuer, so replicas given the same one accept each other's tokens.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// A client allowed to get tokens, `ID:SECRET` or `ID:SECRET:ROLE,ROLE` (repeatable; the
    /// `[kms] clients` of the configuration file are added). Without any, a client
    /// `openg2p-admin-client` with a secret kept in the data directory.
    #[arg(long = "client", value_name = "ID:SECRET")]
    pub clients: Vec<String>,
    /// Lifetime of issued tokens, seconds (default: `[kms] token_lifetime`, else 300).
    #[arg(long)]
    pub token_lifetime: Option<i64>,
    /// Give applications without a key policy the standard one instead of refusing them
    /// with KER-KMS-002 (also `[kms] admit_unknown_applications`).
    #[arg(long)]
    pub admit_unknown_applications: bool,
    /// Let crypto calls make keys for references the configuration does not declare, as the
    /// MOSIP Keymanager does (ids checked, key generation rate-limited; also
    /// `[kms] admit_unknown_references`).
    #[arg(long)]
    pub admit_unknown_references: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Opens the key store that must be in the data directory `given` (else the configured
/// one): administration never creates a store.
fn open_existing(config: &Config, given: &DataDirArg) -> Result<Kms, Failure> {
    let table = given.settings(config);
    let dir = table.data_dir(given.data_dir.as_deref(), env);
    Ok(table.open_existing(&dir, env)?)
}

/// Runs a `kms` subcommand.
pub async fn run(command: &KmsCommand, config: &Config, audit: &Audit) -> Result<(), Failure> {
    match command {
        KmsCommand::Keys(KeysCommand::List(dir)) => {
            let kms = open_existing(config, dir)?;
            crate::io::write_output(None, key_table(&kms.store().list()?).as_bytes())
        }
        KmsCommand::Keys(KeysCommand::Rotate(args)) => {
            let kms = open_existing(config, &args.dir)?;
            let result = kms
                .store()
                .rotate(&args.app, &args.reference)
                .map_err(Failure::from);
            let key = result.as_ref().ok().map(|r| r.key_id.clone());
            let pair = Some((args.app.clone(), args.reference.clone()));
            let done = usize::from(result.is_ok());
            audit.record_pair(
                "rotate",
                None,
                pair,
                key.into_iter().collect(),
                (1, done),
                result.as_ref().err(),
            );
            crate::io::write_output(None, key_table(&[result?]).as_bytes())
        }
        KmsCommand::Serve(args) => serve_command(args, config, audit.log()).await,
        KmsCommand::Backup(args) => {
            let table = args.dir.settings(config);
            let dir = table.data_dir(args.dir.data_dir.as_deref(), env);
            let (result, store) = match table.database(env) {
                Some(database) => {
                    let backup =
                        g2p_kms::store::PostgresBackend::connect(&database).and_then(|backend| {
                            g2p_kms::backup::backup_backend(&backend, &args.out, &dir)
                        });
                    (backup, "the key store's database".to_string())
                }
                None => (
                    g2p_kms::backup::backup(&dir, &args.out),
                    dir.display().to_string(),
                ),
            };
            let result = result.map_err(Failure::from);
            audit_whole(audit, "backup", &result);
            let summary = result?;
            let text = format!(
                "backed up {store} into {}\n{}\nthe backup opens only with the key-encryption key of {store}: keep that key apart from the backup\n",
                args.out.display(),
                describe(&summary),
            );
            crate::io::write_output(None, text.as_bytes())
        }
        KmsCommand::MigrateKek(args) => crate::kms_migrate::migrate_kek(args, config, audit),
        KmsCommand::Migrate(args) => crate::kms_migrate::migrate(args, config, audit),
        KmsCommand::Restore(args) => {
            let dir = config.kms().data_dir(args.data_dir.as_deref(), env);
            let from_env = env(g2p_kms::kek::KEK_ENV).filter(|v| !v.trim().is_empty());
            let source = match (&args.kek_file, &from_env) {
                (Some(path), _) => g2p_kms::backup::KekSource::File(path),
                (None, Some(value)) => g2p_kms::backup::KekSource::Base64(value),
                (None, None) => g2p_kms::backup::KekSource::DataDir,
            };
            let result = g2p_kms::backup::restore(&args.input, &dir, source).map_err(Failure::from);
            audit_whole(audit, "restore", &result);
            let summary = result?;
            let text = format!(
                "restored {} into {}\n{}\n",
                args.input.display(),
                dir.display(),
                describe(&summary)
            );
            crate::io::write_output(None, text.as_bytes())
        }
    }
}

/// Records a whole-store operation in the audit trail.
pub(crate) fn audit_whole<T>(audit: &Audit, operation: &'static str, result: &Result<T, Failure>) {
    let done = usize::from(result.is_ok());
    audit.record_pair(
        operation,
        None,
        None,
        Vec::new(),
        (1, done),
        result.as_ref().err(),
    );
}

/// What a backup holds, in a line.
fn describe(summary: &g2p_kms::backup::BackupSummary) -> String {
    let made = summary
        .made_at
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or_else(String::new, |t| format!(", made {t}"));
    let realms = if summary.realms.is_empty() {
        "no realm keys".to_string()
    } else {
        format!("realm keys: {}", summary.realms.join(", "))
    };
    format!(
        "{} keys ({} with a private key), {realms}{made}",
        summary.keys, summary.private_keys
    )
}

/// Keys as a tab-separated table with a header line.
fn key_table(records: &[KeyRecord]) -> String {
    let mut out =
        String::from("application\treference\tkey_id\tthumbprint\tissued_at\texpires_at\tkind\n");
    for r in records {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{:?}\n",
            r.application_id,
            if r.reference_id.is_empty() {
                "-"
            } else {
                &r.reference_id
            },
            r.key_id,
            r.thumbprint,
            rfc3339(r.generated_at),
            rfc3339(r.expires_at),
            r.kind
        ));
    }
    out
}

fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// The clients `kms serve` admits from the table and the flags; with the keys in a shared
/// database they must be named (a default client's secret would differ between replicas),
/// and a missing `--public-url` is warned about.
fn named_clients(args: &ServeArgs, table: &KmsSettings) -> Result<Vec<Client>, Failure> {
    let shared = table.database(env).is_some();
    let mut clients = table.clients();
    for spec in &args.clients {
        clients.push(Client::parse(spec).map_err(Failure::usage)?);
    }
    if clients.is_empty() && shared {
        return Err(Failure::usage(
            "with the keys in a database, name the clients every replica admits (--client ID:SECRET, or [kms] clients): a default client's secret would differ from replica to replica",
        ));
    }
    if shared && args.public_url.is_none() && table.public_url.is_none() {
        tracing::warn!(
            "the keys are in a shared database but no --public-url is set: tokens name this replica's own address as their issuer, and other replicas refuse them; give every replica the URL its clients use"
        );
    }
    Ok(clients)
}

async fn serve_command(args: &ServeArgs, config: &Config, audit: &AuditLog) -> Result<(), Failure> {
    let mut table = args.dir.settings(config);
    table.admit_unknown_applications |= args.admit_unknown_applications;
    table.admit_unknown_references |= args.admit_unknown_references;
    let server_options = table.server_options()?;
    let dir = table.data_dir(args.dir.data_dir.as_deref(), env);
    let mut clients = named_clients(args, &table)?;
    let kms = Arc::new(table.open(&dir, env)?);
    // The pairs the configured providers use may have keys made on first use.
    for (app, reference) in config.provider_pairs() {
        kms.declare(&app, &reference);
    }
    let default_client = if clients.is_empty() {
        let client = keyfile::default_client(&dir)?;
        clients.push(client.clone());
        Some(client)
    } else {
        None
    };
    let listen = args
        .listen
        .or(table.listen)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8088)));
    let tls: Option<TlsSettings> = config.section("kms.tls")?;
    let transport = transport(listen, tls.as_ref(), &args.tls)?;
    let realm_name = args
        .realm
        .clone()
        .or(table.realm.clone())
        .unwrap_or_else(|| "openg2p".into());
    let token_lifetime = args.token_lifetime.or(table.token_lifetime).unwrap_or(300);
    if token_lifetime <= 0 {
        return Err(Failure::usage(
            "token lifetime must be a positive number of seconds",
        ));
    }
    let public_url = match args.public_url.clone().or(table.public_url.clone()) {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(url.trim_end_matches('/').to_string())
        }
        Some(url) => {
            return Err(Failure::usage(format!(
                "the public URL must start with http:// or https://, not {url:?}"
            )));
        }
        None => None,
    };
    let (listener, addr) = crate::service::bind(listen).await?;
    let local = format!("{}://{addr}", transport.scheme());
    let base = public_url.unwrap_or_else(|| local.clone());
    // The realm's signing key is kept (wrapped) in the data directory: tokens survive a
    // restart on the same address.
    let realm_key = kms.store().realm_key(&realm_name)?;
    let realm = Realm::with_key(&realm_name, &base, clients, token_lifetime, &realm_key)?;
    let mut banner = format!("{local}\n");
    banner.push_str(&format!("KEYMANAGER_API_BASE_URL={base}/v1/keymanager\n"));
    banner.push_str(&format!(
        "KEYMANAGER_AUTH_URL={base}/realms/{realm_name}/protocol/openid-connect/token\n"
    ));
    if let Some(c) = &default_client {
        banner.push_str(&format!(
            "KEYMANAGER_AUTH_CLIENT_ID={}\nKEYMANAGER_AUTH_CLIENT_SECRET is in {}\n",
            c.id,
            keyfile::default_client_secret_path(&dir).display()
        ));
    }
    crate::io::write_output(None, banner.as_bytes())?;
    tracing::info!(%addr, store = %kms.store().location(), "key manager serving");
    let state = ServerState::with_options(Arc::clone(&kms), realm, server_options)
        .with_audit(audit.clone());
    serve(listener, app(state), transport, crate::service::signal())
        .await
        .map_err(|e| Failure::system(format!("server: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_database_urls() {
        use crate::kms_migrate::MigrateArgs;
        let url = "postgres://kms:s3cr3t@db/keys".to_string();
        let dir = DataDirArg {
            data_dir: None,
            database_url: Some(url.clone()),
            database_ca: None,
            kek: None,
            pkcs11_module: None,
            pkcs11_token_label: None,
            pkcs11_slot: None,
            pkcs11_key_label: None,
        };
        let migrate = MigrateArgs {
            from: PathBuf::from("/var/lib/g2p"),
            to: Some(url),
            database_ca: None,
            force: false,
        };
        for shown in [format!("{dir:?}"), format!("{migrate:?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        let table = dir.settings(&Config::from_toml("").unwrap());
        assert_eq!(table.kek.source, g2p_kms::settings::KekKind::File);
        assert!(!format!("{table:?}").contains("s3cr3t"));
    }
}
