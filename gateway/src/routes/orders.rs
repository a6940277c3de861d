//! Orders: place (idempotent with `Idempotency-Key`), read (long-poll), pay, cancel. A user sees
//! only their own orders (another user's order is a 404); a vendor manager sees the orders with
//! a line of their vendors; MASTER sees all.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use pickple_domain::{order, rules, shipping, user as user_rules};
use pickple_schemas::{
    topic, OrderCommand, OrderLine, OrderStatus, OrderView, ShippingAddress, UserStatus, UserView,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    accepted, claim_id, fingerprint, idempotency_key, list_filtered, list_index,
    manages_any_vendor, mark_published, publish_command, release_key, to_json, validate,
    view_answer, IdempotencyKey, Listing, PageQuery, ViewQuery, API, UNREADABLE_LISTING,
};
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::AppState;

pub const MAX_LINE_QUANTITY: u64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineRequest {
    pub product_id: String,
    /// 1 to 1000.
    #[serde(deserialize_with = "super::int::u64")]
    pub quantity: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    /// 1 to 50 lines, each product at most once.
    pub lines: Vec<OrderLineRequest>,
    /// Where the order goes (required).
    pub shipping: ShippingRequest,
}

/// A delivery address, checked with `pickple_domain::shipping`'s rules.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingRequest {
    /// Who receives the parcels: 1 to 50 characters on one line, no control or invisible
    /// format characters.
    pub recipient: String,
    /// 1 to 200 characters on one line, no control or invisible format characters.
    pub address: String,
    /// A phone number: 7 to 20 characters of digits, spaces, `-`, `(`, `)` and a leading `+`,
    /// holding 7 to 15 digits.
    pub contact: String,
    /// A note for the courier: up to 200 characters on one line (optional).
    #[serde(default)]
    pub request: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// Opaque token of the payment method, handed to the payment provider.
    pub payment_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Up to 500 characters; newlines and tabs are allowed, other control characters and
    /// invisible format characters (right-to-left overrides, zero-width spaces...) are not.
    pub reason: Option<String>,
}

/// Place an order. With `Idempotency-Key`, a repeat from the same user returns the same order
/// id and publishes nothing.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])),
    request_body = PlaceOrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe placement: same key, same order")),
    responses(
        (status = 202, description = "order queued; long-poll its Location with ?wait=&status=AWAITING_PAYMENT", body = super::Accepted),
        (status = 400, description = "malformed JSON or Idempotency-Key", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 409, description = "the user is not active", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 422, description = "invalid fields, or a reused Idempotency-Key", body = ErrorBody),
        (status = 429, description = "too many placements by this user (Retry-After)", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (the user cannot be checked)", body = ErrorBody)))]
pub async fn place(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlaceOrderRequest>,
) -> ApiResult<Response> {
    state
        .limits
        .check(
            &state.views,
            crate::limits::Limit::PlacePerUser,
            &user.username,
        )
        .await?;
    let key = idempotency_key(&headers)?;
    let lines: Vec<OrderLine> = req
        .lines
        .iter()
        .map(|l| OrderLine {
            product_id: l.product_id.clone(),
            quantity: l.quantity,
        })
        .collect();
    let mut v = Validator::new();
    v.rule("lines", order::check_has_lines(&lines))
        .rule("lines", order::check_line_count(&lines));
    for (i, line) in lines.iter().enumerate() {
        let product = format!("lines[{i}].product_id");
        let quantity = format!("lines[{i}].quantity");
        v.rule(&product, order::check_line_product(&line.product_id))
            .check(validate::id(&line.product_id), &product, "not a product id")
            .rule(
                &quantity,
                order::check_line_quantity(&line.product_id, line.quantity),
            )
            .check(
                line.quantity <= MAX_LINE_QUANTITY,
                &quantity,
                "at most 1000",
            )
            .rule(&product, order::check_line_unique(&lines, i));
    }
    let shipping = ShippingAddress {
        recipient: req.shipping.recipient.clone(),
        address: req.shipping.address.clone(),
        contact: req.shipping.contact.clone(),
        request: req.shipping.request.clone(),
    };
    v.rule(
        "shipping.recipient",
        shipping::check_recipient(&shipping.recipient),
    )
    .rule(
        "shipping.address",
        shipping::check_address(&shipping.address),
    )
    .rule(
        "shipping.contact",
        shipping::check_contact(&shipping.contact),
    )
    .rule(
        "shipping.request",
        shipping::check_request(shipping.request.as_deref()),
    );
    v.finish()?;
    let shipping = shipping::normalized(&shipping);
    // Identity: the buyer is an active user (and the order needs their e-mail).
    state.views.ensure_servable()?;
    let profile = state
        .views
        .get::<UserView>(&user.username)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or_else(|| ApiError::conflict("the user is not active"))?;
    let fp = fingerprint(&req);
    let claimed = claim_id(&state, "order", &user.username, key.as_deref(), &fp).await?;
    let (order_id, command_id) = (claimed.id, claimed.command_id);
    if claimed.publish {
        let command = OrderCommand::PlaceOrder {
            order_id: order_id.clone(),
            username: user.username.clone(),
            email: profile.email,
            lines,
            shipping: Some(shipping),
        };
        if let Err(e) = state
            .kafka
            .publish(
                topic::ORDER_COMMANDS,
                &order_id,
                &command,
                &command_id,
                &trace,
            )
            .await
        {
            release_key(&state, "order", &user.username, key.as_deref()).await;
            return Err(e);
        }
        mark_published(
            &state,
            "order",
            &user.username,
            key.as_deref(),
            &fp,
            &command_id,
        )
        .await;
    }
    Ok(accepted(
        &order_id,
        &command_id,
        format!("{API}/orders/{order_id}"),
        claimed.replay,
    ))
}

/// `?status=` of an order listing (the buyer's, a vendor's).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusFilter {
    /// Only the orders now in this status: PENDING, AWAITING_PAYMENT, PAYMENT_PENDING, PAID,
    /// SHIPPING, COMPLETED or CANCELLED (another value is a 422 naming `status`).
    pub status: Option<String>,
}

impl StatusFilter {
    /// The status asked for, else a 422 naming `status`.
    pub fn status(&self) -> ApiResult<Option<OrderStatus>> {
        let status = parse_status(self.status.as_deref());
        Validator::new()
            .rule("status", status.as_ref().map(|_| ()).map_err(Clone::clone))
            .finish()?;
        Ok(status.ok().flatten())
    }
}

/// `?status=&username=&vendor_id=` of MASTER's listing of every order.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrderFilter {
    /// Only the orders now in this status: PENDING, AWAITING_PAYMENT, PAYMENT_PENDING, PAID,
    /// SHIPPING, COMPLETED or CANCELLED (another value is a 422 naming `status`).
    pub status: Option<String>,
    /// Only this buyer's orders (a username: 4 to 10 letters or digits, case-insensitive).
    pub username: Option<String>,
    /// Only the orders with a line of this vendor.
    pub vendor_id: Option<String>,
}

