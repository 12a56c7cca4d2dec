//! The MOSIP Keymanager REST API over [`Kms`], and the token endpoint of its realm.
//!
//! `app(state)` gives the router, so tests need no fixed port; `serve` runs it until the
//! shutdown future completes.

pub mod auth;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use g2p_encryption::b64;
use g2p_mosip::cipher::CipherParams;
use g2p_mosip::dto::{
    AllCertificatesResponse, CertificateDataResponse, CryptomanagerRequest, CryptomanagerResponse,
    JwtSignRequest, JwtSignResponse, JwtVerifyRequest, JwtVerifyResponse, KeyPairGenerateRequest,
    KeyPairGenerateResponse, RevokeKeyRequest, StatusResponse, UploadCertificateRequest,
};
use g2p_mosip::error::codes;
use g2p_mosip::{ResponseWrapper, ServiceError, timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::KmsError;
use crate::kms::{Kms, SignAlgorithm, SignSpec};
use crate::store::{CsrSubject, KeyRecord};
use auth::{ADMIN_ROLES, AuthFailure, CRYPTO_ROLES, Realm};

/// Largest request body (a 16 MiB record, base64'd, with room for the wrapper).
pub const MAX_BODY_BYTES: usize = 24 * 1024 * 1024;

/// What the server serves.
#[derive(Debug, Clone)]
pub struct ServerState {
    kms: Arc<Kms>,
    realm: Arc<Realm>,
}

impl ServerState {
    /// A server over `kms`, authenticating with `realm`.
    pub fn new(kms: Arc<Kms>, realm: Realm) -> Self {
        ServerState {
            kms,
            realm: Arc::new(realm),
        }
    }
}

/// The router: `/v1/keymanager/...` and `/realms/{realm}/protocol/openid-connect/...`.
pub fn app(state: ServerState) -> Router {
    Router::new()
        .route("/v1/keymanager/getCertificate", get(get_certificate))
        .route(
            "/v1/keymanager/getAllCertificates",
            get(get_all_certificates),
        )
        .route("/v1/keymanager/revokeKey", put(revoke_key))
        .route(
            "/v1/keymanager/generateMasterKey/{object_type}",
            post(generate_master_key),
        )
        .route("/v1/keymanager/{endpoint}", post(post_endpoint))
        // The MOSIP envelope for the Keymanager API only; the token endpoint answers as
        // OAuth servers do.
        .layer(axum::middleware::map_response(too_large_in_the_envelope))
        .route("/realms/{realm}/protocol/openid-connect/token", post(token))
        .route("/realms/{realm}/protocol/openid-connect/certs", get(certs))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A body over [`MAX_BODY_BYTES`] is answered 413 in the MOSIP envelope, like every other
/// refusal, rather than as plain text.
async fn too_large_in_the_envelope(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(ResponseWrapper::<Value>::failure(
            None,
            None,
            vec![ServiceError::new(
                codes::KMS_005,
                format!(
                    "request body is larger than the limit of {} MiB",
                    MAX_BODY_BYTES / (1024 * 1024)
                ),
            )],
        )),
    )
        .into_response()
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ServerState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn envelope(
    id: Option<String>,
    version: Option<String>,
    result: Result<Value, KmsError>,
) -> Response {
    let wrapper = match result {
        Ok(v) => ResponseWrapper::success(id, version, v),
        Err(e) => {
            if let KmsError::Internal(detail) = &e {
                tracing::error!(detail, "internal error");
            }
            let status = if e.code() == codes::KMS_500 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            let body = ResponseWrapper::<Value>::failure(
                id,
                version,
                vec![ServiceError::new(e.code(), e.message())],
            );
            return (status, Json(body)).into_response();
        }
    };
    Json(wrapper).into_response()
}

/// The request's `id` and `version`, echoed in the answer (spec 1.2).
fn echoed_ids(wrapper: &Value) -> (Option<String>, Option<String>) {
    let text = |k: &str| wrapper.get(k).and_then(Value::as_str).map(String::from);
    (text("id"), text("version"))
}

fn auth_failure(failure: AuthFailure) -> Response {
    let (status, code, message) = match failure {
        AuthFailure::Unauthenticated(why) => {
            tracing::debug!(why, "request refused: 401");
            (
                StatusCode::UNAUTHORIZED,
                codes::ATH_401,
                "Authentication Failed",
            )
        }
        AuthFailure::Forbidden => (StatusCode::FORBIDDEN, codes::ATH_403, "Forbidden"),
    };
    let body =
        ResponseWrapper::<Value>::failure(None, None, vec![ServiceError::new(code, message)]);
    (status, Json(body)).into_response()
}

/// The token from the `Authorization` cookie, or an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.contains("Authorization"))
        .map(|(_, v)| v.trim().to_string());
    from_cookie.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    })
}

