//! Payments (one per order, the payment processor's `view-payments`): read by the order's buyer
//! or MASTER (anyone else gets the 404 of a payment that does not exist, as for orders); listed
//! by buyer, or by MASTER with filters; refunded by MASTER.
//!
//! A refund is not a payment command of its own: it is the cancel of a paid order, the saga's one
//! path that gives money back. It goes to the delivery processor, which refuses it once the
//! delivery has started (the order's view then carries the refusal and the payment stays
//! AUTHORIZED); otherwise the order is cancelled, restocked and refunded.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_domain::{rules, user as user_rules};
use pickple_schemas::{topic, OrderCommand, PaymentView, PaymentViewStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    list_filtered, list_index, publish_command, to_json, validate, view_answer, IdempotencyKey,
    Listing, PageQuery, ViewQuery, API, UNREADABLE_LISTING,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Why the money is given back: 1 to 500 characters; newlines and tabs are allowed, other
    /// control characters and invisible format characters (right-to-left overrides, zero-width
    /// spaces...) are not. It becomes the cancel's reason on the order and the refund's on the
    /// payment.
    pub reason: String,
}

/// `?status=&username=&offset=&limit=` of MASTER's listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// Only payments in this status (an unknown one is a 422).
    #[param(schema_with = status_schema)]
    pub status: Option<String>,
    /// Only the payments of this buyer (4 to 10 characters of a-z and 0-9, case-insensitive).
    pub username: Option<String>,
    /// Items to skip (default 0).
    pub offset: Option<usize>,
    /// Items to return (default 50, at most 200).
    pub limit: Option<usize>,
}

fn status_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(PaymentViewStatus::ALL.map(PaymentViewStatus::as_str)))
        .build()
}

/// The buyer and MASTER may read a payment.
fn may_read(user: &AuthUser, payment: &PaymentView) -> bool {
    payment.username == user.username || user.is_master()
}

/// One order's payment: status, amount, the provider's reference, and its history of attempts
/// and outcomes. `?wait=<s>` long-polls until it changes, `&status=REFUNDED` until it reaches
/// that status; when the wait ends first, the current view with `Pickple-Wait: timeout`.
#[utoipa::path(get, path = "/api/v1/payments/{order_id}", tag = "payments",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "the order id"), ViewQuery),
    responses(
        (status = 200, description = "the payment", body = crate::openapi::docs::PaymentView),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no payment for this order (or not yours)", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_payment(
    State(state): State<AppState>,
    user: AuthUser,
    Path(order_id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&order_id, "payment")?;
    let wait = q.wait_for(&state)?;
    // A payment's buyer never changes: refuse a stranger before a long wait.
    if let Some(current) = state.views.get::<PaymentView>(&order_id).await? {
        if !may_read(&user, &current) {
            return Err(ApiError::not_found("payment"));
        }
    }
    let view = read_view::<PaymentView>(&state.views, &state.notifier, &order_id, &wait, |_| true)
        .await?
        .filter(|v| may_read(&user, v))
        .ok_or_else(|| ApiError::not_found("payment"))?;
    Ok(view_answer(&view))
}

/// The signed-in user's payments, newest first.
#[utoipa::path(get, path = "/api/v1/payments/mine", tag = "payments", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "payments (items are PaymentView)", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    let index = state.views.keys.payments_of_user(&user.username);
    list_index::<PaymentView>(&state, &index, &page, to_json).await
}

/// Every payment, newest first, optionally only those in a status and/or of a buyer (MASTER).
#[utoipa::path(get, path = "/api/v1/payments", tag = "payments", security(("bearer" = [])),
    params(PaymentsQuery),
    responses(
        (status = 200, description = "payments (items are PaymentView)", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 422, description = "an unknown status or an impossible username", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<PaymentsQuery>,
) -> ApiResult<Json<Listing>> {
    user.require_master()?;
    let status = q.status.as_deref().map(str::parse::<PaymentViewStatus>);
    let username = q.username.as_deref().map(user_rules::normalize_username);
    let mut v = Validator::new();
    if let Some(Err(e)) = &status {
        v.check(
            false,
            "status",
            &format!("{e}: one of AUTHORIZED, DECLINED, REFUNDED"),
        );
    }
    if let Some(name) = &username {
        v.rule("username", user_rules::validate_username(name));
    }
    v.finish()?;
    let status = status.and_then(Result::ok);
    let page = PageQuery {
        offset: q.offset,
        limit: q.limit,
    };
    let keys = &state.views.keys;
    match (username, status) {
        // Both: the buyer's payments (few) filtered by status.
        (Some(name), Some(status)) => {
            let index = keys.payments_of_user(&name);
            list_filtered::<PaymentView>(&state, &index, &page, |p| p.status == status, to_json)
                .await
        }
        (Some(name), None) => {
            let index = keys.payments_of_user(&name);
            list_index::<PaymentView>(&state, &index, &page, to_json).await
        }
        (None, Some(status)) => {
            let index = keys.payments_in_status(status.as_str());
            list_index::<PaymentView>(&state, &index, &page, to_json).await
        }
        (None, None) => {
            list_index::<PaymentView>(&state, &keys.payments_all(), &page, to_json).await
        }
    }
}

/// Refund an order's payment (MASTER): queues the cancel of the order by MASTER with the reason,
/// the path a buyer's cancel of a paid order takes. If the delivery has not started, the order
/// ends CANCELLED and the payment REFUNDED; once it has, the cancel is refused (the order's view
/// carries the `rejection`) and the payment stays AUTHORIZED. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/payments/{order_id}/refund", tag = "payments",
    security(("bearer" = [])), request_body = RefundRequest,
    params(("order_id" = String, Path, description = "the order id")),
    responses(
        (status = 202, description = "refund (the order's cancel) queued; long-poll the payment (Location) with ?wait=&status=REFUNDED, and the order for a refusal", body = super::Accepted),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 404, description = "no payment for this order", body = ErrorBody),
        (status = 422, description = "invalid fields, or a reused Idempotency-Key", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (the payment cannot be checked)", body = ErrorBody)))]
pub async fn refund(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<RefundRequest>,
) -> ApiResult<Response> {
    user.require_master()?;
    Validator::new()
        .rule("reason", rules::non_empty("reason", &req.reason))
        .rule("reason", rules::visible_text("reason", &req.reason, true))
        .check(
            validate::multiline_text(&req.reason, 1, 500),
            "reason",
            "1 to 500 characters",
        )
        .finish()?;
    super::check_id(&order_id, "payment")?;
    state.views.ensure_servable()?;
    // Only that a payment exists is read from the view; whether it can still be refunded is
    // the saga's business (the delivery processor's answer), never decided on a view.
    state
        .views
        .get::<PaymentView>(&order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let command = OrderCommand::CancelOrder {
        order_id: order_id.clone(),
        username: user.username.clone(),
        master: true,
        reason: req.reason,
    };
    publish_command(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        topic::ORDER_COMMANDS,
        &order_id,
        format!("{API}/payments/{order_id}"),
        &command,
    )
    .await
}
