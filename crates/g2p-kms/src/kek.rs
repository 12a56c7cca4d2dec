//! The key-encryption key: wraps private keys at rest with AES-256-GCM.
//!
//! Three sources: `G2P_KMS_KEK` (base64, 32 bytes); the file `kek` in the data directory,
//! created with mode 0600 on first start; or a PKCS#11 token ([`crate::pkcs11`]), where the
//! key never enters the process. The wrapped format is the same for all three. A check value
//! stored with the keys tells at start-up whether this is the key they were wrapped under.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::error::KmsError;

/// Environment variable holding a base64 key-encryption key.
pub const KEK_ENV: &str = "G2P_KMS_KEK";
/// Name of the key file in the data directory.
pub const KEK_FILE: &str = "kek";
/// Name of the key store's database in the data directory.
pub const STORE_FILE: &str = "keys.db";

const CHECK_CONTEXT: &[u8] = b"kek-check";
const CHECK_PLAINTEXT: &[u8] = b"g2p-kms key-encryption key check";

/// An AES-256-GCM key-encryption key: in memory, or in a PKCS#11 token. `Debug` shows
/// nothing of it.
pub struct Kek {
    inner: Inner,
}

enum Inner {
    Local(LessSafeKey),
    Token(std::sync::Arc<crate::pkcs11::TokenKek>),
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Local(_) => f.write_str("Kek([redacted])"),
            Inner::Token(token) => write!(f, "Kek({})", token.description()),
        }
    }
}

