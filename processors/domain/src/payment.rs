//! Payments, keyed by order id. The provider call itself is I/O and belongs to the app layer;
//! these rules say whether to call it, with which idempotency key, and what its outcome means,
//! so that a redelivered command never charges twice.
//!
//! The app asks [`provider_call`] which call a command needs, makes it (a circuit breaker, if
//! any, wraps it; when the breaker refuses, the outcome is [`ProviderOutcome::Unavailable`]),
//! then hands the command and the outcome to [`Payment`]: the facts say what to store, the
//! answer what to tell the saga.

use pickple_schemas::{Amount, Millis, OrderReply, PaymentCommand};
use serde::{Deserialize, Serialize};

use crate::rules::{check_payment_token, positive};
use crate::{Aggregate, Rejection};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// Authorize attempts the provider definitively declined. Each later attempt gets a new
    /// idempotency key, because the provider would give the old key's decline again.
    #[serde(default)]
    pub declines: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized: Option<Authorization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded: Option<Amount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub payment_id: String,
    pub amount: Amount,
}

/// A call to the payment provider that a command needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderCall {
    Authorize {
        idempotency_key: String,
        amount: Amount,
        payment_token: String,
    },
    Refund {
        idempotency_key: String,
        payment_id: String,
        amount: Amount,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProviderOutcome {
    Authorized {
        payment_id: String,
    },
    Declined {
        reason: String,
    },
    Refunded,
    /// The provider could not be reached or timed out (or the breaker is open). The charge may
    /// or may not have happened, so the next attempt reuses the same key and learns which.
    Unavailable {
        reason: String,
    },
}

/// A payment command and, when [`provider_call`] asked for a call, the provider's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentInput {
    pub command: PaymentCommand,
    pub outcome: Option<ProviderOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentFact {
    Authorized { payment_id: String, amount: Amount },
    Declined { reason: String },
    Refunded { amount: Amount },
}

/// The provider's idempotency key of an order's next authorize attempt: the order id itself for
/// the first, then suffixed by the number of declines before it.
pub fn authorize_key(order_id: &str, declines: u32) -> String {
    if declines == 0 {
        order_id.to_string()
    } else {
        format!("{order_id}#{declines}")
    }
}

/// The provider call a command needs: none when it was done already (the answer repeats it)
/// or when there is nothing to do (a refund of a payment that never happened).
pub fn provider_call(
    state: Option<&PaymentState>,
    cmd: &PaymentCommand,
) -> Result<Option<ProviderCall>, Rejection> {
    let empty = PaymentState::default();
    let p = state.unwrap_or(&empty);
    match cmd {
        PaymentCommand::Authorize {
            order_id,
            amount,
            payment_token,
        } => {
            if p.refunded.is_some() {
                return Err(Rejection::transition("the order's payment was refunded"));
            }
            if p.authorized.is_some() {
                return Ok(None);
            }
            positive("amount", *amount)?;
            check_payment_token(payment_token)?;
            Ok(Some(ProviderCall::Authorize {
                idempotency_key: authorize_key(order_id, p.declines),
                amount: *amount,
                payment_token: payment_token.clone(),
            }))
        }
        PaymentCommand::Refund { order_id, .. } => Ok(match (&p.authorized, p.refunded) {
            (Some(a), None) => Some(ProviderCall::Refund {
                idempotency_key: format!("refund:{order_id}"),
                payment_id: a.payment_id.clone(),
                amount: a.amount,
            }),
            _ => None,
        }),
    }
}

/// The rules of payments. Every command but a refund of nothing is answered to the saga, a
/// redelivered one too (with what was done the first time), so its replies carry no facts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Payment;

impl Aggregate for Payment {
    type State = Option<PaymentState>;
    type Input = PaymentInput;
    type Fact = PaymentFact;
    type Effect = OrderReply;

    fn decide(
        &self,
        state: &Option<PaymentState>,
        input: &PaymentInput,
        _now: Millis,
    ) -> Result<Vec<PaymentFact>, Rejection> {
        let Some(call) = provider_call(state.as_ref(), &input.command)? else {
            return Ok(vec![]);
        };
        Ok(match (call, &input.outcome) {
            (
                ProviderCall::Authorize { amount, .. },
                Some(ProviderOutcome::Authorized { payment_id }),
            ) => {
                vec![PaymentFact::Authorized {
                    payment_id: payment_id.clone(),
                    amount,
                }]
            }
            (ProviderCall::Authorize { .. }, Some(ProviderOutcome::Declined { reason })) => {
                vec![PaymentFact::Declined {
                    reason: reason.clone(),
                }]
            }
            (ProviderCall::Refund { amount, .. }, Some(ProviderOutcome::Refunded)) => {
                vec![PaymentFact::Refunded { amount }]
            }
            // An unavailable provider is not a decline on record: the key stays, so a retry
            // cannot charge a second time. A refund that failed leaves nothing recorded either;
            // the app retries it with the same key.
            _ => vec![],
        })
    }

    fn apply(state: Option<PaymentState>, fact: &PaymentFact) -> Option<PaymentState> {
        let mut p = state.unwrap_or_default();
        match fact {
            PaymentFact::Authorized { payment_id, amount } => {
                p.authorized = Some(Authorization {
                    payment_id: payment_id.clone(),
                    amount: *amount,
                });
                p.last_decline = None;
            }
            PaymentFact::Declined { reason } => {
                p.declines += 1;
                p.last_decline = Some(reason.clone());
            }
            PaymentFact::Refunded { amount } => p.refunded = Some(*amount),
        }
        Some(p)
    }

    fn effects(
        _before: &Option<PaymentState>,
        _fact: &PaymentFact,
        _after: &Option<PaymentState>,
    ) -> Vec<OrderReply> {
        Vec::new()
    }

    /// A refused Authorize is answered as a decline carrying the reason, so the order's view
    /// shows it. A refund the provider did not do is not answered: the app tries it again.
    fn answer(
        after: &Option<PaymentState>,
        input: &PaymentInput,
        rejection: Option<&Rejection>,
    ) -> Option<OrderReply> {
        let order_id = input.command.order_id().to_string();
        if let Some(r) = rejection {
            return Some(OrderReply::PaymentDeclined {
                order_id,
                reason: r.to_string(),
            });
        }
        let p = after.as_ref();
        match &input.command {
            PaymentCommand::Authorize { .. } => {
                if let Some(a) = p.and_then(|p| p.authorized.as_ref()) {
                    return Some(OrderReply::PaymentAuthorized {
                        order_id,
                        payment_id: a.payment_id.clone(),
                        amount: a.amount,
                    });
                }
                match &input.outcome {
                    Some(ProviderOutcome::Declined { reason }) => {
                        Some(OrderReply::PaymentDeclined {
                            order_id,
                            reason: reason.clone(),
                        })
                    }
                    Some(ProviderOutcome::Unavailable { reason }) => {
                        Some(OrderReply::PaymentDeclined {
                            order_id,
                            reason: format!("payment provider unavailable: {reason}"),
                        })
                    }
                    _ => None,
                }
            }
            PaymentCommand::Refund { .. } => p
                .and_then(|p| p.refunded)
                .map(|amount| OrderReply::PaymentRefunded { order_id, amount }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: &str = "o1";

    fn authorize(amount: Amount) -> PaymentCommand {
        PaymentCommand::Authorize {
            order_id: O.into(),
            amount,
            payment_token: "tok".into(),
        }
    }
    fn refund() -> PaymentCommand {
        PaymentCommand::Refund {
            order_id: O.into(),
            reason: "order cancelled".into(),
        }
    }

    /// Ask which call the command needs, make it with a fake provider that answers `outcome`,
    /// and handle the command with the outcome: the state after it, the call and the answer.
    fn run(
        state: Option<PaymentState>,
        cmd: &PaymentCommand,
        outcome: ProviderOutcome,
    ) -> (
        Option<PaymentState>,
        Option<ProviderCall>,
        Option<OrderReply>,
    ) {
        let call = provider_call(state.as_ref(), cmd).unwrap();
        let input = PaymentInput {
            command: cmd.clone(),
            outcome: call.as_ref().map(|_| outcome),
        };
        let out = Payment.handle(state, &input, 0);
        assert_eq!(out.rejection, None);
        assert!(out.effects.len() <= 1, "{:?}", out.effects);
        (out.state, call, out.effects.into_iter().next())
    }

    fn authorized(id: &str) -> ProviderOutcome {
        ProviderOutcome::Authorized {
            payment_id: id.into(),
        }
    }

    #[test]
    fn authorize_once_then_replay() {
        let (s, call, reply) = run(None, &authorize(700), authorized("pay-1"));
        assert!(matches!(
            call,
            Some(ProviderCall::Authorize { ref idempotency_key, .. })
                if idempotency_key == O
        ));
        let expected = Some(OrderReply::PaymentAuthorized {
            order_id: O.into(),
            payment_id: "pay-1".into(),
            amount: 700,
        });
        assert_eq!(reply, expected);
        // A redelivered Authorize: no provider call, the same answer.
        let (s2, call, reply) = run(s.clone(), &authorize(700), authorized("pay-2"));
        assert_eq!(call, None, "answered again, without a provider call");
        assert_eq!((s2, reply), (s, expected));
    }

    #[test]
    fn a_decline_allows_a_retry_with_a_new_key() {
        let declined = ProviderOutcome::Declined {
            reason: "card expired".into(),
        };
        let (s, _, reply) = run(None, &authorize(700), declined);
        assert!(matches!(reply, Some(OrderReply::PaymentDeclined { .. })));
        assert_eq!(s.as_ref().unwrap().declines, 1);
        let (s, call, reply) = run(s, &authorize(700), authorized("pay-1"));
        assert!(matches!(
            call,
            Some(ProviderCall::Authorize { ref idempotency_key, .. })
                if idempotency_key == "o1#1"
        ));
        assert!(matches!(reply, Some(OrderReply::PaymentAuthorized { .. })));
        assert_eq!(s.unwrap().last_decline, None);
    }

    #[test]
    fn an_unavailable_provider_keeps_the_key() {
        let down = ProviderOutcome::Unavailable {
            reason: "timeout".into(),
        };
        let (s, _, reply) = run(None, &authorize(700), down);
        assert!(s.is_none());
        match reply {
            Some(OrderReply::PaymentDeclined { reason, .. }) => {
                assert!(reason.contains("unavailable"))
            }
            other => panic!("{other:?}"),
        }
        let call = provider_call(s.as_ref(), &authorize(700)).unwrap();
        assert!(matches!(
            call,
            Some(ProviderCall::Authorize { ref idempotency_key, .. })
                if idempotency_key == O
        ));
    }

    #[test]
    fn refund_only_what_was_authorized_and_once() {
        assert_eq!(provider_call(None, &refund()), Ok(None));
        assert_eq!(
            run(None, &refund(), ProviderOutcome::Refunded),
            (None, None, None)
        );
        let (s, _, _) = run(None, &authorize(700), authorized("pay-1"));
        let (s, call, reply) = run(s, &refund(), ProviderOutcome::Refunded);
        assert!(matches!(
            call,
            Some(ProviderCall::Refund { ref payment_id, amount: 700, .. })
                if payment_id == "pay-1"
        ));
        let expected = Some(OrderReply::PaymentRefunded {
            order_id: O.into(),
            amount: 700,
        });
        assert_eq!(reply, expected);
        let (s2, call, reply) = run(s.clone(), &refund(), ProviderOutcome::Refunded);
        assert_eq!(call, None, "answered again, without a provider call");
        assert_eq!((s2.clone(), reply), (s, expected));
        // Money given back is not taken again for the same order, and the saga is told why.
        assert_eq!(
            provider_call(s2.as_ref(), &authorize(700))
                .unwrap_err()
                .code(),
            "INVALID_TRANSITION"
        );
        let again = PaymentInput {
            command: authorize(700),
            outcome: None,
        };
        let out = Payment.handle(s2.clone(), &again, 0);
        assert_eq!(out.state, s2);
        assert!(
            matches!(
                &out.effects[..],
                [OrderReply::PaymentDeclined { reason, .. }] if reason.contains("refunded")
            ),
            "{:?}",
            out.effects
        );
        // A failed refund call records nothing, so it is tried again.
        let (s, _, _) = run(None, &authorize(700), authorized("pay-1"));
        let (s2, _, reply) = run(
            s.clone(),
            &refund(),
            ProviderOutcome::Unavailable { reason: "x".into() },
        );
        assert_eq!((s2, reply), (s, None));
    }

    #[test]
    fn rejections_and_round_trip() {
        assert_eq!(
            provider_call(None, &authorize(0)).unwrap_err().code(),
            "INVALID"
        );
        let no_token = PaymentCommand::Authorize {
            order_id: O.into(),
            amount: 1,
            payment_token: "".into(),
        };
        assert_eq!(
            provider_call(None, &no_token).unwrap_err().code(),
            "INVALID"
        );
        let (s, _, _) = run(None, &authorize(700), authorized("pay-1"));
        let s = s.unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<PaymentState>(&json).unwrap(), s);
    }
}
