//! `g2p-mosip` against the independent reading of spec section 4 in `g2p-testkit`: what one
//! seals, the other opens, in every mode and size, and the layout is byte-exact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::cipher::{self, CipherError, CipherParams, Mode, Sealer};
use g2p_testkit::{TestKey, cipher as reference};

fn private(key: &TestKey) -> OaepPrivateDecryptingKey {
    OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(key.pkcs8()).unwrap()).unwrap()
}

fn all_params() -> Vec<(Option<Vec<u8>>, Option<Vec<u8>>)> {
    vec![
        (Some(vec![0x11; 32]), Some(vec![0x22; 32])),
        (Some(vec![0x11; 32]), None),
        (Some(vec![0x44; 12]), None),
        (Some(vec![0x44; 16]), Some(vec![1, 2, 3])),
        (None, Some(vec![0x22; 32])),
        (None, None),
    ]
}

fn sizes() -> Vec<usize> {
    vec![1, 16, 1000, 1 << 20]
}

#[test]
fn ours_seals_reference_opens() {
    let key = TestKey::generate("REGISTRATION-ENCRYPT");
    let sealer = Sealer::new(&CertificateInfo::from_der(key.cert_der()).unwrap()).unwrap();
    for (salt, aad) in all_params() {
        let params = CipherParams::new(salt.clone(), aad.clone());
        for size in sizes() {
            let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let blob = sealer.seal(&params, &plaintext).unwrap();
            // Layout (spec 10 check 7).
            let (offset, data_len) = match params.mode() {
                Mode::A => (288, size + 16),
                Mode::B => (288, size + 32),
                Mode::C => (294, 32 + size + 16),
            };
            assert_eq!(
                &blob[offset..offset + 14],
                cipher::SPLITTER,
                "{:?}",
                params.mode()
            );
            assert_eq!(blob.starts_with(b"VER_R2"), params.mode() == Mode::C);
            let tp_at = if params.mode() == Mode::C { 6 } else { 0 };
            assert_eq!(&blob[tp_at..tp_at + 32], key.thumbprint());
            assert_eq!(blob.len() - offset - 14, data_len);
            let opened = reference::open(&key, salt.as_deref(), aad.as_deref(), &blob).unwrap();
            assert_eq!(opened, plaintext);
        }
    }
}

#[test]
fn reference_seals_ours_opens() {
    let key = TestKey::generate("REGISTRATION-ENCRYPT");
    let private = private(&key);
    for (salt, aad) in all_params() {
        let params = CipherParams::new(salt.clone(), aad.clone());
        for size in sizes() {
            let plaintext = vec![0xa5u8; size];
            let blob = reference::seal(&key, salt.as_deref(), aad.as_deref(), &plaintext);
            let parsed = cipher::parse(&blob).unwrap();
            assert_eq!(parsed.thumbprint_hex().unwrap(), key.thumbprint_hex());
            assert_eq!(cipher::open(&private, &params, &blob).unwrap(), plaintext);
        }
    }
}

#[test]
fn mismatched_parameters_and_tampering_are_refused() {
    let key = TestKey::generate("REGISTRATION-ENCRYPT");
    let private = private(&key);
    let sealer = Sealer::new(&CertificateInfo::from_der(key.cert_der()).unwrap()).unwrap();
    let a = CipherParams::new(Some(vec![0x11; 32]), Some(vec![0x22; 32]));
    let blob = sealer.seal(&a, b"payment details").unwrap();
    // Spec 10 check 10/11: wrong salt, or no salt for mode A data.
    let wrong = CipherParams::new(Some(vec![0x12; 32]), Some(vec![0x22; 32]));
    assert_eq!(
        cipher::open(&private, &wrong, &blob),
        Err(CipherError::TagMismatch)
    );
    assert!(cipher::open(&private, &CipherParams::default(), &blob).is_err());
    let c = sealer
        .seal(&CipherParams::default(), b"payment details")
        .unwrap();
    assert_eq!(
        cipher::open(&private, &a, &c),
        Err(CipherError::TagMismatch)
    );
    // A flipped byte anywhere in the data part.
    let mut tampered = blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        cipher::open(&private, &a, &tampered),
        Err(CipherError::TagMismatch)
    );
    // A flipped wrapped key.
    let mut tampered = blob.clone();
    tampered[40] ^= 1;
    assert_eq!(
        cipher::open(&private, &a, &tampered),
        Err(CipherError::UnwrapFailed)
    );
    // Another key cannot unwrap.
    let other = private_of_other();
    assert_eq!(
        cipher::open(&other, &a, &blob),
        Err(CipherError::UnwrapFailed)
    );
    assert_eq!(sealer.seal(&a, b""), Err(CipherError::EmptyPlaintext));
}

fn private_of_other() -> OaepPrivateDecryptingKey {
    private(&TestKey::generate("other"))
}

#[test]
fn every_seal_uses_a_fresh_session_key() {
    let key = TestKey::generate("REGISTRATION-ENCRYPT");
    let sealer = Sealer::new(&CertificateInfo::from_der(key.cert_der()).unwrap()).unwrap();
    let a = CipherParams::new(Some(vec![0x11; 32]), None);
    let one = sealer.seal(&a, b"same").unwrap();
    let two = sealer.seal(&a, b"same").unwrap();
    assert_ne!(one[32..288], two[32..288]);
    assert_ne!(one[302..], two[302..]);
}
