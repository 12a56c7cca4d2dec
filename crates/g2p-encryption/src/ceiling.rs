//! The machine's crypto ceiling: how many of the operations a request needs (RSA-OAEP,
//! RS256, AES-GCM) all cores do per second in process. `bench` and the load tool report
//! their figures as a ratio to it, measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use aws_lc_rs::signature::{
    KeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};

/// Operations per second of `op` on every core at once, for `seconds`.
pub fn ceiling(seconds: f64, op: impl Fn() + Send + Sync + Clone + 'static) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let window = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while started.elapsed() < window {
                    op();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// The operations requests need, for measuring their ceilings in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// RSA-OAEP-SHA256 encryption of a 32-byte key (a public-key operation).
    OaepEncrypt,
    /// RSA-OAEP-SHA256 decryption (an RSA-2048 private-key operation).
    OaepDecrypt,
    /// RS256 signature (an RSA-2048 private-key operation).
    Rs256Sign,
    /// RS256 verification (a public-key operation).
    Rs256Verify,
    /// What sealing a value of this many bytes costs: RSA-OAEP encryption of a fresh key and
    /// AES-256-GCM over the value.
    Seal(usize),
}

impl Op {
    /// What is measured, in words.
    pub fn label(self) -> String {
        match self {
            Op::OaepEncrypt => "RSA-OAEP-SHA256 encrypt".into(),
            Op::OaepDecrypt => "RSA-OAEP-SHA256 decrypt".into(),
            Op::Rs256Sign => "RS256 sign".into(),
            Op::Rs256Verify => "RS256 verify".into(),
            Op::Seal(n) => format!("RSA-OAEP-SHA256 encrypt + AES-256-GCM over {n} bytes"),
        }
    }
}

/// Keys and inputs for the ceilings.
pub struct Crypto {
    public: Arc<OaepPublicEncryptingKey>,
    private: Arc<OaepPrivateDecryptingKey>,
    ciphertext: Arc<Vec<u8>>,
    signer: Arc<RsaKeyPair>,
    signature: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto").finish_non_exhaustive()
    }
}

const MESSAGE: &[u8] = br#"{"beneficiary":"B-1029","amount":150}"#;

fn failed(what: &str) -> crate::Error {
    crate::Error::Configuration(format!("crypto ceiling: {what} failed on this machine"))
}

impl Crypto {
    /// Fresh RSA-2048 keys and inputs.
    ///
    /// # Errors
    /// [`crate::Error::Configuration`] when the keys cannot be made.
    pub fn new() -> crate::Result<Self> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| failed("RSA key generation"))?;
        let public = OaepPublicEncryptingKey::new(private.public_key())
            .map_err(|_| failed("RSA public key"))?;
        let private =
            OaepPrivateDecryptingKey::new(private).map_err(|_| failed("RSA private key"))?;
        let mut out = vec![0u8; 256];
        let ciphertext = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut out, None)
            .map_err(|_| failed("RSA-OAEP encryption"))?
            .to_vec();
        let signer =
            RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| failed("RSA key generation"))?;
        let mut signature = vec![0u8; signer.public_modulus_len()];
        signer
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                MESSAGE,
                &mut signature,
            )
            .map_err(|_| failed("RS256 signature"))?;
        Ok(Crypto {
            public: Arc::new(public),
            private: Arc::new(private),
            ciphertext: Arc::new(ciphertext),
            signer: Arc::new(signer),
            signature: Arc::new(signature),
        })
    }

    /// Operations per second of `op` on every core, measured now for `seconds`.
    pub fn rate(&self, op: Op, seconds: f64) -> f64 {
        match op {
            Op::Seal(size) => {
                let public = self.public.clone();
                let plaintext = Arc::new(vec![0x5au8; size]);
                ceiling(seconds, move || {
                    let mut key = [0u8; 32];
                    let _ = aws_lc_rs::rand::fill(&mut key);
                    let mut out = [0u8; 256];
                    let _ = public.encrypt(&OAEP_SHA256_MGF1SHA256, &key, &mut out, None);
                    let Ok(unbound) = UnboundKey::new(&AES_256_GCM, &key) else {
                        return;
                    };
                    let mut nonce = [0u8; 12];
                    let _ = aws_lc_rs::rand::fill(&mut nonce);
                    let mut data = plaintext.to_vec();
                    let _ = LessSafeKey::new(unbound).seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut data,
                    );
                })
            }
            Op::OaepEncrypt => {
                let public = self.public.clone();
                ceiling(seconds, move || {
                    let mut out = [0u8; 256];
                    let _ = public.encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut out, None);
                })
            }
            Op::OaepDecrypt => {
                let private = self.private.clone();
                let ct = self.ciphertext.clone();
                ceiling(seconds, move || {
                    let mut out = [0u8; 256];
                    let _ = private.decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, None);
                })
            }
            Op::Rs256Sign => {
                let signer = self.signer.clone();
                ceiling(seconds, move || {
                    let mut sig = vec![0u8; signer.public_modulus_len()];
                    let _ = signer.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), MESSAGE, &mut sig);
                })
            }
            Op::Rs256Verify => {
                let public_key = Arc::new(self.signer.public_key().as_ref().to_vec());
                let signature = self.signature.clone();
                ceiling(seconds, move || {
                    let key =
                        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key.as_slice());
                    let _ = key.verify(MESSAGE, &signature);
                })
            }
        }
    }
}
