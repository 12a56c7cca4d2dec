//! Certificate and key administration: `GET /getCertificate`, `/getAllCertificates`,
//! `POST /generateMasterKey/{CERTIFICATE|CSR}`, `/uploadOtherDomainCertificate`,
//! `PUT /revokeKey`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use g2p_mosip::KerCode;
use g2p_mosip::dto::{
    AllCertificatesResponse, CertificateDataResponse, KeyPairGenerateRequest,
    KeyPairGenerateResponse, RevokeKeyRequest, StatusResponse, UploadCertificateRequest,
};
use g2p_mosip::timestamp;
use time::OffsetDateTime;

use super::request::{Admin, Caller, Crypto, Mosip};
use super::{ServerState, answer_get, blocking};
use crate::error::KmsError;
use crate::kms::Kms;
use crate::store::{CsrSubject, KeyRecord, Minting};

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

/// Answers a `GET` with what `op` makes of the query's `applicationId` and `referenceId`.
async fn for_pair<R: serde::Serialize + Send + 'static>(
    query: &HashMap<String, String>,
    op: impl FnOnce(&str, &str) -> Result<R, KmsError> + Send + 'static,
) -> Response {
    let result = match query_ids(query) {
        Err(e) => Err(e),
        Ok((app, reference)) => blocking(move || op(&app, &reference)).await,
    };
    answer_get(result)
}

fn query_ids(query: &HashMap<String, String>) -> Result<(String, String), KmsError> {
    let app = query
        .get("applicationId")
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| {
            KmsError::invalid("Required request parameter 'applicationId' for method parameter type String is not present")
        })?;
    Ok((
        app.clone(),
        query.get("referenceId").cloned().unwrap_or_default(),
    ))
}

/// `GET /getCertificate`: the current certificate of the pair.
pub(super) async fn get_certificate(
    State(state): State<ServerState>,
    _: Caller<Crypto>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    for_pair(&query, move |app, reference| {
        Ok(certificate_response(
            &state.kms.certificate(app, reference)?,
        ))
    })
    .await
}

/// `GET /getAllCertificates`: every certificate of the pair, oldest first.
pub(super) async fn get_all_certificates(
    State(state): State<ServerState>,
    _: Caller<Crypto>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    for_pair(&query, move |app, reference| {
        let all = state
            .kms
            .all_certificates(app, reference)?
            .into_iter()
            .map(|r| CertificateDataResponse {
                certificate_data: r.certificate.to_pem(),
                issued_at: Some(strict(r.generated_at)),
                expiry_at: Some(strict(r.expires_at)),
                key_id: r.key_id,
            })
            .collect();
        Ok(AllCertificatesResponse {
            all_certificates: all,
        })
    })
    .await
}

/// What `generateMasterKey` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectType {
    Certificate,
    Csr,
}

impl ObjectType {
    fn parse(text: &str) -> Result<Self, KmsError> {
        if text.trim().is_empty() {
            Err(KmsError::invalid("objectType must not be blank"))
        } else if text.eq_ignore_ascii_case("CSR") {
            Ok(ObjectType::Csr)
        } else if text.eq_ignore_ascii_case("CERTIFICATE") {
            Ok(ObjectType::Certificate)
        } else {
            Err(KmsError::ker_with(
                KerCode::Kms009,
                format!(
                    "{} ({text}: expected CERTIFICATE or CSR)",
                    KerCode::Kms009.message()
                ),
            ))
        }
    }
}

/// `POST /generateMasterKey/{objectType}`: the master key's certificate (a new key with
/// `force`), or a PKCS#10 request for it.
pub(super) async fn generate_master_key(
    State(state): State<ServerState>,
    Path(object_type): Path<String>,
    caller: Caller<Admin>,
    body: Mosip<KeyPairGenerateRequest>,
) -> Response {
    body.answer(|r| async move {
        let reference = r.reference_id.clone().unwrap_or_default();
        let operation = if r.force == Some(true) {
            "rotate"
        } else {
            "generate_master_key"
        };
        let pair = (r.application_id.clone(), reference.clone());
        let result = master_key(&state, &object_type, r, reference).await;
        let key = result.as_ref().ok().map(|(key_id, _)| key_id.clone());
        state.record(&caller.id, operation, (&pair.0, &pair.1), key, &result);
        result.map(|(_, response)| response)
    })
    .await
}

