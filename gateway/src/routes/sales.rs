//! Reading reservation sales: the open and upcoming ones, one sale with its state, and how many
//! units the caller holds in one. Sales are written through the product routes
//! (`/products/{id}/sale...`); the stock processor decides them and publishes the product view
//! (its `sale`) and each buyer's count (`view-sale-takes`).
//!
//! The state (UPCOMING / OPEN / CLOSED / SOLD_OUT) and the remaining share are computed at read
//! time by the domain's rules (`stock::sale_state`, `stock::sale_availability`) from the product
//! view, with the gateway's clock: a sale's end by time is not an event any processor sees.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::Json;
use pickple_domain::stock;
use pickple_schemas::{
    Amount, Availability, Millis, ProductView, SaleState, SaleTakeView, SaleTerms,
};
use schemars::JsonSchema;
use serde::Serialize;

use super::products::{is_public, Viewer};
use super::UNREADABLE_LISTING;
use super::{list_filtered, manages_vendor, to_json, view_response, Listing, PageQuery, ViewQuery};
use crate::auth::{AuthUser, MaybeAuth};
use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::longpoll::read_view;
use crate::views::now_millis;
use crate::AppState;

/// One sale, as `GET /sales` and `GET /sales/{product_id}` answer it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SaleRead {
    pub product_id: String,
    pub vendor_id: String,
    pub name: String,
    pub price: Amount,
    pub image_url: Option<String>,
    pub terms: SaleTerms,
    /// UPCOMING, OPEN, CLOSED (by time or early) or SOLD_OUT, at the time of the read.
    pub state: SaleState,
    /// The remaining share (the sale's remainder, capped by the stock available): IN_STOCK,
    /// LOW (at most 5 units or 10 % of the sale's quantity) or SOLD_OUT.
    pub remaining: Availability,
    /// When the vendor closed it early, if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Millis>,
    /// Units reserved or sold under the sale: only for the product's vendor managers and MASTER.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken: Option<u64>,
    /// Units the sale can still give: only for the product's vendor managers and MASTER.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_units: Option<i64>,
    /// The product view's version.
    pub version: u64,
}

impl SaleRead {
    /// `None` when the product has no sale.
    pub fn of(view: &ProductView, exact: bool, now: Millis) -> Option<SaleRead> {
        let sale = view.sale.as_ref()?;
        Some(SaleRead {
            product_id: view.product_id.clone(),
            vendor_id: view.vendor_id.clone(),
            name: view.name.clone(),
            price: view.price,
            image_url: view.image_url.clone(),
            terms: sale.terms.clone(),
            state: stock::sale_state(sale, &view.stock, now),
            remaining: stock::sale_availability(sale, &view.stock),
            closed_at: sale.closed_at,
            taken: exact.then_some(sale.taken),
            remaining_units: exact.then(|| stock::sale_remaining(sale, &view.stock)),
            version: view.version,
        })
    }
}

/// What the caller holds in a product's current sale.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MySaleTake {
    pub product_id: String,
    pub username: String,
    /// Units the caller has reserved or bought in the current sale (0 if none, or all given
    /// back).
    pub taken: u64,
    pub per_user_limit: u64,
    pub state: SaleState,
    /// The version of the caller's count (0 before their first reservation in any sale of the
    /// product): long-poll with `?wait=&after_version=` for the next change.
    pub version: u64,
}

