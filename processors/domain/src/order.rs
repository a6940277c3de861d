//! The order saga, keyed by order id: the order processor orchestrates stock, payment and
//! delivery through commands and their replies, all keyed so that one task owns an order's whole
//! history.
//!
//! [`Order`]'s `decide` returns the facts, `apply` folds them into the [`OrderState`] the app
//! stores, and `effects` derives the records to send from each fact and the states around it.
//!
//! Why releasing every line on a cancel is safe even for lines whose reply has not come yet:
//! the Reserve and the Release of a line are both produced by this processor, in that order, to
//! the same product-keyed partition of `stock-commands`. The stock processor therefore sees the
//! Reserve before the Release, so the Release undoes it; and a Release for a Reserve that was
//! rejected, or for nothing, is a no-op there.

use pickple_schemas::{
    Amount, ConfirmedLine, DeliveryStatus, Millis, OrderCommand, OrderEvent, OrderLine,
    OrderLineView, OrderReply, OrderStatus, OrderView, PaymentCommand, PaymentStatus,
    ShippingAddress, StockCommand, Transition,
};
use serde::{Deserialize, Serialize};

pub use crate::rules::check_payment_token;
use crate::rules::positive;
use crate::{is_false, qty_i64, Aggregate, Rejection, ViewMeta};

/// Everything the saga reacts to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderInput {
    Command(OrderCommand),
    Reply(OrderReply),
    /// The payment deadline timer fired. Stale timers are harmless: decide re-checks the clock.
    DeadlinePassed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    pub order_id: String,
    pub username: String,
    pub email: String,
    pub placed_at: Millis,
    pub lines: Vec<LineState>,
    pub status: OrderStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    #[serde(default)]
    pub payment: PaymentState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_cause: Option<CancelCause>,
    /// The customer's reason, while the delivery processor decides a cancel of the paid order
    /// (see [`OrderFact::CancelRequested`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// Where the order goes; absent on orders placed before addresses existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<ShippingAddress>,
    pub history: Vec<Transition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineState {
    pub product_id: String,
    pub quantity: u64,
    /// Set by the stock processor's StockReserved: the price the line was reserved at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
}

impl LineState {
    pub fn reserved(&self) -> bool {
        self.unit_price.is_some()
    }
}

/// What the saga knows of the money. The payment token is never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// The provider's id of the authorization, once one came back (in time or late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_amount: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub refund_requested: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub refunded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelCause {
    StockRejected,
    Deadline,
    Customer,
    /// A vendor could not fill its lines of the unpaid order ([`OrderCommand::VendorCancelOrder`]).
    Vendor,
}

/// What happened to an order: the saga's own facts, not the public `OrderEvent`s (those are
/// effects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderFact {
    Placed {
        order_id: String,
        username: String,
        email: String,
        lines: Vec<OrderLine>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shipping: Option<ShippingAddress>,
        at: Millis,
    },
    LineReserved {
        product_id: String,
        unit_price: Amount,
        vendor_id: String,
    },
    /// Every line is reserved: the customer may pay until `deadline`.
    PaymentDue {
        deadline: Millis,
        at: Millis,
    },
    /// Carries the token only so the effects can hand it to the payment processor; the state
    /// never keeps it.
    PaymentRequested {
        payment_token: String,
        at: Millis,
    },
    PaymentDeclined {
        reason: String,
        at: Millis,
    },
    Paid {
        payment_id: String,
        amount: Amount,
        at: Millis,
    },
    ShippingStarted {
        at: Millis,
    },
    Completed {
        at: Millis,
    },
    Cancelled {
        cause: CancelCause,
        reason: String,
        at: Millis,
    },
    /// A StockReserved came after the cancel: record it so a duplicate is recognised.
    LateReservationReleased {
        product_id: String,
        unit_price: Amount,
        vendor_id: String,
    },
    /// The provider authorized after the order was cancelled: the money goes back.
    LateApprovalRefunded {
        payment_id: String,
        amount: Amount,
    },
    Refunded {
        amount: Amount,
    },
    /// The customer cancels a paid order. Only the delivery processor knows whether the
    /// delivery has started (the DeliveryStarted reply may still be on its way here), so the
    /// order asks it and stays PAID; the refund waits for its DeliveryCancelled.
    CancelRequested {
        reason: String,
        at: Millis,
    },
    /// The delivery had started before the cancel request reached it: the order goes on.
    CancelRefused {
        reason: String,
        at: Millis,
    },
}

/// A record to send because of a fact. The app layer keys stock effects by product id and the
/// rest by order id (see [`OrderEffect::stock_command`] and [`OrderEffect::payment_command`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEffect {
    ReserveStock {
        product_id: String,
        quantity: u64,
        username: String,
        placed_at: Millis,
    },
    ReleaseStock {
        product_id: String,
    },
    CommitStock {
        product_id: String,
    },
    RestockStock {
        product_id: String,
    },
    Authorize {
        amount: Amount,
        payment_token: String,
        /// The buyer, for the payment's view.
        username: String,
    },
    Refund {
        reason: String,
    },
    Publish(OrderEvent),
    /// Arm the order's payment timer; when it fires, feed [`OrderInput::DeadlinePassed`].
    ScheduleDeadline {
        at: Millis,
    },
    /// Disarm the timer armed for `at` (the app keys its timers by due time).
    CancelDeadline {
        at: Millis,
    },
}

impl OrderEffect {
    pub fn stock_command(&self, order_id: &str) -> Option<StockCommand> {
        let order_id = order_id.to_string();
        Some(match self {
            OrderEffect::ReserveStock {
                product_id,
                quantity,
                username,
                placed_at,
            } => StockCommand::Reserve {
                product_id: product_id.clone(),
                order_id,
                username: username.clone(),
                quantity: *quantity,
                placed_at: *placed_at,
            },
            OrderEffect::ReleaseStock { product_id } => StockCommand::Release {
                product_id: product_id.clone(),
                order_id,
            },
            OrderEffect::CommitStock { product_id } => StockCommand::Commit {
                product_id: product_id.clone(),
                order_id,
            },
            OrderEffect::RestockStock { product_id } => StockCommand::Restock {
                product_id: product_id.clone(),
                order_id,
            },
            _ => return None,
        })
    }

    pub fn payment_command(&self, order_id: &str) -> Option<PaymentCommand> {
        match self {
            OrderEffect::Authorize {
                amount,
                payment_token,
                username,
            } => Some(PaymentCommand::Authorize {
                order_id: order_id.to_string(),
                amount: *amount,
                payment_token: payment_token.clone(),
                username: username.clone(),
            }),
            OrderEffect::Refund { reason } => Some(PaymentCommand::Refund {
                order_id: order_id.to_string(),
                reason: reason.clone(),
            }),
            _ => None,
        }
    }
}

/// The most lines an order may have. The gateway refuses more through [`check_line_count`];
/// the domain refuses them too, so the order's
/// `lines`, the stock commands of a placement and the delivery's vendors stay bounded whoever
/// sends the command.
pub const MAX_LINES: usize = 50;

/// The most transitions an order's `history` keeps: the first ("order placed") and the latest
/// `MAX_HISTORY - 1`. An order makes at most eight without retries (placed, stock reserved,
/// payment requested, paid, cancellation requested and refused, delivery started and
/// completed); payment retries make two each (requested, declined), as often as the customer
/// tries before the deadline, and those are what gets dropped, from the middle, oldest first.
/// Refusing a retry instead would cost a sale to bound a list only the view reads.
pub const MAX_HISTORY: usize = 32;

pub const DEADLINE_REASON: &str = "payment deadline passed";
pub const LATE_APPROVAL_REASON: &str = "approved after expiry";

/// The saga's rules, with the time a customer has to pay once the stock is reserved.
#[derive(Debug, Clone, Copy)]
pub struct Order {
    pub payment_timeout_ms: Millis,
}

impl Aggregate for Order {
    type State = Option<OrderState>;
    type Input = OrderInput;
    type Fact = OrderFact;
    type Effect = OrderEffect;

