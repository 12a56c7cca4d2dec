//! OAuth2 client-credentials tokens (spec section 7).
//!
//! The token is cached until `expiry - skew` (UTC); under concurrency exactly one task
//! fetches while the others wait for its result; a 401 from the Keymanager invalidates the
//! token that was refused (and only that one).

use std::sync::Arc;
use std::time::Duration;

use g2p_encryption::b64;
use g2p_encryption::cache::Cached;
use g2p_encryption::clock::Clock;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use crate::error::{KeymanagerError, parse_retry_after, transport_error};
use crate::resilience::{CallCounters, Failed, Guard, GuardSettings, Resilience};

/// Lifetime assumed for a token that states none (no `expires_in`, no JWT `exp`).
const FALLBACK_LIFETIME: Duration = Duration::from_secs(60);
/// Longest lifetime believed, whatever the token endpoint says.
const MAX_LIFETIME: time::Duration = time::Duration::days(1);

/// An access token. `Debug` shows its expiry and subject, never the token.
#[derive(Clone)]
pub struct AccessToken {
    value: SecretString,
    expires_at: OffsetDateTime,
    refresh_at: OffsetDateTime,
    subject: Option<String>,
    scope: Option<String>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// The bearer value. Send it, never log it.
    pub fn secret(&self) -> &str {
        self.value.expose_secret()
    }

    /// When the auth server says the token expires (UTC).
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// The `preferred_username`, `sub` or `azp` claim, when the token is a readable JWT.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The granted scope, when the token endpoint states it.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// How long the token is used before a new one is fetched.
    fn fresh_for(&self, now: OffsetDateTime) -> Duration {
        Duration::try_from(self.refresh_at - now).unwrap_or(Duration::ZERO)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize, Default)]
struct Claims {
    exp: Option<f64>,
    preferred_username: Option<String>,
    sub: Option<String>,
    azp: Option<String>,
}

/// Reads the claims of a JWT without verifying it (the Keymanager verifies; we only need the
/// expiry and a name to show).
fn unverified_claims(token: &str) -> Claims {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(body), Some(_)) => b64::decode_lenient(body)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default(),
        _ => Claims::default(),
    }
}

fn expires_in_seconds(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Fetches and caches client-credentials tokens.
pub struct TokenManager {
    http: reqwest::Client,
    url: Url,
    client_id: String,
    client_secret: SecretString,
    grant_type: String,
    skew: Duration,
    current: Cached<AccessToken>,
    guard: Guard,
    counters: Arc<CallCounters>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("url", &self.url.as_str())
            .field("client_id", &self.client_id)
            .field("grant_type", &self.grant_type)
            .finish_non_exhaustive()
    }
}

/// Where a [`TokenManager`] gets its tokens. `Debug` shows no secret.
#[derive(Debug)]
pub struct TokenEndpoint {
    /// The token endpoint.
    pub url: Url,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: SecretString,
    /// Grant type, `client_credentials`.
    pub grant_type: String,
}

impl TokenManager {
    /// A manager for one client at one token endpoint; a token is used until `skew` before it
    /// expires on `clock`. Requests take at most `timeout` each and are retried, and guarded
    /// by a circuit breaker of their own, as `resilience` says; `counters` counts them.
    pub fn new(
        http: reqwest::Client,
        endpoint: TokenEndpoint,
        (skew, timeout): (Duration, Duration),
        clock: Clock,
        resilience: &Resilience,
        counters: Arc<CallCounters>,
    ) -> Self {
        let guard = Guard::new(
            GuardSettings {
                target: "token",
                url: endpoint.url.to_string(),
                retry: resilience.retry,
                breaker: resilience.breaker,
                max_in_flight: None,
                timeout,
            },
            counters.clone(),
        );
        TokenManager {
            http,
            url: endpoint.url,
            client_id: endpoint.client_id,
            client_secret: endpoint.client_secret,
            grant_type: endpoint.grant_type,
            skew,
            current: Cached::new(clock),
            guard,
            counters,
        }
    }

    /// Why token requests fail fast now, if they do (the token endpoint's circuit is open).
    pub fn unavailable(&self) -> Option<KeymanagerError> {
        self.guard.open_reason()
    }

