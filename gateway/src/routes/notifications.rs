//! The e-mails sent: the signed-in user's history, one entry, and its removal by MASTER.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_schemas::{topic, NotificationCommand, NotificationView};

use super::{
    accepted, list_index, new_command_id, to_json, view_answer, Listing, PageQuery, ViewQuery, API,
    UNREADABLE_LISTING,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

/// The signed-in user's notification history, newest first.
#[utoipa::path(get, path = "/api/v1/notifications/mine", tag = "notifications",
    security(("bearer" = [])), params(PageQuery),
    responses(
        (status = 200, description = "notifications (NotificationView items)", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    let index = state.views.keys.notifications_of_user(&user.username);
    list_index::<NotificationView>(&state, &index, &page, to_json).await
}

/// Whether `user` may see the entry: the addressee, or MASTER; a removed entry is gone for
/// everyone (404, like one that does not exist or is someone else's).
fn visible_to(user: &AuthUser, n: &NotificationView) -> bool {
    !n.deleted && (user.is_master() || n.username == user.username)
}

/// An entry of the history as `user` may see it.
async fn entry(state: &AppState, user: &AuthUser, id: &str) -> ApiResult<NotificationView> {
    super::check_id(id, "notification")?;
    state.views.ensure_servable()?;
    state
        .views
        .get::<NotificationView>(id)
        .await?
        .filter(|n| visible_to(user, n))
        .ok_or_else(|| ApiError::not_found("notification"))
}

/// One sent e-mail: the addressee's own, or any for MASTER (long-poll with `?wait=`; a wait
/// that sees the entry removed answers 404 at once).
#[utoipa::path(get, path = "/api/v1/notifications/{notification_id}", tag = "notifications",
    security(("bearer" = [])),
    params(("notification_id" = String, Path, description = "the mail's Message-ID without angle brackets, e.g. `ORDER_ID.order-confirmed@pickple.local`"), ViewQuery),
    responses(
        (status = 200, description = "the notification", body = crate::openapi::docs::NotificationView),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such notification, removed from the history, or another user's", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_notification(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&id, "notification")?;
    let wait = q.wait_for(&state)?;
    let visible = |n: &NotificationView| visible_to(&user, n);
    let view = read_view::<NotificationView>(&state.views, &state.notifier, &id, &wait, visible)
        .await?
        .filter(visible)
        .ok_or_else(|| ApiError::not_found("notification"))?;
    Ok(view_answer(&view))
}

/// Remove a sent e-mail from its addressee's history (MASTER); the mail itself stays sent.
/// The notification processor that sent it republishes its view marked deleted (the command
/// goes on `notification-commands` keyed by the mail's order id, the key of the event that sent
/// it), after which it is in no listing and reads as 404; a redelivered event never brings it
/// back.
#[utoipa::path(delete, path = "/api/v1/notifications/{notification_id}", tag = "notifications",
    security(("bearer" = [])),
    params(("notification_id" = String, Path, description = "the mail's Message-ID without angle brackets")),
    responses(
        (status = 202, description = "removal queued", body = super::Accepted),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no such notification, or removed already", body = ErrorBody)))]
pub async fn delete_notification(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    user.require_master()?;
    let view = entry(&state, &user, &id).await?;
    let command = NotificationCommand::DeleteNotification {
        message_id: view.message_id.clone(),
        order_id: view.order_id.clone(),
        by: user.username.clone(),
    };
    let command_id = new_command_id();
    state
        .kafka
        .publish(
            topic::NOTIFICATION_COMMANDS,
            &view.order_id,
            &command,
            &command_id,
            &trace,
        )
        .await?;
    Ok(accepted(
        &view.message_id,
        &command_id,
        format!("{API}/notifications/{}", view.message_id),
        false,
    ))
}
