//! Payments, keyed by order id. The provider call itself is I/O and belongs to the app layer;
//! these rules say whether to call it, with which idempotency key, and what its outcome means,
//! so that a redelivered command never charges twice.
//!
//! The app asks [`provider_call`] which call a command needs, makes it (a circuit breaker, if
//! any, wraps it; when the breaker refuses, the outcome is [`ProviderOutcome::Unavailable`]),
//! then hands the command and the outcome to [`Payment`]: the facts say what to store, the
//! answer what to tell the saga. The state also holds what the payment's view
//! ([`PaymentState::to_view`]) shows: buyer, amount, times and a bounded history.

use pickple_schemas::{
    Amount, Millis, OrderReply, PaymentCommand, PaymentEvent, PaymentEventKind, PaymentView,
    PaymentViewStatus,
};
use serde::{Deserialize, Serialize};

use crate::rules::{check_payment_token, positive};
use crate::{Aggregate, Rejection};

/// The most entries a payment's `history` keeps: the first (the first attempt) and the latest
/// `MAX_HISTORY - 1`. A payment makes at most four without retries (requested, authorized,
/// refund requested, refunded); each retry after a decline adds two, as many as the buyer tries
/// before the deadline, and a long run of them in the middle tells a reader nothing more.
pub const MAX_HISTORY: usize = 32;

/// The stored value. Fields added with the view have serde defaults: a value stored before
/// still reads (no buyer, no history, version 0) and gains them on its next change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentState {
    /// Authorize attempts the provider definitively declined. Each later attempt gets a new
    /// idempotency key, because the provider would give the old key's decline again.
    #[serde(default)]
    pub declines: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized: Option<Authorization>,
    /// Why the last attempt failed (a decline, or the provider unavailable); cleared once
    /// authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded: Option<Amount>,
    /// The buyer, from the Authorize (empty for commands sent before it carried one).
    #[serde(default)]
    pub username: String,
    /// The amount of the last authorize attempt.
    #[serde(default)]
    pub amount: Amount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
    #[serde(default)]
    pub created_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_at: Option<Millis>,
    /// At most [`MAX_HISTORY`] entries.
    #[serde(default)]
    pub history: Vec<PaymentEvent>,
    /// The view's version: one more for every step that changed the payment or refused a
    /// command ([`PaymentState::stamp`]).
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub updated_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub payment_id: String,
    pub amount: Amount,
}

impl PaymentState {
    /// Where the payment stands, as its view says.
    pub fn status(&self) -> PaymentViewStatus {
        if self.refunded.is_some() {
            PaymentViewStatus::Refunded
        } else if self.authorized.is_some() {
            PaymentViewStatus::Authorized
        } else {
            PaymentViewStatus::Declined
        }
    }

    /// A new version of the view, after a step that changed the payment (`rejection` none) or
    /// refused a command on it (the state is unchanged but the view says why).
    pub fn stamp(&mut self, now: Millis, rejection: Option<&Rejection>) {
        self.version += 1;
        self.updated_at = now;
        self.rejection = rejection.map(Rejection::to_string);
    }

    pub fn to_view(&self, order_id: &str) -> PaymentView {
        let status = self.status();
        PaymentView {
            order_id: order_id.to_string(),
            username: self.username.clone(),
            status,
            amount: self
                .authorized
                .as_ref()
                .map(|a| a.amount)
                .unwrap_or(self.amount),
            payment_id: self.authorized.as_ref().map(|a| a.payment_id.clone()),
            decline_reason: match status {
                PaymentViewStatus::Declined => self.last_decline.clone(),
                _ => None,
            },
            refunded_amount: self.refunded,
            refund_reason: self.refund_reason.clone(),
            created_at: self.created_at,
            authorized_at: self.authorized_at,
            refunded_at: self.refunded_at,
            updated_at: self.updated_at,
            history: self.history.clone(),
            rejection: self.rejection.clone(),
            version: self.version,
        }
    }

    /// Record an entry, keeping the first and the latest (a history stored longer shrinks here).
    fn record(&mut self, event: PaymentEvent) {
        if self.history.is_empty() && self.created_at == 0 {
            self.created_at = event.at;
        }
        self.history.push(event);
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(1..=excess);
        }
    }
}

fn event(kind: PaymentEventKind, at: Millis) -> PaymentEvent {
    PaymentEvent {
        kind,
        at,
        amount: None,
        reason: None,
        payment_id: None,
    }
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

/// What happened to a payment. Each provider call is two facts, the request and its outcome,
/// which the view's history shows as two entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PaymentFact {
    AuthorizeRequested {
        username: String,
        amount: Amount,
        at: Millis,
    },
    Authorized {
        payment_id: String,
        amount: Amount,
        at: Millis,
    },
    Declined {
        reason: String,
        at: Millis,
    },
    /// The provider could not be reached: not a decline on record (the key stays), but the
    /// attempt failed and the saga is told so.
    ProviderUnavailable {
        reason: String,
        at: Millis,
    },
    RefundRequested {
        reason: String,
        at: Millis,
    },
    Refunded {
        amount: Amount,
        at: Millis,
    },
}

