//! Bring the stores of newly assigned tasks up to the end of their changelog partitions, off
//! the poll loop: a [`RestoreJob`] restores every store-partition of an assignment at once, on
//! threads of its own (one per changelog topic), and the poll loop collects its events between
//! polls (like Kafka Streams' state updater), so a long restore neither blocks the rebalance
//! callback nor stops the other tasks.
//!
//! A store-partition is restored when the restore consumer's position has reached the end
//! offset the broker reported when the restore began. Under transactions the last offset of a
//! changelog partition is usually a commit marker, which is never handed to the application:
//! librdkafka's end-of-partition event, raised when the fetch position (which does move past
//! markers) reaches the end offset, is that moment. A fetch that comes back empty proves
//! nothing and is never taken as the end. The checkpoint then written is that end offset, so a
//! store restored once, or closed cleanly, restarts without reading anything.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
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
    #[error("no restore thread: {0}")]
    Thread(std::io::Error),
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

/// What a restore job reports to the poll loop.
#[derive(Debug)]
pub(crate) enum RestoreEvent {
    /// A store-partition reached the end offset captured when the job began.
    Restored {
        store: String,
        partition: i32,
        records: u64,
    },
    /// A store's restore gave up (broker trouble past the deadline, a store error).
    Failed(RestoreError),
}

/// The partitions whose restore was cancelled (revoked while restoring).
#[derive(Default)]
struct Cancelled {
    partitions: HashSet<i32>,
    all: bool,
}

impl Cancelled {
    fn covers(&self, partition: i32) -> bool {
        self.all || self.partitions.contains(&partition)
    }
}

/// The restore of one assignment's store-partitions, under way on its own threads.
pub(crate) struct RestoreJob {
    id: u64,
    events: Receiver<RestoreEvent>,
    /// A restore thread holds the read lock while it writes a batch, so taking the write lock
    /// to cancel returns only once nothing of the cancelled partitions is being written.
    cancelled: Arc<RwLock<Cancelled>>,
    threads: Vec<JoinHandle<()>>,
}

