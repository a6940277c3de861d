//! Products, stock and reservation sales: written by the owning vendor's manager or MASTER;
//! public products are listed and searched by anyone.
//!
//! Exact stock levels (`initial, added, available, reserved, sold`) and a sale's exact counts
//! are for the product's vendor managers and MASTER ([`Viewer`]); everyone else gets
//! [`PublicProductView`]: an availability state (the domain's `stock::availability` rule).

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use pickple_domain::stock;
use pickple_schemas::{
    topic, Amount, Availability, Millis, ProductView, Role, SaleState, SaleTerms, StockCommand,
    VendorView,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    accepted, claim_id, fingerprint, idempotency_key, list_filtered, list_index, manages_vendor,
    mark_published, publish_command, release_key, to_json, validate, IdempotencyKey, Listing,
    ViewQuery, API, UNREADABLE_LISTING,
};
use crate::auth::{AuthUser, MaybeAuth};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody, Validator};
use crate::longpoll::read_view;
use crate::trace::TraceParent;
use crate::views::now_millis;
use crate::AppState;

const MAX_PRICE: i64 = 1_000_000_000_000;
const MAX_QUANTITY: u64 = 1_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    pub vendor_id: String,
    /// 1 to 200 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub name: String,
    /// Up to 5000 characters; newlines and tabs are allowed, other control characters and
    /// invisible format characters (right-to-left overrides, zero-width spaces...) are not.
    #[serde(default)]
    pub description: String,
    /// In the shop's minor unit: 1 to 10^12.
    #[serde(deserialize_with = "super::int::i64")]
    pub price: i64,
    pub image_url: Option<String>,
    /// Listed publicly (default true).
    pub public: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    /// 1 to 200 characters on one line: no control characters and no invisible format
    /// characters (right-to-left overrides, zero-width spaces...).
    pub name: Option<String>,
    /// Up to 5000 characters; newlines and tabs are allowed, other control characters and
    /// invisible format characters (right-to-left overrides, zero-width spaces...) are not.
    pub description: Option<String>,
    /// 1 to 10^12.
    #[serde(default, deserialize_with = "super::int::opt_i64")]
    pub price: Option<i64>,
    pub image_url: Option<String>,
    pub public: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockRequest {
    /// At most 10^9.
    #[serde(deserialize_with = "super::int::u64")]
    pub quantity: u64,
}

/// Units to add to the stock.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStockRequest {
    /// 1 to 10^9.
    #[serde(deserialize_with = "super::int::u64")]
    pub quantity: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    /// Opening time, ms since the epoch.
    #[serde(deserialize_with = "super::int::i64")]
    pub opens_at: i64,
    /// Closing time (exclusive), ms since the epoch; after `opens_at`.
    #[serde(deserialize_with = "super::int::i64")]
    pub closes_at: i64,
    /// Units on sale in all, at least 1.
    #[serde(deserialize_with = "super::int::u64")]
    pub quantity: u64,
    /// Units one user may buy, 1 to `quantity`.
    #[serde(deserialize_with = "super::int::u64")]
    pub per_user_limit: u64,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Case-insensitive substring of the product name.
    pub q: Option<String>,
    pub offset: Option<usize>,
    pub limit: Option<usize>,
}

/// The new quantity of a running sale.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleQuantityRequest {
    /// Units on sale in all: 1 to 10^9, and never below the units already taken (that refusal
    /// is the stock processor's, shown in the product view's `rejection`).
    #[serde(deserialize_with = "super::int::u64")]
    pub quantity: u64,
}

/// Listed for anyone: public and not deleted.
pub fn is_public(product: &ProductView) -> bool {
    product.public && !product.deleted
}

/// Who may see a product's exact numbers: MASTER, and a VENDOR_MANAGER for the vendors they
/// manage (every other caller, anonymous or USER, sees availability states).
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    master: bool,
    vendors: HashSet<String>,
}

