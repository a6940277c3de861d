use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Amount, Millis};
use crate::message_type;

/// Topic `payment-commands`, key: order id. Sent by the order saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum PaymentCommand {
    Authorize {
        order_id: String,
        amount: Amount,
        payment_token: String,
        /// The buyer, shown on the payment's view. Empty in commands sent before the view
        /// existed.
        #[serde(default)]
        username: String,
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

/// Where a payment stands, as `view-payments` shows it. Unlike [`PaymentStatus`] (the order
/// view's string), the decline reason is a field of its own, so the status is a plain enum that
/// listings can be indexed and filtered by. A payment's request and the provider's answer are
/// handled in one step, so there is no "requested" status to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentViewStatus {
    /// The provider authorized the amount.
    Authorized,
    /// The last attempt failed: declined by the provider, or the provider could not be reached
    /// (see `decline_reason` and the history). The buyer may pay again until the deadline.
    Declined,
    /// The authorized amount was given back (a cancel after payment, a late authorization).
    Refunded,
}

impl PaymentViewStatus {
    pub const ALL: [PaymentViewStatus; 3] = [
        PaymentViewStatus::Authorized,
        PaymentViewStatus::Declined,
        PaymentViewStatus::Refunded,
    ];

    /// The wire name (`AUTHORIZED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentViewStatus::Authorized => "AUTHORIZED",
            PaymentViewStatus::Declined => "DECLINED",
            PaymentViewStatus::Refunded => "REFUNDED",
        }
    }
}

impl fmt::Display for PaymentViewStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentViewStatus {
    type Err = UnknownPaymentStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentViewStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownPaymentStatus(s.to_string()))
    }
}

/// What happened to a payment, one entry of its view's `history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentEventKind {
    /// The saga asked for `amount` (the buyer paid the order).
    AuthorizeRequested,
    /// The provider authorized it, under `payment_id`.
    Authorized,
    /// The provider declined it, for `reason`.
    Declined,
    /// The provider could not be reached or timed out (`reason`); the next attempt uses the same
    /// idempotency key, so it cannot charge twice.
    ProviderUnavailable,
    /// The saga asked for a refund, for `reason`.
    RefundRequested,
    /// The provider gave `amount` back.
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentEvent {
    pub kind: PaymentEventKind,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
}

/// Topic `view-payments`, key: order id. The latest view of an order's payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentView {
    pub order_id: String,
    /// The buyer; empty for a payment whose last Authorize was sent before the view existed.
    pub username: String,
    pub status: PaymentViewStatus,
    /// The amount of the last authorize attempt (what was authorized, once authorized).
    pub amount: Amount,
    /// The provider's authorization id (the reference a refund is made against). The provider
    /// gives no reference of its own for a refund.
    pub payment_id: Option<String>,
    /// The reason of the last failed attempt while `DECLINED`.
    pub decline_reason: Option<String>,
    pub refunded_amount: Option<Amount>,
    pub refund_reason: Option<String>,
    /// When the first attempt was handled.
    pub created_at: Millis,
    pub authorized_at: Option<Millis>,
    pub refunded_at: Option<Millis>,
    pub updated_at: Millis,
    /// Attempts and outcomes, oldest first: the first and the latest (bounded, see
    /// docs/state.md).
    pub history: Vec<PaymentEvent>,
    /// Why the last command was refused (an authorize after a refund), if it was.
    pub rejection: Option<String>,
    pub version: u64,
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
