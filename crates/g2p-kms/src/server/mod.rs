//! The MOSIP Keymanager REST API over [`Kms`], and the token endpoint of its realm.
//!
//! `app(state)` gives the router, so tests need no fixed port; `serve` runs it until the
//! shutdown future completes.

pub mod auth;
mod crypto;
mod keys;
mod realm;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use g2p_mosip::error::codes;
use g2p_mosip::{ResponseWrapper, ServiceError, timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::KmsError;
use crate::kms::Kms;
use auth::{ADMIN_ROLES, AuthFailure, CRYPTO_ROLES, Realm};
use keys::{generate_master_key, get_all_certificates, get_certificate, revoke_key};
use realm::{certs, token};

/// Largest request body (a 16 MiB record, base64'd, with room for the wrapper).
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;

/// What the server serves.
#[derive(Debug, Clone)]
pub struct ServerState {
    kms: Arc<Kms>,
    realm: Arc<Realm>,
}

impl ServerState {
    /// A server over `kms`, authenticating with `realm`.
    pub fn new(kms: Arc<Kms>, realm: Realm) -> Self {
        ServerState {
            kms,
            realm: Arc::new(realm),
        }
    }
}

/// The router: `/v1/keymanager/...` and `/realms/{realm}/protocol/openid-connect/...`.
pub fn app(state: ServerState) -> Router {
    Router::new()
        .route("/v1/keymanager/getCertificate", get(get_certificate))
        .route(
            "/v1/keymanager/getAllCertificates",
            get(get_all_certificates),
        )
        .route("/v1/keymanager/revokeKey", put(revoke_key))
        .route(
            "/v1/keymanager/generateMasterKey/{object_type}",
            post(generate_master_key),
        )
        .route("/v1/keymanager/{endpoint}", post(post_endpoint))
        // The MOSIP envelope for the Keymanager API only; the token endpoint answers as
        // OAuth servers do.
        .layer(axum::middleware::map_response(too_large_in_the_envelope))
        .route("/realms/{realm}/protocol/openid-connect/token", post(token))
        .route("/realms/{realm}/protocol/openid-connect/certs", get(certs))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// One log line per request: method, path (never the query, which may carry ids), status and
/// time. Bodies, cookies and tokens are not logged. HTTP 200 with `errors` is still 200 here;
/// the KER code is in the answer.
async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::info!(
        target: "g2p_kms::server",
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request done"
    );
    response
}

/// A body over [`MAX_BODY_BYTES`] is answered 413 in the MOSIP envelope, like every other
/// refusal, rather than as plain text.
async fn too_large_in_the_envelope(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(ResponseWrapper::<Value>::failure(
            None,
            None,
            vec![ServiceError::new(
                codes::KMS_005,
                format!(
                    "request body is larger than the limit of {} MiB",
                    MAX_BODY_BYTES / (1024 * 1024)
                ),
            )],
        )),
    )
        .into_response()
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn envelope(
    id: Option<String>,
    version: Option<String>,
    result: Result<Value, KmsError>,
) -> Response {
    let wrapper = match result {
        Ok(v) => ResponseWrapper::success(id, version, v),
        Err(e) => {
            if let KmsError::Internal(detail) = &e {
                tracing::error!(detail, "internal error");
            }
            let status = if e.code() == codes::KMS_500 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let body = ResponseWrapper::<Value>::failure(
                id,
                version,
                vec![ServiceError::new(e.code(), e.message())],
            );
            return (status, Json(body)).into_response();
        }
    };
    Json(wrapper).into_response()
}

/// The request's `id` and `version`, echoed in the answer (spec 1.2).
fn echoed_ids(wrapper: &Value) -> (Option<String>, Option<String>) {
    let text = |k: &str| wrapper.get(k).and_then(Value::as_str).map(String::from);
    (text("id"), text("version"))
}

fn auth_failure(failure: AuthFailure) -> Response {
    let (status, code, message) = match failure {
        AuthFailure::Unauthenticated(why) => {
            tracing::debug!(why, "request refused: 401");
            (
                StatusCode::UNAUTHORIZED,
                codes::ATH_401,
                "Authentication Failed",
            )
        }
        AuthFailure::Forbidden => (StatusCode::FORBIDDEN, codes::ATH_403, "Forbidden"),
    };
    let body =
        ResponseWrapper::<Value>::failure(None, None, vec![ServiceError::new(code, message)]);
    (status, Json(body)).into_response()
}

/// The token from the `Authorization` cookie, or an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.contains("Authorization"))
        .map(|(_, v)| v.trim().to_string());
    from_cookie.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    })
}

fn authorize(state: &ServerState, headers: &HeaderMap, roles: &[&str]) -> Result<(), AuthFailure> {
    let token = bearer(headers)
        .filter(|t| !t.is_empty())
        .ok_or(AuthFailure::Unauthenticated("no token"))?;
    let principal = state.realm.validate(&token)?;
    if !principal.has_any(roles) {
        return Err(AuthFailure::Forbidden);
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::ker(codes::KMS_005, message)
}

async fn blocking(
    f: impl FnOnce() -> Result<Value, KmsError> + Send + 'static,
) -> Result<Value, KmsError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(KmsError::Internal(format!("task: {e}"))))
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, KmsError> {
    serde_json::to_value(v).map_err(|e| KmsError::Internal(e.to_string()))
}

/// Parses the wrapper and its `request` into `T`, with the spec's KER-KMS-005 messages.
fn parse_request<T: DeserializeOwned>(wrapper: &Value) -> Result<T, KmsError> {
    if let Some(rt) = wrapper.get("requesttime").and_then(Value::as_str)
        && timestamp::parse_lenient(rt).is_err()
    {
        return Err(invalid(format!("Invalid format for requesttime: {rt:?}")));
    }
    let request = wrapper
        .get("request")
        .filter(|r| !r.is_null())
        .ok_or_else(|| invalid("request must not be null"))?;
    serde_json::from_value(request.clone()).map_err(|e| invalid(format!("request: {e}")))
}

async fn post_endpoint(
    State(state): State<ServerState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let roles = match endpoint.as_str() {
        "encrypt" | "decrypt" | "jwtSign" | "jwsSign" | "jwtVerify" => CRYPTO_ROLES,
        "uploadOtherDomainCertificate" => ADMIN_ROLES,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if let Err(refused) = authorize(&state, &headers, roles) {
        return auth_failure(refused);
    }
    let wrapper: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad_body("body must be a JSON object".into()),
        Err(e) => return bad_body(format!("body is not JSON: {e}")),
    };
    let (id, version) = echoed_ids(&wrapper);
    let kms = state.kms.clone();
    let result = match endpoint.as_str() {
        "encrypt" => crypto::crypt(kms, &wrapper, true).await,
        "decrypt" => crypto::crypt(kms, &wrapper, false).await,
        "jwtSign" => crypto::sign(kms, &wrapper, false).await,
        "jwsSign" => crypto::sign(kms, &wrapper, true).await,
        "jwtVerify" => crypto::verify(kms, &wrapper).await,
        _ => crypto::upload(kms, &wrapper).await,
    };
    envelope(id, version, result)
}

/// 400 in the envelope for a body that is not a JSON object.
fn bad_body(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(ResponseWrapper::<Value>::failure(
            None,
            None,
            vec![ServiceError::new(codes::KMS_005, message)],
        )),
    )
        .into_response()
}
