//! The routes: each extracts, calls a provider and maps errors.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use g2p_encryption::b64;

use crate::api::{
    DataBatchResponse, DataBody, DataItem, DataResult, ErrorBody, Health, JwksDoc, OperationErrors,
    SignBatchResponse, SignBody, SignItem, SignResult, VerifyBatchResponse, VerifyBody, VerifyItem,
    VerifyResult,
};
use crate::auth::{Caller, Scope};
use crate::body::{AuditContext, Body, operation};
use crate::error::ApiError;
use crate::observe::{RequestId, prometheus};
use crate::ops::{decrypt_one, encrypt_one, finish, sign_one, verify_one};
use crate::{GatewayState, JwksDocument};

/// Encrypts bytes with the provider's current encryption key.
#[utoipa::path(
    post, path = "/v1/encrypt", tag = "crypto",
    request_body = DataBody,
    responses(
        (status = 200, description = "The ciphertext (MOSIP format), or one result per batch item", body = DataResult),
        (status = 422, description = "The key manager refused the data", body = ErrorBody),
        OperationErrors,
    ),
    security(("api_key" = []))
)]
pub async fn encrypt(
    State(state): State<GatewayState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Encrypt)?;
    operation(
        &state,
        audit_context(&caller, request_id),
        body,
        "encrypt",
        encrypt_one,
        DataItem::Ok,
        DataItem::Err,
        |items| DataBatchResponse { items },
    )
    .await
}

/// Decrypts a ciphertext.
#[utoipa::path(
    post, path = "/v1/decrypt", tag = "crypto",
    request_body = DataBody,
    responses(
        (status = 200, description = "The plaintext, or one result per batch item", body = DataResult),
        (status = 422, description = "The ciphertext does not decrypt", body = ErrorBody),
        OperationErrors,
    ),
    security(("api_key" = []))
)]
pub async fn decrypt(
    State(state): State<GatewayState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Decrypt)?;
    operation(
        &state,
        audit_context(&caller, request_id),
        body,
        "decrypt",
        decrypt_one,
        DataItem::Ok,
        DataItem::Err,
        |items| DataBatchResponse { items },
    )
    .await
}

/// Signs a JSON document or text as a compact JWS (RS256).
#[utoipa::path(
    post, path = "/v1/sign", tag = "jws",
    request_body = SignBody,
    responses(
        (status = 200, description = "The compact JWS, or one result per batch item", body = SignResult),
        (status = 422, description = "The key manager refused the data", body = ErrorBody),
        OperationErrors,
    ),
    security(("api_key" = []))
)]
pub async fn sign(
    State(state): State<GatewayState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Sign)?;
    operation(
        &state,
        audit_context(&caller, request_id),
        body,
        "sign",
        sign_one,
        SignItem::Ok,
        SignItem::Err,
        |items| SignBatchResponse { items },
    )
    .await
}

/// Verifies a compact JWS against the provider's signing keys.
#[utoipa::path(
    post, path = "/v1/verify", tag = "jws",
    request_body = VerifyBody,
    responses(
        (status = 200, description = "The verdict (valid or not), or one per batch item", body = VerifyResult),
        OperationErrors,
    ),
    security(("api_key" = []))
)]
pub async fn verify(
    State(state): State<GatewayState>,
    caller: Caller,
    request_id: Option<Extension<RequestId>>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Scope::Verify)?;
    operation(
        &state,
        audit_context(&caller, request_id),
        body,
        "verify",
        verify_one,
        VerifyItem::Ok,
        VerifyItem::Err,
        |items| VerifyBatchResponse { items },
    )
    .await
}

fn audit_context(caller: &Caller, request_id: Option<Extension<RequestId>>) -> AuditContext {
    AuditContext {
        caller: caller.name().to_string(),
        request_id: request_id.map(|Extension(RequestId(id))| id),
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
    let refresh = state.options().jwks_refresh;
    let document = state
        .jwks()
        .get_or_fill(|| async { Ok::<_, ApiError>((jwks_document(&state).await?, refresh)) })
        .await?;
    let (body, etag) = (document.body.clone(), document.etag.clone());
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
async fn jwks_document(state: &GatewayState) -> Result<JwksDocument, ApiError> {
    let registry = state.registry();
    let mut sets = Vec::new();
    for name in registry.names() {
        let provider = registry
            .get(Some(name))
            .map_err(|e| ApiError::from_provider(&e, name))?;
        let started = Instant::now();
        sets.push((
            name.to_string(),
            finish("jwks", name, started, provider.jwks().await)?,
        ));
    }
    let (set, collisions) = crate::keys::merge(sets);
    for collision in collisions {
        tracing::error!(%collision, "a key left out of the JWKS");
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
    Ok(JwksDocument {
        body: Bytes::from(body),
        etag,
    })
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
    let reason = match registry.get(None) {
        Ok(provider) => match tokio::time::timeout(limit, provider.ready()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => {
                tracing::warn!(provider = %name, "not ready: no answer in time");
                return unavailable(
                    name,
                    format!(
                        "kms_timeout: the key manager did not answer within {} ms",
                        limit.as_millis()
                    ),
                );
            }
        },
        Err(e) => Some(e),
    };
    match reason {
        None => Json(Health {
            status: "ready".into(),
            provider: Some(name),
            reason: None,
        })
        .into_response(),
        Some(e) => {
            let api = ApiError::from_provider(&e, &name);
            tracing::warn!(provider = %name, error = %e, "not ready");
            unavailable(name, format!("{}: {}", api.kind, api.description))
        }
    }
}

fn unavailable(provider: String, reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Health {
            status: "unavailable".into(),
            provider: Some(provider),
            reason: Some(reason),
        }),
    )
        .into_response()
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
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: the API is POST /v1/encrypt, /v1/decrypt, /v1/sign and /v1/verify; also GET /.well-known/jwks.json, /healthz, /readyz, /metrics and /openapi.json",
    )
}

/// 405 in the API's error format.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}
