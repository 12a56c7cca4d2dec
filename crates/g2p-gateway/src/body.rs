//! Request bodies: the raw body under the size and time limits, one request or a batch, and
//! running a batch's items concurrently in order.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::GatewayState;
use crate::api::ErrorBody;
use crate::error::ApiError;
use crate::observe::{RequestStart, record_batch};
use crate::ops::Done;
use g2p_encryption::audit::{AuditRecord, Outcome};

/// The raw body, with a too-large body answered as 413 in our error format.
pub(crate) struct Body(pub(crate) Bytes, pub(crate) tokio::time::Instant);

impl FromRequest<GatewayState> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &GatewayState) -> Result<Self, ApiError> {
        let limit = state.options().body_limit;
        let started = request
            .extensions()
            .get::<RequestStart>()
            .map_or_else(tokio::time::Instant::now, |s| s.0);
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
            .map(|bytes| Body(bytes, started))
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
    started: tokio::time::Instant,
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
    // Items still running near the end of the request's time (counted from its arrival)
    // answer `timeout` on their own, so the items that finished are not lost to a timeout of
    // the whole request.
    let timeout = state.options().request_timeout;
    let deadline = started + timeout.mul_f64(0.9);
    // The provider's own deadline comes a little earlier, so that a slow key manager is
    // reported by the provider (`kms_timeout`) rather than cut off.
    let provider_deadline = (deadline - (timeout / 20).min(Duration::from_millis(500))).into_std();
    futures_util::stream::iter(items.into_iter().enumerate().map(|(i, value)| async move {
        let request = item::<T>(i, value)?;
        let work = g2p_encryption::deadline::scope(provider_deadline, op(request));
        tokio::time::timeout_at(deadline, work)
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

/// Who asked, for the audit trail.
pub(crate) struct AuditContext {
    pub(crate) caller: String,
    pub(crate) request_id: Option<String>,
}

/// One audit line for a request: its items, the keys they used, how it ended.
fn audit<R>(
    state: &GatewayState,
    context: AuditContext,
    operation: &'static str,
    provider: Option<String>,
    results: &[Result<Done<R>, ApiError>],
) {
    if !state.audit().is_on() {
        return;
    }
    let mut keys: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().and_then(|d| d.key.clone()))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let succeeded = results
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|d| !d.refused))
        .count();
    let refused = results
        .iter()
        .filter(|r| match r {
            Ok(done) => done.refused,
            Err(e) => e.kind == "refused",
        })
        .count();
    let first_error = results.iter().find_map(|r| r.as_ref().err());
    let outcome = if succeeded == results.len() {
        Outcome::Ok
    } else if succeeded > 0 {
        Outcome::Partial
    } else if refused > 0 {
        Outcome::Refused
    } else {
        Outcome::Error
    };
    let name = provider.or_else(|| state.registry().default_name().map(String::from));
    let pair = name
        .as_deref()
        .and_then(|n| state.registry().get(Some(n)).ok())
        .and_then(|p| p.key_pairs())
        .map(|pairs| match operation {
            "encrypt" | "decrypt" => pairs.encrypt,
            _ => pairs.sign,
        });
    state.audit().record(AuditRecord {
        service: "gateway",
        request_id: context.request_id,
        caller: context.caller,
        operation,
        provider: name,
        application_id: pair.as_ref().map(|p| p.0.clone()),
        reference_id: pair.map(|p| p.1),
        keys,
        items: results.len(),
        succeeded,
        outcome: Some(outcome),
        error: first_error
            .map(|e| e.kind.to_string())
            .or_else(|| (refused > 0).then(|| "refused".to_string())),
        ..AuditRecord::default()
    });
}

/// Answers one operation's body: one request, or a batch answered item by item; one audit
/// line either way.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn operation<'s, T, R, I, B, F, Fut>(
    state: &'s GatewayState,
    context: AuditContext,
    Body(body, started): Body,
    name: &'static str,
    one: F,
    ok: fn(R) -> I,
    err: fn(ErrorBody) -> I,
    batch: fn(Vec<I>) -> B,
) -> Result<Response, ApiError>
where
    T: DeserializeOwned + ProviderChoice,
    R: Serialize,
    B: Serialize,
    F: Fn(&'s GatewayState, Option<String>, T) -> Fut,
    Fut: Future<Output = Result<Done<R>, ApiError>>,
{
    match parse::<T>(&body, state.options().batch_limit)? {
        Parsed::One(request) => {
            let provider = request.provider().map(String::from);
            let result = one(state, None, request).await;
            let result = [result];
            audit(state, context, name, provider, &result);
            let [result] = result;
            Ok(Json(result?.response).into_response())
        }
        Parsed::Batch { items, provider } => {
            let results = run_batch(state, name, started, items, |request| {
                one(state, provider.clone(), request)
            })
            .await;
            audit(state, context, name, provider, &results);
            let items = results
                .into_iter()
                .map(|r| r.map_or_else(|e| err(e.body()), |done| ok(done.response)))
                .collect();
            Ok(Json(batch(items)).into_response())
        }
    }
}

/// The provider a request names, if it names one.
pub(crate) trait ProviderChoice {
    fn provider(&self) -> Option<&str>;
}
