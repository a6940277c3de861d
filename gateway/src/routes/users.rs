//! The signed-in user's profile, and user administration for MASTER.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_domain::user as user_rules;
use pickple_schemas::{topic, Role, UserCommand, UserView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    accepted, list_index, new_command_id, to_json, validate, view_response, Listing, PageQuery,
    ViewQuery, API, UNREADABLE_LISTING,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

/// A user view as served: without the password hash.
/// A user view as served: without the password hash, and without the identity and token
/// version the gateway checks tokens against (internal to authentication).
pub fn public_user(user: UserView) -> serde_json::Value {
    let mut json = to_json(user);
    if let Some(obj) = json.as_object_mut() {
        for internal in ["password_hash", "user_id", "token_version"] {
            obj.remove(internal);
        }
    }
    json
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    pub nickname: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    #[schema(value_type = String, example = "VENDOR_MANAGER")]
    pub role: Role,
}

/// The signed-in user (long-poll with `?wait=`).
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    params(ViewQuery),
    responses(
        (status = 200, description = "the user view without the password hash", body = crate::openapi::docs::UserView),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no view yet", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    let wait = q.wait_for(&state)?;
    let view = read_view::<UserView>(&state.views, &state.notifier, &user.username, &wait, |_| {
        true
    })
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    let version = view.version;
    Ok(view_response(public_user(view), version))
}

/// Change the signed-in user's nickname, e-mail or password.
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    request_body = UpdateProfileRequest,
    responses(
        (status = 202, description = "update queued", body = super::Accepted),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn update_me(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    ApiJson(req): ApiJson<UpdateProfileRequest>,
) -> ApiResult<Response> {
    let email = req.email.as_ref().map(|e| e.trim().to_string());
    Validator::new()
        .check(
            req.nickname.is_some() || email.is_some() || req.password.is_some(),
            "",
            "nothing to change",
        )
        .rule(
            "nickname",
            req.nickname
                .as_deref()
                .map_or(Ok(()), |n| user_rules::non_empty("nickname", n)),
        )
        .check(
            req.nickname
                .as_deref()
                .is_none_or(|n| validate::text(n, 1, 30)),
            "nickname",
            "1 to 30 characters",
        )
        .rule(
            "email",
            email.as_deref().map_or(Ok(()), |e| {
                user_rules::validate_email(&user_rules::normalize_email(e))
            }),
        )
        .check(
            req.email.as_deref().is_none_or(validate::email_size),
            "email",
            "at most 254 characters",
        )
        .check(
            req.password.as_deref().is_none_or(validate::password),
            "password",
            "8 to 128 characters",
        )
        .finish()?;
    let password_hash = match req.password {
        Some(p) => Some(state.passwords.hash(p).await?),
        None => None,
    };
    let command = UserCommand::UpdateProfile {
        username: user.username.clone(),
        nickname: req.nickname.map(|n| n.trim().to_string()),
        confirmation_code: email.as_ref().map(|_| crate::sessions::secret()),
        email,
        password_hash,
    };
    let command_id = new_command_id();
    state
        .kafka
        .publish(
            topic::USER_COMMANDS,
            &user.username,
            &command,
            &command_id,
            &trace,
        )
        .await?;
    Ok(accepted(
        &user.username,
        &command_id,
        format!("{API}/users/me"),
        false,
    ))
}

/// Delete the signed-in user.
#[utoipa::path(delete, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 202, description = "deletion queued", body = super::Accepted),
        (status = 401, description = "not signed in", body = ErrorBody)))]
pub async fn delete_me(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
) -> ApiResult<Response> {
    let command = UserCommand::DeleteUser {
        username: user.username.clone(),
    };
    let command_id = new_command_id();
    state
        .kafka
        .publish(
            topic::USER_COMMANDS,
            &user.username,
            &command,
            &command_id,
            &trace,
        )
        .await?;
    Ok(accepted(
        &user.username,
        &command_id,
        format!("{API}/users/me"),
        false,
    ))
}

/// Every user (MASTER).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "users, most recently updated first", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    user.require_master()?;
    let index = state.views.keys.users_all();
    list_index(&state, &index, &page, public_user).await
}

/// One user (MASTER).
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path, description = "the username"), ViewQuery),
    responses(
        (status = 200, description = "the user view without the password hash", body = crate::openapi::docs::UserView),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    user: AuthUser,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    user.require_master()?;
    super::check_id(&username, "user")?;
    let wait = q.wait_for(&state)?;
    let view = read_view::<UserView>(&state.views, &state.notifier, &username, &wait, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let version = view.version;
    Ok(view_response(public_user(view), version))
}

/// Change a user's role (MASTER).
#[utoipa::path(put, path = "/api/v1/users/{username}/role", tag = "users",
    security(("bearer" = [])), request_body = ChangeRoleRequest,
    params(("username" = String, Path, description = "the username")),
    responses(
        (status = 202, description = "role change queued", body = super::Accepted),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody)))]
pub async fn change_role(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    super::IdempotencyKey(key): super::IdempotencyKey,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<ChangeRoleRequest>,
) -> ApiResult<Response> {
    user.require_master()?;
    super::check_id(&username, "user")?;
    state.views.ensure_servable()?;
    if state.views.get::<UserView>(&username).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    let command = UserCommand::ChangeRole {
        username: username.clone(),
        role: req.role,
        by: user.username.clone(),
    };
    super::publish_command(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        topic::USER_COMMANDS,
        &username,
        format!("{API}/users/{username}"),
        &command,
    )
    .await
}
