//! Passwords (argon2) and access tokens (JWT HS256), and the extractors that authenticate a
//! request.
//!
//! A token is only as good as the account behind it: every request reads the user's view and
//! refuses a token whose account is gone, is another account under the same name (`uid`), or
//! has moved its token version on since (password, role, deletion, sign-out everywhere), and a
//! token whose sign-in was signed out ([`crate::sessions`]).

use std::sync::{Arc, RwLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pickple_schemas::{Role, UserStatus, UserView};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::views::Views;
use crate::AppState;

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// The account's immutable identity.
    #[serde(default)]
    pub uid: String,
    /// The account's token version when the token was issued.
    #[serde(default)]
    pub ver: u64,
    /// The sign-in (refresh token family) the token belongs to.
    #[serde(default)]
    pub sid: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    /// Token id (unique per token).
    pub jti: String,
}

/// Who a token is issued to: the user's view as it stands, and the sign-in.
pub struct Subject<'a> {
    pub user: &'a UserView,
    pub sid: &'a str,
}

struct Keys {
    secret: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Keys {
    fn new(secret: String) -> Keys {
        Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            secret,
        }
    }
}

/// The signing key and token lifetime. The key is the configured secret, or else one this
/// deployment generated on first start and keeps in Redis, where every gateway instance finds
/// it: there is no secret in the source.
pub struct Jwt {
    keys: RwLock<Option<Arc<Keys>>>,
    validation: Validation,
    pub ttl_secs: u64,
}

impl Jwt {
    /// With `secret`, ready at once; without, [`Jwt::ready`] fetches (or makes) the shared one.
    pub fn new(secret: Option<&str>, ttl_secs: u64) -> Jwt {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Jwt {
            keys: RwLock::new(secret.map(|s| Arc::new(Keys::new(s.to_string())))),
            validation,
            ttl_secs,
        }
    }

    fn keys(&self) -> ApiResult<Arc<Keys>> {
        self.keys.read().unwrap().clone().ok_or_else(|| {
            ApiError::unavailable(
                "auth_unavailable",
                "the token signing key is not loaded yet",
            )
        })
    }

    /// Load the deployment's generated secret from Redis, making it if no gateway has yet
    /// (`SET NX`, so concurrent first starts agree). A configured secret needs nothing.
    pub async fn ready(&self, views: &Views) -> ApiResult<()> {
        if self.keys.read().unwrap().is_some() {
            return Ok(());
        }
        self.sync(views).await
    }

    /// Agree with Redis on the generated secret: offer ours (or a new one) and take what Redis
    /// holds. Run now and then, so a Redis that lost its data converges on one secret again.
    pub async fn sync(&self, views: &Views) -> ApiResult<()> {
        let key = views.keys.auth("jwt-secret");
        let offer = match self.keys.read().unwrap().as_ref() {
            Some(k) => k.secret.clone(),
            None => crate::sessions::secret(),
        };
        let _: Option<String> = views
            .query(redis::cmd("SET").arg(&key).arg(&offer).arg("NX"))
            .await?;
        let held: Option<String> = views.query(redis::cmd("GET").arg(&key)).await?;
        let held = held.ok_or_else(|| ApiError::internal("the token signing key vanished"))?;
        let mut keys = self.keys.write().unwrap();
        if keys.as_ref().is_none_or(|k| k.secret != held) {
            if keys.is_some() {
                tracing::warn!("the shared token signing key changed; earlier tokens are void");
            }
            *keys = Some(Arc::new(Keys::new(held)));
        }
        Ok(())
    }

    /// A new token for `subject`; returns the token and its expiry (seconds).
    pub fn issue(&self, subject: &Subject<'_>) -> ApiResult<(String, i64)> {
        let now = now_secs();
        let exp = now + self.ttl_secs as i64;
        let claims = Claims {
            sub: subject.user.username.clone(),
            uid: subject.user.user_id.clone(),
            ver: subject.user.token_version,
            sid: subject.sid.to_string(),
            role: subject.user.role,
            iat: now,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        Ok((self.sign(&claims)?, exp))
    }

    /// Encode arbitrary claims with the gateway's key (tests make expired tokens with it).
    pub fn sign(&self, claims: &Claims) -> ApiResult<String> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.keys()?.encoding,
        )
        .map_err(|e| ApiError::internal(format!("cannot sign a token: {e}")))
    }

    pub fn verify(&self, token: &str) -> ApiResult<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.keys()?.decoding, &self.validation)
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

