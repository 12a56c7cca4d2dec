//! One operation on one request: resolve the provider, decode, call it, record, map errors.

use std::sync::Arc;
use std::time::Instant;

use g2p_encryption::{
    EncryptionProvider, Error, ErrorKind, SignOptions, SignPayload, UnverifiedJws, b64,
};
use serde_json::Value;
use zeroize::Zeroize;

use crate::GatewayState;
use crate::api::{
    DataRequest, DataResponse, SignRequest, SignResponse, VerifyRequest, VerifyResponse,
};
use crate::error::ApiError;
use crate::observe::record_operation;

pub(crate) fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    b64::decode_lenient(value).map_err(|e| {
        ApiError::bad_request("invalid_base64", format!("{field} is not base64url: {e}"))
    })
}

/// The provider for a request: the item's, else the batch's, else the default.
pub(crate) fn provider_for(
    state: &GatewayState,
    own: Option<&str>,
    batch: Option<&str>,
) -> Result<(String, Arc<dyn EncryptionProvider>), ApiError> {
    let requested = own.or(batch);
    let registry = state.registry();
    let provider = registry
        .get(requested)
        .map_err(|e| ApiError::from_provider(&e, requested.unwrap_or("default")))?;
    let name = requested
        .or(registry.default_name())
        .unwrap_or("default")
        .to_string();
    Ok((name, provider))
}

pub(crate) fn finish<T>(
    operation: &'static str,
    provider: &str,
    started: Instant,
    result: Result<T, Error>,
) -> Result<T, ApiError> {
    let result = result.map_err(|e| ApiError::from_provider(&e, provider));
    record_operation(
        operation,
        provider,
        started.elapsed(),
        result.as_ref().err().map(|e| e.kind),
    );
    result
}

/// What one request produced: the answer, and for the audit trail the key it used and
/// whether the data was refused.
pub(crate) struct Done<R> {
    pub(crate) response: R,
    pub(crate) key: Option<String>,
    pub(crate) refused: bool,
}

impl<R> Done<R> {
    fn with_key(response: R, key: Option<String>) -> Self {
        Done {
            response,
            key,
            refused: false,
        }
    }
}

pub(crate) async fn encrypt_one(
    state: &GatewayState,
    batch_provider: Option<String>,
    request: DataRequest,
) -> Result<Done<DataResponse>, ApiError> {
    let (name, provider) = provider_for(
        state,
        request.provider.as_deref(),
        batch_provider.as_deref(),
    )?;
    let mut plaintext = decode_b64("data", &request.data)?;
    let started = Instant::now();
    let result = provider.encrypt(&plaintext).await;
    plaintext.zeroize();
    let ciphertext = finish("encrypt", &name, started, result)?;
    let key = provider.ciphertext_key(&ciphertext);
    let response = DataResponse {
        data: b64::encode_b64u(&ciphertext),
    };
    Ok(Done::with_key(response, key))
}

pub(crate) async fn decrypt_one(
    state: &GatewayState,
    batch_provider: Option<String>,
    request: DataRequest,
) -> Result<Done<DataResponse>, ApiError> {
    let (name, provider) = provider_for(
        state,
        request.provider.as_deref(),
        batch_provider.as_deref(),
    )?;
    let ciphertext = decode_b64("data", &request.data)?;
    let key = provider.ciphertext_key(&ciphertext);
    let started = Instant::now();
    let result = provider.decrypt(&ciphertext).await;
    let mut plaintext = finish("decrypt", &name, started, result)?;
    let data = b64::encode_b64u(&plaintext);
    plaintext.zeroize();
    Ok(Done::with_key(DataResponse { data }, key))
}

/// The payload a request gives as JSON (`payload`) or as text (`text`); not both.
fn payload_or_text(
    payload: Option<Value>,
    text: Option<String>,
    role: &str,
) -> Result<Option<SignPayload>, ApiError> {
    match (payload, text) {
        (Some(value), None) => Ok(Some(SignPayload::Json(value))),
        (None, Some(text)) => Ok(Some(SignPayload::Text(text))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_request",
            format!("give either payload (JSON) or text {role}, not both"),
        )),
    }
}

pub(crate) async fn sign_one(
    state: &GatewayState,
    batch_provider: Option<String>,
    request: SignRequest,
) -> Result<Done<SignResponse>, ApiError> {
    let (name, provider) = provider_for(
        state,
        request.provider.as_deref(),
        batch_provider.as_deref(),
    )?;
    let payload = payload_or_text(request.payload, request.text, "to sign")?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            "nothing to sign: give payload (JSON) or text",
        )
    })?;
    let options = SignOptions {
        include_payload: request.include_payload,
        include_certificate: request.include_certificate,
        include_cert_hash: request.include_cert_hash,
        certificate_url: request.certificate_url,
    };
    let started = Instant::now();
    let result = provider.jwt_sign(&payload, &options).await;
    let jws = finish("sign", &name, started, result)?;
    let key = UnverifiedJws::parse(&jws)
        .ok()
        .and_then(|token| token.header().kid.clone());
    Ok(Done::with_key(SignResponse { jws }, key))
}

pub(crate) fn render_payload(bytes: &[u8], response: &mut VerifyResponse) {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        response.payload = Some(value);
    } else if let Ok(text) = std::str::from_utf8(bytes) {
        response.text = Some(text.to_string());
    } else {
        response.data = Some(b64::encode_b64u(bytes));
    }
}

pub(crate) async fn verify_one(
    state: &GatewayState,
    batch_provider: Option<String>,
    request: VerifyRequest,
) -> Result<Done<VerifyResponse>, ApiError> {
    let (name, provider) = provider_for(
        state,
        request.provider.as_deref(),
        batch_provider.as_deref(),
    )?;
    let detached = payload_or_text(request.payload, request.text, "as the detached payload")?
        .map(|payload| payload.to_bytes());
    let started = Instant::now();
    let result = provider.jwt_verify(&request.jws, detached.as_deref()).await;
    let mut response = VerifyResponse {
        valid: false,
        payload: None,
        text: None,
        data: None,
        kid: None,
        reason: None,
    };
    match result {
        // Whatever refused the token (our own check, or the key manager's verdict or KER
        // code in remote mode), the answer has the same shape.
        Err(e) if e.kind() == ErrorKind::Refused => {
            record_operation("verify", &name, started.elapsed(), None);
            metrics::counter!("g2p_gateway_signatures_rejected_total").increment(1);
            response.reason = Some(match e {
                Error::InvalidSignature(reason) => reason.to_string(),
                other => other.to_string(),
            });
            Ok(Done {
                response,
                key: None,
                refused: true,
            })
        }
        other => {
            let verified = finish("verify", &name, started, other)?;
            response.valid = true;
            response.kid = verified.key_id().map(str::to_string);
            render_payload(verified.payload(), &mut response);
            let key = response.kid.clone();
            Ok(Done::with_key(response, key))
        }
    }
}
