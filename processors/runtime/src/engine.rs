//! The transactional heart: tasks, the open transaction, commit and abort.
//!
//! One engine per instance, shared between the poll loop and the rebalance callbacks (which run
//! inside `poll`, when the loop does not hold the lock).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pickple_schemas::RecordHeaders;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tracing::Span;

use crate::applier::{Applier, Committed};
use crate::context::{Cause, Context, Output, StoreView};
use crate::metrics::Metrics;
use crate::processor::{AppSpec, ProcessError, Processor, Record};
use crate::restore::{restore_all, RestoreError, Restoring};
use crate::store::{Layer, StateStores, StoreError, Writes};
use crate::RuntimeConfig;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another instance with our transactional.id took over: this one is a zombie and stops.
    #[error("producer fenced: another instance with the same id is running")]
    Fenced,
    #[error("fatal kafka error: {0}")]
    Fatal(KafkaError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("restore: {0}")]
    Restore(#[from] RestoreError),
    #[error("{what} failed: {reason}")]
    Retriable { what: &'static str, reason: String },
}

impl EngineError {
    /// Broker trouble that may pass (a restart, a timeout, a leader election): the runner
    /// aborts, rewinds and tries again for up to the task timeout, instead of stopping.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Kafka(_) | EngineError::Retriable { .. } => true,
            EngineError::Restore(RestoreError::Kafka(_)) => true,
            EngineError::Fenced
            | EngineError::Fatal(_)
            | EngineError::Store(_)
            | EngineError::Restore(_) => false,
        }
    }
}

/// Per (physical topic, partition) values, nested so that updating an existing entry by `&str`
/// allocates nothing: these maps are touched once per record.
type PerPartition<T> = HashMap<String, HashMap<i32, T>>;

/// Records, per changelog partition, the position after the last delivered record: the
/// checkpoint the store may move to once the transaction commits.
///
/// Every record is sent tagged with the transaction's generation. Delivery reports arrive on
/// librdkafka's thread, those of an aborted transaction (purged records) possibly after the
/// abort has returned: counting them would blame the next transaction for a failure that was
/// not its own.
#[derive(Default, Clone)]
pub(crate) struct DeliveryTracker {
    generation: Arc<AtomicUsize>,
    positions: Arc<Mutex<PerPartition<i64>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl DeliveryTracker {
    fn generation(&self) -> usize {
        self.generation.load(Ordering::Relaxed)
    }

    /// Forget the transaction that ended; reports of its records are ignored from now on.
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.positions.lock().unwrap().clear();
        self.failed.lock().unwrap().take();
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, generation: usize) {
        if generation != self.generation() {
            return;
        }
        match result {
            Ok(msg) if msg.topic().ends_with("-changelog") => {
                let mut positions = self.positions.lock().unwrap();
                let partitions = match positions.get_mut(msg.topic()) {
                    Some(partitions) => partitions,
                    None => positions.entry(msg.topic().to_string()).or_default(),
                };
                let entry = partitions.entry(msg.partition()).or_insert(0);
                *entry = (*entry).max(msg.offset() + 1);
            }
            Ok(_) => {}
            Err((e, _)) => *self.failed.lock().unwrap() = Some(e.to_string()),
        }
    }
}

struct Task<P> {
    processor: P,
}

#[derive(Default)]
struct Txn {
    writes: Writes,
    /// Next offset to consume per input (physical topic, partition).
    offsets: PerPartition<i64>,
    records: usize,
    /// When the open transaction must be committed.
    commit_due: Option<Instant>,
}

pub(crate) struct Engine<P> {
    spec: AppSpec,
    config: RuntimeConfig,
    stores: StateStores,
    producer: ThreadedProducer<DeliveryTracker>,
    tracker: DeliveryTracker,
    factory: Box<dyn Fn(i32) -> P + Send>,
    tasks: BTreeMap<i32, Task<P>>,
    /// Processors of tasks this instance gave up, kept for when it gets the partition back. A
    /// processor's memory of effects outside Kafka (the notification app's mails sent but not
    /// yet committed) must outlive a consumer replaced after a broker restart, or the mails of
    /// the aborted transaction go out again.
    parked: BTreeMap<i32, P>,
    txn: Txn,
    in_txn: bool,
    /// A transient failure left the open transaction and the inputs' positions in doubt: abort
    /// and rewind before anything else is processed.
    recovering: bool,
    /// A processor asked for its step to be committed at once (see [`Context::commit_soon`]).
    commit_requested: bool,
    /// When the last transaction committed: the adaptive commit waits at least the minimum
    /// interval after it.
    last_commit: Instant,
    applier: Applier,
    next_punctuate: Instant,
    metrics: &'static Metrics,
    /// Per-topic counters of records in and out, resolved once: a label lookup per record
    /// showed in profiles.
    counted_in: HashMap<String, prometheus::IntCounter>,
    counted_out: HashMap<String, prometheus::IntCounter>,
    /// Physical names of logical output topics, built once rather than per record.
    physical: HashMap<String, Arc<str>>,
}

