use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Amount, DeliveryStatus, Millis, PaymentStatus};
use crate::message_type;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: u64,
}

/// A line from `(product id, quantity)`, as tests and tools write them.
impl From<(&str, u64)> for OrderLine {
    fn from((product_id, quantity): (&str, u64)) -> OrderLine {
        OrderLine {
            product_id: product_id.to_string(),
            quantity,
        }
    }
}

/// Where an order goes: given when it is placed, carried to the delivery's shipments and their
/// e-mails. The rules of each field are the domain's (`pickple_domain::order::check_shipping`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ShippingAddress {
    /// Who receives the parcels: 1 to 50 characters on one line.
    pub recipient: String,
    /// 1 to 200 characters on one line.
    pub address: String,
    /// A phone number: 7 to 20 characters of digits, spaces, `+`, `-`, `(`, `)`, with 7 to 15
    /// digits.
    pub contact: String,
    /// A note for the courier: up to 200 characters on one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// A paid order's line as the delivery needs it: which vendor ships it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmedLine {
    pub product_id: String,
    pub quantity: u64,
    pub vendor_id: String,
}

/// Topic `order-commands`, key: order id. What users ask of an order, through the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum OrderCommand {
    PlaceOrder {
        order_id: String,
        username: String,
        email: String,
        lines: Vec<OrderLine>,
        /// Required by the gateway; absent only in records from before addresses existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping: Option<ShippingAddress>,
    },
    PayOrder {
        order_id: String,
        username: String,
        /// Opaque token of the payment method, handed to the payment provider.
        payment_token: String,
    },
    CancelOrder {
        order_id: String,
        /// Who asks: the order's owner, or a MASTER when `master` is set.
        username: String,
        reason: String,
        /// The requester is a MASTER, who may cancel any customer's order. The gateway sets it
        /// from the verified token; the domain still checks ownership for everyone else.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        master: bool,
    },
    /// A vendor cannot fill its lines of an unpaid order: the order is cancelled as a whole
    /// (every line released). Sent by the gateway for a manager of `vendor_id` or a MASTER,
    /// having checked that; the order processor checks that the order has a line of the vendor
    /// and is not paid (a paid order is cancelled by its buyer or a MASTER, through the
    /// delivery).
    VendorCancelOrder {
        order_id: String,
        vendor_id: String,
        /// Who asks (the vendor's manager or a MASTER), for the record.
        by: String,
        /// Why the vendor cannot fill the order, shown to the buyer.
        reason: String,
    },
}
message_type!(OrderCommand {
    PlaceOrder,
    PayOrder,
    CancelOrder,
    VendorCancelOrder
});

/// Topic `order-replies`, key: order id. What the stock, payment and delivery processors answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum OrderReply {
    StockReserved {
        order_id: String,
        product_id: String,
        quantity: u64,
        unit_price: Amount,
        vendor_id: String,
    },
    StockRejected {
        order_id: String,
        product_id: String,
        reason: String,
    },
    PaymentAuthorized {
        order_id: String,
        payment_id: String,
        amount: Amount,
    },
    PaymentDeclined {
        order_id: String,
        reason: String,
    },
    PaymentRefunded {
        order_id: String,
        amount: Amount,
    },
    DeliveryStarted {
        order_id: String,
    },
    DeliveryCompleted {
        order_id: String,
    },
    /// The delivery processor cancelled the still pending delivery of an order whose cancel
    /// was requested: the saga may now refund and restock.
    DeliveryCancelled {
        order_id: String,
    },
    /// The delivery had already started when the cancel request reached the delivery
    /// processor: the goods stay on their way and the order is not cancelled.
    DeliveryCancelRefused {
        order_id: String,
        reason: String,
    },
}
message_type!(OrderReply {
    StockReserved,
    StockRejected,
    PaymentAuthorized,
    PaymentDeclined,
    PaymentRefunded,
    DeliveryStarted,
    DeliveryCompleted,
    DeliveryCancelled,
    DeliveryCancelRefused
});

