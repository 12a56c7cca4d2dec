//! The whole chain over real sockets: an HTTP client → the gateway (`run`) → the Keymanager
//! provider → the embedded MOSIP-compatible key manager (`kms serve`'s server) with its token
//! endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use g2p_encryption::{ProviderRegistry, b64};
use g2p_encryption_keymanager::{KeymanagerConfig, KeymanagerProvider};
use g2p_gateway::{ApiKeys, GatewayOptions, GatewayState, run};
use g2p_kms::server::auth::{Client, Realm};
use g2p_kms::server::{ServerState, serve};
use g2p_kms::{LocalProvider, LocalSettings};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keymanager_provider_embedded_kms() {
    // The key manager.
    let dir = tempfile::tempdir().unwrap();
    let kms = common::open_kms(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kms_base = format!("http://{}", listener.local_addr().unwrap());
    let realm = Realm::new(
        "openg2p",
        &kms_base,
        vec![Client::parse("gw:gw-secret").unwrap()],
        300,
    )
    .unwrap();
    tokio::spawn(serve(
        listener,
        ServerState::new(kms.clone(), realm),
        std::future::pending(),
    ));

    // The gateway in front of it.
    let settings = KeymanagerConfig::settings(
        &format!("{kms_base}/v1/keymanager"),
        &format!("{kms_base}/realms/openg2p/protocol/openid-connect/token"),
        "gw",
        "gw-secret",
    );
    let mut registry = ProviderRegistry::new();
    registry.insert(
        "keymanager",
        Arc::new(KeymanagerProvider::new(settings.build().unwrap()).unwrap()),
    );
    let state = GatewayState::new(registry, ApiKeys::none(), GatewayOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    let base = format!("http://{gateway_addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(listener, state, async {
        let _ = stopped.await;
    }));

    // A timeout, so that a request lost on a connection the server closes fails the test
    // rather than hanging it.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let post = |path: &str, body: Value| {
        let request = http.post(format!("{base}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let record = b64::encode_b64u("Amina Yusuf; account 0099".as_bytes());
    let (status, ct) = post("/v1/encrypt", json!({"data": record})).await;
    assert_eq!(status, 200, "{ct}");
    let (status, pt) = post("/v1/decrypt", json!({"data": ct["data"]})).await;
    assert_eq!((status, pt["data"].clone()), (200, json!(record)));

    // The key manager itself, in process, opens what the gateway sealed: same keys, same format.
    let local = LocalProvider::new(kms.clone(), LocalSettings::default());
    let opened = g2p_encryption::EncryptionProvider::decrypt(
        &local,
        &b64::decode_lenient(ct["data"].as_str().unwrap()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(opened, b"Amina Yusuf; account 0099");

    let (status, signed) = post(
        "/v1/sign",
        json!({"payload": {"programme": "cash-transfer", "amount": 150}}),
    )
    .await;
    assert_eq!(status, 200, "{signed}");
    let (_, verdict) = post("/v1/verify", json!({"jws": signed["jws"]})).await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["payload"]["amount"], 150);
    let forged = signed["jws"]
        .as_str()
        .unwrap()
        .replacen('.', ".eyJhbW91bnQiOjk5OX0.", 1);
    let forged = {
        let p: Vec<&str> = forged.split('.').collect();
        format!("{}.{}.{}", p[0], p[1], p[3])
    };
    let (_, verdict) = post("/v1/verify", json!({"jws": forged})).await;
    assert_eq!(verdict["valid"], false, "{verdict}");

    let (status, batch) = post(
        "/v1/encrypt",
        json!({"items": [{"data": record}, {"data": "!"}, {"data": record}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(batch["items"][0]["data"].is_string() && batch["items"][2]["data"].is_string());
    assert_eq!(batch["items"][1]["error"], "invalid_base64");

    let jwks = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.headers()["content-type"], "application/jwk-set+json");
    let jwks: Value = jwks.json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    let current = kms.store().list().unwrap();
    assert!(
        kids.iter()
            .all(|kid| current.iter().any(|r| r.key_id == *kid)),
        "the gateway publishes keys the key manager does not hold: {kids:?}"
    );

    // The Keymanager provider's own counters reach the gateway's metrics.
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "g2p_kms_calls_total",
        "g2p_token_fetches_total",
        "g2p_cache_hits_total",
    ] {
        assert!(metrics.contains(needle), "{needle} missing");
    }

    // Graceful shutdown: the server stops once asked, and no longer accepts connections. (The
    // check does not reuse `http`: a request on a pooled connection the server has just
    // closed can be lost between hyper's queue and its connection task.)
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(gateway_addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    // A key manager that never answers: requests stay in flight until the provider's 1 s
    // timeout.
    let mut registry = ProviderRegistry::new();
    let (slow, accepted) = common::silent_provider_signalling(1).await;
    registry.insert("slow", Arc::new(slow));
    let state = GatewayState::new(registry, ApiKeys::none(), GatewayOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run(listener, state, async {
        let _ = stopped.await;
    }));
    let in_flight = tokio::spawn({
        let url = format!("{base}/v1/sign");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&json!({"text": "slow"}))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    });
    // The request has reached the key manager: it is in flight.
    tokio::time::timeout(std::time::Duration::from_secs(20), accepted.notified())
        .await
        .expect("the request never reached the key manager");
    stop.send(()).unwrap();
    // The request started before the shutdown gets its whole answer.
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(
        (status, body["error"].clone()),
        (504, json!("kms_timeout")),
        "{body}"
    );
    server.await.unwrap().unwrap();
}
