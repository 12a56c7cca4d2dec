//! The routes: each extracts, calls a provider and maps errors.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use g2p_encryption::{EncryptionProvider, Error, ErrorKind, JwkSet, SignOptions, SignPayload, b64};
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroize;

use crate::GatewayState;
use crate::api::{
    DataBatchResponse, DataBody, DataItem, DataRequest, DataResponse, DataResult, ErrorBody,
    Health, JwksDoc, SignBatchResponse, SignBody, SignItem, SignRequest, SignResponse, SignResult,
    VerifyBatchResponse, VerifyBody, VerifyItem, VerifyRequest, VerifyResponse, VerifyResult,
};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::observe::{prometheus, record_batch, record_operation};

/// The raw body, with a too-large body answered as 413 in our error format.
pub struct Body(Bytes);

impl FromRequest<GatewayState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &GatewayState) -> Result<Self, ApiError> {
        let limit = state.options().body_limit;
        // A body that trickles in is the client's problem (408), not a key manager's (504):
        // it gets half the request's time.
        let patience = state.options().request_timeout / 2;
        tokio::time::timeout(patience, Bytes::from_request(request, state))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("the body did not arrive within {} ms", patience.as_millis()),
                )
            })?
            .map(Body)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body is larger than the limit of {limit} bytes"),
                    )
                } else {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("the body could not be read: {rejection}"),
                    )
                }
            })
    }
}

/// A body: one request, or a batch of raw items (each parsed on its own, so one malformed
/// item fails alone).
enum Parsed<T> {
    One(T),
    Batch {
        items: Vec<Value>,
        provider: Option<String>,
    },
}

fn parse<T: DeserializeOwned>(body: &[u8], batch_limit: usize) -> Result<Parsed<T>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    match value {
        Value::Object(mut map) if map.contains_key("items") => {
            let items = match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        "items must be an array of requests",
                    ));
                }
            };
            let provider = match map.remove("provider") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => Some(name),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        "provider must be a string",
                    ));
                }
            };
            if let Some(field) = map.keys().next() {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("unknown field {field:?} in a batch (expected items, provider)"),
                ));
            }
            if items.len() > batch_limit {
                return Err(ApiError::bad_request(
                    "batch_too_large",
                    format!(
                        "the batch has {} items; the limit is {batch_limit}",
                        items.len()
                    ),
                ));
            }
            Ok(Parsed::Batch { items, provider })
        }
        value @ Value::Object(_) => T::deserialize(value)
            .map(Parsed::One)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string())),
        _ => Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        )),
    }
}

fn item<T: DeserializeOwned>(index: usize, value: Value) -> Result<T, ApiError> {
    T::deserialize(value)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("items[{index}]: {e}")))
}

/// Runs `op` over the items, concurrently (bounded), answering in order.
async fn run_batch<T, R, F, Fut>(
    state: &GatewayState,
    operation: &'static str,
    items: Vec<Value>,
    op: F,
) -> Vec<Result<R, ApiError>>
where
    T: DeserializeOwned,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, ApiError>>,
{
    record_batch(operation, items.len());
    let op = &op;
    // Items still running near the end of the request's time answer `timeout` on their own,
    // so the items that finished are not lost to a timeout of the whole request.
    let timeout = state.options().request_timeout;
    let deadline = tokio::time::Instant::now() + timeout.mul_f64(0.9);
    futures_util::stream::iter(items.into_iter().enumerate().map(|(i, value)| async move {
        let request = item::<T>(i, value)?;
        tokio::time::timeout_at(deadline, op(request))
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "items[{i}] did not complete within the request's {} ms",
                        timeout.as_millis()
                    ),
                ))
            })
    }))
    .buffered(state.options().batch_concurrency)
    .collect()
    .await
}

fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    b64::decode_lenient(value).map_err(|e| {
        ApiError::bad_request("invalid_base64", format!("{field} is not base64url: {e}"))
    })
}

/// The provider for a request: the item's, else the batch's, else the default.
fn provider_for(
    state: &GatewayState,
    own: Option<&str>,
    batch: Option<&str>,
) -> Result<(String, Arc<dyn EncryptionProvider>), ApiError> {
    let requested = own.or(batch);
    let registry = state.registry();
    let provider = registry
        .get(requested)
        .map_err(|e| ApiError::from_provider(&e, requested.unwrap_or("default")))?;
    let name = requested
        .or(registry.default_name())
        .unwrap_or("default")
        .to_string();
    Ok((name, provider))
}

