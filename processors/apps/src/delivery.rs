//! The delivery app, keyed by order id: `OrderConfirmed` on `order-events` creates the delivery,
//! `OrderCancelled` cancels a pending one, `OrderCancelRequested` cancels a pending one or is
//! refused (answered on `order-replies` either way), and `delivery-commands` move it along. It sends
//! `delivery-events` (for the e-mails) and the saga's `order-replies`, and publishes
//! `view-deliveries`.

use pickple_domain::delivery::{Delivery, DeliveryEffect, DeliveryInput, DeliveryState};
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::topic::{
    DELIVERY_COMMANDS, DELIVERY_EVENTS, ORDER_EVENTS, ORDER_REPLIES, VIEW_DELIVERIES,
};
use pickple_schemas::{DeliveryCommand, OrderEvent};
use pickple_topics::catalogue::app;

use crate::entity::{self, Entity};
use crate::state::checked_key;

pub const STORE: &str = "deliveries";

const DELIVERY: Entity = Entity {
    what: "delivery",
    store: STORE,
    view: VIEW_DELIVERIES,
    updated: "DeliveryUpdated",
    rejected: "DeliveryRejected",
};

pub fn spec() -> AppSpec {
    AppSpec::new(
        app::DELIVERY.name,
        &[ORDER_EVENTS, DELIVERY_COMMANDS],
        &[STORE],
    )
}

pub struct DeliveryProcessor;

pub fn event_order_id(e: &OrderEvent) -> &str {
    match e {
        OrderEvent::OrderConfirmed { order_id, .. }
        | OrderEvent::OrderCancelled { order_id, .. }
        | OrderEvent::OrderCompleted { order_id, .. }
        | OrderEvent::OrderCancelRequested { order_id, .. } => order_id,
    }
}

fn command_order_id(c: &DeliveryCommand) -> &str {
    match c {
        DeliveryCommand::StartDelivery { order_id, .. }
        | DeliveryCommand::AddDeliveryDetail { order_id, .. }
        | DeliveryCommand::EndDelivery { order_id, .. } => order_id,
    }
}

