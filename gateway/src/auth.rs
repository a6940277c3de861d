//! Passwords (argon2) and access tokens (JWT HS256), and the extractors that authenticate a
//! request.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pickple_schemas::Role;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    /// Token id (unique per token).
    pub jti: String,
}

pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: u64,
}

impl Jwt {
    pub fn new(secret: &str, ttl_secs: u64) -> Jwt {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Jwt {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl_secs,
        }
    }

    /// A new token for `username` with `role`; returns the token and its expiry (seconds).
    pub fn issue(&self, username: &str, role: Role) -> ApiResult<(String, i64)> {
        let now = now_secs();
        let exp = now + self.ttl_secs as i64;
        let claims = Claims {
            sub: username.to_string(),
            role,
            iat: now,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map(|t| (t, exp))
            .map_err(|e| ApiError::internal(format!("cannot sign a token: {e}")))
    }

    /// Encode arbitrary claims with the gateway's key (tests make expired tokens with it).
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }

    pub fn verify(&self, token: &str) -> ApiResult<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("the access token has expired")
                }
                _ => ApiError::unauthorized("the access token is invalid"),
            })
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub username: String,
    pub role: Role,
}

impl AuthUser {
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    pub fn require_master(&self) -> ApiResult<()> {
        if self.is_master() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs the MASTER role"))
        }
    }

    pub fn require_manager(&self) -> ApiResult<()> {
        match self.role {
            Role::VendorManager | Role::Master => Ok(()),
            Role::User => Err(ApiError::forbidden(
                "this needs the VENDOR_MANAGER or MASTER role",
            )),
        }
    }
}

fn bearer(parts: &Parts) -> Option<Result<&str, ApiError>> {
    let value = parts.headers.get(header::AUTHORIZATION)?;
    let text = match value.to_str() {
        Ok(t) => t.trim(),
        Err(_) => {
            return Some(Err(ApiError::unauthorized(
                "malformed Authorization header",
            )))
        }
    };
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Some(Err(ApiError::unauthorized(
                "expected Authorization: Bearer <token>",
            )))
        }
    };
    Some(Ok(token))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::unauthorized("an access token is required"))??;
        let claims = state.jwt.verify(token)?;
        Ok(AuthUser {
            username: claims.sub,
            role: claims.role,
        })
    }
}

/// Authentication when a token is given (a bad token is still 401), anonymous otherwise.
pub struct MaybeAuth(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        if parts.headers.get(header::AUTHORIZATION).is_none() {
            return Ok(MaybeAuth(None));
        }
        AuthUser::from_request_parts(parts, state)
            .await
            .map(|u| MaybeAuth(Some(u)))
    }
}

/// Hash a password with argon2id (off the async executor: it is slow on purpose).
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt_bytes: [u8; 16] = rand::random();
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| ApiError::internal(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("hash: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(format!("hash task: {e}")))?
}

/// Check a password against a PHC string; any malformed hash is a mismatch.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_tampering_fails() {
        let jwt = Jwt::new("s3cret", 60);
        let (token, _) = jwt.issue("alice", Role::User).unwrap();
        assert_eq!(jwt.verify(&token).unwrap().sub, "alice");
        let other = Jwt::new("other", 60);
        assert!(other.verify(&token).is_err());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = "eyJzdWIiOiJib2IiLCJyb2xlIjoiTUFTVEVSIiwiaWF0IjowLCJleHAiOjk5OTk5OTk5OTksImp0aSI6IngifQ";
        parts[1] = forged;
        assert!(jwt.verify(&parts.join(".")).is_err());
        let expired = jwt.sign(&Claims {
            sub: "alice".into(),
            role: Role::User,
            iat: 0,
            exp: now_secs() - 3600,
            jti: "x".into(),
        });
        assert!(jwt.verify(&expired).is_err());
    }

    #[tokio::test]
    async fn argon2_verifies_only_the_right_password() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), hash.clone()).await);
        assert!(!verify_password("wrong".into(), hash).await);
        assert!(!verify_password("x".into(), "not a hash".into()).await);
    }
}
