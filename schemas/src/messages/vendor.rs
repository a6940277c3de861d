use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;
use crate::message_type;

/// Topic `vendor-commands`, key: vendor id.
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
    DeleteVendor {
        vendor_id: String,
    },
}
message_type!(VendorCommand {
    CreateVendor,
    UpdateVendor,
    DeleteVendor
});

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
