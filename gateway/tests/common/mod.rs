//! Helpers for the gateway's tests against the real local Kafka and Redis: a private topic
//! prefix and Redis key prefix per test, the gateway in-process on an ephemeral port, views
//! written into Redis through the sink's own upsert, and read_committed topic reads.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pickple_gateway::{app, AppState, Config};
use pickple_schemas::Role;
use pickple_view_model::ready::PartitionStatus;
use pickple_view_model::{apply_upsert, upsert_for, Kind, UPSERT_LUA};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

pub fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

pub fn unique(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A running in-process gateway with its own topics and Redis keys.
pub struct Gw {
    pub base: String,
    pub state: AppState,
    pub config: Config,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    _topics: pickple_topics::DeleteOnDrop,
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.server.abort();
        // Leave the shared Redis clean: delete this test's keys.
        if let Ok(mut con) = self.config.redis.client().and_then(|c| c.get_connection()) {
            let pattern = format!("{}*", self.config.redis.redis_prefix);
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query(&mut con)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut con);
            }
        }
    }
}

impl Gw {
    /// Topics created, views marked caught up.
    pub async fn start() -> Gw {
        Gw::start_with(true, |_| {}).await
    }

    pub async fn start_with(ready: bool, tweak: impl FnOnce(&mut Config)) -> Gw {
        let prefix = unique("gw") + ".";
        let specs: Vec<_> = pickple_topics::catalogue(&prefix)
            .into_iter()
            .filter(|t| t.name.ends_with("-commands"))
            .collect();
        pickple_topics::apply(&brokers(), &specs, &pickple_topics::Replication::SINGLE)
            .await
            .unwrap();
        let mut config = Config::local(&prefix, &(unique("gwt:") + ":"));
        tweak(&mut config);
        if ready {
            mark_ready(&config);
        }
        let state = AppState::new(config.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router =
            app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        // Wait for the change-notice subscription so long-poll tests are not racing it.
        let mut connected = state.notifier.watch_connected();
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|up| *up))
            .await
            .expect("the change-notice subscription connects within 10 s")
            .expect("the notifier is alive");
        Gw {
            base,
            state,
            config,
            http: reqwest::Client::new(),
            server,
            _topics: pickple_topics::DeleteOnDrop::new(&brokers(), &prefix),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn topic(&self, logical: &str) -> String {
        self.config.topic(logical)
    }

    /// An access token for `username` with `role`. The gateway checks every token against
    /// the account's view, so this writes an ACTIVE one (identity `uid-<username>`, token
    /// version 0) unless a later version is there.
    pub fn token(&self, username: &str, role: Role) -> String {
        let view = user_view(username, "$argon2id$unused", role, "ACTIVE", 1);
        self.put_view(Kind::User, username, &view);
        let user: pickple_schemas::UserView = serde_json::from_value(view).unwrap();
        let subject = pickple_gateway::auth::Subject {
            user: &user,
            sid: "test-sign-in",
        };
        self.state.jwt.issue(&subject).unwrap().0
    }

    /// Write a view into Redis exactly as the sink does (version guard, indexes, notice).
    pub fn put_view(&self, kind: Kind, id: &str, view: &Value) -> bool {
        let keys = self.config.redis.keys();
        let u = upsert_for(&keys, kind, id, view.to_string().as_bytes()).unwrap();
        let mut con = redis_con(&self.config);
        apply_upsert(&mut con, &redis::Script::new(UPSERT_LUA), &keys, &u).unwrap()
    }

    /// An ACTIVE user with an argon2 password.
    pub async fn put_user(&self, username: &str, password: &str, role: Role) {
        let hash = pickple_gateway::auth::hash_password(password.into())
            .await
            .unwrap();
        self.put_view(
            Kind::User,
            username,
            &user_view(username, &hash, role, "ACTIVE", 1),
        );
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_parts(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_parts(req.send().await.unwrap()).await
    }
}

pub async fn into_parts(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub fn redis_con(config: &Config) -> redis::Connection {
    config.redis.client().unwrap().get_connection().unwrap()
}

/// Pretend a caught-up sink reported (6 partitions, fresh, no lag).
pub fn mark_ready(config: &Config) {
    // Far enough ahead that a slow test never sees it go stale.
    set_heartbeat(config, &[0; 6], -600_000);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Write the views sink's heartbeat as its tasks do: field `p<i>` with lag `lags[i]`, written
/// `age_ms` ago (negative: in the future, so it never goes stale during a test).
pub fn set_heartbeat(config: &Config, lags: &[i64], age_ms: i64) {
    let keys = config.redis.keys();
    let mut con = redis_con(config);
    let _: () = redis::cmd("DEL")
        .arg(keys.sink_status())
        .query(&mut con)
        .unwrap();
    for (p, lag) in lags.iter().enumerate() {
        let status = PartitionStatus {
            at: now_ms() - age_ms,
            lag: *lag,
            last_write_at: None,
        };
        let _: () = redis::cmd("HSET")
            .arg(keys.sink_status())
            .arg(format!("p{p}"))
            .arg(serde_json::to_string(&status).unwrap())
            .query(&mut con)
            .unwrap();
    }
}

impl Gw {
    /// Set the sink's heartbeat (see [`set_heartbeat`]; no lags: the hash is deleted, as if
    /// the sink never reported) and make the gateway re-read it now.
    pub async fn heartbeat(&self, lags: &[i64], age_ms: i64) {
        set_heartbeat(&self.config, lags, age_ms);
        self.state.views.refresh_readiness().await;
    }

    /// A GET with the answer's headers.
    pub async fn get_with_headers(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let headers = res.headers().clone();
        let (status, body) = into_parts(res).await;
        (status, headers, body)
    }

    /// Wait (up to 10 s) until exactly `n` long-polls on the view `kind`/`id` have read its
    /// version `read` (`None`: no view yet) and wait for a change: a view written after this
    /// is one they see change.
    pub async fn until_waiting(&self, kind: Kind, id: &str, read: Option<u64>, n: usize) {
        let channel = self.config.redis.keys().channel(kind, id);
        let mut waiting = self.state.notifier.watch_waiting();
        let blocked = |w: &pickple_gateway::longpoll::Waiting| {
            w.get(&channel)
                .and_then(|versions| versions.get(&read))
                .copied()
                .unwrap_or(0)
                == n
        };
        tokio::time::timeout(Duration::from_secs(10), waiting.wait_for(blocked))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not {n} long-polls waiting on {kind} {id} after version {read:?} within 10 s"
                )
            })
            .expect("the notifier is alive");
    }

    /// Wait (up to 10 s) until exactly `n` long-polls are registered with the notifier.
    pub async fn until_waiters(&self, n: usize) {
        let mut waiters = self.state.notifier.watch_waiters();
        tokio::time::timeout(Duration::from_secs(10), waiters.wait_for(|w| *w == n))
            .await
            .unwrap_or_else(|_| panic!("not {n} long-poll waiters within 10 s"))
            .expect("the notifier is alive");
    }
}

/// A header's value as text.
pub fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

pub fn user_view(username: &str, hash: &str, role: Role, status: &str, version: u64) -> Value {
    json!({
        "username": username, "nickname": username, "email": format!("{username}@example.com"),
        "password_hash": hash, "role": role, "status": status, "rejection": null,
        "user_id": format!("uid-{username}"), "token_version": 0,
        "updated_at": 1, "version": version
    })
}

pub fn order_view(id: &str, user: &str, vendors: &[&str], status: &str, version: u64) -> Value {
    json!({
        "order_id": id, "username": user, "status": status,
        "lines": [{"product_id": "p1", "quantity": 1, "unit_price": 10, "vendor_id": vendors.first(), "reserved": true}],
        "amount": 10, "payment_deadline": null, "payment_status": null, "delivery_status": null,
        "vendor_ids": vendors,
        "history": [{"status": "PENDING", "at": 1000, "reason": ""}],
        "rejection": null, "version": version
    })
}

pub fn vendor_view(id: &str, manager: &str, version: u64) -> Value {
    json!({
        "vendor_id": id, "name": "Shop", "manager": manager, "deleted": false,
        "rejection": null, "updated_at": 1, "version": version
    })
}

pub fn product_view(id: &str, vendor: &str, public: bool, version: u64) -> Value {
    json!({
        "product_id": id, "vendor_id": vendor, "name": "Green tea", "description": "", "price": 5,
        "image_url": null, "public": public, "deleted": false,
        "stock": {"initial": 10, "added": 0, "available": 10, "reserved": 0, "sold": 0},
        "sale": null, "rejection": null, "updated_at": 2, "version": version
    })
}

pub fn delivery_view(
    order: &str,
    user: &str,
    vendors: &[&str],
    status: &str,
    version: u64,
) -> Value {
    let shipments: Vec<Value> = vendors
        .iter()
        .map(|v| json!({"vendor_id": v, "status": status, "lines": [{"product_id": format!("p-{v}"), "quantity": 1}]}))
        .collect();
    json!({
        "order_id": order, "username": user, "vendor_ids": vendors, "status": status,
        "created_at": 1000, "shipping": shipping(), "shipments": shipments,
        "rejection": null, "version": version
    })
}

/// A delivery address that passes the domain's rules.
pub fn shipping() -> Value {
    json!({"recipient": "Ann Lee", "address": "1 Main St, Seoul", "contact": "010-1234-5678"})
}

/// A committed record read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: String,
    pub value: Value,
    pub headers: HashMap<String, String>,
}

/// Read a topic from the beginning to its current end, read_committed.
pub fn read_topic(topic: &str) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let partitions = pickple_topics::PARTITIONS;
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        // A topic nothing was written to may not have a leader yet: ask until it has one.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (_, high) = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Ok(w) => break w,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("watermarks of {topic}[{p}]: {e}; asking again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("watermarks of {topic}[{p}]: {e}"),
            }
        };
        ends.push(high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let total: i64 = ends.iter().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Read {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or(Value::Null),
                headers,
            });
        }
    }
    out
}
