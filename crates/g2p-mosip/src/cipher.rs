//! The hybrid ciphertext of `/encrypt` and `/decrypt` (spec section 4).
//!
//! ```text
//! blob = KEYPART || "#KEY_SPLITTER#" || DATAPART
//! KEYPART  = ["VER_R2" (mode C only)] || SHA-256(cert DER) (32) || RSA-OAEP-SHA256(aes_key) (256)
//! DATAPART = A: ct || tag                IV = salt, AAD = aad
//!            B: ct || tag || iv(16)      AAD = aad
//!            C: r(32) || ct || tag       IV = r[..12], AAD = r
//! ```
//!
//! The mode follows from the parameters: a salt selects A, otherwise a non-empty aad selects
//! B, otherwise C. Decryption needs the same salt and aad as encryption.

use aes_gcm::aead::consts::{U16, U32};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce as LcNonce, UnboundKey};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

use crate::error::{KerCode, ServiceError};
use g2p_encryption::cert::CertificateInfo;

/// `#KEY_SPLITTER#`.
pub const SPLITTER: &[u8; 14] = b"#KEY_SPLITTER#";
/// `VER_R2`, the mode-C header.
pub const VERSION_HEADER: &[u8; 6] = b"VER_R2";
/// SHA-256 thumbprint length.
pub const THUMBPRINT_LEN: usize = 32;
/// RSA-2048 wrapped key length.
pub const WRAPPED_KEY_LEN: usize = 256;
/// AES-256 session key length.
pub const SESSION_KEY_LEN: usize = 32;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
const MODE_B_IV_LEN: usize = 16;
const MODE_C_RANDOM_LEN: usize = 32;

/// Why a ciphertext could not be made or opened. `ker_code` gives the Keymanager's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CipherError {
    /// No `#KEY_SPLITTER#` in the data: it is not a MOSIP ciphertext.
    #[error(
        "not a MOSIP ciphertext (the separator between the wrapped key and the data is missing)"
    )]
    NoSplitter,
    /// The key part is empty.
    #[error("not a MOSIP ciphertext (nothing before the separator where the wrapped key belongs)")]
    EmptyKeyPart,
    /// The RSA-wrapped session key did not decrypt.
    #[error("session key could not be unwrapped")]
    UnwrapFailed,
    /// GCM authentication failed: wrong salt/aad, wrong key, or tampered data.
    #[error("encrypted data is corrupted or the salt/aad differ")]
    TagMismatch,
    /// The data part is too short for its mode.
    #[error("encrypted data is too short")]
    TooShort,
    /// GCM IVs of this length are not supported (12, 16 and 32 are).
    #[error("salt of {0} bytes is not supported as a GCM IV (use 12, 16 or 32 bytes)")]
    UnsupportedIvLength(usize),
    /// Nothing to encrypt.
    #[error("plaintext is empty")]
    EmptyPlaintext,
    /// The certificate's key cannot encrypt.
    #[error("certificate public key is not a usable RSA key")]
    InvalidPublicKey,
}

impl CipherError {
    /// The Keymanager error code for this failure.
    pub fn ker_code(&self) -> KerCode {
        match self {
            CipherError::NoSplitter | CipherError::EmptyKeyPart => KerCode::Cry003,
            CipherError::UnwrapFailed => KerCode::Kms019,
            CipherError::TagMismatch => KerCode::Fse004,
            CipherError::TooShort => KerCode::Fse002,
            CipherError::UnsupportedIvLength(_) => KerCode::Cry003,
            CipherError::EmptyPlaintext => KerCode::Fse006,
            CipherError::InvalidPublicKey => KerCode::Cry002,
        }
    }

    /// The error as the Keymanager answers it: its code, with its message where it has one
    /// (for a GCM tag failure, the text of Java's crypto provider, spec 1.5).
    pub fn to_service_error(&self) -> ServiceError {
        let code = self.ker_code();
        match self {
            CipherError::TagMismatch => ServiceError::new(code, "Tag mismatch"),
            CipherError::UnwrapFailed | CipherError::NoSplitter | CipherError::EmptyKeyPart => {
                ServiceError::from(code)
            }
            other => ServiceError::new(code, other.to_string()),
        }
    }
}

