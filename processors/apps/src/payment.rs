//! The payment app, keyed by order id: `payment-commands` from the saga are decided by the
//! domain (which call, with which idempotency key), the provider is called through the
//! [`provider::Guarded`] adapter (timeout + circuit breaker), and the outcome is stored and
//! answered on `order-replies`. Every step that changes the payment, or refuses a command on an
//! existing one, publishes its view on `view-payments` (after the answer).
//!
//! A refused Authorize (e.g. after a refund) is answered as a decline carrying the reason, so the
//! order's view shows it. A refund whose provider call fails is retried (the transaction aborts
//! and the command comes again after the runtime's back-off), with the same key.

pub mod provider;

use pickple_domain::payment::{
    provider_call, Payment, PaymentInput, PaymentState, ProviderCall, ProviderOutcome,
};
use pickple_domain::Aggregate;
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::topic::{ORDER_REPLIES, PAYMENT_COMMANDS, VIEW_PAYMENTS};
use pickple_schemas::PaymentCommand;
use pickple_topics::catalogue::app;

use crate::state::checked_key;
use provider::Guarded;

pub const STORE: &str = "payments";

pub fn spec() -> AppSpec {
    AppSpec::new(app::PAYMENT.name, &[PAYMENT_COMMANDS], &[STORE])
}

pub struct PaymentProcessor {
    provider: Guarded,
}

impl PaymentProcessor {
    pub fn new(provider: Guarded) -> Self {
        PaymentProcessor { provider }
    }

    fn call(&self, call: &ProviderCall) -> ProviderOutcome {
        match call {
            ProviderCall::Authorize {
                idempotency_key,
                amount,
                payment_token,
            } => self
                .provider
                .authorize(idempotency_key, *amount, payment_token),
            ProviderCall::Refund {
                idempotency_key,
                payment_id,
                amount,
            } => self.provider.refund(idempotency_key, payment_id, *amount),
        }
    }
}