/// Open and upcoming sales of public products, the latest opening first. A sale closed early
/// leaves the index at once; one past its `closes_at` is filtered here (the index keeps it until
/// its product next changes), so `total` counts what the pages hold.
#[utoipa::path(get, path = "/api/v1/sales", tag = "sales", params(PageQuery),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "sales, items of `SaleRead`", body = Listing),
        (status = 500, description = UNREADABLE_LISTING, body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    MaybeAuth(user): MaybeAuth,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> ApiResult<Json<Listing>> {
    let viewer = Viewer::of(&state, user.as_ref()).await?;
    let now = now_millis();
    let index = state.views.keys.sales();
    let live = |v: &ProductView| {
        is_public(v)
            && v.sale
                .as_ref()
                .is_some_and(|s| stock::sale_state(s, &v.stock, now) != SaleState::Closed)
    };
    let map = |v: ProductView| {
        let exact = viewer.sees_levels(&v.vendor_id);
        to_json(SaleRead::of(&v, exact, now))
    };
    list_filtered(&state, &index, &page, live, map).await
}

/// The product view behind a sale read: public ones for anyone, private or deleted ones for the
/// vendor's managers and MASTER; 404 otherwise, or when it has no sale. Returns the view and
/// whether the caller may see exact numbers.
async fn sale_of(
    state: &AppState,
    user: Option<&AuthUser>,
    product_id: &str,
) -> ApiResult<(ProductView, bool)> {
    super::check_id(product_id, "sale")?;
    state.views.ensure_servable()?;
    let view = state
        .views
        .get::<ProductView>(product_id)
        .await?
        .ok_or_else(|| ApiError::not_found("sale"))?;
    let owner = match user {
        Some(u) => manages_vendor(state, u, &view.vendor_id).await?,
        None => false,
    };
    if (!is_public(&view) && !owner) || view.sale.is_none() {
        return Err(ApiError::not_found("sale"));
    }
    Ok((view, owner))
}

/// One product's sale with its state and remaining share (exact counts for its vendor's
/// managers and MASTER).
#[utoipa::path(get, path = "/api/v1/sales/{product_id}", tag = "sales",
    security((), ("bearer" = [])),
    params(("product_id" = String, Path, description = "product id")),
    responses(
        (status = 200, description = "the sale", body = crate::openapi::docs::SaleRead),
        (status = 404, description = "no such product, or it has no sale", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn get_sale(
    State(state): State<AppState>,
    MaybeAuth(user): MaybeAuth,
    Path(product_id): Path<String>,
) -> ApiResult<Response> {
    let (view, exact) = sale_of(&state, user.as_ref(), &product_id).await?;
    let read = SaleRead::of(&view, exact, now_millis());
    Ok(view_response(to_json(read), view.version))
}

/// How many units the caller holds in the product's current sale (reserved or bought, from the
/// stock processor's per-buyer count). A count of an earlier sale of the product is not this
/// sale's: 0. `?wait=` long-polls the caller's count (`after_version=0`: until there is one).
#[utoipa::path(get, path = "/api/v1/sales/{product_id}/mine", tag = "sales",
    security(("bearer" = [])),
    params(("product_id" = String, Path, description = "product id"), ViewQuery),
    responses(
        (status = 200, description = "the caller's units in the sale", body = crate::openapi::docs::MySaleTake),
        (status = 404, description = "no such product, or it has no sale", body = ErrorBody),
        (status = 503, description = "the views sink has never reported", body = ErrorBody)))]
pub async fn mine(
    State(state): State<AppState>,
    user: AuthUser,
    Path(product_id): Path<String>,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Response> {
    let wait = q.wait_for(&state)?;
    let (view, _) = sale_of(&state, Some(&user), &product_id).await?;
    let id = SaleTakeView::key(&product_id, &user.username);
    let take =
        read_view::<SaleTakeView>(&state.views, &state.notifier, &id, &wait, |_| true).await?;
    // After a long-poll, the sale as it is now (it may have changed while waiting).
    let view = if wait.wait.is_some() {
        sale_of(&state, Some(&user), &product_id).await?.0
    } else {
        view
    };
    let sale = view
        .sale
        .as_ref()
        .ok_or_else(|| ApiError::not_found("sale"))?;
    let version = take.as_ref().map_or(0, |t| t.version);
    let taken = take
        .filter(|t| t.epoch == sale.epoch)
        .map_or(0, |t| t.taken);
    let body = MySaleTake {
        product_id: view.product_id.clone(),
        username: user.username.clone(),
        taken,
        per_user_limit: sale.terms.per_user_limit,
        state: stock::sale_state(sale, &view.stock, now_millis()),
        version,
    };
    Ok(view_response(to_json(body), version))
}
