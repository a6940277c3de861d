//! Deliveries (one per order): read by the buyer, a manager of one of the order's vendors, or
//! MASTER; started, detailed and ended by such a manager or MASTER.

use axum::extract::{Path, State};
use axum::response::Response;
use pickple_domain::delivery;
use pickple_schemas::{topic, DeliveryCommand, DeliveryView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    manages_any_vendor, publish_command, validate, view_answer, IdempotencyKey, ViewQuery, API,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDeliveryRequest {
    /// 1 to 100 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub carrier: String,
    /// e.g. STANDARD, EXPRESS: 1 to 50 characters on one line, no control or invisible format
    /// characters.
    pub delivery_type: String,
    /// 1 to 100 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub tracking_number: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryDetailRequest {
    /// 1 to 200 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub location: String,
    /// 1 to 1000 characters (required by the delivery processor); newlines and tabs are
    /// allowed, other control characters and invisible format characters (right-to-left
    /// overrides, zero-width spaces...) are not.
    #[serde(default)]
    pub description: String,
}

/// One delivery (long-poll with `?wait=&status=`).
#[utoipa::path(get, path = "/api/v1/deliveries/{order_id}", tag = "deliveries",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id"), ViewQuery),
    responses(
        (status = 200, description = "the delivery", body = crate::openapi::docs::DeliveryView),
        (status = 404, description = "no such delivery (or not yours)", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_delivery(
    State(state): State<AppState>,
    user: AuthUser,
    Path(order_id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&order_id, "delivery")?;
    let wait = q.wait_for(&state)?;
    // A delivery's buyer and vendors never change: decide access on the current view, before a
    // long wait, so the vendor's managers can wait on it too (the check needs Redis reads).
    if let Some(current) = state.views.get::<DeliveryView>(&order_id).await? {
        if !may_read(&state, &user, &current).await? {
            return Err(ApiError::not_found("delivery"));
        }
    }
    let view = read_view::<DeliveryView>(&state.views, &state.notifier, &order_id, &wait, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    if !may_read(&state, &user, &view).await? {
        return Err(ApiError::not_found("delivery"));
    }
    Ok(view_answer(&view))
}

/// The buyer, MASTER and the managers of the order's vendors may read a delivery.
async fn may_read(state: &AppState, user: &AuthUser, delivery: &DeliveryView) -> ApiResult<bool> {
    Ok(user.is_master()
        || delivery.username == user.username
        || manages_any_vendor(state, user, &delivery.vendor_ids).await?)
}

/// 403 unless VENDOR_MANAGER/MASTER, 404 without a delivery, 403 unless the caller manages one
/// of the order's vendors. Only who the delivery belongs to is read from the view (it never
/// changes); whether the command fits its status is the delivery processor's business, which
/// refuses an out-of-order one visibly (`rejection` on the delivery's view).
async fn managed_delivery(state: &AppState, user: &AuthUser, order_id: &str) -> ApiResult<()> {
    user.require_manager()?;
    super::check_id(order_id, "delivery")?;
    state.views.ensure_servable()?;
    let delivery = state
        .views
        .get::<DeliveryView>(order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    if !manages_any_vendor(state, user, &delivery.vendor_ids).await? {
        return Err(ApiError::forbidden(
            "you do not manage a vendor of this order",
        ));
    }
    // One delivery carries every vendor's lines: a manager of one vendor may not start or end
    // it for the others. Until each vendor ships its own lines, such a delivery is driven by
    // a manager of all its vendors, or MASTER.
    for vendor in &delivery.vendor_ids {
        if !manages_any_vendor(state, user, std::slice::from_ref(vendor)).await? {
            return Err(ApiError::forbidden(
                "this delivery carries lines of a vendor you do not manage",
            ));
        }
    }
    Ok(())
}

/// Publish `command` at most once per `Idempotency-Key` of `user` ([`publish_command`]).
async fn publish(
    state: &AppState,
    trace: &TraceParent,
    user: &str,
    key: Option<&str>,
    order_id: &str,
    command: DeliveryCommand,
) -> ApiResult<Response> {
    let location = format!("{API}/deliveries/{order_id}");
    publish_command(
        state,
        trace,
        user,
        key,
        topic::DELIVERY_COMMANDS,
        order_id,
        location,
        &command,
    )
    .await
}

/// Start a delivery (PENDING -> IN_TRANSIT). Queued whatever the delivery's status: the
/// delivery processor refuses a start of a delivery that is not PENDING (a repeat of the same
/// start is ignored), visibly (`rejection` on the delivery's view).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/start", tag = "deliveries",
    security(("bearer" = [])), request_body = StartDeliveryRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "start queued; long-poll the delivery with ?wait=&status=IN_TRANSIT (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendors", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<StartDeliveryRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule("carrier", delivery::check_line("carrier", &req.carrier))
        .check(
            validate::text(&req.carrier, 1, 100),
            "carrier",
            "1 to 100 characters",
        )
        .rule(
            "delivery_type",
            delivery::check_line("delivery type", &req.delivery_type),
        )
        .check(
            validate::text(&req.delivery_type, 1, 50),
            "delivery_type",
            "1 to 50 characters",
        )
        .rule(
            "tracking_number",
            delivery::check_line("tracking number", &req.tracking_number),
        )
        .check(
            validate::text(&req.tracking_number, 1, 100),
            "tracking_number",
            "1 to 100 characters",
        )
        .finish()?;
    managed_delivery(&state, &user, &order_id).await?;
    let command = DeliveryCommand::StartDelivery {
        order_id: order_id.clone(),
        carrier: req.carrier.trim().to_string(),
        delivery_type: req.delivery_type.trim().to_string(),
        tracking_number: req.tracking_number.trim().to_string(),
        by: user.username.clone(),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &order_id,
        command,
    )
    .await
}

/// Add a tracking entry to a delivery in transit. Queued whatever the delivery's status: the
/// delivery processor refuses it unless IN_TRANSIT, visibly (`rejection` on the view).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/details", tag = "deliveries",
    security(("bearer" = [])), request_body = DeliveryDetailRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "detail queued", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendors", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn add_detail(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<DeliveryDetailRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule("location", delivery::check_line("location", &req.location))
        .check(
            validate::text(&req.location, 1, 200),
            "location",
            "1 to 200 characters",
        )
        .rule("description", delivery::check_description(&req.description))
        .check(
            validate::multiline_text(&req.description, 1, 1000),
            "description",
            "1 to 1000 characters",
        )
        .finish()?;
    managed_delivery(&state, &user, &order_id).await?;
    let command = DeliveryCommand::AddDeliveryDetail {
        order_id: order_id.clone(),
        location: req.location.trim().to_string(),
        description: req.description,
        by: user.username.clone(),
        request_id: super::request_id("AddDeliveryDetail", &user.username, key.as_deref()),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &order_id,
        command,
    )
    .await
}

/// End a delivery (IN_TRANSIT -> DELIVERED; the order completes). Queued whatever the
/// delivery's status, so a start followed at once by an end is two accepted commands, processed
/// in order; the delivery processor refuses an end of a delivery that is not IN_TRANSIT,
/// visibly (`rejection` on the view; ending a delivered one changes nothing).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/end", tag = "deliveries",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "end queued; long-poll the delivery with ?wait=&status=DELIVERED (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendors", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn end(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
) -> ApiResult<Response> {
    managed_delivery(&state, &user, &order_id).await?;
    let command = DeliveryCommand::EndDelivery {
        order_id: order_id.clone(),
        by: user.username.clone(),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &order_id,
        command,
    )
    .await
}
