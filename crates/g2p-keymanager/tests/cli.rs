//! The `g2p-keymanager` binary end to end against the fake Keymanager: stdout, stderr and
//! exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use g2p_testkit::{FakeKeymanager, TestKey, b64u, cipher, jose, unb64};
use serde_json::json;

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }
}

fn env_for(fake: &FakeKeymanager) -> Vec<(&'static str, String)> {
    vec![
        ("KEYMANAGER_API_BASE_URL", fake.api_base_url()),
        ("KEYMANAGER_AUTH_URL", fake.auth_url()),
        (
            "KEYMANAGER_AUTH_CLIENT_ID",
            fake.options().client_id.clone(),
        ),
        (
            "KEYMANAGER_AUTH_CLIENT_SECRET",
            fake.options().client_secret.clone(),
        ),
    ]
}

/// Runs the binary off the async runtime (the fake serves on it meanwhile).
async fn run(env: &[(&'static str, String)], args: &[&str], stdin: &[u8]) -> Run {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut cmd = common::binary();
        cmd.envs(env).args(&args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap(),
            stdout: out.stdout,
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn encrypt_then_decrypt_round_trips_through_the_keymanager() {
    let fake = FakeKeymanager::start().await;
    let env = env_for(&fake);
    let plaintext = "Juan dela Cruz\nBarangay 7, Quezon City\n".as_bytes();
    let enc = run(&env, &["encrypt"], plaintext).await;
    assert_eq!(enc.code, 0, "{}", enc.stderr);
    let text = enc.stdout_text();
    assert!(text.ends_with('\n') && !text.trim_end().contains(['=', '+', '/', '\n']));
    let sealed = unb64(text.trim_end());
    let key = fake.current_key("REGISTRATION", "ENCRYPT");
    assert_eq!(cipher::open(&key, None, None, &sealed).unwrap(), plaintext);

    // Surrounding whitespace is ignored on decrypt; the output is the raw bytes.
    let padded = format!("  \n{}\n\n", text.trim_end());
    let dec = run(&env, &["decrypt"], padded.as_bytes()).await;
    assert_eq!(dec.code, 0, "{}", dec.stderr);
    assert_eq!(dec.stdout, plaintext);
    assert!(dec.stderr.is_empty(), "{}", dec.stderr);
}

#[tokio::test]
async fn files_in_and_out() {
    let fake = FakeKeymanager::start().await;
    let env = env_for(&fake);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("record.bin");
    let sealed = dir.path().join("record.enc");
    let opened = dir.path().join("record.out");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::write(&input, &bytes).unwrap();
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let r = run(
        &env,
        &["encrypt", "--in", &p(&input), "--out", &p(&sealed)],
        b"",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let r = run(
        &env,
        &["decrypt", "--in", &p(&sealed), "--out", &p(&opened)],
        b"",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(&opened).unwrap(), bytes);
}

#[tokio::test]
async fn bad_ciphertexts_exit_with_clear_errors_and_no_output() {
    let fake = FakeKeymanager::start().await;
    let env = env_for(&fake);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plain.txt");
    let out_arg = out.to_str().unwrap();

    let r = run(&env, &["decrypt", "--out", out_arg], b"%%% not base64 %%%").await;
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("error: input is not base64url"),
        "{}",
        r.stderr
    );
    assert!(!out.exists(), "nothing may be written on failure");

    let r = run(&env, &["decrypt"], b64u(b"no splitter here").as_bytes()).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("ciphertext"), "{}", r.stderr);

    // A tampered ciphertext is refused by the Keymanager: exit 1 with its KER code.
    let sealed = unb64(
        run(&env, &["encrypt"], b"amount=100")
            .await
            .stdout_text()
            .trim(),
    );
    let mut tampered = sealed.clone();
    let n = tampered.len();
    tampered[n - 1] ^= 0x55;
    let r = run(
        &env,
        &["decrypt", "--out", out_arg],
        b64u(&tampered).as_bytes(),
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    // Refused, without saying which check refused it.
    assert!(r.stderr.contains("decryption failed"), "{}", r.stderr);
    assert!(!r.stderr.contains("KER-"), "{}", r.stderr);
    assert!(!out.exists());
}

#[tokio::test]
async fn sign_and_verify() {
    let fake = FakeKeymanager::start().await;
    let env = env_for(&fake);
    let doc = json!({"beneficiary": "B-1029", "amount": 1500, "currency": "KES"});
    let r = run(&env, &["sign"], doc.to_string().as_bytes()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let token = r.stdout_text();
    assert!(token.ends_with('\n'));
    let token = token.trim_end().to_string();
    let key = fake.current_key("ID_REPO", "");
    assert!(jose::verify(key.public_key_der(), &token, None));
    // Key order of the document is kept.
    assert_eq!(
        unb64(token.split('.').nth(1).unwrap()),
        doc.to_string().as_bytes()
    );

    let r = run(&env, &["verify"], token.as_bytes()).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout_text().trim_end(), doc.to_string());

    // Tampered: exit 1, the reason on stderr, nothing on stdout.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64u(br#"{"amount":9999}"#), parts[2]);
    let r = run(&env, &["verify"], forged.as_bytes()).await;
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert_eq!(
        r.stderr.trim_end(),
        "error: invalid signature: signature does not match"
    );

    // A token carrying a foreign certificate.
    let intruder = TestKey::generate("ID_REPO");
    let x5c = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(intruder.cert_der())
    };
    let foreign = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "x5c": [x5c]}),
        b"{}",
        false,
    );
    let r = run(&env, &["verify"], foreign.as_bytes()).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not one of the key manager's"),
        "{}",
        r.stderr
    );

    let r = run(&env, &["sign"], b"not json").await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("not a JSON document"), "{}", r.stderr);
}

