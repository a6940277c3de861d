//! Reading the views the sink keeps in Redis (layout in `pickple_views::keys`), whether the sink
//! is alive, and how far behind it is.
//!
//! The rule (`pickple_views::ready`): a view read answers 503 `views_unavailable` only while the
//! sink has never reported or its last heartbeat is older than `views_max_staleness_ms` (a dead
//! sink). A live but lagging sink's views are served as they are, with the [`LAG_HEADER`] and
//! [`STALE_HEADER`] headers; commands never look at the lag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use pickple_views::ready::{evaluate, Readiness, ReadyRule};
use pickple_views::{Keys, Kind, RedisConfig};
use redis::aio::ConnectionManager;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

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

    /// Why the last command on this entity was refused by its processor, if it was.
    pub fn rejection(&self) -> Option<&str> {
        self.json.get("rejection").and_then(|s| s.as_str())
    }

    pub fn parse<T: DeserializeOwned>(&self) -> ApiResult<T> {
        serde_json::from_value(self.json.clone())
            .map_err(|e| ApiError::internal(format!("unreadable view: {e}")))
    }
}

/// Response header of every view read (`GET /api/v1/...`): the views sink's lag, in records
/// (the largest over its partitions). Absent only while the sink is not reporting (then the
/// read is a 503, unless `PICKPLE_VIEWS_IGNORE_READINESS` is set).
pub const LAG_HEADER: &str = "pickple-views-lag";
/// Response header of a view read while the lag is over the configured maximum
/// (`PICKPLE_VIEWS_MAX_LAG`): `true`. The view served is the latest Redis has, possibly behind
/// the commands already accepted. Absent when the views are caught up.
pub const STALE_HEADER: &str = "pickple-views-stale";
/// [`LAG_HEADER`] as documented.
pub const LAG_HEADER_NAME: &str = "Pickple-Views-Lag";
/// [`STALE_HEADER`] as documented.
pub const STALE_HEADER_NAME: &str = "Pickple-Views-Stale";

/// How far behind the views are, as the sink last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Records behind the end of the view topics (the largest partition's lag).
    pub lag: i64,
    /// The lag is over the configured maximum.
    pub stale: bool,
}

impl Freshness {
    /// Set [`LAG_HEADER`] and, when stale, [`STALE_HEADER`].
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(LAG_HEADER, HeaderValue::from(self.lag.max(0)));
        if self.stale {
            headers.insert(STALE_HEADER, HeaderValue::from_static("true"));
        } else {
            headers.remove(STALE_HEADER);
        }
    }
}

/// Middleware: every view read (`GET`/`HEAD` under `/api/v1`) answers with the freshness
/// headers, taken when the answer is sent (so a long-poll reports the lag at its end).
pub async fn freshness_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let view_read = matches!(*req.method(), Method::GET | Method::HEAD)
        && req.uri().path().starts_with(crate::routes::API);
    let mut res = next.run(req).await;
    if view_read {
        if let Some(f) = state.views.freshness() {
            f.apply(res.headers_mut());
        }
    }
    res
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
            Err(e) => Readiness::dead(e.message),
        };
        *self.readiness.write().expect("readiness lock") = readiness.clone();
        readiness
    }

    /// The last readiness evaluated (refreshed in the background).
    pub fn readiness(&self) -> Readiness {
        self.readiness.read().expect("readiness lock").clone()
    }

    pub fn ignores_readiness(&self) -> bool {
        self.ignore_readiness
    }

    /// 503 `views_unavailable` unless the views sink is alive: it has reported and its last
    /// report is recent (or readiness is ignored by configuration). How far behind it is does
    /// not matter here: a lagging sink's views are served, with [`Freshness`] headers, and
    /// commands never wait for it.
    pub fn ensure_live(&self) -> ApiResult<()> {
        if self.ignore_readiness {
            return Ok(());
        }
        let r = self.readiness();
        if r.live {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "views_unavailable",
                format!(
                    "the views sink is not reporting, the views cannot be trusted: {}",
                    r.reason.unwrap_or_default()
                ),
            ))
        }
    }

    /// How far behind the views are, when a live sink says so.
    pub fn freshness(&self) -> Option<Freshness> {
        let r = self.readiness();
        r.live.then(|| Freshness {
            lag: r.max_lag.unwrap_or(0),
            stale: r.lagging,
        })
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
