//! Deliveries, keyed by order id: made from the saga's `OrderConfirmed` with one shipment per
//! vendor of the order's lines, each moved by its vendor's manager (or a MASTER) through
//! PENDING -> IN_TRANSIT -> DELIVERED. One entity holds the whole order's shipping so that a
//! cancel request is decided at once for every shipment: refused if any has started, otherwise
//! all are cancelled and the saga refunds once.
//!
//! The order hears of it once each way: `DeliveryStarted` when the first shipment starts,
//! `DeliveryCompleted` when the last one arrives. The e-mails follow each shipment
//! (`ShipmentStarted`, `ShipmentDelivered` on `delivery-events`) and the whole order
//! (`DeliveryCompleted`).
//!
//! The gateway checks that `by` may act on the vendor's shipment; it is kept here so every step
//! says who did it.

use pickple_schemas::{
    Carrier, ConfirmedLine, DeliveryCommand, DeliveryDetail, DeliveryEvent, DeliveryStatus,
    DeliveryType, DeliveryView, Millis, OrderEvent, OrderLine, OrderReply, ShipmentView,
    ShippingAddress,
};
use serde::{Deserialize, Serialize};

pub use crate::rules::non_empty;
use crate::rules::visible_text;
use crate::{Aggregate, Rejection, ViewMeta};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeliveryInput {
    Command(DeliveryCommand),
    /// From topic `order-events`: OrderConfirmed creates, OrderCancelled cancels, and
    /// OrderCancelRequested asks this processor to decide a paid order's cancel.
    Order(OrderEvent),
}

/// A delivery as stored. Decoded through [`StoredDelivery`], so a value written before shipments
/// (one carrier for the whole order) still reads: see [`StoredDelivery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredDelivery")]
pub struct DeliveryState {
    pub order_id: String,
    pub username: String,
    /// Kept for the notification e-mails the delivery events lead to.
    pub email: String,
    pub vendor_ids: Vec<String>,
    /// The order's: PENDING until a shipment starts, IN_TRANSIT until every shipment arrived,
    /// then DELIVERED; CANCELLED with every shipment.
    pub status: DeliveryStatus,
    #[serde(default)]
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping: Option<ShippingAddress>,
    /// One per vendor, in the order's vendor order.
    pub shipments: Vec<Shipment>,
}

/// One vendor's share of the order's shipping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub vendor_id: String,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<OrderLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Step>,
}

/// How and when a shipment left, and who said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// `None` only on a shipment started before carriers were enums, with another carrier.
    #[serde(default)]
    pub carrier: Option<Carrier>,
    #[serde(default)]
    pub delivery_type: Option<DeliveryType>,
    pub tracking_number: String,
    pub by: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    pub at: Millis,
    pub location: String,
    pub description: String,
    pub by: String,
    /// The command's request id (from the client's Idempotency-Key): a repeat adds nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub by: String,
    pub at: Millis,
}

/// What the `deliveries` store holds, of either version. Values written before shipments have
/// no `shipments` but the one start (`shipment`, with free-text carrier and type), the details
/// and the end of the whole order: they become one shipment per vendor, all in the old status,
/// each with that start, those details and that end (the old delivery carried every vendor's
/// lines in one parcel). A free-text carrier or type that is not one of the enums' names
/// (`CJ` is taken for CJ_LOGISTICS) becomes `None`; the tracking number is kept.
#[derive(Debug, Clone, Deserialize)]
struct StoredDelivery {
    order_id: String,
    username: String,
    email: String,
    vendor_ids: Vec<String>,
    status: DeliveryStatus,
    #[serde(default)]
    created_at: Millis,
    #[serde(default)]
    shipping: Option<ShippingAddress>,
    #[serde(default)]
    shipments: Option<Vec<Shipment>>,
    #[serde(default)]
    shipment: Option<LegacyStart>,
    #[serde(default)]
    details: Vec<Detail>,
    #[serde(default)]
    delivered: Option<Step>,
}

#[derive(Debug, Clone, Deserialize)]
struct LegacyStart {
    carrier: String,
    delivery_type: String,
    tracking_number: String,
    by: String,
    at: Millis,
}

/// The enum value a free-text name of the old deliveries meant, if it names one.
fn legacy_name<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str, text: &str) -> Option<T> {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_uppercase()
    };
    let text = norm(text);
    all.iter().copied().find(|v| norm(name(*v)) == text)
}

