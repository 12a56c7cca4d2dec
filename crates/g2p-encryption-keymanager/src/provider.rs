//! [`KeymanagerProvider`]: the [`EncryptionProvider`] over a remote MOSIP Keymanager.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use g2p_encryption::ProviderError as _;
use g2p_encryption::cache::{Cached, Served};
use g2p_encryption::cert::CertificateInfo;
use g2p_encryption::jws::VerificationKeys;
use g2p_encryption::{
    CallCounts, EncryptionProvider, Error, ErrorKind, Jwk, JwkSet, KeyPairs, KeyUse, SignOptions,
    SignPayload, SignatureError, UnverifiedJws, VerifiedJws, b64,
};
use g2p_mosip::cipher::{self, Sealer};
use g2p_mosip::dto::{JwtSignRequest, JwtVerifyRequest};

use crate::client::KeymanagerClient;
use crate::config::{EncryptMode, KeymanagerConfig, VerifyMode};
use crate::error::KeymanagerError;

/// A certificate is dropped this long before its `notAfter`, so ciphertexts are never sealed
/// for a key the Keymanager is about to replace.
const CERTIFICATE_EXPIRY_MARGIN: Duration = Duration::from_secs(300);
/// When the encryption certificate cannot be used locally, how long remote encryption is used
/// before the certificate is looked at again.
const UNUSABLE_CERTIFICATE_RETRY: Duration = Duration::from_secs(60);
/// An unknown `kid` refetches the JWKS at most this often.
const MIN_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Where encryption currently happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionPath {
    /// Sealed locally with the Keymanager's certificate (its canary decrypted remotely).
    Local,
    /// Sent to `/encrypt` (configured, or the canary failed, or the certificate is unusable).
    Remote,
}

struct EncryptionKey {
    /// `None`: use remote `/encrypt`.
    sealer: Option<Sealer>,
}

struct KeySets {
    all: JwkSet,
    sign: VerificationKeys,
}

/// Encrypts, decrypts, signs and verifies through a MOSIP Keymanager.
///
/// Cheap to share: hold it as `Arc<dyn EncryptionProvider>`.
pub struct KeymanagerProvider {
    client: KeymanagerClient,
    encryption_key: Cached<EncryptionKey>,
    key_sets: Cached<KeySets>,
}

impl std::fmt::Debug for KeymanagerProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeymanagerProvider")
            .field("config", self.client.config())
            .finish_non_exhaustive()
    }
}

fn invalid_response(client: &KeymanagerClient, endpoint: &str, reason: String) -> Error {
    KeymanagerError::InvalidResponse {
        url: format!(
            "{}/{endpoint}",
            client
                .config()
                .api_base_url()
                .as_str()
                .trim_end_matches('/')
        ),
        reason,
    }
    .into()
}

impl KeymanagerProvider {
    /// A provider over the configured Keymanager. Nothing is fetched until first use.
    ///
    /// # Errors
    /// [`Error::Provider`] with a configuration error when the HTTP client cannot be built.
    pub fn new(config: KeymanagerConfig) -> Result<Self, Error> {
        if config.verify_mode == VerifyMode::Remote {
            tracing::info!(
                "verify_mode = remote: signatures are checked by the Keymanager's /jwtVerify; certificates carried in tokens are still matched against the Keymanager's own"
            );
        }
        let clock = config.clock.clone();
        Ok(KeymanagerProvider {
            client: KeymanagerClient::new(config)?,
            encryption_key: Cached::new(clock.clone()),
            key_sets: Cached::new(clock),
        })
    }

    /// The underlying REST client (for token inspection and direct endpoint calls).
    pub fn client(&self) -> &KeymanagerClient {
        &self.client
    }

    /// Where the next encryption will happen, fetching and checking the encryption
    /// certificate if needed.
    ///
    /// # Errors
    /// As [`EncryptionProvider::encrypt`].
    pub async fn encryption_path(&self) -> Result<EncryptionPath, Error> {
        if self.client.config().encrypt_mode() == EncryptMode::Remote {
            return Ok(EncryptionPath::Remote);
        }
        Ok(match self.current_encryption_key().await?.sealer {
            Some(_) => EncryptionPath::Local,
            None => EncryptionPath::Remote,
        })
    }

