//! Whatever an authenticated client sends to `kms serve`, the answer is never a server
//! error: malformed JSON, wrong types, unknown fields, bad base64, tampered ciphertexts and
//! tokens, odd ids and query strings get a 4xx or a KER error in the MOSIP envelope, never
//! HTTP 5xx nor `KER-KMS-500`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use g2p_kms::server::auth::{Client, Realm};
use g2p_kms::server::{ServerState, app};
use g2p_kms::{Kek, Kms, SignSpec, StoreOptions};
use g2p_mosip::cipher::CipherParams;
use g2p_testkit::b64u;
use g2p_testkit::hostile::Tally;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// What the generated requests are made of: real values (a ciphertext, a token, a
/// certificate) next to near-misses of them.
struct Material {
    ciphertext: String,
    token: String,
    certificate: String,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    router: Router,
    bearer: String,
    material: Arc<Material>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kms = Arc::new(
            Kms::open(
                dir.path(),
                Kek::load(dir.path(), None).unwrap(),
                StoreOptions::default(),
            )
            .unwrap(),
        );
        let ciphertext = kms
            .encrypt(
                "REGISTRATION",
                "ENCRYPT",
                &CipherParams::default(),
                b"beneficiary",
            )
            .unwrap();
        let token = kms
            .sign(&SignSpec {
                application_id: "ID_REPO",
                reference_id: "",
                payload: br#"{"amount":150}"#,
                include_payload: true,
                include_certificate: true,
                include_cert_hash: false,
                certificate_url: None,
                algorithm: g2p_encryption::Alg::Rs256,
                b64: true,
            })
            .unwrap();
        let certificate = kms
            .certificate_for("ID_REPO", "", g2p_kms::Minting::Admin)
            .unwrap()
            .certificate
            .to_pem();
        let realm = Realm::new(
            "openg2p",
            "http://127.0.0.1:9",
            vec![Client::parse("ops:ops-secret:REGISTRATION_ADMIN,KEY_MAKER").unwrap()],
            300,
        )
        .unwrap();
        let router = app(ServerState::new(kms, realm));
        let bearer = runtime.block_on(async {
            let request = Request::post("/realms/openg2p/protocol/openid-connect/token")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(
                    "grant_type=client_credentials&client_id=ops&client_secret=ops-secret",
                ))
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            format!("Bearer {}", answer["access_token"].as_str().unwrap())
        });
        Fixture {
            runtime,
            _dir: dir,
            router,
            bearer,
            material: Arc::new(Material {
                ciphertext: b64u(&ciphertext),
                token,
                certificate,
            }),
        }
    })
}

/// A real value, the same with one character changed, or cut short.
fn near(real: String) -> impl Strategy<Value = String> {
    let chars: Vec<char> = real.chars().collect();
    let len = chars.len().max(1);
    let changed = chars.clone();
    prop_oneof![
        Just(real),
        (
            0..len,
            prop::sample::select(vec!['A', '_', '-', '.', '=', ' ', 'é'])
        )
            .prop_map(move |(i, c)| {
                let mut chars = changed.clone();
                if let Some(slot) = chars.get_mut(i) {
                    *slot = c;
                }
                chars.into_iter().collect()
            }),
        (0..len).prop_map(move |i| chars[..i.min(chars.len())].iter().collect()),
    ]
}

/// Ids the key manager knows, ids it refuses, and odd ones.
fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "REGISTRATION", "ENCRYPT", "ID_REPO", "KERNEL", "SIGN", "ROOT", "PARTNER", "",
        ])
        .prop_map(|s| Value::String(s.into())),
        1 => "[A-Za-z0-9_.-]{0,30}".prop_map(Value::String),
        1 => ".{0,12}".prop_map(Value::String),
    ]
}

fn base64(max: usize) -> impl Strategy<Value = Value> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(|b| Value::String(b64u(&b)))
}