/// The checked request's answer, and the key id it is about.
async fn master_key(
    state: &ServerState,
    object_type: &str,
    r: KeyPairGenerateRequest,
    reference: String,
) -> Result<(String, KeyPairGenerateResponse), KmsError> {
    let object_type = ObjectType::parse(object_type)?;
    if !(reference.is_empty() || (r.application_id == "KERNEL" && reference == "SIGN")) {
        return Err(KmsError::ker(KerCode::Kms010));
    }
    let kms = state.kms.clone();
    blocking(move || master_key_response(&kms, &r, &reference, object_type)).await
}

fn master_key_response(
    kms: &Kms,
    r: &KeyPairGenerateRequest,
    reference: &str,
    object_type: ObjectType,
) -> Result<(String, KeyPairGenerateResponse), KmsError> {
    let record = if r.force == Some(true) {
        kms.store().rotate(&r.application_id, reference)?
    } else {
        kms.certificate_for(&r.application_id, reference, Minting::Admin)?
    };
    let mut response = certificate_response(&record);
    if object_type == ObjectType::Csr {
        let subject = CsrSubject {
            common_name: r.common_name.clone(),
            organization_unit: r.organization_unit.clone(),
            organization: r.organization.clone(),
            location: r.location.clone(),
            state: r.state.clone(),
            country: r.country.clone(),
        };
        response.cert_sign_request = Some(kms.store().certificate_request(&record, &subject)?);
        response.certificate = None;
    }
    Ok((record.key_id, response))
}

/// `PUT /revokeKey`: the pair's current key stops being current; the next use makes a new one.
pub(super) async fn revoke_key(
    State(state): State<ServerState>,
    caller: Caller<Admin>,
    body: Mosip<RevokeKeyRequest>,
) -> Response {
    body.answer(|r| async move {
        let pair = (r.application_id.clone(), r.reference_id.clone());
        let result = revoke(&state, r).await;
        state.record(&caller.id, "revoke", (&pair.0, &pair.1), None, &result);
        result
    })
    .await
}

async fn revoke(state: &ServerState, r: RevokeKeyRequest) -> Result<StatusResponse, KmsError> {
    if r.application_id.trim().is_empty() || r.reference_id.trim().is_empty() {
        return Err(KmsError::invalid(
            "request.applicationId and request.referenceId should not be null or empty",
        ));
    }
    if r.application_id == "KERNEL" && r.reference_id == "SIGN" {
        return Err(KmsError::ker(KerCode::Kms021));
    }
    let kms = state.kms.clone();
    blocking(move || {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        kms.store()
            .expire_current(&r.application_id, &r.reference_id, now)?;
        Ok(StatusResponse {
            status: "Key Revoked".into(),
            timestamp: Some(timestamp::now_strict()),
        })
    })
    .await
}

/// `POST /uploadOtherDomainCertificate`: a partner's certificate, so its signatures verify.
pub(super) async fn upload_certificate(
    State(state): State<ServerState>,
    caller: Caller<Admin>,
    body: Mosip<UploadCertificateRequest>,
) -> Response {
    body.answer(|r| async move {
        let pair = (r.application_id.clone(), r.reference_id.clone());
        let result = upload(&state, r).await;
        let key = result.as_ref().ok().map(|(key_id, _)| key_id.clone());
        state.record(&caller.id, "upload", (&pair.0, &pair.1), key, &result);
        result.map(|(_, status)| status)
    })
    .await
}

async fn upload(
    state: &ServerState,
    r: UploadCertificateRequest,
) -> Result<(String, StatusResponse), KmsError> {
    if r.application_id.trim().is_empty() {
        return Err(KmsError::invalid(
            "request.applicationId should not be null or empty",
        ));
    }
    let kms = state.kms.clone();
    blocking(move || {
        let record = kms.store().upload_partner_certificate(
            &r.application_id,
            &r.reference_id,
            &r.certificate_data,
        )?;
        let status = StatusResponse {
            status: "Upload Success".into(),
            timestamp: Some(timestamp::now_strict()),
        };
        Ok((record.key_id, status))
    })
    .await
}
