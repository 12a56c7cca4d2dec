//! The HTTP gateway: the provider registry served as a JSON API for applications in any
//! language.
//!
//! * `POST /v1/encrypt`, `/v1/decrypt`, `/v1/sign`, `/v1/verify` — one request, or
//!   `{"items": [...]}` answered in order with each item's own result or error;
//! * `GET /.well-known/jwks.json` (ETag, `Cache-Control`), `/healthz`, `/readyz`,
//!   `/metrics` (Prometheus), `/openapi.json`.
//!
//! [`app`] builds the router (tests call it without a socket); [`run`] serves it until the
//! shutdown future completes, letting requests in flight finish.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
mod body;
pub mod error;
mod handlers;
pub mod keys;
pub mod observe;
pub mod openapi;
mod ops;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use g2p_encryption::audit::AuditLog;
use g2p_encryption::cache::Cached;
use g2p_encryption::clock::Clock;
use g2p_encryption::{Error, ProviderRegistry};

pub use auth::{ApiKey, ApiKeys, Scope, hash_key};
pub use error::ApiError;
pub use settings::{ApiKeySettings, DEFAULT_LISTEN, GatewaySettings};

/// Limits and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// Largest accepted body, bytes (default 4 MiB).
    pub body_limit: usize,
    /// Most items in one batch (default 1000).
    pub batch_limit: usize,
    /// Items of one batch processed at once (default 16).
    pub batch_concurrency: usize,
    /// Longest a request may take before a 504 (default 30 s).
    pub request_timeout: Duration,
    /// `Cache-Control: max-age` of the JWKS (default 300 s).
    pub jwks_max_age: Duration,
    /// How long the gateway reuses the JWKS it built before asking the providers again
    /// (default 5 s; zero: every request). Keeps a public endpoint from loading the key
    /// managers, while a rotation shows within this time.
    pub jwks_refresh: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            body_limit: 4 * 1024 * 1024,
            batch_limit: 1000,
            batch_concurrency: 16,
            request_timeout: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(300),
            jwks_refresh: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
struct Inner {
    registry: ProviderRegistry,
    api_keys: ApiKeys,
    options: GatewayOptions,
    /// The last JWKS body and ETag built, reused for `jwks_refresh`.
    jwks: Cached<JwksDocument>,
    /// Where each key operation is recorded.
    audit: AuditLog,
}

/// The JWKS body the gateway serves, and its ETag.
#[derive(Debug, Clone)]
pub(crate) struct JwksDocument {
    pub(crate) body: axum::body::Bytes,
    pub(crate) etag: String,
}

/// What the handlers share: the providers, the API keys and the options.
#[derive(Debug, Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

impl GatewayState {
    /// A gateway over `registry`, without an audit trail.
    ///
    /// # Errors
    /// [`Error::Configuration`] when the registry is empty or a limit is zero.
    pub fn new(
        registry: ProviderRegistry,
        api_keys: ApiKeys,
        options: GatewayOptions,
    ) -> Result<Self, Error> {
        Self::with_audit(registry, api_keys, options, AuditLog::off())
    }

    /// A gateway over `registry` recording every key operation in `audit`.
    ///
    /// # Errors
    /// As [`GatewayState::new`].
    pub fn with_audit(
        registry: ProviderRegistry,
        api_keys: ApiKeys,
        options: GatewayOptions,
        audit: AuditLog,
    ) -> Result<Self, Error> {
        if registry.is_empty() {
            return Err(Error::Configuration(
                "the gateway needs at least one provider".into(),
            ));
        }
        if options.body_limit == 0 || options.batch_limit == 0 || options.batch_concurrency == 0 {
            return Err(Error::Configuration(
                "body_limit, batch_limit and batch_concurrency must be at least 1".into(),
            ));
        }
        if options.request_timeout.is_zero() {
            return Err(Error::Configuration(
                "request_timeout must be positive".into(),
            ));
        }
        // Install the recorder before the first request so every metric is kept.
        let _ = observe::prometheus();
        Ok(GatewayState {
            inner: Arc::new(Inner {
                registry,
                api_keys,
                options,
                jwks: Cached::new(Clock::system()),
                audit,
            }),
        })
    }

    /// The providers.
    pub fn registry(&self) -> &ProviderRegistry {
        &self.inner.registry
    }

    /// The API keys.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.inner.api_keys
    }

    /// The options.
    pub fn options(&self) -> &GatewayOptions {
        &self.inner.options
    }

    /// The audit trail.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The JWKS document built at most once per `jwks_refresh` (one build at a time;
    /// requests that waited use it).
    pub(crate) fn jwks(&self) -> &Cached<JwksDocument> {
        &self.inner.jwks
    }
}

/// The router. Client addresses come from `ConnectInfo<SocketAddr>` (set by [`run`]); without
/// it and without API keys, every client is refused.
pub fn app(state: GatewayState) -> Router {
    let body_limit = state.options().body_limit;
    Router::new()
        .route("/v1/encrypt", post(handlers::encrypt))
        .route("/v1/decrypt", post(handlers::decrypt))
        .route("/v1/sign", post(handlers::sign))
        .route("/v1/verify", post(handlers::verify))
        .route("/.well-known/jwks.json", get(handlers::jwks))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics_text))
        .route("/openapi.json", get(handlers::openapi))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes; requests in flight finish first.
///
/// # Errors
/// The listener's I/O errors.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = tokio::spawn(observe::upkeep());
    let result = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    upkeep.abort();
    result
}
