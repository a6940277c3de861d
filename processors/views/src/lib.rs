//! The `views` application: reads every `view-*` topic ([`Kind::ALL`]) and upserts each view into
//! Redis.
//!
//! The view model (the typed views, the Redis key layout, the upsert script and the readiness
//! rule) is `pickple-view-model`, shared with the gateway; this crate is the sink that runs it
//! on the stream runtime.
//!
//! * **Version guard**: the upsert writes a view only if its `version` is greater than the one
//!   stored, so a replayed or reordered older view never overwrites a newer one (re-processing
//!   after an aborted transaction is harmless).
//! * **Indexes**: in the same script, the view's index memberships (sorted sets, see
//!   [`pickple_view_model::keys`]) are replaced: a view leaves the indexes it no longer belongs
//!   to (a product made private leaves the public listing).
//! * **Change notices**: the script PUBLISHes the new version on `{prefix}changed:{kind}:{id}`,
//!   which wakes the gateway's long-polls.
//! * **Caught up**: each task reports a heartbeat with its lag (see
//!   [`pickple_view_model::ready`]).
//! * **Backfill**: the task of partition 0 gives the user views stored before the search index
//!   existed their entries in it, [`BACKFILL_BATCH`] per punctuation, once per Redis
//!   ([`pickple_view_model::backfill`]).
//!
//! A Redis error is [`ProcessError::Retry`]: the record is processed again after its task's
//! back-off (the other tasks go on), so no view is lost while Redis is down or failing over.

use std::time::Duration;

use pickple_runtime::{AppSpec, Context, Metrics, ProcessError, Processor, Record, RuntimeConfig};
use pickple_topics::catalogue::app;
use pickple_view_model::backfill::{backfill_user_search, BACKFILL_LUA};
use pickple_view_model::ready;
use pickple_view_model::{apply_upsert, upsert_for, Keys, Kind, Upsert, UPSERT_LUA};

/// Where the sink writes: part of its command line (`pickple-processor --app views`).
pub use pickple_view_model::RedisConfig;

/// Decode a view and compute its index memberships; a view that cannot be read is invalid input
/// (dead-lettered by the runtime), never retried.
fn upsert(keys: &Keys, kind: Kind, id: &str, value: &[u8]) -> Result<Upsert, ProcessError> {
    upsert_for(keys, kind, id, value).map_err(|e| ProcessError::Invalid(e.to_string()))
}

/// The application's shape: every view topic, no stores.
pub fn spec() -> AppSpec {
    let inputs: Vec<&str> = Kind::ALL.iter().map(|k| k.topic()).collect();
    AppSpec::new(app::VIEWS.name, &inputs, app::VIEWS.stores)
}

/// How many user views one punctuation backfills at most (one pipelined read and one small
/// script each), so the task's records wait at most a few milliseconds.
pub const BACKFILL_BATCH: usize = 500;

/// What names the users' search backfill in its marker ([`Keys::backfilled`]).
const USER_SEARCH: &str = "user-search";

/// Where the users' search backfill stands on this task.
enum Backfill {
    /// Not looked at yet (partition 0 only).
    Pending,
    /// The ids still to index.
    Running(Vec<String>),
    Done,
}

/// One task of the sink (one per partition), with its own Redis connection.
pub struct ViewsSink {
    redis: RedisConfig,
    keys: Keys,
    script: redis::Script,
    con: Option<redis::Connection>,
    partition: i32,
    started_at: i64,
    last_write_at: Option<i64>,
    backfill: Backfill,
}

impl ViewsSink {
    pub fn new(redis: RedisConfig, partition: i32) -> ViewsSink {
        ViewsSink {
            keys: redis.keys(),
            redis,
            script: redis::Script::new(UPSERT_LUA),
            con: None,
            partition,
            started_at: pickple_runtime::now_millis(),
            last_write_at: None,
            backfill: if partition == 0 {
                Backfill::Pending
            } else {
                Backfill::Done
            },
        }
    }

    /// One step of the users' search backfill. The ids are read once (every user is in
    /// `idx:users`); a user added or changed meanwhile gets its entries from its upsert, and
    /// the script skips it. Errors leave the step for the next punctuation.
    fn backfill_step(&mut self) -> redis::RedisResult<()> {
        self.connection()?;
        let (keys, con) = (&self.keys, self.con.as_mut().expect("connected"));
        if matches!(self.backfill, Backfill::Pending) {
            let done: bool = redis::cmd("EXISTS")
                .arg(keys.backfilled(USER_SEARCH))
                .query(con)?;
            self.backfill = if done {
                Backfill::Done
            } else {
                let mut ids: Vec<String> = redis::cmd("ZRANGE")
                    .arg(keys.users_all())
                    .arg(0)
                    .arg(-1)
                    .query(con)?;
                // Taken from the end, a batch at a time.
                ids.reverse();
                Backfill::Running(ids)
            };
        }
        let Backfill::Running(ids) = &mut self.backfill else {
            return Ok(());
        };
        let batch: Vec<String> = ids.split_off(ids.len().saturating_sub(BACKFILL_BATCH));
        let script = redis::Script::new(BACKFILL_LUA);
        let indexed = backfill_user_search(con, &script, keys, &batch)?;
        if indexed > 0 {
            tracing::info!(indexed, left = ids.len(), "user search entries backfilled");
        }
        if ids.is_empty() {
            redis::cmd("SET")
                .arg(keys.backfilled(USER_SEARCH))
                .arg(pickple_runtime::now_millis())
                .query::<()>(con)?;
            self.backfill = Backfill::Done;
        }
        Ok(())
    }

