//! The Keycloak-compatible token endpoint (spec section 7) and token validation as the MOSIP
//! auth adapter does it (section 2): RS256 JWTs, cookie `Authorization` (or Bearer), roles
//! from `realm_access.roles`.

use std::collections::HashMap;

use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use g2p_encryption::clock::Clock;
use g2p_encryption::jws::{self, VerificationKeys};
use g2p_encryption::{Alg, Jwk, JwkSet, JwsHeader, KeyUse, UnverifiedJws, b64};
use serde::{Deserialize, Serialize};

use crate::error::KmsError;

/// Roles that may call the crypto and certificate endpoints (MOSIP's defaults plus ours).
pub const CRYPTO_ROLES: &[&str] = &[
    "ZONAL_ADMIN",
    "GLOBAL_ADMIN",
    "INDIVIDUAL",
    "ID_AUTHENTICATION",
    "TEST",
    "REGISTRATION_ADMIN",
    "REGISTRATION_SUPERVISOR",
    "REGISTRATION_OFFICER",
    "REGISTRATION_PROCESSOR",
    "PRE_REGISTRATION_ADMIN",
    "RESIDENT",
    "CREDENTIAL_ISSUANCE",
    "KEY_MAKER",
];
/// Roles that may generate, revoke and upload keys.
pub const ADMIN_ROLES: &[&str] = &["KEY_MAKER", "GLOBAL_ADMIN"];
/// Roles given to a client configured without explicit roles: the crypto endpoints only.
/// Administration (`KEY_MAKER`: upload certificates, force rotation, revoke) must be asked for.
pub const DEFAULT_CLIENT_ROLES: &[&str] = &["REGISTRATION_ADMIN"];

/// A client allowed to obtain tokens.
#[derive(Clone)]
pub struct Client {
    /// Client id.
    pub id: String,
    secret: String,
    /// Realm roles put in its tokens.
    pub roles: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("roles", &self.roles)
            .finish()
    }
}

impl Client {
    /// A client with these roles.
    pub fn new(id: &str, secret: &str, roles: Vec<String>) -> Self {
        Client {
            id: id.into(),
            secret: secret.into(),
            roles,
        }
    }

    /// Parses `ID:SECRET` or `ID:SECRET:ROLE,ROLE`.
    ///
    /// # Errors
    /// A message naming the expected form.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut parts = spec.splitn(3, ':');
        let (Some(id), Some(secret)) = (parts.next(), parts.next()) else {
            return Err("a client is given as ID:SECRET or ID:SECRET:ROLE,ROLE".into());
        };
        if id.is_empty() || secret.is_empty() {
            return Err("a client is given as ID:SECRET (both non-empty)".into());
        }
        let roles = match parts.next() {
            Some(r) if !r.trim().is_empty() => r.split(',').map(|s| s.trim().to_string()).collect(),
            _ => DEFAULT_CLIENT_ROLES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Client::new(id, secret, roles))
    }

    fn secret_matches(&self, given: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.secret.as_bytes(), given.as_bytes())
            .is_ok()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token, or invalid, or expired: 401.
    Unauthenticated(&'static str),
    /// Valid token without the role: 403.
    Forbidden,
}

/// The identity behind a valid token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `azp`.
    pub client_id: String,
    /// `realm_access.roles`.
    pub roles: Vec<String>,
}

/// A realm: its signing key, issuer and clients.
pub struct Realm {
    name: String,
    issuer: String,
    key: RsaKeyPair,
    kid: String,
    keys: JwkSet,
    verification: VerificationKeys,
    clients: HashMap<String, Client>,
    token_lifetime: i64,
    /// Tokens already verified, by SHA-256 (not the tokens themselves): expiry and principal,
    /// at most [`VERIFIED_TOKENS`] of them (the least used go first). The realm's key lives as
    /// long as the process, so a verified token stays good until it
    /// expires; this spares an RSA verification on every request.
    verified: moka::sync::Cache<[u8; 32], (i64, Principal)>,
    clock: Clock,
}

