//! Sign-up, sign-in, refresh, sign-out.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_domain::user as user_rules;
use pickple_schemas::{topic, Role, UserCommand, UserStatus, UserView};
use pickple_view_model::View;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    accepted, new_command_id, to_json, validate, view_response, IdempotencyKey, ViewQuery, API,
};
use crate::auth::{AuthUser, Subject};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::limits::{Client, Limit};
use crate::longpoll::read_view;
use crate::sessions::{self, Used};
use crate::trace::TraceParent;
use crate::views::now_millis;
use crate::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpRequest {
    /// 4 to 10 characters, a-z and 0-9 (upper case is folded to lower case).
    pub username: String,
    /// 1 to 30 characters.
    pub nickname: String,
    pub email: String,
    /// 8 to 128 characters; only its argon2 hash leaves the gateway.
    pub password: String,
    /// USER (default) or VENDOR_MANAGER.
    #[schema(value_type = Option<String>, example = "USER")]
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Short-lived (`PICKPLE_JWT_TTL_SECS`, 15 minutes by default).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
    /// Works once, at `/auth/refresh`, for a new access token and the next refresh token.
    pub refresh_token: String,
    /// Expiry of the refresh token, seconds since the epoch.
    pub refresh_expires_at: i64,
    pub username: String,
    #[schema(value_type = String, example = "USER")]
    pub role: Role,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOutRequest {
    /// Also void every other sign-in of the account (every token issued so far).
    #[serde(default)]
    pub everywhere: bool,
}

/// Tokens for `user`'s sign-in `family`: a new access token and the family's next refresh
/// token.
async fn tokens(state: &AppState, user: &UserView, family: &str) -> ApiResult<TokenResponse> {
    state.jwt.ready(&state.views).await?;
    let (access_token, expires_at) = state.jwt.issue(&Subject { user, sid: family })?;
    let (refresh_token, refresh_expires_at) =
        sessions::issue(&state.views, user, family, state.config.refresh_ttl_secs).await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_at,
        refresh_token,
        refresh_expires_at,
        username: user.username.clone(),
        role: user.role,
    })
}

/// Where a sign-up stands (no private fields).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignUpStatus {
    pub username: String,
    /// PENDING (until the code mailed to the address comes back, and the address is found
    /// free), ACTIVE, REJECTED or DELETED.
    pub status: String,
    pub rejection: Option<String>,
    /// While PENDING and unconfirmed: until when the mailed code works (ms since the epoch).
    pub confirm_by: Option<i64>,
    pub version: u64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmEmailRequest {
    pub username: String,
    /// The code from the confirmation mail (hexadecimal).
    pub code: String,
}

/// Confirm an address with the code mailed to it, for a sign-up or a change of address:
/// publishes `ConfirmEmail` to `user-commands`. The users processor checks the code; a wrong
/// or expired one shows as the user's `rejection` (in the sign-up status, or `/users/me`).
#[utoipa::path(post, path = "/api/v1/auth/confirm-email", tag = "auth",
    request_body = ConfirmEmailRequest,
    responses(
        (status = 202, description = "confirmation queued", body = super::Accepted),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 429, description = "too many confirmations from this address (Retry-After)", body = ErrorBody),
        (status = 503, description = "Kafka unreachable, or the views sink has never reported", body = ErrorBody)))]
pub async fn confirm_email(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    client: Client,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(req): ApiJson<ConfirmEmailRequest>,
) -> ApiResult<Response> {
    state
        .limits
        .check(&state.views, Limit::ConfirmPerClient, &client.0)
        .await?;
    let username = user_rules::normalize_username(&req.username);
    let code = req.code;
    Validator::new()
        .rule("username", user_rules::validate_username(&username))
        .check(
            (1..=128).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_hexdigit()),
            "code",
            "1 to 128 hexadecimal digits",
        )
        .finish()?;
    let user = state
        .views
        .get::<UserView>(&username)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    // The outcome shows where the account is watched: the sign-up status (with the token the
    // sign-up answered; a code alone is no token, since it is checked only by the processor),
    // or the account itself.
    let location = if user.status == UserStatus::Pending {
        format!("{API}/auth/sign-up/{username}")
    } else {
        format!("{API}/users/me")
    };
    // The key is scoped to the account the code is for (the caller is not signed in).
    super::publish_command(
        &state,
        &trace,
        &username,
        key.as_deref(),
        topic::USER_COMMANDS,
        &username,
        location,
        &UserCommand::ConfirmEmail {
            username: username.clone(),
            code,
        },
    )
    .await
}

