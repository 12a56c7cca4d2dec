//! What every Keymanager endpoint extracts from a request: the authenticated caller (before
//! the body is read), and the body as a MOSIP request wrapper.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use g2p_mosip::{IncomingRequest, KerCode, ServiceError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::auth::{ADMIN_ROLES, AuthFailure, CRYPTO_ROLES};
use super::{ServerState, answer, failure};
use crate::error::KmsError;

/// A set of realm roles an endpoint accepts.
pub(super) trait RoleSet {
    /// The roles, any one of which admits the caller.
    const ROLES: &'static [&'static str];
}

/// The crypto and certificate endpoints' roles.
pub(super) struct Crypto;

impl RoleSet for Crypto {
    const ROLES: &'static [&'static str] = CRYPTO_ROLES;
}

/// The key administration endpoints' roles.
pub(super) struct Admin;

impl RoleSet for Admin {
    const ROLES: &'static [&'static str] = ADMIN_ROLES;
}

/// A caller whose token is valid and who holds one of `R`'s roles. Extracted from the headers
/// alone, so an unauthenticated request is refused before its body is read.
pub(super) struct Caller<R> {
    pub(super) id: CallerId,
    roles: PhantomData<R>,
}

/// Who a caller is, for the audit trail: the token's client, and the request's id.
pub(super) struct CallerId {
    pub(super) client_id: String,
    pub(super) request_id: Option<String>,
}

/// The request's `x-request-id`, when it sends one of at most 128 characters of
/// `[A-Za-z0-9-_.:]`.
fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(String::from)
}

impl<R: RoleSet> FromRequestParts<ServerState> for Caller<R> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Self, Self::Rejection> {
        let authenticated = bearer(&parts.headers)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Unauthenticated("no token"))
            .and_then(|token| state.realm.validate(&token));
        let refused = match authenticated {
            Ok(principal) if principal.has_any(R::ROLES) => {
                return Ok(Caller {
                    id: CallerId {
                        client_id: principal.client_id,
                        request_id: request_id(&parts.headers),
                    },
                    roles: PhantomData,
                });
            }
            Ok(_) => AuthFailure::Forbidden,
            Err(e) => e,
        };
        Err(match refused {
            AuthFailure::Unauthenticated(why) => {
                tracing::debug!(why, "request refused: 401");
                failure(StatusCode::UNAUTHORIZED, KerCode::Ath401.into())
            }
            AuthFailure::Forbidden => failure(StatusCode::FORBIDDEN, KerCode::Ath403.into()),
        })
    }
}

/// The token from the `Authorization` cookie, or an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.contains("Authorization"))
        .map(|(_, v)| v.trim().to_string());
    from_cookie.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    })
}

/// A MOSIP request body: the wrapper (its `id` and `version` are echoed in the answer) and
/// the endpoint's DTO, or why it does not fit. A body that is not a JSON object is answered
/// 400 in the envelope (spec 1.4).
pub(super) struct Mosip<T> {
    incoming: IncomingRequest,
    request: Result<T, ServiceError>,
}

impl<T: DeserializeOwned> FromRequest<ServerState> for Mosip<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ServerState) -> Result<Self, Self::Rejection> {
        // A browser holding the `Authorization` cookie can be made to post a form here, but
        // not JSON: only JSON is read.
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ServiceError::new(KerCode::Kms005, "Content-Type must be application/json"),
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let incoming =
            IncomingRequest::parse(&body).map_err(|e| failure(StatusCode::BAD_REQUEST, e))?;
        let request = incoming.request();
        Ok(Mosip { incoming, request })
    }
}

impl<T> Mosip<T> {
    /// Answers the request with what `op` makes of its DTO, echoing `id` and `version`.
    pub(super) async fn answer<R, F, Fut>(self, op: F) -> Response
    where
        R: Serialize,
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = Result<R, KmsError>>,
    {
        let result = match self.request {
            Ok(request) => op(request).await,
            Err(e) => Err(e.into()),
        };
        let error = result.as_ref().err().cloned();
        let wrapper = self
            .incoming
            .answer(result.map_err(|e| e.to_service_error()));
        answer(wrapper, error.as_ref())
    }
}
