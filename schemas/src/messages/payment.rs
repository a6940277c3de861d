use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Amount;
use crate::message_type;

/// Topic `payment-commands`, key: order id. Sent by the order saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum PaymentCommand {
    Authorize {
        order_id: String,
        amount: Amount,
        payment_token: String,
    },
    /// Refund whatever was captured for the order (cancel after payment, late approval).
    Refund { order_id: String, reason: String },
}
message_type!(PaymentCommand { Authorize, Refund });
