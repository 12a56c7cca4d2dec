//! Whatever a client sends to the four operations, the answer is never a 5xx: malformed JSON,
//! wrong types, unknown fields, bad base64, strange batches and garbage tokens are the
//! client's mistakes and get a 4xx (or a per-item error, or `valid: false`) in our format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use g2p_testkit::hostile::Tally;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tower::ServiceExt;

/// Field names the API knows, so that generated bodies reach past the first checks.
const FIELDS: [&str; 11] = [
    "data",
    "items",
    "provider",
    "payload",
    "text",
    "jws",
    "include_payload",
    "include_certificate",
    "include_cert_hash",
    "certificate_url",
    "other",
];

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[A-Za-z0-9_=+/.-]{0,40}".prop_map(Value::String),
        ".{0,20}".prop_map(Value::String),
        Just(Value::String("local".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS.to_vec()), inner), 0..5).prop_map(
                |pairs| {
                    let mut map = Map::new();
                    for (k, v) in pairs {
                        map.insert(k.to_string(), v);
                    }
                    Value::Object(map)
                }
            ),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn router() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let router = common::open_gateway(
        common::local_registry(dir.path()),
        SocketAddr::from(([127, 0, 0, 1], 9)),
    );
    (dir, router)
}

#[test]
fn no_client_body_gets_a_server_error() {
    let tally = Tally::new("g2p-gateway API", "no client body gets a server error");
    proptest!(ProptestConfig::with_cases(192), |(route in prop::sample::select(vec!["/v1/encrypt", "/v1/decrypt", "/v1/sign", "/v1/verify"]),
        body in body())| {
        tally.input();
        static RUNTIME: std::sync::OnceLock<(tokio::runtime::Runtime, tempfile::TempDir, Router)> =
            std::sync::OnceLock::new();
        let (runtime, _dir, router) = RUNTIME.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (dir, router) = runtime.block_on(async { router() });
            (runtime, dir, router)
        });
        let (status, answer) = runtime.block_on(async {
            let request = Request::post(route)
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes))
        });
        prop_assert!(status < 500, "{} answered {} to {:?}: {:?}", route, status, String::from_utf8_lossy(&body), answer);
        let answer = answer.unwrap();
        if status >= 400 {
            prop_assert!(answer["error"].is_string() && answer["description"].is_string(), "{answer}");
        }
        if let Some(items) = answer.get("items").and_then(Value::as_array) {
            for item in items {
                if let Some(kind) = item.get("error") {
                    prop_assert!(
                        !kind.as_str().unwrap_or("").starts_with("kms_")
                            && kind != "internal"
                            && kind != "configuration",
                        "a client's item got a server error: {item}"
                    );
                }
            }
        }
    });
    tally.report();
}
