//! Whether an instance is doing its job, for `/health` (the compose healthcheck, a supervisor).
//!
//! Serving `/metrics` proves only that a thread is alive. An instance is unhealthy when its
//! poll loop has stopped turning, when a client reported a fatal error, or when it has owned no
//! task for longer than a consumer session (its group would have given it partitions by then).
//! An instance started beyond the input's partition count owns nothing by design and reports
//! itself unhealthy too: it is idle, and the operator should know. Broker trouble being ridden
//! through is reported, but is not unhealthy until the task timeout ends the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long the poll loop may go without turning (a transactional call blocks for up to 30 s).
const STALLED_AFTER: Duration = Duration::from_secs(60);

/// How long the poll loop may be stuck before the process ends itself (see
/// `runner::Watchdog`): four times the longest a transactional call is allowed to block.
pub(crate) const WEDGED_AFTER: Duration = Duration::from_secs(120);

/// Whether a poll loop that has not turned for `stalled` is wedged inside a client call, past
/// every timeout the runtime gives its calls.
pub(crate) fn wedged(stalled: Duration) -> bool {
    stalled > WEDGED_AFTER
}

/// What the runtime reports as it runs.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub loop_turned: Instant,
    pub tasks: usize,
    /// Since when the instance has owned no task (`None` while it owns some).
    pub idle_since: Option<Instant>,
    pub fatal: Option<String>,
    /// Since when a transient failure has been ridden through, and what it is.
    pub trouble: Option<(Instant, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub healthy: bool,
    pub tasks: usize,
    pub problems: Vec<String>,
    /// Broker trouble being ridden through, if any.
    pub trouble: Option<String>,
}

/// The rule, pure: `unassigned_grace` is how long owning nothing is normal (a session timeout
/// and a rebalance).
pub(crate) fn evaluate(f: &Facts, now: Instant, unassigned_grace: Duration) -> Report {
    let mut problems = Vec::new();
    if let Some(fatal) = &f.fatal {
        problems.push(format!("fatal client error: {fatal}"));
    }
    let stalled = now.saturating_duration_since(f.loop_turned);
    if stalled > STALLED_AFTER {
        problems.push(format!(
            "the poll loop has not turned for {} s",
            stalled.as_secs()
        ));
    }
    if let Some(idle) = f.idle_since {
        let idle = now.saturating_duration_since(idle);
        if idle > unassigned_grace {
            problems.push(format!("no task assigned for {} s", idle.as_secs()));
        }
    }
    Report {
        healthy: problems.is_empty(),
        tasks: f.tasks,
        problems,
        trouble: f.trouble.as_ref().map(|(since, what)| {
            format!(
                "{what} (for {} s)",
                now.saturating_duration_since(*since).as_secs()
            )
        }),
    }
}

/// The process's facts, shared by the poll loop and the `/health` handler.
pub(crate) struct Health {
    facts: Mutex<Facts>,
    unassigned_grace: Mutex<Duration>,
    /// When the poll loop last turned, in milliseconds after `started`: written on every turn,
    /// so an atomic rather than the lock.
    started: Instant,
    loop_turned_ms: AtomicU64,
}

impl Health {
    pub fn global() -> &'static Health {
        static HEALTH: std::sync::OnceLock<Health> = std::sync::OnceLock::new();
        HEALTH.get_or_init(|| {
            let now = Instant::now();
            Health {
                facts: Mutex::new(Facts {
                    loop_turned: now,
                    tasks: 0,
                    idle_since: Some(now),
                    fatal: None,
                    trouble: None,
                }),
                unassigned_grace: Mutex::new(Duration::from_secs(20)),
                started: now,
                loop_turned_ms: AtomicU64::new(0),
            }
        })
    }

    pub fn set_unassigned_grace(&self, grace: Duration) {
        *self.unassigned_grace.lock().unwrap() = grace;
    }

    /// The poll loop turned at `now`.
    pub fn loop_turned(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.started).as_millis() as u64;
        self.loop_turned_ms.store(ms, Ordering::Relaxed);
    }

    /// How long it has been, at `now`, since the poll loop last turned.
    pub fn stalled_for(&self, now: Instant) -> Duration {
        let turned =
            self.started + Duration::from_millis(self.loop_turned_ms.load(Ordering::Relaxed));
        now.saturating_duration_since(turned)
    }

    pub fn update(&self, change: impl FnOnce(&mut Facts)) {
        change(&mut self.facts.lock().unwrap());
    }

    pub fn set_tasks(&self, tasks: usize) {
        self.update(|f| {
            f.tasks = tasks;
            match (tasks, f.idle_since) {
                (0, None) => f.idle_since = Some(Instant::now()),
                (0, Some(_)) => {}
                (_, _) => f.idle_since = None,
            }
        });
    }

    pub fn report(&self) -> Report {
        let mut facts = self.facts.lock().unwrap().clone();
        facts.loop_turned =
            self.started + Duration::from_millis(self.loop_turned_ms.load(Ordering::Relaxed));
        evaluate(
            &facts,
            Instant::now(),
            *self.unassigned_grace.lock().unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(now: Instant) -> Facts {
        Facts {
            loop_turned: now,
            tasks: 3,
            idle_since: None,
            fatal: None,
            trouble: None,
        }
    }

    const GRACE: Duration = Duration::from_secs(16);

    #[test]
    fn a_turning_loop_with_tasks_is_healthy_even_while_riding_through_trouble() {
        let t0 = Instant::now();
        let mut f = facts(t0);
        f.trouble = Some((t0, "commit failed".into()));
        let r = evaluate(&f, t0 + Duration::from_secs(5), GRACE);
        assert!(r.healthy, "{r:?}");
        assert_eq!(r.trouble.as_deref(), Some("commit failed (for 5 s)"));
    }

    #[test]
    fn fatal_errors_stalls_and_long_idleness_are_unhealthy() {
        let t0 = Instant::now();
        let mut f = facts(t0);
        f.fatal = Some("FencedInstanceId".into());
        assert!(!evaluate(&f, t0, GRACE).healthy);

        let f = facts(t0);
        assert!(!evaluate(&f, t0 + Duration::from_secs(61), GRACE).healthy);

        let mut f = facts(t0);
        f.tasks = 0;
        f.idle_since = Some(t0);
        assert!(evaluate(&f, t0 + Duration::from_secs(10), GRACE).healthy);
        f.loop_turned = t0 + Duration::from_secs(20);
        let r = evaluate(&f, t0 + Duration::from_secs(20), GRACE);
        assert!(!r.healthy);
        assert_eq!(r.problems, vec!["no task assigned for 20 s".to_string()]);
    }

    #[test]
    fn a_loop_stuck_past_every_call_timeout_is_wedged_and_a_slow_one_is_not() {
        // Unhealthy (60 s) comes first; wedged only past four transaction-call timeouts.
        assert!(!wedged(Duration::from_secs(61)));
        assert!(!wedged(WEDGED_AFTER));
        assert!(wedged(WEDGED_AFTER + Duration::from_secs(1)));
        let h = Health::global();
        let now = Instant::now();
        h.loop_turned(now);
        assert!(h.stalled_for(now + Duration::from_secs(5)) >= Duration::from_secs(4));
        assert!(!wedged(h.stalled_for(now)));
    }
}
