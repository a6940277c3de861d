//! The `views` application: reads the six `view-*` topics and upserts each view into Redis.
//!
//! * **Version guard**: a Lua script writes a view only if its `version` is greater than the one
//!   stored, so a replayed or reordered older view never overwrites a newer one (re-processing
//!   after an aborted transaction is harmless).
//! * **Indexes**: in the same script, the view's index memberships (sorted sets, see [`keys`])
//!   are replaced: the script remembers which indexes a view belongs to and removes it from the
//!   ones it left (a product made private leaves the public listing).
//! * **Change notices**: the script PUBLISHes the new version on `{prefix}changed:{kind}:{id}`,
//!   which wakes the gateway's long-polls.
//! * **Caught up**: each task reports a heartbeat with its lag (see [`ready`]).
//!
//! A Redis error is [`ProcessError::Retry`]: the transaction is aborted and retried after a
//! back-off, so no view is lost while Redis is down or failing over.

pub mod keys;
pub mod ready;

use std::time::Duration;

use pickple_runtime::{AppSpec, Context, Metrics, ProcessError, Processor, Record, RuntimeConfig};
use pickple_schemas::{
    DeliveryView, NotificationView, OrderView, ProductView, UserView, VendorView,
};
use serde::de::DeserializeOwned;

pub use keys::{Keys, Kind};

/// Where Redis is: a URL, or Sentinels and a master name (survives a failover).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisConfig {
    /// Redis URL (used when no Sentinels are given), e.g. redis://127.0.0.1:16379/0.
    #[arg(
        long,
        env = "PICKPLE_REDIS_URL",
        default_value = "redis://127.0.0.1:16379"
    )]
    pub redis_url: String,
    /// Comma-separated Sentinel addresses (host:port); when set, the master is asked of them.
    #[arg(long, env = "PICKPLE_REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,
    /// Name of the master the Sentinels monitor.
    #[arg(long, env = "PICKPLE_REDIS_MASTER", default_value = "pickple")]
    pub redis_master: String,
    /// Prefix of every key and channel (several deployments or tests on one Redis).
    #[arg(long, env = "PICKPLE_REDIS_PREFIX", default_value = "pickple:")]
    pub redis_prefix: String,
}

impl RedisConfig {
    /// Local defaults (or `PICKPLE_REDIS_URL`) with the given key prefix.
    pub fn local(prefix: impl Into<String>) -> RedisConfig {
        RedisConfig {
            redis_url: std::env::var("PICKPLE_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:16379".into()),
            redis_sentinels: None,
            redis_master: "pickple".into(),
            redis_prefix: prefix.into(),
        }
    }

    pub fn keys(&self) -> Keys {
        Keys::new(self.redis_prefix.clone())
    }

    /// Sentinel addresses as URLs, or `None` in plain URL mode.
    pub fn sentinel_urls(&self) -> Option<Vec<String>> {
        let list = self.redis_sentinels.as_deref()?.trim();
        if list.is_empty() {
            return None;
        }
        Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.contains("://") {
                        s.to_string()
                    } else {
                        format!("redis://{s}")
                    }
                })
                .collect(),
        )
    }

    /// A client for the current master: asks the Sentinels each time it is called, so calling it
    /// again after an error follows a failover.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match self.sentinel_urls() {
            Some(urls) => {
                let mut sentinel = redis::sentinel::SentinelClient::build(
                    urls,
                    self.redis_master.clone(),
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )?;
                sentinel.get_client()
            }
            None => redis::Client::open(self.redis_url.as_str()),
        }
    }

    pub fn describe(&self) -> String {
        match self.sentinel_urls() {
            Some(urls) => format!("sentinels {} master {}", urls.join(","), self.redis_master),
            None => self.redis_url.clone(),
        }
    }
}

/// The upsert: version guard, index memberships, change notice. Returns 1 when written, 0 when
/// the stored version is the same or newer.
///
/// KEYS[1] view hash, KEYS[2] membership set; ARGV: version, json, channel, id, then pairs of
/// (index key, score).
pub const UPSERT_LUA: &str = r#"
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'json', ARGV[2])
local id = ARGV[4]
local wanted = {}
for i = 5, #ARGV, 2 do
  wanted[ARGV[i]] = ARGV[i + 1]
end
for _, index in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if wanted[index] == nil then
    redis.call('ZREM', index, id)
  end
end
redis.call('DEL', KEYS[2])
for index, score in pairs(wanted) do
  redis.call('ZADD', index, score, id)
  redis.call('SADD', KEYS[2], index)
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1
"#;

/// What the sink extracts from a view: its version and the indexes it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub kind: Kind,
    pub id: String,
    pub version: u64,
    pub json: String,
    pub indexes: Vec<(String, i64)>,
}

fn parse<T: DeserializeOwned>(value: &[u8]) -> Result<T, ProcessError> {
    pickple_schemas::decode(Some(value)).map_err(|e| ProcessError::Invalid(e.to_string()))
}

