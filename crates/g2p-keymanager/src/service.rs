//! What `serve` and `kms serve` share: binding the address, HTTPS (rustls) or plain HTTP on
//! loopback, and shutting down gracefully on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::failure::Failure;

/// `--tls-cert`, `--tls-key`, `--tls-client-ca`, `--insecure-plaintext`.
#[derive(Debug, Args, Default)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also require a client certificate issued by one of these CAs (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plain HTTP on an address other machines reach (logged as a warning). Without
    /// TLS, only a loopback address is accepted otherwise.
    #[arg(long)]
    pub insecure_plaintext: bool,
}

/// The `tls` table of `[gateway]` or `[kms]`: the same as the flags, which override it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
    /// CAs of client certificates (PEM); none: no client certificate asked.
    pub client_ca: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

/// How a service is reached.
#[derive(Debug)]
pub enum Transport {
    /// Plain HTTP.
    Plain,
    /// HTTPS.
    Tls(Arc<rustls::ServerConfig>),
}

impl Transport {
    /// The URL scheme.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls(_) => "https",
        }
    }
}

/// The transport for `listen` from the flags over the table: HTTPS with a certificate and a
/// key; plain HTTP on loopback; plain HTTP elsewhere only when asked for, with a warning.
///
/// # Errors
/// A non-loopback address without TLS or `--insecure-plaintext`; certificate or key files
/// that cannot be read or do not fit.
pub fn transport(
    listen: SocketAddr,
    table: Option<&TlsSettings>,
    args: &TlsArgs,
) -> Result<Transport, Failure> {
    let table = table.cloned().unwrap_or_default();
    let cert = args.tls_cert.clone().or(table.cert);
    let key = args.tls_key.clone().or(table.key);
    let client_ca = args.tls_client_ca.clone().or(table.client_ca);
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Transport::Tls(Arc::new(server_config(
            &cert,
            &key,
            client_ca.as_deref(),
        )?))),
        (Some(_), None) | (None, Some(_)) => Err(Failure::usage(
            "TLS needs both a certificate and its key (tls cert and key)",
        )),
        (None, None) if client_ca.is_some() => Err(Failure::usage(
            "client certificates need TLS: give a certificate and its key too",
        )),
        (None, None) if listen.ip().is_loopback() => Ok(Transport::Plain),
        (None, None) if args.insecure_plaintext || table.insecure_plaintext => {
            tracing::warn!(%listen, "serving plain HTTP on an address other machines reach (--insecure-plaintext): tokens, keys and data cross the network in clear");
            Ok(Transport::Plain)
        }
        (None, None) => Err(Failure::usage(format!(
            "{listen} is reachable from other machines: give --tls-cert and --tls-key, or --insecure-plaintext to serve plain HTTP anyway"
        ))),
    }
}

fn read_pem<T>(
    what: &str,
    path: &Path,
    parse: impl FnOnce(&Path) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, Failure> {
    parse(path).map_err(|e| Failure::usage(format!("{what} {}: {e}", path.display())))
}

/// A rustls server configuration from PEM files.
fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, Failure> {
    let chain: Vec<CertificateDer<'static>> = read_pem("TLS certificate", cert, |p| {
        CertificateDer::pem_file_iter(p)?.collect()
    })?;
    if chain.is_empty() {
        return Err(Failure::usage(format!(
            "TLS certificate {}: no CERTIFICATE block",
            cert.display()
        )));
    }
    let key = read_pem("TLS key", key, |p| PrivateKeyDer::from_pem_file(p))?;
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_pem("client CA", path, |p| {
                CertificateDer::pem_file_iter(p)?.collect::<Result<Vec<_>, _>>()
            })? {
                roots
                    .add(ca)
                    .map_err(|e| Failure::usage(format!("client CA {}: {e}", path.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| Failure::usage(format!("client CA {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| Failure::usage(format!("TLS certificate and key: {e}")))?;
    // HTTP/1.1 only: an idle HTTP/2 connection holds a graceful shutdown open until the
    // client goes away, and the services gain nothing from multiplexing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How long a TLS shutdown waits for connections to finish before closing them.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves `router` on `listener` over `transport` until `shutdown` completes, letting
/// requests in flight finish. Handlers see the client's address (`ConnectInfo`).
///
/// # Errors
/// The listener's I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    match transport {
        Transport::Plain => {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Transport::Tls(config) => {
            let handle = axum_server::Handle::new();
            let stopping = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                stopping.graceful_shutdown(Some(DRAIN));
            });
            let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
            axum_server::tls_rustls::from_tcp_rustls(listener.into_std()?, config)?
                .handle(handle)
                .serve(service)
                .await
        }
    }
}

/// Binds `addr` (port 0 picks a free port); returns the listener and the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::system(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::system(format!("cannot listen on {addr}: {e}")))?;
    Ok((listener, bound))
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
