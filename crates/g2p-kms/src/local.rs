//! [`LocalProvider`]: the [`EncryptionProvider`] over the embedded key manager, in process.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use g2p_encryption::cache::Cached;
use g2p_encryption::clock::Clock;
use g2p_encryption::jws::VerificationKeys;
use g2p_encryption::{
    EncryptionProvider, Error, ErrorKind, Jwk, JwkSet, KeyPairs, KeyUse, SignOptions, SignPayload,
    SignatureError, UnverifiedJws, VerifiedJws,
};
use g2p_mosip::cipher::CipherParams;

use crate::error::KmsError;
use crate::kms::{Kms, SignSpec};
use crate::store::KeyKind;

/// Which keys a [`LocalProvider`] uses; the same ids, salt and aad as a Keymanager provider.
#[derive(Clone)]
pub struct LocalSettings {
    /// Encryption application (default `REGISTRATION`).
    pub encrypt_application_id: String,
    /// Encryption reference (default `ENCRYPT`).
    pub encrypt_reference_id: String,
    /// Signing application (default `ID_REPO`).
    pub sign_application_id: String,
    /// Signing reference (default `""`).
    pub sign_reference_id: String,
    /// Salt and aad.
    pub cipher_params: CipherParams,
}

impl std::fmt::Debug for LocalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSettings")
            .field(
                "encrypt",
                &(&self.encrypt_application_id, &self.encrypt_reference_id),
            )
            .field(
                "sign",
                &(&self.sign_application_id, &self.sign_reference_id),
            )
            .field("cipher_params", &self.cipher_params)
            .finish()
    }
}

impl Default for LocalSettings {
    fn default() -> Self {
        LocalSettings {
            encrypt_application_id: "REGISTRATION".into(),
            encrypt_reference_id: "ENCRYPT".into(),
            sign_application_id: "ID_REPO".into(),
            sign_reference_id: String::new(),
            cipher_params: CipherParams::default(),
        }
    }
}

/// `type = "local"`: a provider table of the configuration file, unvalidated.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProviderSettings {
    /// Data directory (default `[kms] data_dir`, else `$G2P_DATA_DIR`, else `./g2p-data`).
    pub data_dir: Option<std::path::PathBuf>,
    /// Encryption application (default `REGISTRATION`).
    pub encrypt_application_id: Option<String>,
    /// Encryption reference (default `ENCRYPT`).
    pub encrypt_reference_id: Option<String>,
    /// Signing application (default `ID_REPO`).
    pub sign_application_id: Option<String>,
    /// Signing reference (default `""`).
    pub sign_reference_id: Option<String>,
    /// base64url salt (GCM IV, 12/16/32 bytes).
    pub encrypt_salt: Option<String>,
    /// base64url aad.
    pub encrypt_aad: Option<String>,
}

impl LocalProviderSettings {
    /// Validates the table and applies defaults.
    ///
    /// # Errors
    /// [`KmsError::Config`] for a salt or aad that is not base64url, or a salt that is not a
    /// GCM IV of 12, 16 or 32 bytes.
    pub fn build(&self) -> Result<LocalSettings, KmsError> {
        let cipher_params =
            CipherParams::from_b64u(self.encrypt_salt.as_deref(), self.encrypt_aad.as_deref())
                .map_err(|e| KmsError::Config(format!("encrypt_{e}")))?;
        let defaults = LocalSettings::default();
        let or = |value: &Option<String>, default: String| value.clone().unwrap_or(default);
        Ok(LocalSettings {
            encrypt_application_id: or(
                &self.encrypt_application_id,
                defaults.encrypt_application_id,
            ),
            encrypt_reference_id: or(&self.encrypt_reference_id, defaults.encrypt_reference_id),
            sign_application_id: or(&self.sign_application_id, defaults.sign_application_id),
            sign_reference_id: or(&self.sign_reference_id, defaults.sign_reference_id),
            cipher_params,
        })
    }
}

