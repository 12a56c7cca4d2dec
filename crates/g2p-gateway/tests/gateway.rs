//! The gateway through `app()` (no socket), over real providers: the embedded key manager,
//! and the Keymanager provider in front of unreachable, hanging and real key managers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use g2p_encryption::{ProviderRegistry, b64};
use g2p_encryption_keymanager::{KeymanagerConfig, KeymanagerProvider};
use g2p_gateway::{ApiKey, ApiKeys, GatewayOptions, GatewayState, app, hash_key};
use g2p_kms::{LocalProvider, LocalSettings};
use g2p_mosip::cipher::CipherParams;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{open_kms, silent_provider};

const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 40000);
const REMOTE: ([u8; 4], u16) = ([192, 0, 2, 7], 40000);

/// Two embedded providers over one store: `local` (default) and `other`, which seals with
/// another aad, so the two cannot open each other's ciphertexts.
fn registry(dir: &std::path::Path) -> ProviderRegistry {
    let kms = open_kms(dir);
    let mut registry = ProviderRegistry::new();
    registry.insert(
        "local",
        Arc::new(LocalProvider::new(kms.clone(), LocalSettings::default())),
    );
    let other = LocalSettings {
        encrypt_application_id: "RESIDENT".into(),
        cipher_params: CipherParams::from_b64u(None, Some("b3RoZXItYWFk")).unwrap(),
        ..LocalSettings::default()
    };
    registry.insert("other", Arc::new(LocalProvider::new(kms, other)));
    registry
}

fn gateway(registry: ProviderRegistry, keys: ApiKeys, options: GatewayOptions) -> Router {
    app(GatewayState::new(registry, keys, options).unwrap())
}

/// Both providers, no API keys, default options, as seen from `peer`.
fn default_gateway(dir: &std::path::Path, peer: ([u8; 4], u16)) -> Router {
    from(
        peer,
        gateway(registry(dir), ApiKeys::none(), GatewayOptions::default()),
    )
}

fn from(peer: ([u8; 4], u16), router: Router) -> Router {
    router.layer(MockConnectInfo(SocketAddr::from(peer)))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        raw,
    }
}

async fn post_raw(router: &Router, path: &str, auth: Option<&str>, body: Vec<u8>) -> Answer {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(key) = auth {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    send(router, request.body(Body::from(body)).unwrap()).await
}

async fn post(router: &Router, path: &str, body: Value) -> Answer {
    post_raw(router, path, None, serde_json::to_vec(&body).unwrap()).await
}

async fn get(router: &Router, path: &str) -> Answer {
    send(router, Request::get(path).body(Body::empty()).unwrap()).await
}

fn assert_error(answer: &Answer, status: StatusCode, kind: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.body["error"], kind, "{:?}", answer.body);
    assert!(
        answer.body["description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{:?}",
        answer.body
    );
}

#[tokio::test]
async fn encrypt_decrypt_single_batch_and_provider_selection() {
    let dir = tempfile::tempdir().unwrap();
    let router = default_gateway(dir.path(), LOOPBACK);
    let plaintext = b64::encode_b64u(b"Amina Yusuf, 12 Market Road");
    let ct = post(&router, "/v1/encrypt", json!({"data": plaintext})).await;
    assert_eq!(ct.status, StatusCode::OK, "{:?}", ct.body);
    let ciphertext = ct.body["data"].as_str().unwrap().to_string();
    assert!(g2p_mosip::cipher::parse(&b64::decode_lenient(&ciphertext).unwrap()).is_ok());
    let pt = post(&router, "/v1/decrypt", json!({"data": ciphertext})).await;
    assert_eq!(pt.status, StatusCode::OK);
    assert_eq!(pt.body["data"], plaintext);

    // The other provider seals with another aad: its ciphertext is refused by the default.
    let other = post(
        &router,
        "/v1/encrypt",
        json!({"data": plaintext, "provider": "other"}),
    )
    .await;
    let other_ct = other.body["data"].as_str().unwrap().to_string();
    let refused = post(&router, "/v1/decrypt", json!({"data": other_ct})).await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "refused");
    let ok = post(
        &router,
        "/v1/decrypt",
        json!({"data": other_ct, "provider": "other"}),
    )
    .await;
    assert_eq!(ok.body["data"], plaintext);

    // A batch with good and bad items answers each in order.
    let mut tampered = b64::decode_lenient(&ciphertext).unwrap();
    let n = tampered.len();
    tampered[n - 1] ^= 1;
    let batch = post(
        &router,
        "/v1/decrypt",
        json!({"items": [
            {"data": ciphertext},
            {"data": "%%% not base64"},
            {"data": b64::encode_b64u(&tampered)},
            {"dat": "typo"},
            {"data": ciphertext, "provider": "nope"},
            {"data": other_ct, "provider": "other"},
        ]}),
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK, "{:?}", batch.body);
    let items = batch.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert_eq!(items[0]["data"], plaintext);
    assert_eq!(items[1]["error"], "invalid_base64");
    assert_eq!(items[2]["error"], "refused");
    assert_eq!(items[3]["error"], "invalid_request");
    assert!(
        items[3]["description"]
            .as_str()
            .unwrap()
            .contains("items[3]")
    );
    assert_eq!(items[4]["error"], "unknown_provider");
    assert_eq!(items[5]["data"], plaintext);

    // A batch-wide provider applies to items that do not name one.
    let many: Vec<Value> = (0..40)
        .map(|i| json!({"data": b64::encode_b64u(format!("record {i}").as_bytes())}))
        .collect();
    let sealed = post(
        &router,
        "/v1/encrypt",
        json!({"items": many, "provider": "other"}),
    )
    .await;
    let sealed: Vec<Value> = sealed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| json!({"data": i["data"]}))
        .collect();
    let opened = post(
        &router,
        "/v1/decrypt",
        json!({"items": sealed, "provider": "other"}),
    )
    .await;
    for (i, item) in opened.body["items"].as_array().unwrap().iter().enumerate() {
        let bytes = b64::decode_lenient(item["data"].as_str().unwrap()).unwrap();
        assert_eq!(bytes, format!("record {i}").as_bytes());
    }
}

