//! The payment provider adapter: a [`PaymentProvider`] trait, the [`Guarded`] wrapper that puts a
//! timeout and a circuit breaker (the `failsafe` crate) around any provider, and [`FakeProvider`],
//! a local provider for development and tests.
//!
//! The fake behaves by token:
//! * `tok_decline` — declined ("card declined");
//! * `tok_timeout` — never answers in time (hangs for `hang`), so the call times out and counts
//!   as a failure for the breaker;
//! * `tok_slow_<ms>` — answers "approved" after `<ms>` milliseconds (a late approval when the
//!   order's payment deadline is shorter);
//! * anything else — approved.
//!
//! It is idempotent by key like a real provider: the same key gets the same answer and is never
//! charged twice.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use failsafe::{backoff, failure_policy, CircuitBreaker, Config, StateMachine};
use pickple_domain::payment::ProviderOutcome;
use pickple_domain::Amount;

/// A failure of the call itself (not a business answer like a decline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("payment provider timed out after {0:?}")]
    Timeout(Duration),
    #[error("payment provider error: {0}")]
    Failed(String),
}

/// A payment provider. Both calls carry an idempotency key: a retried call with the same key
/// must return the first call's result without a second charge or refund.
pub trait PaymentProvider: Send + Sync + 'static {
    /// `Ok(Authorized)` or `Ok(Declined)`; `Err` when the outcome is unknown.
    fn authorize(
        &self,
        idempotency_key: &str,
        amount: Amount,
        token: &str,
    ) -> Result<ProviderOutcome, ProviderError>;

    fn refund(
        &self,
        idempotency_key: &str,
        payment_id: &str,
        amount: Amount,
    ) -> Result<(), ProviderError>;
}

type Breaker = StateMachine<ConsecutiveFailures<Constant>, ()>;

/// Any provider behind a per-call timeout and a circuit breaker shared by every task of the
/// process. The domain's `ProviderOutcome::Unavailable` stands for a timeout, an error or an open
/// breaker: the charge may or may not have happened, and the stable key makes a retry safe.
#[derive(Clone)]
pub struct Guarded {
    inner: Arc<dyn PaymentProvider>,
    timeout: Duration,
    breaker: Breaker,
}

impl Guarded {
    pub fn new(
        inner: Arc<dyn PaymentProvider>,
        timeout: Duration,
        failures: u32,
        open_for: Duration,
    ) -> Self {
        let policy = failure_policy::consecutive_failures(failures, backoff::constant(open_for));
        Guarded {
            inner,
            timeout,
            breaker: Config::new().failure_policy(policy).build(),
        }
    }

    pub fn is_open(&self) -> bool {
        !self.breaker.is_call_permitted()
    }

    /// Run `call` on a helper thread and give up waiting after the timeout. A call that finishes
    /// after we gave up is harmless: the next attempt reuses its idempotency key.
    fn timed<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn PaymentProvider) -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let (tx, rx) = mpsc::channel();
        let inner = self.inner.clone();
        std::thread::spawn(move || {
            let _ = tx.send(call(inner.as_ref()));
        });
        match rx.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ProviderError::Timeout(self.timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(ProviderError::Failed("provider call panicked".into()))
            }
        }
    }

    fn guarded<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn PaymentProvider) -> Result<T, ProviderError> + Send + 'static,
    ) -> Result<T, String> {
        match self.breaker.call(|| self.timed(call)) {
            Ok(v) => Ok(v),
            Err(failsafe::Error::Inner(e)) => Err(e.to_string()),
            Err(failsafe::Error::Rejected) => Err("circuit breaker open".into()),
        }
    }

    pub fn authorize(&self, key: &str, amount: Amount, token: &str) -> ProviderOutcome {
        let (key, token) = (key.to_string(), token.to_string());
        match self.guarded(move |p| p.authorize(&key, amount, &token)) {
            Ok(outcome) => outcome,
            Err(reason) => ProviderOutcome::Unavailable { reason },
        }
    }

    pub fn refund(&self, key: &str, payment_id: &str, amount: Amount) -> ProviderOutcome {
        let (key, payment_id) = (key.to_string(), payment_id.to_string());
        match self.guarded(move |p| p.refund(&key, &payment_id, amount)) {
            Ok(()) => ProviderOutcome::Refunded,
            Err(reason) => ProviderOutcome::Unavailable { reason },
        }
    }
}

/// A local provider that behaves by token (see the module docs).
pub struct FakeProvider {
    /// How long a `tok_timeout` call hangs before it gives up on its own.
    pub hang: Duration,
    answers: Mutex<HashMap<String, ProviderOutcome>>,
    refunds: Mutex<HashMap<String, Amount>>,
    charges: Mutex<Vec<(String, Amount)>>,
}

