use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NotificationKind {
    OrderConfirmed,
    DeliveryStarted,
    DeliveryCompleted,
}

/// Topic `view-notifications`, key: the e-mail's Message-ID (one per order and kind).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NotificationView {
    pub message_id: String,
    pub username: String,
    pub email: String,
    pub order_id: String,
    pub kind: NotificationKind,
    pub subject: String,
    pub sent_at: Millis,
    pub version: u64,
}