impl From<StoredDelivery> for DeliveryState {
    fn from(s: StoredDelivery) -> Self {
        let shipments = s.shipments.unwrap_or_else(|| {
            let start = s.shipment.map(|l| Start {
                carrier: if l.carrier.trim().eq_ignore_ascii_case("CJ") {
                    Some(Carrier::CjLogistics)
                } else {
                    legacy_name(&Carrier::ALL, Carrier::as_str, &l.carrier)
                },
                delivery_type: legacy_name(
                    &DeliveryType::ALL,
                    DeliveryType::as_str,
                    &l.delivery_type,
                ),
                tracking_number: l.tracking_number,
                by: l.by,
                at: l.at,
            });
            s.vendor_ids
                .iter()
                .map(|v| Shipment {
                    vendor_id: v.clone(),
                    status: s.status,
                    lines: Vec::new(),
                    start: start.clone(),
                    details: s.details.clone(),
                    end: s.delivered.clone(),
                })
                .collect()
        });
        DeliveryState {
            order_id: s.order_id,
            username: s.username,
            email: s.email,
            vendor_ids: s.vendor_ids,
            status: s.status,
            created_at: s.created_at,
            shipping: s.shipping,
            shipments,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryFact {
    Created {
        order_id: String,
        username: String,
        email: String,
        vendor_ids: Vec<String>,
        lines: Vec<ConfirmedLine>,
        shipping: Option<ShippingAddress>,
        at: Millis,
    },
    Started {
        vendor_id: String,
        carrier: Carrier,
        delivery_type: DeliveryType,
        tracking_number: String,
        by: String,
        at: Millis,
    },
    DetailAdded {
        vendor_id: String,
        detail: Detail,
    },
    Delivered {
        vendor_id: String,
        step: Step,
    },
    /// Every shipment, none of which had started.
    Cancelled {
        reason: String,
        at: Millis,
    },
    /// A cancel request came after a shipment started: refused, the goods stay on their way. A
    /// fact though it changes nothing, because the refusal is what the saga is told.
    CancelRefused {
        reason: String,
        at: Millis,
    },
}

/// Why a cancel is refused once any shipment of the order has started.
pub const ALREADY_STARTED: &str = "the delivery has already started";

/// The most tracking details one shipment keeps. Past it, `AddDeliveryDetail` is refused (a
/// `CONFLICT`, shown on the view): a shipment is one parcel's trip, and fifty stops is already
/// far more than any trip makes.
pub const MAX_DETAILS: usize = 50;

/// The most tracking details a delivery keeps over all its shipments, so that one stored value
/// (and its view) stays bounded whatever the number of vendors: with the gateway's limits
/// (200 characters of location, 1,000 of description) a full delivery stays near 130 KB, under
/// the runtime's 256 KiB size guard.
pub const MAX_DELIVERY_DETAILS: usize = 100;

// The shape rules of the delivery commands; the gateway checks its requests with these same
// functions, so a command it accepts is never refused here for its shape.

/// A start's tracking number, or a detail's location: not blank, and one line of visible text
/// (no control or format characters: see [`visible_text`]).
pub fn check_line(what: &str, value: &str) -> Result<(), Rejection> {
    non_empty(what, value)?;
    visible_text(what, value, false)
}

/// A detail's description: not blank, and visible text that may hold several lines and tabs.
pub fn check_description(description: &str) -> Result<(), Rejection> {
    non_empty("description", description)?;
    visible_text("description", description, true)
}

/// Records a fact calls for: a `delivery-events` record (for notifications) and the saga's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeliveryEffect {
    Event(DeliveryEvent),
    Reply(OrderReply),
}

/// The rules of deliveries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery;

/// Which shipment a command is about: the vendor's, or, for a command written before shipments
/// (no vendor), the only one.
fn shipment<'a>(d: &'a DeliveryState, vendor_id: Option<&str>) -> Result<&'a Shipment, Rejection> {
    match vendor_id {
        Some(v) => d
            .shipments
            .iter()
            .find(|s| s.vendor_id == v)
            .ok_or_else(|| {
                Rejection::not_found(format!("the order has no shipment of vendor {v}"))
            }),
        None => match d.shipments.as_slice() {
            [only] => Ok(only),
            many => Err(Rejection::conflict(format!(
                "the order has {} shipments: name the vendor",
                many.len()
            ))),
        },
    }
}

impl Aggregate for Delivery {
    type State = Option<DeliveryState>;
    type Input = DeliveryInput;
    type Fact = DeliveryFact;
    type Effect = DeliveryEffect;