/// Create an account: publishes `SignUp` to `user-commands` (key: username).
#[utoipa::path(post, path = "/api/v1/auth/sign-up", tag = "auth", request_body = SignUpRequest,
    responses(
        (status = 202, description = "sign-up queued", body = super::Accepted),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 409, description = "username taken", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 429, description = "too many sign-ups from this address (Retry-After)", body = ErrorBody),
        (status = 503, description = "every password hasher busy (Retry-After), or Kafka unreachable", body = ErrorBody)))]
pub async fn sign_up(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    client: Client,
    ApiJson(req): ApiJson<SignUpRequest>,
) -> ApiResult<Response> {
    state
        .limits
        .check(&state.views, Limit::SignUpPerClient, &client.0)
        .await?;
    let username = user_rules::normalize_username(&req.username);
    let email = req.email.trim().to_string();
    let role = req.role.unwrap_or(Role::User);
    Validator::new()
        .rule("username", user_rules::validate_username(&username))
        .rule("nickname", user_rules::non_empty("nickname", &req.nickname))
        .check(
            validate::text(&req.nickname, 1, 30),
            "nickname",
            "1 to 30 characters",
        )
        .rule(
            "email",
            user_rules::validate_email(&user_rules::normalize_email(&email)),
        )
        .check(
            validate::email_size(&req.email),
            "email",
            "at most 254 characters",
        )
        .check(
            validate::password(&req.password),
            "password",
            "8 to 128 characters",
        )
        .rule("role", user_rules::check_sign_up_role(role))
        .finish()?;
    // Fast path only: the users processor is the single writer of a username and rejects a
    // duplicate even when two sign-ups race past this check. (Usernames are public handles;
    // e-mail addresses are not, so nothing here looks at the address: see `confirm_email`.)
    if let Some(existing) = state.views.get::<UserView>(&username).await? {
        if user_rules::holds_name(existing.status, existing.confirm_by, now_millis()) {
            return Err(ApiError::conflict("this username is taken"));
        }
    }
    let password_hash = state.passwords.hash(req.password).await?;
    let user_id = uuid::Uuid::new_v4().to_string();
    let status_token = sessions::remember_sign_up(
        &state.views,
        &sessions::SignUp {
            username: username.clone(),
            user_id: user_id.clone(),
        },
    )
    .await?;
    let command = UserCommand::SignUp {
        username: username.clone(),
        user_id,
        nickname: req.nickname.trim().to_string(),
        email,
        password_hash,
        role,
        confirmation_code: sessions::secret(),
    };
    let command_id = new_command_id();
    state
        .kafka
        .publish(
            topic::USER_COMMANDS,
            &username,
            &command,
            &command_id,
            &trace,
        )
        .await?;
    // Only the signer learns where their sign-up stands: the location carries its token.
    Ok(accepted(
        &username,
        &command_id,
        format!("{API}/auth/sign-up/{username}?token={status_token}"),
        false,
    ))
}

/// `?token=` of a sign-up status read: the token its sign-up answered in `location`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignUpToken {
    /// The token from the sign-up's `location`; without the right one, the answer is 404.
    pub token: Option<String>,
}