fn authorize(state: &ServerState, headers: &HeaderMap, roles: &[&str]) -> Result<(), AuthFailure> {
    let token = bearer(headers)
        .filter(|t| !t.is_empty())
        .ok_or(AuthFailure::Unauthenticated("no token"))?;
    let principal = state.realm.validate(&token)?;
    if !principal.has_any(roles) {
        return Err(AuthFailure::Forbidden);
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> KmsError {
    KmsError::ker(codes::KMS_005, message)
}

async fn blocking(
    f: impl FnOnce() -> Result<Value, KmsError> + Send + 'static,
) -> Result<Value, KmsError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(KmsError::Internal(format!("task: {e}"))))
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, KmsError> {
    serde_json::to_value(v).map_err(|e| KmsError::Internal(e.to_string()))
}

fn strict(t: i64) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .map(timestamp::format_strict)
        .unwrap_or_default()
}

fn certificate_response(record: &KeyRecord) -> KeyPairGenerateResponse {
    KeyPairGenerateResponse {
        certificate: Some(record.certificate.to_pem()),
        cert_sign_request: None,
        issued_at: Some(strict(record.certificate.not_before())),
        expiry_at: Some(strict(record.certificate.not_after())),
        timestamp: Some(timestamp::now_strict()),
    }
}

/// Parses the wrapper and its `request` into `T`, with the spec's KER-KMS-005 messages.
fn parse_request<T: DeserializeOwned>(wrapper: &Value) -> Result<T, KmsError> {
    if let Some(rt) = wrapper.get("requesttime").and_then(Value::as_str)
        && timestamp::parse_lenient(rt).is_err()
    {
        return Err(invalid(format!("Invalid format for requesttime: {rt:?}")));
    }
    let request = wrapper
        .get("request")
        .filter(|r| !r.is_null())
        .ok_or_else(|| invalid("request must not be null"))?;
    serde_json::from_value(request.clone()).map_err(|e| invalid(format!("request: {e}")))
}

/// `salt` / `aad`: absent is fine; present must be at least 2 characters, not only spaces
/// (regex `.+\S.*`), and base64.
fn optional_b64(field: &str, value: Option<&str>) -> Result<Option<Vec<u8>>, KmsError> {
    match value {
        None => Ok(None),
        Some(v) if v.chars().count() < 2 || v.trim().is_empty() => {
            Err(invalid(format!("request.{field} should not be empty")))
        }
        Some(v) => b64::decode_lenient(v)
            .map(Some)
            .map_err(|_| KmsError::ker(codes::CRY_003, " input data is not base64 encoded")),
    }
}

fn crypto_inputs(r: &CryptomanagerRequest) -> Result<(CipherParams, Vec<u8>), KmsError> {
    if r.application_id.trim().is_empty() {
        return Err(invalid("request.applicationId should not be null or empty"));
    }
    match r.time_stamp.as_deref() {
        None => return Err(invalid("request.timeStamp must not be null")),
        Some(t) if timestamp::parse_strict(t).is_err() => {
            return Err(invalid(format!(
                "Invalid format for request.timeStamp {t:?}: expected yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
            )));
        }
        _ => {}
    }
    if r.data.trim().is_empty() {
        return Err(invalid("request.data should not be null or empty"));
    }
    let salt = optional_b64("salt", r.salt.as_deref())?;
    let aad = optional_b64("aad", r.aad.as_deref())?;
    let data = b64::decode_lenient(r.data.trim())
        .map_err(|_| KmsError::ker(codes::CRY_003, " input data is not base64 encoded"))?;
    Ok((CipherParams::new(salt, aad), data))
}

