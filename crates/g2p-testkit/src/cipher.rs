//! The MOSIP hybrid ciphertext, written out plainly from protocol spec section 4 (a second
//! implementation to check `g2p-mosip` against).

use aes_gcm::aead::consts::{U12, U16, U32};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};

use crate::TestKey;

/// `#KEY_SPLITTER#`.
pub const SPLITTER: &[u8] = b"#KEY_SPLITTER#";
/// `VER_R2`.
pub const VER_R2: &[u8] = b"VER_R2";

/// AES-256-GCM with an IV of 12, 16 or 32 bytes; ct ‖ tag.
pub fn gcm_seal(key: &[u8], iv: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let payload = Payload { msg: pt, aad };
    match iv.len() {
        12 => AesGcm::<Aes256, U12>::new_from_slice(key)
            .unwrap()
            .encrypt(Nonce::<U12>::from_slice(iv), payload),
        16 => AesGcm::<Aes256, U16>::new_from_slice(key)
            .unwrap()
            .encrypt(Nonce::<U16>::from_slice(iv), payload),
        32 => AesGcm::<Aes256, U32>::new_from_slice(key)
            .unwrap()
            .encrypt(Nonce::<U32>::from_slice(iv), payload),
        n => panic!("IV length {n} unsupported in the test cipher"),
    }
    .unwrap()
}

/// AES-256-GCM open; `None` on tag failure or unsupported IV length.
pub fn gcm_open(key: &[u8], iv: &[u8], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    let payload = Payload { msg: ct, aad };
    match iv.len() {
        12 => AesGcm::<Aes256, U12>::new_from_slice(key)
            .ok()?
            .decrypt(Nonce::<U12>::from_slice(iv), payload),
        16 => AesGcm::<Aes256, U16>::new_from_slice(key)
            .ok()?
            .decrypt(Nonce::<U16>::from_slice(iv), payload),
        32 => AesGcm::<Aes256, U32>::new_from_slice(key)
            .ok()?
            .decrypt(Nonce::<U32>::from_slice(iv), payload),
        _ => return None,
    }
    .ok()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).unwrap();
    out
}

/// Encrypts as the Keymanager's `/encrypt` does, choosing the mode from salt and aad
/// (spec 4.3): salt → A, aad only → B, neither → C.
pub fn seal(key: &TestKey, salt: Option<&[u8]>, aad: Option<&[u8]>, pt: &[u8]) -> Vec<u8> {
    let session: [u8; 32] = random();
    let wrapped = key.oaep_encrypt(&session);
    let aad = aad.filter(|a| !a.is_empty());
    let (header, data): (&[u8], Vec<u8>) = match (salt.filter(|s| !s.is_empty()), aad) {
        (Some(salt), aad) => (b"", gcm_seal(&session, salt, aad.unwrap_or_default(), pt)),
        (None, Some(aad)) => {
            let iv: [u8; 16] = random();
            let mut d = gcm_seal(&session, &iv, aad, pt);
            d.extend_from_slice(&iv);
            (b"", d)
        }
        (None, None) => {
            let r: [u8; 32] = random();
            let mut d = r.to_vec();
            d.extend(gcm_seal(&session, &r[..12], &r, pt));
            (VER_R2, d)
        }
    };
    let mut blob = header.to_vec();
    blob.extend_from_slice(&key.thumbprint());
    blob.extend_from_slice(&wrapped);
    blob.extend_from_slice(SPLITTER);
    blob.extend(data);
    blob
}

/// Why `open` refused a blob, mirroring the Keymanager's error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No splitter (the real service answers HTTP 500 here).
    NoSplitter,
    /// Key part is not thumbprint + 256-byte wrapped key.
    BadKeyPart,
    /// RSA unwrap failed (KER-KMS-019).
    Unwrap,
    /// GCM tag mismatch (KER-FSE-004).
    Tag,
    /// Too short for mode B (KER-FSE-002).
    TooShort,
}

/// A blob's parts: (has VER_R2, thumbprint, wrapped key, data part).
pub type Parts = (bool, [u8; 32], Vec<u8>, Vec<u8>);

/// Splits a blob into its parts.
pub fn split(blob: &[u8]) -> Result<Parts, OpenError> {
    let i = blob
        .windows(SPLITTER.len())
        .position(|w| w == SPLITTER)
        .ok_or(OpenError::NoSplitter)?;
    let (mut keypart, data) = (&blob[..i], &blob[i + SPLITTER.len()..]);
    let ver = keypart.starts_with(VER_R2);
    if ver {
        keypart = &keypart[VER_R2.len()..];
    }
    if keypart.len() != 288 {
        return Err(OpenError::BadKeyPart);
    }
    Ok((
        ver,
        keypart[..32].try_into().unwrap(),
        keypart[32..].to_vec(),
        data.to_vec(),
    ))
}

/// Decrypts as the Keymanager's `/decrypt` does (spec 4.4), given the right private key.
pub fn open(
    key: &TestKey,
    salt: Option<&[u8]>,
    aad: Option<&[u8]>,
    blob: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let (ver, _tp, wrapped, data) = split(blob)?;
    let session = key.oaep_decrypt(&wrapped).ok_or(OpenError::Unwrap)?;
    let aad = aad.unwrap_or_default();
    if let Some(salt) = salt.filter(|s| !s.is_empty()) {
        gcm_open(&session, salt, aad, &data).ok_or(OpenError::Tag)
    } else if ver {
        if data.len() < 32 + 16 {
            return Err(OpenError::TooShort);
        }
        let r = &data[..32];
        gcm_open(&session, &r[..12], r, &data[32..]).ok_or(OpenError::Tag)
    } else {
        if data.len() <= 32 {
            return Err(OpenError::TooShort);
        }
        let (ct, iv) = data.split_at(data.len() - 16);
        gcm_open(&session, iv, aad, ct).ok_or(OpenError::Tag)
    }
}
