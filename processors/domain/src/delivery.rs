//! Deliveries, keyed by order id: made from the saga's `OrderConfirmed`, moved by the vendor (or
//! a MASTER) through PENDING -> IN_TRANSIT -> DELIVERED. The gateway checks that `by` may act on
//! the delivery; it is kept here so every step says who did it.

use pickple_schemas::{
    DeliveryCommand, DeliveryDetail, DeliveryEvent, DeliveryStatus, DeliveryView, Millis,
    OrderEvent, OrderReply,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub order_id: String,
    pub username: String,
    /// Kept for the notification e-mails the delivery events lead to.
    pub email: String,
    pub vendor_ids: Vec<String>,
    pub status: DeliveryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    pub carrier: String,
    pub delivery_type: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryFact {
    Created {
        order_id: String,
        username: String,
        email: String,
        vendor_ids: Vec<String>,
    },
    Started(Shipment),
    DetailAdded(Detail),
    Delivered(Step),
    Cancelled {
        reason: String,
        at: Millis,
    },
    /// A cancel request came after the start: refused, the goods stay on their way. A fact
    /// though it changes nothing, because the refusal is what the saga is told.
    CancelRefused {
        reason: String,
        at: Millis,
    },
}

pub const ALREADY_STARTED: &str = "the delivery has already started";

/// The most tracking details a delivery keeps. Past it, `AddDeliveryDetail` is refused (a
/// `CONFLICT`, shown on the view): a delivery is one parcel's trip, and a hundred stops is
/// already far more than any trip makes, while a list without a bound would let a vendor grow
/// one stored value (and its view) forever. With the gateway's limits (200 characters of
/// location, 1,000 of description) a full list stays near 130 KB, under the runtime's
/// 256 KiB size guard.
pub const MAX_DETAILS: usize = 100;

// The shape rules of the delivery commands; the gateway checks its requests with these same
// functions, so a command it accepts is never refused here for its shape.

/// A start's carrier, delivery type or tracking number, or a detail's location: not blank, and
/// one line of visible text (no control or format characters: see [`visible_text`]).
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
                ..
            }) => Ok(match state {
                Some(_) => vec![],
                None => vec![DeliveryFact::Created {
                    order_id: order_id.clone(),
                    username: username.clone(),
                    email: email.clone(),
                    vendor_ids: vendor_ids.clone(),
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
            // This processor is the single writer of "has the delivery started", so it, not the
            // saga, decides a paid order's cancel: whichever of StartDelivery and this request it
            // processes first wins, and the saga refunds only on its DeliveryCancelled.
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
                        carrier,
                        delivery_type,
                        tracking_number,
                        by,
                        ..
                    } => {
                        for (what, v) in [
                            ("carrier", carrier),
                            ("delivery type", delivery_type),
                            ("tracking number", tracking_number),
                        ] {
                            check_line(what, v)?;
                        }
                        non_empty("by", by)?;
                        let shipment = Shipment {
                            carrier: carrier.trim().to_string(),
                            delivery_type: delivery_type.trim().to_string(),
                            tracking_number: tracking_number.trim().to_string(),
                            by: by.clone(),
                            at: now,
                        };
                        match (&d.status, &d.shipment) {
                            (Pending, _) => Ok(vec![DeliveryFact::Started(shipment)]),
                            // The same start again (a retried request): nothing new.
                            (InTransit, Some(s))
                                if s.carrier == shipment.carrier
                                    && s.tracking_number == shipment.tracking_number =>
                            {
                                Ok(vec![])
                            }
                            (status, _) => Err(Rejection::transition(format!(
                                "a {status:?} delivery cannot start"
                            ))),
                        }
                    }
                    DeliveryCommand::AddDeliveryDetail {
                        location,
                        description,
                        by,
                        request_id,
                        ..
                    } => {
                        check_line("location", location)?;
                        check_description(description)?;
                        non_empty("by", by)?;
                        if request_id.is_some()
                            && d.details.iter().any(|x| x.request_id == *request_id)
                        {
                            return Ok(vec![]);
                        }
                        if d.status != InTransit {
                            return Err(Rejection::transition(
                                "details can only be added while in transit",
                            ));
                        }
                        if d.details.len() >= MAX_DETAILS {
                            return Err(Rejection::conflict(format!(
                                "the delivery already has {} details, the most it keeps is {MAX_DETAILS}",
                                d.details.len()
                            )));
                        }
                        Ok(vec![DeliveryFact::DetailAdded(Detail {
                            at: now,
                            location: location.trim().to_string(),
                            description: description.trim().to_string(),
                            by: by.clone(),
                            request_id: request_id.clone(),
                        })])
                    }
                    DeliveryCommand::EndDelivery { by, .. } => {
                        non_empty("by", by)?;
                        match d.status {
                            InTransit => Ok(vec![DeliveryFact::Delivered(Step {
                                by: by.clone(),
                                at: now,
                            })]),
                            Delivered => Ok(vec![]),
                            status => Err(Rejection::transition(format!(
                                "a {status:?} delivery cannot end"
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
        } = fact
        {
            return Some(DeliveryState {
                order_id: order_id.clone(),
                username: username.clone(),
                email: email.clone(),
                vendor_ids: vendor_ids.clone(),
                status: DeliveryStatus::Pending,
                shipment: None,
                details: Vec::new(),
                delivered: None,
            });
        }
        let mut d = state?;
        match fact {
            DeliveryFact::Created { .. } => {}
            DeliveryFact::Started(s) => {
                d.status = DeliveryStatus::InTransit;
                d.shipment = Some(s.clone());
            }
            DeliveryFact::DetailAdded(detail) => d.details.push(detail.clone()),
            DeliveryFact::Delivered(step) => {
                d.status = DeliveryStatus::Delivered;
                d.delivered = Some(step.clone());
            }
            DeliveryFact::Cancelled { .. } => d.status = DeliveryStatus::Cancelled,
            DeliveryFact::CancelRefused { .. } => {}
        }
        Some(d)
    }

    /// Records for the notification e-mails and the saga's replies.
    fn effects(
        _before: &Option<DeliveryState>,
        fact: &DeliveryFact,
        after: &Option<DeliveryState>,
    ) -> Vec<DeliveryEffect> {
        let Some(after) = after else {
            return Vec::new();
        };
        let order_id = after.order_id.clone();
        match fact {
            DeliveryFact::Started(s) => vec![
                DeliveryEffect::Event(DeliveryEvent::DeliveryStarted {
                    order_id: order_id.clone(),
                    username: after.username.clone(),
                    email: after.email.clone(),
                    carrier: s.carrier.clone(),
                    tracking_number: s.tracking_number.clone(),
                }),
                DeliveryEffect::Reply(OrderReply::DeliveryStarted { order_id }),
            ],
            DeliveryFact::Delivered(_) => vec![
                DeliveryEffect::Event(DeliveryEvent::DeliveryCompleted {
                    order_id: order_id.clone(),
                    username: after.username.clone(),
                    email: after.email.clone(),
                }),
                DeliveryEffect::Reply(OrderReply::DeliveryCompleted { order_id }),
            ],
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
    /// `by` of each detail is not part of the public view (schemas' `DeliveryDetail`).
    pub fn to_view(&self, meta: &ViewMeta) -> DeliveryView {
        let s = self.shipment.as_ref();
        DeliveryView {
            order_id: self.order_id.clone(),
            username: self.username.clone(),
            vendor_ids: self.vendor_ids.clone(),
            status: self.status,
            carrier: s.map(|s| s.carrier.clone()),
            delivery_type: s.map(|s| s.delivery_type.clone()),
            tracking_number: s.map(|s| s.tracking_number.clone()),
            details: self
                .details
                .iter()
                .map(|d| DeliveryDetail {
                    at: d.at,
                    location: d.location.clone(),
                    description: d.description.clone(),
                })
                .collect(),
            started_at: s.map(|s| s.at),
            delivered_at: self.delivered.as_ref().map(|d| d.at),
            rejection: meta.rejection.clone(),
            version: meta.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    const O: &str = "o1";

    fn confirmed() -> DeliveryInput {
        DeliveryInput::Order(OrderEvent::OrderConfirmed {
            order_id: O.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            amount: 700,
            vendor_ids: vec!["v1".into()],
        })
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
    fn start(tracking: &str) -> DeliveryInput {
        DeliveryInput::Command(DeliveryCommand::StartDelivery {
            order_id: O.into(),
            carrier: "CJ".into(),
            delivery_type: "parcel".into(),
            tracking_number: tracking.into(),
            by: "boss1".into(),
        })
    }
    fn detail(location: &str) -> DeliveryInput {
        detail_with(location, None)
    }
    fn detail_with(location: &str, request_id: Option<&str>) -> DeliveryInput {
        DeliveryInput::Command(DeliveryCommand::AddDeliveryDetail {
            order_id: O.into(),
            location: location.into(),
            description: "sorted".into(),
            by: "boss1".into(),
            request_id: request_id.map(String::from),
        })
    }
    fn end() -> DeliveryInput {
        DeliveryInput::Command(DeliveryCommand::EndDelivery {
            order_id: O.into(),
            by: "boss1".into(),
        })
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

    /// A command published around the gateway meets the same character rule: one visible line
    /// for a start's fields and a detail's location, visible text (lines and tabs allowed) for
    /// a detail's description.
    #[test]
    fn invisible_characters_are_refused() {
        let mut s = None;
        step(&mut s, confirmed(), 1);
        assert_eq!(code(&s, start("T\u{200B}1")), "INVALID");
        assert_eq!(code(&s, start("T1\u{202E}")), "INVALID");
        assert_eq!(code(&s, start("T1\nT2")), "INVALID");
        let mut carrier = start("T1");
        if let DeliveryInput::Command(DeliveryCommand::StartDelivery { carrier: c, .. }) =
            &mut carrier
        {
            *c = "C\u{2066}J".into();
        }
        assert_eq!(code(&s, carrier), "INVALID");
        step(&mut s, start("한진1234"), 2);
        assert_eq!(code(&s, detail("Seoul\u{FEFF}")), "INVALID");
        let described = |description: &str| {
            DeliveryInput::Command(DeliveryCommand::AddDeliveryDetail {
                order_id: O.into(),
                location: "서울".into(),
                description: description.into(),
                by: "boss1".into(),
                request_id: None,
            })
        };
        assert_eq!(code(&s, described("sorted\u{200D}")), "INVALID");
        assert_eq!(code(&s, described("sorted\r\n")), "INVALID");
        step(&mut s, described("분류 완료\n\tcentre d'Évry"), 3);
        assert_eq!(s.as_ref().unwrap().details.len(), 1);
    }

    #[test]
    fn confirmed_order_to_delivered() {
        let mut s = None;
        assert_eq!(step(&mut s, confirmed(), 1), vec![]);
        assert_eq!(s.as_ref().unwrap().status, Pending);
        assert_eq!(step(&mut s, confirmed(), 1), vec![]);
        assert_eq!(code(&s, detail("Seoul")), "INVALID_TRANSITION");
        assert_eq!(code(&s, end()), "INVALID_TRANSITION");

        let out = step(&mut s, start("T1"), 2);
        assert_eq!(
            out,
            vec![
                DeliveryEffect::Event(DeliveryEvent::DeliveryStarted {
                    order_id: O.into(),
                    username: "ann1".into(),
                    email: "ann@x.io".into(),
                    carrier: "CJ".into(),
                    tracking_number: "T1".into()
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
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1],
            DeliveryEffect::Reply(OrderReply::DeliveryCompleted { order_id: O.into() })
        );
        assert_eq!(step(&mut s, end(), 7), vec![]);
        assert_eq!(code(&s, detail("x")), "INVALID_TRANSITION");

        let d = s.unwrap();
        assert_eq!(d.details[0].by, "boss1");
        let v = d.to_view(&ViewMeta::default());
        assert_eq!(v.status, Delivered);
        assert_eq!((v.started_at, v.delivered_at), (Some(2), Some(6)));
        assert_eq!(v.tracking_number.as_deref(), Some("T1"));
        assert_eq!(
            v.details
                .iter()
                .map(|d| d.location.as_str())
                .collect::<Vec<_>>(),
            ["Seoul hub", "Busan hub"]
        );
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<DeliveryState>(&json).unwrap(), d);
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

    #[test]
    fn a_cancel_request_on_a_pending_delivery_cancels_it() {
        let mut s = None;
        step(&mut s, confirmed(), 1);
        assert_eq!(
            step(&mut s, cancel_requested(), 2),
            vec![DeliveryEffect::Reply(OrderReply::DeliveryCancelled {
                order_id: O.into()
            })]
        );
        assert_eq!(s.as_ref().unwrap().status, Cancelled);
        // A redelivered request, and the saga's OrderCancelled that follows: nothing new.
        assert_eq!(step(&mut s, cancel_requested(), 3), vec![]);
        assert_eq!(step(&mut s, cancelled(), 3), vec![]);
        // The vendor's start lost the race: refused.
        assert_eq!(code(&s, start("T1")), "INVALID_TRANSITION");
    }

    #[test]
    fn a_cancel_request_after_the_start_is_refused() {
        // The race: StartDelivery is processed before the cancel request.
        for delivered in [false, true] {
            let mut s = None;
            step(&mut s, confirmed(), 1);
            step(&mut s, start("T1"), 2);
            if delivered {
                step(&mut s, end(), 3);
            }
            let before = s.clone();
            let refusal = vec![DeliveryEffect::Reply(OrderReply::DeliveryCancelRefused {
                order_id: O.into(),
                reason: ALREADY_STARTED.into(),
            })];
            assert_eq!(step(&mut s, cancel_requested(), 4), refusal);
            assert_eq!(s, before, "a refusal changes nothing");
            // Redelivered: refused again, the same way.
            assert_eq!(step(&mut s, cancel_requested(), 5), refusal);
        }
    }

    #[test]
    fn details_are_refused_past_the_bound() {
        let mut s = None;
        step(&mut s, confirmed(), 1);
        step(&mut s, start("T1"), 2);
        for i in 0..MAX_DETAILS {
            step(&mut s, detail(&format!("hub {i}")), 3 + i as Millis);
        }
        assert_eq!(s.as_ref().unwrap().details.len(), MAX_DETAILS);
        let before = s.clone();
        let refused = decide(&s, &detail("one too many"), 500).unwrap_err();
        assert_eq!(refused.code(), "CONFLICT");
        assert_eq!(
            refused.to_string(),
            "conflict: the delivery already has 100 details, the most it keeps is 100"
        );
        assert_eq!(s, before);
        // The delivery itself goes on.
        step(&mut s, end(), 600);
        assert_eq!(s.unwrap().status, Delivered);
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
        step(&mut s, detail_with("Seoul hub", Some("r-1")), 3);
        step(&mut s, detail_with("Seoul hub", Some("r-1")), 4);
        step(&mut s, detail_with("Busan hub", Some("r-2")), 5);
        step(&mut s, detail("Busan hub"), 6);
        let locations: Vec<&str> = s
            .as_ref()
            .unwrap()
            .details
            .iter()
            .map(|d| d.location.as_str())
            .collect();
        assert_eq!(locations, ["Seoul hub", "Busan hub", "Busan hub"]);
    }
}
