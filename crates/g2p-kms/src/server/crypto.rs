//! `POST /encrypt`, `/decrypt`, `/jwtSign`, `/jwsSign` and `/jwtVerify`: each checks its
//! request, runs the key operation off the executor, and answers the `response` object.

use axum::extract::State;
use axum::response::Response;
use g2p_encryption::{Alg, UnverifiedJws, b64};
use g2p_mosip::KerCode;
use g2p_mosip::cipher::CipherParams;
use g2p_mosip::dto::{
    CryptomanagerRequest, CryptomanagerResponse, JwtSignRequest, JwtSignResponse, JwtVerifyRequest,
    JwtVerifyResponse,
};
use g2p_mosip::error::NOT_BASE64_MESSAGE;
use g2p_mosip::timestamp;

use super::request::{Caller, Crypto, Mosip};
use super::{ServerState, blocking};
use crate::error::KmsError;
use crate::kms::SignSpec;

/// `POST /encrypt`.
pub(super) async fn encrypt(
    State(state): State<ServerState>,
    caller: Caller<Crypto>,
    body: Mosip<CryptomanagerRequest>,
) -> Response {
    body.answer(|r| crypt(state, caller, r, Crypt::Encrypt))
        .await
}

/// `POST /decrypt`.
pub(super) async fn decrypt(
    State(state): State<ServerState>,
    caller: Caller<Crypto>,
    body: Mosip<CryptomanagerRequest>,
) -> Response {
    body.answer(|r| crypt(state, caller, r, Crypt::Decrypt))
        .await
}

/// `/encrypt` or `/decrypt`.
#[derive(Debug, Clone, Copy)]
enum Crypt {
    Encrypt,
    Decrypt,
}

/// Checks a `/encrypt` or `/decrypt` request, runs it on its data, records it.
async fn crypt(
    state: ServerState,
    caller: Caller<Crypto>,
    r: CryptomanagerRequest,
    crypt: Crypt,
) -> Result<CryptomanagerResponse, KmsError> {
    let (params, data) = match crypto_inputs(&r) {
        Ok(inputs) => inputs,
        Err(e) => {
            let operation = crypt.name();
            let result = Err(e);
            let pair = (r.application_id.as_str(), r.reference_id.as_str());
            state.record(&caller.id, operation, pair, None, &result);
            return result;
        }
    };
    blocking(move || {
        let pair = (r.application_id.as_str(), r.reference_id.as_str());
        let result = match crypt {
            Crypt::Encrypt => state.kms.encrypt(pair.0, pair.1, &params, &data),
            Crypt::Decrypt => state.kms.decrypt(pair.0, pair.1, &params, &data),
        };
        let sealed = match (crypt, &result) {
            (Crypt::Encrypt, Ok(out)) => Some(out.as_slice()),
            (Crypt::Encrypt, Err(_)) => None,
            (Crypt::Decrypt, _) => Some(data.as_slice()),
        };
        let key = sealed.and_then(|blob| state.kms.key_of_ciphertext(blob));
        state.record(&caller.id, crypt.name(), pair, key, &result);
        Ok(CryptomanagerResponse {
            data: b64::encode_b64u(&result?),
        })
    })
    .await
}

impl Crypt {
    fn name(self) -> &'static str {
        match self {
            Crypt::Encrypt => "encrypt",
            Crypt::Decrypt => "decrypt",
        }
    }
}

/// How an endpoint reads a signing request.
struct SignRules {
    /// The algorithm when the request names none.
    default_algorithm: Alg,
    /// Whether the request chooses JSON validation and `b64` (else: validated, encoded).
    request_chooses: bool,
}

/// `POST /jwtSign`: a JSON payload, RS256, base64url-encoded (spec 3.3).
pub(super) async fn jwt_sign(
    State(state): State<ServerState>,
    caller: Caller<Crypto>,
    body: Mosip<JwtSignRequest>,
) -> Response {
    let rules = SignRules {
        default_algorithm: Alg::Rs256,
        request_chooses: false,
    };
    body.answer(|r| sign(state, caller, r, rules)).await
}

/// `POST /jwsSign`: any payload; algorithm (PS256 by default), JSON validation and `b64` as
/// the request says (spec 3.11).
pub(super) async fn jws_sign(
    State(state): State<ServerState>,
    caller: Caller<Crypto>,
    body: Mosip<JwtSignRequest>,
) -> Response {
    let rules = SignRules {
        default_algorithm: Alg::Ps256,
        request_chooses: true,
    };
    body.answer(|r| sign(state, caller, r, rules)).await
}

async fn sign(
    state: ServerState,
    caller: Caller<Crypto>,
    r: JwtSignRequest,
    rules: SignRules,
) -> Result<JwtSignResponse, KmsError> {
    let pair = (r.application_id.clone(), r.reference_id.clone());
    let result = sign_checked(state.clone(), r, rules).await;
    let key = result
        .as_ref()
        .ok()
        .and_then(|s| UnverifiedJws::parse(&s.jwt_signed_data).ok())
        .and_then(|token| token.header().kid.clone());
    state.record(&caller.id, "sign", (&pair.0, &pair.1), key, &result);
    result
}

