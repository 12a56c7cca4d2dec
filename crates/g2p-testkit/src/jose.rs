//! A second, deliberately plain JWS writer and reader (RFC 7515), for cross-checking.

use serde_json::Value;

use crate::{TestKey, b64u, unb64};

/// Signs `payload` under `header` (any JSON object) with RS256 (or PS256 when the header
/// says so); `detached` leaves the middle segment empty. RFC 7797: with `"b64": false` listed
/// in `crit`, the payload is signed as it is (and must then be detached, or text).
pub fn sign(key: &TestKey, header: &Value, payload: &[u8], detached: bool) -> String {
    let unencoded = header["b64"] == Value::Bool(false)
        && header["crit"]
            .as_array()
            .is_some_and(|c| c.iter().any(|v| v == "b64"));
    sign_with_input(key, header, payload, detached, unencoded)
}

/// As [`sign`], but the payload is signed as it is whatever the header says: for crafting
/// tokens whose header does not match their signature.
pub fn sign_unencoded(key: &TestKey, header: &Value, payload: &[u8], detached: bool) -> String {
    sign_with_input(key, header, payload, detached, true)
}

fn sign_with_input(
    key: &TestKey,
    header: &Value,
    payload: &[u8],
    detached: bool,
    unencoded: bool,
) -> String {
    let h = b64u(serde_json::to_string(header).unwrap().as_bytes());
    let segment = if unencoded {
        String::from_utf8_lossy(payload).into_owned()
    } else {
        b64u(payload)
    };
    let mut input = format!("{h}.").into_bytes();
    if unencoded {
        input.extend_from_slice(payload);
    } else {
        input.extend_from_slice(segment.as_bytes());
    }
    let sig = match header["alg"].as_str() {
        Some("PS256") => key.sign_ps256(&input),
        _ => key.sign_rs256(&input),
    };
    if detached {
        format!("{h}..{}", b64u(&sig))
    } else {
        format!("{h}.{segment}.{}", b64u(&sig))
    }
}

/// Checks an RS256 / PS256 token against an RSAPublicKey DER; `actual` replaces segment 2.
pub fn verify(public_key_der: &[u8], token: &str, actual: Option<&str>) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let Ok(header) = serde_json::from_slice::<Value>(&unb64(parts[0])) else {
        return false;
    };
    let payload = actual.unwrap_or(parts[1]);
    let input = format!("{}.{payload}", parts[0]);
    let alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match header["alg"].as_str()
    {
        Some("RS256") => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
        _ => return false,
    };
    let Ok(sig) = std::panic::catch_unwind(|| unb64(parts[2])) else {
        return false;
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(alg, public_key_der)
        .verify(input.as_bytes(), &sig)
        .is_ok()
}
