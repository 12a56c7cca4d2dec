//! The JWS codec against tokens written by the independent signer in `g2p-testkit`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use g2p_encryption::cert::CertificateInfo;
use g2p_encryption::jws::{UnverifiedJws, VerificationKeys};
use g2p_encryption::{Error, Jwk, JwkSet, KeyUse, SignatureError, b64};
use g2p_testkit::{TestKey, jose};
use serde_json::json;

fn jwks(keys: &[(&TestKey, &str)]) -> JwkSet {
    JwkSet {
        keys: keys
            .iter()
            .map(|(k, kid)| {
                Jwk::from_certificate(
                    &CertificateInfo::from_der(k.cert_der()).unwrap(),
                    Some(kid.to_string()),
                    KeyUse::Sig,
                )
            })
            .collect(),
    }
}

fn refusal(result: Result<g2p_encryption::VerifiedJws, Error>) -> SignatureError {
    match result {
        Err(Error::InvalidSignature(reason)) => reason,
        other => panic!("expected a signature refusal, got {other:?}"),
    }
}

#[test]
fn attached_rs256_and_ps256_verify_by_kid() {
    let key = TestKey::generate("ID_REPO");
    let set = jwks(&[(&key, "k1")]);
    for alg in ["RS256", "PS256"] {
        let token = jose::sign(
            &key,
            &json!({"alg": alg, "kid": "k1"}),
            br#"{"a":1}"#,
            false,
        );
        let verified = UnverifiedJws::parse(&token).unwrap().verify(&set).unwrap();
        assert_eq!(verified.payload(), br#"{"a":1}"#);
        assert_eq!(verified.payload_json().unwrap(), json!({"a": 1}));
        assert_eq!(verified.key_id(), Some("k1"));
    }
}

#[test]
fn detached_needs_and_takes_the_payload() {
    let key = TestKey::generate("ID_REPO");
    let set = jwks(&[(&key, "k1")]);
    let token = jose::sign(&key, &json!({"alg": "RS256", "kid": "k1"}), b"{}", true);
    assert!(token.contains(".."));
    let mut jws = UnverifiedJws::parse(&token).unwrap();
    assert!(jws.is_detached());
    assert_eq!(refusal(jws.verify(&set)), SignatureError::MissingPayload);
    jws.attach_payload(b"{}").unwrap();
    assert_eq!(jws.verify(&set).unwrap().payload(), b"{}");
    let mut wrong = UnverifiedJws::parse(&token).unwrap();
    wrong.attach_payload(b"{\"x\":1}").unwrap();
    assert_eq!(refusal(wrong.verify(&set)), SignatureError::Mismatch);
}

#[test]
fn tampering_is_refused() {
    let key = TestKey::generate("ID_REPO");
    let set = jwks(&[(&key, "k1")]);
    let token = jose::sign(
        &key,
        &json!({"alg": "RS256", "kid": "k1"}),
        b"{\"amount\":10}",
        false,
    );
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode_b64u(b"{\"amount\":99}"),
        parts[2]
    );
    assert_eq!(
        refusal(UnverifiedJws::parse(&forged_payload).unwrap().verify(&set)),
        SignatureError::Mismatch
    );
    let mut sig = b64::decode_b64u(parts[2]).unwrap();
    sig[0] ^= 1;
    let forged_sig = format!("{}.{}.{}", parts[0], parts[1], b64::encode_b64u(&sig));
    assert_eq!(
        refusal(UnverifiedJws::parse(&forged_sig).unwrap().verify(&set)),
        SignatureError::Mismatch
    );
}