/// Encrypts, decrypts, signs and verifies with the embedded key manager, producing the same
/// ciphertexts and tokens as a MOSIP Keymanager. RSA private-key operations run on tokio's
/// blocking pool.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    kms: Arc<Kms>,
    settings: Arc<LocalSettings>,
    /// The signing keys' public halves, parsed once. Keys are only ever added (rotation keeps
    /// the old ones), so the set is reloaded only when a token names a key it does not hold,
    /// and at most once per [`VERIFY_RELOAD_INTERVAL`] so made-up key ids cannot make every
    /// request read the store.
    verify_keys: Arc<Cached<VerificationKeys>>,
    /// Held by the one encryption that loads the current key when it is not in memory, so a
    /// burst of callers (the first batch of a registry run) does not become a burst of
    /// blocking threads doing the same work.
    warming: Arc<tokio::sync::Mutex<()>>,
}

/// Least time between two reloads of the verification keys caused by unknown keys.
const VERIFY_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Error::from),
        Err(e) => Err(KmsError::Internal(format!("key operation task: {e}")).into()),
    }
}

impl LocalProvider {
    /// A provider over `kms` with these key settings; its two pairs are declared to the key
    /// manager, which then makes their keys on first use.
    pub fn new(kms: Arc<Kms>, settings: LocalSettings) -> Self {
        kms.declare(
            &settings.encrypt_application_id,
            &settings.encrypt_reference_id,
        );
        kms.declare(&settings.sign_application_id, &settings.sign_reference_id);
        LocalProvider {
            kms,
            settings: Arc::new(settings),
            verify_keys: Arc::new(Cached::new(Clock::system())),
            warming: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// [`Kms::encrypt_if_ready`] with this provider's key and parameters.
    fn encrypt_if_ready(&self, plaintext: &[u8]) -> Option<Result<Vec<u8>, Error>> {
        let s = &self.settings;
        self.kms
            .encrypt_if_ready(
                &s.encrypt_application_id,
                &s.encrypt_reference_id,
                &s.cipher_params,
                plaintext,
            )
            .map(|sealed| sealed.map_err(Error::from))
    }

    async fn load_verify_keys(&self) -> Result<(VerificationKeys, Duration), Error> {
        let (kms, s) = (self.kms.clone(), self.settings.clone());
        let set = blocking(move || {
            Self::jwk_set(
                &kms,
                &s.sign_application_id,
                &s.sign_reference_id,
                KeyUse::Sig,
            )
        })
        .await?;
        Ok((VerificationKeys::from_jwks(&set)?, Duration::MAX))
    }

    /// Verifies again after a token named a key that `tried` does not hold: with the keys
    /// another task reloaded meanwhile, else with keys reloaded now (at most once per
    /// [`VERIFY_RELOAD_INTERVAL`]), else gives `refused` back.
    async fn verify_after_reload(
        &self,
        token: &UnverifiedJws,
        tried: &Arc<VerificationKeys>,
        refused: Error,
    ) -> Result<VerifiedJws, Error> {
        match self
            .verify_keys
            .refill(tried, VERIFY_RELOAD_INTERVAL, || self.load_verify_keys())
            .await?
        {
            Some(keys) => token.verify_with(&keys),
            None => Err(refused),
        }
    }

    /// The key manager.
    pub fn kms(&self) -> &Arc<Kms> {
        &self.kms
    }

    /// The pair's own keys as JWKs; partner certificates uploaded under the pair are not
    /// this key manager's keys and are left out.
    fn jwk_set(kms: &Kms, app: &str, reference: &str, key_use: KeyUse) -> Result<JwkSet, KmsError> {
        Ok(JwkSet {
            keys: kms
                .all_certificates(app, reference)?
                .iter()
                .filter(|r| r.kind != KeyKind::Partner)
                .map(|r| Jwk::from_certificate(&r.certificate, Some(r.key_id.clone()), key_use))
                .collect(),
        })
    }
}

#[async_trait]
impl EncryptionProvider for LocalProvider {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn ciphertext_key(&self, ciphertext: &[u8]) -> Option<String> {
        self.kms.key_of_ciphertext(ciphertext)
    }

    fn key_pairs(&self) -> Option<KeyPairs> {
        let s = &self.settings;
        Some(KeyPairs {
            encrypt: (
                s.encrypt_application_id.clone(),
                s.encrypt_reference_id.clone(),
            ),
            sign: (s.sign_application_id.clone(), s.sign_reference_id.clone()),
        })
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        if plaintext.is_empty() {
            return Err(Error::invalid_input("plaintext is empty"));
        }
        if let Some(sealed) = self.encrypt_if_ready(plaintext) {
            return sealed;
        }
        let _warming = self.warming.lock().await;
        if let Some(sealed) = self.encrypt_if_ready(plaintext) {
            return sealed;
        }
        let (kms, s, pt) = (self.kms.clone(), self.settings.clone(), plaintext.to_vec());
        blocking(move || {
            kms.encrypt(
                &s.encrypt_application_id,
                &s.encrypt_reference_id,
                &s.cipher_params,
                &pt,
            )
        })
        .await
    }

    async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        g2p_mosip::cipher::parse(ciphertext)
            .map_err(|e| Error::invalid_input(format!("ciphertext: {e}")))?;
        let (kms, s, ct) = (self.kms.clone(), self.settings.clone(), ciphertext.to_vec());
        blocking(move || {
            kms.decrypt(
                &s.encrypt_application_id,
                &s.encrypt_reference_id,
                &s.cipher_params,
                &ct,
            )
        })
        .await
        .map_err(|e| {
            if e.kind() == ErrorKind::Refused {
                tracing::debug!(error = %e, "ciphertext refused");
                Error::ciphertext_refused()
            } else {
                e
            }
        })
    }

    async fn jwt_sign(
        &self,
        payload: &SignPayload,
        options: &SignOptions,
    ) -> Result<String, Error> {
        let bytes = payload.to_bytes();
        if bytes.is_empty() {
            return Err(Error::invalid_input("payload to sign is empty"));
        }
        let (kms, s, options) = (self.kms.clone(), self.settings.clone(), options.clone());
        blocking(move || {
            kms.sign(&SignSpec {
                application_id: &s.sign_application_id,
                reference_id: &s.sign_reference_id,
                payload: &bytes,
                include_payload: options.include_payload,
                include_certificate: options.include_certificate,
                include_cert_hash: options.include_cert_hash,
                certificate_url: options.certificate_url.as_deref(),
                algorithm: g2p_encryption::Alg::Rs256,
                b64: true,
            })
        })
        .await
    }

    async fn jwt_verify(
        &self,
        jws: &str,
        detached_payload: Option<&[u8]>,
    ) -> Result<VerifiedJws, Error> {
        let mut token = UnverifiedJws::parse(jws.trim())?;
        if let Some(payload) = detached_payload {
            token.attach_payload(payload)?;
        } else if token.is_detached() {
            return Err(Error::InvalidSignature(SignatureError::MissingPayload));
        }
        let (keys, fresh) = match self.verify_keys.fresh() {
            Some(keys) => (keys, false),
            None => (
                self.verify_keys
                    .get_or_fill(|| self.load_verify_keys())
                    .await?,
                true,
            ),
        };
        match token.verify_with(&keys) {
            Err(
                refused @ Error::InvalidSignature(
                    SignatureError::UnknownKey(_)
                    | SignatureError::UntrustedCertificate
                    | SignatureError::NoKey,
                ),
            ) if !fresh => self.verify_after_reload(&token, &keys, refused).await,
            result => result,
        }
    }

    async fn ready(&self) -> Result<(), Error> {
        let kms = self.kms.clone();
        blocking(move || kms.store().ready()).await
    }

    async fn jwks(&self) -> Result<JwkSet, Error> {
        let (kms, s) = (self.kms.clone(), self.settings.clone());
        blocking(move || {
            // Make sure both keys exist, so a fresh store publishes them.
            kms.certificate(&s.encrypt_application_id, &s.encrypt_reference_id)?;
            kms.certificate(&s.sign_application_id, &s.sign_reference_id)?;
            let mut set = Self::jwk_set(
                &kms,
                &s.encrypt_application_id,
                &s.encrypt_reference_id,
                KeyUse::Enc,
            )?;
            set.extend(Self::jwk_set(
                &kms,
                &s.sign_application_id,
                &s.sign_reference_id,
                KeyUse::Sig,
            )?);
            Ok(set)
        })
        .await
    }
}