    /// Replies that repeat or arrive too late are no-ops (`Ok(vec![])`), never rejections.
    fn decide(
        &self,
        state: &Option<OrderState>,
        input: &OrderInput,
        now: Millis,
    ) -> Result<Vec<OrderFact>, Rejection> {
        use OrderStatus::*;
        let state = state.as_ref();
        match input {
            OrderInput::Command(OrderCommand::PlaceOrder {
                order_id,
                username,
                email,
                lines,
                shipping,
            }) => {
                if let Some(o) = state {
                    let same = o.username == *username
                        && o.shipping == *shipping
                        && o.lines.len() == lines.len()
                        && o.lines
                            .iter()
                            .zip(lines)
                            .all(|(a, b)| a.product_id == b.product_id && a.quantity == b.quantity);
                    return if same {
                        Ok(vec![])
                    } else {
                        Err(Rejection::conflict(format!(
                            "order {order_id} already exists"
                        )))
                    };
                }
                validate_lines(order_id, username, lines)?;
                // Optional only for records placed before addresses existed: the gateway
                // requires one.
                if let Some(shipping) = shipping {
                    crate::shipping::check_shipping(shipping)?;
                }
                Ok(vec![OrderFact::Placed {
                    order_id: order_id.clone(),
                    username: username.clone(),
                    email: email.clone(),
                    lines: lines.clone(),
                    shipping: shipping.clone(),
                    at: now,
                }])
            }
            OrderInput::Command(OrderCommand::PayOrder {
                username,
                payment_token,
                ..
            }) => {
                let o = owned(state, username)?;
                match o.status {
                    AwaitingPayment => {
                        if o.deadline.is_some_and(|d| now >= d) {
                            return Err(Rejection::transition(DEADLINE_REASON));
                        }
                        check_payment_token(payment_token)?;
                        Ok(vec![OrderFact::PaymentRequested {
                            payment_token: payment_token.clone(),
                            at: now,
                        }])
                    }
                    // A double click: the first payment is on its way.
                    PaymentPending => Ok(vec![]),
                    Pending => Err(Rejection::transition("the stock is not reserved yet")),
                    Paid | Shipping | Completed => Err(Rejection::transition("the order is paid")),
                    Cancelled => Err(Rejection::transition("the order is cancelled")),
                }
            }
            OrderInput::Command(OrderCommand::CancelOrder {
                username,
                reason,
                master,
                ..
            }) => {
                // A MASTER may cancel any customer's order.
                let o = if *master {
                    existing(state)?
                } else {
                    owned(state, username)?
                };
                let reason = if reason.trim().is_empty() {
                    "cancelled by the customer".to_string()
                } else {
                    reason.clone()
                };
                match o.status {
                    Pending | AwaitingPayment | PaymentPending => Ok(vec![OrderFact::Cancelled {
                        cause: CancelCause::Customer,
                        reason,
                        at: now,
                    }]),
                    // A paid order has a delivery (made from its OrderConfirmed): the delivery
                    // processor decides. A second cancel while it does is a double click.
                    Paid if o.cancel_requested.is_some() => Ok(vec![]),
                    Paid => Ok(vec![OrderFact::CancelRequested { reason, at: now }]),
                    Cancelled => Ok(vec![]),
                    Shipping | Completed => Err(Rejection::transition(
                        "the order has shipped and can no longer be cancelled",
                    )),
                }
            }
            OrderInput::Command(OrderCommand::VendorCancelOrder {
                vendor_id, reason, ..
            }) => {
                let o = existing(state)?;
                // The gateway checked that the requester manages the vendor; only this state
                // knows the order's lines (a vendor is known once its line is reserved).
                if !o
                    .lines
                    .iter()
                    .any(|l| l.vendor_id.as_ref() == Some(vendor_id))
                {
                    return Err(Rejection::forbidden(format!(
                        "the order has no line of vendor {vendor_id}"
                    )));
                }
                check_vendor_cancel_reason(reason)?;
                match o.status {
                    // PAYMENT_PENDING too: the vendor cannot fill the line whatever the
                    // provider answers, and an authorization that comes after the cancel is
                    // refunded (LateApprovalRefunded), as after the customer's own cancel.
                    Pending | AwaitingPayment | PaymentPending => Ok(vec![OrderFact::Cancelled {
                        cause: CancelCause::Vendor,
                        reason: vendor_cancel_reason(vendor_id, reason),
                        at: now,
                    }]),
                    // A repeat, or a cancel that came first: nothing more to release.
                    Cancelled => Ok(vec![]),
                    // Money has moved: a refund and a restock need the delivery processor's
                    // word, which the buyer's or a MASTER's cancel asks for.
                    Paid | Shipping | Completed => Err(Rejection::transition(
                        "the order is paid: only its buyer or a MASTER can cancel it now",
                    )),
                }
            }
            OrderInput::Reply(reply) => {
                let o = existing(state)?;
                decide_reply(o, reply, now, self.payment_timeout_ms)
            }
            OrderInput::DeadlinePassed => match state {
                Some(o)
                    if matches!(o.status, AwaitingPayment | PaymentPending)
                        && o.deadline.is_some_and(|d| now >= d) =>
                {
                    Ok(vec![OrderFact::Cancelled {
                        cause: CancelCause::Deadline,
                        reason: DEADLINE_REASON.into(),
                        at: now,
                    }])
                }
                _ => Ok(vec![]),
            },
        }
    }

    /// Only `Placed` makes an order out of nothing.
    fn apply(state: Option<OrderState>, fact: &OrderFact) -> Option<OrderState> {
        if let OrderFact::Placed {
            order_id,
            username,
            email,
            lines,
            shipping,
            at,
        } = fact
        {
            return Some(OrderState {
                order_id: order_id.clone(),
                username: username.clone(),
                email: email.clone(),
                placed_at: *at,
                lines: lines
                    .iter()
                    .map(|l| LineState {
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        unit_price: None,
                        vendor_id: None,
                    })
                    .collect(),
                status: OrderStatus::Pending,
                deadline: None,
                payment: PaymentState::default(),
                cancel_cause: None,
                cancel_requested: None,
                shipping: shipping.clone(),
                history: vec![Transition {
                    status: OrderStatus::Pending,
                    at: *at,
                    reason: "order placed".into(),
                }],
            });
        }
        let mut o = state?;
        o.apply(fact);
        Some(o)
    }

    fn effects(
        before: &Option<OrderState>,
        fact: &OrderFact,
        after: &Option<OrderState>,
    ) -> Vec<OrderEffect> {
        let Some(after) = after else {
            return Vec::new();
        };
        // The payment timer armed before the fact, which a payment or a cancel disarms.
        let armed = before.as_ref().and_then(|b| b.deadline);
        let each_line = |make: fn(String) -> OrderEffect| -> Vec<OrderEffect> {
            after
                .lines
                .iter()
                .map(|l| make(l.product_id.clone()))
                .collect()
        };
        match fact {
            OrderFact::Placed { username, at, .. } => after
                .lines
                .iter()
                .map(|l| OrderEffect::ReserveStock {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    username: username.clone(),
                    placed_at: *at,
                })
                .collect(),
            OrderFact::PaymentDue { deadline, .. } => {
                vec![OrderEffect::ScheduleDeadline { at: *deadline }]
            }
            OrderFact::PaymentRequested { payment_token, .. } => vec![OrderEffect::Authorize {
                amount: after.amount(),
                payment_token: payment_token.clone(),
                username: after.username.clone(),
            }],
            OrderFact::Paid { .. } => {
                let mut out = each_line(|product_id| OrderEffect::CommitStock { product_id });
                out.push(OrderEffect::Publish(OrderEvent::OrderConfirmed {
                    order_id: after.order_id.clone(),
                    username: after.username.clone(),
                    email: after.email.clone(),
                    amount: after.amount(),
                    vendor_ids: after.vendor_ids(),
                    lines: after.confirmed_lines(),
                    shipping: after.shipping.clone(),
                }));
                out.extend(armed.map(|at| OrderEffect::CancelDeadline { at }));
                out
            }
            OrderFact::Completed { .. } => vec![OrderEffect::Publish(OrderEvent::OrderCompleted {
                order_id: after.order_id.clone(),
                username: after.username.clone(),
                email: after.email.clone(),
            })],
            OrderFact::Cancelled { cause, reason, .. } => {
                let was_paid = before
                    .as_ref()
                    .is_some_and(|b| b.status == OrderStatus::Paid);
                let mut out = if was_paid {
                    let mut out = vec![OrderEffect::Refund {
                        reason: format!("order cancelled: {reason}"),
                    }];
                    out.extend(each_line(|product_id| OrderEffect::RestockStock {
                        product_id,
                    }));
                    out
                } else {
                    each_line(|product_id| OrderEffect::ReleaseStock { product_id })
                };
                // A fired timer needs no cancelling; one still armed would fire on a final order.
                if *cause != CancelCause::Deadline {
                    out.extend(armed.map(|at| OrderEffect::CancelDeadline { at }));
                }
                out.push(OrderEffect::Publish(OrderEvent::OrderCancelled {
                    order_id: after.order_id.clone(),
                    username: after.username.clone(),
                    reason: reason.clone(),
                }));
                out
            }
            OrderFact::CancelRequested { reason, .. } => {
                vec![OrderEffect::Publish(OrderEvent::OrderCancelRequested {
                    order_id: after.order_id.clone(),
                    username: after.username.clone(),
                    reason: reason.clone(),
                })]
            }
            OrderFact::LateReservationReleased { product_id, .. } => {
                vec![OrderEffect::ReleaseStock {
                    product_id: product_id.clone(),
                }]
            }
            OrderFact::LateApprovalRefunded { .. } => vec![OrderEffect::Refund {
                reason: match after.cancel_cause {
                    Some(CancelCause::Deadline) => LATE_APPROVAL_REASON.into(),
                    Some(_) => "approved after cancellation".into(),
                    None => "approved while the order was not awaiting payment".into(),
                },
            }],
            OrderFact::LineReserved { .. }
            | OrderFact::PaymentDeclined { .. }
            | OrderFact::ShippingStarted { .. }
            | OrderFact::CancelRefused { .. }
            | OrderFact::Refunded { .. } => vec![],
        }
    }
}