impl OrderReply {
    pub fn order_id(&self) -> &str {
        match self {
            OrderReply::StockReserved { order_id, .. }
            | OrderReply::StockRejected { order_id, .. }
            | OrderReply::PaymentAuthorized { order_id, .. }
            | OrderReply::PaymentDeclined { order_id, .. }
            | OrderReply::PaymentRefunded { order_id, .. }
            | OrderReply::DeliveryStarted { order_id }
            | OrderReply::DeliveryCompleted { order_id }
            | OrderReply::DeliveryCancelled { order_id }
            | OrderReply::DeliveryCancelRefused { order_id, .. } => order_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Waiting for every line's stock reservation.
    Pending,
    /// Stock held; payment due before the deadline.
    AwaitingPayment,
    /// Payment sent to the provider.
    PaymentPending,
    Paid,
    Shipping,
    Completed,
    Cancelled,
}

impl OrderStatus {
    /// Every status, in the saga's order.
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Pending,
        OrderStatus::AwaitingPayment,
        OrderStatus::PaymentPending,
        OrderStatus::Paid,
        OrderStatus::Shipping,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
    ];

    /// The status as it is spelt on the wire (`AWAITING_PAYMENT`), e.g. in an index key.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::AwaitingPayment => "AWAITING_PAYMENT",
            OrderStatus::PaymentPending => "PAYMENT_PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Shipping => "SHIPPING",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// The status of its wire name (`None` for any other text).
    pub fn parse(s: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }
}

/// Topic `order-events`, key: order id. The saga's facts, consumed by delivery and notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum OrderEvent {
    OrderConfirmed {
        order_id: String,
        username: String,
        email: String,
        amount: Amount,
        vendor_ids: Vec<String>,
        /// The reserved lines with their vendors: the delivery makes one shipment per vendor
        /// from them. Empty in records from before shipments (one shipment per vendor id,
        /// without lines, then).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lines: Vec<ConfirmedLine>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping: Option<ShippingAddress>,
    },
    OrderCancelled {
        order_id: String,
        username: String,
        reason: String,
    },
    OrderCompleted {
        order_id: String,
        username: String,
        email: String,
    },
    /// The customer asked to cancel a paid order. The delivery processor alone knows whether
    /// the delivery has started, so it decides and answers with `DeliveryCancelled` or
    /// `DeliveryCancelRefused`; the order is not cancelled (nor refunded) until then. On this
    /// topic rather than `delivery-commands` so that it follows the order's `OrderConfirmed`
    /// on the same partition: the delivery always exists when the request arrives.
    OrderCancelRequested {
        order_id: String,
        username: String,
        reason: String,
    },
}
message_type!(OrderEvent {
    OrderConfirmed,
    OrderCancelled,
    OrderCompleted,
    OrderCancelRequested
});

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLineView {
    pub product_id: String,
    pub quantity: u64,
    pub unit_price: Option<Amount>,
    pub vendor_id: Option<String>,
    pub reserved: bool,
}

/// One step of an order's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Transition {
    pub status: OrderStatus,
    pub at: Millis,
    pub reason: String,
}

/// Topic `view-orders`, key: order id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderView {
    pub order_id: String,
    pub username: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLineView>,
    pub amount: Amount,
    pub payment_deadline: Option<Millis>,
    pub payment_status: Option<PaymentStatus>,
    /// The delivery's progress once its first shipment has started (IN_TRANSIT), then once the
    /// last one arrived (DELIVERED).
    pub delivery_status: Option<DeliveryStatus>,
    pub vendor_ids: Vec<String>,
    /// Where the order goes (absent on orders placed before addresses existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<ShippingAddress>,
    pub history: Vec<Transition>,
    /// The customer's reason while a cancel of the paid order waits for the delivery's answer
    /// (granted: the order becomes CANCELLED; refused, as the delivery started: it goes on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// Why the last command on this order was refused, if it was (the order itself is unchanged).
    pub rejection: Option<String>,
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_spelt_as_serde_writes_it() {
        for status in OrderStatus::ALL {
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire, serde_json::json!(status.as_str()));
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::parse("pending"), None);
        assert_eq!(OrderStatus::parse("SHIPPED"), None);
    }
}
