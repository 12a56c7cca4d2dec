//! `kms backup` and `kms restore`: a backup taken while `kms serve` encrypts restores into a
//! fresh directory whose key manager decrypts everything sealed before it; a restore with the
//! wrong key-encryption key is refused and writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{command, stop};
use g2p_encryption::EncryptionProvider;
use g2p_encryption_keymanager::KeymanagerProvider;

/// Starts `kms serve` on `data` with client `app`; returns it and a provider using it.
fn key_manager(data: &Path) -> (std::process::Child, KeymanagerProvider) {
    let (child, url) = common::kms_serve(data);
    let settings = common::keymanager_settings(&url);
    let provider = KeymanagerProvider::new(settings.build().unwrap()).unwrap();
    (child, provider)
}

fn run(args: &[&str], data: &Path) -> (i32, String, String) {
    let out = command(args, data).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_and_decrypts_what_was_sealed_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, provider) = key_manager(&data);
    let mut sealed = Vec::new();
    sealed.push((
        b"before rotation".to_vec(),
        provider.encrypt(b"before rotation").await.unwrap(),
    ));
    let data_arg = data.to_str().unwrap();
    let (code, _, stderr) = run(
        &[
            "kms",
            "keys",
            "rotate",
            "--data-dir",
            data_arg,
            "--app",
            "REGISTRATION",
            "--ref",
            "ENCRYPT",
        ],
        &data,
    );
    assert_eq!(code, 0, "{stderr}");
    for i in 0..5 {
        let plain = format!("after rotation {i}").into_bytes();
        let ciphertext = provider.encrypt(&plain).await.unwrap();
        sealed.push((plain, ciphertext));
    }

    // The backup runs while requests keep arriving.
    let provider = std::sync::Arc::new(provider);
    let busy = {
        let provider = provider.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..40 {
                let plain = format!("during backup {i}").into_bytes();
                let ciphertext = provider.encrypt(&plain).await.unwrap();
                done.push((plain, ciphertext));
            }
            done
        })
    };
    let backup = dir.path().join("nightly.backup");
    let backup_arg = backup.to_str().unwrap();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let data = data.clone();
        let args = ["kms", "backup", "--data-dir", data_arg, "--out", backup_arg].map(String::from);
        move || run(&args.iter().map(String::as_str).collect::<Vec<_>>(), &data)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("realm keys: openg2p"), "{stdout}");
    assert!(stdout.contains("keep that key apart"), "{stdout}");
    sealed.extend(busy.await.unwrap());
    let (code, _) = stop(child);
    assert_eq!(code, 0);

    // Restored into a fresh directory with the original kek file.
    let restored = dir.path().join("restored");
    let kek = data.join("kek");
    let (code, stdout, stderr) = run(
        &[
            "kms",
            "restore",
            "--in",
            backup_arg,
            "--data-dir",
            restored.to_str().unwrap(),
            "--kek-file",
            kek.to_str().unwrap(),
        ],
        &restored,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    let (listed_before, listed_after) = (
        run(&["kms", "keys", "list", "--data-dir", data_arg], &data).1,
        run(
            &[
                "kms",
                "keys",
                "list",
                "--data-dir",
                restored.to_str().unwrap(),
            ],
            &restored,
        )
        .1,
    );
    assert_eq!(listed_after, listed_before);

    let (child, provider) = key_manager(&restored);
    for (plain, ciphertext) in &sealed {
        assert_eq!(&provider.decrypt(ciphertext).await.unwrap(), plain);
    }
    let (code, _) = stop(child);
    assert_eq!(code, 0);
}

#[test]
fn a_restore_with_the_wrong_kek_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("input.txt");
    std::fs::write(&input, "x").unwrap();
    let encrypt = ["encrypt", "--in", input.to_str().unwrap()];
    let (code, _, stderr) = run(&encrypt, &data);
    assert_eq!(code, 0, "{stderr}");
    let backup = dir.path().join("b.backup");
    let data_arg = data.to_str().unwrap();
    let (code, _, stderr) = run(
        &[
            "kms",
            "backup",
            "--data-dir",
            data_arg,
            "--out",
            backup.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(code, 0, "{stderr}");

    // Another store's kek.
    let other = dir.path().join("other");
    let (code, _, stderr) = run(&encrypt, &other);
    assert_eq!(code, 0, "{stderr}");
    let target = dir.path().join("target");
    let (code, stdout, stderr) = run(
        &[
            "kms",
            "restore",
            "--in",
            backup.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
            "--kek-file",
            other.join("kek").to_str().unwrap(),
        ],
        &target,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not open"), "{stderr}");
    assert!(stdout.is_empty());
    assert!(!target.exists(), "the refused restore wrote something");

    // Over an existing store: refused, the store untouched.
    let before = std::fs::read(data.join("keys.db")).unwrap();
    let (code, _, stderr) = run(
        &[
            "kms",
            "restore",
            "--in",
            backup.to_str().unwrap(),
            "--data-dir",
            other.to_str().unwrap(),
        ],
        &other,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already holds a key store"), "{stderr}");
    assert_eq!(std::fs::read(data.join("keys.db")).unwrap(), before);

    // A backup of a directory without a store: refused, nothing created.
    let empty = dir.path().join("typo");
    let (code, _, stderr) = run(
        &[
            "kms",
            "backup",
            "--data-dir",
            empty.to_str().unwrap(),
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        &empty,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no key store"), "{stderr}");
    assert!(!empty.exists());
}