impl FakeProvider {
    pub fn new(hang: Duration) -> Self {
        FakeProvider {
            hang,
            answers: Mutex::new(HashMap::new()),
            refunds: Mutex::new(HashMap::new()),
            charges: Mutex::new(Vec::new()),
        }
    }

    /// Every charge made: (idempotency key, amount).
    pub fn charges(&self) -> Vec<(String, Amount)> {
        self.charges.lock().unwrap().clone()
    }

    /// Every refund made: (idempotency key, amount).
    pub fn refunds(&self) -> Vec<(String, Amount)> {
        let r = self.refunds.lock().unwrap();
        let mut v: Vec<_> = r.iter().map(|(k, a)| (k.clone(), *a)).collect();
        v.sort();
        v
    }
}

impl PaymentProvider for FakeProvider {
    fn authorize(
        &self,
        key: &str,
        amount: Amount,
        token: &str,
    ) -> Result<ProviderOutcome, ProviderError> {
        if let Some(done) = self.answers.lock().unwrap().get(key) {
            return Ok(done.clone());
        }
        if token == "tok_timeout" {
            std::thread::sleep(self.hang);
            return Err(ProviderError::Failed("no answer".into()));
        }
        if let Some(ms) = token
            .strip_prefix("tok_slow_")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let outcome = if token == "tok_decline" {
            ProviderOutcome::Declined {
                reason: "card declined".into(),
            }
        } else {
            let payment_id = format!(
                "pay-{}",
                uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).simple()
            );
            ProviderOutcome::Authorized { payment_id }
        };
        // Decide under the lock, so two concurrent calls with one key charge once.
        let mut answers = self.answers.lock().unwrap();
        if let Some(done) = answers.get(key) {
            return Ok(done.clone());
        }
        if matches!(outcome, ProviderOutcome::Authorized { .. }) {
            self.charges.lock().unwrap().push((key.to_string(), amount));
        }
        answers.insert(key.to_string(), outcome.clone());
        Ok(outcome)
    }

    fn refund(&self, key: &str, _payment_id: &str, amount: Amount) -> Result<(), ProviderError> {
        self.refunds
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_insert(amount);
        Ok(())
    }
}

/// The provider the configuration asks for.
pub fn from_config(config: &crate::AppConfig) -> Result<Guarded, String> {
    let inner: Arc<dyn PaymentProvider> = match config.payment_provider.as_str() {
        "fake" => Arc::new(FakeProvider::new(Duration::from_millis(
            config.provider_timeout_ms.saturating_mul(2).max(1),
        ))),
        other => return Err(format!("unknown payment provider '{other}' (known: fake)")),
    };
    Ok(Guarded::new(
        inner,
        Duration::from_millis(config.provider_timeout_ms),
        config.breaker_failures.max(1),
        Duration::from_millis(config.breaker_open_ms.max(1)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(fake: Arc<FakeProvider>, failures: u32) -> Guarded {
        Guarded::new(
            fake,
            Duration::from_millis(100),
            failures,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn same_key_same_answer_and_one_charge() {
        let fake = Arc::new(FakeProvider::new(Duration::from_millis(300)));
        let g = guarded(fake.clone(), 3);
        let a = g.authorize("o1", 700, "tok_ok");
        let b = g.authorize("o1", 700, "tok_ok");
        assert_eq!(a, b);
        assert!(matches!(a, ProviderOutcome::Authorized { .. }));
        assert_eq!(fake.charges(), vec![("o1".to_string(), 700)]);
        assert!(matches!(
            g.authorize("o2", 700, "tok_decline"),
            ProviderOutcome::Declined { .. }
        ));
        assert_eq!(fake.charges().len(), 1);
    }

    #[test]
    fn timeouts_open_the_breaker_and_declines_do_not() {
        let fake = Arc::new(FakeProvider::new(Duration::from_millis(300)));
        let g = guarded(fake.clone(), 2);
        for i in 0..5 {
            g.authorize(&format!("d{i}"), 1, "tok_decline");
        }
        assert!(!g.is_open(), "declines are answers, not failures");
        let first = g.authorize("t1", 1, "tok_timeout");
        assert!(
            matches!(&first, ProviderOutcome::Unavailable { reason } if reason.contains("timed out")),
            "{first:?}"
        );
        g.authorize("t2", 1, "tok_timeout");
        assert!(g.is_open());
        // Open: refused at once, even for a token that would pass.
        let refused = g.authorize("o9", 1, "tok_ok");
        assert!(
            matches!(&refused, ProviderOutcome::Unavailable { reason } if reason.contains("breaker")),
            "{refused:?}"
        );
        assert!(fake.charges().is_empty());
    }
}
