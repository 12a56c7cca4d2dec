//! `g2p-keymanager serve` as a process: the bound address on the first line, the gateway over
//! the embedded default or a configuration file's providers, API keys, JSON logs without
//! secrets, and a clean exit on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{command, spawn, stop};

use std::io::BufRead;
use std::process::{Child, Stdio};

use g2p_testkit::FakeKeymanager;
use serde_json::{Value, json};

struct Served {
    child: Child,
    url: String,
    banner: Vec<String>,
}

/// Starts `serve` and reads its banner (the address, one line per provider, one about keys).
fn start(args: &[&str], data_dir: &std::path::Path) -> Served {
    let (child, mut stdout) = spawn(args, data_dir);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("http://127.0.0.1:"),
        "first line: {first:?}"
    );
    // The banner: one line per provider, then one line about API keys.
    let mut banner = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "banner ended early: {banner:?}"
        );
        let last = !line.starts_with("provider ");
        banner.push(line.trim_end().to_string());
        if last {
            break;
        }
    }
    Served {
        child,
        url: first.trim().to_string(),
        banner,
    }
}

async fn post(url: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn serves_the_embedded_key_manager_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let served = start(&["serve", "--listen", "127.0.0.1:0"], dir.path());
    assert_eq!(
        served.banner[0],
        "provider default: embedded key manager (default)"
    );
    assert!(served.banner[1].contains("loopback"), "{:?}", served.banner);
    let url = served.url.clone();
    let data = g2p_encryption::b64::encode_b64u(b"Fatima Bello, +234 803 000 0000");
    let (status, ct) = post(&format!("{url}/v1/encrypt"), None, json!({"data": data})).await;
    assert_eq!(status, 200, "{ct}");
    let (_, pt) = post(
        &format!("{url}/v1/decrypt"),
        None,
        json!({"data": ct["data"]}),
    )
    .await;
    assert_eq!(pt["data"], data.as_str());
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let (code, stderr) = stop(served.child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("request done"), "{stderr}");
    // The store the gateway used is the one the CLI uses.
    assert!(dir.path().join("keys.db").exists());
}

#[tokio::test]
async fn serves_configured_providers_with_api_keys_and_json_logs() {
    let fake = FakeKeymanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A key made by the CLI.
    let made = command(
        &[
            "api-key",
            "new",
            "--name",
            "registry",
            "--scope",
            "encrypt,decrypt",
        ],
        dir.path(),
    )
    .output()
    .unwrap();
    assert!(made.status.success());
    let made = String::from_utf8(made.stdout).unwrap();
    let key = made.lines().next().unwrap().to_string();
    let snippet: String = made
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let config = dir.path().join("g2p.toml");
    std::fs::write(
        &config,
        format!(
            r#"default_provider = "local"

[providers.local]
type = "local"

[providers.mosip]
type = "keymanager"
api_base_url = "{}"
auth_url = "{}"
auth_client_id = "{}"
auth_client_secret = "{}"

[providers.down]
type = "keymanager"
api_base_url = "http://127.0.0.1:1/v1/keymanager"
auth_url = "http://127.0.0.1:1/token"
auth_client_id = "down"
auth_client_secret = "down-secret-never-logged-7f"

[gateway]
listen = "127.0.0.1:0"
batch_limit = 2

{snippet}
"#,
            fake.api_base_url(),
            fake.auth_url(),
            fake.options().client_id,
            fake.options().client_secret,
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let served = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let config_arg = config_arg.to_string();
        move || {
            start(
                &["serve", "--config", &config_arg, "--log-format", "json"],
                &dir,
            )
        }
    });
    let served = served.await.unwrap();
    assert!(
        served
            .banner
            .iter()
            .any(|l| l.starts_with("provider local: embedded")),
        "{:?}",
        served.banner
    );
    let url = served.url.clone();
    let secret_text = "Grace Wanjiru, national id 29384756";
    let data = g2p_encryption::b64::encode_b64u(secret_text.as_bytes());
    let (status, body) = post(&format!("{url}/v1/encrypt"), None, json!({"data": data})).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthorized"))
    );
    let (status, ct) = post(
        &format!("{url}/v1/encrypt"),
        Some(&key),
        json!({"data": data, "provider": "mosip"}),
    )
    .await;
    assert_eq!(status, 200, "{ct}");
    let (status, pt) = post(
        &format!("{url}/v1/decrypt"),
        Some(&key),
        json!({"data": ct["data"], "provider": "mosip"}),
    )
    .await;
    assert_eq!((status, pt["data"].clone()), (200, json!(data)));
    // A key manager that cannot be reached: 502, and its secret in no log line.
    let (_, local_ct) = post(
        &format!("{url}/v1/encrypt"),
        Some(&key),
        json!({"data": data}),
    )
    .await;
    let (status, body) = post(
        &format!("{url}/v1/decrypt"),
        Some(&key),
        json!({"data": local_ct["data"], "provider": "down"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (502, json!("kms_unavailable")),
        "{body}"
    );
    let (status, body) = post(&format!("{url}/v1/sign"), Some(&key), json!({"text": "x"})).await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    let (status, body) = post(
        &format!("{url}/v1/encrypt"),
        Some(&key),
        json!({"items": [{"data": "AA"}, {"data": "AA"}, {"data": "AA"}]}),
    )
    .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("batch_too_large"))
    );
    let (code, stderr) = stop(served.child);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "request done" && l["fields"]["status"] == 401),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "provider failed"
                && l["span"]["caller"] == "registry"),
        "no logged 5xx with its caller: {stderr}"
    );
    for secret in [
        key.as_str(),
        secret_text,
        data.as_str(),
        fake.options().client_secret.as_str(),
        "down-secret-never-logged-7f",
    ] {
        assert!(
            !stderr.contains(secret),
            "the log contains a secret: {secret}"
        );
    }
}

