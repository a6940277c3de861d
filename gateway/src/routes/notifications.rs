//! The e-mails sent to the signed-in user.

use axum::extract::State;
use axum::Json;
use pickple_schemas::NotificationView;

use super::{list_index, to_json, Listing, PageQuery, UNREADABLE_LISTING};
use crate::auth::AuthUser;
use crate::error::{ApiQuery, ApiResult, ErrorBody};
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