/// The salt and aad of a provider or request. Their presence selects the mode.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CipherParams {
    salt: Option<Vec<u8>>,
    aad: Option<Vec<u8>>,
}

impl std::fmt::Debug for CipherParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherParams")
            .field("salt_len", &self.salt.as_ref().map(Vec::len))
            .field("aad_len", &self.aad.as_ref().map(Vec::len))
            .finish()
    }
}

/// Ciphertext layout mode (spec 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Salt given: IV = salt, not stored.
    A,
    /// No salt, aad given: random 16-byte IV appended.
    B,
    /// Neither: `VER_R2`, random 32 bytes prefixed, used as IV (first 12) and aad.
    C,
}

impl CipherParams {
    /// Parameters from decoded salt and aad; empty values count as absent.
    pub fn new(salt: Option<Vec<u8>>, aad: Option<Vec<u8>>) -> Self {
        CipherParams {
            salt: salt.filter(|s| !s.is_empty()),
            aad: aad.filter(|a| !a.is_empty()),
        }
    }

    /// Parameters from configured base64url text (lenient, as the Keymanager decodes);
    /// blank values count as absent. A salt must be 12, 16 or 32 bytes (a GCM IV).
    ///
    /// # Errors
    /// A message naming `salt` or `aad` and what is wrong with it.
    pub fn from_b64u(salt: Option<&str>, aad: Option<&str>) -> Result<Self, String> {
        let decode = |name: &str, v: Option<&str>| -> Result<Option<Vec<u8>>, String> {
            v.map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    g2p_encryption::b64::decode_lenient(t)
                        .map_err(|e| format!("{name} is not base64url: {e}"))
                })
                .transpose()
        };
        let salt = decode("salt", salt)?;
        if let Some(s) = &salt
            && ![12, 16, 32].contains(&s.len())
        {
            return Err(format!(
                "salt decodes to {} bytes; a GCM IV of 12, 16 or 32 bytes is needed",
                s.len()
            ));
        }
        Ok(CipherParams::new(salt, decode("aad", aad)?))
    }

    /// The salt, if any.
    pub fn salt(&self) -> Option<&[u8]> {
        self.salt.as_deref()
    }

    /// The aad, if any.
    pub fn aad(&self) -> Option<&[u8]> {
        self.aad.as_deref()
    }

    /// The mode encryption uses with these parameters.
    pub fn mode(&self) -> Mode {
        match (&self.salt, &self.aad) {
            (Some(_), _) => Mode::A,
            (None, Some(_)) => Mode::B,
            (None, None) => Mode::C,
        }
    }
}

/// The parts of a ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedCiphertext<'a> {
    /// Whether the key part starts with `VER_R2` (mode C).
    pub version_header: bool,
    /// SHA-256 of the certificate that wrapped the key; `None` for legacy data.
    pub thumbprint: Option<&'a [u8]>,
    /// The RSA-OAEP-wrapped session key.
    pub wrapped_key: &'a [u8],
    /// The data part.
    pub data: &'a [u8],
}

impl ParsedCiphertext<'_> {
    /// Upper-hex thumbprint, the Keymanager's lookup key.
    pub fn thumbprint_hex(&self) -> Option<String> {
        self.thumbprint.map(hex::encode_upper)
    }
}

/// Splits a ciphertext at the first splitter (spec 4.4).
///
/// # Errors
/// [`CipherError::NoSplitter`], [`CipherError::EmptyKeyPart`].
pub fn parse(blob: &[u8]) -> Result<ParsedCiphertext<'_>, CipherError> {
    let at = blob
        .windows(SPLITTER.len())
        .position(|w| w == SPLITTER)
        .ok_or(CipherError::NoSplitter)?;
    let (mut key_part, data) = (&blob[..at], &blob[at + SPLITTER.len()..]);
    let version_header = key_part.starts_with(VERSION_HEADER);
    if version_header {
        key_part = &key_part[VERSION_HEADER.len()..];
    }
    if key_part.is_empty() {
        return Err(CipherError::EmptyKeyPart);
    }
    let (thumbprint, wrapped_key) = if key_part.len() == THUMBPRINT_LEN + WRAPPED_KEY_LEN {
        let (tp, wrapped) = key_part.split_at(THUMBPRINT_LEN);
        (Some(tp), wrapped)
    } else {
        (None, key_part)
    };
    Ok(ParsedCiphertext {
        version_header,
        thumbprint,
        wrapped_key,
        data,
    })
}

