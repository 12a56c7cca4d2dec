//! A fake MOSIP Keymanager and Keycloak token endpoint on `127.0.0.1:0`, following the
//! protocol spec (envelope, KER codes, cookie auth, double-JSON 401 bodies, the 500 on data
//! without a splitter), with switches for fault injection and counters for assertions.
//!
//! * this module: the fake, its options, keys and controls;
//! * `token`: the Keycloak token endpoint;
//! * `wire`: authentication, the envelope and the dispatch of Keymanager calls;
//! * `crypto`: `/encrypt` and `/decrypt`;
//! * `jws`: `/jwtSign`, `/jwsSign` and `/jwtVerify`.

mod crypto;
mod jws;
mod token;
mod wire;

use crypto::{decode, decrypt, encrypt};
use jws::{jwt_sign, jwt_verify};
use token::token;
use wire::{ker, km_get, km_post};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use serde_json::{Value, json};

use crate::{TestKey, b64u, cipher, jose, unb64};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Accepted client id.
    pub client_id: String,
    /// Accepted client secret.
    pub client_secret: String,
    /// Lifetime of issued tokens, seconds.
    pub token_lifetime: i64,
    /// Whether the token response carries `expires_in` (else only the JWT `exp`).
    pub send_expires_in: bool,
    /// Realm name in the token URL.
    pub realm: String,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            client_id: "openg2p-admin-client".into(),
            client_secret: "s3cr3t-value".into(),
            token_lifetime: 300,
            send_expires_in: true,
            realm: "openg2p".into(),
        }
    }
}

/// A key of the fake with its MOSIP identity.
#[derive(Debug)]
pub struct FakeKey {
    /// The key.
    pub key: Arc<TestKey>,
    /// Application id.
    pub app: String,
    /// Reference id.
    pub reference: String,
    /// keyId per spec 6.5.
    pub key_id: String,
}

#[derive(Default)]
struct Inner {
    keys: Vec<FakeKey>,
    tokens: HashMap<String, i64>,
    token_requests: usize,
    calls: HashMap<String, usize>,
    bodies: HashMap<String, Value>,
    cookies: Vec<Option<String>>,
    reject_401: usize,
    fail_next: Option<(String, String)>,
    delay: Option<Duration>,
    mismatched_certificate: Option<Arc<TestKey>>,
    day_counter: u32,
}

// Shared state of the fake.
struct FakeState {
    options: FakeOptions,
    realm_key: TestKey,
    inner: Mutex<Inner>,
}

/// A running fake.
#[derive(Clone)]
pub struct FakeKeymanager {
    addr: SocketAddr,
    state: Arc<FakeState>,
}

impl std::fmt::Debug for FakeKeymanager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKeymanager")
            .field("addr", &self.addr)
            .finish()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// keyId per spec 6.5: b64u(SHA-256(SHA-1(app_ref_MM-dd-yyyy))).
pub fn key_id_for(unique_value: &str) -> String {
    let sha1 = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        unique_value.as_bytes(),
    );
    b64u(&sha256(sha1.as_ref()))
}

impl FakeKeymanager {
    /// Starts with default options.
    pub async fn start() -> Self {
        Self::start_with(FakeOptions::default()).await
    }

