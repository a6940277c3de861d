//! Reading the views at the end: straight from Redis (the layout of
//! processors/views/src/keys.rs: `{prefix}view:{kind}:{id}` hashes with `json`, and the
//! `{prefix}idx:orders:user:{username}` sorted sets), or through the API as MASTER when Redis is
//! not reachable; and waiting until the shop is quiet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::Value;

use crate::api::{status_of, version_of, Api, Session};
use crate::ctx::Ctx;
use crate::setup::epoch_ms;

pub enum Reader {
    Redis {
        con: redis::aio::MultiplexedConnection,
        prefix: String,
    },
    Api {
        api: Arc<Api>,
        master: Arc<Session>,
    },
}

impl Reader {
    /// Redis when it answers and holds the MASTER's view under the prefix, else the API.
    pub async fn connect(ctx: &Ctx) -> Reader {
        let api = Reader::Api {
            api: ctx.api.clone(),
            master: ctx.master.clone(),
        };
        if ctx.cli.views_via_api {
            return api;
        }
        let prefix = ctx.cli.redis_prefix.clone();
        let attempt = async {
            let client = redis::Client::open(ctx.cli.redis_url.as_str())?;
            let mut con = client.get_multiplexed_async_connection().await?;
            let key = format!("{prefix}view:user:{}", ctx.cli.master_user);
            let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut con).await?;
            Ok::<_, redis::RedisError>((con, exists))
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok((con, true))) => Reader::Redis { con, prefix },
            Ok(Ok((_, false))) => {
                eprintln!(
                    "views: no '{prefix}view:user:{}' in {}: wrong --redis-prefix? reading through the API",
                    ctx.cli.master_user, ctx.cli.redis_url
                );
                api
            }
            Ok(Err(e)) => {
                eprintln!(
                    "views: Redis {} unusable ({e}); reading through the API",
                    ctx.cli.redis_url
                );
                api
            }
            Err(_) => {
                eprintln!(
                    "views: Redis {} timed out; reading through the API",
                    ctx.cli.redis_url
                );
                api
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Reader::Redis { prefix, .. } => format!("redis (prefix {prefix})"),
            Reader::Api { .. } => "api as MASTER".into(),
        }
    }

    /// The views of `kind` (`order`, `product`) for `ids`; missing ones are absent.
    pub async fn views(
        &self,
        kind: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, String> {
        let mut out = HashMap::new();
        match self {
            Reader::Redis { con, prefix } => {
                for chunk in ids.chunks(500) {
                    let mut pipe = redis::pipe();
                    for id in chunk {
                        pipe.cmd("HGET")
                            .arg(format!("{prefix}view:{kind}:{id}"))
                            .arg("json");
                    }
                    let mut con = con.clone();
                    let values: Vec<Option<String>> = pipe
                        .query_async(&mut con)
                        .await
                        .map_err(|e| format!("redis: {e}"))?;
                    for (id, v) in chunk.iter().zip(values) {
                        if let Some(v) = v.and_then(|j| serde_json::from_str(&j).ok()) {
                            out.insert(id.clone(), v);
                        }
                    }
                }
            }
            Reader::Api { api, master } => {
                let results: Vec<(String, Result<Option<Value>, String>)> =
                    stream::iter(ids.iter().cloned())
                        .map(|id| async move {
                            let r = api.view(&format!("/{kind}s/{id}"), Some(&**master)).await;
                            (id, r)
                        })
                        .buffer_unordered(16)
                        .collect()
                        .await;
                for (id, r) in results {
                    if let Some(v) = r? {
                        out.insert(id, v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Orders per user in the views' index (through the API: each user's `/orders/mine`).
    pub async fn orders_per_user(
        &self,
        users: &[String],
        sessions: &HashMap<String, Arc<Session>>,
    ) -> Result<HashMap<String, u64>, String> {
        let mut out = HashMap::new();
        match self {
            Reader::Redis { con, prefix } => {
                for chunk in users.chunks(500) {
                    let mut pipe = redis::pipe();
                    for u in chunk {
                        pipe.cmd("ZCARD")
                            .arg(format!("{prefix}idx:orders:user:{u}"));
                    }
                    let mut con = con.clone();
                    let n: Vec<u64> = pipe
                        .query_async(&mut con)
                        .await
                        .map_err(|e| format!("redis: {e}"))?;
                    out.extend(chunk.iter().cloned().zip(n));
                }
            }
            Reader::Api { api, .. } => {
                for u in users {
                    let Some(s) = sessions.get(u) else { continue };
                    let r = api.get("/orders/mine?limit=0", Some(&**s)).await?;
                    if r.status != 200 {
                        return Err(format!("orders of {u}: {}", r.describe()));
                    }
                    out.insert(u.clone(), r.body["total"].as_u64().unwrap_or(0));
                }
            }
        }
        Ok(out)
    }
}

/// The shop once quiet (or when the wait gave up).
pub struct Quiet {
    pub quiet: bool,
    pub waited_s: f64,
    pub orders: HashMap<String, Value>,
    pub products: HashMap<String, Value>,
    pub note: String,
}

/// Wait until no order or product view changes for `--quiet-secs`, no order is in a transient
/// status (PENDING, PAYMENT_PENDING, a paid order's cancel pending), and no unpaid order will
/// reach its payment deadline within the wait; at most `--quiet-timeout`.
pub async fn wait_quiet(ctx: &Ctx, reader: &Reader) -> Quiet {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(ctx.cli.quiet_timeout);
    let quiet_for = Duration::from_secs(ctx.cli.quiet_secs);
    let order_ids: Vec<String> = ctx.ledger.orders.lock().unwrap().keys().cloned().collect();
    // Orders already reported as never visible do not hold the wait up (the invariants report
    // them).
    let unseen: std::collections::HashSet<String> = ctx
        .ledger
        .orders
        .lock()
        .unwrap()
        .values()
        .filter(|o| o.unseen)
        .map(|o| o.order_id.clone())
        .collect();
    let product_ids: Vec<String> = ctx
        .ledger
        .products
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.product_id.clone())
        .collect();
    let pause = match reader {
        Reader::Redis { .. } => Duration::from_millis(500),
        Reader::Api { .. } => Duration::from_secs(2),
    };
    let mut last: Option<Vec<u64>> = None;
    let mut stable_since = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (orders, products) = match (
            reader.views("order", &order_ids).await,
            reader.views("product", &product_ids).await,
        ) {
            (Ok(o), Ok(p)) => (o, p),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("quiet: cannot read the views: {e}");
                if Instant::now() >= deadline {
                    return Quiet {
                        quiet: false,
                        waited_s: started.elapsed().as_secs_f64(),
                        orders: HashMap::new(),
                        products: HashMap::new(),
                        note: format!("views unreadable: {e}"),
                    };
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let versions: Vec<u64> = order_ids
            .iter()
            .map(|id| orders.get(id).map(version_of).unwrap_or(0))
            .chain(
                product_ids
                    .iter()
                    .map(|id| products.get(id).map(version_of).unwrap_or(0)),
            )
            .collect();
        if last.as_ref() != Some(&versions) {
            stable_since = Instant::now();
            last = Some(versions);
        }
        // Wait for the unpaid orders that will expire while there is still time for their
        // expiry to be processed and for the views to stay still for `quiet_for` after it;
        // the ones due later are left unpaid before their deadline.
        let horizon = epoch_ms()
            + deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as i64
            - quiet_for.as_millis() as i64
            - 5_000;
        let mut transient = 0;
        let mut expiring = 0;
        for v in orders.values() {
            match status_of(v) {
                "PENDING" | "PAYMENT_PENDING" => transient += 1,
                "PAID" if !v["cancel_requested"].is_null() => transient += 1,
                "AWAITING_PAYMENT"
                    if v["payment_deadline"]
                        .as_i64()
                        .is_some_and(|d| d + 2_000 <= horizon) =>
                {
                    expiring += 1
                }
                _ => {}
            }
        }
        let missing = order_ids
            .iter()
            .filter(|id| !orders.contains_key(*id) && !unseen.contains(*id))
            .count();
        let stable = stable_since.elapsed();
        let done = transient == 0 && expiring == 0 && missing == 0 && stable >= quiet_for;
        if done || Instant::now() >= deadline {
            return Quiet {
                quiet: done,
                waited_s: started.elapsed().as_secs_f64(),
                orders,
                products,
                note: format!(
                    "{transient} transient, {expiring} about to expire, {missing} missing, stable for {:.1}s",
                    stable.as_secs_f64()
                ),
            };
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "quiet: waiting ({:.0}s): {transient} transient, {expiring} unpaid about to expire, {missing} not visible, stable for {:.1}s",
                started.elapsed().as_secs_f64(),
                stable.as_secs_f64()
            );
        }
        tokio::time::sleep(pause).await;
    }
}