/// Encrypts to one certificate. Build once per certificate and reuse: the RSA key is parsed
/// and the thumbprint computed here, not per message.
pub struct Sealer {
    key: OaepPublicEncryptingKey,
    thumbprint: [u8; THUMBPRINT_LEN],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("thumbprint", &hex::encode_upper(self.thumbprint))
            .finish()
    }
}

impl Sealer {
    /// A sealer for the certificate's RSA key.
    ///
    /// # Errors
    /// [`CipherError::InvalidPublicKey`] when the key cannot do RSA-OAEP.
    pub fn new(certificate: &CertificateInfo) -> Result<Self, CipherError> {
        let public = PublicEncryptingKey::from_der(certificate.spki_der())
            .map_err(|_| CipherError::InvalidPublicKey)?;
        let key =
            OaepPublicEncryptingKey::new(public).map_err(|_| CipherError::InvalidPublicKey)?;
        Ok(Sealer {
            key,
            thumbprint: certificate.sha256(),
        })
    }

    /// SHA-256 of the certificate.
    pub fn thumbprint(&self) -> &[u8; THUMBPRINT_LEN] {
        &self.thumbprint
    }

    /// Encrypts with a fresh session key, in the mode the parameters select.
    ///
    /// # Errors
    /// [`CipherError::EmptyPlaintext`], [`CipherError::UnsupportedIvLength`].
    pub fn seal(&self, params: &CipherParams, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        if plaintext.is_empty() {
            return Err(CipherError::EmptyPlaintext);
        }
        let mut session = Zeroizing::new([0u8; SESSION_KEY_LEN]);
        let mut random = [0u8; MODE_C_RANDOM_LEN];
        aws_lc_rs::rand::fill(session.as_mut_slice()).map_err(|_| CipherError::InvalidPublicKey)?;
        aws_lc_rs::rand::fill(&mut random).map_err(|_| CipherError::InvalidPublicKey)?;
        let data = seal_data(session.as_slice(), params, plaintext, &random)?;
        let mut wrapped = [0u8; 1024];
        let wrapped = self
            .key
            .encrypt(
                &OAEP_SHA256_MGF1SHA256,
                session.as_slice(),
                &mut wrapped,
                None,
            )
            .map_err(|_| CipherError::InvalidPublicKey)?;
        let header: &[u8] = if params.mode() == Mode::C {
            VERSION_HEADER
        } else {
            b""
        };
        let mut blob = Vec::with_capacity(
            header.len() + THUMBPRINT_LEN + wrapped.len() + SPLITTER.len() + data.len(),
        );
        blob.extend_from_slice(header);
        blob.extend_from_slice(&self.thumbprint);
        blob.extend_from_slice(wrapped);
        blob.extend_from_slice(SPLITTER);
        blob.extend_from_slice(&data);
        Ok(blob)
    }
}

/// Builds the data part with a given session key. `random` supplies the mode-B IV (first 16
/// bytes) or the mode-C `r`; [`Sealer::seal`] passes fresh random bytes. Exposed for test
/// vectors and for servers that already hold a session key.
///
/// # Errors
/// [`CipherError::UnsupportedIvLength`] for a salt that is not 12, 16 or 32 bytes.
pub fn seal_data(
    session_key: &[u8],
    params: &CipherParams,
    plaintext: &[u8],
    random: &[u8; MODE_C_RANDOM_LEN],
) -> Result<Vec<u8>, CipherError> {
    match params.mode() {
        Mode::A => gcm_seal(
            session_key,
            params.salt.as_deref().unwrap_or_default(),
            params.aad.as_deref().unwrap_or_default(),
            plaintext,
        ),
        Mode::B => {
            let iv = &random[..MODE_B_IV_LEN];
            let mut data = gcm_seal(
                session_key,
                iv,
                params.aad.as_deref().unwrap_or_default(),
                plaintext,
            )?;
            data.extend_from_slice(iv);
            Ok(data)
        }
        Mode::C => {
            let mut data = random.to_vec();
            data.extend(gcm_seal(session_key, &random[..12], random, plaintext)?);
            Ok(data)
        }
    }
}