    fn decide(
        &self,
        state: &Option<DeliveryState>,
        input: &DeliveryInput,
        now: Millis,
    ) -> Result<Vec<DeliveryFact>, Rejection> {
        use DeliveryStatus::*;
        let state = state.as_ref();
        match input {
            DeliveryInput::Order(OrderEvent::OrderConfirmed {
                order_id,
                username,
                email,
                vendor_ids,
                lines,
                shipping,
                ..
            }) => Ok(match state {
                Some(_) => vec![],
                None => vec![DeliveryFact::Created {
                    order_id: order_id.clone(),
                    username: username.clone(),
                    email: email.clone(),
                    vendor_ids: vendor_ids.clone(),
                    lines: lines.clone(),
                    shipping: shipping.clone(),
                    at: now,
                }],
            }),
            // Goods already on their way are not recalled by a cancel; the saga refuses such a
            // cancel anyway once it has heard of the start.
            DeliveryInput::Order(OrderEvent::OrderCancelled { reason, .. }) => Ok(match state {
                Some(d) if d.status == Pending => vec![DeliveryFact::Cancelled {
                    reason: reason.clone(),
                    at: now,
                }],
                _ => vec![],
            }),
            // This processor is the single writer of "has a shipment started", so it, not the
            // saga, decides a paid order's cancel: whichever of a StartDelivery and this request
            // it processes first wins, and the saga refunds only on its DeliveryCancelled. The
            // delivery is PENDING exactly while no shipment has started.
            DeliveryInput::Order(OrderEvent::OrderCancelRequested { reason, .. }) => {
                Ok(match state {
                    Some(d) if d.status == Pending => vec![DeliveryFact::Cancelled {
                        reason: reason.clone(),
                        at: now,
                    }],
                    Some(d) if matches!(d.status, InTransit | Delivered) => {
                        vec![DeliveryFact::CancelRefused {
                            reason: ALREADY_STARTED.into(),
                            at: now,
                        }]
                    }
                    // Already cancelled: the reply went out with the fact. No delivery cannot
                    // happen, the request follows the OrderConfirmed that creates it on the same
                    // partition.
                    _ => vec![],
                })
            }
            DeliveryInput::Order(OrderEvent::OrderCompleted { .. }) => Ok(vec![]),
            DeliveryInput::Command(cmd) => {
                let d = state.ok_or_else(|| Rejection::not_found("no such delivery"))?;
                match cmd {
                    DeliveryCommand::StartDelivery {
                        vendor_id,
                        carrier,
                        delivery_type,
                        tracking_number,
                        by,
                        ..
                    } => {
                        check_line("tracking number", tracking_number)?;
                        non_empty("by", by)?;
                        let s = shipment(d, vendor_id.as_deref())?;
                        let tracking_number = tracking_number.trim().to_string();
                        match (&s.status, &s.start) {
                            (Pending, _) => Ok(vec![DeliveryFact::Started {
                                vendor_id: s.vendor_id.clone(),
                                carrier: *carrier,
                                delivery_type: *delivery_type,
                                tracking_number,
                                by: by.clone(),
                                at: now,
                            }]),
                            // The same start again (a retried request): nothing new.
                            (InTransit, Some(st))
                                if st.carrier == Some(*carrier)
                                    && st.tracking_number == tracking_number =>
                            {
                                Ok(vec![])
                            }
                            (status, _) => Err(Rejection::transition(format!(
                                "a {status:?} shipment cannot start"
                            ))),
                        }
                    }
                    DeliveryCommand::AddDeliveryDetail {
                        vendor_id,
                        location,
                        description,
                        by,
                        request_id,
                        ..
                    } => {
                        check_line("location", location)?;
                        check_description(description)?;
                        non_empty("by", by)?;
                        let s = shipment(d, vendor_id.as_deref())?;
                        if request_id.is_some()
                            && s.details.iter().any(|x| x.request_id == *request_id)
                        {
                            return Ok(vec![]);
                        }
                        if s.status != InTransit {
                            return Err(Rejection::transition(
                                "details can only be added while in transit",
                            ));
                        }
                        if s.details.len() >= MAX_DETAILS {
                            return Err(Rejection::conflict(format!(
                                "the shipment already has {} details, the most it keeps is {MAX_DETAILS}",
                                s.details.len()
                            )));
                        }
                        let total: usize = d.shipments.iter().map(|s| s.details.len()).sum();
                        if total >= MAX_DELIVERY_DETAILS {
                            return Err(Rejection::conflict(format!(
                                "the order's shipments already have {total} details, the most \
                                 they keep is {MAX_DELIVERY_DETAILS}"
                            )));
                        }
                        Ok(vec![DeliveryFact::DetailAdded {
                            vendor_id: s.vendor_id.clone(),
                            detail: Detail {
                                at: now,
                                location: location.trim().to_string(),
                                description: description.trim().to_string(),
                                by: by.clone(),
                                request_id: request_id.clone(),
                            },
                        }])
                    }
                    DeliveryCommand::EndDelivery { vendor_id, by, .. } => {
                        non_empty("by", by)?;
                        let s = shipment(d, vendor_id.as_deref())?;
                        match s.status {
                            InTransit => Ok(vec![DeliveryFact::Delivered {
                                vendor_id: s.vendor_id.clone(),
                                step: Step {
                                    by: by.clone(),
                                    at: now,
                                },
                            }]),
                            Delivered => Ok(vec![]),
                            status => Err(Rejection::transition(format!(
                                "a {status:?} shipment cannot end"
                            ))),
                        }
                    }
                }
            }
        }
    }

    fn apply(state: Option<DeliveryState>, fact: &DeliveryFact) -> Option<DeliveryState> {
        if let DeliveryFact::Created {
            order_id,
            username,
            email,
            vendor_ids,
            lines,
            shipping,
            at,
        } = fact
        {
            return Some(DeliveryState {
                order_id: order_id.clone(),
                username: username.clone(),
                email: email.clone(),
                vendor_ids: vendor_ids.clone(),
                status: DeliveryStatus::Pending,
                created_at: *at,
                shipping: shipping.clone(),
                shipments: vendor_ids
                    .iter()
                    .map(|v| Shipment {
                        vendor_id: v.clone(),
                        status: DeliveryStatus::Pending,
                        lines: lines
                            .iter()
                            .filter(|l| l.vendor_id == *v)
                            .map(|l| OrderLine {
                                product_id: l.product_id.clone(),
                                quantity: l.quantity,
                            })
                            .collect(),
                        start: None,
                        details: Vec::new(),
                        end: None,
                    })
                    .collect(),
            });
        }
        let mut d = state?;
        let of = |d: &mut DeliveryState, vendor: &str| -> Option<usize> {
            d.shipments.iter().position(|s| s.vendor_id == vendor)
        };
        match fact {
            DeliveryFact::Created { .. } | DeliveryFact::CancelRefused { .. } => {}
            DeliveryFact::Started {
                vendor_id,
                carrier,
                delivery_type,
                tracking_number,
                by,
                at,
            } => {
                if let Some(i) = of(&mut d, vendor_id) {
                    d.shipments[i].status = DeliveryStatus::InTransit;
                    d.shipments[i].start = Some(Start {
                        carrier: Some(*carrier),
                        delivery_type: Some(*delivery_type),
                        tracking_number: tracking_number.clone(),
                        by: by.clone(),
                        at: *at,
                    });
                }
            }
            DeliveryFact::DetailAdded { vendor_id, detail } => {
                if let Some(i) = of(&mut d, vendor_id) {
                    d.shipments[i].details.push(detail.clone());
                }
            }
            DeliveryFact::Delivered { vendor_id, step } => {
                if let Some(i) = of(&mut d, vendor_id) {
                    d.shipments[i].status = DeliveryStatus::Delivered;
                    d.shipments[i].end = Some(step.clone());
                }
            }
            DeliveryFact::Cancelled { .. } => {
                for s in &mut d.shipments {
                    s.status = DeliveryStatus::Cancelled;
                }
                d.status = DeliveryStatus::Cancelled;
            }
        }
        if d.status != DeliveryStatus::Cancelled {
            d.status = d.progress();
        }
        Some(d)
    }

