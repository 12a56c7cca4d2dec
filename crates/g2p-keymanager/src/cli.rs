//! The command line: arguments, the log set-up, and dispatch to one module per subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use g2p_config::Config;
use g2p_encryption::audit::{AuditLog, AuditSettings};
use g2p_encryption::deadline;

use crate::audit::Audit;
use crate::failure::Failure;
use crate::{bulk_cmd, commands, kms_cmd, registry_cmd, serve_cmd};

/// Encryption, decryption, JWS signing and verification through a MOSIP Keymanager, without
/// the application ever holding private keys.
///
/// Exit codes: 0 success; 1 verification or decryption refused; 2 usage, configuration or
/// malformed input; 3 the key manager or the auth server could not be reached or answered
/// with an error (or the embedded key store failed); 4 this machine failed the command (an
/// address in use, a file that cannot be written).
#[derive(Debug, Parser)]
#[command(name = "g2p-keymanager", version)]
pub struct Cli {
    /// Configuration file (TOML, `[providers.NAME]` tables). `KEYMANAGER_*` variables
    /// override it.
    #[arg(
        long,
        global = true,
        env = "G2P_KEYMANAGER_CONFIG",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// Provider to use (default: `default_provider` of the file, or `default`). For `serve`,
    /// the default provider; every configured provider is served.
    #[arg(long, global = true, value_name = "NAME")]
    pub provider: Option<String>,
    /// The audit trail: one JSON line per key operation, appended to this file (`-`: standard
    /// error); else `[audit] path`; else none.
    #[arg(long, global = true, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Log format on standard error: `text` or `json` (one object per line). The level comes
    /// from `G2P_LOG` (e.g. `info`, `g2p_gateway=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Longest time a command that uses a provider may take, seconds (e.g. `30`, `2.5`):
    /// retries stop in time for it, and the command fails (exit 3) when it is over, writing
    /// no output file. Not for `serve` and `kms serve`.
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP gateway (encrypt, decrypt, sign, verify, JWKS, health, metrics) over
    /// the configured providers; without configuration, over the embedded key manager.
    Serve(serve_cmd::ServeArgs),
    /// Make or hash the gateway's API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(serve_cmd::ApiKeyCommand),
    /// Encrypt raw bytes; print the base64url ciphertext.
    Encrypt(commands::InOut),
    /// Decrypt a base64url ciphertext; print the raw plaintext.
    Decrypt(commands::InOut),
    /// Sign a JSON document (or text with --text); print the compact JWS.
    Sign(commands::SignArgs),
    /// Verify a compact JWS; print the verified payload.
    Verify(commands::VerifyArgs),
    /// Print the public keys as a JWK set.
    Jwks,
    /// Fetch an access token; print its subject and expiry.
    Token(commands::TokenArgs),
    /// Encrypt or decrypt chosen fields of every record of a JSON Lines or CSV file, each
    /// field its own ciphertext, many at once; written whole or not at all.
    #[command(subcommand)]
    Bulk(bulk_cmd::BulkCommand),
    /// OpenG2P registry encryption — a registrant's personal fields sealed into one
    /// ciphertext in `encrypted_val` — over a JSON Lines or CSV file or a live PostgreSQL
    /// registry: encrypt, decrypt, rewrap after a key rotation, inspect.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCommand),
    /// The embedded key manager: serve it, list and rotate its keys, back it up and restore it.
    #[command(subcommand)]
    Kms(kms_cmd::KmsCommand),
    /// Measure the configured provider: operations per second, latency percentiles, errors,
    /// retries and token fetches per operation, next to this machine's crypto ceiling for it.
    Bench(crate::bench_cmd::BenchArgs),
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::ApiKey(command) = &cli.command {
        return serve_cmd::api_key(command);
    }
    let config = Config::load(cli.config.as_deref())?;
    let sink = config
        .section::<AuditSettings>("audit")?
        .sink(cli.audit_log.as_deref());
    let log = AuditLog::open(&sink)
        .map_err(|e| Failure::usage(format!("cannot open the audit log {sink:?}: {e}")))?;
    let audit = Audit::new(log);
    let result = run_command(&cli, &config, &audit).await;
    audit.flush()?;
    result
}

async fn run_command(cli: &Cli, config: &Config, audit: &Audit) -> Result<(), Failure> {
    if let Command::Kms(command) = &cli.command {
        return kms_cmd::run(command, config, audit).await;
    }
    if let Command::Serve(args) = &cli.command {
        return serve_cmd::serve(config, cli.provider.as_deref(), args, audit.log()).await;
    }
    let (name, provider) = config.provider(cli.provider.as_deref())?;
    tracing::debug!(provider = %name, "provider selected");
    let used = Used {
        name: &name,
        provider: &provider,
        audit,
    };
    let work = async {
        match &cli.command {
            Command::Encrypt(io) => commands::encrypt(&used, io).await,
            Command::Decrypt(io) => commands::decrypt(&used, io).await,
            Command::Sign(args) => commands::sign(&used, args).await,
            Command::Verify(args) => commands::verify(&used, args).await,
            Command::Jwks => commands::jwks(&provider).await,
            Command::Token(args) => commands::token(&provider, args).await,
            Command::Bulk(command) => bulk_cmd::run(&used, command).await,
            Command::Registry(command) => {
                let settings = config.section("registry")?;
                registry_cmd::run(&used, command, &settings).await
            }
            Command::Bench(args) => crate::bench_cmd::run(&used, args).await,
            Command::Kms(_) | Command::ApiKey(_) | Command::Serve(_) => Ok(()),
        }
    };
    let Some(budget) = cli.timeout else {
        return work.await;
    };
    match tokio::time::timeout(budget, deadline::within(budget, work)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::of_kind(
            g2p_encryption::ErrorKind::Timeout,
            format!(
                "the command did not finish within {} s (--timeout)",
                budget.as_secs_f64()
            ),
        )),
    }
}

/// `--timeout`: a positive number of seconds.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// The provider a command uses, under its name, and the audit trail it records in.
#[derive(Debug)]
pub struct Used<'a> {
    /// The provider's name.
    pub name: &'a str,
    /// The provider.
    pub provider: &'a g2p_config::Provider,
    /// The audit trail.
    pub audit: &'a Audit,
}

impl Used<'_> {
    /// Records an operation on `items` values (`succeeded` of them) with `keys`, and the
    /// failure of `result`, and gives `result` back.
    pub fn record<T>(
        &self,
        operation: &'static str,
        keys: Vec<String>,
        (items, succeeded): (usize, usize),
        result: Result<T, Failure>,
    ) -> Result<T, Failure> {
        self.audit.record(
            operation,
            (self.name, self.provider),
            keys,
            (items, succeeded),
            result.as_ref().err(),
        );
        result
    }
}

/// Logs to stderr: `G2P_LOG` (an `EnvFilter`) or the command's default level, as text or JSON.
pub fn init_logs(cli: &Cli) {
    // Services log their requests; one-shot commands only their warnings.
    let default_level = match &cli.command {
        Command::Serve(_) | Command::Kms(kms_cmd::KmsCommand::Serve(_)) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("G2P_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
}
