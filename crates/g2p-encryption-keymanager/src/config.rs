//! Configuration of the Keymanager provider.
//!
//! [`KeymanagerSettings`] is what a user writes (a TOML table, environment variables);
//! [`KeymanagerSettings::build`] validates it into a [`KeymanagerConfig`], naming the first
//! setting that is missing or wrong.

use std::path::PathBuf;
use std::time::Duration;

use g2p_encryption::b64;
use g2p_encryption::clock::Clock;
use g2p_mosip::cipher::CipherParams;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::error::KeymanagerError;
use crate::resilience::{Resilience, ResilienceSettings};

/// Where ciphertexts are made (`local` or `remote`, in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum EncryptMode {
    /// Seal locally with the Keymanager's certificate (checked once per certificate by a
    /// remote decrypt); falls back to `Remote` when that check fails.
    #[default]
    Local,
    /// Always call `/encrypt`.
    Remote,
}

/// Where signatures are checked (`local` or `remote`, in any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum VerifyMode {
    /// Verify against the Keymanager's own certificates (JWKS), pinned: a token carrying a
    /// foreign certificate is refused.
    #[default]
    Local,
    /// Always call `/jwtVerify` (which trusts a certificate carried in the token).
    Remote,
}

impl std::str::FromStr for EncryptMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(EncryptMode::Local),
            "remote" => Ok(EncryptMode::Remote),
            other => Err(format!("{other:?} is not `local` or `remote`")),
        }
    }
}

impl TryFrom<String> for EncryptMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for VerifyMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::str::FromStr for VerifyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(VerifyMode::Local),
            "remote" => Ok(VerifyMode::Remote),
            other => Err(format!("{other:?} is not `local` or `remote`")),
        }
    }
}

/// Unvalidated settings, as written in a configuration file or the environment (each field
/// `x` as `KEYMANAGER_X`, layered by `g2p-config`). Every field is optional here;
/// [`KeymanagerSettings::build`] applies defaults and checks.
///
/// `Debug` never shows the client secret.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeymanagerSettings {
    /// Keymanager API base, e.g. `https://keymanager.example.org/v1/keymanager`.
    pub api_base_url: Option<String>,
    /// Request timeout in seconds (default 10).
    pub api_timeout: Option<u64>,
    /// OAuth2 token endpoint, e.g.
    /// `https://keycloak.example.org/realms/mosip/protocol/openid-connect/token`.
    pub auth_url: Option<String>,
    /// OAuth2 client id.
    pub auth_client_id: Option<String>,
    /// OAuth2 client secret.
    pub auth_client_secret: Option<SecretString>,
    /// OAuth2 grant type (default `client_credentials`).
    pub auth_grant_type: Option<String>,
    /// Encryption key application (default `REGISTRATION`).
    pub encrypt_application_id: Option<String>,
    /// Encryption key reference (default `ENCRYPT`).
    pub encrypt_reference_id: Option<String>,
    /// Signing key application (default `ID_REPO`).
    pub sign_application_id: Option<String>,
    /// Signing key reference (default `""`, the application's master key).
    pub sign_reference_id: Option<String>,
    /// base64url GCM IV (12, 16 or 32 bytes); selects mode A.
    pub encrypt_salt: Option<String>,
    /// base64url GCM additional data.
    pub encrypt_aad: Option<String>,
    /// `local` (default) or `remote`.
    pub encrypt_mode: Option<EncryptMode>,
    /// `local` (default) or `remote`.
    pub verify_mode: Option<VerifyMode>,
    /// PEM file with extra CA certificates trusted for TLS (added to the system roots).
    pub ca_certificate: Option<PathBuf>,
    /// Turns TLS certificate verification off. For test rigs only; logged loudly.
    pub tls_insecure_skip_verify: Option<bool>,
    /// Longest time an encryption certificate is used before it is fetched again, seconds
    /// (default 3600).
    pub certificate_ttl: Option<u64>,
    /// How long the JWKS is cached, seconds (default 300).
    pub jwks_ttl: Option<u64>,
    /// Refresh a token this many seconds before it expires (default 30).
    pub token_refresh_skew: Option<u64>,
    /// Attempts per call to the Keymanager or its token endpoint, the first included
    /// (default 4; 1: no retry).
    pub max_attempts: Option<u32>,
    /// Ceiling of the first retry's delay, seconds (default 0.1); each further doubles.
    pub retry_base: Option<f64>,
    /// Largest retry delay ceiling, seconds (default 2).
    pub retry_max: Option<f64>,
    /// Attempts failed in a row (service out) that open the circuit (default 10).
    pub breaker_threshold: Option<u32>,
    /// How long calls fail fast once the circuit is open, seconds (default 5).
    pub breaker_cooldown: Option<f64>,
    /// Most requests in flight to the Keymanager (default 64).
    pub max_in_flight: Option<usize>,
    /// How long past their time the certificate and key sets are used through an outage,
    /// seconds (default 3600; never past a certificate's `notAfter`).
    pub outage_grace: Option<u64>,
}