/// Opens a data part with its session key, following the Keymanager's decision order
/// (spec 4.4): a salt means mode A; else `VER_R2` means mode C; else mode B.
///
/// # Errors
/// [`CipherError::TagMismatch`], [`CipherError::TooShort`], [`CipherError::UnsupportedIvLength`].
pub fn open_data(
    session_key: &[u8],
    params: &CipherParams,
    version_header: bool,
    data: &[u8],
) -> Result<Vec<u8>, CipherError> {
    let aad = params.aad.as_deref().unwrap_or_default();
    if let Some(salt) = params.salt.as_deref() {
        if data.len() < TAG_LEN {
            return Err(CipherError::TooShort);
        }
        gcm_open(session_key, salt, aad, data)
    } else if version_header {
        if data.len() < MODE_C_RANDOM_LEN + TAG_LEN {
            return Err(CipherError::TooShort);
        }
        let (r, ct) = data.split_at(MODE_C_RANDOM_LEN);
        gcm_open(session_key, &r[..12], r, ct)
    } else {
        if data.len() <= MODE_B_IV_LEN + TAG_LEN {
            return Err(CipherError::TooShort);
        }
        let (ct, iv) = data.split_at(data.len() - MODE_B_IV_LEN);
        gcm_open(session_key, iv, aad, ct)
    }
}

/// Unwraps the session key with an RSA private key.
///
/// # Errors
/// [`CipherError::UnwrapFailed`].
pub fn unwrap_session_key(
    key: &OaepPrivateDecryptingKey,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CipherError> {
    let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
    let len = key
        .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, None)
        .map_err(|_| CipherError::UnwrapFailed)?
        .len();
    out.truncate(len);
    if len != SESSION_KEY_LEN {
        return Err(CipherError::UnwrapFailed);
    }
    Ok(out)
}

/// Decrypts a whole ciphertext with the private key its thumbprint names.
///
/// # Errors
/// Any [`CipherError`] from parsing, unwrapping or GCM.
pub fn open(
    key: &OaepPrivateDecryptingKey,
    params: &CipherParams,
    blob: &[u8],
) -> Result<Vec<u8>, CipherError> {
    let parsed = parse(blob)?;
    let session = unwrap_session_key(key, parsed.wrapped_key)?;
    open_data(&session, params, parsed.version_header, parsed.data)
}

fn gcm_seal(key: &[u8], iv: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let sealed = match iv.len() {
        12 => {
            let key = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key).map_err(|_| CipherError::InvalidPublicKey)?,
            );
            let nonce = LcNonce::try_assume_unique_for_key(iv)
                .map_err(|_| CipherError::UnsupportedIvLength(iv.len()))?;
            let mut in_out = plaintext.to_vec();
            key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut in_out)
                .map_err(|_| CipherError::InvalidPublicKey)?;
            return Ok(in_out);
        }
        16 => AesGcm::<Aes256, U16>::new_from_slice(key)
            .ok()
            .and_then(|c| c.encrypt(Nonce::<U16>::from_slice(iv), payload).ok()),
        32 => AesGcm::<Aes256, U32>::new_from_slice(key)
            .ok()
            .and_then(|c| c.encrypt(Nonce::<U32>::from_slice(iv), payload).ok()),
        n => return Err(CipherError::UnsupportedIvLength(n)),
    };
    sealed.ok_or(CipherError::InvalidPublicKey)
}