async fn post_endpoint(
    State(state): State<ServerState>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let roles = match endpoint.as_str() {
        "encrypt" | "decrypt" | "jwtSign" | "jwsSign" | "jwtVerify" => CRYPTO_ROLES,
        "uploadOtherDomainCertificate" => ADMIN_ROLES,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if let Err(refused) = authorize(&state, &headers, roles) {
        return auth_failure(refused);
    }
    let wrapper: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(ResponseWrapper::<Value>::failure(
                    None,
                    None,
                    vec![ServiceError::new(
                        codes::KMS_005,
                        "body must be a JSON object",
                    )],
                )),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(ResponseWrapper::<Value>::failure(
                    None,
                    None,
                    vec![ServiceError::new(
                        codes::KMS_005,
                        format!("body is not JSON: {e}"),
                    )],
                )),
            )
                .into_response();
        }
    };
    let (id, version) = echoed_ids(&wrapper);
    let kms = state.kms.clone();
    let result = match endpoint.as_str() {
        "encrypt" | "decrypt" => {
            let encrypt = endpoint == "encrypt";
            match parse_request::<CryptomanagerRequest>(&wrapper).and_then(|r| {
                let (params, data) = crypto_inputs(&r)?;
                Ok((r, params, data))
            }) {
                Err(e) => Err(e),
                Ok((r, params, data)) => {
                    blocking(move || {
                        let out = if encrypt {
                            kms.encrypt(&r.application_id, &r.reference_id, &params, &data)?
                        } else {
                            kms.decrypt(&r.application_id, &r.reference_id, &params, &data)?
                        };
                        to_value(CryptomanagerResponse {
                            data: b64::encode_b64u(&out),
                        })
                    })
                    .await
                }
            }
        }
        "jwtSign" | "jwsSign" => {
            let jws = endpoint == "jwsSign";
            match parse_request::<JwtSignRequest>(&wrapper)
                .and_then(|r| sign_inputs(&r, jws).map(|p| (r, p)))
            {
                Err(e) => Err(e),
                Ok((r, payload)) => {
                    blocking(move || {
                        let algorithm = match r.sign_algorithm.as_deref() {
                            Some("PS256") => SignAlgorithm::Ps256,
                            Some("RS256") | None if !jws || r.sign_algorithm.is_some() => {
                                SignAlgorithm::Rs256
                            }
                            None => SignAlgorithm::Ps256,
                            Some(other) => {
                                return Err(invalid(format!(
                                    "signAlgorithm {other:?} is not supported (RS256, PS256)"
                                )));
                            }
                        };
                        let token = kms.sign(&SignSpec {
                            application_id: &r.application_id,
                            reference_id: &r.reference_id,
                            payload: &payload,
                            include_payload: r.include_payload,
                            include_certificate: r.include_certificate,
                            include_cert_hash: r.include_cert_hash,
                            certificate_url: r.certificate_url.as_deref(),
                            algorithm,
                            b64: !jws || r.b64_jws_header_param == Some(true),
                        })?;
                        to_value(JwtSignResponse {
                            jwt_signed_data: token,
                            timestamp: Some(timestamp::now_strict()),
                        })
                    })
                    .await
                }
            }
        }
        "jwtVerify" => match parse_request::<JwtVerifyRequest>(&wrapper) {
            Err(e) => Err(e),
            Ok(r) if r.jwt_signature_data.trim().is_empty() => {
                Err(invalid("request.jwtSignatureData must not be blank"))
            }
            Ok(r) => {
                blocking(move || {
                    let valid = kms.verify(
                        &r.jwt_signature_data,
                        r.actual_data.as_deref(),
                        &r.application_id,
                        &r.reference_id,
                        r.certificate_data.as_deref(),
                    )?;
                    to_value(JwtVerifyResponse {
                        signature_valid: valid,
                        message: if valid {
                            "Validation Successful"
                        } else {
                            "Validation Failed"
                        }
                        .into(),
                        trust_valid: "TRUST_NOT_VERIFIED".into(),
                    })
                })
                .await
            }
        },
        _ => match parse_request::<UploadCertificateRequest>(&wrapper) {
            Err(e) => Err(e),
            Ok(r) if r.application_id.trim().is_empty() => {
                Err(invalid("request.applicationId should not be null or empty"))
            }
            Ok(r) => {
                blocking(move || {
                    kms.store().upload_partner_certificate(
                        &r.application_id,
                        &r.reference_id,
                        &r.certificate_data,
                    )?;
                    to_value(StatusResponse {
                        status: "Upload Success".into(),
                        timestamp: Some(timestamp::now_strict()),
                    })
                })
                .await
            }
        },
    };
    envelope(id, version, result)
}

fn sign_inputs(r: &JwtSignRequest, jws: bool) -> Result<Vec<u8>, KmsError> {
    if r.data_to_sign.trim().is_empty() {
        return Err(invalid("request.dataToSign must not be blank"));
    }
    if r.data_to_sign.contains(['+', '/']) {
        return Err(KmsError::ker(
            codes::CRY_003,
            " input data is not base64 encoded",
        ));
    }
    let payload = b64::decode_lenient(r.data_to_sign.trim())
        .map_err(|_| KmsError::ker(codes::CRY_003, " input data is not base64 encoded"))?;
    let validate = if jws {
        r.validate_json.unwrap_or(true)
    } else {
        true
    };
    if validate && serde_json::from_slice::<Value>(&payload).is_err() {
        return Err(KmsError::ker(
            codes::JWS_103,
            "Data to sign is not valid JSON.",
        ));
    }
    Ok(payload)
}

fn query_ids(query: &HashMap<String, String>) -> Result<(String, String), KmsError> {
    let app = query
        .get("applicationId")
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| {
            invalid("Required request parameter 'applicationId' for method parameter type String is not present")
        })?;
    Ok((
        app.clone(),
        query.get("referenceId").cloned().unwrap_or_default(),
    ))
}