    fn connection(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.con.is_none() {
            let client = self.redis.client()?;
            let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
            con.set_read_timeout(Some(Duration::from_secs(5)))?;
            con.set_write_timeout(Some(Duration::from_secs(5)))?;
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("connected"))
    }

    /// Run `f` on the connection; on error forget the connection (the next call reconnects,
    /// asking the Sentinels again) and report a retry.
    fn with_redis<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection, &redis::Script, &Keys) -> redis::RedisResult<T>,
    ) -> Result<T, ProcessError> {
        let result = match self.connection() {
            Ok(_) => {
                let con = self.con.as_mut().expect("connected");
                f(con, &self.script, &self.keys)
            }
            Err(e) => Err(e),
        };
        result.map_err(|e| {
            self.con = None;
            tracing::warn!(error = %e, redis = %self.redis.describe(), "redis failed; retrying");
            ProcessError::Retry(format!("redis: {e}"))
        })
    }

    fn lag(&self) -> i64 {
        let lag = &Metrics::global().lag;
        let partition = self.partition.to_string();
        Kind::ALL
            .iter()
            .map(|k| {
                lag.get_metric_with_label_values(&[app::VIEWS.name, k.topic(), &partition])
                    .map(|g| g.get().max(0))
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Processor for ViewsSink {
    fn process(&mut self, _ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let kind = Kind::from_topic(record.topic)
            .ok_or_else(|| ProcessError::Invalid(format!("unexpected topic {}", record.topic)))?;
        let id = record.key_str()?.to_string();
        let Some(value) = record.value else {
            // Views are never deleted by a tombstone (a deleted entity keeps a view with its
            // status); a tombstone from compaction tooling is ignored.
            return Ok(());
        };
        let upsert = upsert(&self.keys, kind, &id, value)?;
        let written =
            self.with_redis(|con, script, keys| apply_upsert(con, script, keys, &upsert))?;
        tracing::debug!(%kind, %id, version = upsert.version, written, "view");
        self.last_write_at = Some(pickple_runtime::now_millis());
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let now = ctx.now();
        if now - self.started_at < ready::WARMUP_MS {
            return Ok(());
        }
        let status = ready::PartitionStatus {
            at: now,
            lag: self.lag(),
            last_write_at: self.last_write_at,
        };
        let field = format!("p{}", self.partition);
        let value = serde_json::to_string(&status).expect("status serializes");
        // A failed heartbeat is not a reason to abort the transaction: the gateway sees the
        // heartbeat go stale, which is the truth while Redis is unreachable.
        let _ = self.with_redis(|con, _, keys| {
            redis::pipe()
                .hset(keys.sink_status(), &field, &value)
                .ignore()
                .expire(keys.sink_status(), ready::EXPIRY_SECS)
                .ignore()
                .query::<()>(con)
        });
        if !matches!(self.backfill, Backfill::Done) {
            if let Err(e) = self.backfill_step() {
                self.con = None;
                tracing::warn!(error = %e, "user search backfill failed; trying again");
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    #[error(transparent)]
    Runtime(#[from] pickple_runtime::RuntimeError),
    #[error("redis ({0}): {1}")]
    Redis(String, redis::RedisError),
}

/// Check Redis once, then run the sink until `stop` is set (or a fatal runtime error).
pub fn run_until(
    config: RuntimeConfig,
    redis: RedisConfig,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), ViewsError> {
    check_redis(&redis)?;
    tracing::info!(redis = %redis.describe(), prefix = %redis.redis_prefix, "views sink");
    pickple_runtime::run_until(
        config,
        spec(),
        move |p| ViewsSink::new(redis.clone(), p),
        stop,
    )
    .map_err(Into::into)
}

fn check_redis(redis: &RedisConfig) -> Result<(), ViewsError> {
    let ping = || -> redis::RedisResult<()> {
        let mut con = redis
            .client()?
            .get_connection_with_timeout(Duration::from_secs(5))?;
        redis::cmd("PING").query::<String>(&mut con).map(|_| ())
    };
    ping().map_err(|e| ViewsError::Redis(redis.describe(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_view_is_invalid() {
        let keys = Keys::new("t:");
        assert!(matches!(
            upsert(&keys, Kind::Order, "o", b"{\"version\": 1}"),
            Err(ProcessError::Invalid(_))
        ));
    }
}
