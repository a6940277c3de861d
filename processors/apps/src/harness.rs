//! An in-process Pickple pipeline on a real broker, for integration tests and benchmarks: every
//! app on its own thread under a private topic prefix, an idempotent producer for commands, and a
//! read_committed watcher that keeps the latest value of every view. A pipeline can be halted
//! with its topics and state directories kept, and started again on them ([`Halted`]), e.g.
//! after its partitions grew.

use pickple_schemas::topic;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pickple_runtime::RuntimeConfig;
use pickple_schemas::messages::MessageType;
use pickple_schemas::RecordHeaders;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::{run_app, App, AppConfig};

pub fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// Topics the watcher follows: the views, plus the saga's and the deliveries' events, and every
/// application's dead letters (`<app>-dlq`, see [`Seen::dead_letters`]).
pub const WATCHED: &[&str] = &[
    topic::VIEW_ORDERS,
    topic::VIEW_PRODUCTS,
    topic::VIEW_SALE_TAKES,
    topic::VIEW_DELIVERIES,
    topic::VIEW_NOTIFICATIONS,
    topic::VIEW_PAYMENTS,
    topic::VIEW_USERS,
    topic::VIEW_VENDORS,
    topic::ORDER_EVENTS,
    // What a test counts: the saga's replies and the refunds it asks for.
    topic::ORDER_REPLIES,
    topic::PAYMENT_COMMANDS,
    topic::USER_EVENTS,
];

/// Every topic the watcher follows: [`WATCHED`] and each application's dead letters.
fn watched() -> Vec<String> {
    WATCHED
        .iter()
        .map(|t| t.to_string())
        .chain(
            pickple_topics::APPS
                .iter()
                .map(|app| topic::dead_letter(app.name)),
        )
        .collect()
}

/// Everything the watcher has read.
#[derive(Default)]
pub struct Seen {
    /// Latest value per (topic, key).
    pub latest: HashMap<(String, String), serde_json::Value>,
    /// Every record per topic, in the order read (key, value).
    pub all: HashMap<String, Vec<(String, serde_json::Value)>>,
}

impl Seen {
    pub fn get(&self, topic: &str, key: &str) -> Option<&serde_json::Value> {
        self.latest.get(&(topic.to_string(), key.to_string()))
    }

    pub fn records(&self, topic: &str) -> &[(String, serde_json::Value)] {
        self.all.get(topic).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn order_status(&self, order_id: &str) -> Option<&str> {
        self.get("view-orders", order_id)?["status"].as_str()
    }

    /// Every dead letter read, of any application: (topic, key).
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        self.all
            .iter()
            .filter(|(t, _)| t.ends_with("-dlq"))
            .flat_map(|(t, records)| records.iter().map(|(k, _)| (t.clone(), k.clone())))
            .collect()
    }
}

type AppThread = (App, JoinHandle<Result<(), crate::AppError>>);

pub struct Pipeline {
    pub prefix: String,
    config: AppConfig,
    started: Vec<App>,
    stop: Arc<AtomicBool>,
    apps: Mutex<Vec<AppThread>>,
    watcher: Option<JoinHandle<()>>,
    pub seen: Arc<Mutex<Seen>>,
    producer: BaseProducer,
    /// Both `Some` but while [`Pipeline::halt`] hands them over. Dropped after the apps are
    /// joined (fields drop after `Drop::drop`), so no app is still reading a topic it deletes or
    /// writing a directory that goes.
    state: Option<tempfile::TempDir>,
    topics: Option<pickple_topics::DeleteOnDrop>,
}

/// A pipeline whose apps and watcher stopped, its topics and state directories kept:
/// [`Halted::resume`] starts the same apps on them again. Dropping it deletes both.
pub struct Halted {
    pub prefix: String,
    config: AppConfig,
    apps: Vec<App>,
    state: tempfile::TempDir,
    _topics: pickple_topics::DeleteOnDrop,
}

/// Runtime knobs for a test pipeline: quick commits and punctuations.
pub fn test_runtime(prefix: &str, state: &std::path::Path, app: App) -> RuntimeConfig {
    let mut rt = RuntimeConfig::local(state.join(app.name()));
    rt.brokers = brokers();
    rt.topic_prefix = prefix.to_string();
    rt.commit_interval_ms = 50;
    rt.punctuate_interval_ms = 200;
    rt
}

