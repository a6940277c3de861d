//! Which message type each topic carries. The topic catalogue (`topics/`) holds partitions and
//! retention; this list holds the value contract, one JSON Schema file per entry.

use schemars::{schema_for, Schema};

use crate::messages::*;

/// (topic, JSON Schema of its value). Changelog and dead-letter topics carry internal or foreign
/// values and are not listed.
pub fn topic_values() -> Vec<(&'static str, Schema)> {
    vec![
        ("user-commands", schema_for!(UserCommand)),
        ("email-claims", schema_for!(EmailClaim)),
        ("vendor-commands", schema_for!(VendorCommand)),
        ("stock-commands", schema_for!(StockCommand)),
        ("order-commands", schema_for!(OrderCommand)),
        ("order-replies", schema_for!(OrderReply)),
        ("order-events", schema_for!(OrderEvent)),
        ("payment-commands", schema_for!(PaymentCommand)),
        ("delivery-commands", schema_for!(DeliveryCommand)),
        ("delivery-events", schema_for!(DeliveryEvent)),
        ("view-users", schema_for!(UserView)),
        ("view-vendors", schema_for!(VendorView)),
        ("view-products", schema_for!(ProductView)),
        ("view-orders", schema_for!(OrderView)),
        ("view-deliveries", schema_for!(DeliveryView)),
        ("view-notifications", schema_for!(NotificationView)),
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
