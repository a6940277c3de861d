use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Millis, OrderLine, ShippingAddress};
use crate::message_type;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Pending,
    InTransit,
    Delivered,
    Cancelled,
}

/// The carriers a shipment may go with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Carrier {
    Lozen,
    CjLogistics,
    Hanjin,
    Epost,
}

/// How a shipment travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryType {
    Direct,
    Courier,
    Express,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::InTransit,
        DeliveryStatus::Delivered,
        DeliveryStatus::Cancelled,
    ];

    /// As spelt on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::InTransit => "IN_TRANSIT",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Cancelled => "CANCELLED",
        }
    }
}

impl Carrier {
    pub const ALL: [Carrier; 4] = [
        Carrier::Lozen,
        Carrier::CjLogistics,
        Carrier::Hanjin,
        Carrier::Epost,
    ];

    /// As spelt on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Carrier::Lozen => "LOZEN",
            Carrier::CjLogistics => "CJ_LOGISTICS",
            Carrier::Hanjin => "HANJIN",
            Carrier::Epost => "EPOST",
        }
    }
}

impl DeliveryType {
    pub const ALL: [DeliveryType; 3] = [
        DeliveryType::Direct,
        DeliveryType::Courier,
        DeliveryType::Express,
    ];

    /// As spelt on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryType::Direct => "DIRECT",
            DeliveryType::Courier => "COURIER",
            DeliveryType::Express => "EXPRESS",
        }
    }
}

/// Topic `delivery-commands`, key: order id (one delivery per order, one shipment per vendor of
/// its lines).
///
/// `vendor_id` names the shipment. The gateway always sets it; a record without it (written
/// before shipments) acts on the order's only shipment and is refused on an order with several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum DeliveryCommand {
    StartDelivery {
        order_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendor_id: Option<String>,
        carrier: Carrier,
        delivery_type: DeliveryType,
        tracking_number: String,
        by: String,
    },
    AddDeliveryDetail {
        order_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendor_id: Option<String>,
        location: String,
        description: String,
        by: String,
        /// Made from the client's Idempotency-Key: a repeat of it adds nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    EndDelivery {
        order_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vendor_id: Option<String>,
        by: String,
    },
}
message_type!(DeliveryCommand {
    StartDelivery,
    AddDeliveryDetail,
    EndDelivery
});

/// Topic `delivery-events`, key: order id. For the e-mails: one per shipment that starts or
/// arrives, and one when the order's last shipment arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum DeliveryEvent {
    /// Written before shipments (one per order); no longer sent, still mailed when read.
    DeliveryStarted {
        order_id: String,
        username: String,
        email: String,
        carrier: String,
        tracking_number: String,
    },
    /// The order's last shipment arrived.
    DeliveryCompleted {
        order_id: String,
        username: String,
        email: String,
    },
    ShipmentStarted {
        order_id: String,
        vendor_id: String,
        username: String,
        email: String,
        carrier: Carrier,
        delivery_type: DeliveryType,
        tracking_number: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping: Option<ShippingAddress>,
    },
    ShipmentDelivered {
        order_id: String,
        vendor_id: String,
        username: String,
        email: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        carrier: Option<Carrier>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracking_number: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping: Option<ShippingAddress>,
    },
}
message_type!(DeliveryEvent {
    DeliveryStarted,
    DeliveryCompleted,
    ShipmentStarted,
    ShipmentDelivered
});

impl DeliveryEvent {
    pub fn order_id(&self) -> &str {
        match self {
            DeliveryEvent::DeliveryStarted { order_id, .. }
            | DeliveryEvent::DeliveryCompleted { order_id, .. }
            | DeliveryEvent::ShipmentStarted { order_id, .. }
            | DeliveryEvent::ShipmentDelivered { order_id, .. } => order_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryDetail {
    pub at: Millis,
    pub location: String,
    pub description: String,
}

/// One vendor's shipment of an order's lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShipmentView {
    pub vendor_id: String,
    pub status: DeliveryStatus,
    /// The order's lines of this vendor (empty for orders confirmed before shipments).
    #[serde(default)]
    pub lines: Vec<OrderLine>,
    /// Set once started. Null on a shipment started before carriers were enums with a carrier
    /// outside them.
    #[serde(default)]
    pub carrier: Option<Carrier>,
    #[serde(default)]
    pub delivery_type: Option<DeliveryType>,
    #[serde(default)]
    pub tracking_number: Option<String>,
    #[serde(default)]
    pub details: Vec<DeliveryDetail>,
    #[serde(default)]
    pub started_at: Option<Millis>,
    #[serde(default)]
    pub delivered_at: Option<Millis>,
}

/// Topic `view-deliveries`, key: order id. `status` is the order's: PENDING until the first
/// shipment starts, IN_TRANSIT until the last arrives, then DELIVERED (or CANCELLED).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryView {
    pub order_id: String,
    pub username: String,
    pub vendor_ids: Vec<String>,
    pub status: DeliveryStatus,
    /// When the delivery was made (the order was paid); 0 on views from before.
    #[serde(default)]
    pub created_at: Millis,
    #[serde(default)]
    pub shipping: Option<ShippingAddress>,
    /// One per vendor; a vendor's manager is served their own only.
    #[serde(default)]
    pub shipments: Vec<ShipmentView>,
    pub rejection: Option<String>,
    pub version: u64,
}
