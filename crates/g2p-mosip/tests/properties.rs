//! Properties of the ciphertext format over arbitrary input: parsing and opening never panic,
//! every seal opens to its plaintext, and no single-bit change outside the thumbprint (which
//! only selects the key) is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::cipher::{self, CipherParams, Mode, Sealer};
use g2p_testkit::TestKey;
use g2p_testkit::hostile::Tally;
use proptest::prelude::*;

struct Keys {
    sealer: Sealer,
    private: OaepPrivateDecryptingKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = TestKey::generate("REGISTRATION-ENCRYPT");
        Keys {
            sealer: Sealer::new(&CertificateInfo::from_der(key.cert_der()).unwrap()).unwrap(),
            private: OaepPrivateDecryptingKey::new(
                PrivateDecryptingKey::from_pkcs8(key.pkcs8()).unwrap(),
            )
            .unwrap(),
        }
    })
}

/// Salt (none, or a GCM IV of 12, 16 or 32 bytes) and aad (none or 1–64 bytes).
fn params() -> impl Strategy<Value = CipherParams> {
    let salt = prop_oneof![
        Just(None),
        prop::collection::vec(any::<u8>(), 12).prop_map(Some),
        prop::collection::vec(any::<u8>(), 16).prop_map(Some),
        prop::collection::vec(any::<u8>(), 32).prop_map(Some),
    ];
    let aad = prop::option::of(prop::collection::vec(any::<u8>(), 1..64));
    (salt, aad).prop_map(|(s, a)| CipherParams::new(s, a))
}

#[test]
fn arbitrary_bytes_never_panic() {
    let tally = Tally::new("g2p-mosip ciphertext", "arbitrary bytes never panic");
    proptest!(ProptestConfig::with_cases(256), |(blob in prop::collection::vec(any::<u8>(), 0..1200), params in params())| {
        tally.input();
        let _ = cipher::parse(&blob);
        prop_assert!(cipher::open(&keys().private, &params, &blob).is_err());
    });
    tally.report();
}

#[test]
fn a_splitter_inside_random_bytes_never_panics() {
    let tally = Tally::new(
        "g2p-mosip ciphertext",
        "a splitter inside random bytes never panics",
    );
    // `before` of 288 bytes: a thumbprint and a wrapped key of the right size, so that the
    // RSA unwrap runs on random bytes too.
    proptest!(ProptestConfig::with_cases(256), |(
        before in prop_oneof![
            prop::collection::vec(any::<u8>(), 288),
            prop::collection::vec(any::<u8>(), 0..400),
        ],
        after in prop::collection::vec(any::<u8>(), 0..200),
        header in any::<bool>())| {
        tally.input();
        let mut blob = if header { b"VER_R2".to_vec() } else { Vec::new() };
        blob.extend(before);
        blob.extend_from_slice(cipher::SPLITTER);
        blob.extend(after);
        let _ = cipher::parse(&blob);
        prop_assert!(cipher::open(&keys().private, &CipherParams::default(), &blob).is_err());
    });
    tally.report();
}

#[test]
fn every_seal_opens_and_no_bit_flip_is_accepted() {
    let tally = Tally::new(
        "g2p-mosip ciphertext",
        "every seal opens and no bit flip is accepted",
    );
    proptest!(ProptestConfig::with_cases(256), |(plaintext in prop::collection::vec(any::<u8>(), 1..600),
        params in params(),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8)| {
        tally.input();
        let k = keys();
        let blob = k.sealer.seal(&params, &plaintext).unwrap();
        prop_assert_eq!(cipher::open(&k.private, &params, &blob).unwrap(), plaintext);
        // The thumbprint selects the key and is not authenticated by `open`; every other
        // byte is.
        let thumbprint_at = if params.mode() == Mode::C { 6 } else { 0 };
        let mut i = position.index(blob.len());
        if (thumbprint_at..thumbprint_at + 32).contains(&i) {
            i = thumbprint_at + 32;
        }
        let mut tampered = blob.clone();
        tampered[i] ^= 1 << bit;
        prop_assert!(cipher::open(&k.private, &params, &tampered).is_err(), "flip at {} accepted", i);
    });
    tally.report();
}
