//! Deliveries (one per order): read by the buyer, a manager of one of the order's vendors, or
//! MASTER; started, detailed and ended by such a manager or MASTER.

use axum::extract::{Path, State};
use axum::response::Response;
use pickple_schemas::DeliveryCommand;
use pickple_views::Kind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    accepted, manages_any_vendor, new_command_id, validate, view_response, ViewQuery, API,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::views::Stored;
use crate::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDeliveryRequest {
    pub carrier: String,
    /// e.g. STANDARD, EXPRESS.
    pub delivery_type: String,
    pub tracking_number: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliveryDetailRequest {
    pub location: String,
    #[serde(default)]
    pub description: String,
}

fn owner_of(view: &Stored) -> &str {
    view.json
        .get("username")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
}

/// One delivery (long-poll with `?wait=&status=`).
#[utoipa::path(get, path = "/api/v1/deliveries/{order_id}", tag = "deliveries",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id"), ViewQuery),
    responses(
        (status = 200, description = "the delivery", body = crate::openapi::docs::DeliveryView),
        (status = 404, description = "no such delivery (or not yours)", body = ErrorBody),
        (status = 504, description = "wait timed out", body = ErrorBody)))]
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
    if let Some(current) = state.views.get(Kind::Delivery, &order_id).await? {
        if !may_read(&state, &user, &current).await? {
            return Err(ApiError::not_found("delivery"));
        }
    }
    let view = read_view(
        &state.views,
        &state.notifier,
        Kind::Delivery,
        &order_id,
        &wait,
        |_| true,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("delivery"))?;
    if !may_read(&state, &user, &view).await? {
        return Err(ApiError::not_found("delivery"));
    }
    Ok(view_response(view.json, view.version))
}

/// The buyer, MASTER and the managers of the order's vendors may read a delivery.
async fn may_read(state: &AppState, user: &AuthUser, view: &Stored) -> ApiResult<bool> {
    Ok(user.is_master()
        || owner_of(view) == user.username
        || manages_any_vendor(state, user, view).await?)
}

/// 403 unless VENDOR_MANAGER/MASTER, 404 without a delivery, 403 unless the caller manages one
/// of the order's vendors; 409 unless the delivery is in one of `statuses`.
async fn managed_delivery(
    state: &AppState,
    user: &AuthUser,
    order_id: &str,
    statuses: &[&str],
) -> ApiResult<Stored> {
    user.require_manager()?;
    super::check_id(order_id, "delivery")?;
    state.views.ensure_ready()?;
    let view = state
        .views
        .get(Kind::Delivery, order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    if !manages_any_vendor(state, user, &view).await? {
        return Err(ApiError::forbidden(
            "you do not manage a vendor of this order",
        ));
    }
    let status = view.status().unwrap_or("");
    if !statuses.contains(&status) {
        return Err(ApiError::conflict(format!("the delivery is {status}")));
    }
    Ok(view)
}

async fn publish(
    state: &AppState,
    trace: &TraceParent,
    order_id: &str,
    command: DeliveryCommand,
) -> ApiResult<Response> {
    let command_id = new_command_id();
    state
        .kafka
        .publish("delivery-commands", order_id, &command, &command_id, trace)
        .await?;
    Ok(accepted(
        order_id,
        &command_id,
        format!("{API}/deliveries/{order_id}"),
        false,
    ))
}

/// Start a delivery (PENDING -> IN_TRANSIT).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/start", tag = "deliveries",
    security(("bearer" = [])), request_body = StartDeliveryRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "start queued", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendors", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 409, description = "not PENDING", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<StartDeliveryRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .check(
            validate::text(&req.carrier, 1, 100),
            "carrier",
            "1 to 100 characters",
        )
        .check(
            validate::text(&req.delivery_type, 1, 50),
            "delivery_type",
            "1 to 50 characters",
        )
        .check(
            validate::text(&req.tracking_number, 1, 100),
            "tracking_number",
            "1 to 100 characters",
        )
        .finish()?;
    managed_delivery(&state, &user, &order_id, &["PENDING"]).await?;
    let command = DeliveryCommand::StartDelivery {
        order_id: order_id.clone(),
        carrier: req.carrier.trim().to_string(),
        delivery_type: req.delivery_type.trim().to_string(),
        tracking_number: req.tracking_number.trim().to_string(),
        by: user.username.clone(),
    };
    publish(&state, &trace, &order_id, command).await
}

/// Add a tracking entry to a delivery in transit.
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/details", tag = "deliveries",
    security(("bearer" = [])), request_body = DeliveryDetailRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "detail queued", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendors", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 409, description = "not IN_TRANSIT", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn add_detail(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<DeliveryDetailRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .check(
            validate::text(&req.location, 1, 200),
            "location",
            "1 to 200 characters",
        )
        .check(
            validate::text(&req.description, 0, 1000),
            "description",
            "up to 1000 characters",
        )
        .finish()?;
    managed_delivery(&state, &user, &order_id, &["IN_TRANSIT"]).await?;
    let command = DeliveryCommand::AddDeliveryDetail {
        order_id: order_id.clone(),
        location: req.location.trim().to_string(),
        description: req.description,
        by: user.username.clone(),
    };
    publish(&state, &trace, &order_id, command).await
}

/// End a delivery (IN_TRANSIT -> DELIVERED; the order completes).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/end", tag = "deliveries",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "end queued", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendors", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 409, description = "not IN_TRANSIT", body = ErrorBody)))]
pub async fn end(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(order_id): Path<String>,
) -> ApiResult<Response> {
    managed_delivery(&state, &user, &order_id, &["IN_TRANSIT"]).await?;
    let command = DeliveryCommand::EndDelivery {
        order_id: order_id.clone(),
        by: user.username.clone(),
    };
    publish(&state, &trace, &order_id, command).await
}