fn decide_reply(
    o: &OrderState,
    reply: &OrderReply,
    now: Millis,
    payment_timeout_ms: Millis,
) -> Result<Vec<OrderFact>, Rejection> {
    use OrderStatus::*;
    let facts = match reply {
        OrderReply::StockReserved {
            product_id,
            unit_price,
            vendor_id,
            ..
        } => {
            let line = o
                .line(product_id)
                .ok_or_else(|| Rejection::invalid(format!("the order has no line {product_id}")))?;
            match o.status {
                Pending if !line.reserved() => {
                    let mut facts = vec![OrderFact::LineReserved {
                        product_id: product_id.clone(),
                        unit_price: *unit_price,
                        vendor_id: vendor_id.clone(),
                    }];
                    let rest_reserved = o
                        .lines
                        .iter()
                        .all(|l| l.reserved() || l.product_id == *product_id);
                    if rest_reserved {
                        facts.push(OrderFact::PaymentDue {
                            deadline: now.saturating_add(payment_timeout_ms),
                            at: now,
                        });
                    }
                    facts
                }
                Cancelled if !line.reserved() => vec![OrderFact::LateReservationReleased {
                    product_id: product_id.clone(),
                    unit_price: *unit_price,
                    vendor_id: vendor_id.clone(),
                }],
                _ => vec![],
            }
        }
        OrderReply::StockRejected {
            product_id, reason, ..
        } => match o.status {
            Pending => vec![OrderFact::Cancelled {
                cause: CancelCause::StockRejected,
                reason: format!("{product_id}: {reason}"),
                at: now,
            }],
            _ => vec![],
        },
        OrderReply::PaymentAuthorized {
            payment_id, amount, ..
        } => match o.status {
            // A known payment id is a duplicate of an authorization already handled (and, if
            // it came while the order could not take it, already refunded).
            AwaitingPayment | PaymentPending if o.payment.payment_id.is_none() => {
                vec![OrderFact::Paid {
                    payment_id: payment_id.clone(),
                    amount: *amount,
                    at: now,
                }]
            }
            // Money for an order that cannot take it: give it back, once.
            Cancelled | Pending if o.payment.payment_id.is_none() => {
                vec![OrderFact::LateApprovalRefunded {
                    payment_id: payment_id.clone(),
                    amount: *amount,
                }]
            }
            _ => vec![],
        },
        OrderReply::PaymentDeclined { reason, .. } => match o.status {
            PaymentPending => vec![OrderFact::PaymentDeclined {
                reason: reason.clone(),
                at: now,
            }],
            _ => vec![],
        },
        OrderReply::PaymentRefunded { amount, .. } => {
            if o.payment.refund_requested && !o.payment.refunded {
                vec![OrderFact::Refunded { amount: *amount }]
            } else {
                vec![]
            }
        }
        // Also while a cancel is requested: the start won, the refusal follows.
        OrderReply::DeliveryStarted { .. } => match o.status {
            Paid => vec![OrderFact::ShippingStarted { at: now }],
            _ => vec![],
        },
        // The delivery processor cancelled the pending delivery: refund and restock, as a
        // cancel of a paid order always did. Without a request (a duplicate, or the reply to
        // the delivery's cancel on our own OrderCancelled) there is nothing to do.
        OrderReply::DeliveryCancelled { .. } => match (&o.status, &o.cancel_requested) {
            (Paid, Some(reason)) => vec![OrderFact::Cancelled {
                cause: CancelCause::Customer,
                reason: reason.clone(),
                at: now,
            }],
            _ => vec![],
        },
        // Whatever the status by now (the DeliveryStarted reply may have come first), record
        // why the cancel did not happen, once.
        OrderReply::DeliveryCancelRefused { reason, .. } => match o.cancel_requested {
            Some(_) => vec![OrderFact::CancelRefused {
                reason: reason.clone(),
                at: now,
            }],
            None => vec![],
        },
        // From Paid too: if the delivery skipped its start, the goods still arrived.
        OrderReply::DeliveryCompleted { .. } => match o.status {
            Paid | Shipping => vec![OrderFact::Completed { at: now }],
            _ => vec![],
        },
    };
    Ok(facts)
}

fn existing(state: Option<&OrderState>) -> Result<&OrderState, Rejection> {
    state.ok_or_else(|| Rejection::not_found("no such order"))
}

fn owned<'a>(state: Option<&'a OrderState>, username: &str) -> Result<&'a OrderState, Rejection> {
    let o = existing(state)?;
    if o.username != username {
        return Err(Rejection::forbidden("the order belongs to another user"));
    }
    Ok(o)
}

/// The shape of a new order's lines (the gateway checks the same rules, field by field, with
/// the functions below, so a request it accepts is never refused here for its shape).
pub fn validate_lines(
    order_id: &str,
    username: &str,
    lines: &[OrderLine],
) -> Result<(), Rejection> {
    if order_id.trim().is_empty() || username.trim().is_empty() {
        return Err(Rejection::invalid("order id and username are required"));
    }
    check_has_lines(lines)?;
    check_line_count(lines)?;
    for (i, line) in lines.iter().enumerate() {
        check_line_product(&line.product_id)?;
        check_line_quantity(&line.product_id, line.quantity)?;
        check_line_unique(lines, i)?;
    }
    Ok(())
}

/// The most characters of a vendor's reason for cancelling an order.
pub const MAX_CANCEL_REASON: usize = 500;

/// A vendor's reason for cancelling an order: the buyer reads it, so it says something (not
/// blank), fits in [`MAX_CANCEL_REASON`] characters and shows as it is written
/// ([`crate::rules::visible_text`], several lines allowed).
pub fn check_vendor_cancel_reason(reason: &str) -> Result<(), Rejection> {
    crate::rules::non_empty("reason", reason)?;
    if reason.chars().count() > MAX_CANCEL_REASON {
        return Err(Rejection::invalid(format!(
            "reason has at most {MAX_CANCEL_REASON} characters"
        )));
    }
    crate::rules::visible_text("reason", reason, true)
}

/// The reason an order cancelled by a vendor shows in its history and its `OrderCancelled`.
pub fn vendor_cancel_reason(vendor_id: &str, reason: &str) -> String {
    format!("cancelled by vendor {vendor_id}: {}", reason.trim())
}

/// An order status named in a request (`?status=`), spelt as on the wire.
pub fn parse_status(value: &str) -> Result<OrderStatus, Rejection> {
    OrderStatus::parse(value).ok_or_else(|| {
        let names: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
        Rejection::invalid(format!(
            "status must be one of {}, not {value:?}",
            names.join(", ")
        ))
    })
}

/// An order has at least one line.
pub fn check_has_lines(lines: &[OrderLine]) -> Result<(), Rejection> {
    if lines.is_empty() {
        return Err(Rejection::invalid("an order needs at least one line"));
    }
    Ok(())
}

/// An order has at most [`MAX_LINES`] lines.
pub fn check_line_count(lines: &[OrderLine]) -> Result<(), Rejection> {
    if lines.len() > MAX_LINES {
        return Err(Rejection::invalid(format!(
            "an order has at most {MAX_LINES} lines, not {}",
            lines.len()
        )));
    }
    Ok(())
}

/// Every line names a product.
pub fn check_line_product(product_id: &str) -> Result<(), Rejection> {
    if product_id.trim().is_empty() {
        return Err(Rejection::invalid("every line needs a product"));
    }
    Ok(())
}

/// Every line orders at least one unit.
pub fn check_line_quantity(product_id: &str, quantity: u64) -> Result<(), Rejection> {
    positive(&format!("quantity of {product_id}"), quantity)
}

/// One line per product: stock reservations are idempotent by (order, product), so a second
/// line for the same product would silently never be reserved. Checks line `i` against the
/// lines before it.
pub fn check_line_unique(lines: &[OrderLine], i: usize) -> Result<(), Rejection> {
    let Some(line) = lines.get(i) else {
        return Ok(());
    };
    if lines[..i].iter().any(|l| l.product_id == line.product_id) {
        return Err(Rejection::invalid(format!(
            "product {} appears on two lines",
            line.product_id
        )));
    }
    Ok(())
}

impl OrderState {
    fn apply(&mut self, fact: &OrderFact) {
        match fact {
            OrderFact::Placed { .. } => {}
            OrderFact::LineReserved {
                product_id,
                unit_price,
                vendor_id,
            }
            | OrderFact::LateReservationReleased {
                product_id,
                unit_price,
                vendor_id,
            } => {
                if let Some(line) = self.lines.iter_mut().find(|l| l.product_id == *product_id) {
                    line.unit_price = Some(*unit_price);
                    line.vendor_id = Some(vendor_id.clone());
                }
            }
            OrderFact::PaymentDue { deadline, at } => {
                self.deadline = Some(*deadline);
                self.go(OrderStatus::AwaitingPayment, *at, "stock reserved".into());
            }
            OrderFact::PaymentRequested { at, .. } => {
                self.payment.declined = None;
                self.go(OrderStatus::PaymentPending, *at, "payment requested".into());
            }
            OrderFact::PaymentDeclined { reason, at } => {
                self.payment.declined = Some(reason.clone());
                self.go(
                    OrderStatus::AwaitingPayment,
                    *at,
                    format!("payment declined: {reason}"),
                );
            }
            OrderFact::Paid {
                payment_id,
                amount,
                at,
            } => {
                self.payment.payment_id = Some(payment_id.clone());
                self.payment.authorized_amount = Some(*amount);
                self.deadline = None;
                self.go(OrderStatus::Paid, *at, "payment authorized".into());
            }
            OrderFact::ShippingStarted { at } => {
                self.go(OrderStatus::Shipping, *at, "delivery started".into())
            }
            OrderFact::Completed { at } => {
                self.go(OrderStatus::Completed, *at, "delivery completed".into())
            }
            OrderFact::Cancelled { cause, reason, at } => {
                if self.status == OrderStatus::Paid {
                    self.payment.refund_requested = true;
                }
                self.cancel_cause = Some(*cause);
                self.cancel_requested = None;
                self.deadline = None;
                self.go(OrderStatus::Cancelled, *at, reason.clone());
            }
            OrderFact::CancelRequested { reason, at } => {
                self.cancel_requested = Some(reason.clone());
                self.go(
                    self.status,
                    *at,
                    format!("cancellation requested: {reason}"),
                );
            }
            OrderFact::CancelRefused { reason, at } => {
                self.cancel_requested = None;
                self.go(self.status, *at, format!("cancellation refused: {reason}"));
            }
            OrderFact::LateApprovalRefunded { payment_id, amount } => {
                self.payment.payment_id = Some(payment_id.clone());
                self.payment.authorized_amount = Some(*amount);
                self.payment.refund_requested = true;
            }
            OrderFact::Refunded { .. } => self.payment.refunded = true,
        }
    }

