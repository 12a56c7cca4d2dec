//! The OpenAPI document against the real API: every route is described, every described
//! path is served, and real answers validate against the schemas the document gives them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use g2p_encryption::b64;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Every route the gateway serves.
const ROUTES: [(&str, &str); 9] = [
    ("post", "/v1/encrypt"),
    ("post", "/v1/decrypt"),
    ("post", "/v1/sign"),
    ("post", "/v1/verify"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

struct Checker {
    router: Router,
    doc: Value,
    checked: Vec<(String, String, u16)>,
}

impl Checker {
    /// Calls the route and validates the answer against the document's schema for that
    /// route, method, status and content type.
    async fn check(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path)
            .header("content-type", "application/json")
            .body(match &body {
                Some(b) => Body::from(serde_json::to_vec(b).unwrap()),
                None => Body::empty(),
            })
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .unwrap_or_default();
        let raw = response.into_body().collect().await.unwrap().to_bytes();
        let described = &self.doc["paths"][path][method]["responses"][status.to_string()];
        assert!(
            described.is_object(),
            "{method} {path} answered {status}, which the document does not describe"
        );
        let content = &described["content"][&content_type];
        assert!(
            content.is_object(),
            "{method} {path} {status}: content type {content_type:?} not described: {described}"
        );
        let instance: Value = if content_type.ends_with("json") {
            serde_json::from_slice(&raw).unwrap()
        } else {
            Value::String(String::from_utf8(raw.to_vec()).unwrap())
        };
        let mut schema = content["schema"].clone();
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{method} {path} {status}: schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: answer does not match its schema: {errors:?}\n{instance}"
        );
        self.checked.push((method.into(), path.into(), status));
        instance
    }
}

#[tokio::test]
async fn document_matches_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let router = common::open_gateway(
        common::local_registry(dir.path()),
        SocketAddr::from(([127, 0, 0, 1], 1)),
    );
    let raw = router
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let doc: Value = serde_json::from_slice(&raw).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );

    // Every route is described, and the document describes nothing else.
    for (method, path) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not in the document"
        );
    }
    let described: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        ROUTES.len(),
        "the document describes routes the gateway does not serve"
    );
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    let mut c = Checker {
        router,
        doc,
        checked: Vec::new(),
    };
    let data = b64::encode_b64u(b"a beneficiary record");
    let ct = c
        .check("post", "/v1/encrypt", Some(json!({"data": data})))
        .await;
    c.check(
        "post",
        "/v1/encrypt",
        Some(json!({"items": [{"data": data}, {"data": "@"}]})),
    )
    .await;
    c.check("post", "/v1/encrypt", Some(json!({"data": 1})))
        .await;
    c.check("post", "/v1/decrypt", Some(json!({"data": ct["data"]})))
        .await;
    c.check(
        "post",
        "/v1/decrypt",
        Some(json!({"items": [{"data": ct["data"]}, {}]})),
    )
    .await;
    let mut tampered = b64::decode_lenient(ct["data"].as_str().unwrap()).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    c.check(
        "post",
        "/v1/decrypt",
        Some(json!({"data": b64::encode_b64u(&tampered)})),
    )
    .await;
    let jws = c
        .check(
            "post",
            "/v1/sign",
            Some(json!({"payload": {"id": 7}, "include_certificate": true})),
        )
        .await;
    c.check(
        "post",
        "/v1/sign",
        Some(json!({"items": [{"text": "t"}, {"payload": 1, "text": "t"}]})),
    )
    .await;
    c.check("post", "/v1/verify", Some(json!({"jws": jws["jws"]})))
        .await;
    c.check("post", "/v1/verify", Some(json!({"jws": "a.b.c"})))
        .await;
    c.check(
        "post",
        "/v1/verify",
        Some(json!({"items": [{"jws": jws["jws"]}, {"jws": "x"}]})),
    )
    .await;
    c.check("get", "/.well-known/jwks.json", None).await;
    c.check("get", "/healthz", None).await;
    c.check("get", "/readyz", None).await;
    c.check("get", "/metrics", None).await;
    c.check("get", "/openapi.json", None).await;
    // The checker itself can fail: answers of the wrong shape do not validate.
    let mut schema = c.doc["paths"]["/v1/encrypt"]["post"]["responses"]["200"]["content"]
        ["application/json"]["schema"]
        .clone();
    schema["components"] = c.doc["components"].clone();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap();
    assert!(validator.is_valid(&json!({"data": "AAEC"})));
    assert!(!validator.is_valid(&json!({"data": 5})));
    assert!(!validator.is_valid(&json!({"ciphertext": "AAEC"})));
    assert!(!validator.is_valid(&json!({"items": [{"jws": 1}]})));
    for (method, path) in ROUTES {
        assert!(
            c.checked
                .iter()
                .any(|(m, p, s)| m == method && p == path && *s == 200),
            "{method} {path}: no 200 answer was validated"
        );
    }
}
