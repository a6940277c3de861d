//! The `/api/v1` routes, one module per resource, plus health, readiness, metrics and docs.

pub mod auth;
pub mod deliveries;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod products;
pub mod sales;
pub mod system;
pub mod users;
pub mod vendors;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use pickple_schemas::{Role, VendorView};
use pickple_view_model::View;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::AuthUser;
use crate::error::{ApiError, ApiResult};
use crate::longpoll::WaitFor;
use crate::AppState;

pub const API: &str = "/api/v1";

pub fn router() -> Router<AppState> {
    let api = Router::new()
        .route("/auth/sign-up", post(auth::sign_up))
        .route("/auth/sign-up/{username}", get(auth::sign_up_status))
        .route("/auth/confirm-email", post(auth::confirm_email))
        .route("/auth/sign-in", post(auth::sign_in))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/sign-out", post(auth::sign_out))
        .route(
            "/users/me",
            get(users::me)
                .patch(users::update_me)
                .delete(users::delete_me),
        )
        .route("/users", get(users::list))
        .route(
            "/users/{username}",
            get(users::get_user)
                .put(users::update_user)
                .delete(users::delete_user),
        )
        .route("/users/{username}/notifications", get(users::notifications))
        .route("/users/{username}/role", put(users::change_role))
        .route("/vendors", post(vendors::create).get(vendors::list))
        .route("/vendors/mine", get(vendors::mine))
        .route(
            "/vendors/{vendor_id}",
            get(vendors::get_vendor)
                .patch(vendors::update)
                .delete(vendors::delete),
        )
        .route("/vendors/{vendor_id}/products", get(vendors::products))
        .route("/vendors/{vendor_id}/orders", get(vendors::orders))
        .route(
            "/vendors/{vendor_id}/orders/{order_id}/cancel",
            post(vendors::cancel_order),
        )
        .route("/vendors/{vendor_id}/deliveries", get(vendors::deliveries))
        .route("/products", post(products::create).get(products::list))
        .route(
            "/products/{product_id}",
            get(products::get_product)
                .patch(products::update)
                .delete(products::delete),
        )
        .route(
            "/products/{product_id}/stock",
            put(products::set_stock).post(products::add_stock),
        )
        .route(
            "/products/{product_id}/sale",
            post(products::open_sale).delete(products::delete_sale),
        )
        .route(
            "/products/{product_id}/sale/close",
            post(products::close_sale),
        )
        .route(
            "/products/{product_id}/sale/quantity",
            put(products::set_sale_quantity),
        )
        .route("/sales", get(sales::list))
        .route("/sales/{product_id}", get(sales::get_sale))
        .route("/sales/{product_id}/mine", get(sales::mine))
        .route("/orders", post(orders::place).get(orders::list_all))
        .route("/orders/mine", get(orders::mine))
        .route("/orders/{order_id}", get(orders::get_order))
        .route("/orders/{order_id}/pay", post(orders::pay))
        .route("/orders/{order_id}/cancel", post(orders::cancel))
        .route("/deliveries", get(deliveries::list_all))
        .route("/deliveries/{order_id}", get(deliveries::get_delivery))
        .route(
            "/deliveries/{order_id}/shipments/{vendor_id}/start",
            post(deliveries::start_shipment),
        )
        .route(
            "/deliveries/{order_id}/shipments/{vendor_id}/details",
            post(deliveries::add_shipment_detail),
        )
        .route(
            "/deliveries/{order_id}/shipments/{vendor_id}/end",
            post(deliveries::end_shipment),
        )
        .route("/deliveries/{order_id}/start", post(deliveries::start))
        .route(
            "/deliveries/{order_id}/details",
            post(deliveries::add_detail),
        )
        .route("/deliveries/{order_id}/end", post(deliveries::end))
        .route("/notifications/mine", get(notifications::mine))
        .route("/payments", get(payments::list))
        .route("/payments/mine", get(payments::mine))
        .route("/payments/{order_id}", get(payments::get_payment))
        .route("/payments/{order_id}/refund", post(payments::refund))
        .route(
            "/notifications/{notification_id}",
            get(notifications::get_notification).delete(notifications::delete_notification),
        )
        // `Pickple-Wait` on the 200 of a read that long-polled.
        .layer(axum::middleware::from_fn(crate::longpoll::layer));
    Router::new()
        .nest(API, api)
        .route("/health", get(system::health))
        .route("/ready", get(system::ready))
        .route("/metrics", get(crate::metrics::handler))
        .route("/openapi.json", get(system::openapi))
        .route("/docs", get(system::docs))
}