impl Pipeline {
    /// Create the whole topic catalogue under a fresh prefix and start every app of `apps`.
    pub fn start(tag: &str, config: &AppConfig, apps: &[App]) -> anyhow::Result<Pipeline> {
        let prefix = format!("{tag}{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let specs = pickple_topics::catalogue(&prefix);
        let topics = pickple_topics::DeleteOnDrop::new(&brokers(), &prefix);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(pickple_topics::apply(
                &brokers(),
                &specs,
                &pickple_topics::Replication::SINGLE,
            ))?;
        let state = tempfile::tempdir()?;
        Pipeline::launch(prefix, config, apps, state, topics)
    }

    /// Start `apps`, the watcher and the producer on the existing topics of `prefix` (whatever
    /// their partition count) with the state directories under `state`.
    fn launch(
        prefix: String,
        config: &AppConfig,
        apps: &[App],
        state: tempfile::TempDir,
        topics: pickple_topics::DeleteOnDrop,
    ) -> anyhow::Result<Pipeline> {
        // One metadata request serves the leader wait and the watcher.
        let counts = pickple_topics::partition_counts(&brokers())?;
        wait_leaders(&prefix, &counts)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for &app in apps {
            let rt = test_runtime(&prefix, state.path(), app);
            let (config, stop) = (config.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name(format!("app-{}", app.name()))
                .spawn(move || run_app(app, &config, rt, stop))?;
            handles.push((app, h));
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watcher = {
            let (seen, stop, prefix) = (seen.clone(), stop.clone(), prefix.clone());
            let consumer = watcher_consumer(&prefix, &counts)?;
            std::thread::Builder::new()
                .name("watcher".into())
                .spawn(move || watch(consumer, &prefix, seen, stop))?
        };
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .create()?;
        Ok(Pipeline {
            prefix,
            config: config.clone(),
            started: apps.to_vec(),
            stop,
            apps: Mutex::new(handles),
            watcher: Some(watcher),
            seen,
            producer,
            state: Some(state),
            topics: Some(topics),
        })
    }

    /// The directory under which every app keeps its state (`<dir>/<app name>`).
    pub fn state_dir(&self) -> &std::path::Path {
        self.state
            .as_ref()
            .expect("the state is kept until the pipeline goes")
            .path()
    }

    pub fn topic(&self, t: &str) -> String {
        format!("{}{}", self.prefix, t)
    }

    /// Produce a message keyed by `key`, with the standard headers (and a traceparent if given).
    pub fn send<M: Serialize + MessageType>(
        &self,
        topic: &str,
        key: &str,
        msg: &M,
        traceparent: Option<&str>,
    ) {
        let mut h = RecordHeaders::new(msg.message_type(), uuid::Uuid::new_v4().to_string());
        if let Some(t) = traceparent {
            h.traceparent = t.to_string();
        }
        self.send_bytes(topic, key, &pickple_schemas::encode(msg), Some(&h));
    }

    /// Produce raw bytes (garbage for the dead-letter path).
    pub fn send_raw(&self, topic: &str, key: &str, value: &[u8]) {
        self.send_bytes(topic, key, value, None);
    }

    /// Produce raw bytes with the given headers, if any.
    pub fn send_bytes(&self, topic: &str, key: &str, value: &[u8], h: Option<&RecordHeaders>) {
        let headers = h.map(RecordHeaders::to_kafka).unwrap_or_default();
        let topic = self.topic(topic);
        let mut record = BaseRecord::to(&topic)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
            }
        }
    }

    pub fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(30))
            .expect("flush the command producer");
    }

    /// Wait (bounded) until `cond` holds over what the watcher has read.
    pub fn wait_for(&self, secs: u64, what: &str, cond: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if cond(&self.seen.lock().unwrap()) {
                return;
            }
            self.check_apps();
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_status(&self, secs: u64, order_id: &str, status: &str) -> serde_json::Value {
        self.wait_for(secs, &format!("order {order_id} {status}"), |s| {
            s.order_status(order_id) == Some(status)
        });
        self.seen
            .lock()
            .unwrap()
            .get("view-orders", order_id)
            .cloned()
            .unwrap()
    }

    pub fn view(&self, topic: &str, key: &str) -> Option<serde_json::Value> {
        self.seen.lock().unwrap().get(topic, key).cloned()
    }

    fn check_apps(&self) {
        let mut apps = self.apps.lock().unwrap();
        if let Some(i) = apps.iter().position(|(_, h)| h.is_finished()) {
            let (app, h) = apps.remove(i);
            let how = match h.join() {
                Ok(Ok(())) => "without an error".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "by a panic".to_string(),
            };
            panic!("app {} stopped early: {how}", app.name());
        }
    }

    /// Stop every app (committing) and the watcher, and join them.
    pub fn stop(self) {
        self.halt();
    }

    /// Stop every app (committing) and the watcher, and join them, keeping the topics and the
    /// state directories for [`Halted::resume`]. Panics if an app failed.
    pub fn halt(mut self) -> Halted {
        self.stop.store(true, Ordering::Relaxed);
        let apps = std::mem::take(&mut *self.apps.lock().unwrap());
        for (app, h) in apps {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("app {} failed: {e}", app.name()),
                Err(_) => panic!("app {} panicked", app.name()),
            }
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        Halted {
            prefix: self.prefix.clone(),
            config: self.config.clone(),
            apps: std::mem::take(&mut self.started),
            state: self.state.take().expect("the state is kept until halted"),
            _topics: self
                .topics
                .take()
                .expect("the topics are kept until halted"),
        }
    }
}

