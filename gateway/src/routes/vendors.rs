//! Vendors: a VENDOR_MANAGER creates and owns them; MASTER manages all.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use pickple_domain::{order, user as user_rules, vendor};
use pickple_schemas::{
    topic, DeliveryView, OrderCommand, OrderView, ProductView, Role, UserView, VendorCommand,
    VendorView,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::orders::StatusFilter;
use super::products::{is_public, product_read};
use super::{
    accepted, claim_id, fingerprint, idempotency_key, list_filtered, list_index, manages_vendor,
    mark_published, new_command_id, publish_command, release_key, to_json, validate, view_answer,
    IdempotencyKey, Listing, PageQuery, ViewQuery, API, UNREADABLE_LISTING,
};
use crate::auth::{AuthUser, MaybeAuth};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVendorRequest {
    /// 1 to 100 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub name: String,
    /// MASTER only: the VENDOR_MANAGER who will own it (default: the caller).
    pub manager: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVendorRequest {
    /// 1 to 100 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub name: String,
}

/// Create a vendor (VENDOR_MANAGER or MASTER). Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/vendors", tag = "vendors", operation_id = "create_vendor",
    security(("bearer" = [])),
    request_body = CreateVendorRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe creation")),
    responses(
        (status = 202, description = "creation queued", body = super::Accepted),
        (status = 403, description = "not VENDOR_MANAGER or MASTER, or `manager` given by a VENDOR_MANAGER", body = ErrorBody),
        (status = 422, description = "invalid fields (also: `manager` is no active VENDOR_MANAGER or MASTER)", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateVendorRequest>,
) -> ApiResult<Response> {
    user.require_manager()?;
    let key = idempotency_key(&headers)?;
    if req.manager.is_some() && user.role != Role::Master {
        return Err(ApiError::forbidden(
            "only MASTER can create a vendor for someone else",
        ));
    }
    let manager = req.manager.as_deref().map(user_rules::normalize_username);
    Validator::new()
        .rule("name", vendor::check_name(&req.name))
        .check(
            validate::text(&req.name, 1, 100),
            "name",
            "1 to 100 characters",
        )
        .rule(
            "manager",
            manager
                .as_deref()
                .map_or(Ok(()), user_rules::validate_username),
        )
        .finish()?;
    if let Some(name) = &manager {
        let named = state.views.get::<UserView>(name).await?;
        Validator::new()
            .rule(
                "manager",
                user_rules::check_can_manage_vendors(named.map(|u| (u.status, u.role))),
            )
            .finish()?;
    }
    let manager = manager.unwrap_or_else(|| user.username.clone());
    let fp = fingerprint(&req);
    let claimed = claim_id(&state, "vendor", &user.username, key.as_deref(), &fp).await?;
    let (vendor_id, command_id) = (claimed.id, claimed.command_id);
    if claimed.publish {
        let command = VendorCommand::CreateVendor {
            vendor_id: vendor_id.clone(),
            name: req.name.trim().to_string(),
            manager,
        };
        if let Err(e) = state
            .kafka
            .publish(
                topic::VENDOR_COMMANDS,
                &vendor_id,
                &command,
                &command_id,
                &trace,
            )
            .await
        {
            release_key(&state, "vendor", &user.username, key.as_deref()).await;
            return Err(e);
        }
        mark_published(
            &state,
            "vendor",
            &user.username,
            key.as_deref(),
            &fp,
            &command_id,
        )
        .await;
    }
    Ok(accepted(
        &vendor_id,
        &command_id,
        format!("{API}/vendors/{vendor_id}"),
        claimed.replay,
    ))
}

/// Every vendor (public).
#[utoipa::path(get, path = "/api/v1/vendors", tag = "vendors", params(PageQuery),
    responses((status = 200, description = "vendors", body = Listing),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    let index = state.views.keys.vendors_all();
    list_index::<VendorView>(&state, &index, &page, to_json).await
}

/// The vendors the signed-in manager owns.
#[utoipa::path(get, path = "/api/v1/vendors/mine", tag = "vendors", security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "the caller's vendors", body = Listing),
        (status = 403, description = "not VENDOR_MANAGER or MASTER", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    user.require_manager()?;
    let index = state.views.keys.vendors_of_manager(&user.username);
    list_index::<VendorView>(&state, &index, &page, to_json).await
}

/// One vendor (public; long-poll with `?wait=`).
#[utoipa::path(get, path = "/api/v1/vendors/{vendor_id}", tag = "vendors",
    params(("vendor_id" = String, Path, description = "vendor id"), ViewQuery),
    responses(
        (status = 200, description = "the vendor", body = crate::openapi::docs::VendorView),
        (status = 404, description = "no such vendor", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_vendor(
    State(state): State<AppState>,
    Path(vendor_id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&vendor_id, "vendor")?;
    let wait = q.wait_for(&state)?;
    let view = read_view::<VendorView>(&state.views, &state.notifier, &vendor_id, &wait, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found("vendor"))?;
    Ok(view_answer(&view))
}

/// 404 if the vendor does not exist, 403 if the caller does not manage it.
async fn owned_vendor(state: &AppState, user: &AuthUser, vendor_id: &str) -> ApiResult<()> {
    user.require_manager()?;
    super::check_id(vendor_id, "vendor")?;
    state.views.ensure_servable()?;
    let vendor = state
        .views
        .get::<VendorView>(vendor_id)
        .await?
        .filter(|v| !v.deleted)
        .ok_or_else(|| ApiError::not_found("vendor"))?;
    if user.role == Role::Master || vendor.manager == user.username {
        Ok(())
    } else {
        Err(ApiError::forbidden("you do not manage this vendor"))
    }
}

/// Rename a vendor (its manager or MASTER).
#[utoipa::path(patch, path = "/api/v1/vendors/{vendor_id}", tag = "vendors",
    security(("bearer" = [])), request_body = UpdateVendorRequest,
    params(("vendor_id" = String, Path, description = "vendor id")),
    responses(
        (status = 202, description = "update queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such vendor", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(vendor_id): Path<String>,
    ApiJson(req): ApiJson<UpdateVendorRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule("name", vendor::check_name(&req.name))
        .check(
            validate::text(&req.name, 1, 100),
            "name",
            "1 to 100 characters",
        )
        .finish()?;
    owned_vendor(&state, &user, &vendor_id).await?;
    let command = VendorCommand::UpdateVendor {
        vendor_id: vendor_id.clone(),
        name: req.name.trim().to_string(),
    };
    let command_id = new_command_id();
    state
        .kafka
        .publish(
            topic::VENDOR_COMMANDS,
            &vendor_id,
            &command,
            &command_id,
            &trace,
        )
        .await?;
    Ok(accepted(
        &vendor_id,
        &command_id,
        format!("{API}/vendors/{vendor_id}"),
        false,
    ))
}

/// Delete a vendor (its manager or MASTER).
#[utoipa::path(delete, path = "/api/v1/vendors/{vendor_id}", tag = "vendors",
    security(("bearer" = [])),
    params(("vendor_id" = String, Path, description = "vendor id")),
    responses(
        (status = 202, description = "deletion queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such vendor", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    Path(vendor_id): Path<String>,
) -> ApiResult<Response> {
    owned_vendor(&state, &user, &vendor_id).await?;
    let command = VendorCommand::DeleteVendor {
        vendor_id: vendor_id.clone(),
    };
    let command_id = new_command_id();
    state
        .kafka
        .publish(
            topic::VENDOR_COMMANDS,
            &vendor_id,
            &command,
            &command_id,
            &trace,
        )
        .await?;
    Ok(accepted(
        &vendor_id,
        &command_id,
        format!("{API}/vendors/{vendor_id}"),
        false,
    ))
}

/// A vendor's products: all of them with their stock levels for its manager or MASTER, the
/// public ones with availability states (`PublicProductView`) for others (the `total` counts
/// what the caller may see).
#[utoipa::path(get, path = "/api/v1/vendors/{vendor_id}/products", tag = "vendors",
    security((), ("bearer" = [])),
    params(("vendor_id" = String, Path, description = "vendor id"), PageQuery),
    responses((status = 200, description = "products", body = Listing),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn products(
    State(state): State<AppState>,
    MaybeAuth(user): MaybeAuth,
    Path(vendor_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    super::check_id(&vendor_id, "vendor")?;
    let owner = match &user {
        Some(u) => manages_vendor(&state, u, &vendor_id).await?,
        None => false,
    };
    let index = state.views.keys.products_of_vendor(&vendor_id);
    // Its managers and MASTER see every product with its levels; others the public ones, with
    // availability states instead of levels.
    if owner {
        list_index::<ProductView>(&state, &index, &page, to_json).await
    } else {
        let public = |v: ProductView| product_read(v, false);
        list_filtered(&state, &index, &page, is_public, public).await
    }
}

/// Orders with a line of the vendor (its manager or MASTER), optionally only those in a status.
#[utoipa::path(get, path = "/api/v1/vendors/{vendor_id}/orders", tag = "vendors",
    security(("bearer" = [])),
    params(("vendor_id" = String, Path, description = "vendor id"), PageQuery, StatusFilter),
    responses(
        (status = 200, description = "orders, newest first", body = Listing),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such vendor", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `status` is not an order status", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn orders(
    State(state): State<AppState>,
    user: AuthUser,
    Path(vendor_id): Path<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<StatusFilter>,
) -> ApiResult<Json<Listing>> {
    owned_vendor(&state, &user, &vendor_id).await?;
    let status = filter.status()?;
    let keys = &state.views.keys;
    let index = match status {
        Some(status) => keys.orders_of_vendor_in_status(&vendor_id, status),
        None => keys.orders_of_vendor(&vendor_id),
    };
    if user.is_master() {
        return list_index::<OrderView>(&state, &index, &page, to_json).await;
    }
    // A manager sees their vendor's share of each order, not the other vendors' lines.
    list_index::<OrderView>(&state, &index, &page, |order| {
        to_json(pickple_domain::order::vendor_share(
            &order,
            std::slice::from_ref(&vendor_id),
        ))
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VendorCancelRequest {
    /// Why the vendor cannot fill the order, shown to the buyer: 1 to 500 characters; newlines
    /// and tabs are allowed, other control characters and invisible format characters
    /// (right-to-left overrides, zero-width spaces...) are not.
    pub reason: String,
}

/// Cancel an unpaid order with a line of the vendor that the vendor cannot fill (its manager
/// or MASTER). The order is cancelled as a whole: every line's stock is released and the
/// order's history and `OrderCancelled` say "cancelled by vendor VENDOR_ID: REASON". The order
/// processor decides on its own state: it cancels an order PENDING, AWAITING_PAYMENT or
/// PAYMENT_PENDING (an authorization that comes afterwards is refunded), changes nothing for a
/// cancelled one, and refuses a paid one visibly (`rejection` on the order's view; its buyer
/// or a MASTER cancels a paid order). Under the vendor's path because the vendor is who asks,
/// and whom the caller must manage.
#[utoipa::path(post, path = "/api/v1/vendors/{vendor_id}/orders/{order_id}/cancel",
    tag = "vendors", security(("bearer" = [])), request_body = VendorCancelRequest,
    params(("vendor_id" = String, Path, description = "vendor id"),
        ("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "cancellation queued; long-poll the order with ?wait=&status=CANCELLED (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not VENDOR_MANAGER or MASTER, or not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such vendor, or no such order with a line of the vendor", body = ErrorBody),
        (status = 422, description = "invalid `reason`, or a reused Idempotency-Key", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (the vendor and the order cannot be checked)", body = ErrorBody)))]
pub async fn cancel_order(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path((vendor_id, order_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<VendorCancelRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule("reason", order::check_vendor_cancel_reason(&req.reason))
        .finish()?;
    owned_vendor(&state, &user, &vendor_id).await?;
    super::check_id(&order_id, "order")?;
    // Only whether the order has a line of the vendor is read from the view (a line's vendor
    // never changes); its status is the order processor's business.
    state
        .views
        .get::<OrderView>(&order_id)
        .await?
        .filter(|o| o.vendor_ids.contains(&vendor_id))
        .ok_or_else(|| ApiError::not_found("order"))?;
    let command = OrderCommand::VendorCancelOrder {
        order_id: order_id.clone(),
        vendor_id,
        by: user.username.clone(),
        reason: req.reason,
    };
    publish_command(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        topic::ORDER_COMMANDS,
        &order_id,
        format!("{API}/orders/{order_id}"),
        &command,
    )
    .await
}

/// Deliveries of the vendor's orders (its manager or MASTER), newest first, filtered by the
/// vendor's shipment: its status, carrier, type or tracking number. A manager is served their
/// vendor's shipment only; MASTER the whole delivery.
#[utoipa::path(get, path = "/api/v1/vendors/{vendor_id}/deliveries", tag = "vendors",
    security(("bearer" = [])),
    params(("vendor_id" = String, Path, description = "vendor id"), super::deliveries::DeliveryListQuery),
    responses(
        (status = 200, description = "deliveries, newest first", body = Listing),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such vendor", body = ErrorBody),
        (status = 422, description = "a filter outside its enum, or a tracking number that is not 1 to 100 visible characters", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    user: AuthUser,
    Path(vendor_id): Path<String>,
    ApiQuery(q): ApiQuery<super::deliveries::DeliveryListQuery>,
) -> ApiResult<Json<Listing>> {
    owned_vendor(&state, &user, &vendor_id).await?;
    if user.is_master() {
        return super::deliveries::list_deliveries(&state, Some(&vendor_id), &q, to_json).await;
    }
    let mine = [vendor_id.clone()];
    super::deliveries::list_deliveries(&state, Some(&vendor_id), &q, |d: DeliveryView| {
        to_json(pickple_domain::delivery::vendor_share(&d, &mine))
    })
    .await
}
