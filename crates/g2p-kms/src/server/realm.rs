//! The Keycloak-compatible endpoints: `POST /realms/{realm}/protocol/openid-connect/token`
//! and `GET .../certs`.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use g2p_encryption::b64;

use super::ServerState;

pub(super) async fn token(
    State(state): State<ServerState>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let oauth = |status: u16, error: &str, description: String| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(serde_json::json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if realm != state.realm.name() {
        return oauth(404, "invalid_request", "Realm does not exist".into());
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| b64::decode_lenient(v.trim()).ok())
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| {
            v.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    match state.realm.issue(&form, basic) {
        Ok(body) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(body),
        )
            .into_response(),
        Err((status, error, description)) => oauth(status, error, description),
    }
}

pub(super) async fn certs(State(state): State<ServerState>, Path(realm): Path<String>) -> Response {
    if realm != state.realm.name() {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(state.realm.keys().clone()).into_response()
}
