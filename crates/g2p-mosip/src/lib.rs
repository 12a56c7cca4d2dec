//! The MOSIP Keymanager protocol, pure and synchronous: request/response wrappers, one DTO
//! per endpoint, `KER-*` error codes and envelope decoding, MOSIP timestamps, `keyId`
//! derivation, and the hybrid ciphertext (modes A, B and C) with [`cipher::Sealer`] and
//! [`cipher::open`]. Client and embedded server both use this crate, so the protocol exists
//! once. Section numbers in the docs refer to `docs/mosip-keymanager-protocol.md`.
//!
//! ```
//! use g2p_mosip::key_id::key_id;
//! use time::macros::date;
//!
//! assert_eq!(
//!     key_id("REGISTRATION", "ENCRYPT", date!(2024 - 01 - 15)),
//!     "XicV4GvqGP_YMZkAoJyZUUzamq05PeBHdBAG_Ph4GsU"
//! );
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cipher;
pub mod dto;
pub mod envelope;
pub mod error;
pub mod key_id;
pub mod timestamp;

pub use envelope::{IncomingRequest, RequestWrapper, ResponseWrapper, decode_envelope};
pub use error::{EnvelopeError, KerClass, KerCode, ServiceError};
