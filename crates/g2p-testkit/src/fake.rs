//! A fake MOSIP Keymanager and Keycloak token endpoint on `127.0.0.1:0`, following the
//! protocol spec (envelope, KER codes, cookie auth, double-JSON 401 bodies, the 500 on data
//! without a splitter), with switches for fault injection and counters for assertions.

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

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn token(
    State(state): State<Arc<FakeState>>,
    Path(realm): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.inner.lock().unwrap().token_requests += 1;
    if realm != state.options.realm {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "Realm does not exist",
        );
    }
    let Some(grant) = form.get("grant_type") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        );
    };
    if grant != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    if form.get("client_id") != Some(&state.options.client_id)
        || form.get("client_secret") != Some(&state.options.client_secret)
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let exp = now() + state.options.token_lifetime;
    let claims = json!({
        "exp": exp, "iat": now(), "jti": b64u(&rand16()),
        "iss": format!("http://keycloak/realms/{}", state.options.realm),
        "azp": state.options.client_id,
        "preferred_username": format!("service-account-{}", state.options.client_id),
        "realm_access": {"roles": ["REGISTRATION_ADMIN"]},
        "scope": "profile email",
    });
    let jwt = jose::sign(
        &state.realm_key,
        &json!({"alg": "RS256", "typ": "JWT", "kid": "realm-key"}),
        claims.to_string().as_bytes(),
        false,
    );
    state.inner.lock().unwrap().tokens.insert(jwt.clone(), exp);
    let mut body = json!({
        "access_token": jwt, "refresh_expires_in": 0, "token_type": "Bearer",
        "not-before-policy": 0, "scope": "profile email",
    });
    if state.options.send_expires_in {
        body["expires_in"] = json!(state.options.token_lifetime);
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
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

fn envelope(
    id: &Value,
    version: &Value,
    response: Option<Value>,
    errors: Option<Value>,
) -> Response {
    axum::Json(json!({
        "id": id, "version": version, "responsetime": response_time(), "metadata": null,
        "response": response, "errors": errors,
    }))
    .into_response()
}

fn ker<T>(code: &str, message: &str) -> Result<T, (String, String)> {
    Err((code.into(), message.into()))
}

/// The 401 of the 1.2.x/1.3.x auth adapter: two JSON documents back to back (spec Q4).
fn unauthorized() -> Response {
    let one = json!({"id": null, "version": null, "responsetime": response_time(), "metadata": null,
        "response": null, "errors": [{"errorCode": "KER-ATH-401", "message": "Authentication Failed"}]});
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{one}{one}"),
    )
        .into_response()
}

/// Checks the cookie; returns a response to send instead when the call is refused.
async fn admit(state: &FakeState, endpoint: &str, headers: &HeaderMap) -> Option<Response> {
    let delay = {
        let mut inner = state.inner.lock().unwrap();
        *inner.calls.entry(endpoint.to_string()).or_default() += 1;
        let cookie = headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        inner.cookies.push(cookie);
        inner.delay
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let token = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix("Authorization="))
        })
        .map(str::to_string);
    let mut inner = state.inner.lock().unwrap();
    if inner.reject_401 > 0 {
        inner.reject_401 -= 1;
        return Some(unauthorized());
    }
    match token.and_then(|t| inner.tokens.get(&t).copied()) {
        Some(exp) if exp > now() => None,
        _ => Some(unauthorized()),
    }
}