impl Processor for PaymentProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let command: PaymentCommand = record.decode()?;
        let key = checked_key(record, command.order_id())?.to_string();
        let state: Option<PaymentState> = ctx.get(STORE, &key)?;
        // A refused command needs no call: handling it below refuses it again and answers why.
        let outcome = match provider_call(state.as_ref(), &command) {
            Ok(Some(call)) => Some(self.call(&call)),
            Ok(None) | Err(_) => None,
        };
        if let Some(ProviderOutcome::Unavailable { reason }) = &outcome {
            tracing::warn!(order = %key, %reason, "payment provider unavailable");
        }
        let input = PaymentInput { command, outcome };
        let out = Payment.handle(state, &input, ctx.now());
        if let (Some(outcome), []) = (&input.outcome, &out.effects[..]) {
            // A call the saga is not told about: a refund the provider did not do.
            let ProviderOutcome::Unavailable { reason } = outcome else {
                return Err(ProcessError::Invalid(format!(
                    "unexpected provider outcome {outcome:?}"
                )));
            };
            return Err(ProcessError::Retry(format!("refund not done: {reason}")));
        }
        for reply in &out.effects {
            ctx.send(ORDER_REPLIES, &key, reply);
        }
        // A step that changed the payment is a new version of its view; so is a command refused
        // on an existing payment (the view says why). A refusal of a payment that does not exist
        // has no view to show it on: the saga's answer carries the reason.
        let event_type = match (&out.rejection, out.facts.is_empty()) {
            (Some(_), _) => "PaymentRejected",
            (None, false) => "PaymentUpdated",
            (None, true) => return Ok(()),
        };
        if let Some(mut after) = out.state {
            after.stamp(ctx.now(), out.rejection.as_ref());
            ctx.put(STORE, &key, &after);
            ctx.send_value(VIEW_PAYMENTS, &key, event_type, &after.to_view(&key));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::provider::{FakeProvider, Guarded};
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::OrderReply;

    fn driver() -> (TestDriver<PaymentProcessor>, Arc<FakeProvider>) {
        let fake = Arc::new(FakeProvider::new(Duration::from_millis(200)));
        let g = Guarded::new(
            fake.clone(),
            Duration::from_millis(100),
            2,
            Duration::from_secs(60),
        );
        (TestDriver::new(PaymentProcessor::new(g), 1_000), fake)
    }
    fn authorize(o: &str, token: &str) -> PaymentCommand {
        PaymentCommand::Authorize {
            order_id: o.into(),
            amount: 700,
            payment_token: token.into(),
            username: "ann1".into(),
        }
    }
    fn refund(o: &str) -> PaymentCommand {
        PaymentCommand::Refund {
            order_id: o.into(),
            reason: "cancelled".into(),
        }
    }

    #[test]
    fn authorize_replies_keyed_by_order_and_a_redelivery_does_not_charge_twice() {
        let (mut d, fake) = driver();
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_ok"))
            .unwrap();
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_ok"))
            .unwrap();
        let replies = d.take_outputs(ORDER_REPLIES);
        assert_eq!(replies.len(), 2);
        assert!(replies.iter().all(|r| r.key_str() == "o1"));
        assert_eq!(replies[0].json(), replies[1].json());
        assert_eq!(replies[0].headers.event_type, "PaymentAuthorized");
        assert_eq!(fake.charges().len(), 1);

        d.pipe(PAYMENT_COMMANDS, "o1", &refund("o1")).unwrap();
        d.pipe(PAYMENT_COMMANDS, "o1", &refund("o1")).unwrap();
        let refunds: Vec<OrderReply> = d.take(ORDER_REPLIES);
        assert_eq!(refunds.len(), 2);
        assert!(matches!(
            refunds[0],
            OrderReply::PaymentRefunded { amount: 700, .. }
        ));
        assert_eq!(fake.refunds().len(), 1);
        // Paying again after the refund is refused, visibly.
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_ok"))
            .unwrap();
        let r: Vec<OrderReply> = d.take(ORDER_REPLIES);
        assert!(
            matches!(&r[0], OrderReply::PaymentDeclined { reason, .. } if reason.contains("refunded"))
        );
    }

    #[test]
    fn decline_then_timeout_then_open_breaker() {
        let (mut d, fake) = driver();
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_decline"))
            .unwrap();
        d.pipe(PAYMENT_COMMANDS, "o2", &authorize("o2", "tok_timeout"))
            .unwrap();
        d.pipe(PAYMENT_COMMANDS, "o3", &authorize("o3", "tok_timeout"))
            .unwrap();
        d.pipe(PAYMENT_COMMANDS, "o4", &authorize("o4", "tok_ok"))
            .unwrap();
        let r: Vec<OrderReply> = d.take(ORDER_REPLIES);
        let reasons: Vec<String> = r
            .iter()
            .map(|r| match r {
                OrderReply::PaymentDeclined { reason, .. } => reason.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons[0], "card declined");
        assert!(reasons[1].contains("timed out"), "{reasons:?}");
        assert!(reasons[3].contains("breaker"), "{reasons:?}");
        assert!(fake.charges().is_empty());
        // The decline is on record (a new key next time); the timeouts are not, though the
        // view shows them.
        assert_eq!(d.get::<PaymentState>(STORE, "o1").unwrap().declines, 1);
        assert_eq!(d.get::<PaymentState>(STORE, "o2").unwrap().declines, 0);
    }

    #[test]
    fn the_view_follows_authorize_decline_authorize_refund() {
        use pickple_schemas::{PaymentEventKind::*, PaymentView, PaymentViewStatus};
        let (mut d, _) = driver();
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_decline"))
            .unwrap();
        let views = d.take_outputs(VIEW_PAYMENTS);
        assert_eq!(views.len(), 1);
        assert_eq!(
            (views[0].key_str(), views[0].headers.event_type.as_str()),
            ("o1", "PaymentUpdated")
        );
        let v: PaymentView = serde_json::from_value(views[0].json()).unwrap();
        assert_eq!(
            (v.status, v.decline_reason.as_deref(), v.version),
            (PaymentViewStatus::Declined, Some("card declined"), 1)
        );
        assert_eq!((v.username.as_str(), v.amount), ("ann1", 700));

        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_ok"))
            .unwrap();
        // A redelivery changes nothing: answered again, no new view.
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_ok"))
            .unwrap();
        let views: Vec<PaymentView> = d.take(VIEW_PAYMENTS);
        assert_eq!(views.len(), 1);
        assert_eq!(
            (views[0].status, views[0].version),
            (PaymentViewStatus::Authorized, 2)
        );
        let payment_id = views[0]
            .payment_id
            .clone()
            .expect("the provider's reference");

        d.pipe(PAYMENT_COMMANDS, "o1", &refund("o1")).unwrap();
        let v = d.take::<PaymentView>(VIEW_PAYMENTS).pop().unwrap();
        assert_eq!(
            (v.status, v.refunded_amount, v.version),
            (PaymentViewStatus::Refunded, Some(700), 3)
        );
        assert_eq!(v.refund_reason.as_deref(), Some("cancelled"));
        assert_eq!(v.payment_id, Some(payment_id.clone()));
        let history: Vec<_> = v
            .history
            .iter()
            .map(|e| (e.kind, e.reason.clone(), e.payment_id.clone()))
            .collect();
        assert_eq!(
            history,
            vec![
                (AuthorizeRequested, None, None),
                (Declined, Some("card declined".to_string()), None),
                (AuthorizeRequested, None, None),
                (Authorized, None, Some(payment_id)),
                (RefundRequested, Some("cancelled".to_string()), None),
                (Refunded, None, None),
            ]
        );
        // Paying after the refund is refused on the view, which stays REFUNDED.
        d.pipe(PAYMENT_COMMANDS, "o1", &authorize("o1", "tok_ok"))
            .unwrap();
        let views = d.take_outputs(VIEW_PAYMENTS);
        assert_eq!(views[0].headers.event_type, "PaymentRejected");
        let v: PaymentView = serde_json::from_value(views[0].json()).unwrap();
        assert_eq!((v.status, v.version), (PaymentViewStatus::Refunded, 4));
        assert!(v.rejection.unwrap().contains("refunded"));
        assert_eq!(d.get::<PaymentState>(STORE, "o1").unwrap().version, 4);
    }

    #[test]
    fn refund_of_nothing_is_silent_and_garbage_is_dead_lettered() {
        let (mut d, _) = driver();
        d.pipe(PAYMENT_COMMANDS, "o1", &refund("o1")).unwrap();
        assert!(d.take_outputs(ORDER_REPLIES).is_empty());
        d.pipe(PAYMENT_COMMANDS, "o2", &refund("o1")).unwrap();
        assert_eq!(d.dead_letters().len(), 1);
    }
}
