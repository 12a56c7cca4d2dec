//! Several `kms serve` replicas over one PostgreSQL database (a throwaway cluster; skipped,
//! loudly, without PostgreSQL; failed under `CI=true`): clients spread over them, tokens from
//! one accepted by the others, rotations on one seen by all, one killed and restarted under
//! load with no operation lost, every ciphertext decrypting everywhere, one current key per
//! pair at the end; then the database goes away and comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use g2p_encryption::{EncryptionProvider, ErrorKind, SignOptions, SignPayload};
use g2p_encryption_keymanager::{EncryptMode, KeymanagerProvider, VerifyMode};
use g2p_testkit::postgres::PgCluster;
use serde_json::{Value, json};

/// Where a load balancer would serve the replicas: the issuer of their tokens.
const PUBLIC_URL: &str = "http://keymanager.test";

/// A replica: its process, URL and data directory (which holds nothing but its log).
struct Replica {
    child: Option<Child>,
    url: String,
    dir: tempfile::TempDir,
}

fn start(database: &str, kek: &str, listen: &str, dir: &std::path::Path) -> (Child, String) {
    let mut cmd = common::command(
        &[
            "kms",
            "serve",
            "--listen",
            listen,
            "--client",
            common::CLIENT,
            "--client",
            "operator:operator-secret:KEY_MAKER",
            "--public-url",
            PUBLIC_URL,
        ],
        dir,
    );
    cmd.env("G2P_KMS_DATABASE_URL", database)
        .env("G2P_KMS_KEK", kek);
    common::start_server(cmd, &dir.join("stderr.log"))
}