impl Processor for DeliveryProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let (key, input) = match record.topic {
            ORDER_EVENTS => {
                let e: OrderEvent = record.decode()?;
                let key = checked_key(record, event_order_id(&e))?.to_string();
                (key, DeliveryInput::Order(e))
            }
            _ => {
                let c: DeliveryCommand = record.decode()?;
                let key = checked_key(record, command_order_id(&c))?.to_string();
                (key, DeliveryInput::Command(c))
            }
        };
        entity::handle(
            ctx,
            &DELIVERY,
            &key,
            &Delivery,
            &input,
            DeliveryState::to_view,
            |ctx, effect| match effect {
                DeliveryEffect::Event(e) => ctx.send(DELIVERY_EVENTS, &key, e),
                DeliveryEffect::Reply(r) => ctx.send(ORDER_REPLIES, &key, r),
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::{DeliveryEvent, DeliveryStatus, DeliveryView, OrderReply};

    fn confirmed(o: &str) -> OrderEvent {
        OrderEvent::OrderConfirmed {
            order_id: o.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            amount: 700,
            vendor_ids: vec!["v1".into()],
            lines: vec![],
            shipping: None,
        }
    }
    fn start(o: &str) -> DeliveryCommand {
        DeliveryCommand::StartDelivery {
            order_id: o.into(),
            vendor_id: Some("v1".into()),
            carrier: pickple_schemas::Carrier::CjLogistics,
            delivery_type: pickple_schemas::DeliveryType::Courier,
            tracking_number: "T-1".into(),
            by: "vm01".into(),
        }
    }

    #[test]
    fn confirmed_creates_and_start_end_reply_to_the_saga() {
        let mut d = TestDriver::new(DeliveryProcessor, 1_000);
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap(); // redelivery: no-op
        d.pipe(DELIVERY_COMMANDS, "o1", &start("o1")).unwrap();
        d.pipe(
            DELIVERY_COMMANDS,
            "o1",
            &DeliveryCommand::EndDelivery {
                order_id: "o1".into(),
                vendor_id: Some("v1".into()),
                by: "vm01".into(),
            },
        )
        .unwrap();
        let views: Vec<DeliveryView> = d.take(VIEW_DELIVERIES);
        let got: Vec<(u64, DeliveryStatus)> = views.iter().map(|v| (v.version, v.status)).collect();
        assert_eq!(
            got,
            vec![
                (1, DeliveryStatus::Pending),
                (2, DeliveryStatus::InTransit),
                (3, DeliveryStatus::Delivered)
            ]
        );
        let replies = d.take_outputs(ORDER_REPLIES);
        assert!(replies.iter().all(|r| r.key_str() == "o1"));
        let replies: Vec<OrderReply> = replies
            .iter()
            .map(|o| serde_json::from_value(o.json()).unwrap())
            .collect();
        assert!(matches!(replies[0], OrderReply::DeliveryStarted { .. }));
        assert!(matches!(replies[1], OrderReply::DeliveryCompleted { .. }));
        let events: Vec<DeliveryEvent> = d.take(DELIVERY_EVENTS);
        assert!(
            matches!(&events[0], DeliveryEvent::ShipmentStarted { email, vendor_id, .. } if email == "ann@x.io" && vendor_id == "v1")
        );
        assert!(matches!(
            &events[1],
            DeliveryEvent::ShipmentDelivered { .. }
        ));
        assert!(matches!(
            &events[2],
            DeliveryEvent::DeliveryCompleted { .. }
        ));
        assert_eq!(events.len(), 3);
    }

    fn cancel_requested(o: &str) -> OrderEvent {
        OrderEvent::OrderCancelRequested {
            order_id: o.into(),
            username: "ann1".into(),
            reason: "changed my mind".into(),
        }
    }

    fn replies(d: &mut TestDriver<DeliveryProcessor>) -> Vec<OrderReply> {
        let out = d.take_outputs(ORDER_REPLIES);
        assert!(out.iter().all(|r| r.key_str() == "o1"));
        out.iter()
            .map(|o| serde_json::from_value(o.json()).unwrap())
            .collect()
    }

    #[test]
    fn a_cancel_request_cancels_a_pending_delivery_or_is_refused_after_the_start() {
        let mut d = TestDriver::new(DeliveryProcessor, 1_000);
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        d.pipe(ORDER_EVENTS, "o1", &cancel_requested("o1")).unwrap();
        assert_eq!(
            replies(&mut d),
            vec![OrderReply::DeliveryCancelled {
                order_id: "o1".into()
            }]
        );
        // The vendor's start comes too late: rejected, visibly.
        d.pipe(DELIVERY_COMMANDS, "o1", &start("o1")).unwrap();
        let views: Vec<DeliveryView> = d.take(VIEW_DELIVERIES);
        let last = views.last().unwrap();
        assert_eq!(last.status, DeliveryStatus::Cancelled);
        assert!(last.rejection.is_some());
        assert!(replies(&mut d).is_empty());

        // The race the other way: the start first, then the request.
        let mut d = TestDriver::new(DeliveryProcessor, 1_000);
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        d.pipe(DELIVERY_COMMANDS, "o1", &start("o1")).unwrap();
        d.pipe(ORDER_EVENTS, "o1", &cancel_requested("o1")).unwrap();
        assert_eq!(
            replies(&mut d),
            vec![
                OrderReply::DeliveryStarted {
                    order_id: "o1".into()
                },
                OrderReply::DeliveryCancelRefused {
                    order_id: "o1".into(),
                    reason: pickple_domain::delivery::ALREADY_STARTED.into()
                }
            ]
        );
        let views: Vec<DeliveryView> = d.take(VIEW_DELIVERIES);
        assert_eq!(views.last().unwrap().status, DeliveryStatus::InTransit);
    }

    #[test]
    fn a_detail_past_the_bound_is_refused_on_the_view() {
        let mut d = TestDriver::new(DeliveryProcessor, 1_000);
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        d.pipe(DELIVERY_COMMANDS, "o1", &start("o1")).unwrap();
        let detail = |i: usize| DeliveryCommand::AddDeliveryDetail {
            request_id: None,
            order_id: "o1".into(),
            vendor_id: Some("v1".into()),
            location: format!("hub {i}"),
            description: "sorted".into(),
            by: "vm01".into(),
        };
        for i in 0..pickple_domain::delivery::MAX_DETAILS {
            d.pipe(DELIVERY_COMMANDS, "o1", &detail(i)).unwrap();
        }
        let full = d.take::<DeliveryView>(VIEW_DELIVERIES).pop().unwrap();
        assert_eq!(
            full.shipments[0].details.len(),
            pickple_domain::delivery::MAX_DETAILS
        );
        assert_eq!(full.rejection, None);
        d.pipe(
            DELIVERY_COMMANDS,
            "o1",
            &detail(pickple_domain::delivery::MAX_DETAILS),
        )
        .unwrap();
        let refused = d.take::<DeliveryView>(VIEW_DELIVERIES).pop().unwrap();
        assert_eq!(refused.version, full.version + 1);
        assert_eq!(refused.shipments, full.shipments);
        assert!(
            refused
                .rejection
                .as_deref()
                .is_some_and(|r| r.contains("the most it keeps is 50")),
            "{:?}",
            refused.rejection
        );
        let stored = d
            .get::<crate::state::Versioned<DeliveryState>>(STORE, "o1")
            .unwrap();
        assert_eq!(
            stored.state.shipments[0].details.len(),
            pickple_domain::delivery::MAX_DETAILS
        );
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn rejections_reach_the_view_and_unknown_deliveries_the_dlq() {
        let mut d = TestDriver::new(DeliveryProcessor, 1_000);
        d.pipe(DELIVERY_COMMANDS, "o1", &start("o1")).unwrap();
        assert_eq!(d.dead_letters().len(), 1);
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        d.pipe(
            DELIVERY_COMMANDS,
            "o1",
            &DeliveryCommand::EndDelivery {
                order_id: "o1".into(),
                vendor_id: Some("v1".into()),
                by: "vm01".into(),
            },
        )
        .unwrap();
        let views: Vec<DeliveryView> = d.take(VIEW_DELIVERIES);
        assert_eq!(views[1].version, 2);
        assert_eq!(views[1].status, DeliveryStatus::Pending);
        assert!(views[1].rejection.is_some());
        // A cancel of an order never confirmed is a no-op, not an error.
        d.pipe(
            ORDER_EVENTS,
            "o2",
            &OrderEvent::OrderCancelled {
                order_id: "o2".into(),
                username: "ann1".into(),
                reason: "x".into(),
            },
        )
        .unwrap();
        assert_eq!(d.dead_letters().len(), 1);
        assert!(d.take_outputs(VIEW_DELIVERIES).is_empty());
    }
}