async fn sign_checked(
    state: ServerState,
    r: JwtSignRequest,
    rules: SignRules,
) -> Result<JwtSignResponse, KmsError> {
    let validate_json = !rules.request_chooses || r.validate_json.unwrap_or(true);
    let payload = sign_payload(&r, validate_json)?;
    let algorithm = match r.sign_algorithm.as_deref() {
        None => rules.default_algorithm,
        Some(name) => Alg::parse(name).map_err(|_| {
            KmsError::invalid(format!(
                "signAlgorithm {name:?} is not supported (RS256, PS256)"
            ))
        })?,
    };
    let b64 = !rules.request_chooses || r.b64_jws_header_param == Some(true);
    blocking(move || {
        let token = state.kms.sign(&SignSpec {
            application_id: &r.application_id,
            reference_id: &r.reference_id,
            payload: &payload,
            include_payload: r.include_payload,
            include_certificate: r.include_certificate,
            include_cert_hash: r.include_cert_hash,
            certificate_url: r.certificate_url.as_deref(),
            algorithm,
            b64,
        })?;
        Ok(JwtSignResponse {
            jwt_signed_data: token,
            timestamp: Some(timestamp::now_strict()),
        })
    })
    .await
}

/// `POST /jwtVerify`.
pub(super) async fn jwt_verify(
    State(state): State<ServerState>,
    caller: Caller<Crypto>,
    body: Mosip<JwtVerifyRequest>,
) -> Response {
    body.answer(|r| async move {
        if r.jwt_signature_data.trim().is_empty() {
            return Err(KmsError::invalid(
                "request.jwtSignatureData must not be blank",
            ));
        }
        blocking(move || {
            let result = state.kms.verify(
                &r.jwt_signature_data,
                r.actual_data.as_deref(),
                &r.application_id,
                &r.reference_id,
                r.certificate_data.as_deref(),
            );
            // A signature found not valid is a refusal in the audit trail.
            let audited = match &result {
                Ok(false) => Err(KmsError::ker(KerCode::Jws105)),
                Ok(true) => Ok(()),
                Err(e) => Err(e.clone()),
            };
            let key = UnverifiedJws::parse(&r.jwt_signature_data)
                .ok()
                .and_then(|token| token.header().kid.clone());
            let pair = (r.application_id.as_str(), r.reference_id.as_str());
            state.record(&caller.id, "verify", pair, key, &audited);
            let valid = result?;
            Ok(JwtVerifyResponse {
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
    })
    .await
}

fn not_base64() -> KmsError {
    KmsError::ker_with(KerCode::Cry003, NOT_BASE64_MESSAGE)
}

/// `salt` / `aad`: absent is fine; present must be at least 2 characters, not only spaces
/// (regex `.+\S.*`), and base64.
fn optional_b64(field: &str, value: Option<&str>) -> Result<Option<Vec<u8>>, KmsError> {
    match value {
        None => Ok(None),
        Some(v) if v.chars().count() < 2 || v.trim().is_empty() => Err(KmsError::invalid(format!(
            "request.{field} should not be empty"
        ))),
        Some(v) => b64::decode_lenient(v).map(Some).map_err(|_| not_base64()),
    }
}

fn crypto_inputs(r: &CryptomanagerRequest) -> Result<(CipherParams, Vec<u8>), KmsError> {
    if r.application_id.trim().is_empty() {
        return Err(KmsError::invalid(
            "request.applicationId should not be null or empty",
        ));
    }
    match r.time_stamp.as_deref() {
        None => return Err(KmsError::invalid("request.timeStamp must not be null")),
        Some(t) if timestamp::parse_strict(t).is_err() => {
            return Err(KmsError::invalid(format!(
                "Invalid format for request.timeStamp {t:?}: expected yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
            )));
        }
        _ => {}
    }
    if r.data.trim().is_empty() {
        return Err(KmsError::invalid(
            "request.data should not be null or empty",
        ));
    }
    let salt = optional_b64("salt", r.salt.as_deref())?;
    let aad = optional_b64("aad", r.aad.as_deref())?;
    let data = b64::decode_lenient(r.data.trim()).map_err(|_| not_base64())?;
    Ok((CipherParams::new(salt, aad), data))
}

/// The payload of a signing request: base64url (KM13 refuses `+` and `/`), JSON when asked.
fn sign_payload(r: &JwtSignRequest, validate_json: bool) -> Result<Vec<u8>, KmsError> {
    if r.data_to_sign.trim().is_empty() {
        return Err(KmsError::invalid("request.dataToSign must not be blank"));
    }
    if r.data_to_sign.contains(['+', '/']) {
        return Err(not_base64());
    }
    let payload = b64::decode_lenient(r.data_to_sign.trim()).map_err(|_| not_base64())?;
    if validate_json && serde_json::from_slice::<serde_json::Value>(&payload).is_err() {
        return Err(KmsError::ker(KerCode::Jws103));
    }
    Ok(payload)
}
