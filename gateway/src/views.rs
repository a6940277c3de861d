//! Reading the views the sink keeps in Redis (layout in `pickple_view_model::keys`), typed as
//! the sink wrote them; whether the sink is alive, and how far behind it is.
//!
//! A view that cannot be read as its type (never written by a sink of this version) is a 500
//! `view_unreadable`, logged with its kind and id and counted in
//! `pickple_views_unreadable_total{kind}`, whether it is read alone or as part of a listing: a
//! page is never served with fewer items than it should hold.
//!
//! The rule (`pickple_view_model::ready`): a view read answers 503 `views_unavailable` only
//! while the sink has never reported (nothing in Redis is worth serving). A lagging sink's views
//! are served with the [`LAG_HEADER`] and [`STALE_HEADER`] headers; a sink that stopped
//! reporting (its heartbeat older than `views_max_staleness_ms`: killed, restarting, waiting for
//! a broker) degrades the answers the same way, [`STALE_HEADER`] without a lag, rather than
//! failing them. Commands never look at the lag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use pickple_view_model::ready::{evaluate, Readiness, ReadyRule};
use pickple_view_model::{Keys, Kind, RedisConfig, View};
use redis::aio::ConnectionManager;

use crate::error::{ApiError, ApiResult};
use crate::metrics::ViewMetrics;
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

/// Read a stored view's JSON as its type; an unreadable one is logged, counted and a 500.
fn parse<V: View>(id: &str, json: &str) -> ApiResult<V> {
    pickple_view_model::decode::<V>(json.as_bytes()).map_err(|e| unreadable(V::KIND, id, &e))
}

fn unreadable(kind: Kind, id: &str, error: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(%kind, %id, error = %error, "unreadable view");
    ViewMetrics::global()
        .unreadable
        .with_label_values(&[kind.as_str()])
        .inc();
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "view_unreadable",
        // The cause is in the log; the client learns which view, not the decoder's detail.
        format!("the {kind} view {id} cannot be read"),
    )
}

/// Response header of every view read (`GET /api/v1/...`): the views sink's lag, in records
/// (the largest over its partitions). Absent while the sink is not reporting: the lag is then
/// unknown (and [`STALE_HEADER`] is set).
pub const LAG_HEADER: &str = "pickple-views-lag";
/// Response header of a view read while the lag is over the configured maximum
/// (`PICKPLE_VIEWS_MAX_LAG`) or the sink has stopped reporting: `true`. The view served is the
/// latest Redis has, possibly behind the commands already accepted. Absent when the views are
/// caught up.
pub const STALE_HEADER: &str = "pickple-views-stale";
/// [`LAG_HEADER`] as documented.
pub const LAG_HEADER_NAME: &str = "Pickple-Views-Lag";
/// [`STALE_HEADER`] as documented.
pub const STALE_HEADER_NAME: &str = "Pickple-Views-Stale";

/// How far behind the views are, as the sink last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Records behind the end of the view topics (the largest partition's lag); unknown while
    /// the sink is not reporting.
    pub lag: Option<i64>,
    /// The lag is over the configured maximum, or unknown.
    pub stale: bool,
}

impl Freshness {
    /// Set [`LAG_HEADER`] when the lag is known and, when stale, [`STALE_HEADER`].
    pub fn apply(&self, headers: &mut HeaderMap) {
        match self.lag {
            Some(lag) => headers.insert(LAG_HEADER, HeaderValue::from(lag.max(0))),
            None => headers.remove(LAG_HEADER),
        };
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

    /// Run a Lua script (loaded on first use), reconnecting on error like [`Views::query`].
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> ApiResult<T> {
        let mut con = self.con().await?;
        match script.invoke_async::<T>(&mut con).await {
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

    /// The view of `id`, if the sink wrote one.
    pub async fn get<V: View>(&self, id: &str) -> ApiResult<Option<V>> {
        let json: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.keys.view(V::KIND, id))
                    .arg("json"),
            )
            .await?;
        json.map(|json| parse(id, &json)).transpose()
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

    /// The views of `ids`, in order: every id of an index has a view (the sink writes both in
    /// one script), so a missing or unreadable one fails the whole read (see the module docs).
    pub async fn many<V: View>(&self, ids: &[String]) -> ApiResult<Vec<V>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGET")
                .arg(self.keys.view(V::KIND, id))
                .arg("json");
        }
        let values: Vec<Option<String>> = self.pipe(&pipe).await?;
        let mut views = Vec::with_capacity(ids.len());
        let mut failure = None;
        for (id, json) in ids.iter().zip(values) {
            let read = match json {
                Some(json) => parse::<V>(id, &json),
                None => Err(unreadable(V::KIND, id, &"indexed but not stored")),
            };
            match read {
                Ok(view) => views.push(view),
                // Log and count every unreadable view of the page, answer with the first.
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(views),
        }
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
        ViewMetrics::global()
            .sink_live
            .set(i64::from(readiness.live));
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

    /// 503 `views_unavailable` unless the views sink has reported (or readiness is ignored by
    /// configuration). Whether it is alive and how far behind it is do not matter here: a
    /// lagging or silent sink's views are served, with [`Freshness`] headers, and commands
    /// never wait for it.
    pub fn ensure_servable(&self) -> ApiResult<()> {
        if self.ignore_readiness {
            return Ok(());
        }
        let r = self.readiness();
        if r.servable() {
            Ok(())
        } else {
            Err(ApiError::unavailable(
                "views_unavailable",
                format!(
                    "the views sink has not reported, there are no views to serve yet: {}",
                    r.reason.unwrap_or_default()
                ),
            ))
        }
    }

    /// How far behind the views are: the lag a live sink reports, or stale with the lag
    /// unknown once it has stopped reporting.
    pub fn freshness(&self) -> Option<Freshness> {
        let r = self.readiness();
        r.servable().then(|| Freshness {
            lag: r.live.then(|| r.max_lag.unwrap_or(0)),
            stale: r.stale(),
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