#[test]
fn foreign_certificate_and_unknown_kid_are_refused() {
    let ours = TestKey::generate("ID_REPO");
    let intruder = TestKey::generate("intruder");
    let set = jwks(&[(&ours, "k1")]);
    let x5c = b64::encode_b64(intruder.cert_der());
    // Signed by the intruder, carrying the intruder's certificate, claiming our kid.
    let claiming = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "kid": "k1", "x5c": [x5c]}),
        b"{}",
        false,
    );
    assert_eq!(
        refusal(UnverifiedJws::parse(&claiming).unwrap().verify(&set)),
        SignatureError::UntrustedCertificate
    );
    // Same without a kid: the certificate alone must not be trusted.
    let no_kid = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "x5c": [x5c]}),
        b"{}",
        false,
    );
    assert_eq!(
        refusal(UnverifiedJws::parse(&no_kid).unwrap().verify(&set)),
        SignatureError::UntrustedCertificate
    );
    // Signed by the intruder under our kid with no certificate: signature mismatch.
    let plain = jose::sign(
        &intruder,
        &json!({"alg": "RS256", "kid": "k1"}),
        b"{}",
        false,
    );
    assert_eq!(
        refusal(UnverifiedJws::parse(&plain).unwrap().verify(&set)),
        SignatureError::Mismatch
    );
    let unknown = jose::sign(&ours, &json!({"alg": "RS256", "kid": "k9"}), b"{}", false);
    assert_eq!(
        refusal(UnverifiedJws::parse(&unknown).unwrap().verify(&set)),
        SignatureError::UnknownKey("k9".into())
    );
    // Our own certificate in x5c, and the hash, are fine.
    let ours_x5c = jose::sign(
        &ours,
        &json!({"alg": "RS256", "x5c": [b64::encode_b64(ours.cert_der())], "x5t#S256": b64::encode_b64u(&ours.thumbprint())}),
        b"{}",
        false,
    );
    assert!(
        UnverifiedJws::parse(&ours_x5c)
            .unwrap()
            .verify(&set)
            .is_ok()
    );
    let wrong_hash = jose::sign(
        &ours,
        &json!({"alg": "RS256", "kid": "k1", "x5t#S256": b64::encode_b64u(&intruder.thumbprint())}),
        b"{}",
        false,
    );
    assert_eq!(
        refusal(UnverifiedJws::parse(&wrong_hash).unwrap().verify(&set)),
        SignatureError::UntrustedCertificate
    );
}

#[test]
fn none_hmac_and_unknown_algorithms_are_refused() {
    let key = TestKey::generate("ID_REPO");
    let set = jwks(&[(&key, "k1")]);
    for alg in ["none", "HS256", "RS512", "ES256"] {
        let header = b64::encode_b64u(json!({"alg": alg, "kid": "k1"}).to_string().as_bytes());
        let token = format!(
            "{header}.{}.{}",
            b64::encode_b64u(b"{}"),
            b64::encode_b64u(b"sig")
        );
        // Refused as soon as the token is read: no key is ever looked at.
        assert_eq!(
            refusal(UnverifiedJws::parse(&token).and_then(|t| t.verify(&set))),
            SignatureError::UnsupportedAlgorithm(alg.into())
        );
    }
}

#[test]
fn malformed_tokens_name_the_segment() {
    for (token, needle) in [
        ("abc", "three"),
        ("a.b.c.d", "three"),
        ("!!.e30.c2ln", "header segment"),
        ("e30.e30.c2ln", "JOSE header"),
        ("eyJhbGciOiJSUzI1NiJ9.!!.c2ln", "payload segment"),
        ("eyJhbGciOiJSUzI1NiJ9.e30.", "signature segment is empty"),
    ] {
        match UnverifiedJws::parse(token) {
            Err(Error::InvalidInput(message)) => {
                assert!(message.contains(needle), "{token}: {message}")
            }
            other => panic!("{token}: {other:?}"),
        }
    }
}

