//! Files the command reads and writes: signing exactly the bytes of a document, and output
//! that stays private.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Output;

fn run(data: &std::path::Path, args: &[&str]) -> Output {
    common::binary()
        .env("G2P_DATA_DIR", data)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn detached_payloads_are_bytes_a_document_verifies_with_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Pretty-printed, with a trailing newline: signed exactly as written.
    let doc = dir.path().join("doc.json");
    std::fs::write(
        &doc,
        "{\n  \"beneficiary\": \"B-1029\",\n  \"amount\": 150\n}\n",
    )
    .unwrap();
    let doc = doc.to_str().unwrap();
    let jws_path = dir.path().join("doc.jws");
    let jws_arg = jws_path.to_str().unwrap();
    ok(&run(
        &data,
        &["sign", "--detached", "--in", doc, "--out", jws_arg],
    ));
    let verified = ok(&run(&data, &["verify", "--in", jws_arg, "--payload", doc]));
    assert_eq!(
        verified,
        format!("{}\n", std::fs::read_to_string(doc).unwrap())
    );
    // One byte more is another document.
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        "{\n  \"beneficiary\": \"B-1029\",\n  \"amount\": 150\n} \n",
    )
    .unwrap();
    let refused = run(
        &data,
        &[
            "verify",
            "--in",
            jws_arg,
            "--payload",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    // Not JSON is still refused unless signed as text.
    std::fs::write(&other, "not json").unwrap();
    let refused = run(&data, &["sign", "--in", other.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
}

#[cfg(unix)]
#[test]
fn decrypted_output_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "Amina Yusuf").unwrap();
    let sealed = out_dir.join("sealed.txt");
    ok(&run(
        &data,
        &[
            "encrypt",
            "--in",
            plain.to_str().unwrap(),
            "--out",
            sealed.to_str().unwrap(),
        ],
    ));
    // A new file is the owner's alone, whatever the umask.
    let opened = out_dir.join("opened.txt");
    ok(&run(
        &data,
        &[
            "decrypt",
            "--in",
            sealed.to_str().unwrap(),
            "--out",
            opened.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read_to_string(&opened).unwrap(), "Amina Yusuf");
    assert_eq!(mode(&opened), 0o600);
    // A planted link where a temporary file might go is not followed; a file replaced keeps
    // the mode its owner chose; nothing is left beside it.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    for pid in 0..64 {
        let _ = std::os::unix::fs::symlink(&victim, out_dir.join(format!(".opened.txt.{pid}.tmp")));
    }
    std::fs::set_permissions(&opened, std::fs::Permissions::from_mode(0o640)).unwrap();
    ok(&run(
        &data,
        &[
            "decrypt",
            "--in",
            sealed.to_str().unwrap(),
            "--out",
            opened.to_str().unwrap(),
        ],
    ));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(mode(&opened), 0o640);
    let regular: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.is_symlink())
        .collect();
    assert_eq!(regular.len(), 2, "{regular:?}");
    // bulk decrypt writes private files too.
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, "{\"name\":\"Amina\"}\n").unwrap();
    let bulk_sealed = out_dir.join("bulk-sealed.jsonl");
    let bulk_opened = out_dir.join("bulk-opened.jsonl");
    ok(&run(
        &data,
        &[
            "bulk",
            "encrypt",
            "--field",
            "name",
            "--in",
            export.to_str().unwrap(),
            "--out",
            bulk_sealed.to_str().unwrap(),
        ],
    ));
    ok(&run(
        &data,
        &[
            "bulk",
            "decrypt",
            "--field",
            "name",
            "--in",
            bulk_sealed.to_str().unwrap(),
            "--out",
            bulk_opened.to_str().unwrap(),
        ],
    ));
    assert_eq!(mode(&bulk_opened), 0o600);
}

#[test]
fn no_key_store_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("g2p-dta");
    for args in [
        vec!["kms", "keys", "list", "--data-dir", typo.to_str().unwrap()],
        vec![
            "kms",
            "keys",
            "rotate",
            "--data-dir",
            typo.to_str().unwrap(),
            "--app",
            "REGISTRATION",
        ],
    ] {
        let out = run(&dir.path().join("unused"), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no key store in") && stderr.contains("g2p-dta"),
            "{stderr}"
        );
        assert!(!typo.exists(), "{args:?} made {}", typo.display());
    }
    // The embedded default's first use creates the store, and says where.
    let data = dir.path().join("data");
    let mut child = common::binary()
        .env("G2P_DATA_DIR", &data)
        .args(["encrypt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"x").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("created a new key store"), "{stderr}");
    assert!(stderr.contains(data.to_str().unwrap()), "{stderr}");
    let listed = ok(&run(
        &data,
        &["kms", "keys", "list", "--data-dir", data.to_str().unwrap()],
    ));
    assert!(listed.starts_with("application\treference"), "{listed}");
}

#[test]
fn the_command_audits_its_key_operations() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let audit = dir.path().join("audit.log");
    let audit_arg = audit.to_str().unwrap();
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "Grace Wanjiru, plot 9").unwrap();
    let sealed = dir.path().join("sealed.txt");
    let opened = dir.path().join("opened.txt");
    ok(&run(
        &data,
        &[
            "encrypt",
            "--audit-log",
            audit_arg,
            "--in",
            plain.to_str().unwrap(),
            "--out",
            sealed.to_str().unwrap(),
        ],
    ));
    ok(&run(
        &data,
        &[
            "decrypt",
            "--audit-log",
            audit_arg,
            "--in",
            sealed.to_str().unwrap(),
            "--out",
            opened.to_str().unwrap(),
        ],
    ));
    // The [audit] table does the same; a refused ciphertext is recorded as refused.
    let config = dir.path().join("g2p.toml");
    std::fs::write(&config, format!("[audit]\npath = {audit_arg:?}\n")).unwrap();
    let mut bad = std::fs::read_to_string(&sealed).unwrap().trim().to_string();
    let at = bad.len() - 10;
    let swapped = if &bad[at..=at] == "A" { "B" } else { "A" };
    bad.replace_range(at..=at, swapped);
    std::fs::write(&sealed, &bad).unwrap();
    let refused = run(
        &data,
        &[
            "decrypt",
            "--config",
            config.to_str().unwrap(),
            "--in",
            sealed.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["encrypt", "decrypt", "decrypt"]);
    for line in &lines {
        assert_eq!(line["service"], "cli");
        assert!(line["caller"].as_str().unwrap().starts_with("cli:"));
        assert_eq!(line["provider"], "default");
        assert_eq!(line["application_id"], "REGISTRATION");
    }
    assert_eq!(lines[0]["keys"], lines[1]["keys"]);
    assert_eq!(lines[2]["outcome"], "refused");
    assert!(
        !text.contains("Grace") && !text.contains(&bad[..30]),
        "{text}"
    );
}