async fn km_get(
    State(state): State<Arc<FakeState>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admit(&state, &endpoint, &headers).await {
        return refused;
    }
    let result = {
        let mut inner = state.inner.lock().unwrap();
        if let Some((code, message)) = inner.fail_next.take() {
            Err((code, message))
        } else {
            match query.get("applicationId").filter(|a| !a.is_empty()) {
                None => ker(
                    "KER-KMS-005",
                    "Required request parameter 'applicationId' for method parameter type String is not present",
                ),
                Some(app) => {
                    let reference = query.get("referenceId").cloned().unwrap_or_default();
                    match endpoint.as_str() {
                        "getCertificate" => Ok(get_certificate(&mut inner, app, &reference)),
                        "getAllCertificates" => Ok(get_all_certificates(&inner, app, &reference)),
                        _ => return StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }
        }
    };
    match result {
        Ok(v) => envelope(&Value::Null, &Value::Null, Some(v), None),
        Err((code, message)) => envelope(
            &Value::Null,
            &Value::Null,
            None,
            Some(json!([{"errorCode": code, "message": message}])),
        ),
    }
}

fn get_certificate(inner: &mut Inner, app: &str, reference: &str) -> Value {
    let (key, _) = current(inner, app, reference);
    let served = inner.mismatched_certificate.clone().unwrap_or(key);
    let t = response_time();
    json!({"certificate": served.cert_pem(), "certSignRequest": null, "issuedAt": t, "expiryAt": "2099-01-01T00:00:00.000Z", "timestamp": t})
}

fn get_all_certificates(inner: &Inner, app: &str, reference: &str) -> Value {
    let all: Vec<Value> = inner
        .keys
        .iter()
        .filter(|k| k.app == app && k.reference == reference)
        .map(|k| json!({"certificateData": k.key.cert_pem(), "issuedAt": response_time(), "expiryAt": "2099-01-01T00:00:00.000Z", "keyId": k.key_id}))
        .collect();
    json!({"allCertificates": all})
}

async fn km_post(
    State(state): State<Arc<FakeState>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = admit(&state, &endpoint, &headers).await {
        return refused;
    }
    let Ok(wrapper) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let (id, version) = (wrapper["id"].clone(), wrapper["version"].clone());
    let result = {
        let mut inner = state.inner.lock().unwrap();
        inner.bodies.insert(endpoint.clone(), wrapper.clone());
        if let Some((code, message)) = inner.fail_next.take() {
            Err((code, message))
        } else {
            let request = &wrapper["request"];
            match endpoint.as_str() {
                "encrypt" => encrypt(&mut inner, request),
                "decrypt" => match decrypt(&inner, request) {
                    Err((code, _)) if code == "KER-KMS-500" => {
                        let body = json!({"id": id, "version": version, "responsetime": response_time(), "metadata": null, "response": null,
                            "errors": [{"errorCode": "KER-KMS-500", "message": null}]});
                        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body))
                            .into_response();
                    }
                    other => other,
                },
                "jwtSign" => jwt_sign(&mut inner, request, true),
                "jwsSign" => jwt_sign(&mut inner, request, false),
                "jwtVerify" => jwt_verify(&mut inner, request),
                _ => return StatusCode::NOT_FOUND.into_response(),
            }
        }
    };
    match result {
        Ok(v) => envelope(&id, &version, Some(v), None),
        Err((code, message)) => envelope(
            &id,
            &version,
            None,
            Some(json!([{"errorCode": code, "message": message}])),
        ),
    }
}

fn opt_b64(request: &Value, field: &str) -> Result<Option<Vec<u8>>, (String, String)> {
    match request[field].as_str() {
        None => Ok(None),
        Some(s) if s.trim().len() < 2 => ker(
            "KER-KMS-005",
            &format!("request.{field} should not be empty"),
        ),
        Some(s) => decode(s).map(Some),
    }
}

fn decode(s: &str) -> Result<Vec<u8>, (String, String)> {
    use base64::Engine as _;
    let t = s.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
        .map_err(|_| {
            (
                "KER-CRY-003".to_string(),
                " input data is not base64 encoded".to_string(),
            )
        })
}

fn validate_crypto(request: &Value) -> Result<(String, String, Vec<u8>), (String, String)> {
    let app = request["applicationId"].as_str().unwrap_or_default();
    if app.trim().is_empty() {
        return ker(
            "KER-KMS-005",
            "request.applicationId should not be null or empty",
        );
    }
    let ts = request["timeStamp"].as_str();
    match ts {
        None => return ker("KER-KMS-005", "request.timeStamp must not be null"),
        Some(t) if t.len() != 24 || !t.ends_with('Z') || &t[19..20] != "." => {
            return ker("KER-KMS-005", "Invalid format for request.timeStamp");
        }
        _ => {}
    }
    let data = request["data"].as_str().unwrap_or_default();
    if data.trim().is_empty() {
        return ker("KER-KMS-005", "request.data should not be null or empty");
    }
    Ok((
        app.into(),
        request["referenceId"].as_str().unwrap_or_default().into(),
        decode(data)?,
    ))
}

fn encrypt(inner: &mut Inner, request: &Value) -> Result<Value, (String, String)> {
    let (app, reference, data) = validate_crypto(request)?;
    let (salt, aad) = (opt_b64(request, "salt")?, opt_b64(request, "aad")?);
    if reference.trim().is_empty() {
        return ker(
            "KER-CRY-011",
            "Not Allowed to preform encryption with Master Key. Use Base/Encrypt key to encrypt data.",
        );
    }
    let (key, _) = current(inner, &app, &reference);
    Ok(json!({"data": b64u(&cipher::seal(&key, salt.as_deref(), aad.as_deref(), &data))}))
}

fn decrypt(inner: &Inner, request: &Value) -> Result<Value, (String, String)> {
    let (app, _reference, data) = validate_crypto(request)?;
    let (salt, aad) = (opt_b64(request, "salt")?, opt_b64(request, "aad")?);
    let (_, tp, _, _) = match cipher::split(&data) {
        Ok(parts) => parts,
        Err(cipher::OpenError::NoSplitter) => return ker("KER-KMS-500", ""),
        Err(_) => {
            return ker(
                "KER-CRY-003",
                "data sent to decrypt is without key splitter or invalid",
            );
        }
    };
    let Some(owner) = inner.keys.iter().find(|k| k.key.thumbprint() == tp) else {
        return ker(
            "KER-KMS-025",
            "Key Not found for the thumbprint prepended in encrypted data.",
        );
    };
    if owner.app != app {
        return ker(
            "KER-KMS-024",
            "Application Id & Reference Id not matching with the input thumbprint.",
        );
    }
    match cipher::open(&owner.key, salt.as_deref(), aad.as_deref(), &data) {
        Ok(pt) => Ok(json!({"data": b64u(&pt)})),
        Err(cipher::OpenError::Tag) => ker("KER-FSE-004", "Tag mismatch"),
        Err(cipher::OpenError::TooShort) => ker(
            "KER-FSE-002",
            "Encrypted data too short for ciphertext and IV.",
        ),
        Err(cipher::OpenError::Unwrap) => ker(
            "KER-KMS-019",
            "Not able to decrypt Symmetric Key using the Private Key.",
        ),
        Err(_) => ker(
            "KER-CRY-003",
            "data sent to decrypt is without key splitter or invalid",
        ),
    }
}