impl std::fmt::Debug for KeymanagerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeymanagerSettings")
            .field("api_base_url", &self.api_base_url)
            .field("auth_url", &self.auth_url)
            .field("auth_client_id", &self.auth_client_id)
            .field(
                "auth_client_secret",
                &self.auth_client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("encrypt_application_id", &self.encrypt_application_id)
            .field("encrypt_reference_id", &self.encrypt_reference_id)
            .field("sign_application_id", &self.sign_application_id)
            .field("sign_reference_id", &self.sign_reference_id)
            .field("encrypt_mode", &self.encrypt_mode)
            .field("verify_mode", &self.verify_mode)
            .finish_non_exhaustive()
    }
}

/// The encryption application when none is set.
pub const DEFAULT_ENCRYPT_APPLICATION_ID: &str = "REGISTRATION";
/// The encryption reference when none is set.
pub const DEFAULT_ENCRYPT_REFERENCE_ID: &str = "ENCRYPT";
/// The signing application when none is set (its master key signs: reference `""`).
pub const DEFAULT_SIGN_APPLICATION_ID: &str = "ID_REPO";

impl KeymanagerSettings {
    /// The `(application, reference)` pairs these settings encrypt and sign with, defaults
    /// applied.
    pub fn key_pairs(&self) -> [(String, String); 2] {
        let or = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.into());
        [
            (
                or(&self.encrypt_application_id, DEFAULT_ENCRYPT_APPLICATION_ID),
                or(&self.encrypt_reference_id, DEFAULT_ENCRYPT_REFERENCE_ID),
            ),
            (
                or(&self.sign_application_id, DEFAULT_SIGN_APPLICATION_ID),
                or(&self.sign_reference_id, ""),
            ),
        ]
    }

    fn resilience(&self) -> ResilienceSettings {
        ResilienceSettings {
            max_attempts: self.max_attempts,
            retry_base: self.retry_base,
            retry_max: self.retry_max,
            breaker_threshold: self.breaker_threshold,
            breaker_cooldown: self.breaker_cooldown,
            max_in_flight: self.max_in_flight,
            outage_grace: self.outage_grace,
        }
    }

    /// Validates and applies defaults.
    ///
    /// # Errors
    /// [`KeymanagerError::Configuration`] naming the setting that is missing or wrong.
    pub fn build(self) -> Result<KeymanagerConfig, KeymanagerError> {
        let resilience = self.resilience().build()?;
        let api_base_url = required_url("api_base_url", self.api_base_url)?;
        let auth_url = required_url("auth_url", self.auth_url)?;
        let client_id = self
            .auth_client_id
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| missing("auth_client_id"))?;
        let client_secret = self
            .auth_client_secret
            .filter(|s| !s.expose_secret().is_empty())
            .ok_or_else(|| missing("auth_client_secret"))?;
        let timeout_secs = self.api_timeout.unwrap_or(10);
        if timeout_secs == 0 || timeout_secs > 3600 {
            return Err(KeymanagerError::Configuration(format!(
                "api_timeout must be between 1 and 3600 seconds, got {timeout_secs}"
            )));
        }
        let encrypt_application_id = non_empty(
            "encrypt_application_id",
            self.encrypt_application_id,
            DEFAULT_ENCRYPT_APPLICATION_ID,
        )?;
        let encrypt_reference_id = self
            .encrypt_reference_id
            .unwrap_or_else(|| DEFAULT_ENCRYPT_REFERENCE_ID.into());
        if encrypt_reference_id.trim().is_empty() {
            // The Keymanager refuses to encrypt with a master key (KER-CRY-011).
            return Err(KeymanagerError::Configuration(
                "encrypt_reference_id must not be empty: the Keymanager does not encrypt with an application's master key".into(),
            ));
        }
        let sign_application_id = non_empty(
            "sign_application_id",
            self.sign_application_id,
            DEFAULT_SIGN_APPLICATION_ID,
        )?;
        let cipher_params =
            CipherParams::from_b64u(self.encrypt_salt.as_deref(), self.encrypt_aad.as_deref())
                .map_err(|e| KeymanagerError::Configuration(format!("encrypt_{e}")))?;
        let ca_certificate_pem = match self.ca_certificate {
            None => None,
            Some(path) => Some(std::fs::read(&path).map_err(|e| {
                KeymanagerError::Configuration(format!("ca_certificate {}: {e}", path.display()))
            })?),
        };
        Ok(KeymanagerConfig {
            resilience,
            api_base_url,
            auth_url,
            client_id,
            client_secret,
            grant_type: self
                .auth_grant_type
                .filter(|g| !g.trim().is_empty())
                .unwrap_or_else(|| "client_credentials".into()),
            timeout: Duration::from_secs(timeout_secs),
            encrypt_application_id,
            encrypt_reference_id,
            sign_application_id,
            sign_reference_id: self.sign_reference_id.unwrap_or_default(),
            salt_b64u: cipher_params.salt().map(b64::encode_b64u),
            aad_b64u: cipher_params.aad().map(b64::encode_b64u),
            cipher_params,
            encrypt_mode: self.encrypt_mode.unwrap_or_default(),
            verify_mode: self.verify_mode.unwrap_or_default(),
            ca_certificate_pem,
            tls_insecure_skip_verify: self.tls_insecure_skip_verify.unwrap_or(false),
            certificate_ttl: Duration::from_secs(self.certificate_ttl.unwrap_or(3600)),
            jwks_ttl: Duration::from_secs(self.jwks_ttl.unwrap_or(300)),
            token_refresh_skew: Duration::from_secs(self.token_refresh_skew.unwrap_or(30)),
            clock: Clock::system(),
        })
    }
}