#[tokio::test]
async fn bad_gateway_configuration_is_refused_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("g2p.toml");
    std::fs::write(
        &config,
        "[[gateway.api_keys]]\nname = \"x\"\nhash = \"g2pk_plaintext\"\nscopes = [\"encrypt\"]\n",
    )
    .unwrap();
    let out = command(&["serve", "--config", config.to_str().unwrap()], dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("sha256:"), "{stderr}");
    assert!(out.stdout.is_empty());
    std::fs::write(&config, "[gateway]\nlisten = \"everywhere\"\n").unwrap();
    let out = command(&["serve", "--config", config.to_str().unwrap()], dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("everywhere")
    );
    // `api-key hash` agrees with the hash `api-key new` printed.
    let made = command(
        &["api-key", "new", "--name", "n", "--scope", "verify"],
        dir.path(),
    )
    .output()
    .unwrap();
    let made = String::from_utf8(made.stdout).unwrap();
    let key = made.lines().next().unwrap();
    let mut hash = command(&["api-key", "hash"], dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut hash.stdin.take().unwrap(),
        format!("{key}\n").as_bytes(),
    )
    .unwrap();
    let hashed = String::from_utf8(hash.wait_with_output().unwrap().stdout).unwrap();
    assert!(made.contains(hashed.trim()), "{made}\n{hashed}");
    let bad = command(
        &["api-key", "new", "--name", "n", "--scope", "admin"],
        dir.path(),
    )
    .output()
    .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Starts `kms serve` configured with its own clients; returns (process, API base, token URL).
#[test]
fn an_address_in_use_is_this_machines_failure_not_the_key_managers() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [
        vec!["serve", "--listen", &addr],
        vec!["kms", "serve", "--listen", &addr],
    ] {
        let out = command(&args, dir.path()).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {addr}")),
            "{stderr}"
        );
    }
}

fn start_kms(args: &[&str], data_dir: &std::path::Path) -> (Child, String, String) {
    let (child, mut stdout) = spawn(args, data_dir);
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    assert!(lines[0].starts_with("http://127.0.0.1:"), "{lines:?}");
    let api = lines[1]
        .strip_prefix("KEYMANAGER_API_BASE_URL=")
        .unwrap()
        .to_string();
    let auth = lines[2]
        .strip_prefix("KEYMANAGER_AUTH_URL=")
        .unwrap()
        .to_string();
    (child, api, auth)
}

fn keymanager(api: &str, auth: &str, app: &str) -> g2p_encryption_keymanager::KeymanagerProvider {
    let mut settings =
        g2p_encryption_keymanager::KeymanagerConfig::settings(api, auth, "svc", "svc-secret");
    settings.encrypt_application_id = Some(app.into());
    g2p_encryption_keymanager::KeymanagerProvider::new(settings.build().unwrap()).unwrap()
}

