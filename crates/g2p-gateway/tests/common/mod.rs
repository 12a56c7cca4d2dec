//! What the gateway's test files share: an embedded key manager, providers over it, and
//! Keymanager providers in front of key managers that never answer.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::MockConnectInfo;
use g2p_encryption::ProviderRegistry;
use g2p_encryption_keymanager::{KeymanagerConfig, KeymanagerProvider};
use g2p_gateway::{ApiKeys, GatewayOptions, GatewayState, app};
use g2p_kms::{Kek, Kms, LocalProvider, LocalSettings, StoreOptions};

/// The embedded key manager in `dir`.
pub fn open_kms(dir: &std::path::Path) -> Arc<Kms> {
    Arc::new(Kms::open(dir, Kek::load(dir, None).unwrap(), StoreOptions::default()).unwrap())
}

/// One provider, `local`, over the embedded key manager in `dir`.
pub fn local_registry(dir: &std::path::Path) -> ProviderRegistry {
    let mut registry = ProviderRegistry::new();
    registry.insert(
        "local",
        Arc::new(LocalProvider::new(open_kms(dir), LocalSettings::default())),
    );
    registry
}

/// The gateway over `registry` with no API keys, as seen by a client at `peer`.
pub fn open_gateway(registry: ProviderRegistry, peer: SocketAddr) -> Router {
    let state = GatewayState::new(registry, ApiKeys::none(), GatewayOptions::default()).unwrap();
    app(state).layer(MockConnectInfo(peer))
}

/// A Keymanager provider whose key manager accepts connections and never answers.
pub async fn silent_provider(timeout_secs: u64) -> KeymanagerProvider {
    silent_provider_signalling(timeout_secs).await.0
}

/// As [`silent_provider`], with a signal given each time the key manager accepts a
/// connection (a request is then in flight).
pub async fn silent_provider_signalling(
    timeout_secs: u64,
) -> (KeymanagerProvider, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(tokio::sync::Notify::new());
    let signal = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            signal.notify_one();
        }
    });
    let mut settings = KeymanagerConfig::settings(
        &format!("http://{addr}/v1/keymanager"),
        &format!("http://{addr}/token"),
        "client",
        "secret",
    );
    settings.api_timeout = Some(timeout_secs);
    let provider = KeymanagerProvider::new(settings.build().unwrap()).unwrap();
    (provider, accepted)
}
