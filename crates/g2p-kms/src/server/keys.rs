//! Certificate and key administration: `GET /getCertificate`, `/getAllCertificates`,
//! `POST /generateMasterKey/{CERTIFICATE|CSR}`, `PUT /revokeKey`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use g2p_mosip::dto::{
    AllCertificatesResponse, CertificateDataResponse, KeyPairGenerateRequest,
    KeyPairGenerateResponse, RevokeKeyRequest, StatusResponse,
};
use g2p_mosip::error::codes;
use g2p_mosip::timestamp;
use serde_json::Value;
use time::OffsetDateTime;

use super::auth::{ADMIN_ROLES, CRYPTO_ROLES};
use super::{
    ServerState, auth_failure, authorize, blocking, echoed_ids, envelope, invalid, parse_request,
    to_value,
};
use crate::error::KmsError;
use crate::store::{CsrSubject, KeyRecord};

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

pub(super) async fn get_certificate(
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

pub(super) async fn get_all_certificates(
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

pub(super) async fn generate_master_key(
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

pub(super) async fn revoke_key(
    State(state): State<ServerState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