#[tokio::test]
async fn kms_serve_and_keys_follow_the_configuration_file() {
    use g2p_encryption::EncryptionProvider;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("g2p.toml");
    std::fs::write(
        &config,
        r#"[kms]
realm = "g2p"
clients = [{ id = "svc", secret = "svc-secret" }]

[kms.references]
SOCIAL_REGISTRY = ["ENCRYPT"]

[kms.policies.SOCIAL_REGISTRY]
validity_days = 730
pre_expire_days = 30
"#,
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let data = dir.path().join("data");
    let (child, api, auth) = start_kms(
        &["kms", "serve", "--config", &cfg, "--listen", "127.0.0.1:0"],
        &data,
    );
    assert!(auth.contains("/realms/g2p/"), "{auth}");
    let registry = keymanager(&api, &auth, "SOCIAL_REGISTRY");
    let ct = registry.encrypt(b"household 17").await.unwrap();
    assert_eq!(registry.decrypt(&ct).await.unwrap(), b"household 17");
    let unknown = keymanager(&api, &auth, "NOPE")
        .encrypt(b"x")
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("KER-KMS-002"), "{unknown}");
    let (code, stderr) = stop(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("svc-secret"));
    assert!(
        stderr.contains("request done") && stderr.contains("/v1/keymanager/decrypt"),
        "no access log: {stderr}"
    );
    assert!(
        !stderr.contains("Authorization="),
        "a token reached the log"
    );

    // The key commands see the same directory and policies through the file.
    let list = |data: &std::path::Path| {
        let out = command(&["kms", "keys", "list", "--config", &cfg], data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("SOCIAL_REGISTRY\tENCRYPT"))
            .count()
    };
    assert_eq!(list(&data), 1);
    let rotated = command(
        &[
            "kms",
            "keys",
            "rotate",
            "--config",
            &cfg,
            "--app",
            "SOCIAL_REGISTRY",
            "--ref",
            "ENCRYPT",
        ],
        &data,
    )
    .output()
    .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert_eq!(list(&data), 2);

    // Unknown applications and references admitted on request; old data still opens after
    // the rotation.
    let (child, api, auth) = start_kms(
        &[
            "kms",
            "serve",
            "--config",
            &cfg,
            "--listen",
            "127.0.0.1:0",
            "--admit-unknown-applications",
            "--admit-unknown-references",
        ],
        &data,
    );
    let admitted = keymanager(&api, &auth, "NOPE");
    let ct2 = admitted.encrypt(b"y").await.unwrap();
    assert_eq!(admitted.decrypt(&ct2).await.unwrap(), b"y");
    assert_eq!(
        keymanager(&api, &auth, "SOCIAL_REGISTRY")
            .decrypt(&ct)
            .await
            .unwrap(),
        b"household 17"
    );
    let (code, _) = stop(child);
    assert_eq!(code, 0);

    // A policy that cannot work is refused before anything starts.
    std::fs::write(
        &config,
        "[kms.policies.X]\nvalidity_days = 10\npre_expire_days = 20\n",
    )
    .unwrap();
    let out = command(&["kms", "keys", "list", "--config", &cfg], &data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("kms.policies.X")
    );
}

#[tokio::test]
async fn kms_tokens_survive_a_restart_on_the_same_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "kms",
        "serve",
        "--listen",
        listen.as_str(),
        "--client",
        "svc:svc-secret",
    ];
    let (child, api, auth) = start_kms(&args, dir.path());
    let token: Value = reqwest::Client::new()
        .post(&auth)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", "svc-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let certificate = |api: String, token: String| async move {
        reqwest::Client::new()
            .get(format!(
                "{api}/getCertificate?applicationId=REGISTRATION&referenceId=ENCRYPT"
            ))
            .header("cookie", format!("Authorization={token}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(certificate(api.clone(), token.clone()).await, 200);
    let (code, _) = stop(child);
    assert_eq!(code, 0);
    let (child, api, _) = start_kms(&args, dir.path());
    assert_eq!(
        certificate(api, token).await,
        200,
        "the token was refused after a restart"
    );
    stop(child);
    assert!(dir.path().join("realm-openg2p.key").exists());
}
