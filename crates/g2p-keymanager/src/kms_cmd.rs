//! `g2p-keymanager kms ...`: the embedded key manager's server and key administration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use g2p_kms::server::auth::{Client, Realm};
use g2p_kms::server::{ServerState, serve};

use crate::config::{FileConfig, data_dir, open_kms};
use crate::failure::{EXIT_UNAVAILABLE, Failure};

/// `kms` subcommands.
#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Serve the MOSIP Keymanager API and a Keycloak-compatible token endpoint.
    Serve(ServeArgs),
    /// Inspect or rotate keys in the data directory.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `kms keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List every key: application, reference, keyId, thumbprint, validity.
    List(DataDirArg),
    /// Make a new current key for an application/reference (old keys keep decrypting).
    Rotate(RotateArgs),
}

/// The data directory.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data directory (default `$G2P_DATA_DIR`, else `./g2p-data`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs a `kms` subcommand.
pub async fn run(command: &KmsCommand, file: &mut FileConfig) -> Result<(), Failure> {
    let given_dir = |arg: &Option<PathBuf>| arg.clone().or(file.kms.data_dir.clone());
    match command {
        KmsCommand::Keys(KeysCommand::List(dir)) => {
            let kms = open_kms(
                &data_dir(given_dir(&dir.data_dir), &env),
                &env,
                file.kms.store_options()?,
            )?;
            let mut out = String::from(
                "application\treference\tkey_id\tthumbprint\tissued_at\texpires_at\tkind\n",
            );
            for r in kms
                .store()
                .list()
                .map_err(|e| Failure::usage(e.to_string()))?
            {
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
            crate::io::write_output(None, out.as_bytes())
        }
        KmsCommand::Keys(KeysCommand::Rotate(args)) => {
            let kms = open_kms(
                &data_dir(given_dir(&args.dir.data_dir), &env),
                &env,
                file.kms.store_options()?,
            )?;
            let record = kms
                .store()
                .rotate(&args.app, &args.reference)
                .map_err(|e| Failure::usage(e.to_string()))?;
            crate::io::write_output(
                None,
                format!("{}\t{}\n", record.key_id, record.thumbprint).as_bytes(),
            )
        }
        KmsCommand::Serve(args) => serve_command(args, file).await,
    }
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

fn default_client(dir: &std::path::Path) -> Result<Client, Failure> {
    let path = dir.join("default-client-secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 24];
            getrandom_fill(&mut bytes)?;
            let secret = g2p_encryption::b64::encode_b64u(&bytes);
            write_private(&path, secret.as_bytes())
                .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
            secret
        }
    };
    Ok(Client::new(
        "openg2p-admin-client",
        &secret,
        g2p_kms::server::auth::DEFAULT_CLIENT_ROLES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ))
}

pub(crate) fn getrandom_fill(bytes: &mut [u8]) -> Result<(), Failure> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .map_err(|e| Failure::usage(format!("no randomness: {e}")))
}

fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(data)
}

async fn serve_command(args: &ServeArgs, file: &mut FileConfig) -> Result<(), Failure> {
    let table = &mut file.kms;
    if args.admit_unknown_applications {
        table.admit_unknown_applications = true;
    }
    let dir = data_dir(args.dir.data_dir.clone().or(table.data_dir.clone()), &env);
    let kms = open_kms(&dir, &env, table.store_options()?)?;
    let mut clients = table.clients();
    for spec in &args.clients {
        clients.push(Client::parse(spec).map_err(Failure::usage)?);
    }
    let listen = args
        .listen
        .or(table.listen)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8088)));
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
    let default_client = if clients.is_empty() {
        let c = default_client(&dir)?;
        clients.push(c.clone());
        Some(c)
    } else {
        None
    };
    let (listener, addr) = crate::service::bind(listen).await?;
    let base = format!("http://{addr}");
    // The realm's signing key is kept (wrapped) in the data directory: tokens survive a
    // restart on the same address.
    let realm_key = kms
        .store()
        .realm_key(&realm_name)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let realm = Realm::with_key(&realm_name, &base, clients, token_lifetime, &realm_key)
        .map_err(|e| Failure::usage(e.to_string()))?;
    let mut banner = format!("{base}\n");
    banner.push_str(&format!("KEYMANAGER_API_BASE_URL={base}/v1/keymanager\n"));
    banner.push_str(&format!(
        "KEYMANAGER_AUTH_URL={base}/realms/{realm_name}/protocol/openid-connect/token\n"
    ));
    if let Some(c) = &default_client {
        banner.push_str(&format!(
            "KEYMANAGER_AUTH_CLIENT_ID={}\nKEYMANAGER_AUTH_CLIENT_SECRET is in {}\n",
            c.id,
            dir.join("default-client-secret").display()
        ));
    }
    crate::io::write_output(None, banner.as_bytes())?;
    tracing::info!(%addr, data_dir = %dir.display(), "key manager serving");
    let state = ServerState::new(Arc::clone(&kms), realm);
    serve(listener, state, crate::service::signal())
        .await
        .map_err(|e| Failure {
            exit: EXIT_UNAVAILABLE,
            message: format!("server: {e}"),
        })
}
