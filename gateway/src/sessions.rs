//! Sign-ins and their refresh tokens, kept in Redis where every gateway instance sees them.
//!
//! A sign-in is a *family*: its first refresh token, and each one that replaced the last. A
//! refresh token works once: using it gives a new access token and the family's next refresh
//! token. A refresh token used a second time was stolen or leaked (the rightful holder already
//! swapped it), so the whole family is revoked: its refresh tokens and its access tokens.
//! Tokens are stored as SHA-256 digests, never as themselves. Signing out revokes the family
//! of the access token that asks; signing out everywhere moves the account's token version on
//! (the users processor), which voids every token of every family.

use pickple_schemas::UserView;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::{now_secs, Claims};
use crate::error::{ApiError, ApiResult};
use crate::views::Views;

/// What a refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refresh {
    pub username: String,
    pub uid: String,
    /// The account's token version when the family was signed in.
    pub ver: u64,
    pub family: String,
    pub exp: i64,
}

/// What using a refresh token found.
pub enum Used {
    /// The first use: it is spent now.
    Fresh(Refresh),
    /// It had been used before: its family is revoked.
    Reused,
    /// Unknown or expired.
    Unknown,
}

/// Marks the token spent and hands back its record, atomically, so that two concurrent uses
/// cannot both be first.
const USE_LUA: &str = r#"
local record = redis.call('GET', KEYS[1])
if not record then return {0, ''} end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return {1, record} end
return {2, record}
"#;

/// A random secret, hex.
pub fn secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token_key(views: &Views, token: &str) -> String {
    views.keys.auth(&format!("refresh:{}", digest(token)))
}

fn family_key(views: &Views, family: &str) -> String {
    views.keys.auth(&format!("family:{family}:revoked"))
}

fn jti_key(views: &Views, jti: &str) -> String {
    views.keys.auth(&format!("jti:{jti}:revoked"))
}

/// A new refresh token of `family` for `user`, valid `ttl_secs`; returns it and its expiry.
pub async fn issue(
    views: &Views,
    user: &UserView,
    family: &str,
    ttl_secs: u64,
) -> ApiResult<(String, i64)> {
    let token = secret();
    let exp = now_secs() + ttl_secs as i64;
    let record = Refresh {
        username: user.username.clone(),
        uid: user.user_id.clone(),
        ver: user.token_version,
        family: family.to_string(),
        exp,
    };
    let json = serde_json::to_string(&record)
        .map_err(|e| ApiError::internal(format!("refresh record: {e}")))?;
    let _: () = views
        .query(
            redis::cmd("SET")
                .arg(token_key(views, &token))
                .arg(json)
                .arg("EX")
                .arg(ttl_secs),
        )
        .await?;
    Ok((token, exp))
}

/// Spend a refresh token. A second use revokes its whole family.
pub async fn spend(views: &Views, token: &str, ttl_secs: u64) -> ApiResult<Used> {
    let key = token_key(views, token);
    let lua = redis::Script::new(USE_LUA);
    let mut script = lua.prepare_invoke();
    script
        .key(&key)
        .key(format!("{key}:used"))
        .arg(ttl_secs.max(1));
    let (outcome, record): (i64, String) = views.invoke(&script).await?;
    if outcome == 0 {
        return Ok(Used::Unknown);
    }
    let record: Refresh = serde_json::from_str(&record)
        .map_err(|e| ApiError::internal(format!("refresh record: {e}")))?;
    if outcome == 2 {
        tracing::warn!(username = %record.username, family = %record.family, "a spent refresh token was used again; revoking its sign-in");
        revoke_family(views, &record.family, ttl_secs).await?;
        return Ok(Used::Reused);
    }
    let revoked: bool = views
        .query(redis::cmd("EXISTS").arg(family_key(views, &record.family)))
        .await?;
    Ok(if revoked {
        Used::Reused
    } else {
        Used::Fresh(record)
    })
}

/// Revoke a sign-in: its refresh tokens and access tokens stop working.
pub async fn revoke_family(views: &Views, family: &str, ttl_secs: u64) -> ApiResult<()> {
    views
        .query::<()>(
            redis::cmd("SET")
                .arg(family_key(views, family))
                .arg(1)
                .arg("EX")
                .arg(ttl_secs.max(1)),
        )
        .await
}

/// Revoke one access token until it expires anyway.
pub async fn revoke_access(views: &Views, claims: &Claims) -> ApiResult<()> {
    let left = (claims.exp - now_secs()).max(1);
    views
        .query::<()>(
            redis::cmd("SET")
                .arg(jti_key(views, &claims.jti))
                .arg(1)
                .arg("EX")
                .arg(left),
        )
        .await
}

/// Whether an access token was signed out (itself, or its sign-in).
pub async fn is_revoked(views: &Views, claims: &Claims) -> ApiResult<bool> {
    let mut cmd = redis::cmd("EXISTS");
    cmd.arg(jti_key(views, &claims.jti));
    if !claims.sid.is_empty() {
        cmd.arg(family_key(views, &claims.sid));
    }
    let found: i64 = views.query(&cmd).await?;
    Ok(found > 0)
}

/// A sign-up as its signer knows it: the name asked for and the identity minted for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignUp {
    pub username: String,
    pub user_id: String,
}

/// How long a signer may read their sign-up's status.
pub const SIGN_UP_TTL_SECS: u64 = 24 * 3600;

fn sign_up_key(views: &Views, token: &str) -> String {
    views.keys.auth(&format!("sign-up:{}", digest(token)))
}

/// Remember a sign-up; returns the token that lets its signer, and no one else, read it.
pub async fn remember_sign_up(views: &Views, sign_up: &SignUp) -> ApiResult<String> {
    let token = secret();
    let json = serde_json::to_string(sign_up)
        .map_err(|e| ApiError::internal(format!("sign-up record: {e}")))?;
    views
        .query::<()>(
            redis::cmd("SET")
                .arg(sign_up_key(views, &token))
                .arg(json)
                .arg("EX")
                .arg(SIGN_UP_TTL_SECS),
        )
        .await?;
    Ok(token)
}

/// The sign-up a status token stands for, if any.
pub async fn sign_up_of(views: &Views, token: &str) -> ApiResult<Option<SignUp>> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    let json: Option<String> = views
        .query(redis::cmd("GET").arg(sign_up_key(views, token)))
        .await?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}