/// The body of a `202 Accepted`: the id of the entity the command is about.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Accepted {
    /// Id of the entity (order id, product id, username...).
    pub id: String,
    /// Id of the published command (also in the record's `command-id` header).
    pub command_id: String,
    /// Where to read (and long-poll) the entity's view.
    pub location: String,
    /// True when this answers a repeated `Idempotency-Key` (no new command was published).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

pub fn accepted(id: &str, command_id: &str, location: String, replayed: bool) -> Response {
    let body = Accepted {
        id: id.to_string(),
        command_id: command_id.to_string(),
        location: location.clone(),
        replayed,
    };
    let mut res = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// A view answer, with its version in `X-View-Version`.
pub fn view_response(json: serde_json::Value, version: u64) -> Response {
    let mut res = Json(json).into_response();
    res.headers_mut()
        .insert("x-view-version", HeaderValue::from(version));
    res
}

/// A view as served, with its version in `X-View-Version`.
pub fn view_answer<V: View>(view: &V) -> Response {
    view_response(to_json(view), view.version())
}

/// A view (or any answer) as JSON.
pub fn to_json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).expect("views serialize to JSON")
}

pub fn new_command_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `?wait=&status=&after_version=` of a view read.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewQuery {
    /// Long-poll: wait up to this many seconds (capped at the server's maximum, 30 by default)
    /// for the view to change (or for `status` / `after_version`). Never an error: the answer
    /// is 200 with the view and the header `Pickple-Wait: met` once the condition holds, or
    /// 200 with the current view and `Pickple-Wait: timeout` when the wait ends first (a view
    /// that does not exist then is a 404). Without it (or with 0) the read answers at once,
    /// without `Pickple-Wait`.
    #[param(minimum = 0)]
    pub wait: Option<f64>,
    /// With `wait`: answer once the view's status is this, or a terminal status, or once a
    /// command is refused (a newer view carrying a `rejection`).
    pub status: Option<String>,
    /// With `wait`: answer once the view's version is greater than this.
    pub after_version: Option<u64>,
}

impl ViewQuery {
    pub fn wait_for(&self, state: &AppState) -> ApiResult<WaitFor> {
        WaitFor::new(
            self.wait,
            self.status.clone(),
            self.after_version,
            state.config.max_wait_secs,
        )
    }
}

/// `?offset=&limit=` of a listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items to skip (default 0).
    pub offset: Option<usize>,
    /// Items to return (default 50, at most 200).
    pub limit: Option<usize>,
}

impl PageQuery {
    pub fn bounds(&self) -> (usize, usize) {
        (
            self.offset.unwrap_or(0).min(1_000_000),
            self.limit.unwrap_or(50).min(200),
        )
    }
}

/// A page of a listing, newest first. `items` holds every view of the page: a view that cannot
/// be read fails the request (500 `view_unreadable`) rather than leaving a gap the `total` does
/// not show.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Listing {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    /// Items in the whole listing.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
}

/// The description of a listing's 500, for the OpenAPI text.
pub const UNREADABLE_LISTING: &str = "`view_unreadable`: a view of the page cannot be read (logged with its id, counted in `pickple_views_unreadable_total`); the page is refused rather than served with fewer items than its `total` says";

/// One page of the views listed in `index`.
pub async fn list_index<V: View>(
    state: &AppState,
    index: &str,
    page: &PageQuery,
    map: impl Fn(V) -> serde_json::Value,
) -> ApiResult<Json<Listing>> {
    state.views.ensure_servable()?;
    let (offset, limit) = page.bounds();
    let (ids, total) = state.views.page(index, offset, limit).await?;
    let items: Vec<V> = state.views.many(&ids).await?;
    Ok(Json(Listing {
        items: items.into_iter().map(map).collect(),
        total,
        offset,
        limit,
    }))
}

/// How many ids a filtered listing scans at most (a search, a vendor's public products).
pub const FILTER_SCAN: usize = 10_000;

