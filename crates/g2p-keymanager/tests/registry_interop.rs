//! Interoperability of `registry` with OpenG2P's registry encryption, the other side played
//! by a plain Python implementation (`interop/openg2p_registry.py`, standard library only, none
//! of our crates) talking to `kms serve` over REST as OpenG2P does, with OpenG2P's salt and
//! aad: records this tool encrypts decrypt there to exactly `json.dumps` of their fields, and
//! records sealed there decrypt here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn python() -> Option<&'static str> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("python3");
    }
    assert!(
        !g2p_testkit::postgres::required(),
        "python3 is required under CI=true (apt-get install python3)"
    );
    eprintln!("SKIPPED registry interoperability: python3 is not installed; this test did not run");
    None
}

fn records() -> Vec<Value> {
    vec![
        json!({"id": 1, "is_registrant": true, "name": "José Ñúñez", "given_name": "José",
               "family_name": "Ñúñez", "address": "12 \"Market\" Road\nKano", "birth_place": "أمينة",
               "addl_name": "", "display_name": null, "phone": "0803"}),
        json!({"id": 2, "is_registrant": true, "name": "Grace 😀 Wanjiru", "birth_place": "Nyeri"}),
        json!({"id": 3, "is_registrant": false, "name": "Programme office"}),
        json!({"id": 4, "is_registrant": true, "phone": "0804"}),
    ]
}

fn jsonl(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const SALT: &str = "3q2-7_RkS9cVAAECAwQFBgcICQoLDA0ODxAREhMUFRY";
const AAD: &str = "Wm9vbS1hYWQtZm9yLXRoZS1vcGVuZzJwLXJlZ2lzdHJ5";

fn openg2p(python: &str, mode: &str, url: &str, input: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/openg2p_registry.py");
    let mut child = Command::new(python)
        .arg(script)
        .args([
            mode,
            &format!("{url}/v1/keymanager"),
            &format!("{url}/realms/openg2p/protocol/openid-connect/token"),
            "app",
            "app-secret",
            SALT,
            AAD,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ours(args: &[&str], url: &str, dir: &Path) -> String {
    let mut all = vec!["registry"];
    all.extend_from_slice(args);
    let mut cmd = common::command(&all, &dir.join("cli"));
    let out = common::with_keymanager_env(&mut cmd, url)
        .env("KEYMANAGER_ENCRYPT_SALT", SALT)
        .env("KEYMANAGER_ENCRYPT_AAD", AAD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn records_cross_between_this_tool_and_openg2ps_reading_path() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (server, url) = common::kms_serve(&dir.path().join("kms"));
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(&plain, jsonl(&records())).unwrap();

    // This tool encrypts; OpenG2P's path decrypts (and checks the sealed bytes are
    // json.dumps of the fields in list order).
    let sealed_here = ours(
        &["encrypt", "--in", plain.to_str().unwrap(), "--quiet"],
        &url,
        dir.path(),
    );
    let sealed = parse(&sealed_here);
    assert_eq!(sealed[0]["name"], "encrypted");
    assert!(sealed[0]["encrypted_val"].is_string());
    assert_eq!(
        (&sealed[2]["name"], &sealed[3].get("encrypted_val")),
        (&json!("Programme office"), &None)
    );
    let opened_there = parse(&openg2p(python, "decrypt", &url, &sealed_here));
    for (got, want) in opened_there.iter().zip(records()) {
        for field in [
            "name",
            "given_name",
            "family_name",
            "address",
            "birth_place",
            "addl_name",
            "phone",
        ] {
            assert_eq!(
                got.get(field),
                want.get(field),
                "record {} field {field}",
                want["id"]
            );
        }
    }

    // OpenG2P's path encrypts; this tool decrypts.
    let sealed_there = dir.path().join("sealed-there.jsonl");
    std::fs::write(
        &sealed_there,
        openg2p(python, "encrypt", &url, &jsonl(&records())),
    )
    .unwrap();
    let there = parse(&std::fs::read_to_string(&sealed_there).unwrap());
    assert_eq!(there[1]["is_encrypted"], true);
    assert_eq!(there[1]["name"], "encrypted");
    let opened_here = parse(&ours(
        &["decrypt", "--in", sealed_there.to_str().unwrap(), "--quiet"],
        &url,
        dir.path(),
    ));
    for (got, want) in opened_here.iter().zip(records()) {
        for (field, value) in want.as_object().unwrap() {
            if field != "is_encrypted" && field != "encrypted_val" {
                assert_eq!(&got[field], value, "record {} field {field}", want["id"]);
            }
        }
    }
    assert_eq!(opened_here[0]["is_encrypted"], false);
    assert_eq!(opened_here[0]["encrypted_val"], Value::Null);
    let (_, log) = common::stop(server);
    assert!(!log.contains("José"), "personal data in the server log");
}