impl Viewer {
    /// The caller's rights, read once per request: a manager's vendors from the index of the
    /// vendors they manage (live ones only, as [`manages_vendor`] counts them).
    pub async fn of(state: &AppState, user: Option<&AuthUser>) -> ApiResult<Viewer> {
        let Some(user) = user else {
            return Ok(Viewer::default());
        };
        let vendors = match user.role {
            Role::VendorManager => {
                let index = state.views.keys.vendors_of_manager(&user.username);
                let ids = state.views.all_ids(&index, super::FILTER_SCAN).await?;
                ids.into_iter().collect()
            }
            _ => HashSet::new(),
        };
        Ok(Viewer {
            master: user.role == Role::Master,
            vendors,
        })
    }

    pub fn sees_levels(&self, vendor_id: &str) -> bool {
        self.master || self.vendors.contains(vendor_id)
    }
}

/// A product as the public sees it: availability states instead of numbers, and no `rejection`
/// (why a vendor's command was refused is the vendor's business).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PublicProductView {
    pub product_id: String,
    pub vendor_id: String,
    pub name: String,
    pub description: String,
    pub price: Amount,
    pub image_url: Option<String>,
    pub public: bool,
    pub deleted: bool,
    /// IN_STOCK, LOW (at most 5 units, or at most 10 % of all the product ever had, left) or
    /// SOLD_OUT.
    pub availability: Availability,
    pub sale: Option<PublicSale>,
    pub updated_at: Millis,
    pub version: u64,
}

/// A product's sale as the public sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PublicSale {
    pub terms: SaleTerms,
    /// UPCOMING, OPEN, CLOSED (by time or early) or SOLD_OUT, at the time of the read.
    pub state: SaleState,
    /// The remaining share of the sale (its own remainder, capped by the stock available), by
    /// the same rule as `availability`, against the sale's quantity.
    pub remaining: Availability,
    /// When the vendor closed it early, if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Millis>,
}

impl PublicSale {
    pub fn of(view: &ProductView, now: Millis) -> Option<PublicSale> {
        let sale = view.sale.as_ref()?;
        Some(PublicSale {
            terms: sale.terms.clone(),
            state: stock::sale_state(sale, &view.stock, now),
            remaining: stock::sale_availability(sale, &view.stock),
            closed_at: sale.closed_at,
        })
    }
}

impl PublicProductView {
    pub fn of(view: ProductView, now: Millis) -> PublicProductView {
        PublicProductView {
            availability: stock::stock_availability(&view.stock),
            sale: PublicSale::of(&view, now),
            product_id: view.product_id,
            vendor_id: view.vendor_id,
            name: view.name,
            description: view.description,
            price: view.price,
            image_url: view.image_url,
            public: view.public,
            deleted: view.deleted,
            updated_at: view.updated_at,
            version: view.version,
        }
    }
}

/// What `GET /products...` answers: the whole view (levels, sale counts, last rejection) for
/// the product's vendor managers and MASTER, [`PublicProductView`] for everyone else.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ProductRead {
    Exact(ProductView),
    Public(PublicProductView),
}

/// The product as `exact` (the caller may see its numbers) or not.
pub fn product_read(view: ProductView, exact: bool) -> serde_json::Value {
    if exact {
        to_json(view)
    } else {
        to_json(PublicProductView::of(view, now_millis()))
    }
}

impl Viewer {
    /// A listing's item, as this caller may see it.
    pub fn product(&self, view: ProductView) -> serde_json::Value {
        let exact = self.sees_levels(&view.vendor_id);
        product_read(view, exact)
    }
}

