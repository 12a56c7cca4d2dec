//! What every Keymanager call of the fake goes through: the cookie check, the fault
//! switches, the envelope, and the dispatch to an endpoint.

use super::*;

pub(super) fn envelope(
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

pub(super) fn ker<T>(code: &str, message: &str) -> Result<T, (String, String)> {
    Err((code.into(), message.into()))
}

/// The 401 of the 1.2.x/1.3.x auth adapter: two JSON documents back to back (spec Q4).
pub(super) fn unauthorized() -> Response {
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
pub(super) async fn admit(
    state: &FakeState,
    endpoint: &str,
    headers: &HeaderMap,
) -> Option<Response> {
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

pub(super) async fn km_get(
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

pub(super) fn get_certificate(inner: &mut Inner, app: &str, reference: &str) -> Value {
    let (key, _) = current(inner, app, reference);
    let served = inner.mismatched_certificate.clone().unwrap_or(key);
    let t = response_time();
    json!({"certificate": served.cert_pem(), "certSignRequest": null, "issuedAt": t, "expiryAt": "2099-01-01T00:00:00.000Z", "timestamp": t})
}

pub(super) fn get_all_certificates(inner: &Inner, app: &str, reference: &str) -> Value {
    let all: Vec<Value> = inner
        .keys
        .iter()
        .filter(|k| k.app == app && k.reference == reference)
        .map(|k| json!({"certificateData": k.key.cert_pem(), "issuedAt": response_time(), "expiryAt": "2099-01-01T00:00:00.000Z", "keyId": k.key_id}))
        .collect();
    json!({"allCertificates": all})
}

pub(super) async fn km_post(
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
