//! `/encrypt` and `/decrypt` of the fake.

use super::*;

pub(super) fn opt_b64(request: &Value, field: &str) -> Result<Option<Vec<u8>>, (String, String)> {
    match request[field].as_str() {
        None => Ok(None),
        Some(s) if s.trim().len() < 2 => ker(
            "KER-KMS-005",
            &format!("request.{field} should not be empty"),
        ),
        Some(s) => decode(s).map(Some),
    }
}

pub(super) fn decode(s: &str) -> Result<Vec<u8>, (String, String)> {
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

pub(super) fn validate_crypto(
    request: &Value,
) -> Result<(String, String, Vec<u8>), (String, String)> {
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

pub(super) fn encrypt(inner: &mut Inner, request: &Value) -> Result<Value, (String, String)> {
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

pub(super) fn decrypt(inner: &Inner, request: &Value) -> Result<Value, (String, String)> {
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