/// Create a product of a vendor the caller manages. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/products", tag = "products", security(("bearer" = [])),
    request_body = CreateProductRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe creation")),
    responses(
        (status = 202, description = "creation queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such vendor", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateProductRequest>,
) -> ApiResult<Response> {
    user.require_manager()?;
    let key = idempotency_key(&headers)?;
    Validator::new()
        .check(validate::id(&req.vendor_id), "vendor_id", "not a vendor id")
        .rule("name", stock::check_name(&req.name))
        .check(
            validate::text(&req.name, 1, 200),
            "name",
            "1 to 200 characters",
        )
        .rule("description", stock::check_description(&req.description))
        .check(
            validate::multiline_text(&req.description, 0, 5000),
            "description",
            "up to 5000 characters",
        )
        .rule("price", stock::check_price(req.price))
        .check(req.price <= MAX_PRICE, "price", "at most 10^12")
        .check(
            req.image_url.as_deref().is_none_or(validate::url),
            "image_url",
            "an http(s) URL",
        )
        .finish()?;
    state.views.ensure_servable()?;
    if state
        .views
        .get::<VendorView>(&req.vendor_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("vendor"));
    }
    if !manages_vendor(&state, &user, &req.vendor_id).await? {
        return Err(ApiError::forbidden("you do not manage this vendor"));
    }
    let fp = fingerprint(&req);
    let claimed = claim_id(&state, "product", &user.username, key.as_deref(), &fp).await?;
    let (product_id, command_id) = (claimed.id, claimed.command_id);
    if claimed.publish {
        let command = StockCommand::CreateProduct {
            product_id: product_id.clone(),
            vendor_id: req.vendor_id.clone(),
            name: req.name.trim().to_string(),
            description: req.description.clone(),
            price: req.price,
            image_url: req.image_url.clone(),
            public: req.public.unwrap_or(true),
        };
        if let Err(e) = state
            .kafka
            .publish(
                topic::STOCK_COMMANDS,
                &product_id,
                &command,
                &command_id,
                &trace,
            )
            .await
        {
            release_key(&state, "product", &user.username, key.as_deref()).await;
            return Err(e);
        }
        mark_published(
            &state,
            "product",
            &user.username,
            key.as_deref(),
            &fp,
            &command_id,
        )
        .await;
    }
    Ok(accepted(
        &product_id,
        &command_id,
        format!("{API}/products/{product_id}"),
        claimed.replay,
    ))
}

/// Public products, most recently updated first; `q` searches names (the `total` counts the
/// matches). Each item is a `ProductRead`: exact levels for the product's vendor managers and
/// MASTER, availability states (`PublicProductView`) for anyone else.
#[utoipa::path(get, path = "/api/v1/products", tag = "products", params(SearchQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "public products, items of `ProductRead`", body = Listing),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    MaybeAuth(user): MaybeAuth,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<Listing>> {
    let viewer = Viewer::of(&state, user.as_ref()).await?;
    let map = |v: ProductView| viewer.product(v);
    let page = super::PageQuery {
        offset: q.offset,
        limit: q.limit,
    };
    let index = state.views.keys.products_public();
    let needle =
        q.q.as_deref()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty());
    let Some(needle) = needle else {
        return list_index::<ProductView>(&state, &index, &page, map).await;
    };
    let matches = |p: &ProductView| is_public(p) && p.name.to_lowercase().contains(&needle);
    list_filtered(&state, &index, &page, matches, map).await
}