impl Halted {
    /// The directory under which every app kept its state (`<dir>/<app name>`).
    pub fn state_dir(&self) -> &std::path::Path {
        self.state.path()
    }

    /// Remove every app's local state, so that the next start restores all of it from the
    /// changelogs.
    pub fn wipe_state(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(self.state.path())? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Start the same apps again on the kept topics, with their partition counts of now, and
    /// state directories; a new watcher reads every watched topic from its beginning.
    pub fn resume(self) -> anyhow::Result<Pipeline> {
        let Halted {
            prefix,
            config,
            apps,
            state,
            _topics: topics,
        } = self;
        Pipeline::launch(prefix, &config, &apps, state, topics)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Whatever the apps' outcome (a failing test is already reporting), wait for them before
        // their topics and state directory go.
        for (_, h) in std::mem::take(&mut *self.apps.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = h.join();
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// New topics and partitions are visible before they have leaders; the runtime's restore does
/// not retry a "not leader" answer, so wait until every partition of the catalogue under
/// `prefix` (as many as the broker has, at least the catalogue's) answers a watermark query.
fn wait_leaders(prefix: &str, counts: &HashMap<String, i32>) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for spec in pickple_topics::catalogue(prefix) {
        let partitions = counts.get(&spec.name).copied().unwrap_or(0);
        for p in 0..partitions.max(spec.partitions) {
            while let Err(e) = consumer.fetch_watermarks(&spec.name, p, Duration::from_secs(5)) {
                if Instant::now() > deadline {
                    anyhow::bail!("{}[{p}] has no leader: {e}", spec.name);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Reads every watched topic from its beginning, every partition the broker has (the leaders
/// answered: [`wait_leaders`] came first).
fn watcher_consumer(prefix: &str, counts: &HashMap<String, i32>) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{prefix}watcher"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in watched() {
        let name = format!("{prefix}{t}");
        let partitions = counts.get(&name).copied().unwrap_or(0);
        for p in 0..partitions.max(pickple_topics::PARTITIONS) {
            tpl.add_partition_offset(&name, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn watch(consumer: BaseConsumer, prefix: &str, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let topic = m
            .topic()
            .strip_prefix(prefix)
            .unwrap_or(m.topic())
            .to_string();
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let value: serde_json::Value = m
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut s = seen.lock().unwrap();
        s.all
            .entry(topic.clone())
            .or_default()
            .push((key.clone(), value.clone()));
        // Views carry a version: an older one never replaces a newer one.
        let slot = s
            .latest
            .entry((topic, key))
            .or_insert(serde_json::Value::Null);
        let newer = match (slot["version"].as_u64(), value["version"].as_u64()) {
            (Some(old), Some(new)) => new > old,
            _ => true,
        };
        if newer {
            *slot = value;
        }
    }
}

/// Flash sale: `orders` PlaceOrder commands from `users` users for a sale of `sale` units with
/// a per-user limit of `limit` (stock above the sale quantity, so the sale is the limit).
pub struct FlashSale {
    pub product_id: String,
    pub orders: usize,
    pub users: usize,
    pub sale: u64,
    pub limit: u64,
}

#[derive(Debug)]
pub struct FlashOutcome {
    pub settle: Duration,
    pub reserved_orders: usize,
    pub reserved_units: u64,
    pub cancelled: usize,
}

impl FlashSale {
    pub fn order_id(&self, i: usize) -> String {
        format!("{}-o{i}", self.product_id)
    }
    pub fn user(&self, i: usize) -> String {
        format!("u{:04}", i % self.users)
    }
    /// 1 or 2 units, deterministically mixed.
    pub fn quantity(&self, i: usize) -> u64 {
        if i.is_multiple_of(3) {
            2
        } else {
            1
        }
    }

    /// Create the product with `sale + 50` units and open the sale; wait until it is visible.
    pub fn prepare(&self, p: &Pipeline) {
        use pickple_schemas::{SaleTerms, StockCommand};
        let id = self.product_id.clone();
        p.send(
            "stock-commands",
            &id,
            &StockCommand::CreateProduct {
                product_id: id.clone(),
                vendor_id: "flash-vendor".into(),
                name: "Limited sneaker".into(),
                description: "flash sale".into(),
                price: 1000,
                image_url: None,
                public: true,
            },
            None,
        );
        p.send(
            "stock-commands",
            &id,
            &StockCommand::SetStock {
                product_id: id.clone(),
                quantity: self.sale + 50,
            },
            None,
        );
        let now = pickple_runtime::now_millis();
        p.send(
            "stock-commands",
            &id,
            &StockCommand::OpenSale {
                product_id: id.clone(),
                sale: SaleTerms {
                    opens_at: now - 60_000,
                    closes_at: now + 3_600_000,
                    quantity: self.sale,
                    per_user_limit: self.limit,
                },
            },
            None,
        );
        p.flush();
        p.wait_for(60, "flash product ready", |s| {
            s.get("view-products", &id)
                .is_some_and(|v| !v["sale"].is_null())
        });
    }

    /// Send every order and wait until none is PENDING; returns how long that took.
    pub fn run(&self, p: &Pipeline, timeout_secs: u64) -> FlashOutcome {
        use pickple_schemas::{OrderCommand, OrderLine};
        let start = Instant::now();
        for i in 0..self.orders {
            let order_id = self.order_id(i);
            let user = self.user(i);
            p.send(
                "order-commands",
                &order_id,
                &OrderCommand::PlaceOrder {
                    order_id: order_id.clone(),
                    email: format!("{user}@flash.test"),
                    username: user,
                    lines: vec![OrderLine {
                        product_id: self.product_id.clone(),
                        quantity: self.quantity(i),
                    }],
                    // The flash sale never ships: the processor takes an order without one.
                    shipping: None,
                },
                None,
            );
        }
        p.flush();
        p.wait_for(timeout_secs, "every flash order settled", |s| {
            (0..self.orders).all(|i| {
                matches!(
                    s.order_status(&self.order_id(i)),
                    Some("AWAITING_PAYMENT") | Some("CANCELLED")
                )
            })
        });
        let settle = start.elapsed();
        let s = p.seen.lock().unwrap();
        let mut out = FlashOutcome {
            settle,
            reserved_orders: 0,
            reserved_units: 0,
            cancelled: 0,
        };
        for i in 0..self.orders {
            match s.order_status(&self.order_id(i)) {
                Some("AWAITING_PAYMENT") => {
                    out.reserved_orders += 1;
                    out.reserved_units += self.quantity(i);
                }
                _ => out.cancelled += 1,
            }
        }
        out
    }
}
