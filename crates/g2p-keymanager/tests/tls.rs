//! HTTPS for `serve` and `kms serve`: rustls with a certificate and key, client certificates
//! for the key manager, and plain HTTP refused on addresses other machines reach unless asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::BufRead;
use std::path::Path;

use common::{ca, command, issue, spawn, stop};
use g2p_encryption::EncryptionProvider;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Starts a command and reads its first line, the address it serves.
fn start(args: &[&str], data: &Path) -> (std::process::Child, String) {
    let (child, mut stdout) = spawn(args, data);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    (child, first.trim().to_string())
}

#[tokio::test]
async fn the_key_manager_serves_https_and_asks_for_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("server CA");
    let (cert, key) = issue(&server_ca, &["localhost", "127.0.0.1"]);
    let ca_path = write(dir.path(), "ca.pem", &server_ca.pem);
    let cert_path = write(dir.path(), "server.pem", &cert);
    let key_path = write(dir.path(), "server.key", &key);
    let data = dir.path().join("data");
    let (child, url) = start(
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--client",
            "app:app-secret",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ],
        &data,
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // The Keymanager provider trusts the server's CA and works over HTTPS.
    let mut settings = common::keymanager_settings(&url);
    // Certificate verification is on: without the CA the provider refuses the server.
    let untrusting =
        g2p_encryption_keymanager::KeymanagerProvider::new(settings.clone().build().unwrap())
            .unwrap();
    assert!(untrusting.encrypt(b"over TLS").await.is_err());
    settings.ca_certificate = Some(ca_path.clone().into());
    let provider =
        g2p_encryption_keymanager::KeymanagerProvider::new(settings.build().unwrap()).unwrap();
    let sealed = provider.encrypt(b"over TLS").await.unwrap();
    assert_eq!(provider.decrypt(&sealed).await.unwrap(), b"over TLS");
    // Plain HTTP to the same port gets no answer.
    let plain = url.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/v1/keymanager/getCertificate"))
            .await
            .is_err()
    );
    let (code, _) = stop(child);
    assert_eq!(code, 0);

    // Client certificates: without one the handshake fails; with one issued by the CA given,
    // the request is served.
    let client_ca = ca("client CA");
    let client_ca_path = write(dir.path(), "client-ca.pem", &client_ca.pem);
    let (client_cert, client_key) = issue(&client_ca, &["registry-app"]);
    let (child, url) = start(
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--client",
            "app:app-secret",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
            "--tls-client-ca",
            &client_ca_path,
        ],
        &data,
    );
    let trusted = || {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap())
    };
    let token_url = format!("{url}/realms/openg2p/protocol/openid-connect/token");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "app"),
        ("client_secret", "app-secret"),
    ];
    let anonymous = trusted()
        .build()
        .unwrap()
        .post(&token_url)
        .form(&form)
        .send()
        .await;
    assert!(anonymous.is_err(), "served without a client certificate");
    let identity =
        reqwest::Identity::from_pem(format!("{client_cert}{client_key}").as_bytes()).unwrap();
    let known = trusted().identity(identity).build().unwrap();
    let answer = known.post(&token_url).form(&form).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let (code, _) = stop(child);
    assert_eq!(code, 0);
}

#[tokio::test]
async fn plain_http_only_on_loopback_unless_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["kms", "serve", "--listen", "0.0.0.0:0"],
    ] {
        let out = command(&args, dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--tls-cert") && stderr.contains("--insecure-plaintext"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "it listened");
    }
    // Asked for: served, with a warning in the log.
    let (child, url) = start(
        &["serve", "--listen", "0.0.0.0:0", "--insecure-plaintext"],
        dir.path(),
    );
    assert!(url.starts_with("http://0.0.0.0:"), "{url}");
    let port = url.rsplit(':').next().unwrap();
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (code, stderr) = stop(child);
    assert_eq!(code, 0);
    assert!(stderr.contains("insecure-plaintext"), "{stderr}");
}

#[tokio::test]
async fn the_gateway_serves_https_from_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("server CA");
    let (cert, key) = issue(&server_ca, &["127.0.0.1"]);
    let cert_path = write(dir.path(), "server.pem", &cert);
    let key_path = write(dir.path(), "server.key", &key);
    let config = write(
        dir.path(),
        "g2p.toml",
        &format!("[gateway.tls]\ncert = {cert_path:?}\nkey = {key_path:?}\n"),
    );
    let (child, url) = start(
        &["serve", "--config", &config, "--listen", "127.0.0.1:0"],
        &dir.path().join("data"),
    );
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (code, _) = stop(child);
    assert_eq!(code, 0);
    // A key that does not fit the certificate is refused before listening.
    let (_, other_key) = issue(&server_ca, &["127.0.0.1"]);
    let other_key = write(dir.path(), "other.key", &other_key);
    let out = command(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &other_key,
        ],
        dir.path(),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"));
}
