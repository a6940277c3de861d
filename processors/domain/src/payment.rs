//! Payments, keyed by order id. The provider call itself is I/O and belongs to the app layer;
//! these rules say whether to call it, with which idempotency key, and what its outcome means,
//! so that a redelivered command never charges twice.
//!
//! Flow: `decide(state, command)` gives a [`PaymentPlan`]. For `Authorize`/`Refund` plans the app
//! calls the provider with the plan's key, then `record(state, plan, outcome)` gives the facts to
//! store and the reply for the saga. A circuit breaker, if any, wraps the provider call in the
//! app layer; when it refuses, record [`ProviderOutcome::Unavailable`].

use pickple_schemas::{Amount, OrderReply, PaymentCommand};
use serde::{Deserialize, Serialize};

use crate::Rejection;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// Authorize attempts the provider definitively declined. Each later attempt gets a new
    /// idempotency key, because the provider would replay the decline for the old one.
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

/// What to do about a payment command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentPlan {
    Authorize {
        order_id: String,
        idempotency_key: String,
        amount: Amount,
        payment_token: String,
    },
    Refund {
        order_id: String,
        idempotency_key: String,
        payment_id: String,
        amount: Amount,
    },
    /// Already done: answer the saga again, without calling the provider.
    Reply(OrderReply),
    /// Nothing to do and nothing to say (a refund of a payment that never happened).
    Nothing,
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

pub fn decide(
    state: Option<&PaymentState>,
    cmd: &PaymentCommand,
) -> Result<PaymentPlan, Rejection> {
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
            if let Some(a) = &p.authorized {
                return Ok(PaymentPlan::Reply(OrderReply::PaymentAuthorized {
                    order_id: order_id.clone(),
                    payment_id: a.payment_id.clone(),
                    amount: a.amount,
                }));
            }
            if *amount <= 0 {
                return Err(Rejection::invalid("amount must be positive"));
            }
            if payment_token.trim().is_empty() {
                return Err(Rejection::invalid("a payment token is required"));
            }
            Ok(PaymentPlan::Authorize {
                order_id: order_id.clone(),
                idempotency_key: authorize_key(order_id, p.declines),
                amount: *amount,
                payment_token: payment_token.clone(),
            })
        }
        PaymentCommand::Refund { order_id, .. } => Ok(match (&p.authorized, p.refunded) {
            (_, Some(amount)) => PaymentPlan::Reply(OrderReply::PaymentRefunded {
                order_id: order_id.clone(),
                amount,
            }),
            (Some(a), None) => PaymentPlan::Refund {
                order_id: order_id.clone(),
                idempotency_key: format!("refund:{order_id}"),
                payment_id: a.payment_id.clone(),
                amount: a.amount,
            },
            (None, None) => PaymentPlan::Nothing,
        }),
    }
}

/// What a provider outcome means for the plan that asked for it: facts to store, reply to send.
pub fn record(
    plan: &PaymentPlan,
    outcome: &ProviderOutcome,
) -> (Vec<PaymentFact>, Option<OrderReply>) {
    match (plan, outcome) {
        (
            PaymentPlan::Authorize {
                order_id, amount, ..
            },
            ProviderOutcome::Authorized { payment_id },
        ) => (
            vec![PaymentFact::Authorized {
                payment_id: payment_id.clone(),
                amount: *amount,
            }],
            Some(OrderReply::PaymentAuthorized {
                order_id: order_id.clone(),
                payment_id: payment_id.clone(),
                amount: *amount,
            }),
        ),
        (PaymentPlan::Authorize { order_id, .. }, ProviderOutcome::Declined { reason }) => (
            vec![PaymentFact::Declined {
                reason: reason.clone(),
            }],
            Some(OrderReply::PaymentDeclined {
                order_id: order_id.clone(),
                reason: reason.clone(),
            }),
        ),
        // Not a decline on record: the key stays, so a retry cannot charge a second time.
        (PaymentPlan::Authorize { order_id, .. }, ProviderOutcome::Unavailable { reason }) => (
            vec![],
            Some(OrderReply::PaymentDeclined {
                order_id: order_id.clone(),
                reason: format!("payment provider unavailable: {reason}"),
            }),
        ),
        (
            PaymentPlan::Refund {
                order_id, amount, ..
            },
            ProviderOutcome::Refunded,
        ) => (
            vec![PaymentFact::Refunded { amount: *amount }],
            Some(OrderReply::PaymentRefunded {
                order_id: order_id.clone(),
                amount: *amount,
            }),
        ),
        // A refund that failed leaves nothing recorded; the app retries it (the key is stable).
        _ => (vec![], None),
    }
}

