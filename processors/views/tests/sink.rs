//! The views sink against the real local Redis (and Kafka for the end-to-end case), each test
//! with its own key prefix and topic prefix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pickple_runtime::RuntimeConfig;
use pickple_schemas::topic;
use pickple_topics::catalogue::app;
use pickple_view_model::{apply_upsert, ready, upsert_for, Keys, Kind, RedisConfig, UPSERT_LUA};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use redis::Commands;

fn unique(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn redis_con() -> redis::Connection {
    RedisConfig::local("x:")
        .client()
        .unwrap()
        .get_connection()
        .unwrap()
}

fn order_json(id: &str, user: &str, vendors: &[&str], status: &str, version: u64) -> String {
    serde_json::json!({
        "order_id": id, "username": user, "status": status,
        "lines": [], "amount": 0, "payment_deadline": null, "payment_status": null,
        "delivery_status": null, "vendor_ids": vendors,
        "history": [{"status": "PENDING", "at": 1000, "reason": ""}],
        "rejection": null, "version": version
    })
    .to_string()
}

fn product_json(id: &str, vendor: &str, public: bool, deleted: bool, version: u64) -> String {
    serde_json::json!({
        "product_id": id, "vendor_id": vendor, "name": "Tea", "description": "", "price": 5,
        "image_url": null, "public": public, "deleted": deleted,
        "stock": {"initial": 0, "added": 0, "available": 0, "reserved": 0, "sold": 0},
        "sale": null, "rejection": null, "updated_at": 5, "version": version
    })
    .to_string()
}

fn write(con: &mut redis::Connection, keys: &Keys, kind: Kind, id: &str, json: &str) -> bool {
    let script = redis::Script::new(UPSERT_LUA);
    let u = upsert_for(keys, kind, id, json.as_bytes()).unwrap();
    apply_upsert(con, &script, keys, &u).unwrap()
}

fn stored_version(con: &mut redis::Connection, keys: &Keys, kind: Kind, id: &str) -> Option<u64> {
    let v: Option<String> = con.hget(keys.view(kind, id), "version").unwrap();
    v.map(|v| v.parse().unwrap())
}

#[test]
fn an_older_version_never_overwrites_a_newer_one() {
    let keys = Keys::new(unique("vt:") + ":");
    let mut con = redis_con();
    assert!(write(
        &mut con,
        &keys,
        Kind::Order,
        "o1",
        &order_json("o1", "ann", &["v1"], "PAID", 5)
    ));
    assert!(!write(
        &mut con,
        &keys,
        Kind::Order,
        "o1",
        &order_json("o1", "ann", &["v1"], "PENDING", 3)
    ));
    assert!(!write(
        &mut con,
        &keys,
        Kind::Order,
        "o1",
        &order_json("o1", "ann", &["v1"], "PENDING", 5)
    ));
    assert_eq!(stored_version(&mut con, &keys, Kind::Order, "o1"), Some(5));
    let json: String = con.hget(keys.view(Kind::Order, "o1"), "json").unwrap();
    assert!(json.contains("PAID"));
    assert!(write(
        &mut con,
        &keys,
        Kind::Order,
        "o1",
        &order_json("o1", "ann", &["v1"], "SHIPPING", 6)
    ));
    assert_eq!(stored_version(&mut con, &keys, Kind::Order, "o1"), Some(6));
}

#[test]
fn indexes_follow_the_view() {
    let keys = Keys::new(unique("vt:") + ":");
    let mut con = redis_con();
    write(
        &mut con,
        &keys,
        Kind::Order,
        "o1",
        &order_json("o1", "ann", &["v1", "v2"], "PENDING", 1),
    );
    write(
        &mut con,
        &keys,
        Kind::Order,
        "o2",
        &order_json("o2", "bob", &["v2"], "PENDING", 1),
    );
    let ann: Vec<String> = con.zrange(keys.orders_of_user("ann"), 0, -1).unwrap();
    assert_eq!(ann, vec!["o1"]);
    let v2: Vec<String> = con.zrange(keys.orders_of_vendor("v2"), 0, -1).unwrap();
    assert_eq!(v2, vec!["o1", "o2"]);
    let all: usize = con.zcard(keys.orders_all()).unwrap();
    assert_eq!(all, 2);
    // A vendor disappears from the order: the order leaves that vendor's index.
    write(
        &mut con,
        &keys,
        Kind::Order,
        "o1",
        &order_json("o1", "ann", &["v1"], "PENDING", 2),
    );
    let v2: Vec<String> = con.zrange(keys.orders_of_vendor("v2"), 0, -1).unwrap();
    assert_eq!(v2, vec!["o2"]);

    write(
        &mut con,
        &keys,
        Kind::Product,
        "p1",
        &product_json("p1", "v1", true, false, 1),
    );
    let public: Vec<String> = con.zrange(keys.products_public(), 0, -1).unwrap();
    assert_eq!(public, vec!["p1"]);
    write(
        &mut con,
        &keys,
        Kind::Product,
        "p1",
        &product_json("p1", "v1", false, false, 2),
    );
    let public: Vec<String> = con.zrange(keys.products_public(), 0, -1).unwrap();
    assert!(
        public.is_empty(),
        "a private product leaves the public listing"
    );
    let of_vendor: Vec<String> = con.zrange(keys.products_of_vendor("v1"), 0, -1).unwrap();
    assert_eq!(of_vendor, vec!["p1"]);
    write(
        &mut con,
        &keys,
        Kind::Product,
        "p1",
        &product_json("p1", "v1", true, true, 3),
    );
    let of_vendor: Vec<String> = con.zrange(keys.products_of_vendor("v1"), 0, -1).unwrap();
    assert!(
        of_vendor.is_empty(),
        "a deleted product leaves its vendor's listing"
    );
    // A stale view does not put it back.
    write(
        &mut con,
        &keys,
        Kind::Product,
        "p1",
        &product_json("p1", "v1", true, false, 2),
    );
    let public: Vec<String> = con.zrange(keys.products_public(), 0, -1).unwrap();
    assert!(public.is_empty());
}

#[test]
fn a_change_notice_is_published_only_for_a_write() {
    let keys = Keys::new(unique("vt:") + ":");
    let mut sub = redis_con();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(keys.channel(Kind::Order, "o9")).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut con = redis_con();
    write(
        &mut con,
        &keys,
        Kind::Order,
        "o9",
        &order_json("o9", "ann", &[], "PENDING", 4),
    );
    let msg = pubsub.get_message().unwrap();
    assert_eq!(msg.get_channel_name(), keys.channel(Kind::Order, "o9"));
    assert_eq!(msg.get_payload::<String>().unwrap(), "4");
    // An ignored (older) view publishes nothing.
    write(
        &mut con,
        &keys,
        Kind::Order,
        "o9",
        &order_json("o9", "ann", &[], "PENDING", 2),
    );
    pubsub
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(
        pubsub.get_message().is_err(),
        "no notice for an ignored view"
    );
}

/// The sink as a runtime application: view records on Kafka end up in Redis, an older record
/// after a newer one is ignored, and the heartbeat says caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_view_topics_into_redis() {
    let brokers = std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let prefix = unique("vs") + ".";
    let _topics = pickple_topics::DeleteOnDrop::new(&brokers, &prefix);
    pickple_topics::apply(
        &brokers,
        &sink_topics(&prefix),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();
    let redis_cfg = RedisConfig::local(unique("vs:") + ":");
    let keys = redis_cfg.keys();
    let state = tempfile::tempdir().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sink = start_sink(state.path(), &prefix, &redis_cfg, &stop);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let topic = format!("{prefix}{}", topic::VIEW_ORDERS);
    for (status, version) in [("PENDING", 1), ("PAID", 3), ("AWAITING_PAYMENT", 2)] {
        let value = order_json("ord-1", "ann", &["v1"], status, version);
        producer
            .send(BaseRecord::to(&topic).key("ord-1").payload(&value))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut con = redis_con();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = stored_version(&mut con, &keys, Kind::Order, "ord-1");
        let caught_up = {
            let fields: Vec<(String, String)> = con.hgetall(keys.sink_status()).unwrap();
            ready::evaluate(
                &fields,
                pickple_runtime::now_millis(),
                ready::ReadyRule::default(),
            )
            .caught_up
        };
        if v == Some(3) && caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sink did not write version 3 and report caught up (version {v:?}, caught up {caught_up})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let json: String = con.hget(keys.view(Kind::Order, "ord-1"), "json").unwrap();
    assert!(json.contains("\"PAID\""), "the newest view wins: {json}");
    let mine: Vec<String> = con.zrange(keys.orders_of_user("ann"), 0, -1).unwrap();
    assert_eq!(mine, vec!["ord-1"]);
    stop.store(true, Ordering::Relaxed);
    sink.join().unwrap().unwrap();
}

/// The topics the sink reads and dead-letters to, under `prefix`.
fn sink_topics(prefix: &str) -> Vec<pickple_topics::TopicSpec> {
    let mut own: Vec<String> = topic::VIEWS.iter().map(|t| t.to_string()).collect();
    own.push(topic::dead_letter(app::VIEWS.name));
    pickple_topics::catalogue(prefix)
        .into_iter()
        .filter(|t| own.iter().any(|o| t.name == format!("{prefix}{o}")))
        .collect()
}

/// Start the sink as `pickple-processor --app views` would, on the given prefixes, until `stop`.
fn start_sink(
    state: &std::path::Path,
    prefix: &str,
    redis_cfg: &RedisConfig,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(), pickple_views::ViewsError>> {
    let mut config = RuntimeConfig::local(state);
    config.topic_prefix = prefix.to_string();
    config.punctuate_interval_ms = 200;
    let (stop, redis_cfg) = (stop.clone(), redis_cfg.clone());
    std::thread::spawn(move || pickple_views::run_until(config, redis_cfg, stop))
}

/// Write `ids` as order views in transactions of 100, as the order processor would.
fn write_views_transactionally(brokers: &str, topic: &str, ids: std::ops::Range<usize>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", unique("vl-writer"))
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let ids: Vec<usize> = ids.collect();
    for batch in ids.chunks(100) {
        producer.begin_transaction().unwrap();
        for i in batch {
            let id = format!("ord-{i}");
            let value = order_json(&id, "ann", &["v1"], "PENDING", 1);
            while producer
                .send(BaseRecord::to(topic).key(&id).payload(&value))
                .is_err()
            {
                producer.poll(Duration::from_millis(10));
            }
        }
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    }
}

/// The lag the sink reports comes from positions. A sink that restarts on committed offsets
/// and then processes thousands of records written in transactions (each ending in a commit
/// marker never handed to the consumer), committing them in transactions of its own (whose
/// offsets librdkafka's `consumer_lag` never sees), reports a lag of a few records once idle,
/// as the broker's own view (committed offsets against end offsets) says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_lag_comes_back_to_a_few_records_when_idle() {
    const BEFORE: usize = 300;
    const AFTER: usize = 3_000;
    let brokers = std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into());
    let prefix = unique("vl") + ".";
    let _topics = pickple_topics::DeleteOnDrop::new(&brokers, &prefix);
    pickple_topics::apply(
        &brokers,
        &sink_topics(&prefix),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();
    let redis_cfg = RedisConfig::local(unique("vl:") + ":");
    let keys = redis_cfg.keys();
    let state = tempfile::tempdir().unwrap();
    let topic = format!("{prefix}{}", topic::VIEW_ORDERS);
    let mut con = redis_con();
    let written =
        |con: &mut redis::Connection| -> usize { con.zcard(keys.orders_of_user("ann")).unwrap() };
    let wait_until = |what: &str, check: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // A first run commits offsets, so the second one starts from committed offsets.
    let stop = Arc::new(AtomicBool::new(false));
    let sink = start_sink(state.path(), &prefix, &redis_cfg, &stop);
    write_views_transactionally(&brokers, &topic, 0..BEFORE);
    wait_until("the first views are written", &mut || {
        written(&mut con) == BEFORE
    });
    stop.store(true, Ordering::Relaxed);
    sink.join().unwrap().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sink = start_sink(state.path(), &prefix, &redis_cfg, &stop);
    write_views_transactionally(&brokers, &topic, BEFORE..BEFORE + AFTER);
    let mut reported = Vec::new();
    wait_until(
        "every view is written and each partition's fresh lag is at most 6 (one marker per topic)",
        &mut || {
            let fields: Vec<(String, String)> = con.hgetall(keys.sink_status()).unwrap();
            let now = pickple_runtime::now_millis();
            reported = fields
                .iter()
                .filter_map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).ok())
                .filter(|s| s["at"].as_i64().is_some_and(|at| now - at < 1_000))
                .filter_map(|s| s["lag"].as_i64())
                .collect();
            eprintln!("fresh lags reported: {reported:?}");
            written(&mut con) == BEFORE + AFTER
                && reported.len() == 6
                && reported.iter().all(|&l| l <= 6)
        },
    );

    // The broker's view: the group's committed offsets against the end offsets.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let admin: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("{prefix}views"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(&topic, p);
    }
    let committed = admin
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    for e in committed.elements() {
        let (_, high) = admin
            .fetch_watermarks(&topic, e.partition(), Duration::from_secs(10))
            .unwrap();
        let committed = e.offset().to_raw().unwrap();
        assert!(
            high - committed <= 1,
            "partition {}: committed {committed} of {high}: all but the trailing marker is processed",
            e.partition()
        );
    }
    stop.store(true, Ordering::Relaxed);
    sink.join().unwrap().unwrap();
}
