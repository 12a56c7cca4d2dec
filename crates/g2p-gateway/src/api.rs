//! The JSON bodies of the gateway's API. Binary values are base64url without padding (padded
//! or standard base64 is accepted on input).
//!
//! Each operation takes one request, or `{"items": [...]}` with many, answered in order by
//! `{"items": [...]}` where every item is its own result or its own [`ErrorBody`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// An error: a stable kind and a description naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind, e.g. `invalid_base64`, `refused`, `kms_unavailable`.
    pub error: String,
    /// What is wrong, for a person.
    pub description: String,
}

/// The errors every operation may answer besides its own (documentation only: the answers
/// themselves are [`crate::ApiError`]s).
#[derive(Debug, utoipa::IntoResponses)]
pub enum OperationErrors {
    /// Malformed request
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing or unknown API key
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The key lacks the operation's scope
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The body did not arrive in time
    #[response(status = 408)]
    BodyTimeout(ErrorBody),
    /// Body too large
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The provider is misconfigured (details in the log)
    #[response(status = 500)]
    Configuration(ErrorBody),
    /// The key manager failed
    #[response(status = 502)]
    KeyManager(ErrorBody),
    /// The key manager or the request timed out
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// `POST /v1/encrypt` and `POST /v1/decrypt`: bytes in, bytes out.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataRequest {
    /// base64url bytes: the plaintext to encrypt, or the ciphertext to decrypt.
    pub data: String,
    /// Provider name (default: the gateway's default provider).
    #[serde(default)]
    pub provider: Option<String>,
}

/// A batch of [`DataRequest`]s.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataBatchRequest {
    /// The requests, answered in order.
    pub items: Vec<DataRequest>,
    /// Provider for items that do not name one.
    #[serde(default)]
    pub provider: Option<String>,
}

/// One request or a batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DataBody {
    /// One request.
    One(DataRequest),
    /// A batch.
    Batch(DataBatchRequest),
}

/// The ciphertext of `encrypt` or the plaintext of `decrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DataResponse {
    /// base64url bytes.
    pub data: String,
}

/// One item of a batch answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DataItem {
    /// The item succeeded.
    Ok(DataResponse),
    /// The item failed.
    Err(ErrorBody),
}

/// A batch answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DataBatchResponse {
    /// One result per request item, in order.
    pub items: Vec<DataItem>,
}

/// One result or a batch of them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DataResult {
    /// One result.
    One(DataResponse),
    /// A batch.
    Batch(DataBatchResponse),
}

fn yes() -> bool {
    true
}

/// `POST /v1/sign`: a JSON document (`payload`) or text (`text`) to sign as a compact JWS
/// (RS256).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// A JSON document, signed as its compact serialization (key order kept).
    #[serde(default)]
    pub payload: Option<Value>,
    /// Text, signed as its UTF-8 bytes.
    #[serde(default)]
    pub text: Option<String>,
    /// Put the payload in the token (default) or leave it detached.
    #[serde(default = "yes")]
    pub include_payload: bool,
    /// Add the signing certificate as `x5c`.
    #[serde(default)]
    pub include_certificate: bool,
    /// Add the certificate's SHA-256 as `x5t#S256`.
    #[serde(default)]
    pub include_cert_hash: bool,
    /// Add `x5u` with this URL.
    #[serde(default)]
    pub certificate_url: Option<String>,
    /// Provider name.
    #[serde(default)]
    pub provider: Option<String>,
}

/// A batch of [`SignRequest`]s.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBatchRequest {
    /// The requests, answered in order.
    pub items: Vec<SignRequest>,
    /// Provider for items that do not name one.
    #[serde(default)]
    pub provider: Option<String>,
}

/// One request or a batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignBody {
    /// One request.
    One(SignRequest),
    /// A batch.
    Batch(SignBatchRequest),
}

/// A compact JWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignResponse {
    /// `header.payload.signature` (payload empty when detached).
    pub jws: String,
}

/// One item of a batch answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignItem {
    /// The item succeeded.
    Ok(SignResponse),
    /// The item failed.
    Err(ErrorBody),
}

/// A batch answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignBatchResponse {
    /// One result per request item, in order.
    pub items: Vec<SignItem>,
}

/// One result or a batch of them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignResult {
    /// One result.
    One(SignResponse),
    /// A batch.
    Batch(SignBatchResponse),
}

/// `POST /v1/verify`: a compact JWS; for a detached token, its payload as `payload` (JSON,
/// as signed by `/v1/sign`) or `text`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The compact JWS.
    pub jws: String,
    /// The detached payload, a JSON document.
    #[serde(default)]
    pub payload: Option<Value>,
    /// The detached payload, text.
    #[serde(default)]
    pub text: Option<String>,
    /// Provider name.
    #[serde(default)]
    pub provider: Option<String>,
}

/// A batch of [`VerifyRequest`]s.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBatchRequest {
    /// The requests, answered in order.
    pub items: Vec<VerifyRequest>,
    /// Provider for items that do not name one.
    #[serde(default)]
    pub provider: Option<String>,
}

/// One request or a batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyBody {
    /// One request.
    One(VerifyRequest),
    /// A batch.
    Batch(VerifyBatchRequest),
}

/// The verdict. A signature that does not verify is `valid: false` with a `reason`, not an
/// error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether the signature verifies against the provider's keys.
    pub valid: bool,
    /// The verified payload when it is a JSON document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The verified payload when it is text but not JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The verified payload as base64url when it is neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The key id the token was verified with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Why the signature was not accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One item of a batch answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyItem {
    /// The item was verified (valid or not).
    Ok(VerifyResponse),
    /// The item could not be checked.
    Err(ErrorBody),
}

/// A batch answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyBatchResponse {
    /// One result per request item, in order.
    pub items: Vec<VerifyItem>,
}

/// One result or a batch of them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VerifyResult {
    /// One result.
    One(VerifyResponse),
    /// A batch.
    Batch(VerifyBatchResponse),
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// The default provider (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Why the gateway is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One public key (RFC 7517), as the JWKS endpoint serves it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JwkDoc {
    /// Key type (`RSA`).
    pub kty: String,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `enc` or `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// RSA modulus, base64url.
    pub n: String,
    /// RSA exponent, base64url.
    pub e: String,
    /// Certificate chain, standard base64 DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// SHA-1 certificate thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    /// SHA-256 certificate thumbprint.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

/// `GET /.well-known/jwks.json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JwksDoc {
    /// The keys of every configured provider.
    pub keys: Vec<JwkDoc>,
}

impl crate::body::ProviderChoice for DataRequest {
    fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
}

impl crate::body::ProviderChoice for SignRequest {
    fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
}

impl crate::body::ProviderChoice for VerifyRequest {
    fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }
}