#[test]
fn encryption_keys_do_not_verify_and_certificates_must_match_keys() {
    let key = TestKey::generate("REGISTRATION-ENCRYPT");
    let cert = CertificateInfo::from_der(key.cert_der()).unwrap();
    let set = JwkSet {
        keys: vec![Jwk::from_certificate(&cert, Some("e1".into()), KeyUse::Enc)],
    };
    assert!(VerificationKeys::from_jwks(&set).unwrap().is_empty());
    let token = jose::sign(&key, &json!({"alg": "RS256", "kid": "e1"}), b"{}", false);
    assert_eq!(
        refusal(UnverifiedJws::parse(&token).unwrap().verify(&set)),
        SignatureError::UnknownKey("e1".into())
    );
    let other = TestKey::generate("other");
    let mut mixed = Jwk::from_certificate(&cert, Some("s1".into()), KeyUse::Sig);
    mixed.x5c = vec![b64::encode_b64(other.cert_der())];
    assert!(VerificationKeys::from_jwks(&JwkSet { keys: vec![mixed] }).is_err());
}

#[test]
fn jwk_from_certificate_has_the_published_members() {
    let key = TestKey::generate("ID_REPO");
    let cert = CertificateInfo::from_pem(&key.cert_pem()).unwrap();
    assert_eq!(cert.der(), key.cert_der());
    let jwk = Jwk::from_certificate(&cert, Some("kid".into()), KeyUse::Sig);
    assert_eq!(jwk.e, "AQAB");
    assert_eq!(b64::decode_b64u(&jwk.n).unwrap().len(), 256);
    assert_eq!(
        jwk.x5t_s256.as_deref(),
        Some(b64::encode_b64u(&key.thumbprint()).as_str())
    );
    assert_eq!(
        b64::decode_b64u(jwk.x5t.as_deref().unwrap()).unwrap().len(),
        20
    );
    assert_eq!(jwk.x5c[0], b64::encode_b64(key.cert_der()));
    assert!(jwk.x5c[0].ends_with('=') || jwk.x5c[0].len().is_multiple_of(4));
}

#[test]
fn detached_payloads_are_bytes() {
    let key = TestKey::generate("ID_REPO");
    let set = jwks(&[(&key, "k1")]);
    let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(key.pkcs8()).unwrap();
    let unencoded = g2p_encryption::JwsHeader {
        b64: Some(false),
        crit: Some(vec!["b64".into()]),
        ..g2p_encryption::JwsHeader::rs256(Some("k1".into()))
    };
    // Two payloads that are not UTF-8 and would read alike as text (U+FFFD) are different
    // payloads: a signature over one does not verify the other.
    let signed = g2p_encryption::jws::sign(&pair, &unencoded, &[0xff, b'A'], true).unwrap();
    let verify = |payload: &[u8]| {
        let mut token = UnverifiedJws::parse(&signed).unwrap();
        token.attach_payload(payload).unwrap();
        token.verify(&set)
    };
    assert_eq!(verify(&[0xff, b'A']).unwrap().payload(), [0xff, b'A']);
    assert_eq!(refusal(verify(&[0xfe, b'A'])), SignatureError::Mismatch);
    // The independent signer agrees on the signing input of an unencoded payload.
    let theirs = jose::sign(
        &key,
        &json!({"alg": "RS256", "kid": "k1", "b64": false, "crit": ["b64"]}),
        b"plain text",
        true,
    );
    let mut token = UnverifiedJws::parse(&theirs).unwrap();
    token.attach_payload(b"plain text").unwrap();
    token.verify(&set).unwrap();
    // `b64: false` that `crit` does not list is not honoured: the payload segment is read as
    // base64url, so a token signed over the raw text does not verify.
    let sneaky = jose::sign_unencoded(
        &key,
        &json!({"alg": "RS256", "kid": "k1", "b64": false}),
        b"plain text",
        true,
    );
    let mut token = UnverifiedJws::parse(&sneaky).unwrap();
    token.attach_payload(b"plain text").unwrap();
    assert_eq!(refusal(token.verify(&set)), SignatureError::Mismatch);
}