    /// Move to `status` and record the transition, keeping at most [`MAX_HISTORY`]: the first
    /// and the latest. (A history stored longer by an earlier version shrinks on its next
    /// transition.)
    fn go(&mut self, status: OrderStatus, at: Millis, reason: String) {
        self.status = status;
        self.history.push(Transition { status, at, reason });
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(1..=excess);
        }
    }

    pub fn line(&self, product_id: &str) -> Option<&LineState> {
        self.lines.iter().find(|l| l.product_id == product_id)
    }

    /// What the customer pays: the reserved lines at their reserved prices.
    pub fn amount(&self) -> Amount {
        self.lines
            .iter()
            .filter_map(|l| l.unit_price.map(|p| p.saturating_mul(qty_i64(l.quantity))))
            .fold(0, Amount::saturating_add)
    }

    /// Vendors of the reserved lines, in line order, without repeats.
    pub fn vendor_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for v in self.lines.iter().filter_map(|l| l.vendor_id.as_ref()) {
            if !ids.contains(v) {
                ids.push(v.clone());
            }
        }
        ids
    }

    /// The reserved lines with their vendors, for the delivery's shipments.
    pub fn confirmed_lines(&self) -> Vec<ConfirmedLine> {
        self.lines
            .iter()
            .filter_map(|l| {
                l.vendor_id.as_ref().map(|v| ConfirmedLine {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    vendor_id: v.clone(),
                })
            })
            .collect()
    }

    pub fn payment_status(&self) -> Option<PaymentStatus> {
        let p = &self.payment;
        Some(if p.refunded {
            PaymentStatus::Refunded
        } else if p.refund_requested {
            PaymentStatus::RefundRequested
        } else if p.payment_id.is_some() {
            PaymentStatus::Authorized
        } else if self.status == OrderStatus::PaymentPending {
            PaymentStatus::Requested
        } else if let Some(reason) = &p.declined {
            PaymentStatus::Declined {
                reason: reason.clone(),
            }
        } else {
            return None;
        })
    }

    /// What the order knows of its delivery: that it started, and that it ended.
    pub fn delivery_status(&self) -> Option<DeliveryStatus> {
        match self.status {
            OrderStatus::Shipping => Some(DeliveryStatus::InTransit),
            OrderStatus::Completed => Some(DeliveryStatus::Delivered),
            _ => None,
        }
    }

    pub fn to_view(&self, meta: &ViewMeta) -> OrderView {
        OrderView {
            order_id: self.order_id.clone(),
            username: self.username.clone(),
            status: self.status,
            lines: self
                .lines
                .iter()
                .map(|l| OrderLineView {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    vendor_id: l.vendor_id.clone(),
                    reserved: l.reserved(),
                })
                .collect(),
            amount: self.amount(),
            payment_deadline: self.deadline,
            payment_status: self.payment_status(),
            delivery_status: self.delivery_status(),
            vendor_ids: self.vendor_ids(),
            shipping: self.shipping.clone(),
            history: self.history.clone(),
            cancel_requested: self.cancel_requested.clone(),
            rejection: meta.rejection.clone(),
            version: meta.version,
        }
    }
}