fn finish<T>(
    operation: &'static str,
    provider: &str,
    started: Instant,
    result: Result<T, Error>,
) -> Result<T, ApiError> {
    let result = result.map_err(|e| ApiError::from_provider(&e, provider));
    record_operation(
        operation,
        provider,
        started.elapsed(),
        result.as_ref().err().map(|e| e.kind),
    );
    result
}

async fn encrypt_one(
    state: &GatewayState,
    batch_provider: Option<&str>,
    request: DataRequest,
) -> Result<DataResponse, ApiError> {
    let (name, provider) = provider_for(state, request.provider.as_deref(), batch_provider)?;
    let mut plaintext = decode_b64("data", &request.data)?;
    let started = Instant::now();
    let result = provider.encrypt(&plaintext).await;
    plaintext.zeroize();
    let ciphertext = finish("encrypt", &name, started, result)?;
    Ok(DataResponse {
        data: b64::encode_b64u(&ciphertext),
    })
}

async fn decrypt_one(
    state: &GatewayState,
    batch_provider: Option<&str>,
    request: DataRequest,
) -> Result<DataResponse, ApiError> {
    let (name, provider) = provider_for(state, request.provider.as_deref(), batch_provider)?;
    let ciphertext = decode_b64("data", &request.data)?;
    let started = Instant::now();
    let result = provider.decrypt(&ciphertext).await;
    let mut plaintext = finish("decrypt", &name, started, result)?;
    let data = b64::encode_b64u(&plaintext);
    plaintext.zeroize();
    Ok(DataResponse { data })
}

async fn sign_one(
    state: &GatewayState,
    batch_provider: Option<&str>,
    request: SignRequest,
) -> Result<SignResponse, ApiError> {
    let (name, provider) = provider_for(state, request.provider.as_deref(), batch_provider)?;
    let payload = match (request.payload, request.text) {
        (Some(value), None) => SignPayload::Json(value),
        (None, Some(text)) => SignPayload::Text(text),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either payload (JSON) or text, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "nothing to sign: give payload (JSON) or text",
            ));
        }
    };
    let options = SignOptions {
        include_payload: request.include_payload,
        include_certificate: request.include_certificate,
        include_cert_hash: request.include_cert_hash,
        certificate_url: request.certificate_url,
    };
    let started = Instant::now();
    let result = provider.jwt_sign(&payload, &options).await;
    let jws = finish("sign", &name, started, result)?;
    Ok(SignResponse { jws })
}

fn render_payload(bytes: &[u8], response: &mut VerifyResponse) {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        response.payload = Some(value);
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        response.text = Some(text.to_string());
    } else {
        response.data = Some(b64::encode_b64u(bytes));
    }
}

async fn verify_one(
    state: &GatewayState,
    batch_provider: Option<&str>,
    request: VerifyRequest,
) -> Result<VerifyResponse, ApiError> {
    let (name, provider) = provider_for(state, request.provider.as_deref(), batch_provider)?;
    let detached = match (request.payload, request.text) {
        (Some(value), None) => Some(serde_json::to_vec(&value).unwrap_or_default()),
        (None, Some(text)) => Some(text.into_bytes()),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either payload (JSON) or text as the detached payload, not both",
            ));
        }
    };
    let started = Instant::now();
    let result = provider.jwt_verify(&request.jws, detached.as_deref()).await;
    let mut response = VerifyResponse {
        valid: false,
        payload: None,
        text: None,
        data: None,
        kid: None,
        reason: None,
    };
    match result {
        // Whatever refused the token (our own check, or the key manager's verdict or KER
        // code in remote mode), the answer has the same shape.
        Err(e) if e.kind() == ErrorKind::Refused => {
            record_operation("verify", &name, started.elapsed(), None);
            metrics::counter!("g2p_gateway_signatures_rejected_total").increment(1);
            response.reason = Some(match e {
                Error::InvalidSignature(reason) => reason.to_string(),
                other => other.to_string(),
            });
            Ok(response)
        }
        other => {
            let verified = finish("verify", &name, started, other)?;
            response.valid = true;
            response.kid = verified.key_id().map(str::to_string);
            render_payload(verified.payload(), &mut response);
            Ok(response)
        }
    }
}

