//! Request and response wrappers (spec 1.1, 1.2): the one place a client decodes answers
//! ([`decode_envelope`]) and a server reads requests ([`IncomingRequest`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{EnvelopeError, KerCode, ServiceError};
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

/// A request as a server reads it (spec 1.1): the `id` and `version` to echo in the answer,
/// and the `request` member, checked when the endpoint asks for its DTO.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    id: Option<String>,
    version: Option<String>,
    wrapper: serde_json::Map<String, Value>,
}

impl IncomingRequest {
    /// Reads a body.
    ///
    /// # Errors
    /// `KER-KMS-005` naming the problem when the body is not a JSON object; the server answers
    /// it with HTTP 400 (spec 1.4).
    pub fn parse(body: &[u8]) -> Result<Self, ServiceError> {
        let wrapper = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(invalid("body must be a JSON object")),
            Err(e) => return Err(invalid(format!("body is not JSON: {e}"))),
        };
        let text = |k: &str| wrapper.get(k).and_then(Value::as_str).map(String::from);
        Ok(IncomingRequest {
            id: text("id"),
            version: text("version"),
            wrapper,
        })
    }

    /// The `id` to echo.
    pub fn id(&self) -> Option<String> {
        self.id.clone()
    }

    /// The `version` to echo.
    pub fn version(&self) -> Option<String> {
        self.version.clone()
    }

    /// The endpoint's request DTO.
    ///
    /// # Errors
    /// `KER-KMS-005` when `requesttime` is not an ISO local date-time, `request` is missing or
    /// null, or it does not fit `T` (the message names the member).
    pub fn request<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        if let Some(rt) = self.wrapper.get("requesttime").and_then(Value::as_str)
            && timestamp::parse_lenient(rt).is_err()
        {
            return Err(invalid(format!("Invalid format for requesttime: {rt:?}")));
        }
        let request = self
            .wrapper
            .get("request")
            .filter(|r| !r.is_null())
            .ok_or_else(|| invalid("request must not be null"))?;
        T::deserialize(request).map_err(|e| invalid(format!("request: {e}")))
    }

    /// The answer to this request: its `id` and `version`, and the response or the errors.
    pub fn answer<R>(&self, result: Result<R, ServiceError>) -> ResponseWrapper<R> {
        match result {
            Ok(response) => ResponseWrapper::success(self.id(), self.version(), response),
            Err(e) => ResponseWrapper::failure(self.id(), self.version(), vec![e]),
        }
    }
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::new(KerCode::Kms005, message)
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
                error: Some(ServiceError::new(KerCode::Kms500, ""))
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
    fn server_reads_requests() {
        use crate::dto::RevokeKeyRequest;
        let body = br#"{"id":"i","version":"v","requesttime":"2025-01-15T10:20:30.456Z","request":{"applicationId":"A","referenceId":"R"}}"#;
        let incoming = IncomingRequest::parse(body).unwrap();
        assert_eq!(
            (incoming.id().as_deref(), incoming.version().as_deref()),
            (Some("i"), Some("v"))
        );
        let r: RevokeKeyRequest = incoming.request().unwrap();
        assert_eq!(
            (r.application_id.as_str(), r.reference_id.as_str()),
            ("A", "R")
        );
        let answer = incoming.answer::<()>(Err(KerCode::Kms021.into()));
        assert_eq!(answer.id.as_deref(), Some("i"));
        assert_eq!(answer.errors.unwrap()[0].error_code, "KER-KMS-021");
        for (body, says) in [(&b"[1]"[..], "JSON object"), (b"{", "not JSON")] {
            let e = IncomingRequest::parse(body).unwrap_err();
            assert_eq!(e.code(), Some(KerCode::Kms005));
            assert!(e.message.contains(says), "{}", e.message);
        }
        for (body, says) in [
            (
                &br#"{"requesttime":"yesterday","request":{}}"#[..],
                "requesttime",
            ),
            (br#"{"request":null}"#, "request must not be null"),
            (br#"{"request":{"applicationId":7}}"#, "request:"),
        ] {
            let e = IncomingRequest::parse(body)
                .unwrap()
                .request::<RevokeKeyRequest>()
                .unwrap_err();
            assert_eq!(e.code(), Some(KerCode::Kms005));
            assert!(e.message.contains(says), "{}", e.message);
        }
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