/// What the manager of `vendors` may see of an order: those vendors' lines, and the amount of
/// those lines only. The other vendors' lines and the buyer's total stay with the buyer and
/// MASTER.
pub fn vendor_share(order: &OrderView, vendors: &[String]) -> OrderView {
    let lines: Vec<OrderLineView> = order
        .lines
        .iter()
        .filter(|l| l.vendor_id.as_ref().is_some_and(|v| vendors.contains(v)))
        .cloned()
        .collect();
    let amount = lines
        .iter()
        .map(|l| l.unit_price.unwrap_or(0) * qty_i64(l.quantity))
        .sum();
    OrderView {
        lines,
        amount,
        vendor_ids: order
            .vendor_ids
            .iter()
            .filter(|v| vendors.contains(v))
            .cloned()
            .collect(),
        ..order.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vendor_sees_its_own_lines_and_their_amount_only() {
        let line = |product: &str, vendor: &str, qty: u64, price: i64| OrderLineView {
            product_id: product.into(),
            quantity: qty,
            unit_price: Some(price),
            vendor_id: Some(vendor.into()),
            reserved: true,
        };
        let order = OrderView {
            order_id: "o1".into(),
            username: "ann1".into(),
            status: OrderStatus::Paid,
            lines: vec![line("p1", "v1", 2, 100), line("p2", "v2", 1, 999)],
            amount: 1199,
            payment_deadline: None,
            payment_status: None,
            delivery_status: None,
            vendor_ids: vec!["v1".into(), "v2".into()],
            shipping: None,
            history: vec![],
            cancel_requested: None,
            rejection: None,
            version: 3,
        };
        let share = vendor_share(&order, &["v1".to_string()]);
        assert_eq!(share.lines, vec![line("p1", "v1", 2, 100)]);
        assert_eq!(
            (share.amount, share.vendor_ids),
            (200, vec!["v1".to_string()])
        );
        assert_eq!((share.status, share.version), (OrderStatus::Paid, 3));
    }
    use OrderStatus::*;

    const TIMEOUT: Millis = 300_000;
    const ORDER: Order = Order {
        payment_timeout_ms: TIMEOUT,
    };
    const O: &str = "o1";

    fn address() -> ShippingAddress {
        ShippingAddress {
            recipient: "Ann".into(),
            address: "1 Main St".into(),
            contact: "010-1234-5678".into(),
            request: None,
        }
    }

    fn place(lines: &[(&str, u64)]) -> OrderInput {
        place_to(lines, Some(address()))
    }

    fn place_to(lines: &[(&str, u64)], shipping: Option<ShippingAddress>) -> OrderInput {
        OrderInput::Command(OrderCommand::PlaceOrder {
            order_id: O.into(),
            username: "ann".into(),
            email: "ann@x.io".into(),
            lines: lines.iter().map(|&l| OrderLine::from(l)).collect(),
            shipping,
        })
    }

    /// The address is checked with the domain's rules, kept on the order, shown on its view
    /// and handed to the delivery with the lines' vendors; an order placed before addresses
    /// (none) is still taken.
    #[test]
    fn the_address_travels_from_placement_to_the_confirmation() {
        let s = Saga::new();
        let mut bad = address();
        bad.contact = "call me".into();
        assert_eq!(s.reject(place_to(&[("p1", 1)], Some(bad))), "INVALID");
        let mut s = Saga::paid();
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.shipping, Some(address()));
        assert_eq!(o.to_view(&ViewMeta::default()).shipping, Some(address()));
        assert_eq!(
            o.confirmed_lines()
                .iter()
                .map(|l| l.vendor_id.as_str())
                .collect::<Vec<_>>(),
            ["v-p1", "v-p2"]
        );
        s.now += 1;
        let mut legacy = Saga::new();
        legacy.send(place_to(&[("p1", 1)], None));
        assert_eq!(legacy.state.as_ref().unwrap().shipping, None);
    }
    fn pay(user: &str) -> OrderInput {
        OrderInput::Command(OrderCommand::PayOrder {
            order_id: O.into(),
            username: user.into(),
            payment_token: "tok".into(),
        })
    }
    fn cancel(user: &str) -> OrderInput {
        OrderInput::Command(OrderCommand::CancelOrder {
            order_id: O.into(),
            username: user.into(),
            reason: "changed my mind".into(),
            master: false,
        })
    }
    fn reserved(product: &str, price: Amount) -> OrderInput {
        OrderInput::Reply(OrderReply::StockReserved {
            order_id: O.into(),
            product_id: product.into(),
            quantity: 1,
            unit_price: price,
            vendor_id: format!("v-{product}"),
        })
    }
    fn stock_rejected(product: &str) -> OrderInput {
        OrderInput::Reply(OrderReply::StockRejected {
            order_id: O.into(),
            product_id: product.into(),
            reason: "out of stock".into(),
        })
    }
    fn authorized() -> OrderInput {
        OrderInput::Reply(OrderReply::PaymentAuthorized {
            order_id: O.into(),
            payment_id: "pay-1".into(),
            amount: 700,
        })
    }
    fn declined() -> OrderInput {
        OrderInput::Reply(OrderReply::PaymentDeclined {
            order_id: O.into(),
            reason: "card expired".into(),
        })
    }
    fn refunded() -> OrderInput {
        OrderInput::Reply(OrderReply::PaymentRefunded {
            order_id: O.into(),
            amount: 700,
        })
    }
    fn delivery_started() -> OrderInput {
        OrderInput::Reply(OrderReply::DeliveryStarted { order_id: O.into() })
    }
    fn delivery_completed() -> OrderInput {
        OrderInput::Reply(OrderReply::DeliveryCompleted { order_id: O.into() })
    }
    fn view(o: &OrderState) -> OrderView {
        o.to_view(&ViewMeta {
            version: 1,
            updated_at: 0,
            rejection: None,
        })
    }

    fn delivery_cancelled() -> OrderInput {
        OrderInput::Reply(OrderReply::DeliveryCancelled { order_id: O.into() })
    }
    fn cancel_refused() -> OrderInput {
        OrderInput::Reply(OrderReply::DeliveryCancelRefused {
            order_id: O.into(),
            reason: "the delivery has already started".into(),
        })
    }

    struct Saga {
        state: Option<OrderState>,
        now: Millis,
    }

    impl Saga {
        fn new() -> Self {
            Saga {
                state: None,
                now: 1_000,
            }
        }
        fn send(&mut self, input: OrderInput) -> Vec<OrderEffect> {
            let out = ORDER.handle(self.state.take(), &input, self.now);
            if let Some(r) = out.rejection {
                panic!("{input:?} rejected: {r}");
            }
            self.state = out.state;
            out.effects
        }
        fn reject(&self, input: OrderInput) -> &'static str {
            ORDER
                .decide(&self.state, &input, self.now)
                .unwrap_err()
                .code()
        }
        fn noop(&mut self, input: OrderInput) {
            let before = self.state.clone();
            assert_eq!(self.send(input.clone()), vec![], "{input:?}");
            assert_eq!(self.state, before, "{input:?} changed the order");
        }
        fn status(&self) -> OrderStatus {
            self.state.as_ref().unwrap().status
        }
        /// Placed with two lines (p1 x2 at 100, p2 x1 at 500) and both reserved.
        fn awaiting() -> Self {
            let mut s = Saga::new();
            s.send(place(&[("p1", 2), ("p2", 1)]));
            s.send(reserved("p1", 100));
            s.send(reserved("p2", 500));
            assert_eq!(s.status(), AwaitingPayment);
            s
        }
        fn paid() -> Self {
            let mut s = Saga::awaiting();
            s.send(pay("ann"));
            s.send(authorized());
            assert_eq!(s.status(), Paid);
            s
        }
    }

    fn release(p: &str) -> OrderEffect {
        OrderEffect::ReleaseStock {
            product_id: p.into(),
        }
    }

    #[test]
    fn place_reserves_every_line() {
        let mut s = Saga::new();
        let out = s.send(place(&[("p1", 2), ("p2", 1)]));
        assert_eq!(
            out,
            vec![
                OrderEffect::ReserveStock {
                    product_id: "p1".into(),
                    quantity: 2,
                    username: "ann".into(),
                    placed_at: 1_000
                },
                OrderEffect::ReserveStock {
                    product_id: "p2".into(),
                    quantity: 1,
                    username: "ann".into(),
                    placed_at: 1_000
                },
            ]
        );
        assert_eq!(s.status(), Pending);
        // The same PlaceOrder again is a redelivery; another one under the same id a conflict.
        s.noop(place(&[("p1", 2), ("p2", 1)]));
        assert_eq!(s.reject(place(&[("p1", 3)])), "CONFLICT");
    }

    #[test]
    fn place_validates_lines() {
        let s = Saga::new();
        assert_eq!(s.reject(place(&[])), "INVALID");
        assert_eq!(s.reject(place(&[("p1", 0)])), "INVALID");
        assert_eq!(s.reject(place(&[("", 1)])), "INVALID");
        assert_eq!(s.reject(place(&[("p1", 1), ("p1", 2)])), "INVALID");
        let no_user = OrderInput::Command(OrderCommand::PlaceOrder {
            order_id: O.into(),
            username: "".into(),
            email: "".into(),
            lines: vec![OrderLine {
                product_id: "p1".into(),
                quantity: 1,
            }],
            shipping: None,
        });
        assert_eq!(s.reject(no_user), "INVALID");
    }

    #[test]
    fn place_refuses_more_than_max_lines() {
        let ids: Vec<String> = (0..=MAX_LINES).map(|i| format!("p{i}")).collect();
        let lines: Vec<(&str, u64)> = ids.iter().map(|p| (p.as_str(), 1)).collect();
        let s = Saga::new();
        assert_eq!(s.reject(place(&lines)), "INVALID");
        let too_many: Vec<OrderLine> = lines.iter().map(|&l| OrderLine::from(l)).collect();
        let r = check_line_count(&too_many).unwrap_err();
        assert!(r.to_string().contains("at most 50 lines"), "{r}");
        assert!(check_line_count(&too_many[..MAX_LINES]).is_ok());
        let mut s = Saga::new();
        let effects = s.send(place(&lines[..MAX_LINES]));
        assert_eq!(effects.len(), MAX_LINES, "one reservation per line");
    }

    #[test]
    fn the_history_keeps_the_first_and_the_latest_transitions() {
        let mut s = Saga::awaiting();
        for _ in 0..40 {
            s.now += 1;
            s.send(pay("ann"));
            s.now += 1;
            s.send(declined());
        }
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.history.len(), MAX_HISTORY);
        assert_eq!(o.history[0].reason, "order placed");
        assert_eq!(o.history[0].status, Pending);
        assert_eq!(
            o.history.last().unwrap().reason,
            "payment declined: card expired"
        );
        assert!(o.history.windows(2).all(|w| w[0].at <= w[1].at));
        // The retries dropped are the oldest: what is kept is the latest, in order.
        let last_at = o.history.last().unwrap().at;
        assert_eq!(o.history[1].at, last_at - (MAX_HISTORY as i64 - 2));
        s.send(pay("ann"));
        s.send(authorized());
        let o = s.state.as_ref().unwrap();
        assert_eq!((o.status, o.history.len()), (Paid, MAX_HISTORY));
        assert_eq!(o.history[0].reason, "order placed");
        assert_eq!(o.history.last().unwrap().status, Paid);

        // An order stored longer by an earlier version still decodes, and shrinks on its next
        // transition.
        let mut long = Saga::awaiting().state.unwrap();
        let first = long.history[0].clone();
        long.history = std::iter::once(first.clone())
            .chain((0..50).map(|i| Transition {
                status: AwaitingPayment,
                at: i,
                reason: format!("old {i}"),
            }))
            .collect();
        let json = serde_json::to_string(&long).unwrap();
        let mut s = Saga {
            state: Some(serde_json::from_str(&json).unwrap()),
            now: 1_000,
        };
        assert_eq!(s.state.as_ref().unwrap().history.len(), 51);
        s.send(pay("ann"));
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.history.len(), MAX_HISTORY);
        assert_eq!(o.history[0], first);
        assert_eq!(o.history[1].reason, "old 20");
        assert_eq!(o.history.last().unwrap().status, PaymentPending);
    }

    #[test]
    fn all_lines_reserved_awaits_payment_with_a_deadline() {
        let mut s = Saga::new();
        s.send(place(&[("p1", 2), ("p2", 1)]));
        s.now = 2_000;
        assert_eq!(s.send(reserved("p1", 100)), vec![]);
        assert_eq!(s.status(), Pending);
        s.noop(reserved("p1", 100));
        let out = s.send(reserved("p2", 500));
        assert_eq!(
            out,
            vec![OrderEffect::ScheduleDeadline {
                at: 2_000 + TIMEOUT
            }]
        );
        let o = s.state.as_ref().unwrap();
        assert_eq!(
            (o.status, o.deadline, o.amount()),
            (AwaitingPayment, Some(302_000), 700)
        );
        assert_eq!(o.vendor_ids(), vec!["v-p1", "v-p2"]);
        s.noop(reserved("p2", 500));
        assert_eq!(s.reject(reserved("p9", 1)), "INVALID");
    }

    #[test]
    fn a_stock_rejection_cancels_and_releases_every_line() {
        let mut s = Saga::new();
        s.send(place(&[("p1", 2), ("p2", 1)]));
        s.send(reserved("p1", 100));
        let out = s.send(stock_rejected("p2"));
        assert_eq!(
            out,
            vec![
                release("p1"),
                release("p2"),
                OrderEffect::Publish(OrderEvent::OrderCancelled {
                    order_id: O.into(),
                    username: "ann".into(),
                    reason: "p2: out of stock".into()
                })
            ]
        );
        assert_eq!(s.status(), Cancelled);
        assert_eq!(
            s.state.as_ref().unwrap().cancel_cause,
            Some(CancelCause::StockRejected)
        );
        s.noop(stock_rejected("p2"));
        s.noop(stock_rejected("p1"));
    }

    #[test]
    fn a_reservation_after_the_cancel_is_released_once() {
        let mut s = Saga::new();
        s.send(place(&[("p1", 2), ("p2", 1)]));
        s.send(stock_rejected("p1"));
        assert_eq!(s.send(reserved("p2", 500)), vec![release("p2")]);
        s.noop(reserved("p2", 500));
        assert_eq!(s.status(), Cancelled);
    }

    #[test]
    fn pay_authorize_confirm() {
        let mut s = Saga::awaiting();
        assert_eq!(s.reject(pay("bob")), "FORBIDDEN");
        let out = s.send(pay("ann"));
        assert_eq!(
            out,
            vec![OrderEffect::Authorize {
                amount: 700,
                payment_token: "tok".into(),
                username: "ann".into(),
            }]
        );
        assert_eq!(s.status(), PaymentPending);
        // Double click while the provider works.
        s.noop(pay("ann"));
        s.now += 10;
        let out = s.send(authorized());
        assert_eq!(
            out,
            vec![
                OrderEffect::CommitStock {
                    product_id: "p1".into()
                },
                OrderEffect::CommitStock {
                    product_id: "p2".into()
                },
                OrderEffect::Publish(OrderEvent::OrderConfirmed {
                    order_id: O.into(),
                    username: "ann".into(),
                    email: "ann@x.io".into(),
                    amount: 700,
                    vendor_ids: vec!["v-p1".into(), "v-p2".into()],
                    lines: vec![
                        ConfirmedLine {
                            product_id: "p1".into(),
                            quantity: 2,
                            vendor_id: "v-p1".into()
                        },
                        ConfirmedLine {
                            product_id: "p2".into(),
                            quantity: 1,
                            vendor_id: "v-p2".into()
                        }
                    ],
                    shipping: Some(address()),
                }),
                OrderEffect::CancelDeadline {
                    at: 1_000 + TIMEOUT
                },
            ]
        );
        let o = s.state.as_ref().unwrap();
        assert_eq!((o.status, o.deadline), (Paid, None));
        assert_eq!(o.payment_status(), Some(PaymentStatus::Authorized));
        s.noop(authorized());
        s.noop(declined());
        assert_eq!(s.reject(pay("ann")), "INVALID_TRANSITION");
    }

    #[test]
    fn pay_is_refused_when_not_payable() {
        let mut s = Saga::new();
        assert_eq!(s.reject(pay("ann")), "NOT_FOUND");
        s.send(place(&[("p1", 1)]));
        assert_eq!(s.reject(pay("ann")), "INVALID_TRANSITION");
        let mut s = Saga::awaiting();
        let empty_token = OrderInput::Command(OrderCommand::PayOrder {
            order_id: O.into(),
            username: "ann".into(),
            payment_token: " ".into(),
        });
        assert_eq!(s.reject(empty_token), "INVALID");
        s.now += TIMEOUT;
        assert_eq!(s.reject(pay("ann")), "INVALID_TRANSITION");
        s.send(OrderInput::DeadlinePassed);
        assert_eq!(s.reject(pay("ann")), "INVALID_TRANSITION");
    }

    #[test]
    fn a_decline_lets_the_customer_retry() {
        let mut s = Saga::awaiting();
        s.send(pay("ann"));
        assert_eq!(s.send(declined()), vec![]);
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.status, AwaitingPayment);
        assert_eq!(
            o.payment_status(),
            Some(PaymentStatus::Declined {
                reason: "card expired".into()
            })
        );
        assert_eq!(
            o.history.last().unwrap().reason,
            "payment declined: card expired"
        );
        s.noop(declined());
        s.send(pay("ann"));
        assert_eq!(
            s.state.as_ref().unwrap().payment_status(),
            Some(PaymentStatus::Requested)
        );
        s.send(authorized());
        assert_eq!(s.status(), Paid);
    }

    #[test]
    fn the_deadline_cancels_an_unpaid_order() {
        for paying in [false, true] {
            let mut s = Saga::awaiting();
            if paying {
                s.send(pay("ann"));
            }
            // A timer that fires early (clock skew, stale index) changes nothing.
            s.noop(OrderInput::DeadlinePassed);
            s.now += TIMEOUT;
            let out = s.send(OrderInput::DeadlinePassed);
            assert_eq!(
                out,
                vec![
                    release("p1"),
                    release("p2"),
                    OrderEffect::Publish(OrderEvent::OrderCancelled {
                        order_id: O.into(),
                        username: "ann".into(),
                        reason: DEADLINE_REASON.into()
                    })
                ]
            );
            assert_eq!(s.status(), Cancelled);
            s.noop(OrderInput::DeadlinePassed);
            // The provider approved too late: refund, once, and the order stays cancelled.
            assert_eq!(
                s.send(authorized()),
                vec![OrderEffect::Refund {
                    reason: LATE_APPROVAL_REASON.into()
                }]
            );
            assert_eq!(s.status(), Cancelled);
            s.noop(authorized());
            s.send(refunded());
            assert_eq!(
                s.state.as_ref().unwrap().payment_status(),
                Some(PaymentStatus::Refunded)
            );
            s.noop(refunded());
        }
        let mut s = Saga::new();
        s.noop(OrderInput::DeadlinePassed);
        s.send(place(&[("p1", 1)]));
        s.now += 10 * TIMEOUT;
        s.noop(OrderInput::DeadlinePassed);
    }

    #[test]
    fn cancel_before_payment_releases() {
        let mut s = Saga::new();
        assert_eq!(s.reject(cancel("ann")), "NOT_FOUND");
        s.send(place(&[("p1", 1)]));
        assert_eq!(s.reject(cancel("bob")), "FORBIDDEN");
        let out = s.send(cancel("ann"));
        assert_eq!(out[0], release("p1"));
        assert_eq!(out.len(), 2);
        s.noop(cancel("ann"));

        let mut s = Saga::awaiting();
        let out = s.send(cancel("ann"));
        assert_eq!(
            out[..3],
            [
                release("p1"),
                release("p2"),
                OrderEffect::CancelDeadline {
                    at: 1_000 + TIMEOUT
                }
            ]
        );
        assert!(matches!(
            out[3],
            OrderEffect::Publish(OrderEvent::OrderCancelled { .. })
        ));
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.history.last().unwrap().reason, "changed my mind");
        assert_eq!(o.cancel_cause, Some(CancelCause::Customer));

        // Cancelled while the provider works: its approval is refunded.
        let mut s = Saga::awaiting();
        s.send(pay("ann"));
        s.send(cancel("ann"));
        assert_eq!(
            s.send(authorized()),
            vec![OrderEffect::Refund {
                reason: "approved after cancellation".into()
            }]
        );
    }

    fn vendor_cancel(vendor: &str) -> OrderInput {
        OrderInput::Command(OrderCommand::VendorCancelOrder {
            order_id: O.into(),
            vendor_id: vendor.into(),
            by: "vic1".into(),
            reason: "cannot fill".into(),
        })
    }

    #[test]
    fn a_vendor_cancels_an_unpaid_order_releasing_every_line_once() {
        let mut s = Saga::awaiting();
        let out = s.send(vendor_cancel("v-p1"));
        assert_eq!(s.status(), Cancelled);
        assert_eq!(
            out,
            vec![
                release("p1"),
                release("p2"),
                OrderEffect::CancelDeadline {
                    at: 1_000 + TIMEOUT
                },
                OrderEffect::Publish(OrderEvent::OrderCancelled {
                    order_id: O.into(),
                    username: "ann".into(),
                    reason: "cancelled by vendor v-p1: cannot fill".into(),
                }),
            ]
        );
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.cancel_cause, Some(CancelCause::Vendor));
        let v = view(o);
        assert_eq!(
            v.history.last().unwrap().reason,
            "cancelled by vendor v-p1: cannot fill"
        );
        assert_eq!(v.status, Cancelled);
        // A repeat (a retry, or the other vendor's cancel) releases nothing again.
        s.noop(vendor_cancel("v-p1"));
        s.noop(vendor_cancel("v-p2"));
        s.noop(cancel("ann"));
    }

    #[test]
    fn a_vendor_cancels_a_pending_order_and_its_unanswered_lines_too() {
        let mut s = Saga::new();
        s.send(place(&[("p1", 1), ("p2", 1)]));
        // p2's vendor is not known yet: the order has no line of it so far.
        assert_eq!(s.reject(vendor_cancel("v-p2")), "FORBIDDEN");
        s.send(reserved("p1", 100));
        let out = s.send(vendor_cancel("v-p1"));
        assert_eq!(out[..2], [release("p1"), release("p2")]);
        assert_eq!(out.len(), 3, "no deadline armed yet: {out:?}");
        // p2's reservation answered after the cancel is released once.
        assert_eq!(s.send(reserved("p2", 500)), vec![release("p2")]);
        s.noop(reserved("p2", 500));
    }

    #[test]
    fn a_vendor_cancel_while_the_payment_is_pending_refunds_a_late_approval() {
        let mut s = Saga::awaiting();
        s.send(pay("ann"));
        assert_eq!(s.status(), PaymentPending);
        s.send(vendor_cancel("v-p2"));
        assert_eq!(s.status(), Cancelled);
        assert_eq!(
            s.send(authorized()),
            vec![OrderEffect::Refund {
                reason: "approved after cancellation".into()
            }]
        );
    }

    #[test]
    fn a_vendor_cannot_cancel_a_paid_order() {
        let mut s = Saga::paid();
        let before = s.state.clone();
        assert_eq!(s.reject(vendor_cancel("v-p1")), "INVALID_TRANSITION");
        let out = ORDER.handle(s.state.clone(), &vendor_cancel("v-p1"), s.now);
        assert!(
            out.rejection.as_ref().unwrap().to_string().contains("paid"),
            "{:?}",
            out.rejection
        );
        assert_eq!(s.state, before);
        s.send(delivery_started());
        assert_eq!(s.reject(vendor_cancel("v-p1")), "INVALID_TRANSITION");
        s.send(delivery_completed());
        assert_eq!(s.reject(vendor_cancel("v-p1")), "INVALID_TRANSITION");
    }

    #[test]
    fn a_vendor_without_a_line_or_an_order_is_refused() {
        let s = Saga::awaiting();
        assert_eq!(s.reject(vendor_cancel("v-p9")), "FORBIDDEN");
        assert_eq!(Saga::new().reject(vendor_cancel("v-p1")), "NOT_FOUND");
    }

    #[test]
    fn a_vendors_reason_is_checked_by_one_rule() {
        let s = Saga::awaiting();
        let with = |reason: &str| {
            OrderInput::Command(OrderCommand::VendorCancelOrder {
                order_id: O.into(),
                vendor_id: "v-p1".into(),
                by: "vic1".into(),
                reason: reason.into(),
            })
        };
        for bad in ["", "  ", "a\u{202E}b", &"x".repeat(MAX_CANCEL_REASON + 1)] {
            assert!(check_vendor_cancel_reason(bad).is_err(), "{bad:?}");
            assert_eq!(s.reject(with(bad)), "INVALID", "{bad:?}");
        }
        for good in ["sold out", "line one\nline two", "품절", &"x".repeat(500)] {
            assert_eq!(check_vendor_cancel_reason(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn a_status_filter_names_a_status() {
        assert_eq!(parse_status("AWAITING_PAYMENT"), Ok(AwaitingPayment));
        let err = parse_status("SHIPPED").unwrap_err();
        assert_eq!(err.code(), "INVALID");
        assert!(err.to_string().contains("PAYMENT_PENDING"), "{err}");
    }

    fn master_cancel() -> OrderInput {
        OrderInput::Command(OrderCommand::CancelOrder {
            order_id: O.into(),
            username: "root".into(),
            reason: "fraud suspected".into(),
            master: true,
        })
    }

    #[test]
    fn a_master_cancels_another_users_order() {
        let mut s = Saga::awaiting();
        let out = s.send(master_cancel());
        assert_eq!(s.status(), Cancelled);
        assert_eq!(out[..2], [release("p1"), release("p2")]);
        assert!(
            matches!(
                out.last(),
                Some(OrderEffect::Publish(OrderEvent::OrderCancelled { username, reason, .. }))
                    if username == "ann" && reason == "fraud suspected"
            ),
            "{out:?}"
        );
        // A paid order: the delivery processor decides, as for the customer's own cancel.
        let mut s = Saga::paid();
        let out = s.send(master_cancel());
        assert!(matches!(
            &out[..],
            [OrderEffect::Publish(
                OrderEvent::OrderCancelRequested { .. }
            )]
        ));
    }

    #[test]
    fn a_user_who_is_neither_owner_nor_master_may_not_cancel() {
        let s = Saga::awaiting();
        let before = s.state.clone();
        assert_eq!(s.reject(cancel("bob")), "FORBIDDEN");
        assert_eq!(s.state, before);
    }

    #[test]
    fn a_master_cancelling_a_missing_order_is_told_it_is_not_found() {
        let s = Saga::new();
        assert_eq!(s.reject(master_cancel()), "NOT_FOUND");
    }

    #[test]
    fn cancel_after_payment_asks_the_delivery_first() {
        let mut s = Saga::paid();
        let out = s.send(cancel("ann"));
        assert_eq!(
            out,
            vec![OrderEffect::Publish(OrderEvent::OrderCancelRequested {
                order_id: O.into(),
                username: "ann".into(),
                reason: "changed my mind".into()
            })]
        );
        // No refund, no restock yet: the order stays paid until the delivery answers.
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.status, Paid);
        assert_eq!(o.payment_status(), Some(PaymentStatus::Authorized));
        assert_eq!(
            o.history.last().unwrap().reason,
            "cancellation requested: changed my mind"
        );
        assert_eq!(
            view(o).cancel_requested.as_deref(),
            Some("changed my mind"),
            "the customer sees the cancel waiting"
        );
        // A double click, and a stray refund or authorization, change nothing.
        s.noop(cancel("ann"));
        s.noop(authorized());
        s.noop(refunded());
    }

    #[test]
    fn cancel_after_payment_refunds_and_restocks() {
        let mut s = Saga::paid();
        s.send(cancel("ann"));
        let out = s.send(delivery_cancelled());
        assert_eq!(
            out[..3],
            [
                OrderEffect::Refund {
                    reason: "order cancelled: changed my mind".into()
                },
                OrderEffect::RestockStock {
                    product_id: "p1".into()
                },
                OrderEffect::RestockStock {
                    product_id: "p2".into()
                },
            ]
        );
        assert!(matches!(
            out[3],
            OrderEffect::Publish(OrderEvent::OrderCancelled { .. })
        ));
        assert_eq!(out.len(), 4);
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.status, Cancelled);
        assert_eq!(o.cancel_cause, Some(CancelCause::Customer));
        assert_eq!(o.history.last().unwrap().reason, "changed my mind");
        assert_eq!(o.payment_status(), Some(PaymentStatus::RefundRequested));
        assert_eq!(view(o).cancel_requested, None, "no longer waiting");
        s.noop(delivery_cancelled());
        s.noop(cancel_refused());
        s.noop(cancel("ann"));
        s.noop(authorized());
        s.noop(delivery_started());
        s.send(refunded());
        s.noop(refunded());
    }

    #[test]
    fn a_refused_cancel_leaves_the_order_on_its_way() {
        // Either order of the delivery's two replies (the start, then the refusal, is how the
        // delivery processor sends them; a refusal alone stands for both).
        for started_first in [true, false] {
            let mut s = Saga::paid();
            s.send(cancel("ann"));
            if started_first {
                assert_eq!(s.send(delivery_started()), vec![]);
                assert_eq!(s.status(), Shipping);
            }
            assert_eq!(s.send(cancel_refused()), vec![]);
            let o = s.state.as_ref().unwrap();
            assert_eq!(o.status, if started_first { Shipping } else { Paid });
            assert_eq!(o.cancel_requested, None);
            assert_eq!(view(o).cancel_requested, None, "no longer waiting");
            assert_eq!(o.payment_status(), Some(PaymentStatus::Authorized));
            assert_eq!(
                o.history.last().unwrap().reason,
                "cancellation refused: the delivery has already started"
            );
            s.noop(cancel_refused());
            // A stray DeliveryCancelled (none can follow a refusal) does not refund either.
            s.noop(delivery_cancelled());
            s.send(delivery_started());
            assert_eq!(s.reject(cancel("ann")), "INVALID_TRANSITION");
            s.send(delivery_completed());
            assert_eq!(s.status(), Completed);
        }
    }

    /// The race: the vendor starts the delivery, and the customer's cancel reaches the order
    /// before the DeliveryStarted reply does. The delivery processor, which saw the start
    /// first, refuses; the order is never refunded.
    #[test]
    fn a_cancel_racing_the_start_of_the_delivery_is_never_refunded() {
        use crate::delivery::{self, Delivery, DeliveryInput};
        use pickple_schemas::DeliveryCommand;

        let mut s = Saga::paid();
        let mut order_events = Vec::new();
        let mut replies = Vec::new();
        // The order was confirmed: the delivery processor creates the delivery.
        let confirmed = OrderEvent::OrderConfirmed {
            order_id: O.into(),
            username: "ann".into(),
            email: "ann@x.io".into(),
            amount: 700,
            vendor_ids: vec!["v-p1".into()],
            lines: vec![],
            shipping: None,
        };
        let mut d = Delivery
            .handle(None, &DeliveryInput::Order(confirmed), s.now)
            .state;
        // The vendor starts it; the DeliveryStarted reply is still on its way to the order.
        let start = DeliveryInput::Command(DeliveryCommand::StartDelivery {
            order_id: O.into(),
            vendor_id: Some("v-p1".into()),
            carrier: pickple_schemas::Carrier::CjLogistics,
            delivery_type: pickple_schemas::DeliveryType::Courier,
            tracking_number: "T1".into(),
            by: "v-p1".into(),
        });
        let out = Delivery.handle(d, &start, s.now);
        assert_eq!(out.rejection, None);
        d = out.state;
        replies.extend(out.effects);
        // The customer's cancel reaches the order first.
        for e in s.send(cancel("ann")) {
            assert!(!matches!(
                e,
                OrderEffect::Refund { .. } | OrderEffect::RestockStock { .. }
            ));
            if let OrderEffect::Publish(e) = e {
                order_events.push(e);
            }
        }
        assert_eq!(s.status(), Paid);
        // The delivery processor decides the request.
        for e in order_events {
            let out = Delivery.handle(d, &DeliveryInput::Order(e), s.now);
            assert_eq!(out.rejection, None);
            d = out.state;
            replies.extend(out.effects);
        }
        assert_eq!(
            d.as_ref().unwrap().status,
            pickple_schemas::DeliveryStatus::InTransit
        );
        // The order hears the replies, in the order they were sent.
        for r in replies {
            if let delivery::DeliveryEffect::Reply(r) = r {
                let out = s.send(OrderInput::Reply(r));
                assert!(!out.iter().any(|e| matches!(e, OrderEffect::Refund { .. })));
            }
        }
        let o = s.state.as_ref().unwrap();
        assert_eq!(o.status, Shipping);
        assert_eq!(o.payment_status(), Some(PaymentStatus::Authorized));
        assert_eq!(
            o.history.last().unwrap().reason,
            "cancellation refused: the delivery has already started"
        );
    }

    /// The gateway no longer refuses these on a (possibly stale) view: this is where they are
    /// refused, as rejections the app layer records on the order's view.
    #[test]
    fn out_of_order_pay_and_cancel_are_rejections_not_drops() {
        let mut s = Saga::new();
        s.send(place(&[("p1", 1)]));
        assert_eq!(
            s.reject(pay("ann")),
            "INVALID_TRANSITION",
            "pay while PENDING"
        );
        let mut s = Saga::paid();
        assert_eq!(s.reject(pay("ann")), "INVALID_TRANSITION", "pay when PAID");
        s.send(delivery_started());
        assert_eq!(
            s.reject(pay("ann")),
            "INVALID_TRANSITION",
            "pay when SHIPPING"
        );
        assert_eq!(
            s.reject(cancel("ann")),
            "INVALID_TRANSITION",
            "cancel when SHIPPING"
        );
        let mut s = Saga::awaiting();
        s.send(cancel("ann"));
        assert_eq!(
            s.reject(pay("ann")),
            "INVALID_TRANSITION",
            "pay when CANCELLED"
        );
        // Repeats of what already happened stay no-ops (a double click is not an error).
        s.noop(cancel("ann"));
    }

    #[test]
    fn shape_checks_match_validate_lines() {
        let line = |p: &str, q: u64| OrderLine {
            product_id: p.into(),
            quantity: q,
        };
        let lines = vec![line("p1", 1), line("p1", 2), line(" ", 1), line("p2", 0)];
        assert!(check_line_unique(&lines, 0).is_ok());
        assert!(check_line_unique(&lines, 1).is_err());
        assert!(check_line_unique(&lines, 9).is_ok());
        assert!(check_line_product(&lines[2].product_id).is_err());
        assert!(check_line_quantity("p2", 0).is_err());
        assert!(check_has_lines(&[]).is_err());
        assert!(check_payment_token(" ").is_err() && check_payment_token("t").is_ok());
        for i in 0..lines.len() {
            assert!(validate_lines(O, "ann", &lines[..=i]).is_err() == (i > 0));
        }
    }

    #[test]
    fn delivery_completes_the_order() {
        let mut s = Saga::paid();
        assert_eq!(s.send(delivery_started()), vec![]);
        assert_eq!(s.status(), Shipping);
        s.noop(delivery_started());
        assert_eq!(s.reject(cancel("ann")), "INVALID_TRANSITION");
        let out = s.send(delivery_completed());
        assert_eq!(
            out,
            vec![OrderEffect::Publish(OrderEvent::OrderCompleted {
                order_id: O.into(),
                username: "ann".into(),
                email: "ann@x.io".into()
            })]
        );
        assert_eq!(s.status(), Completed);
        s.noop(delivery_completed());
        s.noop(delivery_started());
        assert_eq!(s.reject(cancel("ann")), "INVALID_TRANSITION");
        let o = s.state.as_ref().unwrap();
        let statuses: Vec<_> = o.history.iter().map(|t| t.status).collect();
        assert_eq!(
            statuses,
            vec![
                Pending,
                AwaitingPayment,
                PaymentPending,
                Paid,
                Shipping,
                Completed
            ]
        );
        assert_eq!(o.delivery_status(), Some(DeliveryStatus::Delivered));
    }

    #[test]
    fn delivery_replies_before_payment_are_ignored() {
        let mut s = Saga::awaiting();
        s.noop(delivery_started());
        s.noop(delivery_completed());
        s.noop(refunded());
        let mut s = Saga::paid();
        s.send(delivery_completed());
        assert_eq!(s.status(), Completed);
    }

    #[test]
    fn an_authorization_nobody_asked_for_is_refunded_once() {
        let mut s = Saga::new();
        s.send(place(&[("p1", 1)]));
        assert_eq!(
            s.send(authorized()),
            vec![OrderEffect::Refund {
                reason: "approved while the order was not awaiting payment".into()
            }]
        );
        assert_eq!(s.status(), Pending);
        s.send(reserved("p1", 100));
        // The same authorization again, now that the order could take it: still refunded money.
        s.noop(authorized());
        assert_eq!(s.status(), AwaitingPayment);
    }

    #[test]
    fn replies_for_unknown_orders_are_refused() {
        let s = Saga::new();
        assert_eq!(s.reject(authorized()), "NOT_FOUND");
    }

    #[test]
    fn effects_become_commands() {
        let e = OrderEffect::ReserveStock {
            product_id: "p1".into(),
            quantity: 2,
            username: "ann".into(),
            placed_at: 5,
        };
        assert_eq!(
            e.stock_command(O),
            Some(StockCommand::Reserve {
                product_id: "p1".into(),
                order_id: O.into(),
                username: "ann".into(),
                quantity: 2,
                placed_at: 5
            })
        );
        assert_eq!(e.payment_command(O), None);
        for (e, ok) in [
            (release("p1"), true),
            (
                OrderEffect::CommitStock {
                    product_id: "p".into(),
                },
                true,
            ),
            (
                OrderEffect::RestockStock {
                    product_id: "p".into(),
                },
                true,
            ),
            (OrderEffect::CancelDeadline { at: 1 }, false),
        ] {
            assert_eq!(e.stock_command(O).is_some(), ok);
        }
        assert_eq!(
            OrderEffect::Refund { reason: "r".into() }.payment_command(O),
            Some(PaymentCommand::Refund {
                order_id: O.into(),
                reason: "r".into()
            })
        );
        assert!(OrderEffect::Authorize {
            amount: 1,
            payment_token: "t".into(),
            username: "ann".into(),
        }
        .payment_command(O)
        .is_some());
    }

    #[test]
    fn view_and_storage() {
        let s = Saga::paid();
        let o = s.state.clone().unwrap();
        let v = o.to_view(&ViewMeta {
            version: 3,
            updated_at: 0,
            rejection: None,
        });
        assert_eq!((v.status, v.amount, v.version), (Paid, 700, 3));
        assert!(v.lines.iter().all(|l| l.reserved));
        assert_eq!(v.lines[0].unit_price, Some(100));
        assert_eq!(v.history.len(), 4);
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<OrderState>(&json).unwrap(), o);
        let fact = OrderFact::Cancelled {
            cause: CancelCause::Deadline,
            reason: "r".into(),
            at: 1,
        };
        let json = serde_json::to_string(&fact).unwrap();
        assert_eq!(serde_json::from_str::<OrderFact>(&json).unwrap(), fact);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        const PRODUCTS: [&str; 3] = ["p1", "p2", "p3"];

        fn input() -> impl Strategy<Value = OrderInput> {
            prop_oneof![
                4 => (0usize..3).prop_map(|i| reserved(PRODUCTS[i], 100)),
                1 => (0usize..3).prop_map(|i| stock_rejected(PRODUCTS[i])),
                3 => prop_oneof![Just("ann"), Just("bob")].prop_map(pay),
                1 => prop_oneof![Just("ann"), Just("bob")].prop_map(cancel),
                1 => prop_oneof![Just("v-p1"), Just("v-p9")].prop_map(vendor_cancel),
                2 => Just(authorized()),
                2 => Just(declined()),
                1 => Just(refunded()),
                2 => Just(delivery_started()),
                2 => Just(delivery_completed()),
                2 => Just(delivery_cancelled()),
                1 => Just(cancel_refused()),
                2 => Just(OrderInput::DeadlinePassed),
            ]
        }

        fn rank(s: OrderStatus) -> u8 {
            match s {
                Pending => 0,
                AwaitingPayment | PaymentPending => 1,
                Paid => 2,
                Shipping => 3,
                Completed | Cancelled => 4,
            }
        }

        /// The generator must reach every status, or the property above proves little.
        #[test]
        fn random_inputs_reach_every_status() {
            use proptest::strategy::ValueTree;
            use proptest::test_runner::TestRunner;
            let mut runner = TestRunner::deterministic();
            let steps = prop::collection::vec((input(), 0i64..150_000), 1..40);
            let mut seen = BTreeSet::new();
            for _ in 0..256 {
                let steps = steps.new_tree(&mut runner).unwrap().current();
                let mut s = Saga::new();
                s.send(place(&[("p1", 1)]));
                for (input, dt) in steps {
                    s.now += dt;
                    let out = ORDER.handle(s.state.clone(), &input, s.now);
                    if out.rejection.is_none() {
                        s.state = out.state;
                        seen.insert(format!("{:?}", s.status()));
                        if s.status() == Cancelled
                            && s.state.as_ref().unwrap().payment.refund_requested
                        {
                            seen.insert("Refunding".into());
                        }
                    }
                }
            }
            assert_eq!(seen.len(), 8, "{seen:?}");
        }

        proptest! {
            #[test]
            fn the_saga_never_contradicts_itself(
                n_lines in 1usize..=3,
                steps in prop::collection::vec((input(), 0i64..150_000), 1..40),
            ) {
                let lines: Vec<(&str, u64)> = PRODUCTS[..n_lines].iter().map(|p| (*p, 1)).collect();
                let mut s = Saga::new();
                s.send(place(&lines));
                let mut committed = BTreeSet::new();
                let mut released = BTreeSet::new();
                let mut restocked = BTreeSet::new();
                let mut authorized_seen = false;
                let mut refunds = 0;
                for (input, dt) in steps {
                    s.now += dt;
                    let before = s.status();
                    if matches!(input, OrderInput::Reply(OrderReply::PaymentAuthorized { .. })) {
                        authorized_seen = true;
                    }
                    let out = ORDER.handle(s.state.clone(), &input, s.now);
                    if out.rejection.is_some() {
                        continue;
                    }
                    s.state = out.state;
                    let after = s.status();
                    for e in &out.effects {
                        match e {
                            OrderEffect::CommitStock { product_id } => {
                                prop_assert!(committed.insert(product_id.clone()), "committed twice");
                            }
                            OrderEffect::ReleaseStock { product_id } => {
                                released.insert(product_id.clone());
                            }
                            OrderEffect::RestockStock { product_id } => {
                                prop_assert!(committed.contains(product_id), "restock before commit");
                                prop_assert!(restocked.insert(product_id.clone()), "restocked twice");
                            }
                            OrderEffect::Refund { .. } => {
                                prop_assert!(authorized_seen, "refund without authorization");
                                // Money for a paid order goes back only once the delivery
                                // processor has cancelled the delivery.
                                if before == Paid {
                                    prop_assert!(
                                        matches!(input, OrderInput::Reply(OrderReply::DeliveryCancelled { .. })),
                                        "paid order refunded on {:?}", input
                                    );
                                }
                                refunds += 1;
                                prop_assert!(refunds <= 1, "refunded twice");
                            }
                            _ => {}
                        }
                    }
                    prop_assert!(committed.is_disjoint(&released), "{:?} both committed and released", committed.intersection(&released).collect::<Vec<_>>());
                    if before.is_final() {
                        prop_assert_eq!(after, before);
                    } else {
                        prop_assert!(rank(after) >= rank(before), "{:?} -> {:?}", before, after);
                    }
                    let o = s.state.as_ref().unwrap();
                    prop_assert_eq!(o.history.last().map(|t| t.status), Some(after));
                    prop_assert!(o.history.len() <= MAX_HISTORY);
                    prop_assert_eq!(o.history[0].reason.as_str(), "order placed");
                    if after.is_final() || after == Paid || after == Shipping {
                        prop_assert_eq!(o.deadline, None);
                    }
                }
            }
        }
    }
}