async fn get_certificate(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers, CRYPTO_ROLES) {
        return auth_failure(refused);
    }
    let kms = state.kms.clone();
    let result = match query_ids(&query) {
        Err(e) => Err(e),
        Ok((app, reference)) => {
            blocking(move || to_value(certificate_response(&kms.certificate(&app, &reference)?)))
                .await
        }
    };
    envelope(None, None, result)
}

async fn get_all_certificates(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = authorize(&state, &headers, CRYPTO_ROLES) {
        return auth_failure(refused);
    }
    let kms = state.kms.clone();
    let result = match query_ids(&query) {
        Err(e) => Err(e),
        Ok((app, reference)) => {
            blocking(move || {
                let all = kms
                    .all_certificates(&app, &reference)?
                    .into_iter()
                    .map(|r| CertificateDataResponse {
                        certificate_data: r.certificate.to_pem(),
                        issued_at: Some(strict(r.generated_at)),
                        expiry_at: Some(strict(r.expires_at)),
                        key_id: r.key_id,
                    })
                    .collect();
                to_value(AllCertificatesResponse {
                    all_certificates: all,
                })
            })
            .await
        }
    };
    envelope(None, None, result)
}

async fn generate_master_key(
    State(state): State<ServerState>,
    Path(object_type): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&state, &headers, ADMIN_ROLES) {
        return auth_failure(refused);
    }
    let wrapper: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (id, version) = echoed_ids(&wrapper);
    let kms = state.kms.clone();
    let csr = object_type.eq_ignore_ascii_case("CSR");
    let result = if object_type.trim().is_empty() {
        Err(invalid("objectType must not be blank"))
    } else if !csr && !object_type.eq_ignore_ascii_case("CERTIFICATE") {
        Err(KmsError::ker(
            codes::KMS_009,
            format!("Invalid Response Object Type. ({object_type}: expected CERTIFICATE or CSR)"),
        ))
    } else {
        match parse_request::<KeyPairGenerateRequest>(&wrapper) {
            Err(e) => Err(e),
            Ok(r) => {
                let reference = r.reference_id.clone().unwrap_or_default();
                if !(reference.is_empty() || (r.application_id == "KERNEL" && reference == "SIGN"))
                {
                    Err(KmsError::ker(
                        codes::KMS_010,
                        "Reference Id Not Supported for the Application ID.",
                    ))
                } else {
                    blocking(move || {
                        let record = if r.force == Some(true) {
                            kms.store().rotate(&r.application_id, &reference)?
                        } else {
                            kms.certificate(&r.application_id, &reference)?
                        };
                        let mut response = certificate_response(&record);
                        if csr {
                            let subject = CsrSubject {
                                common_name: r.common_name,
                                organization_unit: r.organization_unit,
                                organization: r.organization,
                                location: r.location,
                                state: r.state,
                                country: r.country,
                            };
                            response.cert_sign_request =
                                Some(kms.store().certificate_request(&record, &subject)?);
                            response.certificate = None;
                        }
                        to_value(response)
                    })
                    .await
                }
            }
        }
    };
    envelope(id, version, result)
}

async fn revoke_key(State(state): State<ServerState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(refused) = authorize(&state, &headers, ADMIN_ROLES) {
        return auth_failure(refused);
    }
    let wrapper: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (id, version) = echoed_ids(&wrapper);
    let kms = state.kms.clone();
    let result = match parse_request::<RevokeKeyRequest>(&wrapper) {
        Err(e) => Err(e),
        Ok(r) if r.application_id.trim().is_empty() || r.reference_id.trim().is_empty() => Err(
            invalid("request.applicationId and request.referenceId should not be null or empty"),
        ),
        Ok(r) if r.application_id == "KERNEL" && r.reference_id == "SIGN" => {
            Err(KmsError::ker(codes::KMS_021, "Key Revocation not allowed."))
        }
        Ok(r) => {
            blocking(move || {
                let now = OffsetDateTime::now_utc().unix_timestamp();
                kms.store()
                    .expire_current(&r.application_id, &r.reference_id, now)?;
                to_value(StatusResponse {
                    status: "Key Revoked".into(),
                    timestamp: Some(timestamp::now_strict()),
                })
            })
            .await
        }
    };
    envelope(id, version, result)
}

async fn token(
    State(state): State<ServerState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let oauth = |status: u16, error: &str, description: String| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(serde_json::json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if realm != state.realm.name() {
        return oauth(404, "invalid_request", "Realm does not exist".into());
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| b64::decode_lenient(v.trim()).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            v.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    match state.realm.issue(&form, basic) {
        Ok(body) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response(),
        Err((status, error, description)) => oauth(status, error, description),
    }
}

async fn certs(State(state): State<ServerState>, Path(realm): Path<String>) -> Response {
    if realm != state.realm.name() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(state.realm.keys().clone()).into_response()
}
