use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;
use crate::message_type;

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
    /// Removed from the history by a MASTER (`DELETE /notifications/{id}`): the mail itself
    /// was sent. A deleted entry is in no listing and reads as 404; its address and subject
    /// are blanked. Absent (false) in views older than it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    pub version: u64,
}

/// Topic `notification-commands`, key: the order id of the mail, the key of the event that
/// made it, so the notification task that sent the mail and published its view (the owner of
/// that order's `order-events` / `delivery-events` partition) is the one that handles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum NotificationCommand {
    /// Take a sent mail out of the history (the view is republished marked `deleted`).
    DeleteNotification {
        /// The view's id, the mail's Message-ID without angle brackets.
        message_id: String,
        order_id: String,
        /// The MASTER who asked.
        by: String,
    },
}
message_type!(NotificationCommand { DeleteNotification });