pub fn apply(state: Option<PaymentState>, fact: &PaymentFact) -> PaymentState {
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
    p
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

    /// Decide, call a fake provider, record and apply.
    fn run(
        state: Option<PaymentState>,
        cmd: &PaymentCommand,
        outcome: ProviderOutcome,
    ) -> (Option<PaymentState>, PaymentPlan, Option<OrderReply>) {
        let plan = decide(state.as_ref(), cmd).unwrap();
        let (facts, reply) = match &plan {
            PaymentPlan::Reply(r) => (vec![], Some(r.clone())),
            PaymentPlan::Nothing => (vec![], None),
            _ => record(&plan, &outcome),
        };
        let state = facts.iter().fold(state, |s, f| Some(apply(s, f)));
        (state, plan, reply)
    }

    fn authorized(id: &str) -> ProviderOutcome {
        ProviderOutcome::Authorized {
            payment_id: id.into(),
        }
    }

    #[test]
    fn authorize_once_then_replay() {
        let (s, plan, reply) = run(None, &authorize(700), authorized("pay-1"));
        assert!(
            matches!(plan, PaymentPlan::Authorize { ref idempotency_key, .. } if idempotency_key == O)
        );
        let expected = Some(OrderReply::PaymentAuthorized {
            order_id: O.into(),
            payment_id: "pay-1".into(),
            amount: 700,
        });
        assert_eq!(reply, expected);
        // A redelivered Authorize: no provider call, the same answer.
        let (s2, plan, reply) = run(s.clone(), &authorize(700), authorized("pay-2"));
        assert!(matches!(plan, PaymentPlan::Reply(_)));
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
        let (s, plan, reply) = run(s, &authorize(700), authorized("pay-1"));
        assert!(
            matches!(plan, PaymentPlan::Authorize { ref idempotency_key, .. } if idempotency_key == "o1#1")
        );
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
        let plan = decide(s.as_ref(), &authorize(700)).unwrap();
        assert!(
            matches!(plan, PaymentPlan::Authorize { ref idempotency_key, .. } if idempotency_key == O)
        );
    }

    #[test]
    fn refund_only_what_was_authorized_and_once() {
        assert_eq!(decide(None, &refund()), Ok(PaymentPlan::Nothing));
        let (s, _, _) = run(None, &authorize(700), authorized("pay-1"));
        let (s, plan, reply) = run(s, &refund(), ProviderOutcome::Refunded);
        assert!(
            matches!(plan, PaymentPlan::Refund { ref payment_id, amount: 700, .. } if payment_id == "pay-1")
        );
        let expected = Some(OrderReply::PaymentRefunded {
            order_id: O.into(),
            amount: 700,
        });
        assert_eq!(reply, expected);
        let (s2, plan, reply) = run(s.clone(), &refund(), ProviderOutcome::Refunded);
        assert!(matches!(plan, PaymentPlan::Reply(_)));
        assert_eq!((s2.clone(), reply), (s, expected));
        // Money given back is not taken again for the same order.
        assert_eq!(
            decide(s2.as_ref(), &authorize(700)).unwrap_err().code(),
            "INVALID_TRANSITION"
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
        assert_eq!(decide(None, &authorize(0)).unwrap_err().code(), "INVALID");
        let no_token = PaymentCommand::Authorize {
            order_id: O.into(),
            amount: 1,
            payment_token: "".into(),
        };
        assert_eq!(decide(None, &no_token).unwrap_err().code(), "INVALID");
        let (s, _, _) = run(None, &authorize(700), authorized("pay-1"));
        let s = s.unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<PaymentState>(&json).unwrap(), s);
    }
}