    /// Records for the notification e-mails and the saga's replies: the saga hears of the
    /// first start and of the last arrival only.
    fn effects(
        before: &Option<DeliveryState>,
        fact: &DeliveryFact,
        after: &Option<DeliveryState>,
    ) -> Vec<DeliveryEffect> {
        let Some(after) = after else {
            return Vec::new();
        };
        let was = before.as_ref().map(|b| b.status);
        let order_id = after.order_id.clone();
        match fact {
            DeliveryFact::Started {
                vendor_id,
                carrier,
                delivery_type,
                tracking_number,
                ..
            } => {
                let mut out = vec![DeliveryEffect::Event(DeliveryEvent::ShipmentStarted {
                    order_id: order_id.clone(),
                    vendor_id: vendor_id.clone(),
                    username: after.username.clone(),
                    email: after.email.clone(),
                    carrier: *carrier,
                    delivery_type: *delivery_type,
                    tracking_number: tracking_number.clone(),
                    shipping: after.shipping.clone(),
                })];
                if was == Some(DeliveryStatus::Pending) {
                    out.push(DeliveryEffect::Reply(OrderReply::DeliveryStarted {
                        order_id,
                    }));
                }
                out
            }
            DeliveryFact::Delivered { vendor_id, .. } => {
                let start = after
                    .shipments
                    .iter()
                    .find(|s| s.vendor_id == *vendor_id)
                    .and_then(|s| s.start.as_ref());
                let mut out = vec![DeliveryEffect::Event(DeliveryEvent::ShipmentDelivered {
                    order_id: order_id.clone(),
                    vendor_id: vendor_id.clone(),
                    username: after.username.clone(),
                    email: after.email.clone(),
                    carrier: start.and_then(|s| s.carrier),
                    tracking_number: start.map(|s| s.tracking_number.clone()),
                    shipping: after.shipping.clone(),
                })];
                if after.status == DeliveryStatus::Delivered
                    && was != Some(DeliveryStatus::Delivered)
                {
                    out.push(DeliveryEffect::Event(DeliveryEvent::DeliveryCompleted {
                        order_id: order_id.clone(),
                        username: after.username.clone(),
                        email: after.email.clone(),
                    }));
                    out.push(DeliveryEffect::Reply(OrderReply::DeliveryCompleted {
                        order_id,
                    }));
                }
                out
            }
            // Told after either kind of cancel: the saga waits for it after a cancel request, and
            // ignores it on an order it has already cancelled.
            DeliveryFact::Cancelled { .. } => {
                vec![DeliveryEffect::Reply(OrderReply::DeliveryCancelled {
                    order_id,
                })]
            }
            DeliveryFact::CancelRefused { reason, .. } => {
                vec![DeliveryEffect::Reply(OrderReply::DeliveryCancelRefused {
                    order_id,
                    reason: reason.clone(),
                })]
            }
            _ => vec![],
        }
    }
}

impl DeliveryState {
    /// The order's status from its shipments' (not cancelled): PENDING until one starts,
    /// DELIVERED once all arrived, IN_TRANSIT between.
    fn progress(&self) -> DeliveryStatus {
        use DeliveryStatus::*;
        let started = self
            .shipments
            .iter()
            .any(|s| matches!(s.status, InTransit | Delivered));
        if !started {
            Pending
        } else if self.shipments.iter().all(|s| s.status == Delivered) {
            Delivered
        } else {
            InTransit
        }
    }

    /// `by` of each step and detail is not part of the public view (schemas' `DeliveryDetail`).
    pub fn to_view(&self, meta: &ViewMeta) -> DeliveryView {
        DeliveryView {
            order_id: self.order_id.clone(),
            username: self.username.clone(),
            vendor_ids: self.vendor_ids.clone(),
            status: self.status,
            created_at: self.created_at,
            shipping: self.shipping.clone(),
            shipments: self
                .shipments
                .iter()
                .map(|s| ShipmentView {
                    vendor_id: s.vendor_id.clone(),
                    status: s.status,
                    lines: s.lines.clone(),
                    carrier: s.start.as_ref().and_then(|st| st.carrier),
                    delivery_type: s.start.as_ref().and_then(|st| st.delivery_type),
                    tracking_number: s.start.as_ref().map(|st| st.tracking_number.clone()),
                    details: s
                        .details
                        .iter()
                        .map(|d| DeliveryDetail {
                            at: d.at,
                            location: d.location.clone(),
                            description: d.description.clone(),
                        })
                        .collect(),
                    started_at: s.start.as_ref().map(|st| st.at),
                    delivered_at: s.end.as_ref().map(|e| e.at),
                })
                .collect(),
            rejection: meta.rejection.clone(),
            version: meta.version,
        }
    }
}