fn missing(name: &str) -> KeymanagerError {
    KeymanagerError::Configuration(format!(
        "{name} is required (set it in the provider's table or as KEYMANAGER_{})",
        name.to_ascii_uppercase()
    ))
}

fn required_url(name: &str, value: Option<String>) -> Result<Url, KeymanagerError> {
    let text = value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| missing(name))?;
    let url = Url::parse(text.trim())
        .map_err(|e| KeymanagerError::Configuration(format!("{name} {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(KeymanagerError::Configuration(format!(
            "{name} {text:?}: scheme must be http or https"
        )));
    }
    Ok(url)
}

fn non_empty(name: &str, value: Option<String>, default: &str) -> Result<String, KeymanagerError> {
    let value = value.unwrap_or_else(|| default.into());
    if value.trim().is_empty() {
        return Err(KeymanagerError::Configuration(format!(
            "{name} must not be empty"
        )));
    }
    Ok(value)
}

/// Validated configuration of one Keymanager provider.
#[derive(Clone)]
pub struct KeymanagerConfig {
    pub(crate) api_base_url: Url,
    pub(crate) auth_url: Url,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) grant_type: String,
    pub(crate) timeout: Duration,
    pub(crate) encrypt_application_id: String,
    pub(crate) encrypt_reference_id: String,
    pub(crate) sign_application_id: String,
    pub(crate) sign_reference_id: String,
    pub(crate) salt_b64u: Option<String>,
    pub(crate) aad_b64u: Option<String>,
    pub(crate) cipher_params: CipherParams,
    pub(crate) encrypt_mode: EncryptMode,
    pub(crate) verify_mode: VerifyMode,
    pub(crate) ca_certificate_pem: Option<Vec<u8>>,
    pub(crate) tls_insecure_skip_verify: bool,
    pub(crate) certificate_ttl: Duration,
    pub(crate) jwks_ttl: Duration,
    pub(crate) token_refresh_skew: Duration,
    pub(crate) resilience: Resilience,
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for KeymanagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeymanagerConfig")
            .field("api_base_url", &self.api_base_url.as_str())
            .field("auth_url", &self.auth_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("grant_type", &self.grant_type)
            .field("timeout", &self.timeout)
            .field(
                "encrypt",
                &(&self.encrypt_application_id, &self.encrypt_reference_id),
            )
            .field(
                "sign",
                &(&self.sign_application_id, &self.sign_reference_id),
            )
            .field("cipher_params", &self.cipher_params)
            .field("encrypt_mode", &self.encrypt_mode)
            .field("verify_mode", &self.verify_mode)
            .field("tls_insecure_skip_verify", &self.tls_insecure_skip_verify)
            .field("resilience", &self.resilience)
            .finish_non_exhaustive()
    }
}

