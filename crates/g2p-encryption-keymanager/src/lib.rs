//! The Keymanager provider: an [`g2p_encryption::EncryptionProvider`] backed by a remote
//! MOSIP Keymanager, reached over REST with OAuth2 client-credentials tokens.
//!
//! * [`KeymanagerSettings`] / [`KeymanagerConfig`]: URLs, credentials, application and
//!   reference ids, salt and aad, modes, TLS (the `KEYMANAGER_*` environment, compatible with
//!   OpenG2P, is layered over a configuration file by `g2p-config`);
//! * [`TokenManager`]: cached tokens refreshed ahead of expiry, one fetch at a time;
//! * [`KeymanagerClient`]: one pooled HTTP client, the envelope decoded in one place, one
//!   retry after a 401;
//! * [`KeymanagerProvider`]: local sealing with the Keymanager's certificate (checked once
//!   per certificate by a remote decrypt), remote decryption and signing, local verification
//!   pinned to the Keymanager's own certificates, and the JWKS.
//!
//! ```no_run
//! # async fn demo() -> Result<(), g2p_encryption::Error> {
//! use g2p_encryption::EncryptionProvider;
//! use g2p_encryption_keymanager::{KeymanagerConfig, KeymanagerProvider};
//!
//! let mut settings = KeymanagerConfig::settings(
//!     "https://keymanager.example.org/v1/keymanager",
//!     "https://keycloak.example.org/realms/openg2p/protocol/openid-connect/token",
//!     "openg2p-admin-client",
//!     "client-secret",
//! );
//! settings.encrypt_application_id = Some("REGISTRATION".into());
//! let provider = KeymanagerProvider::new(settings.build()?)?;
//! let sealed = provider.encrypt(b"Alice, 12 Main St").await?;
//! assert_eq!(provider.decrypt(&sealed).await?, b"Alice, 12 Main St");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
pub mod config;
mod error;
mod provider;
pub mod resilience;
mod token;

pub use client::KeymanagerClient;
pub use config::{EncryptMode, KeymanagerConfig, KeymanagerSettings, VerifyMode};
pub use error::KeymanagerError;
pub use provider::{EncryptionPath, KeymanagerProvider};
pub use resilience::{BreakerPolicy, CallStats, Resilience, RetryPolicy};
pub use token::{AccessToken, TokenEndpoint, TokenManager};