    /// A valid token: the cached one, or a new one (one fetch at a time; callers that waited
    /// use it).
    ///
    /// # Errors
    /// [`KeymanagerError::Auth`] when the token endpoint refuses the client; transport,
    /// timeout and invalid-response errors otherwise.
    pub async fn token(&self) -> Result<Arc<AccessToken>, KeymanagerError> {
        self.current
            .get_or_fill(|| async {
                let token = self.fetch().await?;
                let fresh_for = token.fresh_for(self.now());
                Ok((token, fresh_for))
            })
            .await
    }

    /// Forgets `refused` if it is still the cached token, so the next call fetches anew. A
    /// token refreshed meanwhile by another task is kept.
    pub fn invalidate(&self, refused: &Arc<AccessToken>) {
        self.current.invalidate(refused);
    }

    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from(self.current.clock().system_time())
    }

    /// Asks the token endpoint for a new token (no caching), retrying what may be retried.
    ///
    /// # Errors
    /// As [`TokenManager::token`].
    pub async fn fetch(&self) -> Result<AccessToken, KeymanagerError> {
        self.guard
            .run("token", self.url.as_str(), true, |timeout| async move {
                self.counters.token_fetch();
                let result = self.fetch_once(timeout).await;
                metrics::counter!(
                    "g2p_token_fetches_total",
                    "outcome" => if result.is_ok() { "ok" } else { "error" }
                )
                .increment(1);
                result.map_err(Failed::Service)
            })
            .await
    }

    async fn fetch_once(&self, timeout: Duration) -> Result<AccessToken, KeymanagerError> {
        let url = self.url.as_str();
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("grant_type", self.grant_type.as_str()),
        ];
        let started = std::time::Instant::now();
        let response = self
            .http
            .post(self.url.clone())
            .form(&form)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport_error(url, &e, timeout))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(url, &e, timeout))?;
        tracing::debug!(
            url,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "token request"
        );
        if !status.is_success() {
            let oauth = serde_json::from_slice::<OAuthError>(&body).ok();
            let as_status = |code: Option<String>| KeymanagerError::HttpStatus {
                url: url.into(),
                status: status.as_u16(),
                code,
                retry_after,
            };
            // A server error or "slow down" is the endpoint's state, not a verdict on the
            // client (RFC 6749 `server_error`, `temporarily_unavailable`), whatever its body.
            return Err(match oauth {
                Some(e) if status.is_server_error() || status.as_u16() == 429 => {
                    as_status(Some(e.error))
                }
                Some(e) => KeymanagerError::Auth {
                    url: url.into(),
                    error: e.error,
                    description: e.error_description,
                },
                None => as_status(None),
            });
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| KeymanagerError::InvalidResponse {
                url: url.into(),
                reason: format!("token response is not JSON: {e}"),
            })?;
        let value = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KeymanagerError::InvalidResponse {
                url: url.into(),
                reason: "token response has no access_token".into(),
            })?;
        Ok(self.describe(value, parsed.expires_in.as_ref(), parsed.scope))
    }

    fn describe(
        &self,
        value: String,
        expires_in: Option<&serde_json::Value>,
        scope: Option<String>,
    ) -> AccessToken {
        let now = self.now();
        let claims = unverified_claims(&value);
        // Whatever the token endpoint says, a lifetime is taken as at most a day: an absurd
        // number must neither overflow the arithmetic nor keep a token for years.
        let clamp = |at: OffsetDateTime| at.min(now + MAX_LIFETIME);
        let expires_at = expires_in
            .and_then(expires_in_seconds)
            .map(|s| now.saturating_add(time::Duration::seconds(s)))
            .or_else(|| {
                claims
                    .exp
                    .filter(|exp| exp.is_finite())
                    .and_then(|exp| OffsetDateTime::from_unix_timestamp(exp as i64).ok())
            })
            .map(clamp)
            .unwrap_or_else(|| {
                tracing::warn!(
                    "token states no expiry (no expires_in, no exp claim); reusing it for {} s",
                    FALLBACK_LIFETIME.as_secs()
                );
                now + FALLBACK_LIFETIME
            });
        // Refresh `skew` before expiry, but never spend more than half a short lifetime on
        // the margin, so a 20-second token is still reused.
        let lifetime = (expires_at - now).max(time::Duration::ZERO);
        let skew = time::Duration::try_from(self.skew)
            .unwrap_or(time::Duration::ZERO)
            .min(lifetime / 2);
        AccessToken {
            value: SecretString::from(value),
            expires_at,
            refresh_at: expires_at - skew,
            subject: claims.preferred_username.or(claims.sub).or(claims.azp),
            scope,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(skew: u64) -> TokenManager {
        TokenManager::new(
            reqwest::Client::new(),
            TokenEndpoint {
                url: Url::parse("http://127.0.0.1:9/token").unwrap(),
                client_id: "c".into(),
                client_secret: SecretString::from("s".to_string()),
                grant_type: "client_credentials".into(),
            },
            (Duration::from_secs(skew), Duration::from_secs(1)),
            Clock::system(),
            &Resilience::default(),
            Arc::new(CallCounters::default()),
        )
    }

    fn is_fresh(token: &AccessToken, at: OffsetDateTime) -> bool {
        !token.fresh_for(at).is_zero()
    }

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.c2ln",
            b64::encode_b64u(br#"{"alg":"RS256"}"#),
            b64::encode_b64u(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn expiry_from_expires_in_then_exp() {
        let m = manager(30);
        let now = OffsetDateTime::now_utc();
        let exp = now.unix_timestamp() + 1000;
        let t = m.describe(
            jwt(serde_json::json!({"exp": exp, "preferred_username": "service-account-c"})),
            Some(&serde_json::json!(300)),
            None,
        );
        assert!(
            (t.expires_at() - now - time::Duration::seconds(300)).abs()
                < time::Duration::seconds(2)
        );
        assert_eq!(t.subject(), Some("service-account-c"));
        let t = m.describe(jwt(serde_json::json!({"exp": exp, "sub": "x"})), None, None);
        assert_eq!(t.expires_at().unix_timestamp(), exp);
        assert!(is_fresh(&t, now));
        assert!(!is_fresh(
            &t,
            OffsetDateTime::from_unix_timestamp(exp - 29).unwrap()
        ));
        // "expires_in" as a string is accepted too.
        let t = m.describe("opaque".into(), Some(&serde_json::json!("120")), None);
        assert!(t.expires_at() > now + time::Duration::seconds(100));
        assert_eq!(t.subject(), None);
    }

    #[test]
    fn short_lifetimes_keep_half_of_it() {
        let m = manager(30);
        let now = OffsetDateTime::now_utc();
        let t = m.describe("opaque".into(), Some(&serde_json::json!(20)), None);
        assert!(is_fresh(&t, now + time::Duration::seconds(5)));
        assert!(!is_fresh(&t, now + time::Duration::seconds(11)));
        let expired = m.describe(
            jwt(serde_json::json!({"exp": now.unix_timestamp() - 5})),
            None,
            None,
        );
        assert!(!is_fresh(&expired, now));
    }

    #[test]
    fn no_panic_from_a_token_response() {
        let m = manager(30);
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        for expires_in in [
            serde_json::json!(i64::MAX),
            serde_json::json!(u64::MAX),
            serde_json::json!(1e300),
            serde_json::json!(-5),
            serde_json::json!(i64::MIN),
            serde_json::json!("99999999999999999999"),
        ] {
            let t = m.describe("opaque".into(), Some(&expires_in), None);
            assert!(
                t.expires_at() <= now + day + time::Duration::seconds(1),
                "{expires_in}"
            );
        }
        for exp in [f64::MAX, f64::NAN, f64::INFINITY, -1e300] {
            let token = jwt(serde_json::json!({ "exp": exp }));
            let t = m.describe(token, None, None);
            assert!(
                t.expires_at() <= now + day + time::Duration::seconds(1),
                "{exp}"
            );
        }
    }

    #[tokio::test]
    async fn debug_and_invalidate() {
        let m = manager(30);
        let t = m
            .current
            .get_or_fill(|| async {
                let token =
                    m.describe("tok-123-secret".into(), Some(&serde_json::json!(300)), None);
                Ok::<_, KeymanagerError>((token, Duration::from_secs(270)))
            })
            .await
            .unwrap();
        assert!(!format!("{t:?}").contains("tok-123"));
        let other = Arc::new(m.describe("another".into(), Some(&serde_json::json!(300)), None));
        m.invalidate(&other);
        assert!(
            m.current.fresh().is_some(),
            "a different token must not evict the cached one"
        );
        m.invalidate(&t);
        assert!(m.current.fresh().is_none());
    }
}