/// The words the saga and the view give a failed call to an unreachable provider.
pub fn unavailable_reason(reason: &str) -> String {
    format!("payment provider unavailable: {reason}")
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
            ..
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
        now: Millis,
    ) -> Result<Vec<PaymentFact>, Rejection> {
        let Some(call) = provider_call(state.as_ref(), &input.command)? else {
            return Ok(vec![]);
        };
        let at = now;
        Ok(match (call, &input.command, &input.outcome) {
            (
                ProviderCall::Authorize { amount, .. },
                PaymentCommand::Authorize { username, .. },
                Some(outcome),
            ) => {
                let outcome = match outcome {
                    ProviderOutcome::Authorized { payment_id } => PaymentFact::Authorized {
                        payment_id: payment_id.clone(),
                        amount,
                        at,
                    },
                    ProviderOutcome::Declined { reason } => PaymentFact::Declined {
                        reason: reason.clone(),
                        at,
                    },
                    // An unavailable provider is not a decline on record: the key stays, so a
                    // retry cannot charge a second time.
                    ProviderOutcome::Unavailable { reason } => PaymentFact::ProviderUnavailable {
                        reason: reason.clone(),
                        at,
                    },
                    ProviderOutcome::Refunded => return Ok(vec![]),
                };
                vec![
                    PaymentFact::AuthorizeRequested {
                        username: username.clone(),
                        amount,
                        at,
                    },
                    outcome,
                ]
            }
            (
                ProviderCall::Refund { amount, .. },
                PaymentCommand::Refund { reason, .. },
                Some(ProviderOutcome::Refunded),
            ) => vec![
                PaymentFact::RefundRequested {
                    reason: reason.clone(),
                    at,
                },
                PaymentFact::Refunded { amount, at },
            ],
            // A refund that failed leaves nothing recorded: the app retries it with the same
            // key, and its request is recorded with its outcome.
            _ => vec![],
        })
    }

    fn apply(state: Option<PaymentState>, fact: &PaymentFact) -> Option<PaymentState> {
        let mut p = state.unwrap_or_default();
        match fact {
            PaymentFact::AuthorizeRequested {
                username,
                amount,
                at,
            } => {
                if !username.is_empty() {
                    p.username = username.clone();
                }
                p.amount = *amount;
                p.record(PaymentEvent {
                    amount: Some(*amount),
                    ..event(PaymentEventKind::AuthorizeRequested, *at)
                });
            }
            PaymentFact::Authorized {
                payment_id,
                amount,
                at,
            } => {
                p.authorized = Some(Authorization {
                    payment_id: payment_id.clone(),
                    amount: *amount,
                });
                p.authorized_at = Some(*at);
                p.last_decline = None;
                p.record(PaymentEvent {
                    amount: Some(*amount),
                    payment_id: Some(payment_id.clone()),
                    ..event(PaymentEventKind::Authorized, *at)
                });
            }
            PaymentFact::Declined { reason, at } => {
                p.declines += 1;
                p.last_decline = Some(reason.clone());
                p.record(PaymentEvent {
                    reason: Some(reason.clone()),
                    ..event(PaymentEventKind::Declined, *at)
                });
            }
            PaymentFact::ProviderUnavailable { reason, at } => {
                p.last_decline = Some(unavailable_reason(reason));
                p.record(PaymentEvent {
                    reason: Some(reason.clone()),
                    ..event(PaymentEventKind::ProviderUnavailable, *at)
                });
            }
            PaymentFact::RefundRequested { reason, at } => {
                p.refund_reason = Some(reason.clone());
                p.record(PaymentEvent {
                    reason: Some(reason.clone()),
                    ..event(PaymentEventKind::RefundRequested, *at)
                });
            }
            PaymentFact::Refunded { amount, at } => {
                p.refunded = Some(*amount);
                p.refunded_at = Some(*at);
                p.record(PaymentEvent {
                    amount: Some(*amount),
                    ..event(PaymentEventKind::Refunded, *at)
                });
            }
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
                            reason: unavailable_reason(reason),
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
            username: "ann".into(),
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

    /// [`run`] at `now`, with the version stamped as the app does after a change.
    fn step(
        state: Option<PaymentState>,
        cmd: &PaymentCommand,
        outcome: ProviderOutcome,
        now: Millis,
    ) -> Option<PaymentState> {
        let call = provider_call(state.as_ref(), cmd).unwrap();
        let input = PaymentInput {
            command: cmd.clone(),
            outcome: call.as_ref().map(|_| outcome),
        };
        let out = Payment.handle(state, &input, now);
        let mut after = out.state;
        if let (false, Some(p)) = (out.facts.is_empty(), after.as_mut()) {
            p.stamp(now, None);
        }
        after
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
        // On record for the view, but not as a decline: the next attempt keeps the key.
        assert_eq!(s.as_ref().unwrap().declines, 0);
        assert_eq!(s.as_ref().unwrap().status(), PaymentViewStatus::Declined);
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
    fn the_view_tells_every_attempt_and_outcome() {
        use PaymentEventKind::*;
        let declined = ProviderOutcome::Declined {
            reason: "card expired".into(),
        };
        let s = step(None, &authorize(700), declined, 10);
        let v = s.as_ref().unwrap().to_view(O);
        assert_eq!(
            (
                v.status,
                v.decline_reason.as_deref(),
                v.version,
                v.created_at
            ),
            (PaymentViewStatus::Declined, Some("card expired"), 1, 10)
        );
        assert_eq!(
            (v.username.as_str(), v.amount, v.payment_id),
            ("ann", 700, None)
        );
        let s = step(s, &authorize(700), authorized("pay-1"), 20);
        let v = s.as_ref().unwrap().to_view(O);
        assert_eq!(
            (v.status, v.decline_reason, v.payment_id.as_deref()),
            (PaymentViewStatus::Authorized, None, Some("pay-1"))
        );
        assert_eq!((v.authorized_at, v.version), (Some(20), 2));
        // A redelivered Authorize changes nothing, so the app publishes no new version.
        let out = Payment.handle(
            s.clone(),
            &PaymentInput {
                command: authorize(700),
                outcome: None,
            },
            25,
        );
        assert!(out.facts.is_empty());
        let s = step(s, &refund(), ProviderOutcome::Refunded, 30);
        let v = s.as_ref().unwrap().to_view(O);
        assert_eq!(
            (v.status, v.refunded_amount, v.refunded_at, v.version),
            (PaymentViewStatus::Refunded, Some(700), Some(30), 3)
        );
        assert_eq!(v.refund_reason.as_deref(), Some("order cancelled"));
        let kinds: Vec<(PaymentEventKind, Millis)> =
            v.history.iter().map(|e| (e.kind, e.at)).collect();
        assert_eq!(
            kinds,
            vec![
                (AuthorizeRequested, 10),
                (Declined, 10),
                (AuthorizeRequested, 20),
                (Authorized, 20),
                (RefundRequested, 30),
                (Refunded, 30),
            ]
        );
        assert_eq!(v.history[1].reason.as_deref(), Some("card expired"));
        assert_eq!(v.history[3].payment_id.as_deref(), Some("pay-1"));
        assert_eq!(v.history[5].amount, Some(700));
        // A refused Authorize leaves the payment as it was; the app stamps the rejection.
        let mut after = s.clone().unwrap();
        let out = Payment.handle(
            s,
            &PaymentInput {
                command: authorize(700),
                outcome: None,
            },
            40,
        );
        after.stamp(40, out.rejection.as_ref());
        let v = after.to_view(O);
        assert_eq!((v.status, v.version), (PaymentViewStatus::Refunded, 4));
        assert!(v.rejection.unwrap().contains("refunded"));
    }

    #[test]
    fn the_history_keeps_the_first_and_the_latest_entries() {
        let declined = ProviderOutcome::Declined {
            reason: "no funds".into(),
        };
        let mut s = None;
        for at in 1..=40 {
            s = step(s, &authorize(700), declined.clone(), at);
        }
        s = step(s, &authorize(700), authorized("pay-1"), 100);
        let p = s.unwrap();
        assert_eq!(p.history.len(), MAX_HISTORY);
        assert_eq!(
            (p.history[0].kind, p.history[0].at),
            (PaymentEventKind::AuthorizeRequested, 1)
        );
        assert_eq!(p.history.last().unwrap().kind, PaymentEventKind::Authorized);
        assert_eq!(p.created_at, 1);
        assert!(p.history.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn a_value_stored_before_the_view_still_reads() {
        let old = r#"{"declines":1,"authorized":{"payment_id":"pay-1","amount":700}}"#;
        let p: PaymentState = serde_json::from_str(old).unwrap();
        assert_eq!(
            (p.version, p.history.len(), p.username.as_str()),
            (0, 0, "")
        );
        assert_eq!(p.status(), PaymentViewStatus::Authorized);
        let old_command =
            r#"{"type":"Authorize","order_id":"o1","amount":700,"payment_token":"t"}"#;
        let cmd: PaymentCommand = serde_json::from_str(old_command).unwrap();
        assert!(
            matches!(cmd, PaymentCommand::Authorize { ref username, .. } if username.is_empty())
        );
        // Its next change stamps the first version of its view.
        let s = step(Some(p), &refund(), ProviderOutcome::Refunded, 9);
        let v = s.unwrap().to_view(O);
        assert_eq!((v.version, v.amount, v.history.len()), (1, 700, 2));
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
            username: "ann".into(),
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
