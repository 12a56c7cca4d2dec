//! Request ids, access logs, request timeouts and Prometheus metrics.
//!
//! Metrics go through the `metrics` facade into one process-wide Prometheus recorder, so the
//! Keymanager provider's own counters (KMS calls, token refreshes, cache hits) appear on the
//! same `/metrics` page as the gateway's.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::GatewayState;
use crate::error::ApiError;

/// The request id header, taken from the client when it sends one and echoed in the answer.
pub const REQUEST_ID: &str = "x-request-id";

const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use. `None` when
/// another recorder was installed first (then `/metrics` says so).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!("a metrics recorder was already installed; /metrics is empty");
                    None
                }
            }
        })
        .as_ref()
}

/// The request id of the request being served (in the request's extensions).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// When the request arrived (in the request's extensions), for deadlines inside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestStart(pub(crate) tokio::time::Instant);

fn next_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: OnceLock<String> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        hex::encode(bytes)
    });
    format!("{prefix}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A low-cardinality label for a path: the route, or `other`.
fn route_label(path: &str) -> &'static str {
    match path {
        "/v1/encrypt" => "/v1/encrypt",
        "/v1/decrypt" => "/v1/decrypt",
        "/v1/sign" => "/v1/sign",
        "/v1/verify" => "/v1/verify",
        "/.well-known/jwks.json" => "/.well-known/jwks.json",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        _ => "other",
    }
}

fn acceptable_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    (!text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
    .then(|| text.to_string())
}

/// Middleware: request id, timeout, access log and request metrics.
pub async fn observe(
    State(state): State<GatewayState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(acceptable_id)
        .unwrap_or_else(next_request_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    request
        .extensions_mut()
        .insert(RequestStart(tokio::time::Instant::now()));
    let method = request.method().clone();
    let route = route_label(request.uri().path());
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %method,
        route,
        caller = tracing::field::Empty
    );
    let timeout = state.options().request_timeout;
    // The provider sees the request's remaining time (its retries stop in time for it),
    // less a margin in which to answer with its own, more precise, error.
    let margin = (timeout / 10).min(std::time::Duration::from_secs(1));
    let work = g2p_encryption::deadline::within(timeout - margin, next.run(request));
    let mut response = match tokio::time::timeout(timeout, work.instrument(span.clone())).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request did not complete within {} ms",
                timeout.as_millis()
            ),
        )
        .into_response(),
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!("g2p_gateway_requests_total", "route" => route, "status" => status.to_string())
        .increment(1);
    metrics::histogram!("g2p_gateway_request_duration_seconds", "route" => route)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request done"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Records one provider operation: latency by operation and provider, errors by kind.
pub fn record_operation(
    operation: &'static str,
    provider: &str,
    elapsed: Duration,
    error: Option<&'static str>,
) {
    metrics::histogram!(
        "g2p_gateway_operation_duration_seconds",
        "operation" => operation,
        "provider" => provider.to_string()
    )
    .record(elapsed.as_secs_f64());
    if let Some(kind) = error {
        metrics::counter!(
            "g2p_gateway_errors_total",
            "operation" => operation,
            "kind" => kind
        )
        .increment(1);
    }
}

/// Records a batch's size.
pub fn record_batch(operation: &'static str, items: usize) {
    metrics::counter!("g2p_gateway_batch_items_total", "operation" => operation)
        .increment(items as u64);
}

/// Keeps the recorder's histograms bounded between scrapes.
pub async fn upkeep() {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Some(handle) = prometheus() {
            handle.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let a = next_request_id();
        let b = next_request_id();
        assert_ne!(a, b);
        assert_eq!(
            acceptable_id(&HeaderValue::from_static("abc-1")),
            Some("abc-1".into())
        );
        assert_eq!(acceptable_id(&HeaderValue::from_static("a b")), None);
        assert_eq!(route_label("/v1/encrypt"), "/v1/encrypt");
        assert_eq!(route_label("/v1/encrypt/x"), "other");
    }
}