/// Most tokens remembered as verified.
const VERIFIED_TOKENS: u64 = 4096;

impl std::fmt::Debug for Realm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realm")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("clients", &self.clients.values().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The claims of a realm token, as Keycloak writes them for a service account (spec 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmClaims {
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// `<base>/realms/<realm>`.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// `service-account-<client>`.
    pub sub: String,
    /// `Bearer`.
    pub typ: String,
    /// The client the token was issued to.
    pub azp: String,
    /// Granted scope.
    pub scope: String,
    /// The realm roles.
    pub realm_access: RealmAccess,
    /// `service-account-<client>`.
    pub preferred_username: String,
    /// The client id again, as Keycloak adds it for service accounts.
    #[serde(rename = "clientId")]
    pub client_id: String,
}

/// `realm_access` of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmAccess {
    /// Role names.
    pub roles: Vec<String>,
}

/// The answer of the token endpoint (RFC 6749 section 5.1, Keycloak's members).
#[derive(Debug, Clone, Serialize)]
pub struct TokenAnswer {
    /// The JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// No refresh tokens for client credentials.
    pub refresh_expires_in: i64,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Keycloak's `not-before-policy`.
    #[serde(rename = "not-before-policy")]
    pub not_before_policy: i64,
    /// Granted scope.
    pub scope: &'static str,
}

/// The scope of issued tokens.
const SCOPE: &str = "profile email";

