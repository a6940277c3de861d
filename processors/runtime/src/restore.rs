//! Bring a task's store up to the end of its changelog partition before the task processes.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::metrics::Metrics;
use crate::store::{StateStores, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("restoring {0} did not reach the end of the changelog in time")]
    Timeout(String),
}

/// The restore consumer reads to end-of-partition on purpose: don't log that as an error.
pub struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::error::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "restore consumer");
        }
    }
}

impl ConsumerContext for RestoreContext {}

const BATCH: usize = 1000;
const TIMEOUT: Duration = Duration::from_secs(120);

/// A consumer for restoring; one serves every store-partition of an assignment.
pub type RestoreConsumer = BaseConsumer<RestoreContext>;

pub fn restore_consumer(brokers: &str, app: &str) -> Result<RestoreConsumer, RestoreError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{app}-restore"))
        .set("enable.auto.commit", "false")
        // Only committed changelog records describe state that really happened.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", crate::FETCH_QUEUE_BACKOFF_MS)
        .create_with_context(RestoreContext)?)
}

/// Low and high watermarks, retried while the broker is still electing a leader for a topic
/// created a moment ago (NotLeaderForPartition and friends are transient).
fn watermarks(
    consumer: &RestoreConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), RestoreError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(topic, partition, error = %e, "watermarks not available yet, retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Restore `store` of `partition` from `changelog` (a physical topic name), starting after the
/// local checkpoint. Returns the number of records applied.
pub fn restore(
    consumer: &RestoreConsumer,
    app: &str,
    stores: &StateStores,
    store: &str,
    changelog: &str,
    partition: i32,
) -> Result<u64, RestoreError> {
    let (low, high) = watermarks(consumer, changelog, partition)?;
    let mut checkpoint = stores.checkpoint(store, partition)?;
    if checkpoint.is_some_and(|c| c >= high || c < low - 1) {
        // The changelog was recreated or truncated past us: the local tree is not trustworthy.
        tracing::warn!(
            store,
            partition,
            ?checkpoint,
            low,
            high,
            "local store does not match its changelog, wiping it"
        );
        stores.wipe(store, partition)?;
        checkpoint = None;
    }
    let start = checkpoint.map_or(low, |c| (c + 1).max(low));
    let metrics = Metrics::global();
    let remaining = metrics.restore_remaining.with_label_values(&[app, store]);
    if start >= high {
        return Ok(0);
    }
    remaining.set(high - start);
    tracing::info!(
        store,
        partition,
        from = start,
        to = high,
        "restoring from changelog"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(changelog, partition, Offset::Offset(start))?;
    consumer.assign(&tpl)?;

    let began = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    let mut last = None;
    let mut restored = 0u64;
    loop {
        if began.elapsed() > TIMEOUT {
            return Err(RestoreError::Timeout(format!("{changelog}[{partition}]")));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(msg)) => {
                let key = msg.key().unwrap_or_default().to_vec();
                batch.push((key, msg.payload().map(|v| v.to_vec())));
                last = Some(msg.offset());
                restored += 1;
                if batch.len() >= BATCH {
                    stores.apply(store, partition, batch.drain(..), last)?;
                    remaining.set((high - msg.offset() - 1).max(0));
                }
            }
        }
    }
    stores.apply(store, partition, batch.drain(..), last)?;
    consumer.unassign()?;
    remaining.set(0);
    metrics
        .restore_records
        .with_label_values(&[app, store])
        .inc_by(restored);
    tracing::info!(
        store,
        partition,
        restored,
        ms = began.elapsed().as_millis() as u64,
        "restored"
    );
    Ok(restored)
}
