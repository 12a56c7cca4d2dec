//! Properties of the JWS codec and the base64 helpers over arbitrary input: no panic, and a
//! token is never accepted unless its signature verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use g2p_encryption::cert::CertificateInfo;
use g2p_encryption::{Jwk, JwkSet, KeyUse, UnverifiedJws, b64};
use g2p_testkit::hostile::Tally;
use g2p_testkit::{TestKey, jose};
use proptest::prelude::*;
use serde_json::json;

fn signer() -> &'static (TestKey, JwkSet) {
    static KEY: OnceLock<(TestKey, JwkSet)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = TestKey::generate("ID_REPO");
        let cert = CertificateInfo::from_der(key.cert_der()).unwrap();
        let set = JwkSet {
            keys: vec![Jwk::from_certificate(&cert, Some("k1".into()), KeyUse::Sig)],
        };
        (key, set)
    })
}

#[test]
fn base64_decoding_never_panics() {
    let tally = Tally::new(
        "g2p-encryption JWS and base64",
        "base64 decoding never panics",
    );
    proptest!(ProptestConfig::with_cases(512), |(text in ".{0,200}")| {
        tally.input();
        let _ = b64::decode_lenient(&text);
        let _ = b64::decode_b64u(&text);
    });
    tally.report();
}

#[test]
fn arbitrary_strings_never_panic_and_never_verify() {
    let tally = Tally::new(
        "g2p-encryption JWS and base64",
        "arbitrary strings never panic and never verify",
    );
    proptest!(ProptestConfig::with_cases(512), |(text in ".{0,300}")| {
        tally.input();
        if let Ok(token) = UnverifiedJws::parse(&text) {
            prop_assert!(token.verify(&signer().1).is_err());
        }
    });
    tally.report();
}

#[test]
fn arbitrary_segments_never_verify() {
    let tally = Tally::new(
        "g2p-encryption JWS and base64",
        "arbitrary segments never verify",
    );
    proptest!(ProptestConfig::with_cases(512), |(header in prop::collection::vec(any::<u8>(), 0..120),
        payload in prop::collection::vec(any::<u8>(), 0..120),
        signature in prop::collection::vec(any::<u8>(), 0..300))| {
        tally.input();
        let text = format!(
            "{}.{}.{}",
            b64::encode_b64u(&header),
            b64::encode_b64u(&payload),
            b64::encode_b64u(&signature)
        );
        if let Ok(token) = UnverifiedJws::parse(&text) {
            prop_assert!(token.verify(&signer().1).is_err());
        }
    });
    tally.report();
}

#[test]
fn a_real_token_with_any_other_payload_is_refused() {
    let tally = Tally::new(
        "g2p-encryption JWS and base64",
        "a real token with any other payload is refused",
    );
    proptest!(ProptestConfig::with_cases(512), |(payload in prop::collection::vec(any::<u8>(), 1..200),
        other in prop::collection::vec(any::<u8>(), 1..200))| {
        tally.input();
        prop_assume!(payload != other);
        let (key, set) = signer();
        let token = jose::sign(key, &json!({"alg": "RS256", "kid": "k1"}), &payload, false);
        let verified = UnverifiedJws::parse(&token).unwrap().verify(set).unwrap();
        prop_assert_eq!(verified.payload(), &payload[..]);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64::encode_b64u(&other), parts[2]);
        prop_assert!(UnverifiedJws::parse(&forged).unwrap().verify(set).is_err());
    });
    tally.report();
}