fn gcm_open(key: &[u8], iv: &[u8], aad: &[u8], data: &[u8]) -> Result<Vec<u8>, CipherError> {
    let payload = Payload { msg: data, aad };
    let opened = match iv.len() {
        12 => {
            let key = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key).map_err(|_| CipherError::TagMismatch)?,
            );
            let nonce = LcNonce::try_assume_unique_for_key(iv)
                .map_err(|_| CipherError::UnsupportedIvLength(iv.len()))?;
            let mut in_out = data.to_vec();
            let len = key
                .open_in_place(nonce, Aad::from(aad), &mut in_out)
                .map_err(|_| CipherError::TagMismatch)?
                .len();
            in_out.truncate(len);
            return Ok(in_out);
        }
        16 => AesGcm::<Aes256, U16>::new_from_slice(key)
            .ok()
            .and_then(|c| c.decrypt(Nonce::<U16>::from_slice(iv), payload).ok()),
        32 => AesGcm::<Aes256, U32>::new_from_slice(key)
            .ok()
            .and_then(|c| c.decrypt(Nonce::<U32>::from_slice(iv), payload).ok()),
        n => return Err(CipherError::UnsupportedIvLength(n)),
    };
    opened.ok_or(CipherError::TagMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_key() -> Vec<u8> {
        (0u8..32).collect()
    }

    const PLAINTEXT: &[u8] = br#"{"name":"Alice"}"#;

    #[test]
    fn wrong_parameters_fail_the_tag() {
        let a = CipherParams::new(Some(vec![0x11; 32]), Some(vec![0x22; 32]));
        let data = seal_data(&vector_key(), &a, PLAINTEXT, &[0; 32]).unwrap();
        let other_salt = CipherParams::new(Some(vec![0x12; 32]), Some(vec![0x22; 32]));
        assert_eq!(
            open_data(&vector_key(), &other_salt, false, &data),
            Err(CipherError::TagMismatch)
        );
        let other_aad = CipherParams::new(Some(vec![0x11; 32]), None);
        assert_eq!(
            open_data(&vector_key(), &other_aad, false, &data),
            Err(CipherError::TagMismatch)
        );
        let c = seal_data(&vector_key(), &CipherParams::default(), PLAINTEXT, &[7; 32]).unwrap();
        assert_eq!(
            open_data(&vector_key(), &a, true, &c),
            Err(CipherError::TagMismatch)
        );
    }

    #[test]
    fn iv_lengths() {
        for n in [12, 16, 32] {
            let p = CipherParams::new(Some(vec![1; n]), None);
            let d = seal_data(&vector_key(), &p, b"x", &[0; 32]).unwrap();
            assert_eq!(d.len(), 1 + TAG_LEN);
            assert_eq!(open_data(&vector_key(), &p, false, &d).unwrap(), b"x");
        }
        let p = CipherParams::new(Some(vec![1; 20]), None);
        assert_eq!(
            seal_data(&vector_key(), &p, b"x", &[0; 32]),
            Err(CipherError::UnsupportedIvLength(20))
        );
    }

    #[test]
    fn parse_layouts() {
        let mut blob = vec![9u8; 288];
        blob.extend_from_slice(SPLITTER);
        blob.extend_from_slice(b"data");
        let p = parse(&blob).unwrap();
        assert!(!p.version_header);
        assert_eq!(p.thumbprint, Some(&[9u8; 32][..]));
        assert_eq!(p.wrapped_key.len(), 256);
        assert_eq!(p.data, b"data");
        let mut c = VERSION_HEADER.to_vec();
        c.extend_from_slice(&blob);
        let p = parse(&c).unwrap();
        assert!(p.version_header);
        assert_eq!(p.thumbprint_hex().unwrap(), "09".repeat(32));
        let mut legacy = vec![1u8; 256];
        legacy.extend_from_slice(SPLITTER);
        assert_eq!(parse(&legacy).unwrap().thumbprint, None);
        assert_eq!(parse(b"hello"), Err(CipherError::NoSplitter));
        assert_eq!(parse(b"#KEY_SPLITTER#abc"), Err(CipherError::EmptyKeyPart));
    }

    #[test]
    fn short_data_is_refused() {
        assert_eq!(
            open_data(&vector_key(), &CipherParams::default(), true, &[0; 40]),
            Err(CipherError::TooShort)
        );
        assert_eq!(
            open_data(
                &vector_key(),
                &CipherParams::new(None, Some(vec![1])),
                false,
                &[0; 32]
            ),
            Err(CipherError::TooShort)
        );
        assert_eq!(CipherError::TagMismatch.ker_code(), KerCode::Fse004);
    }
}