fn item_or_error<T, I>(result: Result<T, ApiError>, ok: fn(T) -> I, err: fn(ErrorBody) -> I) -> I {
    match result {
        Ok(value) => ok(value),
        Err(e) => err(e.body()),
    }
}

/// Encrypts bytes with the provider's current encryption key.
#[utoipa::path(
    post, path = "/v1/encrypt", tag = "crypto",
    request_body = DataBody,
    responses(
        (status = 200, description = "The ciphertext (MOSIP format), or one result per batch item", body = DataResult),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the encrypt scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The key manager refused the data", body = ErrorBody),
        (status = 500, description = "The provider is misconfigured (details in the log)", body = ErrorBody),
        (status = 502, description = "The key manager failed", body = ErrorBody),
        (status = 504, description = "The key manager or the request timed out", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn encrypt(
    State(state): State<GatewayState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Encrypt)?;
    match parse::<DataRequest>(&body, state.options().batch_limit)? {
        Parsed::One(request) => Ok(Json(encrypt_one(&state, None, request).await?).into_response()),
        Parsed::Batch { items, provider } => {
            let results = run_batch(&state, "encrypt", items, |request| {
                encrypt_one(&state, provider.as_deref(), request)
            })
            .await;
            let items = results
                .into_iter()
                .map(|r| item_or_error(r, DataItem::Ok, DataItem::Err))
                .collect();
            Ok(Json(DataBatchResponse { items }).into_response())
        }
    }
}

/// Decrypts a ciphertext.
#[utoipa::path(
    post, path = "/v1/decrypt", tag = "crypto",
    request_body = DataBody,
    responses(
        (status = 200, description = "The plaintext, or one result per batch item", body = DataResult),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the decrypt scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The ciphertext does not decrypt", body = ErrorBody),
        (status = 500, description = "The provider is misconfigured (details in the log)", body = ErrorBody),
        (status = 502, description = "The key manager failed", body = ErrorBody),
        (status = 504, description = "The key manager or the request timed out", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn decrypt(
    State(state): State<GatewayState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Decrypt)?;
    match parse::<DataRequest>(&body, state.options().batch_limit)? {
        Parsed::One(request) => Ok(Json(decrypt_one(&state, None, request).await?).into_response()),
        Parsed::Batch { items, provider } => {
            let results = run_batch(&state, "decrypt", items, |request| {
                decrypt_one(&state, provider.as_deref(), request)
            })
            .await;
            let items = results
                .into_iter()
                .map(|r| item_or_error(r, DataItem::Ok, DataItem::Err))
                .collect();
            Ok(Json(DataBatchResponse { items }).into_response())
        }
    }
}

/// Signs a JSON document or text as a compact JWS (RS256).
#[utoipa::path(
    post, path = "/v1/sign", tag = "jws",
    request_body = SignBody,
    responses(
        (status = 200, description = "The compact JWS, or one result per batch item", body = SignResult),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the sign scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The key manager refused the data", body = ErrorBody),
        (status = 500, description = "The provider is misconfigured (details in the log)", body = ErrorBody),
        (status = 502, description = "The key manager failed", body = ErrorBody),
        (status = 504, description = "The key manager or the request timed out", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn sign(
    State(state): State<GatewayState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Sign)?;
    match parse::<SignRequest>(&body, state.options().batch_limit)? {
        Parsed::One(request) => Ok(Json(sign_one(&state, None, request).await?).into_response()),
        Parsed::Batch { items, provider } => {
            let results = run_batch(&state, "sign", items, |request| {
                sign_one(&state, provider.as_deref(), request)
            })
            .await;
            let items = results
                .into_iter()
                .map(|r| item_or_error(r, SignItem::Ok, SignItem::Err))
                .collect();
            Ok(Json(SignBatchResponse { items }).into_response())
        }
    }
}

/// Verifies a compact JWS against the provider's signing keys.
#[utoipa::path(
    post, path = "/v1/verify", tag = "jws",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The verdict (valid or not), or one per batch item", body = VerifyResult),
        (status = 400, description = "Malformed request or token", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks the verify scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 500, description = "The provider is misconfigured (details in the log)", body = ErrorBody),
        (status = 502, description = "The key manager failed", body = ErrorBody),
        (status = 504, description = "The key manager or the request timed out", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn verify(
    State(state): State<GatewayState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Verify)?;
    match parse::<VerifyRequest>(&body, state.options().batch_limit)? {
        Parsed::One(request) => Ok(Json(verify_one(&state, None, request).await?).into_response()),
        Parsed::Batch { items, provider } => {
            let results = run_batch(&state, "verify", items, |request| {
                verify_one(&state, provider.as_deref(), request)
            })
            .await;
            let items = results
                .into_iter()
                .map(|r| item_or_error(r, VerifyItem::Ok, VerifyItem::Err))
                .collect();
            Ok(Json(VerifyBatchResponse { items }).into_response())
        }
    }
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The public keys of every configured provider (encryption and signature).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "keys",
    responses(
        (status = 200, description = "The JWK set", body = JwksDoc, content_type = "application/jwk-set+json"),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 500, description = "A provider is misconfigured (details in the log)", body = ErrorBody),
        (status = 502, description = "A provider's key manager failed", body = ErrorBody),
        (status = 504, description = "A provider's key manager or the request timed out", body = ErrorBody),
    )
)]
pub async fn jwks(
    State(state): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (body, etag) = match state.cached_jwks() {
        Some(cached) => cached,
        None => {
            let fresh = jwks_document(&state).await?;
            state.cache_jwks(fresh.clone());
            fresh
        }
    };
    let cache_control = format!("public, max-age={}", state.options().jwks_max_age.as_secs());
    let mut response = if etag_matches(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = body.into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    if let Ok(value) = HeaderValue::from_str(&cache_control) {
        headers.insert(CACHE_CONTROL, value);
    }
    Ok(response)
}

/// The JWKS body of every provider, and its ETag.
async fn jwks_document(state: &GatewayState) -> Result<(Bytes, String), ApiError> {
    let registry = state.registry();
    let mut set = JwkSet::default();
    for name in registry.names() {
        let provider = registry
            .get(Some(name))
            .map_err(|e| ApiError::from_provider(&e, name))?;
        let started = Instant::now();
        let keys = finish("jwks", name, started, provider.jwks().await)?;
        for key in keys.keys {
            let duplicate = set
                .keys
                .iter()
                .any(|k| k.kid == key.kid && k.n == key.n && k.key_use == key.key_use);
            if !duplicate {
                set.keys.push(key);
            }
        }
    }
    let body = serde_json::to_vec(&set).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    })?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
    let etag = format!("\"{}\"", b64::encode_b64u(&digest.as_ref()[..18]));
    Ok((Bytes::from(body), etag))
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        provider: None,
        reason: None,
    })
}