/// Decode a view and compute its index memberships (pure; unit-tested).
pub fn upsert_for(keys: &Keys, kind: Kind, id: &str, value: &[u8]) -> Result<Upsert, ProcessError> {
    let json = std::str::from_utf8(value)
        .map_err(|_| ProcessError::Invalid("value is not UTF-8".into()))?
        .to_string();
    let mut indexes = Vec::new();
    let version = match kind {
        Kind::User => {
            let v: UserView = parse(value)?;
            indexes.push((keys.users_all(), v.updated_at));
            v.version
        }
        Kind::Vendor => {
            let v: VendorView = parse(value)?;
            if !v.deleted {
                indexes.push((keys.vendors_all(), v.updated_at));
                indexes.push((keys.vendors_of_manager(&v.manager), v.updated_at));
            }
            v.version
        }
        Kind::Product => {
            let v: ProductView = parse(value)?;
            if !v.deleted {
                indexes.push((keys.products_of_vendor(&v.vendor_id), v.updated_at));
                if v.public {
                    indexes.push((keys.products_public(), v.updated_at));
                }
            }
            v.version
        }
        Kind::Order => {
            let v: OrderView = parse(value)?;
            let placed = v.history.first().map(|t| t.at).unwrap_or(0);
            indexes.push((keys.orders_all(), placed));
            indexes.push((keys.orders_of_user(&v.username), placed));
            for vendor in &v.vendor_ids {
                indexes.push((keys.orders_of_vendor(vendor), placed));
            }
            v.version
        }
        Kind::Delivery => {
            let v: DeliveryView = parse(value)?;
            let at = v.started_at.unwrap_or(0);
            for vendor in &v.vendor_ids {
                indexes.push((keys.deliveries_of_vendor(vendor), at));
            }
            v.version
        }
        Kind::Notification => {
            let v: NotificationView = parse(value)?;
            indexes.push((keys.notifications_of_user(&v.username), v.sent_at));
            v.version
        }
    };
    indexes.sort();
    indexes.dedup_by(|a, b| a.0 == b.0);
    Ok(Upsert {
        kind,
        id: id.to_string(),
        version,
        json,
        indexes,
    })
}

/// Run the upsert script on a connection. `Ok(true)` when the view was written.
pub fn apply_upsert(
    con: &mut dyn redis::ConnectionLike,
    script: &redis::Script,
    keys: &Keys,
    u: &Upsert,
) -> redis::RedisResult<bool> {
    let mut inv = script.prepare_invoke();
    inv.key(keys.view(u.kind, &u.id))
        .key(keys.memberships(u.kind, &u.id))
        .arg(u.version.to_string())
        .arg(&u.json)
        .arg(keys.channel(u.kind, &u.id))
        .arg(&u.id);
    for (index, score) in &u.indexes {
        inv.arg(index).arg(score.to_string());
    }
    let written: i64 = inv.invoke(con)?;
    Ok(written == 1)
}

/// The application's shape: the six view topics, no stores.
pub fn spec() -> AppSpec {
    let inputs: Vec<&str> = Kind::ALL.iter().map(|k| k.topic()).collect();
    AppSpec::new("views", &inputs, &[])
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
        }
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
                lag.get_metric_with_label_values(&["views", k.topic(), &partition])
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
        let upsert = upsert_for(&self.keys, kind, &id, value)?;
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

/// Check Redis once, then run the sink until SIGTERM/SIGINT.
pub fn run(config: RuntimeConfig, redis: RedisConfig) -> Result<(), ViewsError> {
    check_redis(&redis)?;
    tracing::info!(redis = %redis.describe(), prefix = %redis.redis_prefix, "views sink");
    pickple_runtime::run(config, spec(), move |p| ViewsSink::new(redis.clone(), p))
        .map_err(Into::into)
}

/// [`run`] with an external stop flag (tests, embedding).
pub fn run_until(
    config: RuntimeConfig,
    redis: RedisConfig,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), ViewsError> {
    check_redis(&redis)?;
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
    fn product_indexes_follow_visibility() {
        let keys = Keys::new("t:");
        let mut p = serde_json::json!({
            "product_id": "p1", "vendor_id": "v1", "name": "n", "description": "d", "price": 5,
            "image_url": null, "public": true, "deleted": false,
            "stock": {"initial": 0, "added": 0, "available": 0, "reserved": 0, "sold": 0},
            "sale": null, "rejection": null, "updated_at": 7, "version": 3
        });
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert_eq!(u.version, 3);
        assert_eq!(
            u.indexes,
            vec![
                ("t:idx:products:public".to_string(), 7),
                ("t:idx:products:vendor:v1".to_string(), 7)
            ]
        );
        p["public"] = false.into();
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert_eq!(u.indexes, vec![("t:idx:products:vendor:v1".to_string(), 7)]);
        p["deleted"] = true.into();
        let u = upsert_for(&keys, Kind::Product, "p1", p.to_string().as_bytes()).unwrap();
        assert!(u.indexes.is_empty());
    }

    #[test]
    fn a_malformed_view_is_invalid() {
        let keys = Keys::new("t:");
        assert!(matches!(
            upsert_for(&keys, Kind::Order, "o", b"{\"version\": 1}"),
            Err(ProcessError::Invalid(_))
        ));
    }

    #[test]
    fn sentinel_urls_are_normalized() {
        let mut c = RedisConfig::local("x:");
        assert_eq!(c.sentinel_urls(), None);
        c.redis_sentinels = Some("a:26379, b:26379".into());
        assert_eq!(
            c.sentinel_urls().unwrap(),
            vec!["redis://a:26379", "redis://b:26379"]
        );
    }
}
