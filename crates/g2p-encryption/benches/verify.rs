//! Local JWS verification against its ceiling: one RS256 signature check with a prepared
//! public key, measured in the same run. Verification adds parsing the compact token,
//! base64url, the header JSON and the key lookup.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use criterion::{Criterion, criterion_group, criterion_main};
use g2p_encryption::cert::CertificateInfo;
use g2p_encryption::jws::VerificationKeys;
use g2p_encryption::{Jwk, JwkSet, KeyUse, UnverifiedJws};
use g2p_testkit::{TestKey, jose};
use serde_json::json;

fn verify(c: &mut Criterion) {
    let keys: Vec<TestKey> = (0..3)
        .map(|i| TestKey::generate(&format!("ID_REPO-{i}")))
        .collect();
    let set = JwkSet {
        keys: keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let cert = CertificateInfo::from_der(k.cert_der()).unwrap();
                Jwk::from_certificate(&cert, Some(format!("kid-{i}")), KeyUse::Sig)
            })
            .collect(),
    };
    let prepared = VerificationKeys::from_jwks(&set).unwrap();
    let payload = json!({
        "id": "B-000123", "name": "Amina Yusuf", "household_size": 5,
        "programme": "cash-transfer-2026", "amount": 1500, "currency": "KES"
    })
    .to_string();
    let signer = &keys[2];
    let token = jose::sign(
        signer,
        &json!({"alg": "RS256", "kid": "kid-2"}),
        payload.as_bytes(),
        false,
    );
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = g2p_encryption::b64::decode_b64u(signature).unwrap();
    let raw = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, signer.public_key_der()).unwrap();

    let mut group = c.benchmark_group("verify");
    group.bench_function("ceiling_rs256_verify", |b| {
        b.iter(|| {
            raw.verify_sig(black_box(input.as_bytes()), &signature)
                .is_ok()
        })
    });
    group.bench_function("jws_parse_and_verify_by_kid", |b| {
        b.iter(|| {
            UnverifiedJws::parse(black_box(&token))
                .unwrap()
                .verify_with(&prepared)
                .unwrap()
        })
    });
    let x5c = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(signer.cert_der())
    };
    let with_cert = jose::sign(
        signer,
        &json!({"alg": "RS256", "x5c": [x5c]}),
        payload.as_bytes(),
        false,
    );
    group.bench_function("jws_parse_and_verify_by_x5c", |b| {
        b.iter(|| {
            UnverifiedJws::parse(black_box(&with_cert))
                .unwrap()
                .verify_with(&prepared)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = verify
}
criterion_main!(benches);