    /// How cached keys are served through an outage: the grace, and how often the
    /// Keymanager is asked again meanwhile (once per breaker cool-down).
    fn grace(&self) -> (Duration, Duration) {
        let r = self.client.config().resilience();
        (r.outage_grace, r.breaker.cooldown)
    }

    /// Counts a cached value served, and says so once per outage when it was stale.
    fn served(&self, cache: &'static str, filled: bool, served: Served) {
        match served {
            Served::Fresh if !filled => cache_hit(cache),
            Served::Fresh => {}
            Served::Stale { first } => {
                metrics::counter!("g2p_cache_stale_served_total", "cache" => cache).increment(1);
                self.client.counters().stale_served();
                if first {
                    tracing::warn!(
                        cache,
                        grace_s = self.grace().0.as_secs(),
                        "the Keymanager is out: serving its cached {cache} past its time (outage grace); decrypt and sign fail until it is back"
                    );
                }
            }
        }
    }

    async fn current_encryption_key(&self) -> Result<Arc<EncryptionKey>, Error> {
        let filled = AtomicBool::new(false);
        let (key, served) = self
            .encryption_key
            .get_or_fill_graced(self.grace(), is_outage, || async {
                filled.store(true, Ordering::Relaxed);
                cache_miss("certificate");
                self.load_encryption_key().await
            })
            .await?;
        self.served("certificate", filled.load(Ordering::Relaxed), served);
        Ok(key)
    }