/// One page of the views of `index` that pass `keep` (at most [`FILTER_SCAN`] scanned): the
/// `total` counts the views kept, so it agrees with the pages.
pub async fn list_filtered<V: View>(
    state: &AppState,
    index: &str,
    page: &PageQuery,
    keep: impl Fn(&V) -> bool,
    map: impl Fn(V) -> serde_json::Value,
) -> ApiResult<Json<Listing>> {
    state.views.ensure_servable()?;
    let (offset, limit) = page.bounds();
    let ids = state.views.all_ids(index, FILTER_SCAN).await?;
    let mut kept = Vec::new();
    for chunk in ids.chunks(500) {
        let views: Vec<V> = state.views.many(chunk).await?;
        kept.extend(views.into_iter().filter(|v| keep(v)));
    }
    let total = kept.len();
    let items = kept.into_iter().skip(offset).take(limit).map(map).collect();
    Ok(Json(Listing {
        items,
        total,
        offset,
        limit,
    }))
}

/// Path ids longer than this are not ids of ours: 404 without touching Redis.
pub fn check_id(id: &str, what: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
        Err(ApiError::not_found(what))
    } else {
        Ok(())
    }
}

/// Does `user` manage `vendor_id` (MASTER manages all)?
pub async fn manages_vendor(state: &AppState, user: &AuthUser, vendor_id: &str) -> ApiResult<bool> {
    if user.role == Role::Master {
        return Ok(true);
    }
    if user.role != Role::VendorManager {
        return Ok(false);
    }
    let vendor = state.views.get::<VendorView>(vendor_id).await?;
    Ok(vendor.is_some_and(|v| v.manager == user.username && !v.deleted))
}