    /// Starts with the given options.
    pub async fn start_with(options: FakeOptions) -> Self {
        let state = Arc::new(FakeState {
            options,
            realm_key: TestKey::generate("realm"),
            inner: Mutex::new(Inner::default()),
        });
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        FakeKeymanager { addr, state }
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1/keymanager`
    pub fn api_base_url(&self) -> String {
        format!("http://{}/v1/keymanager", self.addr)
    }

    /// The token endpoint URL.
    pub fn auth_url(&self) -> String {
        format!(
            "http://{}/realms/{}/protocol/openid-connect/token",
            self.addr, self.state.options.realm
        )
    }

    /// The options in use.
    pub fn options(&self) -> &FakeOptions {
        &self.state.options
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().unwrap()
    }

    /// Successful and failed token requests so far.
    pub fn token_requests(&self) -> usize {
        self.inner().token_requests
    }

    /// Calls to a Keymanager endpoint (e.g. `encrypt`, `getCertificate`).
    pub fn calls(&self, endpoint: &str) -> usize {
        self.inner().calls.get(endpoint).copied().unwrap_or(0)
    }

    /// The last request body received by a POST endpoint.
    pub fn last_body(&self, endpoint: &str) -> Option<Value> {
        self.inner().bodies.get(endpoint).cloned()
    }

    /// The `Cookie` header of every Keymanager call so far.
    pub fn cookies(&self) -> Vec<Option<String>> {
        self.inner().cookies.clone()
    }

    /// The next `n` Keymanager calls answer 401 whatever their token.
    pub fn reject_next_with_401(&self, n: usize) {
        self.inner().reject_401 = n;
    }

    /// The next Keymanager call answers HTTP 200 with this KER error.
    pub fn fail_next_with(&self, code: &str, message: &str) {
        self.inner().fail_next = Some((code.into(), message.into()));
    }

    /// Delays every Keymanager answer (for timeouts).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.inner().delay = delay;
    }

    /// `getCertificate` for the given pair answers a certificate whose private key the fake
    /// does not hold (as if a proxy swapped it), so locally sealed data does not decrypt.
    pub fn serve_mismatched_certificate(&self, on: bool) {
        self.inner().mismatched_certificate = on.then(|| Arc::new(TestKey::generate("intruder")));
    }

    /// The current key of `(app, reference)`, created when missing.
    pub fn current_key(&self, app: &str, reference: &str) -> Arc<TestKey> {
        current(&mut self.inner(), app, reference).0
    }

    /// The keyId of the current key of `(app, reference)`.
    pub fn current_key_id(&self, app: &str, reference: &str) -> String {
        current(&mut self.inner(), app, reference).1
    }

    /// Adds a new current key for `(app, reference)`; older keys keep decrypting.
    pub fn rotate(&self, app: &str, reference: &str) -> String {
        let mut inner = self.inner();
        new_key(&mut inner, app, reference)
    }
}

fn new_key(inner: &mut Inner, app: &str, reference: &str) -> String {
    inner.day_counter += 1;
    let key_id = key_id_for(&format!(
        "{app}_{reference}_01-{:02}-2024",
        inner.day_counter
    ));
    inner.keys.push(FakeKey {
        key: Arc::new(TestKey::generate(&format!("{app}-{reference}"))),
        app: app.into(),
        reference: reference.into(),
        key_id: key_id.clone(),
    });
    key_id
}

fn current(inner: &mut Inner, app: &str, reference: &str) -> (Arc<TestKey>, String) {
    if !inner
        .keys
        .iter()
        .any(|k| k.app == app && k.reference == reference)
    {
        new_key(inner, app, reference);
    }
    let k = inner
        .keys
        .iter()
        .rev()
        .find(|k| k.app == app && k.reference == reference)
        .unwrap();
    (k.key.clone(), k.key_id.clone())
}

fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/realms/{realm}/protocol/openid-connect/token", post(token))
        .route("/v1/keymanager/{endpoint}", post(km_post).get(km_get))
        .with_state(state)
}

fn rand16() -> [u8; 16] {
    let mut r = [0u8; 16];
    aws_lc_rs::rand::fill(&mut r).unwrap();
    r
}

fn response_time() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Known tokens: the set of issued tokens, exposed so tests can expire them.
impl FakeKeymanager {
    /// Expires every issued token now (as if their lifetime had passed).
    pub fn expire_all_tokens(&self) {
        for exp in self.inner().tokens.values_mut() {
            *exp = now() - 1;
        }
    }

    /// The set of tokens issued so far.
    pub fn issued_tokens(&self) -> HashSet<String> {
        self.inner().tokens.keys().cloned().collect()
    }
}
