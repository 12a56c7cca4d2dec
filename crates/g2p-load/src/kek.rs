//! `g2p-load kek`: what unwrapping a private key costs with the key-encryption key in memory
//! (a file KEK) and in a PKCS#11 token, and with the RSA key's parse on top — the work of the
//! first request that needs a key not yet in the store's cache.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use g2p_kms::Kek;
use g2p_kms::pkcs11::{PIN_ENV, Pkcs11Settings, TokenKek};

/// µs per call of `f`, over `count` calls.
fn per_call(count: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    for _ in 0..count {
        f()?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / count as f64)
}

pub fn run(module: &Path, token_label: &str, count: usize) -> Result<()> {
    let pin = std::env::var(PIN_ENV).with_context(|| format!("set {PIN_ENV}"))?;
    let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)?;
    let pkcs8: Pkcs8V1Der<'static> = key.as_der()?;
    let pkcs8 = pkcs8.as_ref().to_vec();
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes)?;
    let file = Kek::from_bytes(&bytes)?;
    let settings = Pkcs11Settings {
        module: Some(module.to_path_buf()),
        token_label: Some(token_label.to_string()),
        slot: None,
        key_label: Some("g2p-load-kek".into()),
    };
    let token = Kek::token(TokenKek::open(&settings, &pin, true)?);
    println!(
        "{count} unwraps of an RSA-2048 private key (PKCS#8, {} bytes) per key-encryption key\n",
        pkcs8.len()
    );
    println!("| key-encryption key | wrap µs | unwrap µs | unwrap + RSA parse µs |");
    println!("|---|---:|---:|---:|");
    for (name, kek) in [
        ("in memory (file or G2P_KMS_KEK)", &file),
        ("PKCS#11 token", &token),
    ] {
        let wrapped = kek.wrap(b"alias", &pkcs8)?;
        let wrap = per_call(count, || {
            kek.wrap(b"alias", &pkcs8)?;
            Ok(())
        })?;
        let unwrap = per_call(count, || {
            kek.unwrap(b"alias", &wrapped).context("does not unwrap")?;
            Ok(())
        })?;
        let cold = per_call(count.min(500), || {
            let plain = kek.unwrap(b"alias", &wrapped).context("does not unwrap")?;
            PrivateDecryptingKey::from_pkcs8(&plain)?;
            Ok(())
        })?;
        println!("| {name} | {wrap:.1} | {unwrap:.1} | {cold:.1} |");
    }
    Ok(())
}
