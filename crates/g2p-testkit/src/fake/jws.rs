//! `/jwtSign`, `/jwsSign` and `/jwtVerify` of the fake.

use super::*;

pub(super) fn sign_key_ids(request: &Value) -> Result<(String, String), (String, String)> {
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

pub(super) fn jwt_sign(
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

pub(super) fn jwt_verify(inner: &mut Inner, request: &Value) -> Result<Value, (String, String)> {
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

pub(super) fn public_key_of_cert(der: &[u8]) -> Option<Vec<u8>> {
    use der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .map(<[u8]>::to_vec)
}
