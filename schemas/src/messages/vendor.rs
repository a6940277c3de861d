use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;
use crate::message_type;

/// Topic `vendor-commands`, key: vendor id. The catalog processor is the only writer of a vendor
/// and of the list of its products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum VendorCommand {
    CreateVendor {
        vendor_id: String,
        name: String,
        manager: String,
    },
    UpdateVendor {
        vendor_id: String,
        name: String,
    },
    /// Deletes the vendor and, through `DeleteProduct` on `stock-commands`, every product
    /// listed under it.
    DeleteVendor {
        vendor_id: String,
    },
    /// From the stock processor when it creates a product: the catalog lists the product under
    /// its vendor, so that deleting the vendor deletes it. A product listed under a vendor that
    /// is already deleted is deleted at once. Idempotent.
    ProductListed {
        vendor_id: String,
        product_id: String,
    },
}
message_type!(VendorCommand {
    CreateVendor,
    UpdateVendor,
    DeleteVendor,
    ProductListed
});

impl VendorCommand {
    /// The vendor the command is about: the record's key.
    pub fn vendor_id(&self) -> &str {
        match self {
            VendorCommand::CreateVendor { vendor_id, .. }
            | VendorCommand::UpdateVendor { vendor_id, .. }
            | VendorCommand::DeleteVendor { vendor_id }
            | VendorCommand::ProductListed { vendor_id, .. } => vendor_id,
        }
    }
}

/// Topic `view-vendors`, key: vendor id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VendorView {
    pub vendor_id: String,
    pub name: String,
    /// Username of the VENDOR_MANAGER who owns the vendor.
    pub manager: String,
    pub deleted: bool,
    pub rejection: Option<String>,
    pub updated_at: Millis,
    pub version: u64,
}
