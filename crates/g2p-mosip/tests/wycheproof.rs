//! Wycheproof vectors where they fit the MOSIP primitives: AES-256-GCM with 96-, 128- and
//! 256-bit IVs and 128-bit tags (the mode-A salt is the IV), and RSA-OAEP-2048 with SHA-256
//! and MGF1-SHA-256 for the session-key unwrap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};
use g2p_mosip::cipher::{self, CipherParams};
use wycheproof::TestResult;

#[test]
fn aes_256_gcm_vectors() {
    let set = wycheproof::aead::TestSet::load(wycheproof::aead::TestName::AesGcm).unwrap();
    let mut checked = 0;
    for group in set.test_groups {
        if group.key_size != 256
            || group.tag_size != 128
            || ![96, 128, 256].contains(&group.nonce_size)
        {
            continue;
        }
        for test in group.tests {
            let params = CipherParams::new(Some(test.nonce.to_vec()), Some(test.aad.to_vec()));
            let mut expected = test.ct.to_vec();
            expected.extend_from_slice(&test.tag);
            let opened = cipher::open_data(&test.key, &params, false, &expected);
            match test.result {
                TestResult::Valid | TestResult::Acceptable => {
                    let sealed = cipher::seal_data(&test.key, &params, &test.pt, &[0; 32]).unwrap();
                    assert_eq!(sealed, expected, "tc {}", test.tc_id);
                    assert_eq!(opened.unwrap(), test.pt.to_vec(), "tc {}", test.tc_id);
                }
                TestResult::Invalid => {
                    assert!(opened.is_err(), "tc {} must be refused", test.tc_id)
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} vectors applied");
}

#[test]
fn rsa_oaep_sha256_unwrap_vectors() {
    use wycheproof::rsa_oaep::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256Mgf1Sha256).unwrap();
    let (mut accepted, mut refused) = (0, 0);
    for group in set.test_groups {
        let key =
            OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&group.pkcs8).unwrap())
                .unwrap();
        for test in group.tests {
            let result = cipher::unwrap_session_key(&key, &test.ct);
            let fits =
                test.result == TestResult::Valid && test.label.is_empty() && test.pt.len() == 32;
            if fits {
                assert_eq!(
                    result.unwrap().as_slice(),
                    test.pt.as_slice(),
                    "tc {}",
                    test.tc_id
                );
                accepted += 1;
            } else {
                assert!(
                    result.is_err(),
                    "tc {} must not yield a session key",
                    test.tc_id
                );
                refused += 1;
            }
        }
    }
    assert!(
        accepted >= 1 && refused > 10,
        "accepted {accepted}, refused {refused}"
    );
}