impl KeymanagerConfig {
    /// Starts settings with the required values; everything else takes its default.
    pub fn settings(
        api_base_url: &str,
        auth_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> KeymanagerSettings {
        KeymanagerSettings {
            api_base_url: Some(api_base_url.into()),
            auth_url: Some(auth_url.into()),
            auth_client_id: Some(client_id.into()),
            auth_client_secret: Some(SecretString::from(client_secret.to_string())),
            ..KeymanagerSettings::default()
        }
    }

    /// The same configuration on another clock (tests move one to expire tokens and
    /// certificates without waiting).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The Keymanager API base URL.
    pub fn api_base_url(&self) -> &Url {
        &self.api_base_url
    }

    /// The token endpoint.
    pub fn auth_url(&self) -> &Url {
        &self.auth_url
    }

    /// The OAuth2 client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Retries, breakers, bulkhead and outage grace.
    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// The same configuration with other resilience settings.
    pub fn with_resilience(mut self, resilience: Resilience) -> Self {
        self.resilience = resilience;
        self
    }

    /// Encryption application and reference ids.
    pub fn encrypt_ids(&self) -> (&str, &str) {
        (&self.encrypt_application_id, &self.encrypt_reference_id)
    }

    /// Signing application and reference ids.
    pub fn sign_ids(&self) -> (&str, &str) {
        (&self.sign_application_id, &self.sign_reference_id)
    }

    /// Salt and aad in effect.
    pub fn cipher_params(&self) -> &CipherParams {
        &self.cipher_params
    }

    /// Where ciphertexts are made.
    pub fn encrypt_mode(&self) -> EncryptMode {
        self.encrypt_mode
    }

    /// Where signatures are checked.
    pub fn verify_mode(&self) -> VerifyMode {
        self.verify_mode
    }

    /// The URL of a Keymanager endpoint, e.g. `encrypt`.
    pub(crate) fn endpoint(&self, name: &str) -> Url {
        let mut url = self.api_base_url.clone();
        let path = format!("{}/{name}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> KeymanagerSettings {
        KeymanagerConfig::settings(
            "http://km:8080/v1/keymanager/",
            "http://kc/realms/openg2p/protocol/openid-connect/token",
            "client",
            "hunter2-secret",
        )
    }

    #[test]
    fn defaults() {
        let c = base().build().unwrap();
        assert_eq!(c.encrypt_ids(), ("REGISTRATION", "ENCRYPT"));
        assert_eq!(c.sign_ids(), ("ID_REPO", ""));
        assert_eq!(c.grant_type, "client_credentials");
        assert_eq!(c.timeout(), Duration::from_secs(10));
        assert_eq!(c.encrypt_mode(), EncryptMode::Local);
        assert_eq!(c.verify_mode(), VerifyMode::Local);
        assert_eq!(c.cipher_params().mode(), g2p_mosip::cipher::Mode::C);
        assert!(!c.tls_insecure_skip_verify);
        assert_eq!(
            c.endpoint("encrypt").as_str(),
            "http://km:8080/v1/keymanager/encrypt"
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let mut s = base();
        s.auth_client_secret = None;
        let e = s.build().unwrap_err().to_string();
        assert!(
            e.contains("auth_client_secret") && e.contains("KEYMANAGER_AUTH_CLIENT_SECRET"),
            "{e}"
        );

        let mut s = base();
        s.api_base_url = Some("ftp://x".into());
        assert!(s.build().unwrap_err().to_string().contains("api_base_url"));

        let mut s = base();
        s.encrypt_salt = Some("AAEC".into()); // 3 bytes
        assert!(s.build().unwrap_err().to_string().contains("3 bytes"));

        let mut s = base();
        s.encrypt_aad = Some("*not base64*".into());
        assert!(s.build().unwrap_err().to_string().contains("encrypt_aad"));

        let mut s = base();
        s.encrypt_reference_id = Some(String::new());
        assert!(s.build().unwrap_err().to_string().contains("master key"));

        let mut s = base();
        s.ca_certificate = Some("/nonexistent/ca.pem".into());
        assert!(
            s.build()
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/ca.pem")
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = base();
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = s.build().unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn toml_table_deserializes() {
        let s: KeymanagerSettings = serde_json::from_value(serde_json::json!({
            "api_base_url": "http://km/v1/keymanager",
            "auth_url": "http://kc/token",
            "auth_client_id": "c",
            "auth_client_secret": "s",
            "verify_mode": "REMOTE",
        }))
        .unwrap();
        assert_eq!(s.build().unwrap().verify_mode(), VerifyMode::Remote);
        let unknown =
            serde_json::from_value::<KeymanagerSettings>(serde_json::json!({"api_base": "x"}));
        assert!(unknown.unwrap_err().to_string().contains("api_base"));
    }
}
