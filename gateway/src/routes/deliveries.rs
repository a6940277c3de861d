//! Deliveries (one per order, one shipment per vendor of its lines): read by the buyer and
//! MASTER (every shipment) or a manager of one of the order's vendors (their vendors' shipments
//! only); each shipment started, detailed and ended by its vendor's manager or MASTER. MASTER
//! lists every delivery, filtered by the shipments' status, carrier, type or tracking number
//! (a vendor's listing is in `vendors.rs`, with the same filters).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use pickple_domain::delivery;
use pickple_schemas::{
    topic, Carrier, DeliveryCommand, DeliveryStatus, DeliveryType, DeliveryView,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    list_index, manages_vendor, publish_command, to_json, validate, view_answer, IdempotencyKey,
    Listing, PageQuery, ViewQuery, API, FILTER_SCAN, UNREADABLE_LISTING,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, FieldError, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDeliveryRequest {
    /// One of LOZEN, CJ_LOGISTICS, HANJIN, EPOST (any other value is a 422 naming the field).
    #[schema(value_type = String)]
    pub carrier: Carrier,
    /// One of DIRECT, COURIER, EXPRESS (any other value is a 422 naming the field).
    #[schema(value_type = String)]
    pub delivery_type: DeliveryType,
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

/// `?status=&carrier=&delivery_type=&tracking_number=&offset=&limit=` of a delivery listing.
/// Each filter keeps the deliveries with a shipment (the vendor's, in a vendor's listing) that
/// has that value; several filters keep those that pass each. A value outside the enums is a
/// 422 naming the parameter.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryListQuery {
    /// PENDING, IN_TRANSIT, DELIVERED or CANCELLED.
    pub status: Option<String>,
    /// LOZEN, CJ_LOGISTICS, HANJIN or EPOST.
    pub carrier: Option<String>,
    /// DIRECT, COURIER or EXPRESS.
    pub delivery_type: Option<String>,
    /// Exact match, 1 to 100 characters.
    pub tracking_number: Option<String>,
    /// Items to skip (default 0).
    #[param(minimum = 0)]
    pub offset: Option<usize>,
    /// Items to return (default 50, at most 200).
    #[param(minimum = 0)]
    pub limit: Option<usize>,
}

/// An enum's value from a query parameter, as serde reads it from JSON (so the names are the
/// wire's), or a 422 naming the parameter.
fn parse_enum<T: DeserializeOwned>(field: &str, value: &str) -> ApiResult<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|e| {
        ApiError::validation(vec![FieldError {
            field: field.to_string(),
            message: e.to_string(),
        }])
    })
}

impl DeliveryListQuery {
    /// The (field, value) index filters asked for, as the view's `indexes()` spells them.
    fn filters(&self) -> ApiResult<Vec<(&'static str, String)>> {
        let mut out = Vec::new();
        if let Some(s) = &self.status {
            out.push((
                "status",
                parse_enum::<DeliveryStatus>("status", s)?.as_str().into(),
            ));
        }
        if let Some(c) = &self.carrier {
            out.push((
                "carrier",
                parse_enum::<Carrier>("carrier", c)?.as_str().into(),
            ));
        }
        if let Some(t) = &self.delivery_type {
            let t = parse_enum::<DeliveryType>("delivery_type", t)?;
            out.push(("delivery_type", t.as_str().into()));
        }
        if let Some(t) = &self.tracking_number {
            Validator::new()
                .rule(
                    "tracking_number",
                    delivery::check_line("tracking number", t),
                )
                .check(
                    validate::text(t, 1, 100),
                    "tracking_number",
                    "1 to 100 characters",
                )
                .finish()?;
            out.push(("tracking_number", t.trim().to_string()));
        }
        Ok(out)
    }

    fn page(&self) -> PageQuery {
        PageQuery {
            offset: self.offset,
            limit: self.limit,
        }
    }
}

