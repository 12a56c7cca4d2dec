//! A typed client for the Keymanager endpoints (spec section 3): one pooled HTTP client,
//! the token as `Cookie: Authorization=<token>`, the envelope decoded in one place, and one
//! retry with a fresh token after a 401.

use std::sync::Arc;
use std::time::Instant;

use g2p_mosip::dto::{
    AllCertificatesResponse, CryptomanagerRequest, CryptomanagerResponse, JwtSignRequest,
    JwtSignResponse, JwtVerifyRequest, JwtVerifyResponse, KeyPairGenerateResponse,
};
use g2p_mosip::{EnvelopeError, RequestWrapper, decode_envelope};
use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::KeymanagerConfig;
use crate::error::{KeymanagerError, parse_retry_after, transport_error};
use crate::resilience::{CallCounters, CallStats, Failed, Guard, GuardSettings};
use crate::token::{AccessToken, TokenEndpoint, TokenManager};

/// Largest answer read from the Keymanager (a ciphertext of a large document, base64'd).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The Keymanager REST API.
#[derive(Debug, Clone)]
pub struct KeymanagerClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    http: reqwest::Client,
    config: KeymanagerConfig,
    tokens: TokenManager,
    guard: Guard,
    counters: Arc<CallCounters>,
}

enum Method<'a> {
    Get(&'a [(&'a str, &'a str)]),
    Post(Vec<u8>),
}