/// Any JSON value, to put where another type is expected.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,8}", inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A value of the type a field of the API expects; when `wild`, anything now and then.
fn value_for(field: &'static str, wild: bool) -> BoxedStrategy<Value> {
    let m = &fixture().material;
    let typed: BoxedStrategy<Value> = match field {
        "applicationId" | "referenceId" => id().boxed(),
        "data" | "dataToSign" | "actualData" => prop_oneof![
            3 => near(m.ciphertext.clone()).prop_map(Value::String),
            2 => Just(Value::String(b64u(br#"{"amount":150}"#))),
            1 => base64(600),
            1 => ".{0,40}".prop_map(Value::String),
        ]
        .boxed(),
        "jwtSignatureData" => near(m.token.clone()).prop_map(Value::String).boxed(),
        "certificateData" => near(m.certificate.clone()).prop_map(Value::String).boxed(),
        "salt" | "aad" => base64(40).boxed(),
        "timeStamp" => prop_oneof![
            4 => Just(Value::String("2026-12-04T10:00:00.000Z".into())),
            1 => ".{0,24}".prop_map(Value::String),
        ]
        .boxed(),
        "signAlgorithm" => prop::sample::select(vec!["RS256", "PS256", "ES256", "none", ""])
            .prop_map(|s| Value::String(s.into()))
            .boxed(),
        "commonName" | "organization" | "country" | "certificateUrl" | "domain" => {
            ".{0,30}".prop_map(Value::String).boxed()
        }
        _ => any::<bool>().prop_map(Value::Bool).boxed(),
    };
    if wild {
        prop_oneof![3 => typed, 1 => any_json()].boxed()
    } else {
        typed
    }
}

/// Field names of the API's requests.
const FIELDS: [&str; 24] = [
    "applicationId",
    "referenceId",
    "data",
    "salt",
    "aad",
    "timeStamp",
    "prependThumbprint",
    "dataToSign",
    "includePayload",
    "includeCertificate",
    "includeCertHash",
    "certificateUrl",
    "validateJson",
    "b64JWSHeaderParam",
    "signAlgorithm",
    "jwtSignatureData",
    "actualData",
    "certificateData",
    "validateTrust",
    "domain",
    "force",
    "commonName",
    "organization",
    "country",
];

/// A request object: each field present or not, with values of the right type, or (one
/// request in five) of any type now and then.
fn request() -> impl Strategy<Value = Value> {
    prop::bool::weighted(0.2).prop_flat_map(|wild| {
        let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = FIELDS
            .iter()
            .map(|&f| {
                let value = value_for(f, wild).prop_map(move |v| (f.to_string(), v));
                let core = [
                    "applicationId",
                    "referenceId",
                    "data",
                    "timeStamp",
                    "dataToSign",
                    "jwtSignatureData",
                ];
                prop::option::weighted(if core.contains(&f) { 0.9 } else { 0.4 }, value).boxed()
            })
            .collect();
        fields.prop_map(|pairs| Value::Object(pairs.into_iter().flatten().collect()))
    })
}

/// Mostly an envelope around a request object, sometimes anything at all.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let envelope = (request(), any::<bool>()).prop_map(|(request, dated)| {
        let mut map = Map::new();
        map.insert("id".into(), json!("string"));
        map.insert("version".into(), json!("1.0"));
        if dated {
            map.insert("requesttime".into(), json!("2026-12-04T10:00:00.000Z"));
        }
        map.insert("request".into(), request);
        serde_json::to_vec(&Value::Object(map)).unwrap()
    });
    prop_oneof![
        8 => envelope,
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn route() -> impl Strategy<Value = (&'static str, String)> {
    let post = prop::sample::select(vec![
        "/v1/keymanager/encrypt",
        "/v1/keymanager/decrypt",
        "/v1/keymanager/jwtSign",
        "/v1/keymanager/jwsSign",
        "/v1/keymanager/jwtVerify",
        "/v1/keymanager/uploadOtherDomainCertificate",
        "/v1/keymanager/generateMasterKey/CERTIFICATE",
        "/v1/keymanager/generateMasterKey/CSR",
        "/v1/keymanager/generateMasterKey/other",
    ])
    .prop_map(|p| ("POST", p.to_string()));
    let put = Just(("PUT", "/v1/keymanager/revokeKey".to_string()));
    let get = (
        prop::sample::select(vec![
            "/v1/keymanager/getCertificate",
            "/v1/keymanager/getAllCertificates",
        ]),
        prop::sample::select(vec![
            "REGISTRATION",
            "ID_REPO",
            "KERNEL",
            "ROOT",
            "x%00y",
            "",
        ]),
        "[A-Za-z0-9_%&=.-]{0,20}",
    )
        .prop_map(|(path, app, rest)| {
            (
                "GET",
                format!("{path}?applicationId={app}&referenceId={rest}"),
            )
        });
    prop_oneof![8 => post, 1 => put, 2 => get]
}

#[test]
fn no_client_request_gets_a_server_error() {
    let tally = Tally::new("g2p-kms serve API", "no client request gets a server error");
    let f = fixture();
    proptest!(ProptestConfig::with_cases(256), |((method, path) in route(), body in body())| {
        tally.input();
        let (status, answer) = f.runtime.block_on(async {
            let request = Request::builder()
                .method(method)
                .uri(&path)
                .header("content-type", "application/json")
                .header("authorization", &f.bearer)
                .body(Body::from(body.clone()))
                .unwrap();
            let response = f.router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes))
        });
        let shown = String::from_utf8_lossy(&body);
        prop_assert!(status < 500, "{} {} answered {} to {}: {:?}", method, path, status, shown, answer);
        let answer = answer.map_err(|e| TestCaseError::fail(format!("{path}: not JSON: {e}")))?;
        let errors = answer["errors"].as_array().cloned().unwrap_or_default();
        for error in &errors {
            prop_assert!(error["errorCode"] != "KER-KMS-500", "{} {} to {}: {}", method, path, shown, answer);
        }
        if answer["response"].is_null() {
            prop_assert!(!errors.is_empty(), "{} {}: neither response nor errors: {}", method, path, answer);
        }
    });
    tally.report();
}
