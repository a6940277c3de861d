//! Bring the stores of newly assigned tasks up to the end of their changelog partitions before
//! the tasks process, all store-partitions of an assignment at once.
//!
//! A store-partition is restored when the restore consumer's position has reached the end
//! offset the broker reported when the restore began. Under transactions the last offset of a
//! changelog partition is usually a commit marker, which is never handed to the application:
//! librdkafka's end-of-partition event, raised when the fetch position (which does move past
//! markers) reaches the end offset, is that moment. A fetch that comes back empty proves
//! nothing and is never taken as the end. The checkpoint then written is that end offset, so a
//! store restored once, or closed cleanly, restarts without reading anything.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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

/// The restore consumer reads to end-of-partition on purpose, and rides through broker
/// restarts: log those as what they are.
pub struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "restore consumer");
        }
    }
}

impl ConsumerContext for RestoreContext {}

const BATCH: usize = 1000;

/// A consumer for restoring one store's changelog partitions.
pub type RestoreConsumer = BaseConsumer<RestoreContext>;

fn restore_consumer(brokers: &str, app: &str) -> Result<RestoreConsumer, RestoreError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{app}-restore"))
        .set("enable.auto.commit", "false")
        // Only committed changelog records describe state that really happened.
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // The end-of-partition event comes with the first fetch made at the end offset, which the
        // broker would otherwise hold for fetch.wait.max.ms (500 ms) waiting for data that a
        // fenced changelog never gets.
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", crate::FETCH_QUEUE_BACKOFF_MS)
        .create_with_context(RestoreContext)?)
}

/// One store-partition to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restoring {
    pub store: String,
    /// Physical changelog topic.
    pub changelog: String,
    pub partition: i32,
}

