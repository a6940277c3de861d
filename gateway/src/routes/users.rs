//! The signed-in user's profile, and user administration for MASTER.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_domain::user as user_rules;
use pickple_schemas::{topic, Role, UserCommand, UserView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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

/// The shape of a profile change (`PATCH /users/me`, and `PUT /users/{username}` without a
/// password): something to change, a nickname of 1 to 30 visible characters, an address by the
/// domain's rule, a password of 8 to 128 characters. Returns the trimmed address.
fn check_profile(
    nickname: Option<&str>,
    email: Option<&str>,
    password: Option<&str>,
) -> ApiResult<Option<String>> {
    let trimmed = email.map(|e| e.trim().to_string());
    Validator::new()
        .check(
            nickname.is_some() || email.is_some() || password.is_some(),
            "",
            "nothing to change",
        )
        .rule(
            "nickname",
            nickname.map_or(Ok(()), |n| user_rules::non_empty("nickname", n)),
        )
        .check(
            nickname.is_none_or(|n| validate::text(n, 1, 30)),
            "nickname",
            "1 to 30 characters",
        )
        .rule(
            "email",
            trimmed.as_deref().map_or(Ok(()), |e| {
                user_rules::validate_email(&user_rules::normalize_email(e))
            }),
        )
        .check(
            email.is_none_or(validate::email_size),
            "email",
            "at most 254 characters",
        )
        .check(
            password.is_none_or(validate::password),
            "password",
            "8 to 128 characters",
        )
        .finish()?;
    Ok(trimmed)
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
    let email = check_profile(
        req.nickname.as_deref(),
        req.email.as_deref(),
        req.password.as_deref(),
    )?;
    let password_hash = match req.password {
        Some(p) => Some(state.passwords.hash(p).await?),
        None => None,
    };
    let command = UserCommand::UpdateProfile {
        username: user.username.clone(),
        by: None,
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
        by: None,
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

/// `?q=` of the user listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserSearchQuery {
    /// Only the accounts whose username, or e-mail address (of an ACTIVE account: the one the
    /// e-mail registry granted it), starts with this, case-insensitively; ordered by username.
    /// Blank: every user, most recently updated first.
    #[param(max_length = 254, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub q: Option<String>,
}

/// How many index entries a search reads at most (two per active account: its name, its
/// address); a prefix matching more is cut there, and its `total` says how many were read.
pub const SEARCH_SCAN: usize = super::FILTER_SCAN;

/// Every user, or those matching `q` (MASTER).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(PageQuery, UserSearchQuery),
    responses(
        (status = 200, description = "users (UserView items without the password hash): with `q`, the accounts whose username or e-mail address starts with it, by username; without, every user, most recently updated first", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 422, description = "`q` over 254 characters or holding a control character", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(search): ApiQuery<UserSearchQuery>,
) -> ApiResult<Json<Listing>> {
    user.require_master()?;
    let q = search.q.unwrap_or_default();
    Validator::new()
        .check(q.chars().count() <= 254, "q", "at most 254 characters")
        .check(
            !q.chars().any(char::is_control),
            "q",
            "no control characters",
        )
        .finish()?;
    let term = q.trim().to_lowercase();
    if term.is_empty() {
        let index = state.views.keys.users_all();
        return list_index(&state, &index, &page, public_user).await;
    }
    search_users(&state, &term, &page).await
}

/// The users whose search terms start with `term` (lower-case): one `ZRANGEBYLEX` over the
/// search index (`idx:users:search`, entries `term\0username`, scores 0), never a scan of
/// every user.
async fn search_users(state: &AppState, term: &str, page: &PageQuery) -> ApiResult<Json<Listing>> {
    state.views.ensure_servable()?;
    let (offset, limit) = page.bounds();
    let mut min = b"[".to_vec();
    min.extend_from_slice(term.as_bytes());
    // 0xFF never occurs in UTF-8: every member starting with `term` sorts below this.
    let mut max = min.clone();
    max.push(0xFF);
    let members: Vec<String> = state
        .views
        .query(
            redis::cmd("ZRANGEBYLEX")
                .arg(state.views.keys.users_search())
                .arg(min)
                .arg(max)
                .arg("LIMIT")
                .arg(0)
                .arg(SEARCH_SCAN),
        )
        .await?;
    let mut names: Vec<String> = members
        .iter()
        .map(|m| pickple_view_model::search_entry_username(m).to_string())
        .collect();
    // One account matching by name and by address is listed once.
    names.sort();
    names.dedup();
    let total = names.len();
    let ids: Vec<String> = names.into_iter().skip(offset).take(limit).collect();
    let items: Vec<UserView> = state.views.many(&ids).await?;
    Ok(Json(Listing {
        items: items.into_iter().map(public_user).collect(),
        total,
        offset,
        limit,
    }))
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
    let username = user_rules::normalize_username(&username);
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

/// A MASTER's change of another account's profile: what `PATCH /users/me` takes, but the
/// password, which only its account sets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdateProfileRequest {
    pub nickname: Option<String>,
    /// A new address: it replaces the old one only once the code mailed to it comes back
    /// (`POST /auth/confirm-email` by whoever reads that mailbox), as for the account's own
    /// change.
    pub email: Option<String>,
}

/// The account a MASTER names in the path: its normalized name, 404 without a view.
async fn administered(state: &AppState, username: &str) -> ApiResult<String> {
    super::check_id(username, "user")?;
    let username = user_rules::normalize_username(username);
    state.views.ensure_servable()?;
    if state.views.get::<UserView>(&username).await?.is_none() {
        return Err(ApiError::not_found("user"));
    }
    Ok(username)
}

/// Change a user's nickname or e-mail address (MASTER). A new address is mailed a
/// confirmation code and replaces the old one once that code comes back to
/// `POST /auth/confirm-email`, as when the user changes it: the MASTER cannot give an account
/// an address nobody there reads. The users processor decides the rest (a deleted or pending
/// account refuses, shown in the view's `rejection`).
#[utoipa::path(put, path = "/api/v1/users/{username}", tag = "users", security(("bearer" = [])),
    request_body = AdminUpdateProfileRequest,
    params(("username" = String, Path, description = "the username")),
    responses(
        (status = 202, description = "update queued", body = super::Accepted),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 422, description = "invalid fields (a `password` among them: only its account sets it)", body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    super::IdempotencyKey(key): super::IdempotencyKey,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<AdminUpdateProfileRequest>,
) -> ApiResult<Response> {
    user.require_master()?;
    let email = check_profile(req.nickname.as_deref(), req.email.as_deref(), None)?;
    let username = administered(&state, &username).await?;
    let nickname = req.nickname.map(|n| n.trim().to_string());
    // The key's fingerprint is the request, not the command: the command carries a fresh secret
    // code, so a repeat would never match it.
    let scope = "AdminUpdateProfile";
    let fp = super::fingerprint(&(&username, &nickname, &email));
    let claimed = super::claim_id(&state, scope, &user.username, key.as_deref(), &fp).await?;
    if claimed.publish {
        let command = UserCommand::UpdateProfile {
            username: username.clone(),
            by: Some(user.username.clone()),
            nickname,
            confirmation_code: email.as_ref().map(|_| crate::sessions::secret()),
            email,
            password_hash: None,
        };
        if let Err(e) = state
            .kafka
            .publish(
                topic::USER_COMMANDS,
                &username,
                &command,
                &claimed.command_id,
                &trace,
            )
            .await
        {
            super::release_key(&state, scope, &user.username, key.as_deref()).await;
            return Err(e);
        }
        super::mark_published(
            &state,
            scope,
            &user.username,
            key.as_deref(),
            &fp,
            &claimed.command_id,
        )
        .await;
    }
    Ok(accepted(
        &username,
        &claimed.command_id,
        format!("{API}/users/{username}"),
        claimed.replay,
    ))
}

/// Delete a user (MASTER), exactly as `DELETE /users/me` does: the name is never signed up
/// again, the addresses go back to the registry, and every access and refresh token of the
/// account stops working (its token version moves on). Not for the caller's own account (409:
/// use `DELETE /users/me`), and not for a MASTER account: the users processor refuses that
/// until its role is changed (shown in the view's `rejection`), so the administration never
/// loses its last MASTER to another.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users", security(("bearer" = [])),
    params(("username" = String, Path, description = "the username")),
    responses(
        (status = 202, description = "deletion queued", body = super::Accepted),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 409, description = "`own_account`: the caller's own account (use DELETE /users/me)", body = ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(username): Path<String>,
) -> ApiResult<Response> {
    user.require_master()?;
    if user_rules::normalize_username(&username) == user.username {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "own_account",
            "this is your own account: delete it with DELETE /api/v1/users/me",
        ));
    }
    let username = administered(&state, &username).await?;
    let command = UserCommand::DeleteUser {
        username: username.clone(),
        by: Some(user.username.clone()),
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
        format!("{API}/users/{username}"),
        false,
    ))
}

/// A user's notification history (MASTER), newest first, as `/notifications/mine` shows it
/// to the user.
#[utoipa::path(get, path = "/api/v1/users/{username}/notifications", tag = "users",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "the username"), PageQuery),
    responses(
        (status = 200, description = "notifications (NotificationView items)", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn notifications(
    State(state): State<AppState>,
    user: AuthUser,
    Path(username): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    user.require_master()?;
    let username = administered(&state, &username).await?;
    let index = state.views.keys.notifications_of_user(&username);
    list_index::<pickple_schemas::NotificationView>(&state, &index, &page, to_json).await
}