/// One product: public ones for anyone, private or deleted ones for the vendor's manager and
/// MASTER (404 for others). The vendor's managers and MASTER get the exact view
/// (`ProductView`), everyone else `PublicProductView` (availability states instead of levels).
/// Long-poll with `?wait=`.
#[utoipa::path(get, path = "/api/v1/products/{product_id}", tag = "products",
    security((), ("bearer" = [])),
    params(("product_id" = String, Path, description = "product id"), ViewQuery),
    responses(
        (status = 200, description = "the product: `ProductView` for its vendor's managers and MASTER, `PublicProductView` for others", body = crate::openapi::docs::ProductRead),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_product(
    State(state): State<AppState>,
    MaybeAuth(user): MaybeAuth,
    Path(product_id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    super::check_id(&product_id, "product")?;
    let wait = q.wait_for(&state)?;
    let view =
        read_view::<ProductView>(&state.views, &state.notifier, &product_id, &wait, |_| true)
            .await?
            .ok_or_else(|| ApiError::not_found("product"))?;
    let owner = match &user {
        Some(u) => manages_vendor(&state, u, &view.vendor_id).await?,
        None => false,
    };
    if !is_public(&view) && !owner {
        return Err(ApiError::not_found("product"));
    }
    let version = view.version;
    Ok(super::view_response(product_read(view, owner), version))
}

/// 404 if the product does not exist, 403 unless the caller manages its vendor.
pub(crate) async fn owned_product(
    state: &AppState,
    user: &AuthUser,
    product_id: &str,
) -> ApiResult<()> {
    user.require_manager()?;
    super::check_id(product_id, "product")?;
    state.views.ensure_servable()?;
    let product = state
        .views
        .get::<ProductView>(product_id)
        .await?
        .ok_or_else(|| ApiError::not_found("product"))?;
    if !manages_vendor(state, user, &product.vendor_id).await? {
        return Err(ApiError::forbidden(
            "you do not manage this product's vendor",
        ));
    }
    Ok(())
}

/// Publish `command` at most once per `Idempotency-Key` of `user` ([`publish_command`]).
async fn publish(
    state: &AppState,
    trace: &TraceParent,
    user: &str,
    key: Option<&str>,
    product_id: &str,
    command: StockCommand,
) -> ApiResult<Response> {
    let location = format!("{API}/products/{product_id}");
    publish_command(
        state,
        trace,
        user,
        key,
        topic::STOCK_COMMANDS,
        product_id,
        location,
        &command,
    )
    .await
}

/// Change a product (its vendor's manager or MASTER).
#[utoipa::path(patch, path = "/api/v1/products/{product_id}", tag = "products",
    security(("bearer" = [])), request_body = UpdateProductRequest,
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "update queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
    ApiJson(req): ApiJson<UpdateProductRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule(
            "name",
            req.name.as_deref().map_or(Ok(()), stock::check_name),
        )
        .check(
            req.name
                .as_deref()
                .is_none_or(|n| validate::text(n, 1, 200)),
            "name",
            "1 to 200 characters",
        )
        .rule(
            "description",
            req.description
                .as_deref()
                .map_or(Ok(()), stock::check_description),
        )
        .check(
            req.description
                .as_deref()
                .is_none_or(|d| validate::multiline_text(d, 0, 5000)),
            "description",
            "up to 5000 characters",
        )
        .rule("price", req.price.map_or(Ok(()), stock::check_price))
        .check(
            req.price.is_none_or(|p| p <= MAX_PRICE),
            "price",
            "at most 10^12",
        )
        .check(
            req.image_url.as_deref().is_none_or(validate::url),
            "image_url",
            "an http(s) URL",
        )
        .finish()?;
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::UpdateProduct {
        product_id: product_id.clone(),
        name: req.name.map(|n| n.trim().to_string()),
        description: req.description,
        price: req.price,
        image_url: req.image_url,
        public: req.public,
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

/// Delete a product (its vendor's manager or MASTER).
#[utoipa::path(delete, path = "/api/v1/products/{product_id}", tag = "products",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "deletion queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::DeleteProduct {
        product_id: product_id.clone(),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

fn check_quantity(q: u64) -> ApiResult<()> {
    Validator::new()
        .check(q <= MAX_QUANTITY, "quantity", "at most 10^9")
        .finish()
}

/// Set the available quantity (its vendor's manager or MASTER).
#[utoipa::path(put, path = "/api/v1/products/{product_id}/stock", tag = "products",
    security(("bearer" = [])), request_body = StockRequest,
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "stock change queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn set_stock(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
    ApiJson(req): ApiJson<StockRequest>,
) -> ApiResult<Response> {
    check_quantity(req.quantity)?;
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::SetStock {
        product_id: product_id.clone(),
        quantity: req.quantity,
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

/// Add to the available quantity (its vendor's manager or MASTER).
#[utoipa::path(post, path = "/api/v1/products/{product_id}/stock", tag = "products",
    security(("bearer" = [])), request_body = AddStockRequest,
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "stock change queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn add_stock(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
    ApiJson(req): ApiJson<AddStockRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule("quantity", stock::check_quantity(req.quantity))
        .check(req.quantity <= MAX_QUANTITY, "quantity", "at most 10^9")
        .finish()?;
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::AddStock {
        product_id: product_id.clone(),
        quantity: req.quantity,
        request_id: super::request_id("AddStock", &user.username, key.as_deref()),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

/// Open a reservation sale on a product (its vendor's manager or MASTER).
#[utoipa::path(post, path = "/api/v1/products/{product_id}/sale", tag = "products",
    security(("bearer" = [])), request_body = SaleRequest,
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "sale queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn open_sale(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
    ApiJson(req): ApiJson<SaleRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .check(
            req.opens_at >= 0,
            "opens_at",
            "a time in ms since the epoch",
        )
        .rule(
            "closes_at",
            stock::check_sale_window(req.opens_at, req.closes_at),
        )
        .rule("quantity", stock::check_sale_quantity(req.quantity))
        .check(req.quantity <= MAX_QUANTITY, "quantity", "at most 10^9")
        .rule(
            "per_user_limit",
            stock::check_sale_limit(req.per_user_limit),
        )
        .check(
            req.per_user_limit <= req.quantity,
            "per_user_limit",
            "at most quantity",
        )
        .finish()?;
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::OpenSale {
        product_id: product_id.clone(),
        sale: SaleTerms {
            opens_at: req.opens_at,
            closes_at: req.closes_at,
            quantity: req.quantity,
            per_user_limit: req.per_user_limit,
        },
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

/// Close the product's sale now, before its `closes_at` (its vendor's manager or MASTER): no
/// reservation is accepted after it; units already taken stay taken. Closing a sale that is
/// over changes nothing; a product without a sale gets the refusal in its view's `rejection`.
#[utoipa::path(post, path = "/api/v1/products/{product_id}/sale/close", tag = "products",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "close queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody)))]
pub async fn close_sale(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::CloseSale {
        product_id: product_id.clone(),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

/// Change how many units a running sale offers (its vendor's manager or MASTER). A quantity
/// below the units already taken, or a sale that is over, is refused by the stock processor:
/// the product view's `rejection` says so (long-poll it with `?wait=`).
#[utoipa::path(put, path = "/api/v1/products/{product_id}/sale/quantity", tag = "products",
    security(("bearer" = [])), request_body = SaleQuantityRequest,
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "change queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody),
        (status = 422, description = "invalid fields", body = ErrorBody)))]
pub async fn set_sale_quantity(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
    ApiJson(req): ApiJson<SaleQuantityRequest>,
) -> ApiResult<Response> {
    Validator::new()
        .rule("quantity", stock::check_sale_quantity(req.quantity))
        .check(req.quantity <= MAX_QUANTITY, "quantity", "at most 10^9")
        .finish()?;
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::SetSaleQuantity {
        product_id: product_id.clone(),
        quantity: req.quantity,
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}

/// Delete a sale that has not opened yet (its vendor's manager or MASTER). Once it has opened
/// the stock processor refuses (close it instead), shown in the product view's `rejection`;
/// deleting when there is no sale changes nothing.
#[utoipa::path(delete, path = "/api/v1/products/{product_id}/sale", tag = "products",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 202, description = "deletion queued", body = super::Accepted),
        (status = 403, description = "not the vendor's manager", body = ErrorBody),
        (status = 404, description = "no such product", body = ErrorBody)))]
pub async fn delete_sale(
    State(state): State<AppState>,
    trace: axum::Extension<TraceParent>,
    user: AuthUser,
    IdempotencyKey(key): IdempotencyKey,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    owned_product(&state, &user, &product_id).await?;
    let command = StockCommand::DeleteSale {
        product_id: product_id.clone(),
    };
    publish(
        &state,
        &trace,
        &user.username,
        key.as_deref(),
        &product_id,
        command,
    )
    .await
}