/// Low and high watermarks, retried until `deadline` while the broker is electing a leader for
/// a topic created a moment ago, or is restarting.
fn watermarks(
    consumer: &RestoreConsumer,
    topic: &str,
    partition: i32,
    deadline: Instant,
) -> Result<(i64, i64), RestoreError> {
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(topic, partition, error = %e, "watermarks not available yet, retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Per store-partition progress of a restore.
struct Progress {
    partition: i32,
    /// The end offset when the restore began: the position that means "restored".
    end: i64,
    batch: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    applied: u64,
    /// Offsets still counted in the remaining-records gauge (markers included).
    counted: i64,
    done: bool,
}

/// Restore every store-partition in `wanted` from its changelog, starting at its local
/// checkpoint, all at once: one consumer (on a thread of its own) per changelog topic, so an
/// end-of-partition event, which names only the partition, is never ambiguous. Gives up at
/// `deadline` (the task timeout); transient broker errors before then are waited out. Returns
/// the records applied.
pub fn restore_all(
    brokers: &str,
    app: &str,
    stores: &StateStores,
    wanted: &[Restoring],
    deadline: Instant,
) -> Result<u64, RestoreError> {
    let began = Instant::now();
    let mut by_store: Vec<(&str, &str, Vec<i32>)> = Vec::new();
    for r in wanted {
        match by_store.iter_mut().find(|(s, _, _)| *s == r.store) {
            Some((_, _, partitions)) => partitions.push(r.partition),
            None => by_store.push((&r.store, &r.changelog, vec![r.partition])),
        }
    }
    let results: Vec<Result<u64, RestoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = by_store
            .iter()
            .map(|(store, changelog, partitions)| {
                std::thread::Builder::new()
                    .name(format!("restore-{store}"))
                    .spawn_scoped(scope, move || {
                        restore_store(brokers, app, stores, store, changelog, partitions, deadline)
                    })
                    .expect("spawn a restore thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a restore thread panicked"))
            .collect()
    });
    let mut restored = 0;
    for r in results {
        restored += r?;
    }
    if restored > 0 {
        tracing::info!(
            restored,
            store_partitions = wanted.len(),
            ms = began.elapsed().as_millis() as u64,
            "restored"
        );
    }
    Ok(restored)
}

/// Restore the given partitions of one store from its changelog topic.
fn restore_store(
    brokers: &str,
    app: &str,
    stores: &StateStores,
    store: &str,
    changelog: &str,
    partitions: &[i32],
    deadline: Instant,
) -> Result<u64, RestoreError> {
    let consumer = restore_consumer(brokers, app)?;
    let remaining = Metrics::global()
        .restore_remaining
        .with_label_values(&[app, store]);
    let mut tpl = TopicPartitionList::new();
    let mut progress: HashMap<i32, Progress> = HashMap::new();
    for &partition in partitions {
        let (low, high) = watermarks(&consumer, changelog, partition, deadline)?;
        let mut checkpoint = stores.checkpoint(store, partition)?;
        if checkpoint.is_some_and(|c| c > high || c < low) {
            // The changelog was recreated or truncated past us: the local tree is not
            // trustworthy.
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
        let start = checkpoint.unwrap_or(low).max(low);
        if start >= high {
            continue;
        }
        tracing::info!(
            store,
            partition,
            from = start,
            to = high,
            "restoring from changelog"
        );
        tpl.add_partition_offset(changelog, partition, Offset::Offset(start))?;
        remaining.add(high - start);
        progress.insert(
            partition,
            Progress {
                partition,
                end: high,
                batch: Vec::new(),
                applied: 0,
                counted: high - start,
                done: false,
            },
        );
    }
    if progress.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let mut left = progress.len();
    while left > 0 {
        if Instant::now() > deadline {
            let pending: Vec<String> = progress
                .values()
                .filter(|p| !p.done)
                .map(|p| format!("{changelog}[{}]", p.partition))
                .collect();
            return Err(RestoreError::Timeout(pending.join(", ")));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            // The fetch position (which, unlike the application's, moves past commit markers)
            // has reached the partition's end offset.
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(prog) = progress.get_mut(&partition).filter(|p| !p.done) {
                    finish(stores, store, prog, &remaining)?;
                    left -= 1;
                }
            }
            Some(Err(e)) if transient(&e) => {
                tracing::warn!(store, error = %e, "restore: broker trouble, waiting");
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(msg)) => {
                let Some(prog) = progress.get_mut(&msg.partition()).filter(|p| !p.done) else {
                    continue;
                };
                prog.batch.push((
                    msg.key().unwrap_or_default().to_vec(),
                    msg.payload().map(<[u8]>::to_vec),
                ));
                let position = msg.offset() + 1;
                if position >= prog.end {
                    finish(stores, store, prog, &remaining)?;
                    left -= 1;
                } else if prog.batch.len() >= BATCH {
                    let n = prog.batch.len() as u64;
                    stores.apply(store, prog.partition, prog.batch.drain(..), Some(position))?;
                    prog.applied += n;
                    prog.counted -= n as i64;
                    remaining.sub(n as i64);
                }
            }
        }
    }
    let applied = progress.values().map(|p| p.applied).sum();
    Metrics::global()
        .restore_records
        .with_label_values(&[app, store])
        .inc_by(applied);
    Ok(applied)
}

/// Apply what is left of a store-partition's batch and checkpoint it at its end offset: the
/// position past everything, markers included.
fn finish(
    stores: &StateStores,
    store: &str,
    prog: &mut Progress,
    remaining: &prometheus::IntGauge,
) -> Result<(), RestoreError> {
    let n = prog.batch.len() as u64;
    stores.apply(store, prog.partition, prog.batch.drain(..), Some(prog.end))?;
    prog.applied += n;
    prog.done = true;
    remaining.sub(prog.counted);
    prog.counted = 0;
    Ok(())
}

/// Broker trouble the restore waits out (a restart, a leader election), as opposed to a
/// misconfiguration.
pub(crate) fn transient(e: &KafkaError) -> bool {
    !matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::Fatal
        )
    )
}
