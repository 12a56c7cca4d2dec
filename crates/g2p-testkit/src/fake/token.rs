//! The Keycloak-compatible token endpoint of the fake.

use super::*;

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

pub(super) async fn token(
    State(state): State<Arc<FakeState>>,
    Path(realm): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    state.inner.lock().unwrap().token_requests += 1;
    if realm != state.options.realm {
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "Realm does not exist",
        );
    }
    let Some(grant) = form.get("grant_type") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing form parameter: grant_type",
        );
    };
    if grant != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    if form.get("client_id") != Some(&state.options.client_id)
        || form.get("client_secret") != Some(&state.options.client_secret)
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let exp = now() + state.options.token_lifetime;
    let claims = json!({
        "exp": exp, "iat": now(), "jti": b64u(&rand16()),
        "iss": format!("http://keycloak/realms/{}", state.options.realm),
        "azp": state.options.client_id,
        "preferred_username": format!("service-account-{}", state.options.client_id),
        "realm_access": {"roles": ["REGISTRATION_ADMIN"]},
        "scope": "profile email",
    });
    let jwt = jose::sign(
        &state.realm_key,
        &json!({"alg": "RS256", "typ": "JWT", "kid": "realm-key"}),
        claims.to_string().as_bytes(),
        false,
    );
    state.inner.lock().unwrap().tokens.insert(jwt.clone(), exp);
    let mut body = json!({
        "access_token": jwt, "refresh_expires_in": 0, "token_type": "Bearer",
        "not-before-policy": 0, "scope": "profile email",
    });
    if state.options.send_expires_in {
        body["expires_in"] = json!(state.options.token_lifetime);
    }
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        axum::Json(body),
    )
        .into_response()
}
