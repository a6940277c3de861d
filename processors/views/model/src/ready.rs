//! "Alive" and "caught up": how the sink tells the gateway whether Redis reflects the view topics.
//!
//! Every task (partition) of the sink writes, on each punctuation (every second by default), a
//! field `p<partition>` into the hash `{prefix}meta:views` holding a [`PartitionStatus`]: the wall
//! clock time `at`, the consumer lag summed over the view topics for that partition (from the
//! runtime's `pickple_consumer_lag` gauge: last stable offset minus position, refreshed every second), and the
//! time of the last view written. A task writes nothing during its first [`WARMUP_MS`], so the
//! first statistics have arrived before it claims to be caught up. The hash expires after
//! [`EXPIRY_SECS`] without a write.
//!
//! **Rule** ([`evaluate`]), in three parts:
//! - **live**: the hash holds at least one partition, every field is readable and every
//!   partition's `at` is at most `max_staleness_ms` old.
//! - **lagging**: live, but some partition's lag is over `max_lag`. The gateway still serves the
//!   views (the latest it has) and says how far behind they are (`Pickple-Views-Lag`,
//!   `Pickple-Views-Stale`); commands are never refused for it.
//! - **servable** ([`Readiness::servable`]): the sink has reported (the hash holds a partition),
//!   live or not. A sink that stopped reporting (killed, restarting, or waiting for a broker)
//!   degrades the answers: the gateway serves what Redis holds, marked stale, and stays ready
//!   (degraded). Only a sink that never reported (or not for [`EXPIRY_SECS`]) leaves nothing
//!   worth serving: 503.
//!
//! `caught_up` is "live and not lagging".

use serde::{Deserialize, Serialize};

/// A task stays silent this long after it starts (the first consumer statistics arrive at 1 s).
pub const WARMUP_MS: i64 = 2_000;
/// The heartbeat hash disappears when no task has written it for this long: a sink silent for
/// a day is gone, not restarting.
pub const EXPIRY_SECS: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// When the task wrote this (ms since the epoch).
    pub at: i64,
    /// Records behind the end of the view topics, summed over this partition's topics.
    pub lag: i64,
    /// When the task last wrote a view into Redis, if it has.
    pub last_write_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyRule {
    /// A heartbeat older than this (ms) means a dead sink: not live.
    pub max_staleness_ms: i64,
    /// A lag over this many records (any partition) means the views are stale: still served.
    pub max_lag: i64,
}

impl Default for ReadyRule {
    fn default() -> Self {
        ReadyRule {
            max_staleness_ms: 15_000,
            max_lag: 100,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Live and not lagging.
    pub caught_up: bool,
    /// The sink reported, every report is readable and recent: the views can be served.
    pub live: bool,
    /// Live, but some partition's lag is over the rule's `max_lag`.
    pub lagging: bool,
    /// Partitions with a readable report.
    pub partitions: usize,
    /// The largest lag reported (records), if any partition reported.
    pub max_lag: Option<i64>,
    /// Why the sink is not live, or else why it is lagging; `None` when caught up.
    pub reason: Option<String>,
}

impl Readiness {
    /// The sink has reported, live or not: its views are worth serving (marked stale when it
    /// is not live).
    pub fn servable(&self) -> bool {
        self.partitions > 0
    }

    /// The views are served marked stale: the live sink lags, or it has stopped reporting.
    pub fn stale(&self) -> bool {
        self.lagging || (!self.live && self.servable())
    }

    /// Not live, for the given reason (e.g. Redis could not be read).
    pub fn dead(reason: impl Into<String>) -> Readiness {
        Readiness {
            caught_up: false,
            live: false,
            lagging: false,
            partitions: 0,
            max_lag: None,
            reason: Some(reason.into()),
        }
    }
}

/// Apply the rule to the fields of the heartbeat hash.
pub fn evaluate(fields: &[(String, String)], now: i64, rule: ReadyRule) -> Readiness {
    let mut max_lag: Option<i64> = None;
    let mut dead = None;
    let mut lagging = None;
    let mut count = 0;
    for (field, value) in fields {
        let Ok(status) = serde_json::from_str::<PartitionStatus>(value) else {
            dead.get_or_insert_with(|| format!("{field}: unreadable status"));
            continue;
        };
        count += 1;
        max_lag = Some(max_lag.map_or(status.lag, |m| m.max(status.lag)));
        if now - status.at > rule.max_staleness_ms {
            dead.get_or_insert_with(|| format!("{field}: no heartbeat for {} ms", now - status.at));
        } else if status.lag > rule.max_lag {
            lagging.get_or_insert_with(|| format!("{field}: lag {}", status.lag));
        }
    }
    if count == 0 {
        dead.get_or_insert_with(|| "the views sink has not reported yet".into());
    }
    let live = dead.is_none();
    let lagging = if live { lagging } else { None };
    Readiness {
        caught_up: live && lagging.is_none(),
        live,
        lagging: lagging.is_some(),
        partitions: count,
        max_lag,
        reason: dead.or(lagging),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(p: i32, at: i64, lag: i64) -> (String, String) {
        let s = PartitionStatus {
            at,
            lag,
            last_write_at: None,
        };
        (format!("p{p}"), serde_json::to_string(&s).unwrap())
    }

    #[test]
    fn fresh_and_small_lag_is_caught_up_else_not() {
        let rule = ReadyRule::default();
        assert!(!evaluate(&[], 1000, rule).caught_up);
        assert!(evaluate(&[field(0, 1000, 0), field(1, 900, 5)], 1000, rule).caught_up);
        assert!(!evaluate(&[field(0, 1000, 0), field(1, 900, 500)], 1000, rule).caught_up);
        assert!(!evaluate(&[field(0, 1000, 0), field(1, -20_000, 0)], 1000, rule).caught_up);
    }

    #[test]
    fn a_lagging_sink_is_live_a_silent_one_is_not() {
        let rule = ReadyRule::default();
        let lagging = evaluate(&[field(0, 1000, 0), field(1, 900, 500)], 1000, rule);
        assert!(lagging.live && lagging.lagging && !lagging.caught_up && lagging.stale());
        assert_eq!(lagging.max_lag, Some(500));
        assert_eq!(lagging.reason.as_deref(), Some("p1: lag 500"));

        let fresh = evaluate(&[field(0, 1000, 100)], 1000, rule);
        assert!(fresh.live && !fresh.lagging && fresh.caught_up && fresh.reason.is_none());
        assert!(!fresh.stale());

        let never = evaluate(&[], 1000, rule);
        assert!(!never.live && !never.lagging && never.max_lag.is_none());
        assert!(
            !never.servable() && !never.stale(),
            "nothing reported, nothing to serve"
        );

        // One silent partition makes the sink dead even if another one lags: dead wins.
        let dead = evaluate(&[field(0, 1000, 500), field(1, -20_000, 0)], 1000, rule);
        assert!(!dead.live && !dead.lagging);
        assert!(
            dead.servable() && dead.stale(),
            "a sink that stopped reporting degrades the views"
        );
        assert!(dead.reason.unwrap().starts_with("p1: no heartbeat"));

        let unreadable = evaluate(&[("p0".into(), "{".into())], 1000, rule);
        assert!(!unreadable.live);
        assert!(!Readiness::dead("redis down").live);
        assert!(!Readiness::dead("redis down").servable());
    }
}