/// Readiness: the default provider can serve (its key manager is reachable and a token is
/// obtainable).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready, with the reason (the key manager failed or did not answer within half the request timeout)", body = Health),
    ))]
pub async fn readyz(State(state): State<GatewayState>) -> Response {
    let registry = state.registry();
    let name = registry.default_name().unwrap_or("default").to_string();
    // Answer 503 (not the request timeout's 504) when the key manager hangs.
    let limit = state.options().request_timeout.mul_f64(0.5);
    let result = match registry.get(None) {
        Ok(provider) => match tokio::time::timeout(limit, provider.ready()).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(provider = %name, "not ready: no answer in time");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(Health {
                        status: "unavailable".into(),
                        provider: Some(name),
                        reason: Some(format!(
                            "kms_timeout: the key manager did not answer within {} ms",
                            limit.as_millis()
                        )),
                    }),
                )
                    .into_response();
            }
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Json(Health {
            status: "ready".into(),
            provider: Some(name),
            reason: None,
        })
        .into_response(),
        Err(e) => {
            let api = ApiError::from_provider(&e, &name);
            tracing::warn!(provider = %name, error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                    provider: Some(name),
                    reason: Some(format!("{}: {}", api.kind, api.description)),
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics_text() -> Response {
    let text = prometheus().map(|h| h.render()).unwrap_or_default();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI document", body = Object)))]
pub async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

/// 404 in the API's error format.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// 405 in the API's error format.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