impl Replica {
    fn start(database: &str, kek: &str) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let (child, url) = start(database, kek, "127.0.0.1:0", dir.path());
        Replica {
            child: Some(child),
            url,
            dir,
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts it again on the same address.
    fn restart(&mut self, database: &str, kek: &str) {
        let listen = self.url.trim_start_matches("http://").to_string();
        let (child, url) = start(database, kek, &listen, self.dir.path());
        assert_eq!(url, self.url);
        self.child = Some(child);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client of replica `api` whose tokens come from replica `auth`, calling the replicas for
/// everything (remote encrypt and verify) and not retrying: the test's balancer moves on.
fn provider(api: &str, auth: &str) -> Arc<KeymanagerProvider> {
    let mut settings = common::keymanager_settings(api);
    settings.auth_url = Some(format!(
        "{auth}/realms/openg2p/protocol/openid-connect/token"
    ));
    settings.encrypt_mode = Some(EncryptMode::Remote);
    settings.verify_mode = Some(VerifyMode::Remote);
    settings.max_attempts = Some(1);
    Arc::new(KeymanagerProvider::new(settings.build().unwrap()).unwrap())
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    operations: AtomicUsize,
    rerouted: AtomicUsize,
    failures: Mutex<Vec<String>>,
    sealed: Mutex<Vec<Vec<u8>>>,
    signed: Mutex<Vec<String>>,
}

/// Runs `op` on replica `first`, moving to the next replica when one does not answer (as a
/// load balancer does); a failure is an error that is not a replica being unreachable, or
/// no replica answering.
async fn balanced<T, F, Fut>(
    providers: &[Arc<KeymanagerProvider>],
    first: usize,
    tally: &Tally,
    op: F,
) -> Option<T>
where
    F: Fn(Arc<KeymanagerProvider>) -> Fut,
    Fut: std::future::Future<Output = Result<T, g2p_encryption::Error>>,
{
    let mut last = None;
    for k in 0..providers.len() {
        match op(Arc::clone(&providers[(first + k) % providers.len()])).await {
            Ok(value) => {
                tally.operations.fetch_add(1, Ordering::Relaxed);
                return Some(value);
            }
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) => {
                tally.rerouted.fetch_add(1, Ordering::Relaxed);
                last = Some(e);
            }
            Err(e) => {
                tally.failures.lock().unwrap().push(e.to_string());
                return None;
            }
        }
    }
    tally
        .failures
        .lock()
        .unwrap()
        .push(format!("no replica answered: {last:?}"));
    None
}

async fn token(http: &reqwest::Client, base: &str, client: (&str, &str)) -> String {
    let body: Value = http
        .post(format!(
            "{base}/realms/openg2p/protocol/openid-connect/token"
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.0),
            ("client_secret", client.1),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string()
}

/// A MOSIP API call with `token`; the status and body.
async fn call(
    http: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    request: Value,
) -> (u16, Value) {
    let response = http
        .request(method, url)
        .header("cookie", format!("Authorization={token}"))
        .json(&json!({
            "id": "test", "version": "1.0",
            "requesttime": g2p_mosip::timestamp::now_strict(),
            "request": request
        }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Rotates the encryption key (revoked: the next use makes one) and, with `sign`, the signing
/// key through the REST API of `base`. (Clients look a signing key they do not know up at
/// most every 10 s, so the signing key rotates once here.)
async fn rotate(http: &reqwest::Client, token: &str, base: &str, sign: bool) {
    let (status, body) = call(
        http,
        token,
        reqwest::Method::PUT,
        format!("{base}/v1/keymanager/revokeKey"),
        json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["errors"].as_array().is_none_or(Vec::is_empty),
        "{body}"
    );
    if !sign {
        return;
    }
    let (status, body) = call(
        http,
        token,
        reqwest::Method::POST,
        format!("{base}/v1/keymanager/generateMasterKey/CERTIFICATE"),
        json!({"applicationId": "ID_REPO", "referenceId": "", "force": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["errors"].as_array().is_none_or(Vec::is_empty),
        "{body}"
    );
}

async fn load(providers: Vec<Arc<KeymanagerProvider>>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut tasks = Vec::new();
    for client in 0..24usize {
        let (providers, tally, stop) = (providers.clone(), Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut i = client;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let data = format!("beneficiary {client}/{i}").into_bytes();
                let sealed = balanced(&providers, i, &tally, |p| {
                    let data = data.clone();
                    async move { p.encrypt(&data).await }
                })
                .await;
                if let Some(sealed) = sealed {
                    let opened = balanced(&providers, i + 1, &tally, |p| {
                        let sealed = sealed.clone();
                        async move { p.decrypt(&sealed).await }
                    })
                    .await;
                    if opened.is_some_and(|o| o != data) {
                        tally
                            .failures
                            .lock()
                            .unwrap()
                            .push("decrypted other bytes".into());
                    }
                    tally.sealed.lock().unwrap().push(sealed);
                }
                let payload = SignPayload::Text(format!("document {client}/{i}"));
                let signed = balanced(&providers, i, &tally, |p| {
                    let payload = payload.clone();
                    async move { p.jwt_sign(&payload, &SignOptions::default()).await }
                })
                .await;
                if let Some(token) = signed {
                    balanced(&providers, i + 2, &tally, |p| {
                        let token = token.clone();
                        async move { p.jwt_verify(&token, None).await }
                    })
                    .await;
                    tally.signed.lock().unwrap().push(token);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_database_through_rotation_a_kill_and_an_outage() {
    let Some(cluster) = PgCluster::start("replicas_share_one_database") else {
        return;
    };
    let database = cluster.create_database("replicas");
    let mut kek = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut kek).unwrap();
    let kek = g2p_encryption::b64::encode_b64(&kek);
    // The first start makes the store; two more join it.
    let mut replicas = vec![Replica::start(&database, &kek)];
    replicas.push(Replica::start(&database, &kek));
    replicas.push(Replica::start(&database, &kek));
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    // Each client's tokens come from another replica than the one it calls.
    let providers: Vec<_> = (0..3)
        .map(|i| provider(&urls[i], &urls[(i + 1) % 3]))
        .collect();
    let http = reqwest::Client::new();
    let admin = token(&http, &urls[0], ("operator", "operator-secret")).await;
    let user = token(&http, &urls[0], ("app", "app-secret")).await;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(
        providers.clone(),
        Arc::clone(&tally),
        Arc::clone(&stop),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    rotate(&http, &admin, &urls[0], true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicas[2].kill();
    rotate(&http, &admin, &urls[0], false).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    replicas[2].restart(&database, &kek);
    tokio::time::sleep(Duration::from_millis(500)).await;
    rotate(&http, &admin, &urls[0], false).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    running.await.unwrap();

    let failures = tally.failures.lock().unwrap().clone();
    let errors: Vec<String> = replicas
        .iter()
        .flat_map(|r| {
            std::fs::read_to_string(r.dir.path().join("stderr.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ERROR"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed, first: {:?}\nreplicas' errors: {errors:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let operations = tally.operations.load(Ordering::Relaxed);
    assert!(operations > 100, "only {operations} operations");
    assert!(
        tally.rerouted.load(Ordering::Relaxed) > 0,
        "no call met the killed replica"
    );
    eprintln!(
        "{operations} operations, {} rerouted from the killed replica",
        tally.rerouted.load(Ordering::Relaxed)
    );

    // Every ciphertext decrypts, and every token verifies, on every replica.
    let sealed = tally.sealed.lock().unwrap().clone();
    let signed = tally.signed.lock().unwrap().clone();
    let thumbprints: std::collections::BTreeSet<String> = sealed
        .iter()
        .map(|c| {
            g2p_mosip::cipher::parse(c)
                .unwrap()
                .thumbprint_hex()
                .unwrap()
        })
        .collect();
    assert!(
        thumbprints.len() >= 3,
        "rotations not seen: {thumbprints:?}"
    );
    // New clients (the load's clients remember the killed replica as failing for a while).
    let providers: Vec<_> = urls.iter().map(|u| provider(u, u)).collect();
    for p in &providers {
        for c in &sealed {
            p.decrypt(c).await.unwrap();
        }
        for t in &signed {
            p.jwt_verify(t, None).await.unwrap();
        }
    }

    // One current key per pair.
    let kms = g2p_kms::KmsSettings {
        database_url: Some(database.clone().into()),
        ..g2p_kms::KmsSettings::default()
    };
    let store = {
        let kek = kek.clone();
        let dir = tempfile::tempdir().unwrap();
        tokio::task::spawn_blocking(move || {
            kms.open(dir.path(), |name| {
                (name == g2p_kms::kek::KEK_ENV).then(|| kek.clone())
            })
            .unwrap()
        })
        .await
        .unwrap()
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let records = store.store().list().unwrap();
    let mut pairs = std::collections::BTreeMap::<(String, String), usize>::new();
    for r in records
        .iter()
        .filter(|r| r.kind != g2p_kms::KeyKind::Partner)
    {
        let live = usize::from(r.expires_at > now);
        *pairs
            .entry((r.application_id.clone(), r.reference_id.clone()))
            .or_default() += live;
    }
    assert!(pairs.values().all(|&n| n == 1), "{pairs:?}");
    assert!(
        records
            .iter()
            .filter(|r| r.application_id == "REGISTRATION" && r.reference_id == "ENCRYPT")
            .count()
            >= 4
    );
    drop(store);

    // The database goes away: readiness says so, calls fail in the envelope, nothing
    // hangs; it comes back: the replicas carry on by themselves.
    cluster.stop();
    let started = Instant::now();
    let (status, body) = loop {
        let response = http
            .get(format!("{}/readyz", urls[1]))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status == 503 || started.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    let (status, body) = call(
        &http,
        &user,
        reqwest::Method::POST,
        format!("{}/v1/keymanager/decrypt", urls[1]),
        json!({"applicationId": "REGISTRATION", "referenceId": "ENCRYPT",
               "timeStamp": g2p_mosip::timestamp::now_strict(),
               "data": g2p_encryption::b64::encode_b64u(&sealed[0])}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errors"][0]["errorCode"], "KER-KMS-500", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{body}"
    );
    cluster.start_again();
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/readyz", urls[1]))
            .send()
            .await
            .unwrap();
        if ready.status() == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in &providers {
        assert!(!p.decrypt(&sealed[0]).await.unwrap().is_empty());
    }
}

/// The binary with the database and key-encryption key in its environment.
fn with_database(
    args: &[&str],
    dir: &std::path::Path,
    database: &str,
    kek: &str,
) -> std::process::Output {
    common::command(args, dir)
        .env("G2P_KMS_DATABASE_URL", database)
        .env("G2P_KMS_KEK", kek)
        .output()
        .unwrap()
}

fn text(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("s3cr3t-pw"),
        "the password was shown: {text}"
    );
    text
}

#[test]
fn administration_works_on_a_database_store_and_a_data_directory_migrates_into_it() {
    let Some(cluster) = PgCluster::start("administration_works_on_a_database_store") else {
        return;
    };
    // A password in the URL (the cluster trusts any): it must never be shown.
    const PASSWORD: &str = "s3cr3t-pw";
    let database = cluster
        .create_database("administration")
        .replace("postgres@", &format!("postgres:{PASSWORD}@"));

    // An existing store in a data directory, with a ciphertext sealed under it.
    let source = tempfile::tempdir().unwrap();
    let (child, url) = common::kms_serve(source.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = provider(&url, &url);
    let sealed = rt.block_on(old.encrypt(b"sealed before the move")).unwrap();
    common::stop(child);
    assert!(
        common::rotate_encryption_key(source.path())
            .status
            .success()
    );
    let kek_bytes = std::fs::read(source.path().join("kek")).unwrap();
    let kek = g2p_encryption::b64::encode_b64(&kek_bytes);
    let empty = tempfile::tempdir().unwrap();

    // Administration never makes a store where there is none.
    let out = with_database(&["kms", "keys", "list"], empty.path(), &database, &kek);
    assert!(!out.status.success());
    assert!(text(&out).contains("no key store"), "{}", text(&out));

    // migrate: the key-encryption key is the source's kek file; it copies.
    let from = source.path().to_str().unwrap();
    let out = common::command(
        &["kms", "migrate", "--from", from, "--to", &database],
        empty.path(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("decrypts from the database"),
        "{}",
        text(&out)
    );
    let out = common::command(
        &["kms", "migrate", "--from", from, "--to", &database],
        empty.path(),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    let out = common::command(
        &[
            "kms", "migrate", "--from", from, "--to", &database, "--force",
        ],
        empty.path(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("replacing"), "{}", text(&out));

    // keys list and rotate on the database, with the key-encryption key from the environment.
    let listed = with_database(&["kms", "keys", "list"], empty.path(), &database, &kek);
    assert!(listed.status.success(), "{}", text(&listed));
    let before = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with("REGISTRATION\tENCRYPT"))
        .count();
    assert_eq!(before, 2, "{}", text(&listed));
    let rotated = with_database(
        &[
            "kms",
            "keys",
            "rotate",
            "--app",
            "REGISTRATION",
            "--ref",
            "ENCRYPT",
        ],
        empty.path(),
        &database,
        &kek,
    );
    assert!(rotated.status.success(), "{}", text(&rotated));
    let listed = with_database(&["kms", "keys", "list"], empty.path(), &database, &kek);
    let after = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with("REGISTRATION\tENCRYPT"))
        .count();
    assert_eq!(after, 3);

    // A replica over the database decrypts what the data directory sealed.
    let replica = tempfile::tempdir().unwrap();
    let (child, url) = start(&database, &kek, "127.0.0.1:0", replica.path());
    let moved = provider(&url, &url);
    assert_eq!(
        rt.block_on(moved.decrypt(&sealed)).unwrap(),
        b"sealed before the move"
    );
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();

    // backup of the database store; restored into a directory it opens with the same key.
    let file = empty.path().join("keys.backup");
    let out = with_database(
        &["kms", "backup", "--out", file.to_str().unwrap()],
        empty.path(),
        &database,
        &kek,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("realm keys: openg2p"), "{}", text(&out));
    let restored = empty.path().join("restored");
    let out = common::command(
        &[
            "kms",
            "restore",
            "--in",
            file.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--kek-file",
            source.path().join("kek").to_str().unwrap(),
        ],
        empty.path(),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (child, url) = common::kms_serve(&restored);
    let back = provider(&url, &url);
    assert_eq!(
        rt.block_on(back.decrypt(&sealed)).unwrap(),
        b"sealed before the move"
    );
    common::stop(child);

    // Refusals, each naming why: no key-encryption key, another one, no named clients.
    let out = common::command(&["kms", "serve", "--client", common::CLIENT], empty.path())
        .env("G2P_KMS_DATABASE_URL", &database)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("G2P_KMS_KEK"), "{}", text(&out));
    let other = g2p_encryption::b64::encode_b64(&[7u8; 32]);
    let out = with_database(
        &["kms", "serve", "--client", common::CLIENT],
        empty.path(),
        &database,
        &other,
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("does not match"), "{}", text(&out));
    let out = with_database(&["kms", "serve"], empty.path(), &database, &kek);
    assert!(!out.status.success());
    assert!(text(&out).contains("name the clients"), "{}", text(&out));
    assert!(
        !text(&out).contains("postgres://"),
        "the URL was shown: {}",
        text(&out)
    );
}