impl<P: Processor> Engine<P> {
    pub fn new(
        spec: AppSpec,
        config: RuntimeConfig,
        stores: StateStores,
        producer: ThreadedProducer<DeliveryTracker>,
        tracker: DeliveryTracker,
        factory: Box<dyn Fn(i32) -> P + Send>,
    ) -> Result<Self, StoreError> {
        let applier = Applier::start(stores.clone())?;
        Ok(Engine {
            spec,
            stores,
            producer,
            tracker,
            factory,
            tasks: BTreeMap::new(),
            parked: BTreeMap::new(),
            txn: Txn::default(),
            in_txn: false,
            recovering: false,
            commit_requested: false,
            last_commit: Instant::now(),
            applier,
            next_punctuate: Instant::now() + config.punctuate_interval(),
            metrics: Metrics::global(),
            counted_in: HashMap::new(),
            counted_out: HashMap::new(),
            physical: HashMap::new(),
            config,
        })
    }

    fn app(&self) -> &str {
        &self.spec.name
    }

    fn logical<'t>(&self, physical: &'t str) -> &'t str {
        physical
            .strip_prefix(self.config.topic_prefix.as_str())
            .unwrap_or(physical)
    }

    /// The physical name of a logical topic.
    fn physical(&mut self, logical: &str) -> Arc<str> {
        if let Some(topic) = self.physical.get(logical) {
            return topic.clone();
        }
        let topic: Arc<str> = self.config.topic(logical).into();
        self.physical.insert(logical.to_string(), topic.clone());
        topic
    }

    fn begin(&mut self) -> Result<(), EngineError> {
        if !self.in_txn {
            self.producer.begin_transaction().map_err(classify)?;
            self.in_txn = true;
            self.txn.commit_due = Some(Instant::now() + self.config.commit_interval());
        }
        Ok(())
    }

    /// Handle one polled input record inside the open transaction.
    pub fn process<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), EngineError> {
        let partition = msg.partition();
        if self.recovering || !self.tasks.contains_key(&partition) {
            // A record of a partition we no longer own (revoked between fetch and poll), or
            // fetched before a rewind that has yet to happen: it will be fetched again.
            return Ok(());
        }
        self.begin()?;
        let topic = self.logical(msg.topic());
        let record = Record {
            topic,
            partition,
            offset: msg.offset(),
            key: msg.key(),
            value: msg.payload(),
            headers: RecordHeaders::from_pairs(
                msg.headers()
                    .into_iter()
                    .flat_map(|h| h.iter())
                    .map(|h| (h.key, h.value)),
            ),
            timestamp: msg.timestamp().to_millis(),
        };
        let view = StoreView {
            stores: &self.stores,
            applying: self.applier.pending(),
            txn: &self.txn.writes,
            partition,
        };
        let cause = Cause::Record {
            topic,
            partition,
            offset: msg.offset(),
        };
        let traced = crate::trace::record_span(
            &record.headers,
            &self.spec.name,
            topic,
            partition,
            msg.offset(),
        );
        let _entered = traced.as_ref().map(|(span, _)| span.enter());
        let parent = traced
            .as_ref()
            .map_or(&record.headers, |(_, onward)| onward);
        let mut ctx = Context::new(view, None, parent, cause);
        let task = self.tasks.get_mut(&partition).expect("task exists");
        match task.processor.process(&mut ctx, &record) {
            Ok(()) => {
                let (writes, outputs) = (
                    std::mem::take(&mut ctx.writes),
                    std::mem::take(&mut ctx.outputs),
                );
                let commit_requested = ctx.commit_requested;
                drop(ctx);
                match crate::limits::oversized(&writes, &outputs, self.config.max_value_bytes) {
                    Some(reason) => self.dead_letter(msg, topic, &reason)?,
                    None => {
                        self.commit_requested |= commit_requested;
                        self.keep(partition, writes, outputs)?;
                    }
                }
            }
            Err(ProcessError::Invalid(reason)) => {
                drop(ctx);
                self.dead_letter(msg, topic, &reason)?;
            }
            Err(ProcessError::Retry(reason)) => {
                drop(ctx);
                tracing::warn!(%reason, topic, partition, offset = msg.offset(), "transient failure, retrying");
                self.abort(consumer)?;
                std::thread::sleep(Duration::from_secs(1)); // back-off before the retry
                return Ok(());
            }
        }
        self.count_in(topic);
        let next = msg.offset() + 1;
        match self.txn.offsets.get_mut(msg.topic()) {
            Some(partitions) => {
                partitions.insert(partition, next);
            }
            None => {
                self.txn
                    .offsets
                    .insert(msg.topic().to_string(), HashMap::from([(partition, next)]));
            }
        }
        self.txn.records += 1;
        if self.txn.records >= self.config.commit_records || self.commit_requested {
            self.commit(consumer)?;
        }
        Ok(())
    }

    fn keep(
        &mut self,
        partition: i32,
        writes: BTreeMap<String, Layer>,
        outputs: Vec<Output>,
    ) -> Result<(), EngineError> {
        for (store, largest) in crate::limits::largest_values(&writes) {
            let gauge = self
                .metrics
                .store_largest_value
                .with_label_values(&[&self.spec.name, store]);
            if largest as i64 > gauge.get() {
                gauge.set(largest as i64);
            }
        }
        for (store, kv) in writes {
            self.txn
                .writes
                .entry(store)
                .or_default()
                .entry(partition)
                .or_default()
                .extend(kv);
        }
        for out in outputs {
            let topic = self.physical(&out.topic);
            self.send(
                &topic,
                None,
                &out.key,
                out.value.as_deref(),
                Some(out.headers.to_kafka()),
            )?;
            count(
                &mut self.counted_out,
                &self.metrics.records_out,
                &self.spec.name,
                &out.topic,
            );
        }
        Ok(())
    }

    fn count_in(&mut self, topic: &str) {
        count(
            &mut self.counted_in,
            &self.metrics.records_in,
            &self.spec.name,
            topic,
        );
    }

    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), EngineError> {
        let mut record = BaseRecord::with_opaque_to(topic, self.tracker.generation()).key(key);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue drains as the broker acknowledges; wait for room.
                    self.producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => return Err(classify(e)),
            }
        }
    }

    /// Send the original record to `<app>-dlq`, with why and where it came from.
    fn dead_letter(
        &mut self,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        tracing::warn!(topic, partition = msg.partition(), offset = msg.offset(), %reason, "dead letter");
        let mut headers = OwnedHeaders::new();
        for h in msg.headers().into_iter().flat_map(|h| h.iter()) {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
        let (p, o) = (msg.partition().to_string(), msg.offset().to_string());
        for (k, v) in [
            ("dlq-error", reason),
            ("dlq-source-topic", topic),
            ("dlq-source-partition", p.as_str()),
            ("dlq-source-offset", o.as_str()),
            ("dlq-app", self.app()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let dlq = self.config.topic(&self.spec.dlq());
        self.send(
            &dlq,
            None,
            msg.key().unwrap_or_default(),
            msg.payload(),
            Some(headers),
        )?;
        self.metrics
            .dlq
            .with_label_values(&[self.app(), topic])
            .inc();
        Ok(())
    }

    /// Run every task's punctuator when the interval has passed.
    pub fn punctuate_if_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
    ) -> Result<(), EngineError> {
        if now < self.next_punctuate || self.tasks.is_empty() || self.recovering {
            return Ok(());
        }
        self.next_punctuate = now + self.config.punctuate_interval();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for partition in partitions {
            let view = StoreView {
                stores: &self.stores,
                applying: self.applier.pending(),
                txn: &self.txn.writes,
                partition,
            };
            let headers =
                RecordHeaders::new("Punctuate", format!("punctuate-{}-{partition}", self.app()));
            let cause = Cause::Named(format!("punctuate/{partition}"));
            let mut ctx = Context::new(view, None, &headers, cause);
            let task = self.tasks.get_mut(&partition).expect("task exists");
            match task.processor.punctuate(&mut ctx) {
                Ok(()) => {
                    let (writes, mut outputs) = (
                        std::mem::take(&mut ctx.writes),
                        std::mem::take(&mut ctx.outputs),
                    );
                    drop(ctx);
                    let traced =
                        crate::trace::punctuation_span(&self.spec.name, partition, &mut outputs);
                    let _entered = traced.as_ref().map(Span::enter);
                    if !outputs.is_empty() {
                        tracing::debug!(records = outputs.len(), partition, "punctuation sent");
                    }
                    if let Some(reason) =
                        crate::limits::oversized(&writes, &outputs, self.config.max_value_bytes)
                    {
                        // A punctuation has no record to dead-letter: drop its effects (it runs
                        // again next interval) and say why, loudly.
                        tracing::error!(partition, %reason, "punctuation refused");
                        self.metrics
                            .dlq
                            .with_label_values(&[self.app(), "punctuate"])
                            .inc();
                    } else if !writes.is_empty() || !outputs.is_empty() {
                        self.begin()?;
                        self.keep(partition, writes, outputs)?;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, partition, "punctuator failed; it runs again next interval")
                }
            }
        }
        self.commit(consumer)
    }

    /// Commit when the commit interval has passed, or, adaptively, as soon as the input is
    /// `drained` (the last poll found nothing) and the minimum interval has passed since the last
    /// commit: low latency when traffic is light, batching when it is not, and no empty
    /// transactions when idle (nothing is open then).
    pub fn commit_if_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
        drained: bool,
    ) -> Result<(), EngineError> {
        self.applier.poll()?;
        if self.recovering {
            return Ok(());
        }
        let interval_passed = self.txn.commit_due.is_some_and(|due| now >= due);
        let idle_and_min_passed =
            drained && self.in_txn && now >= self.last_commit + self.config.min_commit_interval();
        if interval_passed || idle_and_min_passed {
            self.commit(consumer)
        } else {
            Ok(())
        }
    }

    /// Time from `now` until the next commit or punctuation is due.
    pub fn next_deadline(&self, now: Instant) -> Duration {
        let due = match self.txn.commit_due {
            Some(commit) => commit
                .min(self.next_punctuate)
                .min(self.last_commit + self.config.min_commit_interval()),
            None => self.next_punctuate,
        };
        due.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    /// Commit the open transaction: changelog records, input offsets, then (only once Kafka has
    /// committed) the store writes and checkpoints on disk. On a failure that is not fatal the
    /// transaction is aborted and the inputs rewound, so nothing is lost or doubled.
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        self.commit_requested = false;
        if !self.in_txn || self.recovering {
            return Ok(());
        }
        let started = Instant::now();
        match self.try_commit(consumer) {
            Ok(()) => {
                self.last_commit = Instant::now();
                let app = self.spec.name.clone();
                self.metrics.commits.with_label_values(&[&app]).inc();
                self.metrics
                    .commit_latency
                    .with_label_values(&[&app])
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(EngineError::Fenced) => Err(EngineError::Fenced),
            Err(EngineError::Fatal(e)) => Err(EngineError::Fatal(e)),
            // Kafka has committed but sled is behind: stop, and restore from the changelog.
            Err(EngineError::Store(e)) => Err(EngineError::Store(e)),
            Err(e) => {
                tracing::warn!(error = %e, "commit failed, aborting the transaction");
                self.abort(consumer)
            }
        }
    }

    fn try_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        // The changelog topic of every store written: named once, used for the records here and
        // for the checkpoints after the commit.
        let changelogs: HashMap<String, String> = self
            .txn
            .writes
            .keys()
            .map(|store| {
                (
                    store.clone(),
                    self.config.topic(&self.spec.changelog(store)),
                )
            })
            .collect();
        // Changelog: one record per key written in this transaction (the last value wins).
        for (store, partitions) in &self.txn.writes {
            let topic = &changelogs[store];
            for (partition, kv) in partitions {
                for (k, v) in kv {
                    self.send(topic, Some(*partition), k, v.as_deref(), None)?;
                }
            }
        }
        if !self.txn.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (topic, partitions) in &self.txn.offsets {
                for (partition, offset) in partitions {
                    tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
                }
            }
            // No group metadata means the consumer has no group generation right now (it is
            // rejoining after a coordinator restart): abort and try again.
            let group = consumer
                .group_metadata()
                .ok_or_else(|| EngineError::Retriable {
                    what: "reading the consumer group's metadata",
                    reason: "the consumer is not in a group generation".into(),
                })?;
            retrying(|| {
                self.producer
                    .send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)
            })?;
        }
        self.drain()?;
        retrying(|| self.producer.commit_transaction(TXN_TIMEOUT))?;
        if let Some(reason) = self.tracker.failed.lock().unwrap().take() {
            // commit_transaction fails when a record of the transaction failed, and reports of
            // aborted transactions are ignored, so this is only a guard.
            tracing::error!(%reason, "a record failed after commit");
        }
        self.in_txn = false;
        let txn = std::mem::take(&mut self.txn);
        let checkpoints = std::mem::take(&mut *self.tracker.positions.lock().unwrap());
        self.tracker.next_generation();
        self.applier.submit(Committed {
            writes: Arc::new(txn.writes),
            changelogs,
            checkpoints,
        })?;
        Ok(())
    }

    /// Wait until the committed writes in flight are in sled.
    pub fn settle(&mut self) -> Result<(), EngineError> {
        Ok(self.applier.settle()?)
    }

    /// Wait until every produced record is acknowledged, sending what lingers at once.
    ///
    /// rdkafka's `flush` (which `commit_transaction` calls first) waits in 100 ms `poll` slices
    /// that run to the end, as our producer's own thread takes the acknowledgements: committing
    /// with records in flight would cost 100 ms per transaction. librdkafka's `rd_kafka_flush`
    /// itself, with delivery reports as events (as rdkafka sets them up), only waits for the
    /// queue to empty and makes every broker thread send without `linger.ms`, so call it
    /// directly.
    fn drain(&self) -> Result<(), EngineError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(EngineError::Kafka(KafkaError::Flush(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            // SAFETY: the pointer is the live producer's handle, which `self` owns for the
            // whole call; rd_kafka_flush is thread-safe.
            unsafe {
                rdkafka::bindings::rd_kafka_flush(
                    self.producer.client().native_ptr(),
                    remaining.as_millis().min(1_000) as i32,
                );
            }
        }
        Ok(())
    }

    /// Abort the open transaction and rewind every input to its last committed offset. When
    /// that fails too (the broker is away), the engine stays [`recovering`](Self::recover):
    /// it processes nothing until a later `recover` succeeds.
    pub fn abort<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        self.recovering = true;
        self.recover(consumer)
    }

    /// Whether a failed abort or rewind still has to be done again.
    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Finish an abort that failed: abort the transaction if it is still open, then rewind.
    pub fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        if !self.recovering {
            return Ok(());
        }
        self.abort_open_transaction()?;
        self.txn = Txn::default();
        self.commit_requested = false;
        self.tracker.next_generation();
        self.rewind(consumer)?;
        self.recovering = false;
        Ok(())
    }

    /// Abort the transaction if one is open; it stays open (for a later try) if that fails.
    fn abort_open_transaction(&mut self) -> Result<(), EngineError> {
        if self.in_txn {
            retrying(|| self.producer.abort_transaction(TXN_TIMEOUT))?;
            self.metrics.aborts.with_label_values(&[self.app()]).inc();
            self.in_txn = false;
        }
        Ok(())
    }

    /// Seek every assigned input back to the group's committed offset.
    fn rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        let assignment = consumer.assignment()?;
        if assignment.count() == 0 {
            return Ok(());
        }
        let committed = consumer.committed_offsets(assignment, Duration::from_secs(30))?;
        let mut rewind = TopicPartitionList::new();
        for elem in committed.elements() {
            let offset = match elem.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            rewind.add_partition_offset(elem.topic(), elem.partition(), offset)?;
        }
        consumer.seek_partitions(rewind, Duration::from_secs(30))?;
        Ok(())
    }

    /// Partitions were assigned: restore their stores (all store-partitions at once), then
    /// create their tasks. Broker trouble during the restore is waited out up to the task
    /// timeout: a partition assigned without its task would have its records skipped.
    pub fn assigned(&mut self, partitions: &[i32]) -> Result<(), EngineError> {
        // Restore starts from each tree's checkpoint: let the last commit reach it first.
        self.settle()?;
        let new: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        let wanted: Vec<Restoring> = new
            .iter()
            .flat_map(|&partition| self.spec.stores.iter().map(move |store| (store, partition)))
            .map(|(store, partition)| Restoring {
                store: store.clone(),
                changelog: self.config.topic(&self.spec.changelog(store)),
                partition,
            })
            .collect();
        let deadline = Instant::now() + self.config.task_timeout();
        restore_all(
            &self.config.brokers,
            &self.spec.name,
            &self.stores,
            &wanted,
            deadline,
        )?;
        for p in new {
            let processor = match self.parked.remove(&p) {
                Some(processor) => processor,
                None => (self.factory)(p),
            };
            self.tasks.insert(p, Task { processor });
        }
        self.metrics
            .assigned
            .with_label_values(&[self.app()])
            .set(self.tasks.len() as i64);
        crate::health::Health::global().set_tasks(self.tasks.len());
        tracing::info!(tasks = ?self.tasks.keys().collect::<Vec<_>>(), "assigned");
        Ok(())
    }

    /// The consumer is gone (replaced after a fatal error) without revoking: drop every task,
    /// and abort the open transaction (now, or in recovery once the broker answers) so that
    /// nothing of it commits.
    pub fn forget_tasks(&mut self) {
        self.recovering = true;
        if let Err(e) = self.abort_open_transaction() {
            tracing::warn!(error = %e, "abort failed; recovery tries again");
        }
        for (p, task) in std::mem::take(&mut self.tasks) {
            self.parked.insert(p, task.processor);
        }
        self.metrics
            .assigned
            .with_label_values(&[self.app()])
            .set(0);
        crate::health::Health::global().set_tasks(0);
    }

    /// Partitions are being revoked: commit (or abort when the assignment was lost), then drop
    /// their tasks.
    pub fn revoked<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
        lost: bool,
    ) -> Result<(), EngineError> {
        let ended = if lost {
            // Another member may own these partitions already: nothing of this transaction
            // may commit.
            self.abort(consumer)
        } else {
            self.commit(consumer)
        };
        match ended {
            Ok(()) => {}
            // The broker is away: the transaction stays to be aborted (and the new assignment
            // rewound) by the poll loop's recovery, which processes nothing until then. Failing
            // here would end the process for an outage it can ride through.
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "could not end the transaction on revocation; recovering");
                self.recovering = true;
            }
            Err(e) => return Err(e),
        }
        for p in partitions {
            if let Some(task) = self.tasks.remove(p) {
                self.parked.insert(*p, task.processor);
            }
        }
        self.settle()?;
        self.stores.flush()?;
        self.metrics
            .assigned
            .with_label_values(&[self.app()])
            .set(self.tasks.len() as i64);
        crate::health::Health::global().set_tasks(self.tasks.len());
        tracing::info!(tasks = ?self.tasks.keys().collect::<Vec<_>>(), "revoked {partitions:?}");
        Ok(())
    }
}

/// Run a transactional call again while librdkafka says it may be retried as it is (a timeout
/// while the broker is away), up to the transaction timeout; then sort its error.
fn retrying(mut call: impl FnMut() -> Result<(), KafkaError>) -> Result<(), EngineError> {
    let deadline = Instant::now() + TXN_TIMEOUT;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(t)) if t.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(error = %t, "retrying a transactional call");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(classify(e)),
        }
    }
}

/// Sort a producer error: fencing and fatal errors stop the instance, the rest abort and retry.
fn classify(e: KafkaError) -> EngineError {
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) {
        return EngineError::Fenced;
    }
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => EngineError::Fatal(e),
        _ => EngineError::Kafka(e),
    }
}

/// Count a record in or out of `topic` on a counter resolved once per topic.
fn count(
    resolved: &mut HashMap<String, prometheus::IntCounter>,
    family: &prometheus::IntCounterVec,
    app: &str,
    topic: &str,
) {
    match resolved.get(topic) {
        Some(counter) => counter.inc(),
        None => {
            let counter = family.with_label_values(&[app, topic]);
            counter.inc();
            resolved.insert(topic.to_string(), counter);
        }
    }
}
