//! One DTO per endpoint (spec section 3). Field names are the exact JSON names.
//!
//! Client rules baked in: `referenceId` is always serialized (possibly `""`, never `null`,
//! spec Q7); `salt`, `aad` and other optional members are omitted when absent (Q8).

use serde::{Deserialize, Serialize};

/// `/encrypt` and `/decrypt` request (spec 3.1, 3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CryptomanagerRequest {
    /// Key application, e.g. `REGISTRATION`.
    #[serde(default)]
    pub application_id: String,
    /// Key reference, e.g. `ENCRYPT`.
    #[serde(default)]
    pub reference_id: String,
    /// Strict `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_stamp: Option<String>,
    /// b64u plaintext (encrypt) or ciphertext (decrypt).
    #[serde(default)]
    pub data: String,
    /// b64u GCM IV (mode A).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// b64u GCM additional data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<String>,
    /// Deprecated; ignored on encrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepend_thumbprint: Option<bool>,
}

/// `/encrypt` and `/decrypt` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptomanagerResponse {
    /// b64u ciphertext (encrypt) or plaintext (decrypt).
    pub data: String,
}

/// `/jwtSign` request (spec 3.3); `/jwsSign` adds the three last members (3.11).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtSignRequest {
    /// b64u of the payload.
    #[serde(default)]
    pub data_to_sign: String,
    /// Signing key application.
    #[serde(default)]
    pub application_id: String,
    /// Signing key reference (`""` = master key).
    #[serde(default)]
    pub reference_id: String,
    /// Attached (`true`) or detached payload.
    #[serde(default)]
    pub include_payload: bool,
    /// Add `x5c`.
    #[serde(default)]
    pub include_certificate: bool,
    /// Add `x5t#S256`.
    #[serde(default)]
    pub include_cert_hash: bool,
    /// Add `x5u`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_url: Option<String>,
    /// `/jwsSign` only: check the payload is JSON. Must be sent there (spec Q14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_json: Option<bool>,
    /// `/jwsSign` only: `true` for a standard (base64url) payload, else RFC 7797 unencoded.
    #[serde(
        rename = "b64JWSHeaderParam",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub b64_jws_header_param: Option<bool>,
    /// `/jwsSign` only: `RS256`, `PS256`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_algorithm: Option<String>,
}

/// `/jwtSign` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtSignResponse {
    /// The compact JWS.
    pub jwt_signed_data: String,
    /// Opaque (Jackson default format, no `Z`).
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// `/jwtVerify` request (spec 3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtVerifyRequest {
    /// The compact JWS.
    #[serde(default)]
    pub jwt_signature_data: String,
    /// b64u payload of a detached JWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_data: Option<String>,
    /// Key application.
    #[serde(default)]
    pub application_id: String,
    /// Key reference.
    #[serde(default)]
    pub reference_id: String,
    /// PEM certificate to verify with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_data: Option<String>,
    /// Check the trust path.
    #[serde(default)]
    pub validate_trust: bool,
    /// Trust domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `/jwtVerify` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtVerifyResponse {
    /// Whether the signature verified.
    pub signature_valid: bool,
    /// `Validation Successful` / `Validation Failed`.
    #[serde(default)]
    pub message: String,
    /// `TRUST_NOT_VERIFIED`, ...
    #[serde(default)]
    pub trust_valid: String,
}

/// `/getCertificate` response (`KeyPairGenerateResponseDto`, spec 3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairGenerateResponse {
    /// PEM certificate.
    #[serde(default)]
    pub certificate: Option<String>,
    /// PEM CSR.
    #[serde(default)]
    pub cert_sign_request: Option<String>,
    /// notBefore, strict format.
    #[serde(default)]
    pub issued_at: Option<String>,
    /// notAfter, strict format.
    #[serde(default)]
    pub expiry_at: Option<String>,
    /// Response time.
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// One entry of `/getAllCertificates` (spec 3.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDataResponse {
    /// PEM certificate.
    pub certificate_data: String,
    /// Key generation time.
    #[serde(default)]
    pub issued_at: Option<String>,
    /// Key expiry time.
    #[serde(default)]
    pub expiry_at: Option<String>,
    /// keyId (spec 6.5).
    pub key_id: String,
}

/// `/getAllCertificates` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllCertificatesResponse {
    /// Every key of the pair, oldest first.
    #[serde(default)]
    pub all_certificates: Vec<CertificateDataResponse>,
}

/// `/generateMasterKey/{objectType}` request (spec 3.7).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPairGenerateRequest {
    /// Application.
    #[serde(default)]
    pub application_id: String,
    /// Reference (blank, or `SIGN` with `KERNEL`).
    #[serde(default)]
    pub reference_id: Option<String>,
    /// Expire the current key and generate a new one.
    #[serde(default)]
    pub force: Option<bool>,
    /// Subject CN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// Subject OU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_unit: Option<String>,
    /// Subject O.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Subject L.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Subject ST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Subject C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `/revokeKey` request (spec 3.10).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeKeyRequest {
    /// Application.
    #[serde(default)]
    pub application_id: String,
    /// Reference.
    #[serde(default)]
    pub reference_id: String,
    /// Do not generate a replacement automatically.
    #[serde(default)]
    pub disable_auto_gen: Option<bool>,
}

/// `/uploadOtherDomainCertificate` request (spec 3.9).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadCertificateRequest {
    /// Application.
    #[serde(default)]
    pub application_id: String,
    /// Reference.
    #[serde(default)]
    pub reference_id: String,
    /// PEM certificate.
    #[serde(default)]
    pub certificate_data: String,
}

/// `status` + `timestamp` answers (`/revokeKey`, `/uploadOtherDomainCertificate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// e.g. `Key Revoked`, `Upload Success`.
    pub status: String,
    /// Opaque.
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encrypt_request_omits_absent_salt_and_keeps_empty_reference() {
        let req = CryptomanagerRequest {
            application_id: "REGISTRATION".into(),
            reference_id: String::new(),
            time_stamp: Some("2025-01-15T10:20:30.123Z".into()),
            data: "QQ".into(),
            salt: None,
            aad: None,
            prepend_thumbprint: None,
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"applicationId": "REGISTRATION", "referenceId": "", "timeStamp": "2025-01-15T10:20:30.123Z", "data": "QQ"})
        );
    }

    #[test]
    fn jwt_sign_request_field_names() {
        let req = JwtSignRequest {
            data_to_sign: "e30".into(),
            application_id: "ID_REPO".into(),
            include_payload: true,
            validate_json: Some(false),
            b64_jws_header_param: Some(true),
            ..Default::default()
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["dataToSign"], "e30");
        assert_eq!(v["referenceId"], "");
        assert_eq!(v["includeCertHash"], false);
        assert_eq!(v["b64JWSHeaderParam"], true);
        assert_eq!(v["validateJson"], false);
        assert!(v.get("certificateUrl").is_none());
    }

    #[test]
    fn all_certificates_parse() {
        let v = json!({"allCertificates": [{"certificateData": "PEM", "issuedAt": "2024-01-15T10:20:30.123Z", "expiryAt": null, "keyId": "k"}]});
        let parsed: AllCertificatesResponse = serde_json::from_value(v).unwrap();
        assert_eq!(parsed.all_certificates[0].key_id, "k");
        let verify: JwtVerifyResponse = serde_json::from_value(json!({"signatureValid": true, "message": "Validation Successful", "trustValid": "TRUST_NOT_VERIFIED"})).unwrap();
        assert!(verify.signature_valid);
    }
}