    /// Fetches the current encryption certificate and checks, once, that the Keymanager
    /// decrypts what is sealed with it. Gives the key, how long to use it, and how long it
    /// may be used at all (until shortly before the certificate's `notAfter`).
    async fn load_encryption_key(&self) -> Result<(EncryptionKey, Duration, Duration), Error> {
        let config = self.client.config();
        let (app, reference) = config.encrypt_ids();
        let Some((certificate, usable_for)) = self.encryption_certificate().await? else {
            tracing::warn!(
                app,
                reference,
                "the Keymanager's encryption certificate is outside its validity period; encrypting remotely"
            );
            return Ok((
                EncryptionKey { sealer: None },
                UNUSABLE_CERTIFICATE_RETRY,
                UNUSABLE_CERTIFICATE_RETRY,
            ));
        };
        let sealer = Sealer::new(&certificate).map_err(|e| {
            invalid_response(&self.client, "getCertificate", format!("certificate: {e}"))
        })?;
        let lifetime = config.certificate_ttl.min(usable_for);
        let thumbprint = hex::encode_upper(sealer.thumbprint());
        match self.canary(&sealer).await {
            Ok(true) => {
                tracing::info!(
                    app, reference, thumbprint = %thumbprint,
                    "encryption certificate checked by a remote decrypt; sealing locally"
                );
                Ok((
                    EncryptionKey {
                        sealer: Some(sealer),
                    },
                    lifetime,
                    usable_for,
                ))
            }
            Ok(false) => {
                tracing::warn!(
                    app, reference, thumbprint = %thumbprint,
                    "the Keymanager decrypted the canary to different bytes; falling back to remote /encrypt"
                );
                Ok((EncryptionKey { sealer: None }, lifetime, lifetime))
            }
            Err(
                e @ (KeymanagerError::Keymanager { .. }
                | KeymanagerError::HttpStatus { status: 403, .. }),
            ) => {
                tracing::warn!(
                    app, reference, thumbprint = %thumbprint, error = %e,
                    "data sealed with the Keymanager's certificate did not decrypt; falling back to remote /encrypt"
                );
                Ok((EncryptionKey { sealer: None }, lifetime, lifetime))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The encryption certificate and how long it may be used (until shortly before its
    /// `notAfter`); `None` when it is outside its validity period.
    async fn encryption_certificate(&self) -> Result<Option<(CertificateInfo, Duration)>, Error> {
        let (app, reference) = self.client.config().encrypt_ids();
        let response = self.client.get_certificate(app, reference).await?;
        let pem = response
            .certificate
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| {
                invalid_response(
                    &self.client,
                    "getCertificate",
                    "no certificate in the answer".into(),
                )
            })?;
        let certificate = CertificateInfo::from_pem(&pem).map_err(|e| {
            invalid_response(&self.client, "getCertificate", format!("certificate: {e}"))
        })?;
        let now = self.client.config().clock.unix_seconds();
        let margin = i64::try_from(CERTIFICATE_EXPIRY_MARGIN.as_secs()).unwrap_or(i64::MAX);
        let usable_for = certificate
            .not_after()
            .saturating_sub(now)
            .saturating_sub(margin);
        if usable_for <= 0 || certificate.not_before() > now {
            return Ok(None);
        }
        let usable_for = Duration::from_secs(u64::try_from(usable_for).unwrap_or(0));
        Ok(Some((certificate, usable_for)))
    }

    /// Seals a probe with `sealer` and asks the Keymanager to decrypt it: whether it gives
    /// the probe back.
    async fn canary(&self, sealer: &Sealer) -> Result<bool, KeymanagerError> {
        let config = self.client.config();
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KeymanagerError::Configuration("the system has no randomness".into()))?;
        let probe = format!("g2p-keymanager canary {}", hex::encode(nonce));
        let sealed = sealer
            .seal(config.cipher_params(), probe.as_bytes())
            .map_err(|e| KeymanagerError::Configuration(format!("local sealing: {e}")))?;
        let data = self.client.decrypt(b64::encode_b64u(&sealed)).await?;
        Ok(b64::decode_lenient(&data).ok().as_deref() == Some(probe.as_bytes()))
    }

    async fn remote_encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let data = self.client.encrypt(b64::encode_b64u(plaintext)).await?;
        let ciphertext = b64::decode_lenient(&data).map_err(|e| {
            invalid_response(&self.client, "encrypt", format!("data is not base64: {e}"))
        })?;
        cipher::parse(&ciphertext).map_err(|e| {
            invalid_response(
                &self.client,
                "encrypt",
                format!("not a MOSIP ciphertext: {e}"),
            )
        })?;
        Ok(ciphertext)
    }

    async fn key_sets(&self) -> Result<Arc<KeySets>, Error> {
        let filled = AtomicBool::new(false);
        let (sets, served) = self
            .key_sets
            .get_or_fill_graced(self.grace(), is_outage, || async {
                filled.store(true, Ordering::Relaxed);
                cache_miss("jwks");
                let (sets, ttl) = self.load_key_sets().await?;
                Ok((sets, ttl, Duration::MAX))
            })
            .await?;
        self.served("jwks", filled.load(Ordering::Relaxed), served);
        Ok(sets)
    }

    /// Fetches the key sets again before their TTL because a token names a key that `stale`
    /// does not hold (perhaps the Keymanager rotated), at most once per
    /// [`MIN_JWKS_REFETCH_INTERVAL`] so that tokens with made-up key ids cannot make us hammer
    /// the Keymanager. `None` when refused by that limit.
    async fn refetch_key_sets(&self, stale: &Arc<KeySets>) -> Result<Option<Arc<KeySets>>, Error> {
        self.key_sets
            .refill(stale, MIN_JWKS_REFETCH_INTERVAL, || self.load_key_sets())
            .await
    }

    async fn keys_of(&self, app: &str, reference: &str, key_use: KeyUse) -> Result<JwkSet, Error> {
        let response = self.client.get_all_certificates(app, reference).await?;
        let mut set = JwkSet::default();
        for entry in response.all_certificates {
            match CertificateInfo::from_pem(&entry.certificate_data) {
                Ok(cert) => set.keys.push(Jwk::from_certificate(
                    &cert,
                    Some(entry.key_id).filter(|k| !k.is_empty()),
                    key_use,
                )),
                Err(e) => tracing::warn!(
                    app, reference, key_id = %entry.key_id, error = %e,
                    "skipping a certificate of getAllCertificates that does not parse"
                ),
            }
        }
        Ok(set)
    }

    async fn load_key_sets(&self) -> Result<(KeySets, Duration), Error> {
        let config = self.client.config();
        let (enc_app, enc_ref) = config.encrypt_ids();
        let (sig_app, sig_ref) = config.sign_ids();
        let sign = self.keys_of(sig_app, sig_ref, KeyUse::Sig).await?;
        let mut all = self.keys_of(enc_app, enc_ref, KeyUse::Enc).await?;
        let verification = VerificationKeys::from_jwks(&sign)
            .map_err(|e| invalid_response(&self.client, "getAllCertificates", e.to_string()))?;
        all.extend(sign);
        let sets = KeySets {
            all,
            sign: verification,
        };
        Ok((sets, config.jwks_ttl))
    }

    async fn verify_locally(&self, token: &UnverifiedJws) -> Result<VerifiedJws, Error> {
        let sets = self.key_sets().await?;
        match token.verify_with(&sets.sign) {
            Err(
                e @ Error::InvalidSignature(
                    SignatureError::UnknownKey(_) | SignatureError::UntrustedCertificate,
                ),
            ) => {
                // Perhaps the Keymanager rotated its key since the set was fetched: look once.
                match self.refetch_key_sets(&sets).await? {
                    Some(sets) => token.verify_with(&sets.sign),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    async fn verify_remotely(
        &self,
        compact: &str,
        token: UnverifiedJws,
        detached_payload: Option<&[u8]>,
    ) -> Result<VerifiedJws, Error> {
        // /jwtVerify trusts a certificate carried in the token (spec 5.3): a key the header
        // names (`kid`, `x5c`, `x5t#S256`) must be one of the signing keys, checked here
        // (once more after a refetch, in case the Keymanager rotated).
        let sets = self.key_sets().await?;
        if let Err(refused) = token.check_named_key(&sets.sign) {
            match self.refetch_key_sets(&sets).await? {
                Some(sets) => token.check_named_key(&sets.sign)?,
                None => return Err(refused),
            }
        }
        let (app, reference) = self.client.config().sign_ids();
        let request = JwtVerifyRequest {
            jwt_signature_data: compact.to_string(),
            actual_data: detached_payload.map(b64::encode_b64u),
            application_id: app.into(),
            reference_id: reference.into(),
            certificate_data: None,
            validate_trust: false,
            domain: None,
        };
        let verdict = self.client.jwt_verify(&request).await?;
        if !verdict.signature_valid {
            return Err(Error::InvalidSignature(SignatureError::RemoteVerdict(
                if verdict.message.is_empty() {
                    "Validation Failed".into()
                } else {
                    verdict.message
                },
            )));
        }
        token.accept_remote_verdict()
    }
}

/// Failures that say the Keymanager is out (rather than refusing or misconfigured).
fn is_outage(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
}

fn cache_hit(cache: &'static str) {
    metrics::counter!("g2p_cache_hits_total", "cache" => cache).increment(1);
}

fn cache_miss(cache: &'static str) {
    metrics::counter!("g2p_cache_misses_total", "cache" => cache).increment(1);
}

#[async_trait]
impl EncryptionProvider for KeymanagerProvider {
    fn kind(&self) -> &'static str {
        "keymanager"
    }

    fn ciphertext_key(&self, ciphertext: &[u8]) -> Option<String> {
        let thumbprint = cipher::parse(ciphertext).ok()?.thumbprint_hex()?;
        Some(format!("thumbprint:{thumbprint}"))
    }

    fn key_pairs(&self) -> Option<KeyPairs> {
        let config = self.client.config();
        let pair = |(app, reference): (&str, &str)| (app.to_string(), reference.to_string());
        Some(KeyPairs {
            encrypt: pair(config.encrypt_ids()),
            sign: pair(config.sign_ids()),
        })
    }

    fn call_counts(&self) -> Option<CallCounts> {
        let stats = self.client.stats();
        Some(CallCounts {
            calls: stats.calls,
            retries: stats.retries,
            token_fetches: stats.token_fetches,
            stale_served: stats.stale_served,
        })
    }

    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        if plaintext.is_empty() {
            return Err(Error::invalid_input(
                "plaintext is empty (the Keymanager refuses to encrypt nothing)",
            ));
        }
        if self.client.config().encrypt_mode() == EncryptMode::Remote {
            return self.remote_encrypt(plaintext).await;
        }
        let key = self.current_encryption_key().await?;
        match &key.sealer {
            Some(sealer) => sealer
                .seal(self.client.config().cipher_params(), plaintext)
                .map_err(|e| Error::Configuration(format!("local sealing: {e}"))),
            None => self.remote_encrypt(plaintext).await,
        }
    }

    async fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, Error> {
        // Refuse locally what the Keymanager would answer with a 500 (spec Q3).
        let parsed = cipher::parse(ciphertext)
            .map_err(|e| Error::invalid_input(format!("ciphertext: {e}")))?;
        if parsed.thumbprint.is_none() {
            tracing::debug!("ciphertext without thumbprint (legacy layout)");
        }
        let data = match self.client.decrypt(b64::encode_b64u(ciphertext)).await {
            Ok(data) => data,
            Err(e) if e.kind() == ErrorKind::Refused => {
                // The KER code stays on the MOSIP wire (and in the debug log).
                tracing::debug!(error = %e, "ciphertext refused by the Keymanager");
                return Err(Error::ciphertext_refused());
            }
            Err(e) => return Err(e.into()),
        };
        b64::decode_lenient(&data).map_err(|e| {
            invalid_response(&self.client, "decrypt", format!("data is not base64: {e}"))
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
        let (app, reference) = self.client.config().sign_ids();
        let mut request = JwtSignRequest {
            data_to_sign: b64::encode_b64u(&bytes),
            application_id: app.into(),
            reference_id: reference.into(),
            include_payload: options.include_payload,
            include_certificate: options.include_certificate,
            include_cert_hash: options.include_cert_hash,
            certificate_url: options
                .certificate_url
                .clone()
                .filter(|u| !u.trim().is_empty()),
            ..JwtSignRequest::default()
        };
        let (endpoint, token) = if payload.is_json() {
            ("jwtSign", self.client.jwt_sign(&request).await?)
        } else {
            // Any bytes: /jwsSign with a standard (base64url) payload and RS256, and
            // `validateJson` always sent (spec Q14).
            request.validate_json = Some(false);
            request.b64_jws_header_param = Some(true);
            request.sign_algorithm = Some("RS256".into());
            ("jwsSign", self.client.jws_sign(&request).await?)
        };
        let parsed = UnverifiedJws::parse(&token).map_err(|e| {
            invalid_response(&self.client, endpoint, format!("not a compact JWS: {e}"))
        })?;
        if parsed.is_detached() == options.include_payload {
            return Err(invalid_response(
                &self.client,
                endpoint,
                format!(
                    "asked for {} payload, got the other",
                    if options.include_payload {
                        "an attached"
                    } else {
                        "a detached"
                    }
                ),
            ));
        }
        Ok(token)
    }

    async fn jwt_verify(
        &self,
        jws: &str,
        detached_payload: Option<&[u8]>,
    ) -> Result<VerifiedJws, Error> {
        let compact = jws.trim();
        let mut token = UnverifiedJws::parse(compact)?;
        let detached = token.is_detached();
        if let Some(payload) = detached_payload {
            token.attach_payload(payload)?;
        } else if token.is_detached() {
            return Err(Error::InvalidSignature(SignatureError::MissingPayload));
        }
        match self.client.config().verify_mode() {
            VerifyMode::Local => self.verify_locally(&token).await,
            VerifyMode::Remote => {
                let actual = detached_payload.filter(|_| detached);
                self.verify_remotely(compact, token, actual).await
            }
        }
    }

    async fn jwks(&self) -> Result<JwkSet, Error> {
        Ok(self.key_sets().await?.all.clone())
    }

    /// A token is obtainable (cached or fresh) and the Keymanager answers `getCertificate`
    /// for the encryption application now (not from a cache).
    async fn ready(&self) -> Result<(), Error> {
        if let Some(open) = self.client.unavailable() {
            return Err(open.into());
        }
        self.client.tokens().token().await?;
        let (app, reference) = self.client.config().encrypt_ids();
        self.client.get_certificate(app, reference).await?;
        Ok(())
    }
}
