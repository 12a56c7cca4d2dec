//! The MOSIP Keymanager REST API over [`Kms`], and the token endpoint of its realm.
//!
//! `app(state)` gives the router, so tests need no fixed port; `serve` runs it until the
//! shutdown future completes. Each endpoint is a route of its own; the caller is
//! authenticated (and its roles checked) by an extractor before the body is read.

pub mod auth;
mod crypto;
mod keys;
mod realm;
mod request;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use g2p_mosip::{KerCode, ResponseWrapper, ServiceError};
use serde_json::Value;

use g2p_encryption::audit::{AuditLog, AuditRecord, Outcome};

use crate::error::KmsError;
use crate::kms::Kms;
use auth::Realm;

/// Largest request body (a 16 MiB record, base64'd, with room for the wrapper).
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;

/// Limits of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerOptions {
    /// Longest a request may take, waiting for a slot included (default 30 s).
    pub request_timeout: Duration,
    /// Most requests served at once; the others wait for a slot (default 256).
    pub max_concurrent_requests: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 256,
        }
    }
}

/// What the server serves.
#[derive(Debug, Clone)]
pub struct ServerState {
    kms: Arc<Kms>,
    realm: Arc<Realm>,
    options: ServerOptions,
    slots: Arc<tokio::sync::Semaphore>,
    audit: AuditLog,
}

impl ServerState {
    /// A server over `kms`, authenticating with `realm`, with the default limits.
    pub fn new(kms: Arc<Kms>, realm: Realm) -> Self {
        Self::with_options(kms, realm, ServerOptions::default())
    }

    /// A server with these limits.
    pub fn with_options(kms: Arc<Kms>, realm: Realm, options: ServerOptions) -> Self {
        ServerState {
            kms,
            realm: Arc::new(realm),
            slots: Arc::new(tokio::sync::Semaphore::new(
                options.max_concurrent_requests.max(1),
            )),
            options,
            audit: AuditLog::off(),
        }
    }

    /// The same server recording every key operation in `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = audit;
        self
    }

    /// One audit line: who did what to which pair's key, and how it ended.
    fn record<T>(
        &self,
        caller: &request::CallerId,
        operation: &'static str,
        (application_id, reference_id): (&str, &str),
        key: Option<String>,
        result: &Result<T, KmsError>,
    ) {
        if !self.audit.is_on() {
            return;
        }
        let (outcome, error) = match result {
            Ok(_) => (Outcome::Ok, None),
            Err(e) => {
                let refused = matches!(
                    e.code().class(),
                    g2p_mosip::KerClass::DecryptionRefused | g2p_mosip::KerClass::SignatureRefused
                );
                let outcome = if refused {
                    Outcome::Refused
                } else {
                    Outcome::Error
                };
                (outcome, Some(e.code().as_str().to_string()))
            }
        };
        self.audit.record(AuditRecord {
            service: "kms",
            request_id: caller.request_id.clone(),
            caller: caller.client_id.clone(),
            operation,
            application_id: Some(application_id.to_string()),
            reference_id: Some(reference_id.to_string()),
            keys: key.into_iter().collect(),
            items: 1,
            succeeded: usize::from(result.is_ok()),
            outcome: Some(outcome),
            error,
            ..AuditRecord::default()
        });
    }
}

