//! "Caught up": how the sink tells the gateway that Redis reflects the view topics.
//!
//! Every task (partition) of the sink writes, on each punctuation (every second by default), a
//! field `p<partition>` into the hash `{prefix}meta:views` holding a [`PartitionStatus`]: the wall
//! clock time `at`, the consumer lag summed over the six view topics for that partition (from the
//! runtime's `pickple_consumer_lag` gauge, refreshed by librdkafka statistics every 5 s), and the
//! time of the last view written. A task writes nothing during its first [`WARMUP_MS`], so the
//! first statistics have arrived before it claims to be caught up. The hash expires after
//! [`EXPIRY_SECS`] without a write.
//!
//! **Rule** ([`evaluate`]): the views are caught up when the hash holds at least one partition,
//! every partition's `at` is at most `max_staleness_ms` old, and every partition's lag is at most
//! `max_lag`. A dead sink therefore turns the gateway's `/ready` (and its view reads) to 503 after
//! `max_staleness_ms`; a sink catching up after a restart does too until its lag is small.

use serde::{Deserialize, Serialize};

/// A task stays silent this long after it starts (the first consumer statistics arrive at 5 s).
pub const WARMUP_MS: i64 = 6_000;
/// The heartbeat hash disappears when no task has written it for this long.
pub const EXPIRY_SECS: i64 = 120;

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
    pub max_staleness_ms: i64,
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
    pub caught_up: bool,
    pub partitions: usize,
    pub max_lag: Option<i64>,
    pub reason: Option<String>,
}

/// Apply the rule to the fields of the heartbeat hash.
pub fn evaluate(fields: &[(String, String)], now: i64, rule: ReadyRule) -> Readiness {
    let mut max_lag: Option<i64> = None;
    let mut reason = None;
    let mut count = 0;
    for (field, value) in fields {
        let Ok(status) = serde_json::from_str::<PartitionStatus>(value) else {
            reason.get_or_insert_with(|| format!("{field}: unreadable status"));
            continue;
        };
        count += 1;
        max_lag = Some(max_lag.map_or(status.lag, |m| m.max(status.lag)));
        if now - status.at > rule.max_staleness_ms {
            reason
                .get_or_insert_with(|| format!("{field}: no heartbeat for {} ms", now - status.at));
        } else if status.lag > rule.max_lag {
            reason.get_or_insert_with(|| format!("{field}: lag {}", status.lag));
        }
    }
    if count == 0 {
        reason.get_or_insert_with(|| "the views sink has not reported yet".into());
    }
    Readiness {
        caught_up: reason.is_none(),
        partitions: count,
        max_lag,
        reason,
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
}
