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