/// The router: `/v1/keymanager/...` and `/realms/{realm}/protocol/openid-connect/...`.
pub fn app(state: ServerState) -> Router {
    const API: &str = "/v1/keymanager";
    Router::new()
        .route(&format!("{API}/encrypt"), post(crypto::encrypt))
        .route(&format!("{API}/decrypt"), post(crypto::decrypt))
        .route(&format!("{API}/jwtSign"), post(crypto::jwt_sign))
        .route(&format!("{API}/jwsSign"), post(crypto::jws_sign))
        .route(&format!("{API}/jwtVerify"), post(crypto::jwt_verify))
        .route(&format!("{API}/getCertificate"), get(keys::get_certificate))
        .route(
            &format!("{API}/getAllCertificates"),
            get(keys::get_all_certificates),
        )
        .route(
            &format!("{API}/uploadOtherDomainCertificate"),
            post(keys::upload_certificate),
        )
        .route(&format!("{API}/revokeKey"), put(keys::revoke_key))
        .route(
            &format!("{API}/generateMasterKey/{{object_type}}"),
            post(keys::generate_master_key),
        )
        // The MOSIP envelope for the Keymanager API only; the token endpoint answers as
        // OAuth servers do.
        .layer(axum::middleware::map_response(too_large_in_the_envelope))
        .route(
            "/realms/{realm}/protocol/openid-connect/token",
            post(realm::token),
        )
        .route(
            "/realms/{realm}/protocol/openid-connect/certs",
            get(realm::certs),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// One log line per request: method, path (never the query, which may carry ids), status and
/// time. Bodies, cookies and tokens are not logged. HTTP 200 with `errors` is still 200 here;
/// the KER code is in the answer.
/// Liveness: the process answers.
async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Readiness: the key store answers (a replica whose database is down says so, and a load
/// balancer sends its clients elsewhere). Never waits longer than half the request timeout.
async fn readyz(State(state): State<ServerState>) -> Response {
    let kms = Arc::clone(&state.kms);
    let store = kms.store().location();
    let limit = state.options.request_timeout.mul_f64(0.5);
    let checked = tokio::time::timeout(limit, blocking(move || kms.store().ready())).await;
    // The body names no host or driver message (the endpoint is unauthenticated); the log
    // has the cause.
    let reason = match checked {
        Ok(Ok(())) => {
            return axum::Json(serde_json::json!({"status": "ready"})).into_response();
        }
        Ok(Err(e)) => {
            tracing::warn!(%store, error = %e, "not ready");
            e.message()
        }
        Err(_) => {
            let reason = format!(
                "the key store did not answer within {} ms",
                limit.as_millis()
            );
            tracing::warn!(%store, %reason, "not ready");
            reason
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({"status": "unavailable", "reason": reason})),
    )
        .into_response()
}

async fn access_log(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request done"
    );
    response
}

/// At most `max_concurrent_requests` at once, each within `request_timeout` (the wait for a
/// slot included); beyond it, 504 in the envelope.
async fn limits(
    State(state): State<ServerState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let timeout = state.options.request_timeout;
    let served = async {
        let _slot = state.slots.acquire().await;
        next.run(request).await
    };
    match tokio::time::timeout(timeout, served).await {
        Ok(response) => response,
        Err(_) => failure(
            StatusCode::GATEWAY_TIMEOUT,
            ServiceError::new(
                KerCode::Kms500,
                format!(
                    "the request did not complete within {} s",
                    timeout.as_secs_f64()
                ),
            ),
        ),
    }
}

/// A body over [`MAX_BODY_BYTES`] is answered 413 in the MOSIP envelope, like every other
/// refusal, rather than as plain text.
async fn too_large_in_the_envelope(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    failure(
        StatusCode::PAYLOAD_TOO_LARGE,
        ServiceError::new(
            KerCode::Kms005,
            format!(
                "request body is larger than the limit of {} MiB",
                MAX_BODY_BYTES / (1024 * 1024)
            ),
        ),
    )
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

/// An answer without a request to echo (a refused body, an authentication failure).
fn failure(status: StatusCode, error: ServiceError) -> Response {
    let body = ResponseWrapper::<Value>::failure(None, None, vec![error]);
    (status, axum::Json(body)).into_response()
}

/// The answer for a result: 200 with `response` or `errors`, or 500 for an internal failure
/// (logged here, answered generically).
fn answer<R: serde::Serialize>(wrapper: ResponseWrapper<R>, error: Option<&KmsError>) -> Response {
    let status = match error {
        Some(KmsError::Unavailable(message)) => {
            tracing::warn!(error = %message, "key store unavailable");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Some(e) if e.code() == KerCode::Kms500 => {
            tracing::error!(error = %e, "internal error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::OK,
    };
    (status, axum::Json(wrapper)).into_response()
}

/// The answer to a request without a wrapper to echo (the `GET` endpoints).
fn answer_get<R: serde::Serialize>(result: Result<R, KmsError>) -> Response {
    match result {
        Ok(response) => answer(ResponseWrapper::success(None, None, response), None),
        Err(e) => answer(
            ResponseWrapper::<R>::failure(None, None, vec![e.to_service_error()]),
            Some(&e),
        ),
    }
}

/// Runs a key operation off the executor (RSA private-key operations take a while).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> Result<T, KmsError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(KmsError::Internal(format!("task: {e}"))))
}
