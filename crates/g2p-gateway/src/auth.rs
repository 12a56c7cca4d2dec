//! API keys: callers present `Authorization: Bearer <key>`; the gateway keeps only the
//! SHA-256 of each key, with the scopes it grants. With no key configured, only loopback
//! clients are served.

use std::fmt;
use std::net::SocketAddr;

use aws_lc_rs::digest;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::GatewayState;
use crate::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /v1/encrypt`.
    Encrypt,
    /// `POST /v1/decrypt`.
    Decrypt,
    /// `POST /v1/sign`.
    Sign,
    /// `POST /v1/verify`.
    Verify,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Encrypt, Scope::Decrypt, Scope::Sign, Scope::Verify];

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Encrypt => "encrypt",
            Scope::Decrypt => "decrypt",
            Scope::Sign => "sign",
            Scope::Verify => "verify",
        }
    }

    /// Parses a scope name.
    ///
    /// # Errors
    /// A message naming the unknown scope and the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name.trim())
            .ok_or_else(|| {
                format!("unknown scope {name:?} (known: encrypt, decrypt, sign, verify)")
            })
    }
}

/// One configured key: a name for logs, the SHA-256 of the secret, and its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    name: String,
    sha256: [u8; 32],
    scopes: Vec<Scope>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of a key, as configured: `sha256:` followed by 64 hex digits.
pub fn hash_key(secret: &str) -> String {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    format!("sha256:{}", hex::encode(d.as_ref()))
}

impl ApiKey {
    /// A key from its configured hash (`sha256:<64 hex>`).
    ///
    /// # Errors
    /// A message naming what is wrong with the hash or the scopes.
    pub fn from_hash(name: &str, hash: &str, scopes: &[String]) -> Result<Self, String> {
        let digits = hash.strip_prefix("sha256:").ok_or_else(|| {
            format!(
                "API key {name:?}: hash must start with \"sha256:\" (store the hash, not the key)"
            )
        })?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(digits, &mut sha256).map_err(|_| {
            format!("API key {name:?}: hash must be 64 hex digits after \"sha256:\"")
        })?;
        if scopes.is_empty() {
            return Err(format!("API key {name:?}: no scopes"));
        }
        let scopes = scopes
            .iter()
            .map(|s| Scope::parse(s).map_err(|e| format!("API key {name:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApiKey {
            name: name.to_string(),
            sha256,
            scopes,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

impl ApiKeys {
    /// No keys: loopback clients only.
    pub fn none() -> Self {
        Self::default()
    }

    /// These keys.
    pub fn new(keys: Vec<ApiKey>) -> Self {
        ApiKeys { keys }
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The name of a key configured twice (same hash), if any: the scopes would be ambiguous.
    pub fn duplicate(&self) -> Option<&str> {
        self.keys.iter().enumerate().find_map(|(i, k)| {
            self.keys[..i]
                .iter()
                .any(|other| other.sha256 == k.sha256)
                .then_some(k.name.as_str())
        })
    }

    fn find(&self, presented: &str) -> Option<&ApiKey> {
        let d = digest::digest(&digest::SHA256, presented.as_bytes());
        // Every key is compared, in constant time, so timing says nothing about which matched.
        let mut found = None;
        for key in &self.keys {
            if aws_lc_rs::constant_time::verify_slices_are_equal(&key.sha256, d.as_ref()).is_ok() {
                found = Some(key);
            }
        }
        found
    }
}

/// Who is calling: a key (with its scopes) or a loopback client when no key is configured.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authenticated by an API key.
    Key(ApiKey),
    /// No keys are configured and the client is on the loopback interface.
    Loopback,
}

impl Caller {
    /// The caller's name for logs.
    pub fn name(&self) -> &str {
        match self {
            Caller::Key(k) => &k.name,
            Caller::Loopback => "loopback",
        }
    }

    /// Checks that the caller may use `scope`.
    ///
    /// # Errors
    /// 403 `forbidden` naming the missing scope.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        match self {
            Caller::Loopback => Ok(()),
            Caller::Key(k) if k.scopes.contains(&scope) => Ok(()),
            Caller::Key(k) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "API key {:?} does not have the {:?} scope",
                    k.name,
                    scope.as_str()
                ),
            )),
        }
    }
}

fn unauthorized(description: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", description)
}

impl FromRequestParts<GatewayState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        let keys = state.api_keys();
        if keys.is_empty() {
            let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|c| c.0);
            // A proxy on this machine would make every remote client look local: a request
            // that says it was forwarded is not a loopback client's.
            let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
                .iter()
                .any(|h| parts.headers.contains_key(*h));
            tracing::Span::current().record("caller", "loopback");
            return match peer {
                Some(peer) if peer.ip().to_canonical().is_loopback() && !forwarded => {
                    Ok(Caller::Loopback)
                }
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "no API keys are configured, so only loopback clients are served (forwarded requests are refused)",
                )),
            };
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <API key>"))?;
        let value = header
            .to_str()
            .map_err(|_| unauthorized("Authorization header is not text"))?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer <API key>\""))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized("Authorization must be \"Bearer <API key>\""));
        }
        let caller = keys
            .find(token.trim())
            .cloned()
            .map(Caller::Key)
            .ok_or_else(|| unauthorized("unknown API key"))?;
        tracing::Span::current().record("caller", caller.name());
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_scopes() {
        let hash = hash_key("s3cret");
        assert_eq!(hash.len(), 7 + 64);
        let key = ApiKey::from_hash("odoo", &hash, &["encrypt".into(), "verify".into()]).unwrap();
        let keys = ApiKeys::new(vec![key]);
        let found = keys.find("s3cret").unwrap();
        assert_eq!(found.name(), "odoo");
        assert!(keys.find("s3cret ").is_none() && keys.find("other").is_none());
        let caller = Caller::Key(found.clone());
        assert!(caller.require(Scope::Encrypt).is_ok());
        let e = caller.require(Scope::Decrypt).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.description.contains("decrypt"), "{}", e.description);
        assert!(
            !format!("{found:?}").contains(&hash[7..]),
            "Debug shows the hash"
        );
    }

    #[test]
    fn bad_configuration_is_named() {
        let e = ApiKey::from_hash("k", "plainkey", &["encrypt".into()]).unwrap_err();
        assert!(e.contains("sha256:"), "{e}");
        let e = ApiKey::from_hash("k", "sha256:zz", &["encrypt".into()]).unwrap_err();
        assert!(e.contains("64 hex"), "{e}");
        let e = ApiKey::from_hash("k", &hash_key("x"), &["admin".into()]).unwrap_err();
        assert!(e.contains("admin"), "{e}");
        let e = ApiKey::from_hash("k", &hash_key("x"), &[]).unwrap_err();
        assert!(e.contains("no scopes"), "{e}");
    }
}
