//! Which message type each topic carries. The topic catalogue (`topics/`) holds partitions and
//! retention; this list holds the value contract, one JSON Schema file per entry.

use schemars::{schema_for, Schema};

use crate::messages::*;
use crate::topic;

/// (topic, JSON Schema of its value). Changelog and dead-letter topics carry internal or foreign
/// values and are not listed.
pub fn topic_values() -> Vec<(&'static str, Schema)> {
    vec![
        (topic::USER_COMMANDS, schema_for!(UserCommand)),
        (topic::EMAIL_CLAIMS, schema_for!(EmailClaim)),
        (topic::USER_EVENTS, schema_for!(UserEvent)),
        (topic::VENDOR_COMMANDS, schema_for!(VendorCommand)),
        (topic::STOCK_COMMANDS, schema_for!(StockCommand)),
        (topic::ORDER_COMMANDS, schema_for!(OrderCommand)),
        (topic::ORDER_REPLIES, schema_for!(OrderReply)),
        (topic::ORDER_EVENTS, schema_for!(OrderEvent)),
        (topic::PAYMENT_COMMANDS, schema_for!(PaymentCommand)),
        (topic::DELIVERY_COMMANDS, schema_for!(DeliveryCommand)),
        (topic::DELIVERY_EVENTS, schema_for!(DeliveryEvent)),
        (
            topic::NOTIFICATION_COMMANDS,
            schema_for!(NotificationCommand),
        ),
        (topic::VIEW_USERS, schema_for!(UserView)),
        (topic::VIEW_VENDORS, schema_for!(VendorView)),
        (topic::VIEW_PRODUCTS, schema_for!(ProductView)),
        (topic::VIEW_ORDERS, schema_for!(OrderView)),
        (topic::VIEW_DELIVERIES, schema_for!(DeliveryView)),
        (topic::VIEW_NOTIFICATIONS, schema_for!(NotificationView)),
        (topic::VIEW_PAYMENTS, schema_for!(PaymentView)),
        (topic::VIEW_SALE_TAKES, schema_for!(SaleTakeView)),
    ]
}

/// The file name of a topic's schema under `schemas/json/`.
pub fn schema_file(topic: &str) -> String {
    format!("{topic}.schema.json")
}

/// The pretty-printed text committed for a schema (with a trailing newline).
pub fn schema_text(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("schemas serialize");
    text.push('\n');
    text
}