/// What the manager of `vendors` may see of a delivery: those vendors' shipments (and their
/// lines) only. The other vendors' shipments stay with the buyer and MASTER.
pub fn vendor_share(delivery: &DeliveryView, vendors: &[String]) -> DeliveryView {
    DeliveryView {
        vendor_ids: delivery
            .vendor_ids
            .iter()
            .filter(|v| vendors.contains(v))
            .cloned()
            .collect(),
        shipments: delivery
            .shipments
            .iter()
            .filter(|s| vendors.contains(&s.vendor_id))
            .cloned()
            .collect(),
        ..delivery.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    const O: &str = "o1";

    fn address() -> ShippingAddress {
        ShippingAddress {
            recipient: "Ann".into(),
            address: "1 Main St".into(),
            contact: "010-1234-5678".into(),
            request: None,
        }
    }
    /// Paid with lines of `vendors` (one product each, `p-<vendor>`).
    fn confirmed_by(vendors: &[&str]) -> DeliveryInput {
        DeliveryInput::Order(OrderEvent::OrderConfirmed {
            order_id: O.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            amount: 700,
            vendor_ids: vendors.iter().map(|v| v.to_string()).collect(),
            lines: vendors
                .iter()
                .map(|v| ConfirmedLine {
                    product_id: format!("p-{v}"),
                    quantity: 1,
                    vendor_id: v.to_string(),
                })
                .collect(),
            shipping: Some(address()),
        })
    }
    fn confirmed() -> DeliveryInput {
        confirmed_by(&["v1"])
    }
    fn cancelled() -> DeliveryInput {
        DeliveryInput::Order(OrderEvent::OrderCancelled {
            order_id: O.into(),
            username: "ann1".into(),
            reason: "changed my mind".into(),
        })
    }
    fn cancel_requested() -> DeliveryInput {
        DeliveryInput::Order(OrderEvent::OrderCancelRequested {
            order_id: O.into(),
            username: "ann1".into(),
            reason: "changed my mind".into(),
        })
    }
    fn start_of(vendor: Option<&str>, tracking: &str) -> DeliveryInput {
        DeliveryInput::Command(DeliveryCommand::StartDelivery {
            order_id: O.into(),
            vendor_id: vendor.map(String::from),
            carrier: Carrier::CjLogistics,
            delivery_type: DeliveryType::Courier,
            tracking_number: tracking.into(),
            by: "boss1".into(),
        })
    }
    fn start(tracking: &str) -> DeliveryInput {
        start_of(Some("v1"), tracking)
    }
    fn detail(location: &str) -> DeliveryInput {
        detail_with("v1", location, None)
    }
    fn detail_with(vendor: &str, location: &str, request_id: Option<&str>) -> DeliveryInput {
        DeliveryInput::Command(DeliveryCommand::AddDeliveryDetail {
            order_id: O.into(),
            vendor_id: Some(vendor.into()),
            location: location.into(),
            description: "sorted".into(),
            by: "boss1".into(),
            request_id: request_id.map(String::from),
        })
    }
    fn end_of(vendor: Option<&str>) -> DeliveryInput {
        DeliveryInput::Command(DeliveryCommand::EndDelivery {
            order_id: O.into(),
            vendor_id: vendor.map(String::from),
            by: "boss1".into(),
        })
    }
    fn end() -> DeliveryInput {
        end_of(Some("v1"))
    }

    fn step(
        state: &mut Option<DeliveryState>,
        input: DeliveryInput,
        now: Millis,
    ) -> Vec<DeliveryEffect> {
        let out = Delivery.handle(state.take(), &input, now);
        if let Some(r) = out.rejection {
            panic!("{input:?}: {r}");
        }
        *state = out.state;
        out.effects
    }
    fn decide(
        state: &Option<DeliveryState>,
        input: &DeliveryInput,
        now: Millis,
    ) -> Result<Vec<DeliveryFact>, Rejection> {
        Delivery.decide(state, input, now)
    }
    fn code(state: &Option<DeliveryState>, input: DeliveryInput) -> &'static str {
        decide(state, &input, 0).unwrap_err().code()
    }
    fn replies(effects: &[DeliveryEffect]) -> Vec<&OrderReply> {
        effects
            .iter()
            .filter_map(|e| match e {
                DeliveryEffect::Reply(r) => Some(r),
                _ => None,
            })
            .collect()
    }
    fn shipment_of<'a>(s: &'a Option<DeliveryState>, vendor: &str) -> &'a Shipment {
        s.as_ref()
            .unwrap()
            .shipments
            .iter()
            .find(|x| x.vendor_id == vendor)
            .unwrap()
    }

    /// A command published around the gateway meets the same character rule: one visible line
    /// for a start's tracking number and a detail's location, visible text (lines and tabs
    /// allowed) for a detail's description.
    #[test]
    fn invisible_characters_are_refused() {
        let mut s = None;
        step(&mut s, confirmed(), 1);
        assert_eq!(code(&s, start("T\u{200B}1")), "INVALID");
        assert_eq!(code(&s, start("T1\u{202E}")), "INVALID");
        assert_eq!(code(&s, start("T1\nT2")), "INVALID");
        step(&mut s, start("한진1234"), 2);
        assert_eq!(code(&s, detail("Seoul\u{FEFF}")), "INVALID");
        let described = |description: &str| {
            DeliveryInput::Command(DeliveryCommand::AddDeliveryDetail {
                order_id: O.into(),
                vendor_id: Some("v1".into()),
                location: "서울".into(),
                description: description.into(),
                by: "boss1".into(),
                request_id: None,
            })
        };
        assert_eq!(code(&s, described("sorted\u{200D}")), "INVALID");
        assert_eq!(code(&s, described("sorted\r\n")), "INVALID");
        step(&mut s, described("분류 완료\n\tcentre d'Évry"), 3);
        assert_eq!(shipment_of(&s, "v1").details.len(), 1);
    }

    #[test]
    fn confirmed_order_to_delivered() {
        let mut s = None;
        assert_eq!(step(&mut s, confirmed(), 1), vec![]);
        assert_eq!(s.as_ref().unwrap().status, Pending);
        assert_eq!(shipment_of(&s, "v1").lines[0].product_id, "p-v1");
        assert_eq!(step(&mut s, confirmed(), 1), vec![]);
        assert_eq!(code(&s, detail("Seoul")), "INVALID_TRANSITION");
        assert_eq!(code(&s, end()), "INVALID_TRANSITION");

        let out = step(&mut s, start("T1"), 2);
        assert_eq!(
            out,
            vec![
                DeliveryEffect::Event(DeliveryEvent::ShipmentStarted {
                    order_id: O.into(),
                    vendor_id: "v1".into(),
                    username: "ann1".into(),
                    email: "ann@x.io".into(),
                    carrier: Carrier::CjLogistics,
                    delivery_type: DeliveryType::Courier,
                    tracking_number: "T1".into(),
                    shipping: Some(address()),
                }),
                DeliveryEffect::Reply(OrderReply::DeliveryStarted { order_id: O.into() })
            ]
        );
        assert_eq!(s.as_ref().unwrap().status, InTransit);
        assert_eq!(step(&mut s, start("T1"), 3), vec![]);
        assert_eq!(code(&s, start("T2")), "INVALID_TRANSITION");
        // Too late to cancel goods on their way.
        assert_eq!(step(&mut s, cancelled(), 3), vec![]);

        step(&mut s, detail("Seoul hub"), 4);
        step(&mut s, detail("Busan hub"), 5);
        let out = step(&mut s, end(), 6);
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(matches!(
            &out[0],
            DeliveryEffect::Event(DeliveryEvent::ShipmentDelivered { vendor_id, tracking_number: Some(t), .. })
                if vendor_id == "v1" && t == "T1"
        ));
        assert!(matches!(
            &out[1],
            DeliveryEffect::Event(DeliveryEvent::DeliveryCompleted { .. })
        ));
        assert_eq!(
            out[2],
            DeliveryEffect::Reply(OrderReply::DeliveryCompleted { order_id: O.into() })
        );
        assert_eq!(step(&mut s, end(), 7), vec![]);
        assert_eq!(code(&s, detail("x")), "INVALID_TRANSITION");

        let d = s.unwrap();
        assert_eq!(d.shipments[0].details[0].by, "boss1");
        let v = d.to_view(&ViewMeta::default());
        assert_eq!(v.status, Delivered);
        assert_eq!(v.shipping, Some(address()));
        let sv = &v.shipments[0];
        assert_eq!((sv.started_at, sv.delivered_at), (Some(2), Some(6)));
        assert_eq!(sv.tracking_number.as_deref(), Some("T1"));
        assert_eq!(sv.carrier, Some(Carrier::CjLogistics));
        assert_eq!(
            sv.details
                .iter()
                .map(|d| d.location.as_str())
                .collect::<Vec<_>>(),
            ["Seoul hub", "Busan hub"]
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<DeliveryState>(&json).unwrap(), d);
    }

    /// Two vendors: the saga hears SHIPPING at the first start and COMPLETED at the last
    /// arrival, once each; every shipment's step is its own mail event.
    #[test]
    fn the_order_ships_at_the_first_start_and_completes_at_the_last_arrival() {
        let mut s = None;
        step(&mut s, confirmed_by(&["v1", "v2"]), 1);
        assert_eq!(s.as_ref().unwrap().shipments.len(), 2);
        assert_eq!(shipment_of(&s, "v2").lines[0].product_id, "p-v2");

        let out = step(&mut s, start_of(Some("v2"), "B-2"), 2);
        assert_eq!(
            replies(&out),
            vec![&OrderReply::DeliveryStarted { order_id: O.into() }]
        );
        assert_eq!(
            (shipment_of(&s, "v1").status, shipment_of(&s, "v2").status),
            (Pending, InTransit)
        );
        let out = step(&mut s, start_of(Some("v1"), "A-1"), 3);
        assert!(replies(&out).is_empty(), "the order already ships: {out:?}");
        assert!(matches!(
            &out[..],
            [DeliveryEffect::Event(DeliveryEvent::ShipmentStarted { vendor_id, tracking_number, .. })]
                if vendor_id == "v1" && tracking_number == "A-1"
        ));

        let out = step(&mut s, end_of(Some("v1")), 4);
        assert!(replies(&out).is_empty(), "v2 is still on its way: {out:?}");
        assert_eq!(out.len(), 1);
        assert_eq!(s.as_ref().unwrap().status, InTransit);
        let out = step(&mut s, end_of(Some("v2")), 5);
        assert_eq!(
            replies(&out),
            vec![&OrderReply::DeliveryCompleted { order_id: O.into() }]
        );
        assert_eq!(
            out.iter()
                .filter(|e| matches!(
                    e,
                    DeliveryEffect::Event(DeliveryEvent::DeliveryCompleted { .. })
                ))
                .count(),
            1
        );
        assert_eq!(s.as_ref().unwrap().status, Delivered);
        // A repeated end changes nothing and tells nobody again.
        assert_eq!(step(&mut s, end_of(Some("v2")), 6), vec![]);
    }

    /// A command names its vendor's shipment and moves nothing else; a vendor the order has no
    /// lines of has no shipment; a command without a vendor (written before shipments) is
    /// refused on an order of several.
    #[test]
    fn a_vendor_acts_on_its_own_shipment_only() {
        let mut s = None;
        step(&mut s, confirmed_by(&["v1", "v2"]), 1);
        assert_eq!(code(&s, start_of(Some("v9"), "X")), "NOT_FOUND");
        assert_eq!(code(&s, start_of(None, "X")), "CONFLICT");
        assert_eq!(code(&s, end_of(None)), "CONFLICT");
        step(&mut s, start_of(Some("v1"), "A-1"), 2);
        // v2's shipment has not started: its details and end are refused, v1's go on.
        assert_eq!(
            code(&s, detail_with("v2", "hub", None)),
            "INVALID_TRANSITION"
        );
        assert_eq!(code(&s, end_of(Some("v2"))), "INVALID_TRANSITION");
        step(&mut s, detail_with("v1", "hub", None), 3);
        assert!(shipment_of(&s, "v2").details.is_empty());
        assert_eq!(shipment_of(&s, "v2").status, Pending);

        // A single-vendor order takes a command without a vendor as its only shipment's.
        let mut one = None;
        step(&mut one, confirmed(), 1);
        step(&mut one, start_of(None, "T1"), 2);
        assert_eq!(shipment_of(&one, "v1").status, InTransit);
        step(&mut one, end_of(None), 3);
        assert_eq!(one.unwrap().status, Delivered);
    }

    #[test]
    fn cancel_while_pending() {
        let mut s = None;
        assert_eq!(step(&mut s, cancelled(), 1), vec![]);
        assert!(s.is_none());
        step(&mut s, confirmed(), 1);
        step(&mut s, cancelled(), 2);
        assert_eq!(s.as_ref().unwrap().status, Cancelled);
        assert_eq!(code(&s, start("T1")), "INVALID_TRANSITION");
        assert_eq!(code(&s, end()), "INVALID_TRANSITION");
    }

    /// No shipment has started: every shipment is cancelled and the saga told once, so it
    /// refunds once.
    #[test]
    fn a_cancel_request_before_any_start_cancels_every_shipment_once() {
        let mut s = None;
        step(&mut s, confirmed_by(&["v1", "v2"]), 1);
        assert_eq!(
            step(&mut s, cancel_requested(), 2),
            vec![DeliveryEffect::Reply(OrderReply::DeliveryCancelled {
                order_id: O.into()
            })]
        );
        let d = s.as_ref().unwrap();
        assert_eq!(d.status, Cancelled);
        assert!(d.shipments.iter().all(|x| x.status == Cancelled));
        // A redelivered request, and the saga's OrderCancelled that follows: nothing new.
        assert_eq!(step(&mut s, cancel_requested(), 3), vec![]);
        assert_eq!(step(&mut s, cancelled(), 3), vec![]);
        // The vendors' starts lost the race: refused.
        assert_eq!(code(&s, start_of(Some("v1"), "T1")), "INVALID_TRANSITION");
        assert_eq!(code(&s, start_of(Some("v2"), "T2")), "INVALID_TRANSITION");
    }

    #[test]
    fn a_cancel_request_after_any_start_is_refused() {
        // The race: one vendor's StartDelivery is processed before the cancel request.
        for delivered in [false, true] {
            let mut s = None;
            step(&mut s, confirmed_by(&["v1", "v2"]), 1);
            step(&mut s, start_of(Some("v2"), "T1"), 2);
            if delivered {
                step(&mut s, end_of(Some("v2")), 3);
            }
            let before = s.clone();
            let refusal = vec![DeliveryEffect::Reply(OrderReply::DeliveryCancelRefused {
                order_id: O.into(),
                reason: ALREADY_STARTED.into(),
            })];
            assert_eq!(step(&mut s, cancel_requested(), 4), refusal);
            assert_eq!(s, before, "a refusal changes nothing");
            assert_eq!(shipment_of(&s, "v1").status, Pending, "v1 may still ship");
            // Redelivered: refused again, the same way.
            assert_eq!(step(&mut s, cancel_requested(), 5), refusal);
        }
    }

    #[test]
    fn details_are_refused_past_the_bounds() {
        let mut s = None;
        step(&mut s, confirmed_by(&["v1", "v2", "v3"]), 1);
        for v in ["v1", "v2", "v3"] {
            step(&mut s, start_of(Some(v), "T1"), 2);
        }
        for i in 0..MAX_DETAILS {
            step(&mut s, detail_with("v1", &format!("hub {i}"), None), 3);
        }
        assert_eq!(shipment_of(&s, "v1").details.len(), MAX_DETAILS);
        let before = s.clone();
        let refused = decide(&s, &detail("one too many"), 500).unwrap_err();
        assert_eq!(refused.code(), "CONFLICT");
        assert_eq!(
            refused.to_string(),
            "conflict: the shipment already has 50 details, the most it keeps is 50"
        );
        assert_eq!(s, before);
        for i in 0..MAX_DELIVERY_DETAILS - MAX_DETAILS {
            step(&mut s, detail_with("v2", &format!("hub {i}"), None), 4);
        }
        let refused = decide(&s, &detail_with("v3", "x", None), 500).unwrap_err();
        assert_eq!(refused.code(), "CONFLICT");
        assert!(refused.to_string().contains("the most they keep is 100"));
        // The shipments themselves go on.
        step(&mut s, end(), 600);
        assert_eq!(shipment_of(&s, "v1").status, Delivered);
    }

    #[test]
    fn rejections() {
        let none = None;
        assert_eq!(code(&none, start("T1")), "NOT_FOUND");
        assert_eq!(code(&none, end()), "NOT_FOUND");
        let mut s = None;
        step(&mut s, confirmed(), 1);
        assert_eq!(code(&s, start(" ")), "INVALID");
        // Out of order: the gateway accepts these, this is where they are refused.
        assert_eq!(code(&s, end()), "INVALID_TRANSITION", "end while PENDING");
        assert_eq!(code(&s, detail("Seoul")), "INVALID_TRANSITION");
        step(&mut s, start("T1"), 2);
        assert_eq!(code(&s, detail("")), "INVALID");
        let no_by = DeliveryInput::Command(DeliveryCommand::EndDelivery {
            order_id: O.into(),
            vendor_id: Some("v1".into()),
            by: "".into(),
        });
        assert_eq!(code(&s, no_by), "INVALID");
        let completed = DeliveryInput::Order(OrderEvent::OrderCompleted {
            order_id: O.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
        });
        assert_eq!(step(&mut s, completed, 3), vec![]);
    }

    #[test]
    fn a_detail_repeated_under_its_request_id_is_added_once() {
        let mut s = None;
        step(&mut s, confirmed(), 1);
        step(&mut s, start("T-1"), 2);
        step(&mut s, detail_with("v1", "Seoul hub", Some("r-1")), 3);
        step(&mut s, detail_with("v1", "Seoul hub", Some("r-1")), 4);
        step(&mut s, detail_with("v1", "Busan hub", Some("r-2")), 5);
        step(&mut s, detail("Busan hub"), 6);
        let locations: Vec<&str> = shipment_of(&s, "v1")
            .details
            .iter()
            .map(|d| d.location.as_str())
            .collect();
        assert_eq!(locations, ["Seoul hub", "Busan hub", "Busan hub"]);
    }

    /// A value of the single-delivery store still reads: one shipment per vendor in the old
    /// status with the old start, details and end; a free-text carrier that names no enum value
    /// is kept as none. An order confirmed before shipments (no lines) gets empty shipments.
    #[test]
    fn a_delivery_stored_before_shipments_still_reads() {
        let old = serde_json::json!({
            "order_id": "o1", "username": "ann1", "email": "ann@x.io",
            "vendor_ids": ["v1", "v2"], "status": "IN_TRANSIT",
            "shipment": {"carrier": "CJ", "delivery_type": "parcel", "tracking_number": "T1",
                         "by": "boss1", "at": 5},
            "details": [{"at": 6, "location": "hub", "description": "sorted", "by": "boss1"}]
        });
        let mut s = Some(serde_json::from_value::<DeliveryState>(old).unwrap());
        let d = s.as_ref().unwrap();
        assert_eq!(d.shipments.len(), 2);
        for x in &d.shipments {
            assert_eq!(x.status, InTransit);
            let st = x.start.as_ref().unwrap();
            assert_eq!(
                (st.carrier, st.delivery_type),
                (Some(Carrier::CjLogistics), None)
            );
            assert_eq!((st.tracking_number.as_str(), x.details.len()), ("T1", 1));
        }
        // It goes on as shipments: v1 arrives, then v2 completes the order.
        step(&mut s, end_of(Some("v1")), 7);
        let out = step(&mut s, end_of(Some("v2")), 8);
        assert_eq!(
            replies(&out),
            vec![&OrderReply::DeliveryCompleted { order_id: O.into() }]
        );

        let pending = serde_json::json!({
            "order_id": "o1", "username": "ann1", "email": "ann@x.io",
            "vendor_ids": ["v1"], "status": "PENDING",
            "shipment": {"carrier": "DHL", "delivery_type": "STANDARD", "tracking_number": "T",
                         "by": "b", "at": 1}
        });
        let d: DeliveryState = serde_json::from_value(pending).unwrap();
        assert_eq!(d.shipments[0].start.as_ref().unwrap().carrier, None);
        // An OrderConfirmed from before shipments (no lines, no address).
        let old_event: OrderEvent = serde_json::from_value(serde_json::json!({
            "type": "OrderConfirmed", "order_id": "o1", "username": "ann1",
            "email": "ann@x.io", "amount": 700, "vendor_ids": ["v1"]
        }))
        .unwrap();
        let mut s = None;
        step(&mut s, DeliveryInput::Order(old_event), 1);
        assert!(shipment_of(&s, "v1").lines.is_empty());
    }

    #[test]
    fn a_manager_sees_their_vendors_shipments_only() {
        let mut s = None;
        step(&mut s, confirmed_by(&["v1", "v2"]), 1);
        let v = s.unwrap().to_view(&ViewMeta::default());
        let share = vendor_share(&v, &["v2".to_string()]);
        assert_eq!(share.vendor_ids, ["v2"]);
        assert_eq!(share.shipments.len(), 1);
        assert_eq!(share.shipments[0].vendor_id, "v2");
        assert_eq!(share.shipping, v.shipping);
    }
}
