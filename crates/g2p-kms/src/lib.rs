//! The embedded key manager of g2p-keymanager.
//!
//! * [`KeyStore`]: SQLite in a data directory, or PostgreSQL shared by replicas
//!   ([`store::Backend`]); ROOT → master key per application → base keys
//!   per application/reference (spec section 6), private keys wrapped under a key-encryption
//!   key ([`Kek`]), lazy rotation, old keys kept for decryption;
//! * [`Kms`]: the operations (encrypt, decrypt, jwtSign, jwtVerify, certificates);
//! * [`LocalProvider`]: the `EncryptionProvider` over it, in process — the embedded default;
//! * [`server`]: the MOSIP Keymanager REST API and a Keycloak-compatible token endpoint, so an
//!   OpenG2P deployment (or `KeymanagerProvider`) can use it unchanged.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backup;
mod error;
pub mod kek;
pub mod keyfile;
mod kms;
mod local;
pub mod migrate;
pub mod pkcs11;
pub mod policy;
pub mod server;
pub mod settings;
pub mod store;

pub use error::KmsError;
pub use kek::Kek;
pub use kms::{Kms, SignSpec};
pub use local::{LocalProvider, LocalProviderSettings, LocalSettings};
pub use policy::{KeyPolicy, Policies};
pub use settings::{ClientSettings, KmsSettings};
pub use store::{CsrSubject, KeyKind, KeyRecord, KeyStore, Minting, StoreOptions};