#[tokio::test]
async fn sign_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let router = default_gateway(dir.path(), LOOPBACK);
    let doc = json!({"beneficiary": "B-1029", "amount": 150, "currency": "KES"});
    let signed = post(
        &router,
        "/v1/sign",
        json!({"payload": doc, "include_certificate": true, "include_cert_hash": true}),
    )
    .await;
    assert_eq!(signed.status, StatusCode::OK, "{:?}", signed.body);
    let jws = signed.body["jws"].as_str().unwrap().to_string();
    let header: Value =
        serde_json::from_slice(&b64::decode_lenient(jws.split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert!(
        header["x5c"].is_array() && header["x5t#S256"].is_string(),
        "{header}"
    );

    let verified = post(&router, "/v1/verify", json!({"jws": jws})).await;
    assert_eq!(verified.status, StatusCode::OK);
    assert_eq!(verified.body["valid"], true);
    assert_eq!(verified.body["payload"], doc);
    assert!(verified.body["kid"].is_string());

    // Text, detached.
    let detached = post(
        &router,
        "/v1/sign",
        json!({"text": "pay 150 KES", "include_payload": false}),
    )
    .await;
    let djws = detached.body["jws"].as_str().unwrap().to_string();
    assert!(djws.contains(".."), "{djws}");
    let ok = post(
        &router,
        "/v1/verify",
        json!({"jws": djws, "text": "pay 150 KES"}),
    )
    .await;
    assert_eq!(
        (ok.body["valid"].clone(), ok.body["text"].clone()),
        (json!(true), json!("pay 150 KES"))
    );
    let bad = post(
        &router,
        "/v1/verify",
        json!({"jws": djws, "text": "pay 990 KES"}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::OK);
    assert_eq!(bad.body["valid"], false);
    assert!(
        bad.body["reason"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{:?}",
        bad.body
    );
    let missing = post(&router, "/v1/verify", json!({"jws": djws})).await;
    assert_eq!(missing.body["valid"], false, "{:?}", missing.body);

    // A tampered payload is not valid; a malformed token is a client error.
    let parts: Vec<&str> = jws.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode_b64u(br#"{"amount":9999}"#),
        parts[2]
    );
    let v = post(&router, "/v1/verify", json!({"jws": forged})).await;
    assert_eq!(
        (v.status, v.body["valid"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert_error(
        &post(&router, "/v1/verify", json!({"jws": "not-a-jws"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &post(&router, "/v1/sign", json!({"payload": doc, "text": "x"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &post(&router, "/v1/sign", json!({"include_payload": true})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // Batches.
    let batch = post(
        &router,
        "/v1/sign",
        json!({"items": [{"payload": {"n": 1}}, {"text": "t"}, {}]}),
    )
    .await;
    let items = batch.body["items"].as_array().unwrap();
    assert!(items[0]["jws"].is_string() && items[1]["jws"].is_string());
    assert_eq!(items[2]["error"], "invalid_request");
    let checks = post(
        &router,
        "/v1/verify",
        json!({"items": [{"jws": items[0]["jws"]}, {"jws": forged}, {"jws": "x.y"}]}),
    )
    .await;
    let checks = checks.body["items"].as_array().unwrap();
    assert_eq!(checks[0]["payload"], json!({"n": 1}));
    assert_eq!(checks[1]["valid"], false);
    assert_eq!(checks[2]["error"], "invalid_input");
}

#[tokio::test]
async fn malformed_requests_get_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let options = GatewayOptions {
        body_limit: 64 * 1024,
        batch_limit: 3,
        ..GatewayOptions::default()
    };
    let router = from(
        LOOPBACK,
        gateway(registry(dir.path()), ApiKeys::none(), options),
    );
    let invalid = post_raw(&router, "/v1/encrypt", None, b"{\"data\": ".to_vec()).await;
    assert_error(&invalid, StatusCode::BAD_REQUEST, "invalid_json");
    assert_error(
        &post(&router, "/v1/encrypt", json!(["data"])).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let unknown = post(
        &router,
        "/v1/encrypt",
        json!({"data": "AA", "colour": "red"}),
    )
    .await;
    assert_error(&unknown, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        unknown.body["description"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    let missing = post(&router, "/v1/decrypt", json!({})).await;
    assert!(
        missing.body["description"]
            .as_str()
            .unwrap()
            .contains("data")
    );
    assert_error(
        &post(&router, "/v1/decrypt", json!({"data": "@@@"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_base64",
    );
    assert_error(
        &post(&router, "/v1/decrypt", json!({"data": "aGVsbG8"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
    );
    assert_error(
        &post(
            &router,
            "/v1/encrypt",
            json!({"data": "AA", "provider": "hsm"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "unknown_provider",
    );
    let too_many = post(
        &router,
        "/v1/encrypt",
        json!({"items": [{"data": "AA"}, {"data": "AA"}, {"data": "AA"}, {"data": "AA"}]}),
    )
    .await;
    assert_error(&too_many, StatusCode::BAD_REQUEST, "batch_too_large");
    assert_error(
        &post(&router, "/v1/encrypt", json!({"items": "AA"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_error(
        &post(&router, "/v1/encrypt", json!({"items": [], "extra": 1})).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let big = json!({"data": "A".repeat(70 * 1024)});
    let too_big = post(&router, "/v1/encrypt", big).await;
    assert_error(&too_big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(
        too_big.body["description"]
            .as_str()
            .unwrap()
            .contains("65536")
    );
    assert_error(
        &get(&router, "/v2/encrypt").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &get(&router, "/v1/encrypt").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn api_keys_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    // Without keys, only loopback clients.
    let open = gateway(
        registry(dir.path()),
        ApiKeys::none(),
        GatewayOptions::default(),
    );
    let remote = from(REMOTE, open.clone());
    let refused = post(&remote, "/v1/encrypt", json!({"data": "AA"})).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        refused.body["description"]
            .as_str()
            .unwrap()
            .contains("loopback")
    );
    // A request a local proxy forwarded is not a loopback client's.
    let local = from(LOOPBACK, open.clone());
    let forwarded = send(
        &local,
        Request::post("/v1/encrypt")
            .header("x-forwarded-for", "203.0.113.9")
            .body(Body::from(r#"{"data":"AA"}"#))
            .unwrap(),
    )
    .await;
    assert_error(&forwarded, StatusCode::FORBIDDEN, "forbidden");
    // IPv4 loopback seen through a dual-stack socket is loopback.
    let mapped = open.clone().layer(MockConnectInfo(SocketAddr::from((
        [0u16, 0, 0, 0, 0, 0xffff, 0x7f00, 1],
        40000,
    ))));
    assert_eq!(
        post(&mapped, "/v1/encrypt", json!({"data": "AA"}))
            .await
            .status,
        StatusCode::OK
    );
    // Without a peer address at all, refused too (fail closed).
    assert_error(
        &post(&open, "/v1/encrypt", json!({"data": "AA"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    let keys = ApiKeys::new(vec![
        ApiKey::from_hash(
            "registry",
            &hash_key("key-registry-1"),
            &["encrypt".into(), "verify".into()],
        )
        .unwrap(),
        ApiKey::from_hash(
            "payments",
            &hash_key("key-payments-2"),
            &["decrypt".into(), "sign".into()],
        )
        .unwrap(),
    ]);
    let dir2 = tempfile::tempdir().unwrap();
    let router = from(
        REMOTE,
        gateway(registry(dir2.path()), keys, GatewayOptions::default()),
    );
    let body = || serde_json::to_vec(&json!({"data": "aGVsbG8"})).unwrap();
    let none = post_raw(&router, "/v1/encrypt", None, body()).await;
    assert_error(&none, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert_error(
        &post_raw(&router, "/v1/encrypt", Some("wrong"), body()).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let ct = post_raw(&router, "/v1/encrypt", Some("key-registry-1"), body()).await;
    assert_eq!(ct.status, StatusCode::OK, "{:?}", ct.body);
    let dec = serde_json::to_vec(&json!({"data": ct.body["data"]})).unwrap();
    let forbidden = post_raw(&router, "/v1/decrypt", Some("key-registry-1"), dec.clone()).await;
    assert_error(&forbidden, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        forbidden.body["description"]
            .as_str()
            .unwrap()
            .contains("decrypt")
    );
    let pt = post_raw(&router, "/v1/decrypt", Some("key-payments-2"), dec).await;
    assert_eq!(pt.body["data"], "aGVsbG8");
    let sign = serde_json::to_vec(&json!({"text": "t"})).unwrap();
    assert_error(
        &post_raw(&router, "/v1/sign", Some("key-registry-1"), sign.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let jws = post_raw(&router, "/v1/sign", Some("key-payments-2"), sign).await;
    let verify = serde_json::to_vec(&json!({"jws": jws.body["jws"]})).unwrap();
    assert_error(
        &post_raw(
            &router,
            "/v1/verify",
            Some("key-payments-2"),
            verify.clone(),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_eq!(
        post_raw(&router, "/v1/verify", Some("key-registry-1"), verify)
            .await
            .body["valid"],
        true
    );
    // Keys, health and metrics are public, from anywhere.
    for path in [
        "/.well-known/jwks.json",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert_eq!(get(&router, path).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn jwks_with_etag() {
    let dir = tempfile::tempdir().unwrap();
    let options = GatewayOptions {
        jwks_refresh: Duration::ZERO,
        ..GatewayOptions::default()
    };
    let router = from(
        REMOTE,
        gateway(registry(dir.path()), ApiKeys::none(), options),
    );
    let first = get(&router, "/.well-known/jwks.json").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers["content-type"], "application/jwk-set+json");
    assert_eq!(first.headers["cache-control"], "public, max-age=300");
    let etag = first.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let keys = first.body["keys"].as_array().unwrap();
    let uses: Vec<&str> = keys.iter().filter_map(|k| k["use"].as_str()).collect();
    assert!(uses.contains(&"enc") && uses.contains(&"sig"), "{uses:?}");
    // Both providers' encryption keys (REGISTRATION and RESIDENT), once each.
    let enc = keys.iter().filter(|k| k["use"] == "enc").count();
    assert_eq!(enc, 2, "{keys:?}");
    let again = get(&router, "/.well-known/jwks.json").await;
    assert_eq!(again.headers["etag"], etag.as_str());
    let cached = send(
        &router,
        Request::get("/.well-known/jwks.json")
            .header("if-none-match", &etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.raw.is_empty());
    assert_eq!(cached.headers["etag"], etag.as_str());
    let stale = send(
        &router,
        Request::get("/.well-known/jwks.json")
            .header("if-none-match", "\"old\"")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    // A rotation changes the set and its ETag.
    open_kms(dir.path())
        .store()
        .rotate("REGISTRATION", "ENCRYPT")
        .unwrap();
    let rotated = get(&router, "/.well-known/jwks.json").await;
    assert_ne!(rotated.headers["etag"], etag.as_str());
}

/// A Keymanager provider whose key manager refuses connections.
fn unreachable_provider() -> KeymanagerProvider {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let settings = KeymanagerConfig::settings(
        &format!("http://{addr}/v1/keymanager"),
        &format!("http://{addr}/realms/openg2p/protocol/openid-connect/token"),
        "client",
        "never-in-a-log-9f3c",
    );
    KeymanagerProvider::new(settings.build().unwrap()).unwrap()
}

#[tokio::test]
async fn key_manager_failures_are_502_and_504_without_internals() {
    let mut registry = ProviderRegistry::new();
    registry.insert("down", Arc::new(unreachable_provider()));
    registry.insert("slow", Arc::new(silent_provider(1).await));
    let router = from(
        LOOPBACK,
        gateway(registry, ApiKeys::none(), GatewayOptions::default()),
    );
    let down = post(&router, "/v1/sign", json!({"payload": {"a": 1}})).await;
    assert_error(&down, StatusCode::BAD_GATEWAY, "kms_unavailable");
    let text = String::from_utf8_lossy(&down.raw).to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("never-in-a-log"),
        "{text}"
    );
    let slow = post(
        &router,
        "/v1/sign",
        json!({"text": "x", "provider": "slow"}),
    )
    .await;
    assert_error(&slow, StatusCode::GATEWAY_TIMEOUT, "kms_timeout");
    // One failing item does not fail the batch.
    let batch = post(
        &router,
        "/v1/encrypt",
        json!({"items": [{"data": "AA"}, {"data": "@"}]}),
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK);
    assert_eq!(batch.body["items"][0]["error"], "kms_unavailable");
    assert_eq!(batch.body["items"][1]["error"], "invalid_base64");
    // Not ready: the reason is given without internals.
    let ready = get(&router, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["status"], "unavailable");
    assert!(
        ready.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("kms_unavailable"),
        "{:?}",
        ready.body
    );
    assert_eq!(get(&router, "/healthz").await.body["status"], "ok");
    // The key set cannot be served partially.
    assert_error(
        &get(&router, "/.well-known/jwks.json").await,
        StatusCode::BAD_GATEWAY,
        "kms_unavailable",
    );
}

#[tokio::test]
async fn slow_requests_time_out_with_504() {
    let mut registry = ProviderRegistry::new();
    registry.insert("slow", Arc::new(silent_provider(30).await));
    let options = GatewayOptions {
        request_timeout: Duration::from_millis(300),
        ..GatewayOptions::default()
    };
    let router = from(LOOPBACK, gateway(registry, ApiKeys::none(), options));
    let started = std::time::Instant::now();
    let answer = post(&router, "/v1/sign", json!({"text": "x"})).await;
    // The provider knows the request's deadline: it stops waiting for the key manager in
    // time and says that is what was slow.
    assert_error(&answer, StatusCode::GATEWAY_TIMEOUT, "kms_timeout");
    assert!(started.elapsed() < Duration::from_millis(600));
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_slow_item_times_out_alone_and_readiness_answers_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = registry(dir.path());
    registry.insert("slow", Arc::new(silent_provider(30).await));
    let options = GatewayOptions {
        request_timeout: Duration::from_millis(1500),
        ..GatewayOptions::default()
    };
    let router = from(
        LOOPBACK,
        gateway(registry, ApiKeys::none(), options.clone()),
    );
    let batch = post(
        &router,
        "/v1/encrypt",
        json!({"items": [{"data": "AQID"}, {"data": "AQID", "provider": "slow"}, {"data": "BAUG"}]}),
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK, "{:?}", batch.body);
    let items = batch.body["items"].as_array().unwrap();
    assert!(
        items[0]["data"].is_string() && items[2]["data"].is_string(),
        "{items:?}"
    );
    // The provider gives up in time for the item's deadline and says the key manager was slow.
    assert_eq!(items[1]["error"], "kms_timeout", "{items:?}");

    let mut slow_default = ProviderRegistry::new();
    slow_default.insert("slow", Arc::new(silent_provider(30).await));
    let router = from(LOOPBACK, gateway(slow_default, ApiKeys::none(), options));
    let ready = get(&router, "/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.body
    );
    assert!(
        ready.body["reason"]
            .as_str()
            .unwrap()
            .starts_with("kms_timeout"),
        "{:?}",
        ready.body
    );
}

#[tokio::test]
async fn health_metrics_and_request_ids() {
    let dir = tempfile::tempdir().unwrap();
    let router = default_gateway(dir.path(), LOOPBACK);
    assert_eq!(get(&router, "/healthz").await.body, json!({"status": "ok"}));
    let ready = get(&router, "/readyz").await;
    assert_eq!(ready.body, json!({"status": "ready", "provider": "local"}));
    post(&router, "/v1/encrypt", json!({"data": "aGVsbG8"})).await;
    post(&router, "/v1/decrypt", json!({"data": "aGVsbG8"})).await;
    let tagged = send(
        &router,
        Request::get("/healthz")
            .header("x-request-id", "odoo-req-77")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(tagged.headers["x-request-id"], "odoo-req-77");
    let generated = get(&router, "/healthz").await;
    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty() && id != "odoo-req-77");
    let metrics = get(&router, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.raw).unwrap();
    for needle in [
        "g2p_gateway_requests_total{route=\"/v1/encrypt\",status=\"200\"}",
        "g2p_gateway_operation_duration_seconds_bucket{operation=\"encrypt\",provider=\"local\"",
        "g2p_gateway_errors_total{operation=\"decrypt\",kind=\"invalid_input\"}",
        "g2p_gateway_request_duration_seconds_count{route=\"/healthz\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[tokio::test]
async fn the_jwks_is_built_once_per_refresh_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = ProviderRegistry::new();
    registry.insert(
        "jwks-probe",
        Arc::new(LocalProvider::new(
            open_kms(dir.path()),
            LocalSettings::default(),
        )),
    );
    let options = GatewayOptions {
        jwks_refresh: Duration::from_secs(60),
        ..GatewayOptions::default()
    };
    let router = from(REMOTE, gateway(registry, ApiKeys::none(), options));
    let first = get(&router, "/.well-known/jwks.json").await;
    for _ in 0..3 {
        let again = get(&router, "/.well-known/jwks.json").await;
        assert_eq!(again.raw, first.raw);
    }
    let metrics = String::from_utf8(get(&router, "/metrics").await.raw).unwrap();
    let built = metrics
        .lines()
        .find(|l| {
            l.starts_with("g2p_gateway_operation_duration_seconds_count")
                && l.contains("operation=\"jwks\"")
                && l.contains("provider=\"jwks-probe\"")
        })
        .unwrap_or_else(|| panic!("no jwks count in\n{metrics}"));
    assert!(built.ends_with(" 1"), "{built}");
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408() {
    let dir = tempfile::tempdir().unwrap();
    let options = GatewayOptions {
        request_timeout: Duration::from_millis(600),
        ..GatewayOptions::default()
    };
    let router = from(
        LOOPBACK,
        gateway(registry(dir.path()), ApiKeys::none(), options),
    );
    let stalled = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let answer = send(
        &router,
        Request::post("/v1/encrypt")
            .header("content-type", "application/json")
            .body(Body::from_stream(stalled))
            .unwrap(),
    )
    .await;
    assert_error(&answer, StatusCode::REQUEST_TIMEOUT, "body_timeout");
}

/// A provider that only publishes the keys it is given.
#[derive(Debug)]
struct FixedKeys(g2p_encryption::JwkSet);

#[async_trait::async_trait]
impl g2p_encryption::EncryptionProvider for FixedKeys {
    fn kind(&self) -> &'static str {
        "fixed"
    }
    async fn encrypt(&self, _: &[u8]) -> Result<Vec<u8>, g2p_encryption::Error> {
        Err(g2p_encryption::Error::Configuration("keys only".into()))
    }
    async fn decrypt(&self, _: &[u8]) -> Result<Vec<u8>, g2p_encryption::Error> {
        Err(g2p_encryption::Error::Configuration("keys only".into()))
    }
    async fn jwt_sign(
        &self,
        _: &g2p_encryption::SignPayload,
        _: &g2p_encryption::SignOptions,
    ) -> Result<String, g2p_encryption::Error> {
        Err(g2p_encryption::Error::Configuration("keys only".into()))
    }
    async fn jwt_verify(
        &self,
        _: &str,
        _: Option<&[u8]>,
    ) -> Result<g2p_encryption::VerifiedJws, g2p_encryption::Error> {
        Err(g2p_encryption::Error::Configuration("keys only".into()))
    }
    async fn jwks(&self) -> Result<g2p_encryption::JwkSet, g2p_encryption::Error> {
        Ok(self.0.clone())
    }
}

#[tokio::test]
async fn one_key_id_one_key_in_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = registry(dir.path());
    let own = registry.get(Some("local")).unwrap().jwks().await.unwrap();
    // Another provider publishes a different key under one of our key ids.
    let mut impostor = own.keys[0].clone();
    let other = g2p_testkit::TestKey::generate("impostor");
    let other = g2p_encryption::Jwk::from_certificate(
        &g2p_encryption::cert::CertificateInfo::from_der(other.cert_der()).unwrap(),
        impostor.kid.clone(),
        impostor.key_use.unwrap(),
    );
    impostor.n = other.n.clone();
    registry.insert(
        "zz-impostor",
        Arc::new(FixedKeys(g2p_encryption::JwkSet {
            keys: vec![impostor.clone()],
        })),
    );
    let collisions = g2p_gateway::keys::collisions(&registry).await.unwrap();
    assert_eq!(collisions.len(), 1, "{collisions:?}");
    assert_eq!(collisions[0].left_out, "zz-impostor");
    let router = from(
        REMOTE,
        gateway(registry, ApiKeys::none(), GatewayOptions::default()),
    );
    let published = get(&router, "/.well-known/jwks.json").await;
    let keys = published.body["keys"].as_array().unwrap();
    let kid = impostor.kid.unwrap();
    let under_kid: Vec<_> = keys.iter().filter(|k| k["kid"] == kid.as_str()).collect();
    assert!(
        under_kid.iter().all(|k| k["n"] != impostor.n.as_str()),
        "the impostor's key was published"
    );
    assert!(!under_kid.is_empty());
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn every_key_operation_is_audited_without_data_or_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.log");
    let audit = g2p_encryption::audit::AuditLog::open(&g2p_encryption::audit::AuditSink::File {
        path: audit_path.clone(),
        max_bytes: 1 << 20,
        keep: 1,
    })
    .unwrap();
    let secret_key = "g2pk_audit-secret-key";
    let keys = ApiKeys::new(vec![
        ApiKey::from_hash(
            "openspp",
            &hash_key(secret_key),
            &[
                "encrypt".into(),
                "decrypt".into(),
                "sign".into(),
                "verify".into(),
            ],
        )
        .unwrap(),
    ]);
    let state = GatewayState::with_audit(
        registry(dir.path()),
        keys,
        GatewayOptions::default(),
        audit.clone(),
    )
    .unwrap();
    let router = from(REMOTE, app(state));
    let call = |path: &'static str, body: Value| {
        let router = router.clone();
        async move {
            let request = Request::post(path)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {secret_key}"))
                .header(
                    "x-request-id",
                    format!("req-{}", path.trim_start_matches("/v1/")),
                )
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send(&router, request).await
        }
    };
    let plaintext = "Amina Yusuf, 12 Market Road";
    let sealed = call(
        "/v1/encrypt",
        json!({"data": b64::encode_b64u(plaintext.as_bytes())}),
    )
    .await;
    let ct = sealed.body["data"].as_str().unwrap().to_string();
    let batch = call(
        "/v1/decrypt",
        json!({"items": [{"data": ct}, {"data": "bm90IGEgY2lwaGVydGV4dA"}]}),
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK);
    let signed = call("/v1/sign", json!({"payload": {"beneficiary": "B-1029"}})).await;
    let jws = signed.body["jws"].as_str().unwrap().to_string();
    call("/v1/verify", json!({"jws": jws})).await;
    // Another character in the middle of the signature.
    let at = jws.len() - 20;
    let swapped = if &jws[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &jws[..at], &jws[at + 1..]);
    call("/v1/verify", json!({"jws": tampered})).await;
    audit.flush().unwrap();

    let lines = audit_lines(&audit_path);
    let ops: Vec<&str> = lines
        .iter()
        .map(|l| l["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["encrypt", "decrypt", "sign", "verify", "verify"]);
    for line in &lines {
        assert_eq!(line["service"], "gateway");
        assert_eq!(line["caller"], "openspp");
        assert_eq!(line["provider"], "local");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert!(line["request_id"].as_str().unwrap().starts_with("req-"));
    }
    assert_eq!(lines[0]["application_id"], "REGISTRATION");
    assert_eq!(lines[0]["reference_id"], "ENCRYPT");
    assert_eq!(lines[0]["keys"].as_array().unwrap().len(), 1);
    assert_eq!(lines[0]["outcome"], "ok");
    // The batch: one line, two items, one done.
    assert_eq!(
        (lines[1]["items"].clone(), lines[1]["succeeded"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(lines[1]["outcome"], "partial");
    assert_eq!(
        lines[1]["keys"], lines[0]["keys"],
        "decrypted with the key that sealed"
    );
    assert_eq!(lines[2]["application_id"], "ID_REPO");
    assert_eq!(lines[3]["outcome"], "ok");
    assert_eq!(lines[4]["outcome"], "refused");
    // Nothing of the data, the tokens or the key is in the trail.
    let text = std::fs::read_to_string(&audit_path).unwrap();
    for secret in [
        plaintext,
        &b64::encode_b64u(plaintext.as_bytes()),
        &ct[..40],
        &jws[..40],
        &jws[jws.len() - 40..],
        secret_key,
        "B-1029",
    ] {
        assert!(!text.contains(secret), "{secret:?} in the audit trail");
    }
}

#[tokio::test]
async fn readiness_and_metrics_show_an_open_circuit() {
    let fake = g2p_testkit::FakeKeymanager::start().await;
    fake.current_key("REGISTRATION", "ENCRYPT");
    let plan = g2p_testkit::chaos::FaultPlan::default();
    let proxy = g2p_testkit::chaos::ChaosProxy::start(fake.addr(), 1, plan, plan).await;
    let mut settings = KeymanagerConfig::settings(
        &proxy.rewrite(&fake.api_base_url()),
        &proxy.rewrite(&fake.auth_url()),
        &fake.options().client_id,
        &fake.options().client_secret,
    );
    settings.max_attempts = Some(1);
    settings.breaker_threshold = Some(2);
    settings.breaker_cooldown = Some(30.0);
    let provider = KeymanagerProvider::new(settings.build().unwrap()).unwrap();
    let mut registry = ProviderRegistry::new();
    registry.insert("registry", Arc::new(provider));
    let router = from(
        LOOPBACK,
        gateway(registry, ApiKeys::none(), GatewayOptions::default()),
    );
    assert_eq!(get(&router, "/readyz").await.status, StatusCode::OK);
    proxy.down_for(Duration::from_secs(60));
    // The outage opens the circuit; readiness says why, and calls fail fast as
    // kms_unavailable without reaching the Keymanager.
    for _ in 0..2 {
        let answer = post(&router, "/v1/sign", json!({"text": "x"})).await;
        assert_error(&answer, StatusCode::BAD_GATEWAY, "kms_unavailable");
    }
    let before = proxy.counts().total_requests();
    let answer = post(&router, "/v1/sign", json!({"text": "x"})).await;
    assert_error(&answer, StatusCode::BAD_GATEWAY, "kms_unavailable");
    assert!(
        answer.body["description"]
            .as_str()
            .unwrap()
            .contains("fail fast"),
        "{:?}",
        answer.body
    );
    assert_eq!(proxy.counts().total_requests(), before);
    let ready = get(&router, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let reason = ready.body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("kms_unavailable") && reason.contains("fail fast"),
        "{reason}"
    );
    let metrics = String::from_utf8(get(&router, "/metrics").await.raw).unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("g2p_kms_breaker_state{target=\"keymanager\",url=")
                && l.ends_with("} 2")
        ),
        "{metrics}"
    );
}