impl KeymanagerClient {
    /// Builds the pooled HTTP client (TLS verification on, extra CA if configured).
    ///
    /// # Errors
    /// [`KeymanagerError::Configuration`] when the CA file is not PEM or TLS cannot start.
    pub fn new(config: KeymanagerConfig) -> Result<Self, KeymanagerError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .user_agent(concat!("g2p-keymanager/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.ca_certificate_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                KeymanagerError::Configuration(format!("ca_certificate is not PEM: {e}"))
            })?;
            if certs.is_empty() {
                return Err(KeymanagerError::Configuration(
                    "ca_certificate holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        if config.tls_insecure_skip_verify {
            tracing::warn!(
                "TLS certificate verification is OFF (tls_insecure_skip_verify): anyone on the path can read tokens and data"
            );
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|e| KeymanagerError::Configuration(format!("HTTP client: {e}")))?;
        let counters = Arc::new(CallCounters::default());
        let tokens = TokenManager::new(
            http.clone(),
            TokenEndpoint {
                url: config.auth_url.clone(),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                grant_type: config.grant_type.clone(),
            },
            (config.token_refresh_skew, config.timeout),
            config.clock.clone(),
            &config.resilience,
            counters.clone(),
        );
        let guard = Guard::new(
            GuardSettings {
                target: "keymanager",
                url: config.api_base_url.to_string(),
                retry: config.resilience.retry,
                breaker: config.resilience.breaker,
                max_in_flight: Some(config.resilience.max_in_flight),
                timeout: config.timeout,
            },
            counters.clone(),
        );
        Ok(KeymanagerClient {
            inner: Arc::new(ClientInner {
                http,
                config,
                tokens,
                guard,
                counters,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KeymanagerConfig {
        &self.inner.config
    }

    /// The token manager.
    pub fn tokens(&self) -> &TokenManager {
        &self.inner.tokens
    }

    /// Counts of calls, attempts, retries and token requests so far.
    pub fn stats(&self) -> CallStats {
        self.inner.counters.snapshot()
    }

    pub(crate) fn counters(&self) -> &CallCounters {
        &self.inner.counters
    }

    /// Why calls fail fast now, if they do: the Keymanager's or the token endpoint's circuit
    /// is open.
    pub fn unavailable(&self) -> Option<KeymanagerError> {
        self.inner
            .guard
            .open_reason()
            .or_else(|| self.inner.tokens.unavailable())
    }

    fn crypto_request(&self, data: String) -> CryptomanagerRequest {
        let c = &self.inner.config;
        CryptomanagerRequest {
            application_id: c.encrypt_application_id.clone(),
            reference_id: c.encrypt_reference_id.clone(),
            time_stamp: Some(g2p_mosip::timestamp::now_strict()),
            data,
            salt: c.salt_b64u.clone(),
            aad: c.aad_b64u.clone(),
            prepend_thumbprint: None,
        }
    }

    /// `POST /encrypt` with the configured app/ref, salt and aad; `data` is b64u plaintext.
    ///
    /// # Errors
    /// Transport, auth, KER and response errors.
    pub async fn encrypt(&self, data_b64u: String) -> Result<String, KeymanagerError> {
        let request = self.crypto_request(data_b64u);
        let response: CryptomanagerResponse = self.post("encrypt", &request).await?;
        Ok(response.data)
    }

    /// `POST /decrypt` with the configured app/ref, salt and aad; `data` is b64u ciphertext.
    ///
    /// # Errors
    /// As [`KeymanagerClient::encrypt`].
    pub async fn decrypt(&self, data_b64u: String) -> Result<String, KeymanagerError> {
        let request = self.crypto_request(data_b64u);
        let response: CryptomanagerResponse = self.post("decrypt", &request).await?;
        Ok(response.data)
    }

    /// `POST /jwtSign` (JSON payloads).
    ///
    /// # Errors
    /// As [`KeymanagerClient::encrypt`].
    pub async fn jwt_sign(&self, request: &JwtSignRequest) -> Result<String, KeymanagerError> {
        let response: JwtSignResponse = self.post("jwtSign", request).await?;
        Ok(response.jwt_signed_data)
    }

    /// `POST /jwsSign` (any payload).
    ///
    /// # Errors
    /// As [`KeymanagerClient::encrypt`].
    pub async fn jws_sign(&self, request: &JwtSignRequest) -> Result<String, KeymanagerError> {
        let response: JwtSignResponse = self.post("jwsSign", request).await?;
        Ok(response.jwt_signed_data)
    }

    /// `POST /jwtVerify`.
    ///
    /// # Errors
    /// As [`KeymanagerClient::encrypt`].
    pub async fn jwt_verify(
        &self,
        request: &JwtVerifyRequest,
    ) -> Result<JwtVerifyResponse, KeymanagerError> {
        self.post("jwtVerify", request).await
    }

    /// `GET /getCertificate?applicationId=..&referenceId=..` (the current key's certificate).
    ///
    /// # Errors
    /// As [`KeymanagerClient::encrypt`].
    pub async fn get_certificate(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<KeyPairGenerateResponse, KeymanagerError> {
        self.get(
            "getCertificate",
            &[
                ("applicationId", application_id),
                ("referenceId", reference_id),
            ],
        )
        .await
    }

    /// `GET /getAllCertificates?applicationId=..&referenceId=..` (always both parameters).
    ///
    /// # Errors
    /// As [`KeymanagerClient::encrypt`].
    pub async fn get_all_certificates(
        &self,
        application_id: &str,
        reference_id: &str,
    ) -> Result<AllCertificatesResponse, KeymanagerError> {
        self.get(
            "getAllCertificates",
            &[
                ("applicationId", application_id),
                ("referenceId", reference_id),
            ],
        )
        .await
    }

    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        request: &Req,
    ) -> Result<Resp, KeymanagerError> {
        let url = self.inner.config.endpoint(endpoint);
        let body = serde_json::to_vec(&RequestWrapper::new(request)).map_err(|e| {
            KeymanagerError::InvalidResponse {
                url: url.to_string(),
                reason: format!("request could not be serialized: {e}"),
            }
        })?;
        self.call(endpoint, url, Method::Post(body)).await
    }

    async fn get<Resp: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        query: &[(&str, &str)],
    ) -> Result<Resp, KeymanagerError> {
        let url = self.inner.config.endpoint(endpoint);
        self.call(endpoint, url, Method::Get(query)).await
    }

    async fn call<Resp: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: Url,
        method: Method<'_>,
    ) -> Result<Resp, KeymanagerError> {
        let started = Instant::now();
        self.inner.counters.call();
        // Every endpoint this client calls is free of side effects, so all may be retried.
        let result = self
            .inner
            .guard
            .run(endpoint, url.as_str(), true, |timeout| {
                self.attempt(endpoint, &url, &method, timeout)
            })
            .await;
        metrics::counter!(
            "g2p_kms_calls_total",
            "endpoint" => endpoint,
            "outcome" => if result.is_ok() { "ok" } else { "error" }
        )
        .increment(1);
        metrics::histogram!("g2p_kms_call_duration_seconds", "endpoint" => endpoint)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// One attempt: a token, the request, and once more with a fresh token after a 401.
    async fn attempt<Resp: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        url: &Url,
        method: &Method<'_>,
        timeout: std::time::Duration,
    ) -> Result<Resp, Failed> {
        let mut retried = false;
        loop {
            let token = self.inner.tokens.token().await.map_err(Failed::Elsewhere)?;
            let (status, retry_after, body) = self.send(url, method, &token, timeout).await?;
            tracing::debug!(endpoint, status, bytes = body.len(), "keymanager answer");
            match decode_envelope::<Resp>(status, &body) {
                Ok(response) => return Ok(response),
                Err(EnvelopeError::Unauthorized(_)) if !retried => {
                    tracing::info!(
                        endpoint,
                        "keymanager answered 401; fetching a new token and retrying once"
                    );
                    self.inner.tokens.invalidate(&token);
                    retried = true;
                }
                Err(e) => return Err(envelope_error(url.as_str(), e, retry_after).into()),
            }
        }
    }

    async fn send(
        &self,
        url: &Url,
        method: &Method<'_>,
        token: &AccessToken,
        timeout: std::time::Duration,
    ) -> Result<(u16, Option<std::time::Duration>, Vec<u8>), KeymanagerError> {
        let cookie =
            HeaderValue::from_str(&format!("Authorization={}", token.secret())).map_err(|_| {
                KeymanagerError::InvalidResponse {
                    url: self.inner.config.auth_url.to_string(),
                    reason: "access token contains characters not allowed in a cookie".into(),
                }
            })?;
        let mut cookie = cookie;
        cookie.set_sensitive(true);
        let builder = match method {
            Method::Get(query) => self.inner.http.get(url.clone()).query(query),
            Method::Post(body) => self
                .inner
                .http
                .post(url.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone()),
        };
        let started = Instant::now();
        let mut response = builder
            .header(COOKIE, cookie)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(url.as_str(), &e, timeout))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(url.as_str(), &e, timeout))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(KeymanagerError::InvalidResponse {
                    url: url.to_string(),
                    reason: format!("answer larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        tracing::trace!(
            url = url.as_str(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        );
        Ok((status, retry_after, body))
    }
}

fn envelope_error(
    url: &str,
    error: EnvelopeError,
    retry_after: Option<std::time::Duration>,
) -> KeymanagerError {
    match error {
        EnvelopeError::Unauthorized(e) => KeymanagerError::Auth {
            url: url.into(),
            error: "HTTP 401 after a fresh token".into(),
            description: e.map(|e| e.to_string()),
        },
        EnvelopeError::Service(errors) => match errors.into_iter().next() {
            Some(e) => KeymanagerError::Keymanager {
                code: e.error_code,
                message: e.message,
            },
            None => KeymanagerError::InvalidResponse {
                url: url.into(),
                reason: "empty errors".into(),
            },
        },
        EnvelopeError::Forbidden(e) => KeymanagerError::HttpStatus {
            url: url.into(),
            status: 403,
            code: e.map(|e| e.to_string()),
            retry_after: None,
        },
        EnvelopeError::Status { status, error } => KeymanagerError::HttpStatus {
            url: url.into(),
            status,
            code: error.map(|e| e.to_string()),
            retry_after,
        },
        EnvelopeError::InvalidBody(reason) => KeymanagerError::InvalidResponse {
            url: url.into(),
            reason,
        },
        other => KeymanagerError::InvalidResponse {
            url: url.into(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use g2p_encryption::ProviderError as _;
    use g2p_mosip::{KerCode, ServiceError};

    #[test]
    fn envelope_errors_become_typed_errors() {
        let url = "http://km/v1/keymanager/decrypt";
        let e = envelope_error(
            url,
            EnvelopeError::Service(vec![ServiceError::new(KerCode::Fse004, "Tag mismatch")]),
            None,
        );
        assert!(matches!(&e, KeymanagerError::Keymanager { code, .. } if code == "KER-FSE-004"));
        assert_eq!(e.kind(), g2p_encryption::ErrorKind::Refused);
        let e = envelope_error(url, EnvelopeError::Unauthorized(None), None);
        assert_eq!(e.kind(), g2p_encryption::ErrorKind::Auth);
        let e = envelope_error(
            url,
            EnvelopeError::Status {
                status: 500,
                error: Some(ServiceError::new(KerCode::Kms500, "")),
            },
            None,
        );
        assert_eq!(
            e.to_string(),
            format!("{url} answered HTTP 500 (KER-KMS-500)")
        );
        let e = envelope_error(url, EnvelopeError::Forbidden(None), None);
        assert_eq!(e.kind(), g2p_encryption::ErrorKind::Auth);
        let e = envelope_error(url, EnvelopeError::InvalidBody("not JSON".into()), None);
        assert_eq!(e.kind(), g2p_encryption::ErrorKind::InvalidResponse);
        assert!(e.to_string().contains("not JSON"));
    }
}
