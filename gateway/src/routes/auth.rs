//! Sign-up, sign-in, refresh.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_domain::user as user_rules;
use pickple_schemas::{topic, Role, UserCommand, UserStatus, UserView};
use pickple_view_model::View;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{accepted, new_command_id, to_json, validate, view_response, ViewQuery, API};
use crate::auth::{hash_password, verify_password, AuthUser};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
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
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Expiry, seconds since the epoch.
    pub expires_at: i64,
    pub username: String,
    #[schema(value_type = String, example = "USER")]
    pub role: Role,
}

/// Where a sign-up stands (no private fields).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignUpStatus {
    pub username: String,
    /// PENDING, ACTIVE, REJECTED or DELETED.
    pub status: String,
    pub rejection: Option<String>,
    pub version: u64,
}

/// Create an account: publishes `SignUp` to `user-commands` (key: username).
#[utoipa::path(post, path = "/api/v1/auth/sign-up", tag = "auth", request_body = SignUpRequest,
    responses(
        (status = 202, description = "sign-up queued", body = super::Accepted),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 409, description = "username taken", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn sign_up(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    ApiJson(req): ApiJson<SignUpRequest>,
) -> ApiResult<Response> {
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
            validate::email_size(&email),
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
    // duplicate even when two sign-ups race past this check.
    if let Some(existing) = state.views.get::<UserView>(&username).await? {
        if matches!(existing.status, UserStatus::Pending | UserStatus::Active) {
            return Err(ApiError::conflict("this username is taken"));
        }
    }
    let password_hash = hash_password(req.password).await?;
    let command = UserCommand::SignUp {
        username: username.clone(),
        nickname: req.nickname.trim().to_string(),
        email,
        password_hash,
        role,
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
    Ok(accepted(
        &username,
        &command_id,
        format!("{API}/auth/sign-up/{username}"),
        false,
    ))
}

/// Where a sign-up stands; `?wait=&status=ACTIVE` long-polls.
#[utoipa::path(get, path = "/api/v1/auth/sign-up/{username}", tag = "auth",
    params(("username" = String, Path, description = "the username"), ViewQuery),
    responses(
        (status = 200, description = "sign-up status", body = SignUpStatus),
        (status = 404, description = "no such sign-up", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody),
        (status = 504, description = "wait timed out", body = ErrorBody)))]
pub async fn sign_up_status(
    State(state): State<AppState>,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&username, "user")?;
    let username = user_rules::normalize_username(&username);
    let wait = q.wait_for(&state)?;
    let user = read_view::<UserView>(&state.views, &state.notifier, &username, &wait, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let version = user.version;
    let body = SignUpStatus {
        status: user.status().unwrap_or_default(),
        username: user.username,
        rejection: user.rejection,
        version: user.version,
    };
    Ok(view_response(to_json(body), version))
}

/// Exchange a username and password for an access token.
#[utoipa::path(post, path = "/api/v1/auth/sign-in", tag = "auth", request_body = SignInRequest,
    responses(
        (status = 200, description = "signed in", body = TokenResponse),
        (status = 401, description = "wrong credentials", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SignInRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let username = user_rules::normalize_username(&req.username);
    if user_rules::validate_username(&username).is_err() || req.password.len() > 1024 {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    // Identity: read the user's view even while the sink lags or is silent (the password and
    // role of an account change rarely); only a sink that never reported makes it a 503.
    state.views.ensure_servable()?;
    let user = state.views.get::<UserView>(&username).await?;
    let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
        // Same work as a real check, so timing does not tell which usernames exist.
        let _ = verify_password(req.password, DUMMY_HASH.into()).await;
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    if !verify_password(req.password, user.password_hash.clone()).await {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    let (access_token, expires_at) = state.jwt.issue(&user.username, user.role)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_at,
        username: user.username,
        role: user.role,
    }))
}

const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$R8BTmxJEEPp0P3H8bJ7SgqEL4L7gCwqXmf3F5fS1xYU";

/// A fresh token for the bearer of a valid one, with the role the user has now.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "new token", body = TokenResponse),
        (status = 401, description = "no, expired or invalid token; user gone", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn refresh(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<TokenResponse>> {
    state.views.ensure_servable()?;
    let view = state
        .views
        .get::<UserView>(&user.username)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or_else(|| ApiError::unauthorized("the user no longer exists"))?;
    let (access_token, expires_at) = state.jwt.issue(&view.username, view.role)?;
    Ok(Json(TokenResponse {
        access_token,
        token_type: "Bearer".into(),
        expires_at,
        username: view.username,
        role: view.role,
    }))
}
