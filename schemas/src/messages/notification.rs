use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationKind {
    OrderConfirmed,
    /// Legacy: one mail per order's start, before shipments (still mailed from old events).
    DeliveryStarted,
    /// The last shipment of the order arrived.
    DeliveryCompleted,
    /// One vendor's shipment left.
    ShipmentStarted,
    /// One vendor's shipment arrived.
    ShipmentDelivered,
}

/// Topic `view-notifications`, key: the e-mail's Message-ID (one per order and kind, and
/// vendor for a shipment's mails).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationView {
    pub message_id: String,
    pub username: String,
    pub email: String,
    pub order_id: String,
    pub kind: NotificationKind,
    /// The vendor whose shipment the mail is about (shipment mails only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
    pub subject: String,
    pub sent_at: Millis,
    pub version: u64,
}
