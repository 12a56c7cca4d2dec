//! The `[gateway]` table of the configuration file: address, limits, timeouts and API keys.
//!
//! ```toml
//! [gateway]
//! listen = "127.0.0.1:8080"
//! batch_limit = 1000
//!
//! [[gateway.api_keys]]
//! name = "openspp"
//! hash = "sha256:0b5f8a39b158015d37a449fc7bc8449abec5422d238b25744722ded3d8c405dc"
//! scopes = ["encrypt", "decrypt", "sign", "verify"]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::GatewayOptions;
use crate::auth::{ApiKey, ApiKeys};

/// The gateway's default address: loopback only.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// `[gateway]`, unvalidated.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: Option<SocketAddr>,
    /// Largest request body, bytes (default 4 MiB).
    pub body_limit: Option<usize>,
    /// Most items in one batch (default 1000).
    pub batch_limit: Option<usize>,
    /// Items of a batch processed at once (default 16).
    pub batch_concurrency: Option<usize>,
    /// Longest a request may take, seconds (default 30).
    pub request_timeout: Option<f64>,
    /// `Cache-Control: max-age` of the JWKS, seconds (default 300).
    pub jwks_max_age: Option<u64>,
    /// Seconds the gateway reuses the JWKS it built (default 5).
    pub jwks_refresh: Option<u64>,
    /// API keys, stored as hashes (`g2p-keymanager api-key new` makes one).
    #[serde(default)]
    pub api_keys: Vec<ApiKeySettings>,
    /// `[gateway.tls]`: read by the command that serves the gateway.
    #[serde(default)]
    pub tls: Option<serde::de::IgnoredAny>,
}

/// `[[gateway.api_keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// A name for logs, e.g. the calling application.
    pub name: String,
    /// `sha256:<64 hex>` of the key.
    pub hash: String,
    /// What the key may do: `encrypt`, `decrypt`, `sign`, `verify`.
    pub scopes: Vec<String>,
}

impl GatewaySettings {
    /// The address to listen on: `given` (a command-line flag), else the table's, else
    /// [`DEFAULT_LISTEN`].
    pub fn listen(&self, given: Option<SocketAddr>) -> SocketAddr {
        given.or(self.listen).unwrap_or(DEFAULT_LISTEN)
    }

    /// The gateway's options.
    ///
    /// # Errors
    /// A message naming a timeout that is not a positive number of seconds.
    pub fn options(&self) -> Result<GatewayOptions, String> {
        let defaults = GatewayOptions::default();
        let request_timeout = match self.request_timeout {
            Some(t) if t > 0.0 && Duration::try_from_secs_f64(t).is_ok() => {
                Duration::from_secs_f64(t)
            }
            Some(t) => {
                return Err(format!(
                    "gateway.request_timeout must be a positive number of seconds, not {t}"
                ));
            }
            None => defaults.request_timeout,
        };
        Ok(GatewayOptions {
            body_limit: self.body_limit.unwrap_or(defaults.body_limit),
            batch_limit: self.batch_limit.unwrap_or(defaults.batch_limit),
            batch_concurrency: self.batch_concurrency.unwrap_or(defaults.batch_concurrency),
            request_timeout,
            jwks_max_age: self
                .jwks_max_age
                .map_or(defaults.jwks_max_age, Duration::from_secs),
            jwks_refresh: self
                .jwks_refresh
                .map_or(defaults.jwks_refresh, Duration::from_secs),
        })
    }

    /// The configured API keys.
    ///
    /// # Errors
    /// A message naming a key whose hash or scopes are wrong, or whose hash another key has.
    pub fn api_keys(&self) -> Result<ApiKeys, String> {
        let keys = self
            .api_keys
            .iter()
            .map(|k| ApiKey::from_hash(&k.name, &k.hash, &k.scopes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("gateway.api_keys: {e}"))?;
        let keys = ApiKeys::new(keys);
        if let Some(name) = keys.duplicate() {
            return Err(format!(
                "gateway.api_keys: the key {name:?} has the same hash as another one; give each application its own key"
            ));
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_keys_and_their_errors() {
        let table = GatewaySettings {
            batch_limit: Some(5),
            request_timeout: Some(2.5),
            ..GatewaySettings::default()
        };
        let options = table.options().unwrap();
        assert_eq!(options.batch_limit, 5);
        assert_eq!(options.request_timeout.as_millis(), 2500);
        assert_eq!(options.body_limit, GatewayOptions::default().body_limit);
        assert_eq!(table.listen(None), DEFAULT_LISTEN);
        for bad in [-1.0, 1e20, f64::NAN, 0.0] {
            let table = GatewaySettings {
                request_timeout: Some(bad),
                ..GatewaySettings::default()
            };
            let e = table.options().unwrap_err();
            assert!(e.contains("request_timeout"), "{bad}: {e}");
        }
        let hash = crate::hash_key("k");
        let key = |name: &str, scope: &str| ApiKeySettings {
            name: name.into(),
            hash: hash.clone(),
            scopes: vec![scope.into()],
        };
        let twice = GatewaySettings {
            api_keys: vec![key("a", "encrypt"), key("b", "decrypt")],
            ..GatewaySettings::default()
        };
        let e = twice.api_keys().unwrap_err();
        assert!(e.contains("\"b\""), "{e}");
    }
}
