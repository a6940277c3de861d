use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

impl PaymentCommand {
    pub fn order_id(&self) -> &str {
        match self {
            PaymentCommand::Authorize { order_id, .. }
            | PaymentCommand::Refund { order_id, .. } => order_id,
        }
    }
}

/// Where an order's money stands, as its view shows it.
///
/// On the wire it is one string: `REQUESTED`, `AUTHORIZED`, `REFUND_REQUESTED`, `REFUNDED`, or
/// `DECLINED: <the provider's reason>`. Clients read these strings, so the reason stays inside
/// the string rather than in a field of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Sent to the payment provider; no answer yet.
    Requested,
    Authorized,
    /// The provider declined the last attempt; the customer may pay again until the deadline.
    Declined {
        reason: String,
    },
    RefundRequested,
    Refunded,
}

const DECLINED_PREFIX: &str = "DECLINED: ";

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaymentStatus::Requested => f.write_str("REQUESTED"),
            PaymentStatus::Authorized => f.write_str("AUTHORIZED"),
            PaymentStatus::Declined { reason } => write!(f, "{DECLINED_PREFIX}{reason}"),
            PaymentStatus::RefundRequested => f.write_str("REFUND_REQUESTED"),
            PaymentStatus::Refunded => f.write_str("REFUNDED"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a payment status")]
pub struct UnknownPaymentStatus(String);

impl FromStr for PaymentStatus {
    type Err = UnknownPaymentStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "REQUESTED" => PaymentStatus::Requested,
            "AUTHORIZED" => PaymentStatus::Authorized,
            "REFUND_REQUESTED" => PaymentStatus::RefundRequested,
            "REFUNDED" => PaymentStatus::Refunded,
            _ => match s.strip_prefix(DECLINED_PREFIX) {
                Some(reason) => PaymentStatus::Declined {
                    reason: reason.to_string(),
                },
                None => return Err(UnknownPaymentStatus(s.to_string())),
            },
        })
    }
}

impl Serialize for PaymentStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PaymentStatus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for PaymentStatus {
    fn schema_name() -> Cow<'static, str> {
        "PaymentStatus".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Where the order's money stands: REQUESTED, AUTHORIZED, \
                REFUND_REQUESTED, REFUNDED, or DECLINED: followed by the provider's reason.",
            "type": "string",
            "pattern": "^(REQUESTED|AUTHORIZED|REFUND_REQUESTED|REFUNDED|DECLINED: [\\s\\S]*)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_keep_their_wire_strings() {
        let all = [
            (PaymentStatus::Requested, "REQUESTED"),
            (PaymentStatus::Authorized, "AUTHORIZED"),
            (
                PaymentStatus::Declined {
                    reason: "card expired".into(),
                },
                "DECLINED: card expired",
            ),
            (PaymentStatus::RefundRequested, "REFUND_REQUESTED"),
            (PaymentStatus::Refunded, "REFUNDED"),
        ];
        for (status, text) in all {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<PaymentStatus>(&json).unwrap(),
                status
            );
        }
        assert!(serde_json::from_str::<PaymentStatus>("\"PAID\"").is_err());
        assert!(serde_json::from_str::<PaymentStatus>("\"DECLINED\"").is_err());
    }
}
