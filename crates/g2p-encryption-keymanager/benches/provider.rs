//! The provider's two paths side by side, against the fake Keymanager on loopback: local
//! sealing vs remote `/encrypt`, and local verification vs remote `/jwtVerify`. Loopback
//! hides network latency, so the remote figures are a best case.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use g2p_encryption::{EncryptionProvider, SignOptions, SignPayload};
use g2p_encryption_keymanager::{EncryptMode, KeymanagerConfig, KeymanagerProvider, VerifyMode};
use g2p_testkit::FakeKeymanager;
use serde_json::json;

fn provider(fake: &FakeKeymanager, encrypt: EncryptMode, verify: VerifyMode) -> KeymanagerProvider {
    let mut s = KeymanagerConfig::settings(
        &fake.api_base_url(),
        &fake.auth_url(),
        &fake.options().client_id,
        &fake.options().client_secret,
    );
    s.encrypt_mode = Some(encrypt);
    s.verify_mode = Some(verify);
    KeymanagerProvider::new(s.build().unwrap()).unwrap()
}

fn paths(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(FakeKeymanager::start());
    let local = provider(&fake, EncryptMode::Local, VerifyMode::Local);
    let remote = provider(&fake, EncryptMode::Remote, VerifyMode::Remote);
    let record = br#"{"name":"Amina Yusuf","phone":"+254700000000","account":"KE-0042-7781"}"#;
    let token = rt
        .block_on(local.jwt_sign(
            &SignPayload::Json(json!({"id": "B-1", "amount": 1500})),
            &SignOptions::default(),
        ))
        .unwrap();
    // Warm the caches (certificate + canary, JWKS, token) outside the measurement.
    rt.block_on(local.encrypt(record)).unwrap();
    rt.block_on(local.jwt_verify(&token, None)).unwrap();
    rt.block_on(remote.encrypt(record)).unwrap();

    let mut group = c.benchmark_group("provider");
    group.bench_function("encrypt_local", |b| {
        b.iter(|| rt.block_on(local.encrypt(black_box(record))).unwrap().len())
    });
    group.bench_function("encrypt_remote_loopback", |b| {
        b.iter(|| {
            rt.block_on(remote.encrypt(black_box(record)))
                .unwrap()
                .len()
        })
    });
    group.bench_function("verify_local", |b| {
        b.iter(|| {
            rt.block_on(local.jwt_verify(black_box(&token), None))
                .unwrap()
        })
    });
    group.bench_function("verify_remote_loopback", |b| {
        b.iter(|| {
            rt.block_on(remote.jwt_verify(black_box(&token), None))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = paths
}
criterion_main!(benches);
