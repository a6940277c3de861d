//! Reading the views the sink keeps in Redis (layout in `pickple_views::keys`), and whether they
//! are caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pickple_views::ready::{evaluate, Readiness, ReadyRule};
use pickple_views::{Keys, Kind, RedisConfig};
use redis::aio::ConnectionManager;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A client for the current master: asks the Sentinels when configured.
pub async fn async_client(cfg: &RedisConfig) -> redis::RedisResult<redis::Client> {
    match cfg.sentinel_urls() {
        Some(urls) => {
            let mut sentinel = redis::sentinel::SentinelClient::build(
                urls,
                cfg.redis_master.clone(),
                None,
                redis::sentinel::SentinelServerType::Master,
            )?;
            sentinel.async_get_client().await
        }
        None => redis::Client::open(cfg.redis_url.as_str()),
    }
}

/// A stored view: its version and its JSON.
#[derive(Debug, Clone)]
pub struct Stored {
    pub version: u64,
    pub json: serde_json::Value,
}

impl Stored {
    pub fn status(&self) -> Option<&str> {
        self.json.get("status").and_then(|s| s.as_str())
    }

    pub fn parse<T: DeserializeOwned>(&self) -> ApiResult<T> {
        serde_json::from_value(self.json.clone())
            .map_err(|e| ApiError::internal(format!("unreadable view: {e}")))
    }
}

pub struct Views {
    cfg: RedisConfig,
    pub keys: Keys,
    con: tokio::sync::RwLock<Option<ConnectionManager>>,
    rule: ReadyRule,
    ignore_readiness: bool,
    readiness: RwLock<Readiness>,
    redis_up: AtomicBool,
}

impl Views {
    pub fn new(cfg: RedisConfig, rule: ReadyRule, ignore_readiness: bool) -> Views {
        Views {
            keys: cfg.keys(),
            cfg,
            con: tokio::sync::RwLock::new(None),
            rule,
            ignore_readiness,
            readiness: RwLock::new(evaluate(&[], 0, rule)),
            redis_up: AtomicBool::new(false),
        }
    }

    pub fn config(&self) -> &RedisConfig {
        &self.cfg
    }

    async fn con(&self) -> ApiResult<ConnectionManager> {
        if let Some(c) = self.con.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut slot = self.con.write().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let client = async_client(&self.cfg).await?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let con = client.get_connection_manager_with_config(config).await?;
        *slot = Some(con.clone());
        Ok(con)
    }

    /// Run one command; on error forget the connection so the next call reconnects (and asks
    /// the Sentinels for the master again).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> ApiResult<T> {
        let mut con = self.con().await?;
        match cmd.query_async::<T>(&mut con).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.con.write().await.take();
                Err(e.into())
            }
        }
    }

    pub async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> ApiResult<T> {
        let mut con = self.con().await?;
        match pipe.query_async::<T>(&mut con).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.con.write().await.take();
                Err(e.into())
            }
        }
    }

    pub async fn get(&self, kind: Kind, id: &str) -> ApiResult<Option<Stored>> {
        let (version, json): (Option<String>, Option<String>) = self
            .query(
                redis::cmd("HMGET")
                    .arg(self.keys.view(kind, id))
                    .arg("version")
                    .arg("json"),
            )
            .await?;
        match (version, json) {
            (Some(v), Some(j)) => Ok(Some(Stored {
                version: v.parse().unwrap_or(0),
                json: serde_json::from_str(&j)
                    .map_err(|e| ApiError::internal(format!("unreadable view: {e}")))?,
            })),
            _ => Ok(None),
        }
    }

    pub async fn get_typed<T: DeserializeOwned>(
        &self,
        kind: Kind,
        id: &str,
    ) -> ApiResult<Option<T>> {
        match self.get(kind, id).await? {
            Some(s) => s.parse().map(Some),
            None => Ok(None),
        }
    }

    /// Ids of an index, newest first, and the index size.
    pub async fn page(
        &self,
        index: &str,
        offset: usize,
        limit: usize,
    ) -> ApiResult<(Vec<String>, usize)> {
        if limit == 0 {
            let total: usize = self.query(redis::cmd("ZCARD").arg(index)).await?;
            return Ok((Vec::new(), total));
        }
        let (ids, total): (Vec<String>, usize) = self
            .pipe(
                redis::pipe()
                    .cmd("ZREVRANGE")
                    .arg(index)
                    .arg(offset)
                    .arg(offset + limit - 1)
                    .cmd("ZCARD")
                    .arg(index),
            )
            .await?;
        Ok((ids, total))
    }

    /// Every id of an index (bounded by `max`), newest first.
    pub async fn all_ids(&self, index: &str, max: usize) -> ApiResult<Vec<String>> {
        self.query(
            redis::cmd("ZREVRANGE")
                .arg(index)
                .arg(0)
                .arg(max.saturating_sub(1)),
        )
        .await
    }

    /// The views of `ids` (missing ones skipped), in order.
    pub async fn many<T: DeserializeOwned>(&self, kind: Kind, ids: &[String]) -> ApiResult<Vec<T>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET").arg(self.keys.view(kind, id)).arg("json");
        }
        let values: Vec<Option<String>> = self.pipe(&pipe).await?;
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|j| serde_json::from_str(&j).ok())
            .collect())
    }

    pub async fn ping(&self) -> Result<(), String> {
        let r = self.query::<String>(&redis::cmd("PING")).await;
        self.redis_up.store(r.is_ok(), Ordering::Relaxed);
        r.map(|_| ()).map_err(|e| e.message)
    }

    /// Re-read the sink's heartbeat and apply the readiness rule.
    pub async fn refresh_readiness(&self) -> Readiness {
        let now = now_millis();
        let result: ApiResult<Vec<(String, String)>> = self
            .query(redis::cmd("HGETALL").arg(self.keys.sink_status()))
            .await;
        let readiness = match result {
            Ok(fields) => evaluate(&fields, now, self.rule),
            Err(e) => Readiness {
                caught_up: false,
                partitions: 0,
                max_lag: None,
                reason: Some(e.message),
            },
        };
        *self.readiness.write().expect("readiness lock") = readiness.clone();
        readiness
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.read().expect("readiness lock").clone()
    }

    /// 503 unless the views are caught up (or readiness is ignored by configuration).
    pub fn ensure_ready(&self) -> ApiResult<()> {
        if self.ignore_readiness {
            return Ok(());
        }
        let r = self.readiness();
        if r.caught_up {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "views_not_ready",
                format!(
                    "the views are not caught up: {}",
                    r.reason.unwrap_or_default()
                ),
            ))
        }
    }

    /// Refresh the readiness every `every` in the background.
    pub fn spawn_readiness(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(views) = me.upgrade() else { return };
                views.refresh_readiness().await;
            }
        });
    }
}