impl RestoreJob {
    /// Start restoring every store-partition in `wanted` from its local checkpoint: one
    /// consumer, on a thread of its own, per changelog topic, so an end-of-partition event,
    /// which names only the partition, is never ambiguous. Each thread gives up at `deadline`
    /// (the task timeout); transient broker errors before then are waited out.
    pub fn start(
        id: u64,
        brokers: &str,
        app: &str,
        stores: &StateStores,
        wanted: &[Restoring],
        deadline: Instant,
    ) -> Result<RestoreJob, RestoreError> {
        let mut by_store: Vec<(String, String, Vec<i32>)> = Vec::new();
        for r in wanted {
            match by_store.iter_mut().find(|(s, _, _)| *s == r.store) {
                Some((_, _, partitions)) => partitions.push(r.partition),
                None => by_store.push((r.store.clone(), r.changelog.clone(), vec![r.partition])),
            }
        }
        let (events, inbox) = mpsc::channel();
        let cancelled: Arc<RwLock<Cancelled>> = Default::default();
        let mut job = RestoreJob {
            id,
            events: inbox,
            cancelled: cancelled.clone(),
            threads: Vec::new(),
        };
        for (store, changelog, partitions) in by_store {
            let restorer = StoreRestorer {
                brokers: brokers.to_string(),
                app: app.to_string(),
                stores: stores.clone(),
                store,
                changelog,
                deadline,
                cancelled: cancelled.clone(),
                events: events.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("restore-{}", restorer.store))
                .spawn(move || {
                    if let Err(e) = restorer.run(&partitions) {
                        let _ = restorer.events.send(RestoreEvent::Failed(e));
                    }
                })
                .map_err(RestoreError::Thread)?;
            job.threads.push(thread);
        }
        Ok(job)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether every thread of the job has ended: its events are all in.
    pub fn is_over(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// The events reported since the last call, without waiting.
    pub fn events(&self) -> impl Iterator<Item = RestoreEvent> + '_ {
        self.events.try_iter()
    }

    /// Stop restoring `partitions`. Returns once no thread writes to their trees any more; what
    /// was applied stays, with its checkpoint, so a later restore goes on from there.
    pub fn cancel(&self, partitions: &[i32]) {
        self.cancelled
            .write()
            .unwrap()
            .partitions
            .extend(partitions.iter().copied());
    }
}

impl Drop for RestoreJob {
    /// Cancel what is left and wait for the threads, so that nothing holds the stores after the
    /// instance has stopped.
    fn drop(&mut self) {
        self.cancelled.write().unwrap().all = true;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
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

/// The restore of one store's partitions, on its own thread.
struct StoreRestorer {
    brokers: String,
    app: String,
    stores: StateStores,
    store: String,
    changelog: String,
    deadline: Instant,
    cancelled: Arc<RwLock<Cancelled>>,
    events: Sender<RestoreEvent>,
}

impl StoreRestorer {
    fn is_cancelled(&self, partition: i32) -> bool {
        self.cancelled.read().unwrap().covers(partition)
    }

    fn restored(&self, partition: i32, records: u64) {
        // The job is gone only when the instance stops: nobody is waiting for this any more.
        let _ = self.events.send(RestoreEvent::Restored {
            store: self.store.clone(),
            partition,
            records,
        });
    }

    /// Low and high watermarks, retried until the deadline while the broker is electing a
    /// leader for a topic created a moment ago, or is restarting; `None` once cancelled.
    fn watermarks(
        &self,
        consumer: &RestoreConsumer,
        partition: i32,
    ) -> Result<Option<(i64, i64)>, RestoreError> {
        loop {
            if self.is_cancelled(partition) {
                return Ok(None);
            }
            match consumer.fetch_watermarks(&self.changelog, partition, Duration::from_secs(5)) {
                Ok(w) => return Ok(Some(w)),
                Err(e) if Instant::now() < self.deadline => {
                    tracing::debug!(changelog = %self.changelog, partition, error = %e, "watermarks not available yet, retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Apply a batch and move the checkpoint, unless the partition was cancelled meanwhile:
    /// then false, and nothing is written.
    fn apply(&self, prog: &mut Progress, checkpoint: i64) -> Result<bool, RestoreError> {
        let cancelled = self.cancelled.read().unwrap();
        if cancelled.covers(prog.partition) {
            return Ok(false);
        }
        let n = prog.batch.len() as u64;
        self.stores.apply(
            &self.store,
            prog.partition,
            prog.batch.drain(..),
            Some(checkpoint),
        )?;
        drop(cancelled);
        prog.applied += n;
        Metrics::global()
            .restore_records
            .with_label_values(&[&self.app, &self.store])
            .inc_by(n);
        Ok(true)
    }

    fn run(&self, partitions: &[i32]) -> Result<(), RestoreError> {
        let (store, changelog) = (self.store.as_str(), self.changelog.as_str());
        let consumer = restore_consumer(&self.brokers, &self.app)?;
        let remaining = Metrics::global()
            .restore_remaining
            .with_label_values(&[&self.app, store]);
        let mut tpl = TopicPartitionList::new();
        let mut progress: HashMap<i32, Progress> = HashMap::new();
        for &partition in partitions {
            let Some((low, high)) = self.watermarks(&consumer, partition)? else {
                continue;
            };
            let mut checkpoint = self.stores.checkpoint(store, partition)?;
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
                self.stores.wipe(store, partition)?;
                checkpoint = None;
            }
            let start = checkpoint.unwrap_or(low).max(low);
            if start >= high {
                self.restored(partition, 0);
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
            return Ok(());
        }
        consumer.assign(&tpl)?;
        let mut left = progress.len();
        while left > 0 {
            for prog in progress.values_mut().filter(|p| !p.done) {
                if self.is_cancelled(prog.partition) {
                    prog.done = true;
                    remaining.sub(prog.counted);
                    left -= 1;
                }
            }
            if left == 0 {
                break;
            }
            if Instant::now() > self.deadline {
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
                        self.finish(prog, &remaining)?;
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
                        self.finish(prog, &remaining)?;
                        left -= 1;
                    } else if prog.batch.len() >= BATCH {
                        let n = prog.batch.len() as i64;
                        // A cancelled partition is dropped at the top of the loop.
                        if self.apply(prog, position)? {
                            prog.counted -= n;
                            remaining.sub(n);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Apply what is left of a store-partition's batch, checkpoint it at its end offset (the
    /// position past everything, markers included), and report it restored.
    fn finish(
        &self,
        prog: &mut Progress,
        remaining: &prometheus::IntGauge,
    ) -> Result<(), RestoreError> {
        let restored = self.apply(prog, prog.end)?;
        prog.done = true;
        remaining.sub(prog.counted);
        prog.counted = 0;
        if restored {
            self.restored(prog.partition, prog.applied);
        }
        Ok(())
    }
}

/// Broker trouble the restore waits out (a restart, a leader election), as opposed to a
/// misconfiguration.
fn transient(e: &KafkaError) -> bool {
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
