//! The key-encryption key and store options on the command line, without a database or a
//! token: a new file KEK by `kms migrate-kek --to file` (data sealed before still opens, the
//! old key no longer does), and each bad option refused with its reason and nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `cmd`, feeding `input`; (success, stdout, stdout and stderr).
fn run(mut cmd: Command, input: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), out.stdout, text)
}

fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)], why: &str) {
    let mut cmd = common::command(args, dir);
    cmd.envs(env.iter().copied());
    let (ok, _, text) = run(cmd, b"");
    assert!(!ok, "{args:?} was accepted: {text}");
    assert!(text.contains(why), "{args:?}: expected {why:?} in: {text}");
    assert!(!text.contains("s3cr3t"), "a password was shown: {text}");
}

#[test]
fn a_new_kek_file_rewraps_the_store_and_bad_options_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    // A store under a file KEK, and something sealed under it.
    let (ok, sealed, text) = run(common::command(&["encrypt"], dir), b"sealed before");
    assert!(ok, "{text}");
    let old_kek = std::fs::read(dir.join("kek")).unwrap();

    // Bad options, each named; the store is left as it was.
    refused(
        dir,
        &["kms", "keys", "list", "--kek", "env"],
        &[],
        "G2P_KMS_KEK is not set",
    );
    refused(
        dir,
        &["kms", "keys", "list", "--kek", "pkcs11"],
        &[],
        "G2P_KMS_PKCS11_PIN",
    );
    refused(
        dir,
        &["kms", "keys", "list", "--kek", "pkcs11"],
        &[("G2P_KMS_PKCS11_PIN", "1234")],
        "needs module",
    );
    refused(
        dir,
        &[
            "kms",
            "serve",
            "--client",
            common::CLIENT,
            "--public-url",
            "keymanager.internal",
        ],
        &[],
        "must start with http:// or https://",
    );
    refused(
        dir,
        &["kms", "migrate", "--from", dir.to_str().unwrap()],
        &[],
        "needs the database to copy into",
    );
    refused(
        dir,
        &[
            "kms",
            "keys",
            "list",
            "--database-url",
            "postgres://kms:s3cr3t@127.0.0.1:notaport/keys",
        ],
        &[],
        "the database URL is not valid",
    );
    // A kek.new left behind is not overwritten: it may be the only key of a store.
    std::fs::write(dir.join("kek.new"), b"left by an earlier run").unwrap();
    refused(
        dir,
        &["kms", "migrate-kek", "--to", "file"],
        &[],
        "kek.new exists",
    );
    assert_eq!(
        std::fs::read(dir.join("kek.new")).unwrap(),
        b"left by an earlier run"
    );
    assert_eq!(std::fs::read(dir.join("kek")).unwrap(), old_kek);
    std::fs::remove_file(dir.join("kek.new")).unwrap();

    // A new file key: everything re-wrapped, the old key refused, old data opens.
    let (ok, _, text) = run(
        common::command(&["kms", "migrate-kek", "--to", "file"], dir),
        b"",
    );
    assert!(ok, "{text}");
    assert!(text.contains("re-wrapped"), "{text}");
    let new_kek = std::fs::read(dir.join("kek")).unwrap();
    assert_ne!(new_kek, old_kek);
    assert!(!dir.join("kek.new").exists());
    let (ok, opened, text) = run(common::command(&["decrypt"], dir), &sealed);
    assert!(ok, "{text}");
    assert_eq!(opened, b"sealed before");
    let old = g2p_encryption::b64::encode_b64(&old_kek);
    refused(
        dir,
        &["kms", "keys", "list"],
        &[("G2P_KMS_KEK", old.as_str())],
        "does not match",
    );
}
