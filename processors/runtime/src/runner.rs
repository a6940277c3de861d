//! `run`: wire consumer, transactional producer, stores and engine, then poll until told to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use crate::engine::{DeliveryTracker, Engine, EngineError};
use crate::processor::{AppSpec, Processor};
use crate::rebalance::RebalanceContext;
use crate::store::{StateStores, StoreError};
use crate::RuntimeConfig;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Run an application until SIGTERM/SIGINT (clean: the transaction is committed and the group
/// left) or a fatal error (fenced by a newer instance with the same id, broker fatal error).
pub fn run<P, F>(config: RuntimeConfig, spec: AppSpec, factory: F) -> Result<(), RuntimeError>
where
    P: Processor,
    F: Fn(i32) -> P + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    run_until(config, spec, factory, stop)
}

/// [`run`] with an external stop flag (tests, embedding).
pub fn run_until<P, F>(
    config: RuntimeConfig,
    spec: AppSpec,
    factory: F,
    stop: Arc<AtomicBool>,
) -> Result<(), RuntimeError>
where
    P: Processor,
    F: Fn(i32) -> P + Send + 'static,
{
    if let Some(addr) = &config.metrics_addr {
        let addr = addr
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        crate::serve_metrics(addr)?;
    }
    let dir = config.state_dir.join(format!(
        "{}{}-{}",
        config.topic_prefix, spec.name, config.instance_id
    ));
    let stores = StateStores::open(&dir)?;

    let tracker = DeliveryTracker::default();
    let producer: ThreadedProducer<DeliveryTracker> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set(
            "transactional.id",
            format!(
                "{}{}-{}",
                config.topic_prefix, spec.name, config.instance_id
            ),
        )
        .set("transaction.timeout.ms", "30000")
        // Same partitioner as Java clients and Redpanda's tools, so anyone can co-partition.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // The first produce of a transaction waits for the previous commit's markers (the
        // broker answers CONCURRENT_TRANSACTIONS until then): retry soon, not after 100 ms.
        .set("retry.backoff.ms", "10")
        .set("compression.type", "lz4")
        .create_with_context(tracker.clone())?;
    // Fences any zombie with our id and aborts what it left open.
    producer.init_transactions(Duration::from_secs(60))?;

    let engine = Arc::new(Mutex::new(Engine::new(
        spec.clone(),
        config.clone(),
        stores,
        producer,
        tracker,
        Box::new(factory),
    )?));
    let failure = Arc::new(Mutex::new(None));
    let context = RebalanceContext {
        engine: engine.clone(),
        app: spec.name.clone(),
        prefix: config.topic_prefix.clone(),
        failure: failure.clone(),
    };
    let consumer: BaseConsumer<RebalanceContext<P>> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("{}{}", config.topic_prefix, spec.name))
        .set("client.id", format!("{}-{}", spec.name, config.instance_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", crate::FETCH_QUEUE_BACKOFF_MS)
        // Range gives partition p of every co-partitioned input to the same member (one task per
        // partition number). Cooperative-sticky would not: it places topic-partitions alone.
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", "5000")
        // Static membership: a restarted instance takes its partitions back at once instead of
        // waiting for its dead predecessor's session to time out.
        .set(
            "group.instance.id",
            format!(
                "{}{}-{}",
                config.topic_prefix, spec.name, config.instance_id
            ),
        )
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create_with_context(context)?;
    let inputs: Vec<String> = spec.inputs.iter().map(|t| config.topic(t)).collect();
    consumer.subscribe(&inputs.iter().map(String::as_str).collect::<Vec<_>>())?;
    tracing::info!(app = %spec.name, instance = %config.instance_id, ?inputs, "running");

    let mut timeout = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let polled = consumer.poll(timeout);
        if let Some(e) = failure.lock().unwrap().take() {
            return Err(e.into());
        }
        let mut engine = engine.lock().unwrap();
        match polled {
            Some(Ok(msg)) => engine.process(&consumer, &msg)?,
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        // One clock read per record serves both deadlines and the next poll's timeout.
        let now = Instant::now();
        engine.commit_if_due(&consumer, now)?;
        engine.punctuate_if_due(&consumer, now)?;
        timeout = engine.next_deadline(now).min(Duration::from_millis(100));
    }
    tracing::info!(app = %spec.name, "stopping: committing and leaving the group");
    {
        let mut engine = engine.lock().unwrap();
        engine.commit(&consumer)?;
        engine.settle()?;
    }
    consumer.unsubscribe();
    // Serve the revocation callback so the group rebalances now, not after a session timeout.
    let _ = consumer.poll(Duration::from_millis(100));
    if let Some(e) = failure.lock().unwrap().take() {
        return Err(e.into());
    }
    Ok(())
}
