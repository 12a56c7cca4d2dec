//! The base of g2p-keymanager: what every encryption provider shares.
//!
//! * [`EncryptionProvider`]: the object-safe async trait a service holds as
//!   `Arc<dyn EncryptionProvider>` to encrypt, decrypt, sign (JWS) and verify without ever
//!   holding private keys;
//! * [`jws`]: a compact-JWS codec (parse into [`jws::UnverifiedJws`], verify against a
//!   [`JwkSet`] into [`jws::VerifiedJws`]; RS256 and PS256 only);
//! * [`Jwk`] / [`JwkSet`] built from X.509 certificates, and [`cert::CertificateInfo`];
//! * [`b64`]: base64url helpers, lenient on input the way the MOSIP Keymanager is;
//! * [`ProviderRegistry`]: named providers with one default;
//! * [`cache::Cached`]: an expiring value filled by one caller at a time, on a
//!   [`clock::Clock`] that tests can move;
//! * [`files`]: files written whole or not at all, private to their owner;
//! * [`deadline`]: the caller's deadline, carried with the task;
//! * one [`Error`] type.
//!
//! ```
//! use g2p_encryption::{b64, SignPayload};
//!
//! let text = SignPayload::Text("hello".into());
//! assert_eq!(b64::encode_b64u(&text.to_bytes()), "aGVsbG8");
//! assert_eq!(b64::decode_lenient("aGVsbG8=").unwrap(), b"hello");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod b64;
pub mod cache;
pub mod ceiling;
pub mod cert;
pub mod clock;
pub mod deadline;
mod error;
pub mod files;
pub mod jwk;
pub mod jws;
mod provider;
mod registry;

pub use error::{Error, ErrorKind, ProviderError, Result, SignatureError};
pub use jwk::{Jwk, JwkSet, KeyUse};
pub use jws::{Alg, JwsHeader, UnverifiedJws, VerifiedJws};
pub use provider::{CallCounts, EncryptionProvider, KeyPairs, SignOptions, SignPayload};
pub use registry::ProviderRegistry;
