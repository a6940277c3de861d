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
