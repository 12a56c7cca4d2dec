//! The key-encryption key in a PKCS#11 token (a throwaway SoftHSM2 token; skipped, loudly,
//! without SoftHSM; failed under `CI=true`): `kms serve` over it, rotation, restart, moving a
//! store from a file KEK into the token and back, the errors an operator meets, and — read
//! through PKCS#11 directly, not through our code — that the key cannot leave the token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use g2p_encryption::{EncryptionProvider, SignOptions, SignPayload};
use g2p_encryption_keymanager::KeymanagerProvider;
use g2p_testkit::softhsm::{SoftHsm, TOKEN_LABEL, USER_PIN};

/// `kms` with `args`, the data directory `dir`, the token's configuration and `pin`.
fn kms(hsm: &SoftHsm, dir: &Path, pin: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = common::command(&[&["kms"], args].concat(), dir);
    cmd.env("SOFTHSM2_CONF", hsm.conf());
    if let Some(pin) = pin {
        cmd.env("G2P_KMS_PKCS11_PIN", pin);
    }
    cmd
}

/// The flags that put the KEK in the test token.
fn token_flags(hsm: &SoftHsm) -> Vec<String> {
    [
        "--kek",
        "pkcs11",
        "--pkcs11-module",
        hsm.module().to_str().unwrap(),
        "--pkcs11-token-label",
        TOKEN_LABEL,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(mut cmd: Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(USER_PIN), "the PIN was shown: {text}");
    (out.status.success(), text)
}

fn serve(hsm: &SoftHsm, dir: &Path, extra: &[String]) -> (Child, String) {
    let mut args: Vec<&str> = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--client",
        common::CLIENT,
    ];
    args.extend(extra.iter().map(String::as_str));
    std::fs::create_dir_all(dir).unwrap();
    common::start_server(kms(hsm, dir, Some(USER_PIN), &args), &dir.join("serve.log"))
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn provider(url: &str) -> KeymanagerProvider {
    KeymanagerProvider::new(common::keymanager_settings(url).build().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_under_a_token_kek_serves_rotates_restarts_and_moves() {
    let Some(hsm) = SoftHsm::start("a_store_under_a_token_kek_serves") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("store");
    let flags = token_flags(&hsm);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();

    // A new store: the token makes the key; no kek file is written.
    let (child, url) = serve(&hsm, &dir, &flags);
    let p = provider(&url);
    let sealed = p.encrypt(b"kept in the token's care").await.unwrap();
    let token = p
        .jwt_sign(
            &SignPayload::Text("a document".into()),
            &SignOptions::default(),
        )
        .await
        .unwrap();
    p.jwt_verify(&token, None).await.unwrap();
    assert_eq!(
        p.decrypt(&sealed).await.unwrap(),
        b"kept in the token's care"
    );
    stop(child);
    assert!(!dir.join("kek").exists(), "a kek file was written");
    let keys = std::fs::read(dir.join("keys.db")).unwrap();
    assert!(
        !keys
            .windows(b"kept in the token's care".len())
            .any(|w| w == b"kept in the token's care")
    );

    // Rotation through the token, then a restart: old and new data open, the old token
    // still verifies (the realm key is wrapped by the token too).
    let mut rotate = vec![
        "keys",
        "rotate",
        "--app",
        "REGISTRATION",
        "--ref",
        "ENCRYPT",
    ];
    rotate.extend(&flag_refs);
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &rotate));
    assert!(ok, "{text}");
    let (child, url) = serve(&hsm, &dir, &flags);
    let p = provider(&url);
    let after = p.encrypt(b"after rotation").await.unwrap();
    let thumbprint = |c: &[u8]| {
        g2p_mosip::cipher::parse(c)
            .unwrap()
            .thumbprint_hex()
            .unwrap()
    };
    assert_ne!(thumbprint(&after), thumbprint(&sealed));
    assert_eq!(
        p.decrypt(&sealed).await.unwrap(),
        b"kept in the token's care"
    );
    assert_eq!(p.decrypt(&after).await.unwrap(), b"after rotation");
    p.jwt_verify(&token, None).await.unwrap();
    stop(child);

    // What an operator meets, each named.
    let mut list = vec!["keys", "list"];
    list.extend(&flag_refs);
    let (ok, text) = run(kms(&hsm, &dir, Some("0000-0000"), &list));
    assert!(!ok && text.contains("wrong PIN"), "{text}");
    let (ok, text) = run(kms(&hsm, &dir, None, &list));
    assert!(!ok && text.contains("G2P_KMS_PKCS11_PIN"), "{text}");
    let module = hsm.module().to_str().unwrap();
    let other_token = [
        "keys",
        "list",
        "--kek",
        "pkcs11",
        "--pkcs11-module",
        module,
        "--pkcs11-token-label",
        "no-such-token",
    ];
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &other_token[..]));
    assert!(!ok && text.contains("no PKCS#11 token labelled"), "{text}");
    assert!(
        text.contains(TOKEN_LABEL),
        "the tokens there are not listed: {text}"
    );
    let mut other_key = list.clone();
    other_key.extend(["--pkcs11-key-label", "another-key"]);
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &other_key));
    assert!(!ok && text.contains("holds no AES key labelled"), "{text}");
    let mut no_module = vec!["keys", "list", "--kek", "pkcs11", "--pkcs11-module"];
    no_module.extend([
        "/nonexistent/libpkcs11.so",
        "--pkcs11-token-label",
        TOKEN_LABEL,
    ]);
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &no_module));
    assert!(
        !ok && text.contains("cannot load the PKCS#11 module"),
        "{text}"
    );
    let bystander = base64_key(7);
    let (ok, text) = run({
        let mut cmd = kms(&hsm, &dir, None, &["keys", "list"]);
        cmd.env("G2P_KMS_KEK", &bystander);
        cmd
    });
    assert!(!ok && text.contains("does not match"), "{text}");

    // The key cannot be read out of the token, asked through PKCS#11 directly.
    probe(&hsm);

    // Out of the token into a file, and back in: the same keys open the same data.
    let mut to_file = vec!["migrate-kek", "--to", "file"];
    to_file.extend(&flag_refs);
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &to_file));
    assert!(ok, "{text}");
    assert!(dir.join("kek").exists());
    let (child, url) = serve(&hsm, &dir, &[]);
    let p = provider(&url);
    assert_eq!(
        p.decrypt(&sealed).await.unwrap(),
        b"kept in the token's care"
    );
    p.jwt_verify(&token, None).await.unwrap();
    stop(child);
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &list));
    assert!(
        !ok && text.contains("does not match"),
        "the token still opens it: {text}"
    );
    let mut to_token = vec!["migrate-kek", "--to", "pkcs11"];
    to_token.extend(["--pkcs11-module", hsm.module().to_str().unwrap()]);
    to_token.extend([
        "--pkcs11-token-label",
        TOKEN_LABEL,
        "--pkcs11-key-label",
        "kek-2",
    ]);
    let (ok, text) = run(kms(&hsm, &dir, Some(USER_PIN), &to_token));
    assert!(ok, "{text}");
    let mut flags2 = flags.clone();
    flags2.extend(["--pkcs11-key-label".to_string(), "kek-2".to_string()]);
    let (child, url) = serve(&hsm, &dir, &flags2);
    let p = provider(&url);
    assert_eq!(
        p.decrypt(&sealed).await.unwrap(),
        b"kept in the token's care"
    );
    assert_eq!(p.decrypt(&after).await.unwrap(), b"after rotation");
    stop(child);

    // The embedded provider (here the command line's encrypt and decrypt) over the same
    // store, the token named by the configuration file's [kms.kek].
    let config = data.path().join("g2p.toml");
    std::fs::write(
        &config,
        format!(
            "[kms.kek]\nsource = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{TOKEN_LABEL}\"\nkey_label = \"kek-2\"\n",
            hsm.module().display()
        ),
    )
    .unwrap();
    let embedded = |args: &[&str], input: &[u8]| {
        let mut child = common::command(
            &[&["--config", config.to_str().unwrap()], args].concat(),
            &dir,
        )
        .env("SOFTHSM2_CONF", hsm.conf())
        .env("G2P_KMS_PKCS11_PIN", USER_PIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let sealed_here = embedded(&["encrypt"], b"through the embedded provider");
    assert_eq!(
        embedded(&["decrypt"], &sealed_here),
        b"through the embedded provider"
    );
}

fn base64_key(byte: u8) -> String {
    g2p_encryption::b64::encode_b64(&[byte; 32])
}

/// Runs [`the_kek_cannot_be_read_out`] in a process of its own, where `SOFTHSM2_CONF` names
/// the test token (SoftHSM reads it once per process).
fn probe(hsm: &SoftHsm) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "the_kek_cannot_be_read_out",
            "--ignored",
            "--nocapture",
        ])
        .env("SOFTHSM2_CONF", hsm.conf())
        .env("G2P_PROBE_MODULE", hsm.module())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the probe did not run: {text}");
}

/// Reads the key-encryption key's attributes with the PKCS#11 library itself: its value is
/// not given out, and it is marked sensitive, never extractable. Run by [`probe`].
#[test]
#[ignore = "run by the HSM test in a process of its own"]
fn the_kek_cannot_be_read_out() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    use cryptoki::session::UserType;
    let module = std::env::var("G2P_PROBE_MODULE").expect("run by the HSM test");
    let pkcs11 = Pkcs11::new(module).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim() == TOKEN_LABEL)
        .unwrap();
    let session = pkcs11.open_ro_session(slot).unwrap();
    session
        .login(UserType::User, Some(&USER_PIN.to_string().into()))
        .unwrap();
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"g2p-kms-kek".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
    let attributes = session
        .get_attributes(
            keys[0],
            &[
                AttributeType::Value,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap();
    assert!(
        !attributes.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the token gave out the key's value"
    );
    assert!(
        attributes.contains(&Attribute::Sensitive(true)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::Extractable(false)),
        "{attributes:?}"
    );
    assert!(
        attributes.contains(&Attribute::NeverExtractable(true)),
        "{attributes:?}"
    );
}
