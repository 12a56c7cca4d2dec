//! `g2p-keymanager serve`: the gateway over the configured providers, and
//! `g2p-keymanager api-key new`.

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use g2p_config::Config;
use g2p_encryption::audit::AuditLog;
use g2p_gateway::{GatewaySettings, GatewayState, hash_key};

use crate::failure::Failure;
use crate::service::{self, TlsArgs, TlsSettings, transport};

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: `[gateway] listen`, else 127.0.0.1:8080; port 0 picks a
    /// free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `api-key` subcommands.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Make a new random API key; print it, then the configuration lines with its hash.
    New(NewKeyArgs),
    /// Print the configuration hash of an existing key read from standard input.
    Hash,
}

/// `api-key new` arguments.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// A name for logs, e.g. the calling application.
    #[arg(long)]
    pub name: String,
    /// Scopes: encrypt, decrypt, sign, verify (repeat or separate with commas).
    #[arg(long = "scope", value_delimiter = ',', required = true)]
    pub scopes: Vec<String>,
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn serve(
    config: &Config,
    provider: Option<&str>,
    args: &ServeArgs,
    audit: &AuditLog,
) -> Result<(), Failure> {
    let gateway: GatewaySettings = config.section("gateway")?;
    let listen = gateway.listen(args.listen);
    let tls: Option<TlsSettings> = config.section("gateway.tls")?;
    let transport = transport(listen, tls.as_ref(), &args.tls)?;
    let options = gateway.options().map_err(Failure::usage)?;
    let keys = gateway.api_keys().map_err(Failure::usage)?;
    let providers = config.providers(provider)?;
    let (registry, built) = (providers.registry, providers.built);
    // Two providers must not publish different keys under one key id.
    match g2p_gateway::keys::collisions(&registry).await {
        Ok(collisions) if !collisions.is_empty() => {
            let all: Vec<String> = collisions.iter().map(ToString::to_string).collect();
            return Err(Failure::usage(format!(
                "{}; a JWKS cannot hold both, so tokens of one would not verify",
                all.join("; ")
            )));
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not compare the providers' key ids at start-up")
        }
    }
    let default = registry.default_name().unwrap_or("default").to_string();
    let key_count = keys.len();
    let state = GatewayState::with_audit(registry, keys, options, audit.clone())?;
    let (listener, addr) = crate::service::bind(listen).await?;
    let mut banner = format!("{}://{addr}\n", transport.scheme());
    for (name, provider) in &built {
        banner.push_str(&format!("provider {name}: {}", provider.describe()));
        if *name == default {
            banner.push_str(" (default)");
        }
        banner.push('\n');
    }
    if key_count == 0 {
        banner.push_str(
            "no API keys configured: only clients on this machine (loopback) are served\n",
        );
        tracing::warn!("no API keys configured: only loopback clients are served");
    } else {
        banner.push_str(&format!(
            "{key_count} API key(s) configured: callers authenticate with Authorization: Bearer\n"
        ));
    }
    if !audit.is_on() {
        banner.push_str(
            "audit trail off (--audit-log PATH or [audit] path records every key operation)\n",
        );
    }
    crate::io::write_output(None, banner.as_bytes())?;
    tracing::info!(%addr, providers = built.len(), default = %default, "gateway serving");
    let upkeep = tokio::spawn(g2p_gateway::observe::upkeep());
    let served = service::serve(
        listener,
        g2p_gateway::app(state),
        transport,
        crate::service::signal(),
    )
    .await;
    upkeep.abort();
    served.map_err(|e| Failure::system(format!("gateway: {e}")))
}

/// Runs an `api-key` subcommand.
pub fn api_key(command: &ApiKeyCommand) -> Result<(), Failure> {
    match command {
        ApiKeyCommand::New(args) => {
            for scope in &args.scopes {
                g2p_gateway::Scope::parse(scope).map_err(Failure::usage)?;
            }
            let mut bytes = [0u8; 32];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| Failure::system("the system has no randomness"))?;
            let key = format!("g2pk_{}", g2p_encryption::b64::encode_b64u(&bytes));
            let scopes: Vec<String> = args
                .scopes
                .iter()
                .map(|s| format!("{:?}", s.trim()))
                .collect();
            let out = format!(
                "{key}\n# Give the key above to {name:?}; put these lines in the configuration file:\n[[gateway.api_keys]]\nname = {name:?}\nhash = \"{hash}\"\nscopes = [{scopes}]\n",
                name = args.name,
                hash = hash_key(&key),
                scopes = scopes.join(", ")
            );
            crate::io::write_output(None, out.as_bytes())
        }
        ApiKeyCommand::Hash => {
            let key = crate::io::read_input(None)?;
            let key =
                String::from_utf8(key).map_err(|_| Failure::usage("the key is not UTF-8 text"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(Failure::usage("no key on standard input"));
            }
            crate::io::write_output(None, format!("{}\n", hash_key(key)).as_bytes())
        }
    }
}
