//! `g2p-keymanager bulk`: a registry export in JSON Lines and CSV through the embedded key
//! manager, and the bad inputs that must leave no output behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Output};

use serde_json::{Value, json};

fn run(data_dir: &std::path::Path, args: &[&str]) -> Output {
    common::binary()
        .env("G2P_DATA_DIR", data_dir.join("data"))
        .args(args)
        .output()
        .unwrap()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const REGISTRY: &str = r#"{"id":"B-1","name":"Amina Yusuf","address":{"city":"Kano","street":"12 Market Road"},"household":7}
{"id":"B-2","name":"Juan dela Cruz","address":{"city":"Quezon City"},"phone":null}

{"id":"B-3","name":"Grace Wanjiru","household":3}
"#;

#[test]
fn a_registry_round_trips_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("registry.jsonl");
    std::fs::write(&input, REGISTRY).unwrap();
    let sealed = dir.path().join("sealed.jsonl");
    let out = run(
        dir.path(),
        &[
            "bulk",
            "encrypt",
            "--field",
            "name,address.street",
            "--field",
            "phone",
            "--in",
            input.to_str().unwrap(),
            "--out",
            sealed.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bulk encrypt: read 3, encrypted 3, skipped 0, failed 0 in ")
            && stderr.contains("; 4 values"),
        "{stderr}"
    );
    let original = lines(REGISTRY);
    let encrypted = lines(&std::fs::read_to_string(&sealed).unwrap());
    assert_eq!(encrypted.len(), 3);
    for (before, after) in original.iter().zip(&encrypted) {
        // Untouched fields and key order stay; chosen fields become ciphertexts.
        assert_eq!(before["id"], after["id"]);
        assert_eq!(before["household"], after["household"]);
        assert_eq!(before["address"]["city"], after["address"]["city"]);
        assert_eq!(
            before.as_object().unwrap().keys().collect::<Vec<_>>(),
            after.as_object().unwrap().keys().collect::<Vec<_>>()
        );
        let name = after["name"].as_str().unwrap();
        assert_ne!(name, before["name"].as_str().unwrap());
        let blob = g2p_encryption::b64::decode_lenient(name).unwrap();
        assert!(
            g2p_mosip::cipher::parse(&blob).is_ok(),
            "not a MOSIP ciphertext"
        );
    }
    assert_eq!(encrypted[1]["phone"], Value::Null);
    // Each value decrypts on its own with the plain decrypt command too.
    let one = Command::new(env!("CARGO_BIN_EXE_g2p-keymanager"))
        .env("G2P_DATA_DIR", dir.path().join("data"))
        .args(["decrypt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut one = one;
    std::io::Write::write_all(
        &mut one.stdin.take().unwrap(),
        encrypted[0]["address"]["street"]
            .as_str()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(one.wait_with_output().unwrap().stdout, b"12 Market Road");

    let opened = dir.path().join("opened.jsonl");
    let out = run(
        dir.path(),
        &[
            "bulk",
            "decrypt",
            "--field",
            "name,address.street,phone",
            "--concurrency",
            "3",
            "--in",
            sealed.to_str().unwrap(),
            "--out",
            opened.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&std::fs::read_to_string(&opened).unwrap()), original);
}

#[test]
fn bad_records_and_refused_values_name_the_line_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.jsonl");
    let check = |input: &str, args: &[&str], exit: i32, needle: &str| {
        let input_path = dir.path().join("in.jsonl");
        std::fs::write(&input_path, input).unwrap();
        let mut all = vec!["bulk"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--in",
            input_path.to_str().unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ]);
        let out = run(dir.path(), &all);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(exit), "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
        assert!(!out_path.exists(), "output written despite the failure");
    };
    check(
        "{\"name\":\"A\"}\n{\"name\": \n",
        &["encrypt", "--field", "name"],
        2,
        "line 2: not JSON",
    );
    check(
        "[1,2]\n",
        &["encrypt", "--field", "name"],
        2,
        "line 1: an array is not a record (a JSON object)",
    );
    // A misspelt field is a mistake, not a registry written out in clear.
    check(
        "{\"name\":\"A\"}\n",
        &["encrypt", "--field", "nme"],
        2,
        "no record has the field \"nme\": nothing was written",
    );
    check(
        "{\"age\":41}\n",
        &["encrypt", "--field", "age"],
        2,
        "line 1, field age: a number is not text",
    );
    check(
        "{\"name\":\"A\"}\n",
        &["encrypt", "--field", "a..b"],
        2,
        "not a field path",
    );
    check(
        "{\"name\":\"@@@\"}\n",
        &["decrypt", "--field", "name"],
        2,
        "line 1, field name: not a base64url",
    );
    // Nor is anything written to standard output when the run fails.
    let input_path = dir.path().join("typo.jsonl");
    std::fs::write(&input_path, "{\"name\":\"A\"}\n").unwrap();
    let typo = [
        "bulk",
        "encrypt",
        "--field",
        "nme",
        "--in",
        input_path.to_str().unwrap(),
    ];
    let failed = run(dir.path(), &typo);
    assert_eq!(failed.status.code(), Some(2));
    assert!(failed.stdout.is_empty());
    let mut allowed = typo.to_vec();
    allowed.push("--allow-missing-fields");
    let passed = run(dir.path(), &allowed);
    assert!(passed.status.success());
    assert_eq!(passed.stdout, b"{\"name\":\"A\"}\n");
    // A ciphertext that does not decrypt: refused (exit 1), naming where.
    // An empty export is an empty result.
    let empty = run(
        dir.path(),
        &["bulk", "encrypt", "--field", "name", "--in", "/dev/null"],
    );
    assert!(empty.status.success() && empty.stdout.is_empty());
    let input_path = dir.path().join("one.jsonl");
    std::fs::write(&input_path, "{\"name\":\"secret\"}\n").unwrap();
    let sealed = run(
        dir.path(),
        &[
            "bulk",
            "encrypt",
            "--field",
            "name",
            "--in",
            input_path.to_str().unwrap(),
        ],
    );
    let record: Value = serde_json::from_slice(&sealed.stdout).unwrap();
    let mut blob = g2p_encryption::b64::decode_lenient(record["name"].as_str().unwrap()).unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let tampered = json!({"name": g2p_encryption::b64::encode_b64u(&blob)}).to_string();
    check(
        &format!("{{\"name\":\"x\"}}\n{tampered}\n"),
        &["decrypt", "--field", "name"],
        2,
        "line 1, field name",
    );
    check(
        &format!("{tampered}\n"),
        &["decrypt", "--field", "name"],
        1,
        "line 1, field name: decryption failed",
    );
}

#[test]
fn csv_exports_keep_their_columns_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("registry.csv");
    let text = "id,name,phone\nB-1,\"Yusuf, Amina\",0803\nB-2,,0804\n";
    std::fs::write(&input, text).unwrap();
    let sealed = run(
        dir.path(),
        &[
            "bulk",
            "encrypt",
            "--field",
            "name",
            "--in",
            input.to_str().unwrap(),
        ],
    );
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let sealed_text = String::from_utf8(sealed.stdout).unwrap();
    assert!(
        sealed_text.starts_with("id,name,phone\nB-1,"),
        "{sealed_text}"
    );
    assert!(!sealed_text.contains("Amina"));
    let sealed_path = dir.path().join("sealed.csv");
    std::fs::write(&sealed_path, &sealed_text).unwrap();
    // The empty name of B-2 (an empty cell) has nothing to protect and stays empty.
    assert!(sealed_text.contains("\nB-2,,0804\n"), "{sealed_text}");
    let opened = run(
        dir.path(),
        &[
            "bulk",
            "decrypt",
            "--field",
            "name",
            "--in",
            sealed_path.to_str().unwrap(),
        ],
    );
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    assert_eq!(String::from_utf8(opened.stdout).unwrap(), text);
}