#[tokio::test]
async fn detached_text_signature_with_certificate() {
    let fake = FakeKeymanager::start().await;
    let env = env_for(&fake);
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload.txt");
    std::fs::write(&payload, "pay 100 to B-1").unwrap();
    let r = run(
        &env,
        &[
            "sign",
            "--text",
            "--detached",
            "--include-certificate",
            "--include-cert-hash",
            "--certificate-url",
            "https://example.org/c.pem",
            "--in",
            payload.to_str().unwrap(),
        ],
        b"",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let token = r.stdout_text().trim_end().to_string();
    assert!(token.contains(".."));
    let header: serde_json::Value =
        serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap();
    assert!(header["x5c"].is_array() && header["x5t#S256"].is_string());
    assert_eq!(header["x5u"], "https://example.org/c.pem");

    let r = run(
        &env,
        &["verify", "--payload", payload.to_str().unwrap()],
        token.as_bytes(),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout_text(), "pay 100 to B-1\n");
    let r = run(&env, &["verify"], token.as_bytes()).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("detached"), "{}", r.stderr);
}

#[tokio::test]
async fn jwks_and_token() {
    let fake = FakeKeymanager::start().await;
    let env = env_for(&fake);
    let enc_kid = fake.current_key_id("REGISTRATION", "ENCRYPT");
    let sig_kid = fake.current_key_id("ID_REPO", "");
    let r = run(&env, &["jwks"], b"").await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let set: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let keys = set["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .any(|k| k["kid"] == enc_kid && k["use"] == "enc")
    );
    assert!(
        keys.iter()
            .any(|k| k["kid"] == sig_kid && k["use"] == "sig")
    );

    let r = run(&env, &["token"], b"").await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.stdout_text();
    assert!(
        out.contains("subject: service-account-openg2p-admin-client"),
        "{out}"
    );
    assert!(out.contains("expires_at: "), "{out}");
    for token in fake.issued_tokens() {
        assert!(
            !out.contains(&token),
            "the token is printed only with --show"
        );
    }
    let r = run(&env, &["token", "--show"], b"").await;
    let shown = r.stdout_text();
    assert!(fake.issued_tokens().iter().any(|t| shown.contains(t)));
}

