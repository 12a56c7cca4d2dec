//! How the product connects to PostgreSQL (the registry's tables, the key store of
//! `kms serve`): TLS as the URL's `sslmode` says (`disable`; `prefer`, the default: TLS when
//! the server offers it; `require`), a server's certificate always verified against the
//! system's roots plus an optional CA file, and error messages that never repeat the URL (it
//! may hold a password).

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The TLS set-up for database connections: the system's trusted roots, plus the
/// certificates of `ca` (a PEM file) when given. Certificates are always verified.
///
/// # Errors
/// A message naming the CA file when it cannot be read or holds no certificate.
pub fn tls(ca: Option<&Path>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca {
        let unreadable = |e: &dyn std::fmt::Display| format!("the CA file {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(&e))?;
        if certs.is_empty() {
            return Err(unreadable(&"holds no certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| unreadable(&e))?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Parses a connection URL (`postgres://…` or `host=… user=…`).
///
/// # Errors
/// A message that says what is wrong without repeating the URL.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    // The parser's own message may quote a piece of the URL, a password's included.
    url.parse().map_err(|_: tokio_postgres::Error| {
        "the database URL is not valid: give postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=… or host=… user=… dbname=…".to_string()
    })
}

/// A database error as an operator needs it: the server's SQLSTATE and message, or the
/// client's error and its cause (connection refused, TLS, …).
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_and_ca_files_say_what_is_wrong_without_the_url() {
        let e = parse_url("postgres://user:s3cret@host:notaport/db").unwrap_err();
        assert!(e.contains("not valid"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let dir = std::env::temp_dir().join(format!("g2p-postgres-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls(Some(&empty)).err().unwrap();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = tls(Some(&dir.join("missing.pem"))).err().unwrap();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(tls(None).is_ok());
    }
}