fn sign_key_ids(request: &Value) -> Result<(String, String), (String, String)> {
    let app = request["applicationId"].as_str().unwrap_or_default();
    let (app, reference) = if app.is_empty() {
        ("KERNEL", "SIGN")
    } else {
        match request["referenceId"].as_str() {
            None => return ker("KER-KMS-500", "NullPointerException"),
            Some(r) => (app, r),
        }
    };
    if !(reference.is_empty() || (app == "KERNEL" && reference == "SIGN")) {
        return ker(
            "KER-KMS-020",
            "Signing operation not allowed for the provided application id & reference id.",
        );
    }
    Ok((app.into(), reference.into()))
}

fn jwt_sign(
    inner: &mut Inner,
    request: &Value,
    validate_json: bool,
) -> Result<Value, (String, String)> {
    let data = request["dataToSign"].as_str().unwrap_or_default();
    if data.trim().is_empty() {
        return ker("KER-KMS-005", "request.dataToSign must not be blank");
    }
    if data.contains('+') || data.contains('/') {
        return ker("KER-CRY-003", " input data is not base64 encoded");
    }
    let payload = decode(data)?;
    let validate = validate_json && request.get("validateJson").is_none()
        || request["validateJson"].as_bool() == Some(true);
    if validate && serde_json::from_slice::<Value>(&payload).is_err() {
        return ker("KER-JWS-103", "Data to sign is not valid JSON.");
    }
    if !validate_json && request["validateJson"].is_null() {
        return ker("KER-KMS-500", "NullPointerException");
    }
    let (app, reference) = sign_key_ids(request)?;
    let (key, key_id) = current(inner, &app, &reference);
    let mut header = serde_json::Map::new();
    header.insert(
        "alg".into(),
        json!(request["signAlgorithm"].as_str().unwrap_or("RS256")),
    );
    if request["includeCertificate"].as_bool() == Some(true) {
        use base64::Engine as _;
        header.insert(
            "x5c".into(),
            json!([base64::engine::general_purpose::STANDARD.encode(key.cert_der())]),
        );
    }
    if request["includeCertHash"].as_bool() == Some(true) {
        header.insert("x5t#S256".into(), json!(b64u(&key.thumbprint())));
    }
    if let Some(url) = request["certificateUrl"]
        .as_str()
        .filter(|u| !u.trim().is_empty())
    {
        header.insert("x5u".into(), json!(url));
    }
    header.insert("kid".into(), json!(key_id));
    let detached = request["includePayload"].as_bool() != Some(true);
    let token = jose::sign(&key, &Value::Object(header), &payload, detached);
    Ok(json!({"jwtSignedData": token, "timestamp": "2025-01-15T10:20:30.456789"}))
}

fn jwt_verify(inner: &mut Inner, request: &Value) -> Result<Value, (String, String)> {
    let token = request["jwtSignatureData"].as_str().unwrap_or_default();
    if token.trim().is_empty() {
        return ker("KER-KMS-005", "request.jwtSignatureData must not be blank");
    }
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = match parts
        .first()
        .and_then(|h| decode(h).ok())
        .and_then(|h| serde_json::from_slice(&h).ok())
    {
        Some(h) if parts.len() == 3 => h,
        _ => return ker("KER-JWS-106", "Signature data to verify not valid."),
    };
    let public_key: Vec<u8> = if let Some(x5c) = header["x5c"][0].as_str() {
        public_key_of_cert(&unb64(x5c)).ok_or((
            "KER-JWS-105".to_string(),
            "Error - Unable to verify the data.".to_string(),
        ))?
    } else if let Some(pem) = request["certificateData"].as_str() {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        public_key_of_cert(&unb64(&body)).ok_or((
            "KER-JWS-105".to_string(),
            "Error - Unable to verify the data.".to_string(),
        ))?
    } else {
        let (app, reference) = sign_key_ids(request)?;
        current(inner, &app, &reference).0.public_key_der().to_vec()
    };
    let actual = request["actualData"]
        .as_str()
        .filter(|a| !a.trim().is_empty());
    let valid = jose::verify(&public_key, token, actual);
    Ok(json!({
        "signatureValid": valid,
        "message": if valid { "Validation Successful" } else { "Validation Failed" },
        "trustValid": "TRUST_NOT_VERIFIED",
    }))
}

fn public_key_of_cert(der: &[u8]) -> Option<Vec<u8>> {
    use der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
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
