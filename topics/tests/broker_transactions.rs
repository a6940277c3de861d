//! The local broker supports what the runtime stands on: keyed records in Kafka transactions,
//! with aborted records invisible to a `read_committed` consumer.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

#[tokio::test]
async fn committed_records_are_visible_and_aborted_ones_are_not() {
    let topic = format!("txn-check-{}", uuid::Uuid::new_v4().simple());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", format!("txn-check-{topic}"))
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    let send = |key: &str, value: &str| {
        producer
            .send(BaseRecord::to(&topic).key(key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap()
    };
    producer.init_transactions(timeout).unwrap();
    producer.begin_transaction().unwrap();
    send("order-1", "committed");
    producer.commit_transaction(timeout).unwrap();
    producer.begin_transaction().unwrap();
    send("order-1", "aborted");
    producer.abort_transaction(timeout).unwrap();
    producer.begin_transaction().unwrap();
    send("order-2", "after");
    producer.commit_transaction(timeout).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("txn-check-{topic}"))
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    // "after" was committed after the abort, so once it is read everything before it was too.
    while !seen.iter().any(|(_, v)| v == "after") {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; saw {seen:?}"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.unwrap();
            let key = String::from_utf8(msg.key().unwrap().to_vec()).unwrap();
            let value = String::from_utf8(msg.payload().unwrap().to_vec()).unwrap();
            seen.push((key, value));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("order-1".to_string(), "committed".to_string()),
            ("order-2".into(), "after".into())
        ]
    );
    admin
        .delete_topics(&[&topic], &AdminOptions::new())
        .await
        .unwrap();
}