/// Does `user` manage any of `vendor_ids` (an order's or a delivery's vendors)?
pub async fn manages_any_vendor(
    state: &AppState,
    user: &AuthUser,
    vendor_ids: &[String],
) -> ApiResult<bool> {
    if user.role == Role::Master {
        return Ok(true);
    }
    if user.role != Role::VendorManager {
        return Ok(false);
    }
    for vendor in vendor_ids {
        if manages_vendor(state, user, vendor).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `Idempotency-Key` header, if any (1 to 128 visible ASCII characters; an empty one is
/// none).
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    if value.is_empty() {
        return Ok(None);
    }
    let key = value.to_str().unwrap_or("");
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 128 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

/// The request's `Idempotency-Key`, validated (400 when malformed).
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> ApiResult<Self> {
        idempotency_key(&parts.headers).map(IdempotencyKey)
    }
}

/// How long the gateway remembers an `Idempotency-Key`.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 60 * 60;

const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_2d2a_9b1e_4c55_8a3e_5d1b_7c9e_0a42);

/// The id of a new entity, and whether the command must be published.
///
/// Without a key: a random id, publish. With a key: the id is UUIDv5 of (scope, user, key), so a
/// repeat gets the same id; the key is remembered in Redis with `SET NX` (24 h) together with a
/// fingerprint of the request (a different request under the same key is a 422) and, once the
/// command is on its topic, a `published` mark ([`mark_published`]). A repeat of a published
/// key publishes nothing. A repeat of a key claimed but never marked publishes the command
/// again, with the first command id: the first request may have died between the claim and the
/// publish (a gateway SIGKILLed there lost the order for good), or may still be publishing; the
/// processors take a create of an existing entity with the same content as a redelivery.
pub async fn claim_id(
    state: &AppState,
    scope: &str,
    user: &str,
    key: Option<&str>,
    fingerprint: &str,
) -> ApiResult<Claimed> {
    let claimed = claim(state, scope, user, key, fingerprint).await?;
    let id = match key {
        Some(key) => {
            uuid::Uuid::new_v5(&ID_NAMESPACE, format!("{scope}\n{user}\n{key}").as_bytes())
                .to_string()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    Ok(Claimed { id, ..claimed })
}

/// The request id a command that *adds* (stock, a delivery detail) carries, made from the
/// `Idempotency-Key` of `user` for `scope`: the processor adds nothing for a repeat of it,
/// which covers a gateway that died between publishing and remembering the key. `None`
/// without a key: each such request is its own.
pub fn request_id(scope: &str, user: &str, key: Option<&str>) -> Option<String> {
    key.map(|key| {
        uuid::Uuid::new_v5(&ID_NAMESPACE, format!("{scope}\n{user}\n{key}").as_bytes()).to_string()
    })
}

/// Claim an `Idempotency-Key` for a command ([`claim_id`] without the new entity's id).
async fn claim(
    state: &AppState,
    scope: &str,
    user: &str,
    key: Option<&str>,
    fingerprint: &str,
) -> ApiResult<Claimed> {
    let command_id = new_command_id();
    let fresh = |command_id: String| Claimed {
        id: String::new(),
        command_id,
        publish: true,
        replay: false,
    };
    let Some(key) = key else {
        return Ok(fresh(command_id));
    };
    let redis_key = idempotency_redis_key(state, scope, user, key);
    let set: Option<String> = state
        .views
        .query(
            redis::cmd("SET")
                .arg(&redis_key)
                .arg(format!("{fingerprint} {command_id}"))
                .arg("NX")
                .arg("EX")
                .arg(IDEMPOTENCY_TTL_SECS),
        )
        .await?;
    if set.is_some() {
        return Ok(fresh(command_id));
    }
    let stored: Option<String> = state.views.query(redis::cmd("GET").arg(&redis_key)).await?;
    match stored.as_deref().and_then(|s| s.split_once(' ')) {
        Some((f, rest)) if f == fingerprint => {
            let (original, published) = match rest.split_once(' ') {
                Some((original, mark)) => (original, mark == PUBLISHED),
                None => (rest, false),
            };
            Ok(Claimed {
                id: String::new(),
                command_id: original.to_string(),
                publish: !published,
                replay: true,
            })
        }
        Some(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        )),
        // Expired between the two calls: treat as new.
        None => Ok(fresh(command_id)),
    }
}

/// Publish a command on an existing entity (pay, cancel, stock, sale, delivery, role) at most
/// once per `Idempotency-Key` of `user`, as [`claim_id`] does for a create, and answer 202 with
/// the entity's `location`. A repeat of the same command (its type scopes the key, its content
/// is the fingerprint) answers the first command id, marked replayed, and publishes nothing
/// once the first is on its topic; another command under the same key is a 422.
#[allow(clippy::too_many_arguments)]
pub async fn publish_command<M: Serialize + pickple_schemas::MessageType>(
    state: &AppState,
    trace: &crate::trace::TraceParent,
    user: &str,
    key: Option<&str>,
    topic: &str,
    id: &str,
    location: String,
    command: &M,
) -> ApiResult<Response> {
    let scope = command.message_type();
    let fp = fingerprint(command);
    let claimed = claim(state, scope, user, key, &fp).await?;
    if claimed.publish {
        if let Err(e) = state
            .kafka
            .publish(topic, id, command, &claimed.command_id, trace)
            .await
        {
            release_key(state, scope, user, key).await;
            return Err(e);
        }
        mark_published(state, scope, user, key, &fp, &claimed.command_id).await;
    }
    Ok(accepted(id, &claimed.command_id, location, claimed.replay))
}

/// The mark of an idempotency key whose command is on its topic.
const PUBLISHED: &str = "published";

/// Mark an idempotency key's command as published: repeats publish nothing from now on. A
/// failure to mark costs only a harmless republish on a repeat.
pub async fn mark_published(
    state: &AppState,
    scope: &str,
    user: &str,
    key: Option<&str>,
    fingerprint: &str,
    command_id: &str,
) {
    if let Some(key) = key {
        let redis_key = idempotency_redis_key(state, scope, user, key);
        let _ = state
            .views
            .query::<Option<String>>(
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(format!("{fingerprint} {command_id} {PUBLISHED}"))
                    .arg("XX")
                    .arg("KEEPTTL"),
            )
            .await;
    }
}

/// The outcome of [`claim_id`].
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    /// The command id to publish with (for a repeat, the first request's).
    pub command_id: String,
    /// Publish the command: a new key, or a repeat of one whose command was never marked
    /// published.
    pub publish: bool,
    /// A repeated `Idempotency-Key` (the answer says so).
    pub replay: bool,
}

/// Forget an idempotency key whose command could not be published (so a retry publishes).
pub async fn release_key(state: &AppState, scope: &str, user: &str, key: Option<&str>) {
    if let Some(key) = key {
        let redis_key = idempotency_redis_key(state, scope, user, key);
        let _ = state
            .views
            .query::<i64>(redis::cmd("DEL").arg(&redis_key))
            .await;
    }
}

/// Where an `Idempotency-Key` of `user` for `scope` (order, product, vendor) is remembered.
fn idempotency_redis_key(state: &AppState, scope: &str, user: &str, key: &str) -> String {
    state
        .views
        .keys
        .idempotency(user, &format!("{scope}:{key}"))
}

/// A short fingerprint of a request body for the idempotency check.
pub fn fingerprint<T: Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    uuid::Uuid::new_v5(&ID_NAMESPACE, &bytes)
        .simple()
        .to_string()
}

