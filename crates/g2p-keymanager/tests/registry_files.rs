//! `g2p-keymanager registry` over files with the embedded key manager: a failure in the middle
//! leaves the target as it was, rejects set bad lines aside, a rotation then a rewrap, the
//! inventory, and CSV through standard input and output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::{Value, json};

fn run(data: &Path, args: &[&str]) -> Output {
    let mut all = vec!["registry"];
    all.extend_from_slice(args);
    common::command(&all, data).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn registry(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"id": i, "is_registrant": !i.is_multiple_of(4), "name": format!("Person {i} Ñ"),
                        "address": format!("{i} Road"), "phone": format!("080{i}")})
        })
        .collect()
}

fn jsonl(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_failure_midway_leaves_the_target_as_it_was_and_rejects_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut text = jsonl(&registry(1000));
    text.insert_str(
        text.find("{\"id\":500").unwrap(),
        "{\"id\": 500.5, broken\n",
    );
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &text).unwrap();
    let target = dir.path().join("out.jsonl");
    std::fs::write(&target, "OLD").unwrap();
    let args = [
        "encrypt",
        "--in",
        input.to_str().unwrap(),
        "--out",
        target.to_str().unwrap(),
    ];
    let out = run(&data, &args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 501: not JSON"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "OLD");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "a temporary file was left behind: {names:?}"
    );

    let rejects = dir.path().join("rejects.jsonl");
    let mut with_rejects = args.to_vec();
    with_rejects.extend(["--rejects", rejects.to_str().unwrap()]);
    let stderr = ok(&run(&data, &with_rejects));
    assert!(stderr.contains("rejected: line 501: not JSON"), "{stderr}");
    assert!(
        stderr.contains("registry encrypt: read 1001, encrypted 750, skipped 250, failed 1 in "),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&rejects).unwrap(),
        "{\"id\": 500.5, broken\n"
    );
    let sealed = parse(&std::fs::read_to_string(&target).unwrap());
    assert_eq!(sealed.len(), 1000);
    assert_eq!(
        (sealed[1]["name"].as_str(), sealed[0]["name"].as_str()),
        (Some("encrypted"), Some("Person 0 Ñ"))
    );
}

#[test]
fn rotate_rewrap_inspect_and_decrypt_give_back_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let original = registry(40);
    let plain = dir.path().join("plain.jsonl");
    std::fs::write(&plain, jsonl(&original)).unwrap();
    let first = dir.path().join("first.jsonl");
    ok(&run(
        &data,
        &[
            "encrypt",
            "--in",
            plain.to_str().unwrap(),
            "--out",
            first.to_str().unwrap(),
        ],
    ));
    let rotate = common::rotate_encryption_key(&data);
    ok(&rotate);
    // Half the file is decrypted and sealed again under the new key: two keys in use.
    let mixed_records: Vec<Value> = parse(&std::fs::read_to_string(&first).unwrap());
    let half = dir.path().join("half.jsonl");
    std::fs::write(&half, jsonl(&mixed_records[20..])).unwrap();
    let opened_half = run(&data, &["decrypt", "--in", half.to_str().unwrap()]);
    ok(&opened_half);
    std::fs::write(&half, &opened_half.stdout).unwrap();
    let resealed = run(&data, &["encrypt", "--in", half.to_str().unwrap()]);
    ok(&resealed);
    let mixed = dir.path().join("mixed.jsonl");
    std::fs::write(
        &mixed,
        format!(
            "{}{}",
            jsonl(&mixed_records[..20]),
            String::from_utf8(resealed.stdout).unwrap()
        ),
    )
    .unwrap();

    let inspect = |path: &Path| -> Value {
        let out = run(
            &data,
            &[
                "inspect",
                "--in",
                path.to_str().unwrap(),
                "--verify",
                "--json",
            ],
        );
        ok(&out);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("Person"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = inspect(&mixed);
    assert_eq!(
        (before["plain"].as_u64(), before["encrypted"].as_u64()),
        (Some(10), Some(30))
    );
    assert_eq!(before["keys"].as_array().unwrap().len(), 2);
    assert_eq!(before["undecryptable"], 0);

    let rewrapped = dir.path().join("rewrapped.jsonl");
    let stderr = ok(&run(
        &data,
        &[
            "rewrap",
            "--in",
            mixed.to_str().unwrap(),
            "--out",
            rewrapped.to_str().unwrap(),
        ],
    ));
    assert!(stderr.contains("rewrapped 15,"), "{stderr}");
    let after = inspect(&rewrapped);
    assert_eq!(after["keys"].as_array().unwrap().len(), 1);
    assert!(
        after["keys"][0]["key_id"].is_string() && after["keys"][0]["expires"].is_string(),
        "{after}"
    );

    let text = run(&data, &["inspect", "--in", rewrapped.to_str().unwrap()]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("40 records: 10 plain, 30 encrypted\n  key "),
        "{text}"
    );

    let out = run(&data, &["decrypt", "--in", rewrapped.to_str().unwrap()]);
    ok(&out);
    for (got, want) in parse(&String::from_utf8(out.stdout).unwrap())
        .iter()
        .zip(&original)
    {
        for (field, value) in want.as_object().unwrap() {
            assert_eq!(&got[field], value);
        }
    }
}

#[test]
fn csv_through_standard_input_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = "id,name,given_name,is_registrant,phone\n1,\"Okafor, Chidi\",Chidi,True,0803\n2,Office,,False,0804\n";
    let mut child = common::command(&["registry", "encrypt", "--format", "csv"], &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), csv.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    ok(&out);
    let sealed = String::from_utf8(out.stdout).unwrap();
    assert!(sealed.starts_with("id,name,given_name,is_registrant,phone,encrypted_val,is_encrypted\n1,encrypted,encrypted,True,0803,"), "{sealed}");
    assert!(sealed.ends_with("\n2,Office,,False,0804,,\n"), "{sealed}");
    let path = dir.path().join("sealed.csv");
    std::fs::write(&path, &sealed).unwrap();
    let out = run(&data, &["decrypt", "--in", path.to_str().unwrap()]);
    ok(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "id,name,given_name,is_registrant,phone,encrypted_val,is_encrypted\n1,\"Okafor, Chidi\",Chidi,True,0803,,false\n2,Office,,False,0804,,\n"
    );
    // A typo in --fields is refused with nothing written.
    let out = run(
        &data,
        &["encrypt", "--in", path.to_str().unwrap(), "--fields", "nme"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn the_registry_table_of_the_configuration_file_sets_fields_and_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("g2p.toml");
    std::fs::write(
        &config,
        "[registry]\nfields = [\"address\"]\nplaceholder = \"***\"\n",
    )
    .unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, jsonl(&registry(2))).unwrap();
    let args = [
        "registry",
        "encrypt",
        "--in",
        input.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = common::command(&args, &data).output().unwrap();
    ok(&out);
    let sealed = parse(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        (sealed[1]["address"].as_str(), sealed[1]["name"].as_str()),
        (Some("***"), Some("Person 1 Ñ"))
    );
    // A key the table does not know is named, before anything runs.
    std::fs::write(&config, "[registry]\nfeilds = [\"address\"]\n").unwrap();
    let out = common::command(&args, &data).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("feilds"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}