/// Where a sign-up stands, for its signer only (`?token=` from the sign-up's `location`);
/// `?wait=&status=ACTIVE` long-polls. Anyone else gets 404, whether the name exists or not.
#[utoipa::path(get, path = "/api/v1/auth/sign-up/{username}", tag = "auth",
    params(("username" = String, Path, description = "the username"), SignUpToken, ViewQuery),
    responses(
        (status = 200, description = "sign-up status", body = SignUpStatus),
        (status = 404, description = "no such sign-up, or not the signer's token", body = ErrorBody),
        (status = 429, description = "too many status reads from this address (Retry-After)", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn sign_up_status(
    State(state): State<AppState>,
    client: Client,
    Path(username): Path<String>,
    ApiQuery(signer): ApiQuery<SignUpToken>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    state
        .limits
        .check(&state.views, Limit::SignUpStatusPerClient, &client.0)
        .await?;
    super::check_id(&username, "user")?;
    let username = user_rules::normalize_username(&username);
    let mine = sessions::sign_up_of(&state.views, signer.token.as_deref().unwrap_or_default())
        .await?
        .filter(|s| s.username == username)
        .ok_or_else(|| ApiError::not_found("sign-up"))?;
    let wait = q.wait_for(&state)?;
    let user = read_view::<UserView>(&state.views, &state.notifier, &username, &wait, |u| {
        u.user_id == mine.user_id
    })
    .await?;
    let body = match user {
        Some(user) if user.user_id == mine.user_id => SignUpStatus {
            status: user.status().unwrap_or_default(),
            confirm_by: user.confirm_by,
            username: user.username,
            rejection: user.rejection,
            version: user.version,
        },
        // Another account holds the name: this sign-up was (or will be) refused for it.
        Some(other) if user_rules::holds_name(other.status, other.confirm_by, now_millis()) => {
            SignUpStatus {
                status: "REJECTED".into(),
                username,
                rejection: Some(user_rules::USERNAME_TAKEN.into()),
                confirm_by: None,
                version: 0,
            }
        }
        // Not processed yet.
        _ => SignUpStatus {
            status: "PENDING".into(),
            username,
            rejection: None,
            confirm_by: None,
            version: 0,
        },
    };
    let version = body.version;
    Ok(view_response(to_json(body), version))
}

/// Exchange a username and password for an access token.
#[utoipa::path(post, path = "/api/v1/auth/sign-in", tag = "auth", request_body = SignInRequest,
    responses(
        (status = 200, description = "signed in", body = TokenResponse),
        (status = 401, description = "wrong credentials", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 429, description = "too many attempts from this address or on this account (Retry-After)", body = ErrorBody),
        (status = 503, description = "the views sink has never reported, or every password hasher is busy (Retry-After)", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<AppState>,
    client: Client,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let username = user_rules::normalize_username(&req.username);
    let limits = &state.limits;
    limits
        .check(&state.views, Limit::SignInPerClient, &client.0)
        .await?;
    if user_rules::validate_username(&username).is_ok() {
        limits
            .check(&state.views, Limit::SignInPerAccount, &username)
            .await?;
    }
    if user_rules::validate_username(&username).is_err() || req.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    // Identity: read the user's view even while the sink lags or is silent (the password and
    // role of an account change rarely); only a sink that never reported makes it a 503.
    state.views.ensure_servable()?;
    let user = state.views.get::<UserView>(&username).await?;
    let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
        // Same work as a real check, so timing does not tell which usernames exist.
        let _ = state
            .passwords
            .verify(req.password, DUMMY_HASH.into())
            .await?;
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    if !state
        .passwords
        .verify(req.password, user.password_hash.clone())
        .await?
    {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let family = uuid::Uuid::new_v4().to_string();
    Ok(Json(tokens(&state, &user, &family).await?))
}

const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$R8BTmxJEEPp0P3H8bJ7SgqEL4L7gCwqXmf3F5fS1xYU";

/// Swap a refresh token for a new access token and the next refresh token. A refresh token
/// works once: a second use revokes its whole sign-in.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "new tokens", body = TokenResponse),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "unknown, expired, reused or revoked refresh token; account gone or changed", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "Redis is unreachable", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let ttl = state.config.refresh_ttl_secs;
    if req.refresh_token.is_empty() || req.refresh_token.len() > 256 {
        return Err(ApiError::unauthorized("unknown or expired refresh token"));
    }
    let record = match sessions::spend(&state.views, &req.refresh_token, ttl).await? {
        Used::Fresh(record) => record,
        Used::Reused => {
            return Err(ApiError::unauthorized(
                "this refresh token was already used; its sign-in is revoked, sign in again",
            ))
        }
        Used::Unknown => return Err(ApiError::unauthorized("unknown or expired refresh token")),
    };
    let user = state.views.get::<UserView>(&record.username).await?;
    let current = user.filter(|u| {
        u.status == UserStatus::Active && u.user_id == record.uid && u.token_version == record.ver
    });
    let Some(user) = current else {
        sessions::revoke_family(&state.views, &record.family, ttl).await?;
        return Err(ApiError::unauthorized(
            "the account changed since this sign-in; sign in again",
        ));
    };
    Ok(Json(tokens(&state, &user, &record.family).await?))
}

/// Sign out: this sign-in's access and refresh tokens stop working; with `everywhere`, every
/// token of the account does (once the users processor has recorded it, milliseconds later).
#[utoipa::path(post, path = "/api/v1/auth/sign-out", tag = "auth", security(("bearer" = [])),
    request_body(content = Option<SignOutRequest>, description = "optional"),
    responses(
        (status = 204, description = "signed out"),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "no, expired or invalid token", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "Redis or Kafka is unreachable", body = ErrorBody)))]
pub async fn sign_out(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    body: axum::body::Bytes,
) -> ApiResult<axum::http::StatusCode> {
    // No body, or `null` (the document's optional body), is `{}`.
    let req: SignOutRequest = if body.is_empty() {
        SignOutRequest::default()
    } else {
        crate::error::parse_json::<Option<SignOutRequest>>(&body)?.unwrap_or_default()
    };
    let ttl = state.config.refresh_ttl_secs;
    sessions::revoke_access(&state.views, &user.claims).await?;
    if !user.claims.sid.is_empty() {
        sessions::revoke_family(&state.views, &user.claims.sid, ttl).await?;
    }
    if req.everywhere {
        let command = UserCommand::RevokeTokens {
            username: user.username.clone(),
        };
        state
            .kafka
            .publish(
                topic::USER_COMMANDS,
                &user.username,
                &command,
                &new_command_id(),
                &trace,
            )
            .await?;
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}