/// Integers of request bodies. JSON has one kind of number, and `2.0` is the integer 2 (JSON
/// Schema's `integer` says so too), which serde's integer parsing refuses: these take any
/// integral number in range.
pub mod int {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn integral(n: &serde_json::Number) -> Option<i128> {
        if let Some(i) = n.as_i64() {
            return Some(i.into());
        }
        if let Some(u) = n.as_u64() {
            return Some(u.into());
        }
        let f = n.as_f64()?;
        (f.fract() == 0.0 && f.abs() < 1e19).then_some(f as i128)
    }

    fn number<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        n: serde_json::Number,
    ) -> Result<T, D::Error> {
        integral(&n)
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| D::Error::custom(format!("{n} is not an integer in range")))
    }

    pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        number::<D, u64>(serde_json::Number::deserialize(d)?)
    }

    pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        number::<D, i64>(serde_json::Number::deserialize(d)?)
    }

    pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(number::<D, i64>)
            .transpose()
    }
}

/// The gateway's own bounds on a request (sizes, characters, syntax of ids and URLs), checked
/// together with the domain's shape rules (`pickple_domain`, through
/// [`crate::error::Validator::rule`]): those are the processors' own, so they are never
/// re-implemented here.
pub mod validate {
    use pickple_domain::rules;

    /// One line of text (a name, a nickname, a tracking number...): `min` to `max` characters
    /// once trimmed, and visible: no control character (not even a newline or a tab) and no
    /// format character (right-to-left overrides, zero-width spaces...), by the domain's rule
    /// ([`rules::visible_text`]).
    pub fn text(s: &str, min: usize, max: usize) -> bool {
        size(s, min, max) && rules::is_visible(s, false)
    }

    /// Free text of several lines (a description, a reason): as [`text`], but newlines and tabs
    /// are allowed.
    pub fn multiline_text(s: &str, min: usize, max: usize) -> bool {
        size(s, min, max) && rules::is_visible(s, true)
    }

    /// At least `min` characters once trimmed, at most `max` in all (as the document's
    /// `maxLength` counts them).
    fn size(s: &str, min: usize, max: usize) -> bool {
        s.trim().chars().count() >= min && s.chars().count() <= max
    }

    /// An e-mail address fits in an address field (its form is the domain's rule).
    pub fn email_size(s: &str) -> bool {
        s.chars().count() <= 254 && !s.chars().any(|c| c.is_control())
    }

    /// Only the argon2 hash leaves the gateway: the password's length is its own rule.
    pub fn password(s: &str) -> bool {
        let n = s.chars().count();
        (8..=128).contains(&n)
    }

    pub fn url(s: &str) -> bool {
        s.chars().count() <= 2048
            && (s.starts_with("https://") || s.starts_with("http://"))
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    }

    pub fn id(s: &str) -> bool {
        !s.is_empty()
            && s.chars().count() <= 128
            && !s.chars().any(|c| c.is_control() || c.is_whitespace())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rules() {
            assert!(text("ab", 1, 2) && !text(" ", 1, 2) && !text("a\u{0}", 1, 5));
            assert!(text("녹차", 1, 2) && text("Crème", 1, 5) && !text("a\u{202E}b", 1, 5));
            assert!(!text("a\u{200B}", 1, 5) && !text("a\nb", 1, 5) && !text("a\tb", 1, 5));
            assert!(multiline_text("a\n\tb", 1, 5) && !multiline_text("a\r\nb", 1, 5));
            assert!(!multiline_text("a\u{2066}b", 1, 5) && !multiline_text("", 1, 5));
            assert!(email_size("a@b.co") && !email_size(&"a".repeat(255)));
            assert!(password("12345678") && !password("1234567"));
            assert!(id("p1") && !id("p 1") && !id(""));
        }
    }
}