/// The status of a `?status=`, spelt as the domain spells it.
fn parse_status(value: Option<&str>) -> Result<Option<OrderStatus>, pickple_domain::Rejection> {
    value.map(order::parse_status).transpose()
}

/// Every order, newest first (MASTER), optionally only those in a status, of a buyer, with a
/// line of a vendor. Each filter and the status with either of the others is an index of its
/// own (paged by score); a buyer and a vendor together page through the buyer's orders (in the
/// status), keeping those of the vendor.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", security(("bearer" = [])),
    params(PageQuery, OrderFilter),
    responses(
        (status = 200, description = "orders", body = Listing),
        (status = 403, description = "not MASTER", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `status` is not an order status, `username` not a username or `vendor_id` not an id (`fields` names it)", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list_all(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<OrderFilter>,
) -> ApiResult<Json<Listing>> {
    user.require_master()?;
    let username = filter
        .username
        .as_deref()
        .map(user_rules::normalize_username);
    let status = parse_status(filter.status.as_deref());
    let mut v = Validator::new();
    v.rule("status", status.as_ref().map(|_| ()).map_err(Clone::clone));
    if let Some(u) = &username {
        v.rule("username", user_rules::validate_username(u));
    }
    if let Some(id) = &filter.vendor_id {
        v.check(validate::id(id), "vendor_id", "not a vendor id");
    }
    v.finish()?;
    let status = status.ok().flatten();
    let keys = &state.views.keys;
    let index = match (&username, status) {
        (Some(u), Some(s)) => keys.orders_of_user_in_status(u, s),
        (Some(u), None) => keys.orders_of_user(u),
        (None, _) => match (&filter.vendor_id, status) {
            (Some(v), Some(s)) => keys.orders_of_vendor_in_status(v, s),
            (Some(v), None) => keys.orders_of_vendor(v),
            (None, Some(s)) => keys.orders_in_status(s),
            (None, None) => keys.orders_all(),
        },
    };
    match (&username, &filter.vendor_id) {
        // A buyer's orders are few: scanning them for the vendor costs less than an index per
        // (buyer, vendor) pair on every order.
        (Some(_), Some(vendor)) => {
            list_filtered(
                &state,
                &index,
                &page,
                |o: &OrderView| o.vendor_ids.contains(vendor),
                to_json,
            )
            .await
        }
        _ => list_index::<OrderView>(&state, &index, &page, to_json).await,
    }
}

/// The signed-in user's orders, newest first (`?status=`: only those in that status).
#[utoipa::path(get, path = "/api/v1/orders/mine", tag = "orders", security(("bearer" = [])),
    params(PageQuery, StatusFilter),
    responses(
        (status = 200, description = "orders", body = Listing),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 422, description = "`validation_failed`: `status` is not an order status", body = ErrorBody),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<StatusFilter>,
) -> ApiResult<Json<Listing>> {
    let keys = &state.views.keys;
    let index = match filter.status()? {
        Some(status) => keys.orders_of_user_in_status(&user.username, status),
        None => keys.orders_of_user(&user.username),
    };
    list_index::<OrderView>(&state, &index, &page, to_json).await
}

