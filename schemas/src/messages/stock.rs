use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Amount, Millis};
use crate::message_type;

/// A reservation sale (flash pre-order): purchases only inside `[opens_at, closes_at)`, at most
/// `quantity` units in all and `per_user_limit` units per user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SaleTerms {
    pub opens_at: Millis,
    pub closes_at: Millis,
    pub quantity: u64,
    pub per_user_limit: u64,
}

/// Topic `stock-commands`, key: product id. The stock processor is the only writer of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum StockCommand {
    CreateProduct {
        product_id: String,
        vendor_id: String,
        name: String,
        description: String,
        price: Amount,
        image_url: Option<String>,
        public: bool,
    },
    UpdateProduct {
        product_id: String,
        name: Option<String>,
        description: Option<String>,
        price: Option<Amount>,
        image_url: Option<String>,
        public: Option<bool>,
    },
    /// From the gateway (the vendor's manager), or from the catalog processor when the product's
    /// vendor is deleted. Idempotent.
    DeleteProduct {
        product_id: String,
    },
    /// Set the available quantity (recorded as an adjustment so the stock invariant holds).
    SetStock {
        product_id: String,
        quantity: u64,
    },
    AddStock {
        product_id: String,
        quantity: u64,
        /// Made from the client's Idempotency-Key: a repeat of it adds nothing (a gateway that
        /// died between publishing and remembering the key publishes it again).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    OpenSale {
        product_id: String,
        sale: SaleTerms,
    },
    /// End the product's sale now, before its `closes_at`: no Reserve is accepted after it;
    /// units already taken stay taken. Idempotent.
    CloseSale {
        product_id: String,
    },
    /// Change how many units the sale offers in all; never below what is already taken.
    SetSaleQuantity {
        product_id: String,
        quantity: u64,
    },
    /// Remove a sale that has not opened yet; refused once it is open.
    DeleteSale {
        product_id: String,
    },
    /// Reserve a line of an order; idempotent by (order, product).
    Reserve {
        product_id: String,
        order_id: String,
        username: String,
        quantity: u64,
        /// When the order was placed: the sale window is checked against it.
        placed_at: Millis,
    },
    /// Give back what an order reserved; idempotent, and a no-op when nothing is reserved.
    Release {
        product_id: String,
        order_id: String,
    },
    /// Turn an order's reservation into a sale; idempotent.
    Commit {
        product_id: String,
        order_id: String,
    },
    /// Give back what a paid order bought (cancel after payment); idempotent.
    Restock {
        product_id: String,
        order_id: String,
    },
}
message_type!(StockCommand {
    CreateProduct,
    UpdateProduct,
    DeleteProduct,
    SetStock,
    AddStock,
    OpenSale,
    CloseSale,
    SetSaleQuantity,
    DeleteSale,
    Reserve,
    Release,
    Commit,
    Restock
});

/// Counters of one product. Invariant: `initial + added = available + reserved + sold`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLevels {
    pub initial: i64,
    pub added: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SaleStatus {
    pub terms: SaleTerms,
    /// Units reserved or sold under the sale.
    pub taken: u64,
    /// Which sale of the product this is (a new sale after one is over gets the next number):
    /// a buyer's `view-sale-takes` record of another epoch counts nothing in this sale. 0 in
    /// views written before epochs were published.
    #[serde(default)]
    pub epoch: u32,
    /// When the vendor closed the sale before its `closes_at` (processor time), if they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Millis>,
}

/// What the public sees of a quantity instead of the number: plenty, few left, or none.
/// The rule (thresholds) is the domain's `pickple_domain::stock::availability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Availability {
    InStock,
    Low,
    SoldOut,
}

/// Where a sale stands at a given time (the domain's `pickple_domain::stock::sale_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SaleState {
    /// Before `opens_at`.
    Upcoming,
    /// Between `opens_at` and `closes_at`, not closed early, units left.
    Open,
    /// Past `closes_at`, or closed early by the vendor.
    Closed,
    /// Open in time, but every unit of the sale (or of the stock) is taken.
    SoldOut,
}

/// Topic `view-sale-takes`, key `<product id>/<username>`: how many units one buyer holds in a product's current sale (the stock
/// processor's per-buyer counter). Compacted per (product, buyer); `version` is the product
/// view's version at the change, so it grows per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SaleTakeView {
    pub product_id: String,
    pub username: String,
    /// The sale (`SaleStatus::epoch`) the count belongs to.
    pub epoch: u32,
    /// Units reserved or bought in that sale (0 once all were given back).
    pub taken: u64,
    pub updated_at: Millis,
    pub version: u64,
}

impl SaleTakeView {
    /// The record key and view id: `<product id>/<username>`. A username never holds `/`.
    pub fn key(product_id: &str, username: &str) -> String {
        format!("{product_id}/{username}")
    }
}

/// Topic `view-products`, key: product id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProductView {
    pub product_id: String,
    pub vendor_id: String,
    pub name: String,
    pub description: String,
    pub price: Amount,
    pub image_url: Option<String>,
    pub public: bool,
    pub deleted: bool,
    pub stock: StockLevels,
    pub sale: Option<SaleStatus>,
    pub rejection: Option<String>,
    pub updated_at: Millis,
    pub version: u64,
}