/// Whether the account behind a token still stands by it: the same account (not another under
/// the same name), active, with the token's version and role.
pub fn still_valid(claims: &Claims, user: Option<&UserView>) -> Result<(), &'static str> {
    let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
        return Err("the account no longer exists");
    };
    if user.user_id != claims.uid {
        return Err("the access token belongs to another account");
    }
    if user.token_version != claims.ver || user.role != claims.role {
        return Err("the access token has been revoked; sign in again");
    }
    Ok(())
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub username: String,
    pub role: Role,
    /// The token's claims (sign-out revokes its sign-in).
    pub claims: Claims,
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
        state.jwt.ready(&state.views).await?;
        let claims = state.jwt.verify(token)?;
        // The account's current view, even while the sink lags: identity changes rarely, and
        // a revocation is seen as soon as the sink has written it.
        // Both reads at once: the Redis connection is multiplexed, so they share one round trip.
        let (user, revoked) = tokio::try_join!(
            state.views.get::<UserView>(&claims.sub),
            crate::sessions::is_revoked(&state.views, &claims)
        )?;
        still_valid(&claims, user.as_ref()).map_err(ApiError::unauthorized)?;
        if revoked {
            return Err(ApiError::unauthorized("signed out; sign in again"));
        }
        Ok(AuthUser {
            username: claims.sub.clone(),
            role: claims.role,
            claims,
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

    fn view(user_id: &str, version: u64, role: Role, status: UserStatus) -> UserView {
        UserView {
            username: "alice".into(),
            user_id: user_id.into(),
            token_version: version,
            nickname: "A".into(),
            email: "a@b.co".into(),
            password_hash: String::new(),
            role,
            status,
            pending_email: None,
            confirm_by: None,
            rejection: None,
            updated_at: 0,
            version: 1,
        }
    }

    #[test]
    fn tokens_round_trip_and_tampering_fails() {
        let jwt = Jwt::new(Some("s3cret"), 60);
        let alice = view("u1", 0, Role::User, UserStatus::Active);
        let subject = Subject {
            user: &alice,
            sid: "s1",
        };
        let (token, _) = jwt.issue(&subject).unwrap();
        let claims = jwt.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.uid.as_str()), ("alice", "u1"));
        let other = Jwt::new(Some("other"), 60);
        assert!(other.verify(&token).is_err());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = "eyJzdWIiOiJib2IiLCJyb2xlIjoiTUFTVEVSIiwiaWF0IjowLCJleHAiOjk5OTk5OTk5OTksImp0aSI6IngifQ";
        parts[1] = forged;
        assert!(jwt.verify(&parts.join(".")).is_err());
        let expired = jwt
            .sign(&Claims {
                exp: now_secs() - 3600,
                ..claims
            })
            .unwrap();
        assert!(jwt.verify(&expired).is_err());
        // Without a configured secret nothing is signed or verified until the shared one is
        // loaded: there is no fallback key.
        let unloaded = Jwt::new(None, 60);
        assert!(unloaded.issue(&subject).is_err());
        assert!(unloaded.verify(&token).is_err());
    }

    #[test]
    fn a_token_holds_only_while_its_account_stands_by_it() {
        let jwt = Jwt::new(Some("s3cret"), 60);
        let alice = view("u1", 3, Role::VendorManager, UserStatus::Active);
        let (token, _) = jwt
            .issue(&Subject {
                user: &alice,
                sid: "s",
            })
            .unwrap();
        let claims = jwt.verify(&token).unwrap();
        assert_eq!(still_valid(&claims, Some(&alice)), Ok(()));
        assert!(still_valid(&claims, None).is_err(), "no account");
        for changed in [
            view("u2", 3, Role::VendorManager, UserStatus::Active), // a newcomer under the name
            view("u1", 4, Role::VendorManager, UserStatus::Active), // password, sign-out...
            view("u1", 3, Role::User, UserStatus::Active),          // role
            view("u1", 3, Role::VendorManager, UserStatus::Deleted),
        ] {
            assert!(still_valid(&claims, Some(&changed)).is_err(), "{changed:?}");
        }
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