/// Can `user` see this order? Its owner, MASTER, or a manager of one of its vendors.
async fn can_see(state: &AppState, user: &AuthUser, order: &OrderView) -> ApiResult<bool> {
    Ok(order.username == user.username
        || manages_any_vendor(state, user, &order.vendor_ids).await?)
}

/// One order. `?wait=<s>` long-polls until it changes, `&status=AWAITING_PAYMENT` until it
/// reaches that status (or a terminal one); when the wait ends first, the current order with
/// `Pickple-Wait: timeout` (`met` otherwise).
#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders", security(("bearer" = [])),
    params(("order_id" = String, Path, description = "order id"), ViewQuery),
    responses(
        (status = 200, description = "the order", body = crate::openapi::docs::OrderView),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such order (or not yours)", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_order(
    State(state): State<AppState>,
    user: AuthUser,
    Path(order_id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&order_id, "order")?;
    let wait = q.wait_for(&state)?;
    // An order's buyer and vendors never change: decide access on the current view, before a
    // long wait, so its vendors' managers can wait on it too (the check needs Redis reads).
    if let Some(current) = state.views.get::<OrderView>(&order_id).await? {
        if !can_see(&state, &user, &current).await? {
            return Err(ApiError::not_found("order"));
        }
    }
    let view = read_view::<OrderView>(&state.views, &state.notifier, &order_id, &wait, |_| true)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    if !can_see(&state, &user, &view).await? {
        return Err(ApiError::not_found("order"));
    }
    if view.username == user.username || user.is_master() {
        return Ok(view_answer(&view));
    }
    // A vendor's manager: their vendors' share of the order only.
    let mut managed = Vec::new();
    for vendor in &view.vendor_ids {
        if super::manages_vendor(&state, &user, vendor).await? {
            managed.push(vendor.clone());
        }
    }
    Ok(view_answer(&pickple_domain::order::vendor_share(
        &view, &managed,
    )))
}

/// The caller's own order (MASTER: any order), else 404. Only who the order belongs to is read
/// from the view (it never changes); its status is the order processor's business.
async fn own_order(state: &AppState, user: &AuthUser, order_id: &str) -> ApiResult<OrderView> {
    super::check_id(order_id, "order")?;
    state.views.ensure_servable()?;
    let order = state
        .views
        .get::<OrderView>(order_id)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    if order.username != user.username && !user.is_master() {
        return Err(ApiError::not_found("order"));
    }
    Ok(order)
}

/// Pay an order (its owner). Whatever the order's status, the command is queued: the order
/// processor pays an order AWAITING_PAYMENT and refuses any other, visibly (the order's view
/// gets a new version with `rejection` set; a repeat while PAYMENT_PENDING is ignored).
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/pay", tag = "orders",
    security(("bearer" = [])), request_body = PayRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "payment queued; long-poll the order with ?wait=&status=PAID (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 403, description = "not the buyer (MASTER cannot pay for a user)", body = ErrorBody),
        (status = 404, description = "no such order (or not yours)", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn pay(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<PayRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule(
            "payment_token",
            order::check_payment_token(&req.payment_token),
        )
        .check(
            validate::text(&req.payment_token, 1, 256),
            "payment_token",
            "1 to 256 characters",
        )
        .finish()?;
    let order = own_order(&state, &user, &order_id).await?;
    if order.username != user.username {
        return Err(ApiError::forbidden("only the buyer pays an order"));
    }
    let command = OrderCommand::PayOrder {
        order_id: order_id.clone(),
        username: user.username.clone(),
        payment_token: req.payment_token,
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

/// Cancel an order before it ships (its owner or MASTER). Whatever the order's status, the
/// command is queued: the order processor cancels an order not yet shipped (a paid one once its
/// delivery has not started) and refuses a shipped or completed one, visibly (`rejection` on
/// the order's view); cancelling a cancelled order changes nothing.
#[utoipa::path(post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    security(("bearer" = [])), request_body = CancelRequest,
    params(("order_id" = String, Path, description = "order id")),
    responses(
        (status = 202, description = "cancellation queued; long-poll the order with ?wait=&status=CANCELLED (answers on a refusal too: see `rejection`)", body = super::Accepted),
        (status = 404, description = "no such order (or not yours)", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody),
        (status = 503, description = "the views sink has never reported (ownership cannot be checked)", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(order_id): Path<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> ApiResult<Response> {
    let reason = req.reason.unwrap_or_default();
    Validator::new()
        .rule("reason", rules::visible_text("reason", &reason, true))
        .check(
            validate::multiline_text(&reason, 0, 500),
            "reason",
            "up to 500 characters",
        )
        .finish()?;
    // The views only tell a missing order (404) from someone else's; the order processor checks
    // ownership again against its own state, so the command names the real requester.
    own_order(&state, &user, &order_id).await?;
    let command = OrderCommand::CancelOrder {
        order_id: order_id.clone(),
        username: user.username.clone(),
        master: user.is_master(),
        reason: if reason.trim().is_empty() {
            format!("cancelled by {}", user.username)
        } else {
            reason
        },
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