#[tokio::test]
async fn configuration_and_reachability_errors_have_their_exit_codes() {
    let fake = FakeKeymanager::start().await;
    // A provider name that is not configured.
    let r = run(&[], &["--provider", "registry", "jwks"], b"").await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("none is configured"), "{}", r.stderr);

    // Wrong secret: the auth server's error, exit 3, and no secret in the message.
    let mut env = env_for(&fake);
    env[3].1 = "definitely-wrong-secret".into();
    let r = run(&env, &["encrypt"], b"x").await;
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("invalid_client"), "{}", r.stderr);
    assert!(!r.stderr.contains("definitely-wrong-secret"));

    // KER error from the Keymanager: exit 3 with code and message.
    let env = env_for(&fake);
    fake.fail_next_with("KER-KMS-500", "Internal server error");
    let r = run(&env, &["jwks"], b"").await;
    assert_eq!(r.code, 3);
    assert_eq!(
        r.stderr.trim_end(),
        "error: keymanager error KER-KMS-500: Internal server error"
    );

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut env = env_for(&fake);
    env[0].1 = format!("http://{closed}/v1/keymanager");
    env[1].1 = format!("http://{closed}/token");
    let r = run(&env, &["jwks"], b"").await;
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);

    // A bad environment value and a bad file.
    let mut env = env_for(&fake);
    env.push(("KEYMANAGER_API_TIMEOUT", "soon".into()));
    let r = run(&env, &["jwks"], b"").await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("KEYMANAGER_API_TIMEOUT"), "{}", r.stderr);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g2p.toml");
    std::fs::write(
        &file,
        "[providers.default]\ntype = \"keymanager\"\napi_base_url = 5\n",
    )
    .unwrap();
    let r = run(&[], &["--config", file.to_str().unwrap(), "jwks"], b"").await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("g2p.toml"), "{}", r.stderr);

    // Unknown flags are usage errors.
    let r = run(&env_for(&fake), &["encrypt", "--nope"], b"").await;
    assert_eq!(r.code, 2);
}

#[tokio::test]
async fn configuration_file_with_named_providers() {
    let fake = FakeKeymanager::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g2p.toml");
    std::fs::write(
        &file,
        format!(
            r#"
default_provider = "registry"

[providers.registry]
type = "keymanager"
api_base_url = "{}"
auth_url = "{}"
auth_client_id = "{}"
auth_client_secret = "{}"

[providers.resident]
type = "keymanager"
api_base_url = "{}"
auth_url = "{}"
auth_client_id = "{}"
auth_client_secret = "{}"
encrypt_application_id = "RESIDENT"
encrypt_mode = "remote"
"#,
            fake.api_base_url(),
            fake.auth_url(),
            fake.options().client_id,
            fake.options().client_secret,
            fake.api_base_url(),
            fake.auth_url(),
            fake.options().client_id,
            fake.options().client_secret,
        ),
    )
    .unwrap();
    let cfg = file.to_str().unwrap();
    let r = run(
        &[],
        &["--config", cfg, "--provider", "resident", "encrypt"],
        b"r",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sealed = unb64(r.stdout_text().trim());
    let key = fake.current_key("RESIDENT", "ENCRYPT");
    assert_eq!(cipher::open(&key, None, None, &sealed).unwrap(), b"r");
    assert_eq!(fake.calls("encrypt"), 1);
    let r = run(&[], &["--config", cfg, "--provider", "nope", "jwks"], b"").await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("registry, resident"), "{}", r.stderr);
    // Environment overrides the file.
    let r = run(
        &[(
            "KEYMANAGER_ENCRYPT_APPLICATION_ID",
            "OVERRIDDEN".to_string(),
        )],
        &[
            "--config",
            cfg,
            "encrypt",
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        b"z",
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sealed = unb64(
        std::fs::read_to_string(dir.path().join("o"))
            .unwrap()
            .trim(),
    );
    let key = fake.current_key("OVERRIDDEN", "ENCRYPT");
    assert_eq!(cipher::open(&key, None, None, &sealed).unwrap(), b"z");
}