/// One page of the deliveries of `vendor` (or all) that pass the query's filters: one index
/// per filter (the view's `indexes()`), read as a page when there is one, intersected (at most
/// [`FILTER_SCAN`] ids each) when there are several.
pub async fn list_deliveries(
    state: &AppState,
    vendor: Option<&str>,
    q: &DeliveryListQuery,
    map: impl Fn(DeliveryView) -> serde_json::Value,
) -> ApiResult<Json<Listing>> {
    let keys = &state.views.keys;
    let filters = q.filters()?;
    let indexes: Vec<String> = filters
        .iter()
        .map(|(field, value)| keys.deliveries_by(vendor, field, value))
        .collect();
    let page = q.page();
    match indexes.as_slice() {
        [] => {
            let all = match vendor {
                Some(v) => keys.deliveries_of_vendor(v),
                None => keys.deliveries_all(),
            };
            list_index::<DeliveryView>(state, &all, &page, map).await
        }
        [one] => list_index::<DeliveryView>(state, one, &page, map).await,
        [first, rest @ ..] => {
            state.views.ensure_servable()?;
            let (offset, limit) = page.bounds();
            let mut ids = state.views.all_ids(first, FILTER_SCAN).await?;
            for index in rest {
                let other: std::collections::HashSet<String> = state
                    .views
                    .all_ids(index, FILTER_SCAN)
                    .await?
                    .into_iter()
                    .collect();
                ids.retain(|id| other.contains(id));
            }
            let total = ids.len();
            let page_ids: Vec<String> = ids.into_iter().skip(offset).take(limit).collect();
            let items: Vec<DeliveryView> = state.views.many(&page_ids).await?;
            Ok(Json(Listing {
                items: items.into_iter().map(map).collect(),
                total,
                offset,
                limit,
            }))
        }
    }
}

/// Every delivery (MASTER), newest first, with the shipment filters.
#[utoipa::path(get, path = "/api/v1/deliveries", tag = "deliveries",
    security(("bearer" = [])),
    params(DeliveryListQuery),
    responses(
        (status = 200, description = "deliveries, newest first", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 422, description = "a filter outside its enum, or a tracking number that is not 1 to 100 visible characters", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list_all(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<DeliveryListQuery>,
) -> ApiResult<Json<Listing>> {
    user.require_master()?;
    list_deliveries(&state, None, &q, to_json).await
}

/// One delivery (long-poll with `?wait=&status=`): every shipment for the buyer and MASTER, a
/// vendor manager's own vendors' shipments for them.
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
        if readable_part(&state, &user, &current).await?.is_none() {
            return Err(ApiError::not_found("delivery"));
        }
    }
    let view = read_view::<DeliveryView>(&state.views, &state.notifier, &order_id, &wait, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    match readable_part(&state, &user, &view).await? {
        None => Err(ApiError::not_found("delivery")),
        Some(None) => Ok(view_answer(&view)),
        Some(Some(vendors)) => Ok(view_answer(&delivery::vendor_share(&view, &vendors))),
    }
}

/// What `user` may read of `d`: `None` nothing, `Some(None)` all of it (the buyer, MASTER),
/// `Some(Some(vendors))` the shipments of the order's vendors they manage.
async fn readable_part(
    state: &AppState,
    user: &AuthUser,
    d: &DeliveryView,
) -> ApiResult<Option<Option<Vec<String>>>> {
    if user.is_master() || d.username == user.username {
        return Ok(Some(None));
    }
    let mut mine = Vec::new();
    for vendor in &d.vendor_ids {
        if manages_vendor(state, user, vendor).await? {
            mine.push(vendor.clone());
        }
    }
    Ok((!mine.is_empty()).then_some(Some(mine)))
}

/// The shipment a command is for, after the checks: 403 unless VENDOR_MANAGER/MASTER, 404
/// without a delivery or without a shipment of `vendor_id` on it, 403 unless the caller manages
/// that vendor. Without a vendor (the per-order routes), the order's only shipment, and 422
/// (`shipment_required`) on an order of several. Only who the shipment belongs to is read from the view (it never
/// changes); whether the command fits its status is the delivery processor's business, which
/// refuses an out-of-order one visibly (`rejection` on the delivery's view).
async fn managed_shipment(
    state: &AppState,
    user: &AuthUser,
    order_id: &str,
    vendor_id: Option<&str>,
) -> ApiResult<String> {
    user.require_manager()?;
    super::check_id(order_id, "delivery")?;
    if let Some(v) = vendor_id {
        super::check_id(v, "shipment")?;
    }
    state.views.ensure_servable()?;
    let delivery = state
        .views
        .get::<DeliveryView>(order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let vendor = match vendor_id {
        Some(v) if delivery.vendor_ids.iter().any(|x| x == v) => v.to_string(),
        Some(_) => return Err(ApiError::not_found("shipment")),
        None => match delivery.vendor_ids.as_slice() {
            [only] => only.clone(),
            // Which shipment the request means is missing, not a state the processor decides:
            // the order's vendors never change.
            many => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "shipment_required",
                    format!(
                        "the order has {} shipments, one per vendor: use \
                     {API}/deliveries/{order_id}/shipments/{{vendor_id}}/...",
                        many.len()
                    ),
                ))
            }
        },
    };
    if !manages_vendor(state, user, &vendor).await? {
        return Err(ApiError::forbidden(
            "you do not manage the vendor of this shipment",
        ));
    }
    Ok(vendor)
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

