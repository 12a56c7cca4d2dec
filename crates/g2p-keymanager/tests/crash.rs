//! Crash safety of the embedded key store: `kms serve` is killed with SIGKILL, again and
//! again, while it rotates keys and encrypts concurrently. After each kill the store opens,
//! every ciphertext it handed out decrypts, and every rotation it acknowledged left its key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::command;
use g2p_encryption::EncryptionProvider;
use g2p_encryption::cert::CertificateInfo;
use g2p_encryption_keymanager::{EncryptMode, KeymanagerProvider};
use g2p_mosip::RequestWrapper;
use serde_json::{Value, json};

const CRYPTO: &str = "app:app-secret";
const ADMIN: &str = "ops:ops-secret:KEY_MAKER";

/// Values and the ciphertexts handed out for them.
type Sealed = Vec<(Vec<u8>, Vec<u8>)>;

/// A running `kms serve` and its address.
struct Server {
    child: std::process::Child,
    url: String,
}

/// Starts `kms serve` on `data`, its log appended to `data/../kms.log` (a pipe nobody
/// reads would fill up and stall it).
fn start(data: &Path) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.with_file_name("kms.log"))
        .unwrap();
    let mut child = command(
        &[
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--client",
            CRYPTO,
            "--client",
            ADMIN,
        ],
        data,
    )
    .stdout(Stdio::piped())
    .stderr(log)
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("http://"),
        "kms serve did not start: {first:?}"
    );
    Server {
        child,
        url: first.trim().to_string(),
    }
}

fn provider(url: &str) -> KeymanagerProvider {
    let mut settings = common::keymanager_settings(url);
    // Each encryption at the key manager, with whatever key is current there.
    settings.encrypt_mode = Some(EncryptMode::Remote);
    settings.api_timeout = Some(10);
    KeymanagerProvider::new(settings.build().unwrap()).unwrap()
}

/// The administrator's token; `None` when the server died first.
async fn admin_token(http: &reqwest::Client, url: &str) -> Option<String> {
    let answer: Value = http
        .post(format!(
            "{url}/realms/openg2p/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ops"),
            ("client_secret", "ops-secret"),
        ])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(answer["access_token"].as_str()?.to_string())
}

/// Rotates REGISTRATION's master key and retires REGISTRATION/ENCRYPT's current key, over
/// and over; returns the thumbprints of the master keys whose rotation was acknowledged.
async fn rotate_forever(url: String, acknowledged: Arc<Mutex<BTreeSet<String>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let Some(token) = admin_token(&http, &url).await else {
        return;
    };
    let bearer = format!("Bearer {token}");
    loop {
        let rotated = http
            .post(format!("{url}/v1/keymanager/generateMasterKey/CERTIFICATE"))
            .header("Authorization", &bearer)
            .json(&RequestWrapper::new(
                json!({"applicationId": "REGISTRATION", "referenceId": "", "force": true}),
            ))
            .send()
            .await;
        let Ok(rotated) = rotated else { return };
        let Ok(body) = rotated.json::<Value>().await else {
            return;
        };
        let pem = body["response"]["certificate"].as_str().unwrap();
        let certificate = CertificateInfo::from_pem(pem).unwrap();
        let thumbprint: String = certificate
            .sha256()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        acknowledged.lock().unwrap().insert(thumbprint);
        let revoked = http
            .put(format!("{url}/v1/keymanager/revokeKey"))
            .header("Authorization", &bearer)
            .json(&RequestWrapper::new(
                json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT"}),
            ))
            .send()
            .await;
        if revoked.is_err() {
            return;
        }
    }
}

/// Encrypts numbered values until the server dies; keeps every ciphertext handed out.
async fn encrypt_forever(url: String, worker: usize, sealed: Arc<Mutex<Sealed>>) {
    let provider = provider(&url);
    for i in 0.. {
        let plain = format!("worker {worker} value {i}").into_bytes();
        match provider.encrypt(&plain).await {
            Ok(ciphertext) => sealed.lock().unwrap().push((plain, ciphertext)),
            Err(_) => return,
        }
    }
}

/// Thumbprints of every key in the store, read by `kms keys list` with no server running.
fn listed_thumbprints(data: &Path) -> BTreeSet<String> {
    let out = command(
        &["kms", "keys", "list", "--data-dir", data.to_str().unwrap()],
        data,
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the store does not open after a kill: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split('\t').nth(3).unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_rotation_and_encryption_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sealed = Arc::new(Mutex::new(Vec::new()));
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    // Kill at different points of the work: right after start, in the middle, later.
    let kills = [300, 900, 40, 1500, 600, 1200, 150, 1800];
    for (round, after) in kills.iter().enumerate() {
        let mut server = start(&data);
        let mut work = Vec::new();
        work.push(tokio::spawn(rotate_forever(
            server.url.clone(),
            acknowledged.clone(),
        )));
        for worker in 0..3 {
            work.push(tokio::spawn(encrypt_forever(
                server.url.clone(),
                round * 10 + worker,
                sealed.clone(),
            )));
        }
        tokio::time::sleep(Duration::from_millis(*after)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for task in work {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        // The store opens, and no acknowledged key is missing.
        let listed = listed_thumbprints(&data);
        let acknowledged = acknowledged.lock().unwrap().clone();
        let missing: Vec<_> = acknowledged.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "round {round}: rotated keys lost: {missing:?}"
        );
    }
    let sealed = sealed.lock().unwrap().clone();
    let rotations = acknowledged.lock().unwrap().len();
    assert!(
        sealed.len() > 100,
        "too little work to prove anything: {}",
        sealed.len()
    );
    assert!(
        rotations > 5,
        "too few rotations to prove anything: {rotations}"
    );

    // Every ciphertext handed out before a kill decrypts after the restarts.
    let mut server = start(&data);
    let provider = provider(&server.url);
    for (plain, ciphertext) in &sealed {
        let opened = provider.decrypt(ciphertext).await;
        assert_eq!(
            opened.as_deref().ok(),
            Some(plain.as_slice()),
            "{} bytes: {:?}",
            ciphertext.len(),
            opened.as_ref().err()
        );
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    eprintln!(
        "crash safety: {} kills, {} ciphertexts decrypted, {rotations} rotations, {} keys",
        kills.len(),
        sealed.len(),
        listed_thumbprints(&data).len()
    );
}