/// An RFC 6749 error answer: (HTTP status, `error`, `error_description`).
pub type OAuthError = (u16, &'static str, String);

impl Realm {
    /// A realm with a fresh RS256 signing key (tokens of a previous run are not accepted;
    /// see [`Realm::with_key`] and [`crate::keyfile::realm_key`] to keep one).
    ///
    /// # Errors
    /// Key generation failure.
    pub fn new(
        name: &str,
        issuer_base: &str,
        clients: Vec<Client>,
        token_lifetime: i64,
    ) -> Result<Self, KmsError> {
        Self::with_key(
            name,
            issuer_base,
            clients,
            token_lifetime,
            &crate::store::generate_pkcs8()?,
        )
    }

    /// A realm signing with this RSA key (PKCS#8 DER), e.g. one kept by
    /// [`crate::keyfile::realm_key`] so that tokens stay valid across restarts.
    ///
    /// # Errors
    /// A key that is not an RSA PKCS#8 key.
    pub fn with_key(
        name: &str,
        issuer_base: &str,
        clients: Vec<Client>,
        token_lifetime: i64,
        pkcs8: &[u8],
    ) -> Result<Self, KmsError> {
        let key = RsaKeyPair::from_pkcs8(pkcs8)
            .map_err(|_| KmsError::Config("the realm key is not an RSA PKCS#8 key".into()))?;
        let public = key.public_key();
        let (n, e) = rsa_components(public.as_ref())
            .ok_or_else(|| KmsError::Internal("realm public key".into()))?;
        let kid = b64::encode_b64u(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public.as_ref()).as_ref()[..16],
        );
        let jwk = Jwk {
            kty: "RSA".into(),
            n: b64::encode_b64u(&n),
            e: b64::encode_b64u(&e),
            kid: Some(kid.clone()),
            key_use: Some(KeyUse::Sig),
            alg: Some(Alg::Rs256.as_str().into()),
            x5c: Vec::new(),
            x5t: None,
            x5t_s256: None,
        };
        let keys = JwkSet { keys: vec![jwk] };
        let verification = VerificationKeys::from_jwks(&keys)
            .map_err(|e| KmsError::Internal(format!("realm key: {e}")))?;
        Ok(Realm {
            name: name.into(),
            issuer: format!("{}/realms/{name}", issuer_base.trim_end_matches('/')),
            key,
            kid,
            keys,
            verification,
            clients: clients.into_iter().map(|c| (c.id.clone(), c)).collect(),
            token_lifetime,
            verified: moka::sync::Cache::new(VERIFIED_TOKENS),
            clock: Clock::system(),
        })
    }

    /// The same realm on another clock (tests move one to expire tokens without waiting).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The realm's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The realm's public keys (`/protocol/openid-connect/certs`).
    pub fn keys(&self) -> &JwkSet {
        &self.keys
    }

    /// Answers a token request (form fields, and HTTP Basic credentials if sent).
    ///
    /// # Errors
    /// RFC 6749 errors.
    pub fn issue(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<TokenAnswer, OAuthError> {
        let client = self.client_of(form, basic)?;
        let now = self.clock.unix_seconds();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| (500, "server_error", String::new()))?;
        let account = format!("service-account-{}", client.id);
        let claims = RealmClaims {
            exp: now + self.token_lifetime,
            iat: now,
            jti: b64::encode_b64u(&jti),
            iss: self.issuer.clone(),
            aud: "account".into(),
            sub: account.clone(),
            typ: "Bearer".into(),
            azp: client.id.clone(),
            scope: SCOPE.into(),
            realm_access: RealmAccess {
                roles: client.roles.clone(),
            },
            preferred_username: account,
            client_id: client.id.clone(),
        };
        let header = JwsHeader {
            typ: Some("JWT".into()),
            ..JwsHeader::rs256(Some(self.kid.clone()))
        };
        let payload =
            serde_json::to_vec(&claims).map_err(|_| (500, "server_error", String::new()))?;
        let access_token = jws::sign(&self.key, &header, &payload, false)
            .map_err(|_| (500, "server_error", String::new()))?;
        Ok(TokenAnswer {
            access_token,
            expires_in: self.token_lifetime,
            refresh_expires_in: 0,
            token_type: "Bearer",
            not_before_policy: 0,
            scope: SCOPE,
        })
    }

    /// The client a token request authenticates as: HTTP Basic, else the form's
    /// `client_id` and `client_secret`.
    fn client_of(
        &self,
        form: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<&Client, OAuthError> {
        let grant = form.get("grant_type").ok_or((
            400,
            "invalid_request",
            "Missing form parameter: grant_type".to_string(),
        ))?;
        if grant != "client_credentials" {
            return Err((
                400,
                "unsupported_grant_type",
                "Unsupported grant_type".into(),
            ));
        }
        let invalid_client = || {
            (
                401,
                "invalid_client",
                "Invalid client or Invalid client credentials".to_string(),
            )
        };
        let (id, secret) = match (basic, form.get("client_id"), form.get("client_secret")) {
            (Some(pair), _, _) => pair,
            (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
            (None, Some(_), None) | (None, None, _) => return Err(invalid_client()),
        };
        self.clients
            .get(&id)
            .filter(|c| c.secret_matches(&secret))
            .ok_or_else(invalid_client)
    }

    /// Validates a token: signature by this realm, not expired, our issuer, a known client.
    ///
    /// # Errors
    /// [`AuthFailure::Unauthenticated`] naming the check that failed.
    pub fn validate(&self, token: &str) -> Result<Principal, AuthFailure> {
        let now = self.clock.unix_seconds();
        let digest: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
                .as_ref()
                .try_into()
                .unwrap_or([0; 32]);
        if let Some((exp, principal)) = self.verified.get(&digest) {
            if exp > now {
                return Ok(principal);
            }
            self.verified.invalidate(&digest);
            return Err(AuthFailure::Unauthenticated("token expired"));
        }
        let (exp, principal) = self.verify_token(token, now)?;
        self.verified.insert(digest, (exp, principal.clone()));
        Ok(principal)
    }

    fn verify_token(&self, token: &str, now: i64) -> Result<(i64, Principal), AuthFailure> {
        let parsed = UnverifiedJws::parse(token)
            .map_err(|_| AuthFailure::Unauthenticated("token is not a JWT"))?;
        let verified = parsed
            .verify_with(&self.verification)
            .map_err(|_| AuthFailure::Unauthenticated("token signature"))?;
        let claims: RealmClaims = serde_json::from_slice(verified.payload())
            .map_err(|_| AuthFailure::Unauthenticated("token claims"))?;
        if claims.exp <= now {
            return Err(AuthFailure::Unauthenticated("token expired"));
        }
        if claims.iss != self.issuer {
            return Err(AuthFailure::Unauthenticated("token issuer"));
        }
        if !self.clients.contains_key(&claims.azp) {
            return Err(AuthFailure::Unauthenticated("token audience"));
        }
        Ok((
            claims.exp,
            Principal {
                client_id: claims.azp,
                roles: claims.realm_access.roles,
            },
        ))
    }
}

impl Principal {
    /// Whether the principal holds one of `roles`.
    pub fn has_any(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }
}

/// Modulus and exponent of a DER RSAPublicKey.
fn rsa_components(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use pkcs1::der::Decode as _;
    let key = pkcs1::RsaPublicKey::from_der(der).ok()?;
    Some((
        key.modulus.as_bytes().to_vec(),
        key.public_exponent.as_bytes().to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> Realm {
        Realm::new(
            "openg2p",
            "http://kms",
            vec![
                Client::parse("app:pw").unwrap(),
                Client::parse("ro:pw2:TEST").unwrap(),
            ],
            300,
        )
        .unwrap()
    }

    /// A token for client `app` (secret `pw`) by the form body.
    fn app_token(realm: &Realm) -> String {
        let answer = realm
            .issue(
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "app"),
                    ("client_secret", "pw"),
                ]),
                None,
            )
            .unwrap();
        answer.access_token
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn issues_and_validates() {
        let r = realm();
        let token = &app_token(&r);
        let p = r.validate(token).unwrap();
        assert_eq!(p.client_id, "app");
        assert!(p.has_any(CRYPTO_ROLES) && !p.has_any(ADMIN_ROLES));
        let ro = r
            .issue(
                &form(&[("grant_type", "client_credentials")]),
                Some(("ro".into(), "pw2".into())),
            )
            .unwrap();
        let p = r.validate(&ro.access_token).unwrap();
        assert!(!p.has_any(ADMIN_ROLES) && p.has_any(CRYPTO_ROLES));
        // Another realm's token is refused.
        let other = realm();
        assert_eq!(
            other.validate(token).unwrap_err(),
            AuthFailure::Unauthenticated("token signature")
        );
        assert!(format!("{:?}", r).contains("[redacted]") && !format!("{:?}", r).contains("pw"));
    }

    #[test]
    fn remembered_tokens_still_expire_and_tampering_is_still_caught() {
        let clock = Clock::adjustable();
        let r = Realm::new(
            "openg2p",
            "http://kms",
            vec![Client::parse("app:pw").unwrap()],
            60,
        )
        .unwrap()
        .with_clock(clock.clone());
        let token = app_token(&r);
        assert!(r.validate(&token).is_ok());
        assert!(r.validate(&token).is_ok(), "second time, from the cache");
        // Another payload under the same signature.
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}x.{}",
            parts[0],
            &parts[1][..parts[1].len() - 1],
            parts[2]
        );
        assert_eq!(
            r.validate(&tampered).unwrap_err(),
            AuthFailure::Unauthenticated("token signature")
        );
        clock.advance(std::time::Duration::from_secs(61));
        assert_eq!(
            r.validate(&token).unwrap_err(),
            AuthFailure::Unauthenticated("token expired")
        );
    }

    #[test]
    fn oauth_errors() {
        let r = realm();
        let e = r.issue(&form(&[("client_id", "app")]), None).unwrap_err();
        assert_eq!((e.0, e.1), (400, "invalid_request"));
        let e = r
            .issue(&form(&[("grant_type", "password")]), None)
            .unwrap_err();
        assert_eq!((e.0, e.1), (400, "unsupported_grant_type"));
        let e = r
            .issue(
                &form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "app"),
                    ("client_secret", "nope"),
                ]),
                None,
            )
            .unwrap_err();
        assert_eq!((e.0, e.1), (401, "invalid_client"));
        assert!(Client::parse("nosecret").is_err());
    }
}
