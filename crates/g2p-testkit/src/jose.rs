//! A second, deliberately plain JWS writer and reader (RFC 7515), for cross-checking.

use serde_json::Value;

use crate::{TestKey, b64u, unb64};

/// Signs `payload` under `header` (any JSON object) with RS256 (or PS256 when the header
/// says so); `detached` leaves the middle segment empty.
pub fn sign(key: &TestKey, header: &Value, payload: &[u8], detached: bool) -> String {
    let h = b64u(serde_json::to_string(header).unwrap().as_bytes());
    let p = b64u(payload);
    let input = format!("{h}.{p}");
    let sig = match header["alg"].as_str() {
        Some("PS256") => key.sign_ps256(input.as_bytes()),
        _ => key.sign_rs256(input.as_bytes()),
    };
    if detached {
        format!("{h}..{}", b64u(&sig))
    } else {
        format!("{input}.{}", b64u(&sig))
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
