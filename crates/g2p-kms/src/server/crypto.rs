//! `POST /encrypt`, `/decrypt`, `/jwtSign`, `/jwsSign`, `/jwtVerify` and
//! `/uploadOtherDomainCertificate`: each parses its request, runs the key operation off the
//! executor, and answers the `response` object.

use std::sync::Arc;

use g2p_encryption::b64;
use g2p_mosip::cipher::CipherParams;
use g2p_mosip::dto::{
    CryptomanagerRequest, CryptomanagerResponse, JwtSignRequest, JwtSignResponse, JwtVerifyRequest,
    JwtVerifyResponse, StatusResponse, UploadCertificateRequest,
};
use g2p_mosip::error::codes;
use g2p_mosip::timestamp;
use serde_json::Value;

use super::{blocking, invalid, parse_request, to_value};
use crate::error::KmsError;
use crate::kms::{Kms, SignAlgorithm, SignSpec};

/// `/encrypt` (`encrypt`) or `/decrypt`.
pub(super) async fn crypt(
    kms: Arc<Kms>,
    wrapper: &Value,
    encrypt: bool,
) -> Result<Value, KmsError> {
    let r = parse_request::<CryptomanagerRequest>(wrapper)?;
    let (params, data) = crypto_inputs(&r)?;
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

/// `/jwtSign`, or `/jwsSign` (`jws`).
pub(super) async fn sign(kms: Arc<Kms>, wrapper: &Value, jws: bool) -> Result<Value, KmsError> {
    let r = parse_request::<JwtSignRequest>(wrapper)?;
    let payload = sign_inputs(&r, jws)?;
    let algorithm = match r.sign_algorithm.as_deref() {
        Some("PS256") => SignAlgorithm::Ps256,
        Some("RS256") => SignAlgorithm::Rs256,
        None if jws => SignAlgorithm::Ps256,
        None => SignAlgorithm::Rs256,
        Some(other) => {
            return Err(invalid(format!(
                "signAlgorithm {other:?} is not supported (RS256, PS256)"
            )));
        }
    };
    blocking(move || {
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

/// `/jwtVerify`.
pub(super) async fn verify(kms: Arc<Kms>, wrapper: &Value) -> Result<Value, KmsError> {
    let r = parse_request::<JwtVerifyRequest>(wrapper)?;
    if r.jwt_signature_data.trim().is_empty() {
        return Err(invalid("request.jwtSignatureData must not be blank"));
    }
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

/// `/uploadOtherDomainCertificate`.
pub(super) async fn upload(kms: Arc<Kms>, wrapper: &Value) -> Result<Value, KmsError> {
    let r = parse_request::<UploadCertificateRequest>(wrapper)?;
    if r.application_id.trim().is_empty() {
        return Err(invalid("request.applicationId should not be null or empty"));
    }
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