/// A shipment's path: the order and the vendor.
#[derive(Debug, Clone, Deserialize)]
pub struct ShipmentPath {
    pub order_id: String,
    pub vendor_id: String,
}

async fn do_start(
    state: AppState,
    trace: TraceParent,
    user: AuthUser,
    key: Option<String>,
    order_id: String,
    vendor_id: Option<String>,
    req: StartDeliveryRequest,
) -> ApiResult<Response> {
    Validator::new()
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
    let vendor = managed_shipment(&state, &user, &order_id, vendor_id.as_deref()).await?;
    let command = DeliveryCommand::StartDelivery {
        order_id: order_id.clone(),
        vendor_id: Some(vendor),
        carrier: req.carrier,
        delivery_type: req.delivery_type,
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

async fn do_detail(
    state: AppState,
    trace: TraceParent,
    user: AuthUser,
    key: Option<String>,
    order_id: String,
    vendor_id: Option<String>,
    req: DeliveryDetailRequest,
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
    let vendor = managed_shipment(&state, &user, &order_id, vendor_id.as_deref()).await?;
    let command = DeliveryCommand::AddDeliveryDetail {
        order_id: order_id.clone(),
        vendor_id: Some(vendor),
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

async fn do_end(
    state: AppState,
    trace: TraceParent,
    user: AuthUser,
    key: Option<String>,
    order_id: String,
    vendor_id: Option<String>,
) -> ApiResult<Response> {
    let vendor = managed_shipment(&state, &user, &order_id, vendor_id.as_deref()).await?;
    let command = DeliveryCommand::EndDelivery {
        order_id: order_id.clone(),
        vendor_id: Some(vendor),
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

/// Start a vendor's shipment (PENDING -> IN_TRANSIT; the first start moves the order to
/// SHIPPING). Queued whatever the shipment's status: the delivery processor refuses a start of
/// a shipment that is not PENDING (a repeat of the same start is ignored), visibly
/// (`rejection` on the delivery's view).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/start", tag = "deliveries",
    security(("bearer" = [])), request_body = StartDeliveryRequest,
    params(("order_id" = String, Path, description = "order id"),
        ("vendor_id" = String, Path, description = "the vendor whose shipment this is")),
    responses(
        (status = 202, description = "start queued; long-poll the delivery with ?wait=&after_version= (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not a manager of this vendor", body = ErrorBody),
        (status = 404, description = "no such delivery, or no shipment of this vendor on it", body = ErrorBody),
        (status = 422, description = "invalid fields: a carrier or delivery type outside its enum, a tracking number that is not 1 to 100 visible characters", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn start_shipment(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(p): Path<ShipmentPath>,
    ApiJson(req): ApiJson<StartDeliveryRequest>,
) -> ApiResult<Response> {
    do_start(
        state,
        trace.0,
        user,
        key,
        p.order_id,
        Some(p.vendor_id),
        req,
    )
    .await
}

/// Add a tracking entry to a vendor's shipment in transit. Queued whatever the shipment's
/// status: the delivery processor refuses it unless IN_TRANSIT, visibly (`rejection`).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/details", tag = "deliveries",
    security(("bearer" = [])), request_body = DeliveryDetailRequest,
    params(("order_id" = String, Path, description = "order id"),
        ("vendor_id" = String, Path, description = "the vendor whose shipment this is")),
    responses(
        (status = 202, description = "detail queued", body = super::Accepted),
        (status = 403, description = "not a manager of this vendor", body = ErrorBody),
        (status = 404, description = "no such delivery, or no shipment of this vendor on it", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn add_shipment_detail(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(p): Path<ShipmentPath>,
    ApiJson(req): ApiJson<DeliveryDetailRequest>,
) -> ApiResult<Response> {
    do_detail(
        state,
        trace.0,
        user,
        key,
        p.order_id,
        Some(p.vendor_id),
        req,
    )
    .await
}

/// End a vendor's shipment (IN_TRANSIT -> DELIVERED; the last one completes the order). Queued
/// whatever the shipment's status; the delivery processor refuses an end of a shipment that is
/// not IN_TRANSIT, visibly (ending a delivered one changes nothing).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/end", tag = "deliveries",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id"),
        ("vendor_id" = String, Path, description = "the vendor whose shipment this is")),
    responses(
        (status = 202, description = "end queued; long-poll the delivery with ?wait=&after_version= (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not a manager of this vendor", body = ErrorBody),
        (status = 404, description = "no such delivery, or no shipment of this vendor on it", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn end_shipment(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(p): Path<ShipmentPath>,
) -> ApiResult<Response> {
    do_end(state, trace.0, user, key, p.order_id, Some(p.vendor_id)).await
}

/// Start the only shipment of a single-vendor order (kept from before shipments; an order of
/// several vendors is a 422 `shipment_required` pointing to the shipment routes).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/start", tag = "deliveries",
    security(("bearer" = [])), request_body = StartDeliveryRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "start queued; long-poll the delivery with ?wait=&status=IN_TRANSIT (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendor", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 422, description = "invalid fields (a carrier or delivery type outside its enum, a tracking number that is not 1 to 100 visible characters), or the order has several shipments (`shipment_required`): use /deliveries/{order_id}/shipments/{vendor_id}/start", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<StartDeliveryRequest>,
) -> ApiResult<Response> {
    do_start(state, trace.0, user, key, order_id, None, req).await
}

/// Add a tracking entry to the only shipment of a single-vendor order (422 on several).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/details", tag = "deliveries",
    security(("bearer" = [])), request_body = DeliveryDetailRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "detail queued", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendor", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 422, description = "invalid fields, or the order has several shipments (`shipment_required`): use /deliveries/{order_id}/shipments/{vendor_id}/details", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn add_detail(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<DeliveryDetailRequest>,
) -> ApiResult<Response> {
    do_detail(state, trace.0, user, key, order_id, None, req).await
}

/// End the only shipment of a single-vendor order (the order completes; 422 on several).
#[utoipa::path(post, path = "/api/v1/deliveries/{order_id}/end", tag = "deliveries",
    security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "end queued; long-poll the delivery with ?wait=&status=DELIVERED (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not a manager of the order's vendor", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 422, description = "invalid fields, or the order has several shipments (`shipment_required`): use /deliveries/{order_id}/shipments/{vendor_id}/end", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn end(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
) -> ApiResult<Response> {
    do_end(state, trace.0, user, key, order_id, None).await
}
