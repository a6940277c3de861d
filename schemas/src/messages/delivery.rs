use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;
use crate::message_type;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Pending,
    InTransit,
    Delivered,
    Cancelled,
}

/// Topic `delivery-commands`, key: order id (one delivery per order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum DeliveryCommand {
    StartDelivery {
        order_id: String,
        carrier: String,
        delivery_type: String,
        tracking_number: String,
        by: String,
    },
    AddDeliveryDetail {
        order_id: String,
        location: String,
        description: String,
        by: String,
        /// Made from the client's Idempotency-Key: a repeat of it adds nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    EndDelivery {
        order_id: String,
        by: String,
    },
}
message_type!(DeliveryCommand {
    StartDelivery,
    AddDeliveryDetail,
    EndDelivery
});

/// Topic `delivery-events`, key: order id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum DeliveryEvent {
    DeliveryStarted {
        order_id: String,
        username: String,
        email: String,
        carrier: String,
        tracking_number: String,
    },
    DeliveryCompleted {
        order_id: String,
        username: String,
        email: String,
    },
}
message_type!(DeliveryEvent {
    DeliveryStarted,
    DeliveryCompleted
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryDetail {
    pub at: Millis,
    pub location: String,
    pub description: String,
}

/// Topic `view-deliveries`, key: order id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryView {
    pub order_id: String,
    pub username: String,
    pub vendor_ids: Vec<String>,
    pub status: DeliveryStatus,
    pub carrier: Option<String>,
    pub delivery_type: Option<String>,
    pub tracking_number: Option<String>,
    pub details: Vec<DeliveryDetail>,
    pub started_at: Option<Millis>,
    pub delivered_at: Option<Millis>,
    pub rejection: Option<String>,
    pub version: u64,
}