impl Kek {
    /// A key from raw bytes.
    ///
    /// # Errors
    /// When the bytes are not 32 long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KmsError> {
        if bytes.len() != 32 {
            return Err(KmsError::Config(format!(
                "the key-encryption key must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KmsError::Config("unusable key-encryption key".into()))?;
        Ok(Kek {
            inner: Inner::Local(LessSafeKey::new(key)),
        })
    }

    /// The key in a PKCS#11 token.
    pub fn token(token: crate::pkcs11::TokenKek) -> Self {
        Kek {
            inner: Inner::Token(std::sync::Arc::new(token)),
        }
    }

    /// Where the key is, for messages: "the kek file or G2P_KMS_KEK", or the token's key.
    pub fn source(&self) -> String {
        match &self.inner {
            Inner::Local(_) => format!("{KEK_ENV} or kek file"),
            Inner::Token(token) => token.description().to_string(),
        }
    }

    /// Loads the key: `env_value` (base64) when given, else `<dir>/kek`, created if missing.
    ///
    /// # Errors
    /// An unreadable or malformed key.
    pub fn load(dir: &Path, env_value: Option<&str>) -> Result<Self, KmsError> {
        if let Some(text) = env_value.filter(|t| !t.trim().is_empty()) {
            let bytes = Zeroizing::new(
                g2p_encryption::b64::decode_lenient(text.trim())
                    .map_err(|e| KmsError::Config(format!("{KEK_ENV} is not base64: {e}")))?,
            );
            return Self::from_bytes(&bytes);
        }
        let path = dir.join(KEK_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                Self::from_bytes(&bytes)
                    .map_err(|e| KmsError::Config(format!("{}: {}", path.display(), e.message())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A store without its key file is not a new store: its keys are wrapped under
                // a key that is elsewhere (another disk, G2P_KMS_KEK); a new one would not
                // open them.
                let store = dir.join(STORE_FILE);
                if store.exists() {
                    return Err(KmsError::Config(format!(
                        "{} is missing but the key store {} exists; restore the key-encryption key (the kek file, or {KEK_ENV}) instead of making a new one",
                        path.display(),
                        store.display()
                    )));
                }
                std::fs::create_dir_all(dir).map_err(|e| {
                    KmsError::Config(format!(
                        "cannot create data directory {}: {e}",
                        dir.display()
                    ))
                })?;
                let mut bytes = Zeroizing::new([0u8; 32]);
                aws_lc_rs::rand::fill(bytes.as_mut_slice())
                    .map_err(|_| KmsError::Internal("no randomness".into()))?;
                let created = g2p_encryption::files::create_private_once(&path, bytes.as_slice())
                    .map_err(|e| {
                    KmsError::Config(format!("cannot create {}: {e}", path.display()))
                })?;
                if !created {
                    // Another process created it first: use theirs.
                    return Self::load(dir, None);
                }
                tracing::info!(path = %path.display(), "created a new key-encryption key");
                Self::from_bytes(bytes.as_slice())
            }
            Err(e) => Err(KmsError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Loads a key that must exist already: `env_value` (base64) when given, else
    /// `<dir>/kek`. For a store shared by replicas, where a key made here would not be the
    /// one the others use.
    ///
    /// # Errors
    /// A missing, unreadable or malformed key, naming where it was looked for.
    pub fn load_existing(dir: &Path, env_value: Option<&str>) -> Result<Self, KmsError> {
        let given = env_value.is_some_and(|t| !t.trim().is_empty());
        if !given && !dir.join(KEK_FILE).is_file() {
            return Err(KmsError::Config(format!(
                "a key store in a database needs its key-encryption key given, the same for every replica: set {KEK_ENV} (base64 of 32 random bytes, e.g. from `head -c 32 /dev/urandom | base64`) or put that key's kek file at {}",
                dir.join(KEK_FILE).display()
            )));
        }
        Self::load(dir, env_value)
    }

    /// A check value a store keeps to tell later whether a key is the one it was made
    /// under (see [`Kek::made`]).
    ///
    /// # Errors
    /// Only when the system has no randomness.
    pub fn check_value(&self) -> Result<Vec<u8>, KmsError> {
        self.wrap(CHECK_CONTEXT, CHECK_PLAINTEXT)
    }

    /// Whether `check` is a [`Kek::check_value`] of this key.
    pub fn made(&self, check: &[u8]) -> bool {
        self.unwrap(CHECK_CONTEXT, check)
            .is_some_and(|p| p.as_slice() == CHECK_PLAINTEXT)
    }

    /// `nonce || ciphertext || tag`, bound to `context` (e.g. the key alias).
    ///
    /// # Errors
    /// Only when the system has no randomness.
    pub fn wrap(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KmsError::Internal("no randomness".into()))?;
        let sealed = match &self.inner {
            Inner::Local(key) => {
                let mut sealed = plaintext.to_vec();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(context),
                    &mut sealed,
                )
                .map_err(|_| KmsError::Internal("wrapping failed".into()))?;
                sealed
            }
            Inner::Token(token) => token.seal(&nonce, context, plaintext)?,
        };
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens what [`Kek::wrap`] made; `None` when the key or the context differ.
    pub fn unwrap(&self, context: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if wrapped.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let key = match &self.inner {
            Inner::Local(key) => key,
            Inner::Token(token) => return token.open_sealed(nonce, context, sealed),
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = Zeroizing::new(sealed.to_vec());
        let len = key
            .open_in_place(nonce, Aad::from(context), buffer.as_mut_slice())
            .ok()?
            .len();
        buffer.truncate(len);
        Some(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_bound_to_context_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::load(dir.path(), None).unwrap();
        let wrapped = kek.wrap(b"alias-1", b"private key").unwrap();
        assert_eq!(
            kek.unwrap(b"alias-1", &wrapped).unwrap().as_slice(),
            b"private key"
        );
        assert!(kek.unwrap(b"alias-2", &wrapped).is_none());
        // The same file gives the same key.
        let again = Kek::load(dir.path(), None).unwrap();
        assert!(again.unwrap(b"alias-1", &wrapped).is_some());
        let other = Kek::from_bytes(&[9u8; 32]).unwrap();
        assert!(other.unwrap(b"alias-1", &wrapped).is_none());
        assert!(!format!("{kek:?}").contains('9'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEK_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn creates_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        Kek::load(&nested, None).unwrap();
        assert!(nested.join(KEK_FILE).exists());
    }

    #[test]
    fn environment_key_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = g2p_encryption::b64::encode_b64(&[7u8; 32]);
        let kek = Kek::load(dir.path(), Some(&key)).unwrap();
        assert!(!dir.path().join(KEK_FILE).exists());
        let w = kek.wrap(b"", b"x").unwrap();
        assert!(
            Kek::from_bytes(&[7u8; 32])
                .unwrap()
                .unwrap(b"", &w)
                .is_some()
        );
        let e = Kek::load(dir.path(), Some("AAAA")).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        let e = Kek::load(dir.path(), Some("***")).unwrap_err();
        assert!(e.to_string().contains(KEK_ENV), "{e}");
    }
}
