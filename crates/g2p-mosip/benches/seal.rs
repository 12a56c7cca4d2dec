//! Local sealing against its ceiling: one RSA-OAEP-SHA256 encryption of a 32-byte session
//! key with the same public key, measured in the same run. Sealing adds AES-256-GCM over the
//! plaintext and the blob layout; for small records it should stay close to the ceiling.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use g2p_encryption::cert::CertificateInfo;
use g2p_mosip::cipher::{CipherParams, Sealer};
use g2p_testkit::TestKey;

fn seal(c: &mut Criterion) {
    let key = TestKey::generate("REGISTRATION-ENCRYPT");
    let cert = CertificateInfo::from_der(key.cert_der()).unwrap();
    let sealer = Sealer::new(&cert).unwrap();
    let oaep =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(cert.spki_der()).unwrap())
            .unwrap();
    let session = [7u8; 32];
    let mut out = vec![0u8; oaep.ciphertext_size()];

    let mut group = c.benchmark_group("seal");
    group.bench_function("ceiling_rsa_oaep_encrypt_32B", |b| {
        b.iter(|| {
            oaep.encrypt(&OAEP_SHA256_MGF1SHA256, black_box(&session), &mut out, None)
                .unwrap()
                .len()
        })
    });
    let mode_c = CipherParams::default();
    let mode_a = CipherParams::new(Some(vec![1u8; 12]), Some(b"aad".to_vec()));
    let mode_b = CipherParams::new(None, Some(b"aad".to_vec()));
    let record = vec![0x42u8; 1024];
    for (name, params) in [
        ("mode_c", &mode_c),
        ("mode_a", &mode_a),
        ("mode_b", &mode_b),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}_1KiB"), |b| {
            b.iter(|| sealer.seal(params, black_box(&record)).unwrap().len())
        });
    }
    let large = vec![0x42u8; 1 << 20];
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.bench_function("mode_c_1MiB", |b| {
        b.iter(|| sealer.seal(&mode_c, black_box(&large)).unwrap().len())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = seal
}
criterion_main!(benches);
