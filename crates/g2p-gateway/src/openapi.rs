//! The OpenAPI 3 description, generated from the handlers' annotations and the API types.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::handlers;

/// The document's source.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "g2p-keymanager gateway",
        description = "Encryption, decryption, JWS signing and verification through the configured key managers. Binary values are base64url without padding."
    ),
    paths(
        handlers::encrypt, handlers::decrypt, handlers::sign, handlers::verify,
        handlers::jwks, handlers::healthz, handlers::readyz, handlers::metrics_text,
        handlers::openapi,
    ),
    components(schemas(
        api::ErrorBody, api::DataRequest, api::DataBatchRequest, api::DataBody,
        api::DataResponse, api::DataItem, api::DataBatchResponse, api::DataResult,
        api::SignRequest, api::SignBatchRequest, api::SignBody, api::SignResponse,
        api::SignItem, api::SignBatchResponse, api::SignResult,
        api::VerifyRequest, api::VerifyBatchRequest, api::VerifyBody, api::VerifyResponse,
        api::VerifyItem, api::VerifyBatchResponse, api::VerifyResult,
        api::Health, api::JwkDoc, api::JwksDoc,
    )),
    modifiers(&ApiKeyScheme)
)]
pub struct ApiDoc;

#[derive(Debug)]
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "api_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
    }
}

/// The document as JSON (built once).
pub fn document_json() -> String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
        .clone()
}
