//! The machine's crypto ceiling: how many RSA operations per second all cores do in process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
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

/// The RSA operations the served requests need, for measuring their ceilings in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    OaepEncrypt,
    OaepDecrypt,
    Rs256Sign,
    Rs256Verify,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::OaepEncrypt => "RSA-OAEP-SHA256 encrypt",
            Op::OaepDecrypt => "RSA-OAEP-SHA256 decrypt",
            Op::Rs256Sign => "RS256 sign",
            Op::Rs256Verify => "RS256 verify",
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

const MESSAGE: &[u8] = br#"{"beneficiary":"B-1029","amount":150}"#;

impl Crypto {
    pub fn new() -> Result<Self> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)?;
        let public = OaepPublicEncryptingKey::new(private.public_key())?;
        let private = OaepPrivateDecryptingKey::new(private)?;
        let mut out = vec![0u8; 256];
        let ciphertext = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut out, None)?
            .to_vec();
        let signer = RsaKeyPair::generate(KeySize::Rsa2048)?;
        let mut signature = vec![0u8; signer.public_modulus_len()];
        signer
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                MESSAGE,
                &mut signature,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
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
