//! Request and response wrappers (spec 1.1, 1.2) and the one place responses are decoded.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EnvelopeError, ServiceError};
use crate::timestamp;

/// The wrapper every POST/PUT body travels in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestWrapper<T> {
    /// Free text, echoed back.
    #[serde(default)]
    pub id: Option<String>,
    /// Free text, echoed back.
    #[serde(default)]
    pub version: Option<String>,
    /// ISO local date-time.
    #[serde(default)]
    pub requesttime: Option<String>,
    /// Ignored by the service.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// The endpoint DTO.
    pub request: T,
}

impl<T> RequestWrapper<T> {
    /// Wraps a request as a client sends it: id and version `"string"` (as OpenG2P sends),
    /// `requesttime` now in the strict format, `metadata: {}`.
    pub fn new(request: T) -> Self {
        RequestWrapper {
            id: Some("string".into()),
            version: Some("string".into()),
            requesttime: Some(timestamp::now_strict()),
            metadata: Some(Value::Object(Default::default())),
            request,
        }
    }
}

/// The wrapper every answer travels in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseWrapper<T> {
    /// Copied from the request (`null` for GET).
    pub id: Option<String>,
    /// Copied from the request (`null` for GET).
    pub version: Option<String>,
    /// `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`.
    pub responsetime: String,
    /// Always `null`.
    pub metadata: Option<Value>,
    /// The DTO on success.
    pub response: Option<T>,
    /// The errors on failure; `null` on success.
    pub errors: Option<Vec<ServiceError>>,
}

impl<T> ResponseWrapper<T> {
    /// A success answer.
    pub fn success(id: Option<String>, version: Option<String>, response: T) -> Self {
        ResponseWrapper {
            id,
            version,
            responsetime: timestamp::now_strict(),
            metadata: None,
            response: Some(response),
            errors: None,
        }
    }

    /// A failure answer.
    pub fn failure(id: Option<String>, version: Option<String>, errors: Vec<ServiceError>) -> Self {
        ResponseWrapper {
            id,
            version,
            responsetime: timestamp::now_strict(),
            metadata: None,
            response: None,
            errors: Some(errors),
        }
    }
}

#[derive(Deserialize)]
struct ErrorsOnly {
    #[serde(default)]
    errors: Option<Vec<ServiceError>>,
}

/// Reads the first KER error of a body that may be anything, including two JSON documents
/// back to back (the 401 of the 1.2.x/1.3.x auth adapter, spec Q4).
fn first_error(body: &[u8]) -> Option<ServiceError> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<ErrorsOnly>();
    stream.next()?.ok()?.errors?.into_iter().next()
}

/// Decodes an answer: success only for HTTP 200 with `errors` null or empty and a
/// non-null `response`.
///
/// # Errors
/// [`EnvelopeError`] naming the status and the KER code and message when there is one.
pub fn decode_envelope<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, EnvelopeError> {
    match status {
        200 => {}
        401 => return Err(EnvelopeError::Unauthorized(first_error(body))),
        403 => return Err(EnvelopeError::Forbidden(first_error(body))),
        _ => {
            return Err(EnvelopeError::Status {
                status,
                error: first_error(body),
            });
        }
    }
    let wrapper: ResponseWrapper<Value> = serde_json::from_slice(body).map_err(|e| {
        EnvelopeError::InvalidBody(format!("not a Keymanager response wrapper: {e}"))
    })?;
    if let Some(errors) = wrapper.errors.filter(|e| !e.is_empty()) {
        return Err(EnvelopeError::Service(errors));
    }
    let response = wrapper.response.filter(|r| !r.is_null()).ok_or_else(|| {
        EnvelopeError::InvalidBody("`response` is null and `errors` is empty".into())
    })?;
    serde_json::from_value(response)
        .map_err(|e| EnvelopeError::InvalidBody(format!("unexpected `response` shape: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::CryptomanagerResponse;

    fn decode(status: u16, body: &str) -> Result<CryptomanagerResponse, EnvelopeError> {
        decode_envelope(status, body.as_bytes())
    }

    #[test]
    fn success() {
        let body = r#"{"id":"string","version":"string","responsetime":"2025-01-15T10:20:30.456Z","metadata":null,"response":{"data":"QQ"},"errors":null}"#;
        assert_eq!(decode(200, body).unwrap().data, "QQ");
        let empty_errors = body.replace(r#""errors":null"#, r#""errors":[]"#);
        assert_eq!(decode(200, &empty_errors).unwrap().data, "QQ");
    }

    #[test]
    fn http_200_with_errors_is_a_failure() {
        let body = r#"{"id":null,"version":null,"responsetime":"2025-01-15T10:20:30.456Z","metadata":null,"response":null,"errors":[{"errorCode":"KER-CRY-011","message":"Not Allowed"}]}"#;
        let err = decode(200, body).unwrap_err();
        assert_eq!(err.service_error().unwrap().error_code, "KER-CRY-011");
        assert_eq!(err.to_string(), "KER-CRY-011: Not Allowed");
    }

    #[test]
    fn null_response_without_errors_is_invalid() {
        let body = r#"{"id":null,"version":null,"responsetime":"x","metadata":null,"response":null,"errors":null}"#;
        assert!(matches!(
            decode(200, body),
            Err(EnvelopeError::InvalidBody(_))
        ));
        assert!(matches!(
            decode(200, "<html>"),
            Err(EnvelopeError::InvalidBody(_))
        ));
        let wrong_shape = r#"{"responsetime":"x","id":null,"version":null,"metadata":null,"response":{"nodata":1},"errors":null}"#;
        assert!(
            matches!(decode(200, wrong_shape), Err(EnvelopeError::InvalidBody(m)) if m.contains("shape"))
        );
    }

    #[test]
    fn unauthorized_body_may_be_two_documents_or_garbage() {
        let one = r#"{"id":null,"version":null,"responsetime":"x","metadata":null,"response":null,"errors":[{"errorCode":"KER-ATH-401","message":"Authentication Failed"}]}"#;
        let err = decode(401, &format!("{one}{one}")).unwrap_err();
        assert_eq!(err.service_error().unwrap().error_code, "KER-ATH-401");
        assert_eq!(
            decode(401, "%%").unwrap_err(),
            EnvelopeError::Unauthorized(None)
        );
        assert!(matches!(
            decode(403, one),
            Err(EnvelopeError::Forbidden(Some(_)))
        ));
    }

    #[test]
    fn other_statuses_keep_status_and_code() {
        let body = r#"{"errors":[{"errorCode":"KER-KMS-500","message":null}]}"#;
        assert_eq!(
            decode(500, body).unwrap_err(),
            EnvelopeError::Status {
                status: 500,
                error: Some(ServiceError::new("KER-KMS-500", ""))
            }
        );
        assert_eq!(
            decode(502, "").unwrap_err(),
            EnvelopeError::Status {
                status: 502,
                error: None
            }
        );
    }

    #[test]
    fn client_wrapper_shape() {
        let w = RequestWrapper::new(serde_json::json!({"a": 1}));
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["id"], "string");
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert!(crate::timestamp::parse_strict(v["requesttime"].as_str().unwrap()).is_ok());
    }
}
