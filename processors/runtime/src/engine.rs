//! The transaction cycle (Kafka Streams' `StreamThread` loop body): process a polled record in
//! its task, punctuate, commit the one transaction all tasks share or abort it, and settle a
//! transaction left in doubt before anything else is processed. The transactional calls are the
//! producer's ([`crate::producer`]), what a transaction sends is the collector's
//! ([`crate::collector`]), which tasks exist and whether they take records is the task
//! manager's ([`crate::task_manager`]), and a step of one task is the task's ([`crate::task`]).
//!
//! One engine per instance, shared between the poll loop and the rebalance callbacks (which run
//! inside `poll`, when the loop does not hold the lock).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pickple_schemas::RecordHeaders;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::Span;

use crate::applier::{Applier, Committed};
use crate::collector::{PerPartition, RecordCollector};
use crate::context::{Output, StoreView};
use crate::metrics::Metrics;
use crate::processor::{AppSpec, Processor, Record};
use crate::producer::{ProducerError, StreamsProducer};
use crate::restore::RestoreError;
use crate::store::{Layer, StateStores, StoreError, Writes};
use crate::task::{Outcome, Step, StepSettings};
use crate::task_manager::TaskManager;
use crate::RuntimeConfig;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// `commit_transaction` did not confirm the commit in time; it goes on in the background
    /// and is called again before anything else is processed.
    #[error("the commit is not confirmed yet and goes on in the background: {0}")]
    CommitInDoubt(KafkaError),
    /// No consumer group metadata to send the input offsets with: librdkafka has none for a
    /// consumer without a group, or one being closed (replaced after a fatal error).
    #[error("the input consumer has no consumer group metadata (it has no group.id, or it is being closed): the input offsets cannot join the transaction")]
    NoGroupMetadata,
    #[error("a record of the transaction was not delivered: {0}")]
    Undelivered(String),
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("restore: {0}")]
    Restore(#[from] RestoreError),
}

impl EngineError {
    /// Broker trouble that may pass (a restart, a timeout, a leader election): the runner
    /// aborts, rewinds and tries again for up to the task timeout, instead of stopping. A
    /// failed restore has waited out broker trouble up to the task timeout already.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Producer(e) => e.is_transient(),
            EngineError::CommitInDoubt(_)
            | EngineError::NoGroupMetadata
            | EngineError::Undelivered(_)
            | EngineError::Kafka(_) => true,
            EngineError::Store(_) | EngineError::Restore(_) => false,
        }
    }
}

/// The input consumer's group metadata, which the transaction's offsets are sent with (the
/// broker fences a zombie's offsets by its generation).
pub(crate) fn group_metadata<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
) -> Result<ConsumerGroupMetadata, EngineError> {
    consumer
        .group_metadata()
        .ok_or(EngineError::NoGroupMetadata)
}

/// Where an input partition goes on from: the group's committed offset, unless this instance's
/// state has gone past it. The state's own position (kept in sled with each committed
/// transaction, [`StateStores::input_position`]) guards against a coordinator that answers with
/// no offset, or an older one, after it lost the group's latest commits: a single broker
/// SIGKILLed twice under load rebuilt group `stock` as Empty, and the partition was processed
/// from its beginning again (every SetStock re-applied over the reservations since). Only
/// with neither is it the beginning. An answer that is an error is not "nothing committed": a
/// coordinator still loading its offsets answers per partition, and the error is transient.
fn start_position(
    committed: Offset,
    answer: KafkaResult<()>,
    local: Option<i64>,
) -> KafkaResult<(Offset, Guarded)> {
    answer?;
    Ok(match (committed, local) {
        (Offset::Offset(c), Some(l)) if l > c => (Offset::Offset(l), Guarded::Behind(c)),
        (Offset::Offset(c), _) => (Offset::Offset(c), Guarded::No),
        (Offset::Invalid, Some(l)) => (Offset::Offset(l), Guarded::Missing),
        (Offset::Invalid, None) => (Offset::Beginning, Guarded::No),
        // librdkafka answers an offset or INVALID; anything else is no answer to act on.
        _ => return Err(KafkaError::OffsetFetch(RDKafkaErrorCode::InvalidArgument)),
    })
}

/// Whether [`start_position`] overruled the coordinator, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guarded {
    No,
    /// The coordinator had no offset for a partition this instance has processed.
    Missing,
    /// The coordinator's offset was behind this instance's state.
    Behind(i64),
}

/// What must happen before anything else is processed, after a transaction's end went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// `commit_transaction` returned a retriable error: the commit goes on in the background,
    /// and librdkafka refuses an abort now. Call it again (since: when the commit began).
    CommitAgain { since: Instant },
    /// Abort the open transaction, if it is still open.
    Abort,
    /// The transaction has ended: rewind the inputs to the committed offsets, as the records
    /// polled meanwhile were dropped.
    Rewind,
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
    producer: StreamsProducer,
    collector: RecordCollector,
    tasks: TaskManager<P>,
    applier: Applier,
    txn: Txn,
    recovery: Option<Recovery>,
    /// A processor asked for its step to be committed at once (see `Context::commit_soon`).
    commit_requested: bool,
    /// When the last transaction committed: the adaptive commit waits at least the minimum
    /// interval after it.
    last_commit: Instant,
    next_punctuate: Instant,
    metrics: &'static Metrics,
    /// Per-topic counters of records in, resolved once: a label lookup per record showed in
    /// profiles.
    counted_in: HashMap<String, prometheus::IntCounter>,
}

impl<P: Processor> Engine<P> {
    pub fn new(
        spec: AppSpec,
        config: RuntimeConfig,
        stores: StateStores,
        producer: StreamsProducer,
        collector: RecordCollector,
        factory: Box<dyn Fn(i32) -> P + Send>,
    ) -> Result<Self, StoreError> {
        let applier = Applier::start(stores.clone())?;
        let metrics = Metrics::global();
        // At 0 from the start: a first abort is then an increase, as the alert expects.
        metrics.aborts.with_label_values(&[&spec.name]);
        metrics.offsets_guarded.with_label_values(&[&spec.name]);
        let tasks = TaskManager::new(spec.clone(), config.clone(), stores.clone(), factory);
        Ok(Engine {
            spec,
            stores,
            producer,
            collector,
            tasks,
            applier,
            txn: Txn::default(),
            recovery: None,
            commit_requested: false,
            last_commit: Instant::now(),
            next_punctuate: Instant::now() + config.punctuate_interval(),
            metrics,
            counted_in: HashMap::new(),
            config,
        })
    }

    fn logical<'t>(&self, physical: &'t str) -> &'t str {
        physical
            .strip_prefix(self.config.topic_prefix.as_str())
            .unwrap_or(physical)
    }

    fn begin(&mut self) -> Result<(), EngineError> {
        if self.producer.begin()? {
            self.txn.commit_due = Some(Instant::now() + self.config.commit_interval());
        }
        Ok(())
    }

    /// Between polls: start the tasks whose restore has finished, resume the tasks whose
    /// back-off is due, and let go of committed writes that have reached sled.
    pub fn maintain<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
    ) -> Result<(), EngineError> {
        self.applier.poll()?;
        self.tasks.poll_restores(consumer)?;
        self.tasks.resume_due(consumer, now)?;
        Ok(())
    }

    /// Handle one polled input record inside the open transaction.
    pub fn process<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), EngineError> {
        let partition = msg.partition();
        if self.recovery.is_some() {
            // Fetched before a rewind that has yet to happen: it will be fetched again.
            return Ok(());
        }
        match self.tasks.takes_records(partition) {
            // A record of a partition we no longer own (revoked between fetch and poll).
            None => return Ok(()),
            Some(false) => {
                self.tasks
                    .hold_back(consumer, msg.topic(), partition, msg.offset())?;
                return Ok(());
            }
            Some(true) => {}
        }
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
        let settings = StepSettings {
            app: &self.spec.name,
            now: None,
            max_value_bytes: self.config.max_value_bytes,
        };
        let task = self
            .tasks
            .get_mut(partition)
            .expect("the task takes records");
        let Outcome { step, span } = task.process(view, &record, settings);
        if !matches!(step, Step::Retry(_)) {
            task.backoff_mut().succeeded();
        }
        let _entered = span.as_ref().map(Span::enter);
        match step {
            Step::Keep {
                writes,
                outputs,
                commit_requested,
            } => {
                self.begin()?;
                self.commit_requested |= commit_requested;
                self.keep(partition, writes, &outputs)?;
            }
            Step::Refuse(reason) => {
                self.begin()?;
                self.collector
                    .send_dead_letter(&self.producer, msg, topic, &reason)?;
            }
            Step::Retry(reason) => {
                // Nothing of the record was kept: only its task waits, and the record is
                // fetched again when the wait is over.
                let now = Instant::now();
                let (until, failures) =
                    self.tasks
                        .back_off(consumer, msg.topic(), partition, msg.offset(), now)?;
                self.metrics
                    .retries
                    .with_label_values(&[&self.spec.name, topic])
                    .inc();
                tracing::warn!(
                    %reason,
                    topic,
                    partition,
                    offset = msg.offset(),
                    failures,
                    retry_in_ms = until.saturating_duration_since(now).as_millis() as u64,
                    "transient failure: the task backs off, the others go on"
                );
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

    /// Add a step's writes to the transaction's and send its outputs.
    fn keep(
        &mut self,
        partition: i32,
        writes: BTreeMap<String, Layer>,
        outputs: &[Output],
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
        crate::store::buffer(&mut self.txn.writes, partition, writes);
        for out in outputs {
            self.collector.send_output(&self.producer, out)?;
        }
        Ok(())
    }

    fn count_in(&mut self, topic: &str) {
        match self.counted_in.get(topic) {
            Some(counter) => counter.inc(),
            None => {
                let counter = self
                    .metrics
                    .records_in
                    .with_label_values(&[&self.spec.name, topic]);
                counter.inc();
                self.counted_in.insert(topic.to_string(), counter);
            }
        }
    }

    /// Run the punctuator of every task whose state is in place when the interval has passed.
    pub fn punctuate_if_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
    ) -> Result<(), EngineError> {
        let partitions = self.tasks.running();
        if now < self.next_punctuate || partitions.is_empty() || self.recovery.is_some() {
            return Ok(());
        }
        self.next_punctuate = now + self.config.punctuate_interval();
        for partition in partitions {
            let view = StoreView {
                stores: &self.stores,
                applying: self.applier.pending(),
                txn: &self.txn.writes,
                partition,
            };
            let headers = RecordHeaders::new(
                "Punctuate",
                format!("punctuate-{}-{partition}", self.spec.name),
            );
            let settings = StepSettings {
                app: &self.spec.name,
                now: None,
                max_value_bytes: self.config.max_value_bytes,
            };
            let task = self.tasks.get_mut(partition).expect("a running task");
            let Outcome { step, span } = match task.punctuate(view, &headers, settings) {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(error = %e, partition, "punctuator failed; it runs again next interval");
                    continue;
                }
            };
            let _entered = span.as_ref().map(Span::enter);
            match step {
                Step::Keep {
                    writes, outputs, ..
                } => {
                    if !outputs.is_empty() {
                        tracing::debug!(records = outputs.len(), partition, "punctuation sent");
                    }
                    if !writes.is_empty() || !outputs.is_empty() {
                        self.begin()?;
                        self.keep(partition, writes, &outputs)?;
                    }
                }
                Step::Refuse(reason) | Step::Retry(reason) => {
                    // A punctuation has no record to dead-letter: drop its effects (it runs
                    // again next interval) and say why, loudly.
                    tracing::error!(partition, %reason, "punctuation refused");
                    self.metrics
                        .dlq
                        .with_label_values(&[&self.spec.name, "punctuate"])
                        .inc();
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
        if self.recovery.is_some() {
            return Ok(());
        }
        let interval_passed = self.txn.commit_due.is_some_and(|due| now >= due);
        let idle_and_min_passed = drained
            && self.producer.in_transaction()
            && now >= self.last_commit + self.config.min_commit_interval();
        if interval_passed || idle_and_min_passed {
            self.commit(consumer)
        } else {
            Ok(())
        }
    }

    /// Time from `now` until the next commit, punctuation, back-off or restore check is due.
    pub fn next_deadline(&self, now: Instant) -> Duration {
        let mut due = self.next_punctuate;
        if let Some(commit) = self.txn.commit_due {
            due = due
                .min(commit)
                .min(self.last_commit + self.config.min_commit_interval());
        }
        if let Some(tasks) = self.tasks.next_deadline(now) {
            due = due.min(tasks);
        }
        due.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    /// Commit the open transaction: changelog records, input offsets, then (only once Kafka has
    /// committed) the store writes and checkpoints on disk. A commit librdkafka has not
    /// confirmed yet is called again before anything else is processed; on any other failure
    /// that is not fatal the transaction is aborted and the inputs rewound, so nothing is lost
    /// or doubled.
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        self.commit_requested = false;
        if !self.producer.in_transaction() || self.recovery.is_some() {
            return Ok(());
        }
        let since = Instant::now();
        match self.try_commit(consumer, since) {
            Ok(()) => Ok(()),
            Err(EngineError::CommitInDoubt(e)) => {
                tracing::warn!(error = %e, "commit not confirmed; calling it again before processing anything else");
                self.recovery = Some(Recovery::CommitAgain { since });
                Err(EngineError::CommitInDoubt(e))
            }
            // Fenced or fatal, or Kafka has committed but sled is behind: stop (and restore
            // from the changelog on restart).
            Err(e) if !e.is_transient() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "commit failed, aborting the transaction");
                self.abort(consumer)
            }
        }
    }

    fn try_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        since: Instant,
    ) -> Result<(), EngineError> {
        // Changelog: one record per key written in this transaction (the last value wins).
        for (store, partitions) in &self.txn.writes {
            let changelog = self.collector.changelog(store);
            for (partition, kv) in partitions {
                for (k, v) in kv {
                    self.collector.send_changelog(
                        &self.producer,
                        &changelog,
                        *partition,
                        k,
                        v.as_deref(),
                    )?;
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
            let group = group_metadata(consumer)?;
            self.producer.send_offsets(&tpl, &group)?;
        }
        self.producer.flush()?;
        if let Some(reason) = self.collector.undelivered() {
            return Err(EngineError::Undelivered(reason));
        }
        match self.producer.commit() {
            Ok(()) => {}
            Err(ProducerError::Retriable(e)) => return Err(EngineError::CommitInDoubt(e)),
            Err(e) => return Err(e.into()),
        }
        self.committed(since)
    }

    /// Kafka has committed: hand the writes, with the positions the changelog records reached,
    /// to the applier.
    fn committed(&mut self, since: Instant) -> Result<(), EngineError> {
        let txn = std::mem::take(&mut self.txn);
        let mut positions = self.collector.committed();
        let mut checkpoints = HashMap::new();
        for store in txn.writes.keys() {
            let changelog = self.collector.changelog(store);
            if let Some(partitions) = positions.remove(&*changelog) {
                checkpoints.insert(store.clone(), partitions);
            }
        }
        let inputs = txn
            .offsets
            .iter()
            .flat_map(|(topic, ps)| ps.iter().map(|(p, o)| (topic.clone(), *p, *o)))
            .collect();
        self.applier.submit(Committed {
            writes: Arc::new(txn.writes),
            checkpoints,
            inputs,
        })?;
        self.last_commit = Instant::now();
        self.metrics
            .commits
            .with_label_values(&[&self.spec.name])
            .inc();
        self.metrics
            .commit_latency
            .with_label_values(&[&self.spec.name])
            .observe(since.elapsed().as_secs_f64());
        Ok(())
    }

    /// Wait until the committed writes in flight are in sled.
    pub fn settle(&mut self) -> Result<(), EngineError> {
        Ok(self.applier.settle()?)
    }

    /// Abort the open transaction and rewind every input to its last committed offset. When
    /// that fails too (the broker is away), the engine stays [recovering](Self::recover): it
    /// processes nothing until a later `recover` succeeds. A commit in doubt cannot be aborted:
    /// it is called again instead.
    pub fn abort<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        if !matches!(self.recovery, Some(Recovery::CommitAgain { .. })) {
            self.recovery = Some(Recovery::Abort);
        }
        self.recover(consumer)
    }

    /// Whether a transaction's end or a rewind still has to be done again.
    pub fn is_recovering(&self) -> bool {
        self.recovery.is_some()
    }

    /// Finish what a failed commit or abort left: call the commit again, or abort, then
    /// rewind. Each stage is kept until it succeeds, so a later call goes on from there.
    pub fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        loop {
            match self.recovery {
                None => return Ok(()),
                Some(Recovery::CommitAgain { since }) => match self.producer.commit() {
                    Ok(()) => {
                        self.committed(since)?;
                        self.recovery = Some(Recovery::Rewind);
                    }
                    Err(ProducerError::Retriable(e)) => return Err(EngineError::CommitInDoubt(e)),
                    Err(e @ ProducerError::Abortable(_)) => {
                        tracing::warn!(error = %e, "the commit failed after all; aborting the transaction");
                        self.recovery = Some(Recovery::Abort);
                    }
                    Err(e) => return Err(e.into()),
                },
                Some(Recovery::Abort) => self.abort_open_transaction()?,
                Some(Recovery::Rewind) => {
                    self.rewind(consumer)?;
                    self.recovery = None;
                }
            }
        }
    }

    /// Abort the transaction if one is open (it stays open, for a later try, if that fails),
    /// and forget it: its writes, offsets, and whatever its delivery reports said.
    fn abort_open_transaction(&mut self) -> Result<(), EngineError> {
        if self.producer.abort()? {
            self.metrics
                .aborts
                .with_label_values(&[&self.spec.name])
                .inc();
        }
        self.txn = Txn::default();
        self.commit_requested = false;
        self.collector.aborted();
        self.recovery = Some(Recovery::Rewind);
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
        let rewind = self.start_positions(consumer, &assignment)?;
        consumer.seek_partitions(rewind, Duration::from_secs(30))?;
        Ok(())
    }

    /// Where each of `partitions` goes on from ([`start_position`]): asked of the group
    /// coordinator, checked against the positions this instance's state reflects. Called with
    /// a new assignment, before librdkafka starts fetching, and on every rewind.
    pub fn start_positions<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &TopicPartitionList,
    ) -> Result<TopicPartitionList, EngineError> {
        // The positions in sled are the last applied transaction's: let the last commit land.
        self.settle()?;
        let committed = consumer.committed_offsets(partitions.clone(), Duration::from_secs(30))?;
        let mut positions = TopicPartitionList::new();
        for elem in committed.elements() {
            let (topic, partition) = (elem.topic(), elem.partition());
            let local = self.stores.input_position(topic, partition)?;
            let (offset, guarded) = start_position(elem.offset(), elem.error(), local)?;
            if guarded != Guarded::No {
                tracing::warn!(
                    topic,
                    partition,
                    coordinator = ?guarded,
                    state = ?local,
                    "the group coordinator's offset is behind this instance's state; going on from the state's position"
                );
                self.metrics
                    .offsets_guarded
                    .with_label_values(&[&self.spec.name])
                    .inc();
            }
            positions.add_partition_offset(topic, partition, offset)?;
        }
        Ok(positions)
    }

    /// Partitions were assigned: their tasks start RESTORING, off the poll loop.
    pub fn assigned<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
    ) -> Result<(), EngineError> {
        // Restore starts from each tree's checkpoint: let the last commit reach it first.
        self.settle()?;
        self.tasks.assign(consumer, partitions)
    }

    /// The consumer is gone (replaced after a fatal error) without revoking: drop every task,
    /// and abort the open transaction (now, or in recovery once the broker answers) so that
    /// nothing of it commits.
    pub fn forget_tasks(&mut self) {
        if !matches!(self.recovery, Some(Recovery::CommitAgain { .. })) {
            self.recovery = Some(Recovery::Abort);
            if let Err(e) = self.abort_open_transaction() {
                tracing::warn!(error = %e, "abort failed; recovery tries again");
            }
        }
        self.tasks.forget_all();
    }

    /// Partitions are being revoked: commit (or abort when the assignment was lost), then close
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
            // The broker is away: the transaction stays to be ended (and the new assignment
            // rewound) by the poll loop's recovery, which processes nothing until then. Failing
            // here would end the process for an outage it can ride through.
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "could not end the transaction on revocation; recovering");
                if self.recovery.is_none() {
                    self.recovery = Some(Recovery::Abort);
                }
            }
            Err(e) => return Err(e),
        }
        self.tasks.revoke(consumer, partitions)?;
        self.settle()?;
        self.tasks.release_standbys(partitions);
        self.stores.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::consumer::DefaultConsumerContext;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::ClientConfig;

    use super::*;
    use crate::collector::DeliveryReports;
    use crate::producer::Timeouts;
    use crate::{Context, ProcessError};

    #[test]
    fn inputs_go_on_from_the_committed_offset_unless_the_state_has_gone_past_it() {
        let at = |o, local| start_position(Offset::Offset(o), Ok(()), local).unwrap();
        assert_eq!(at(42, None), (Offset::Offset(42), Guarded::No));
        assert_eq!(at(42, Some(42)), (Offset::Offset(42), Guarded::No));
        // Another instance went on from where this one's state stopped.
        assert_eq!(at(42, Some(30)), (Offset::Offset(42), Guarded::No));
        // The coordinator lost the latest commits: the state knows better.
        assert_eq!(at(42, Some(50)), (Offset::Offset(50), Guarded::Behind(42)));
        assert_eq!(
            start_position(Offset::Invalid, Ok(()), Some(50)).unwrap(),
            (Offset::Offset(50), Guarded::Missing)
        );
        // Nothing committed and nothing processed here: from the beginning.
        assert_eq!(
            start_position(Offset::Invalid, Ok(()), None).unwrap(),
            (Offset::Beginning, Guarded::No)
        );
        // A coordinator loading its offsets after a restart answers the partition with an
        // error and no offset: that is no reason to process the partition from its start.
        let loading = Err(KafkaError::OffsetFetch(
            RDKafkaErrorCode::CoordinatorLoadInProgress,
        ));
        assert!(start_position(Offset::Invalid, loading, None).is_err());
        assert!(start_position(Offset::End, Ok(()), None).is_err());
    }

    /// Writes `"v"` under the record's key in store `s`.
    struct Put;

    impl Processor for Put {
        fn process(
            &mut self,
            ctx: &mut Context<'_>,
            record: &Record<'_>,
        ) -> Result<(), ProcessError> {
            ctx.put("s", record.key.unwrap_or_default(), &"v");
            Ok(())
        }
    }

    /// Against librdkafka's mock cluster.
    #[test]
    fn a_commit_not_confirmed_in_time_is_called_again_not_aborted_and_its_writes_reach_the_store() {
        let cluster = MockCluster::new(1).unwrap();
        for topic in [
            "in".to_string(),
            pickple_schemas::topic::changelog("doubt", "s"),
        ] {
            cluster.create_topic(&topic, 1, 1).unwrap();
        }
        let client = |extra: &[(&str, &str)]| {
            let mut c = ClientConfig::new();
            c.set("bootstrap.servers", cluster.bootstrap_servers());
            for (k, v) in extra {
                c.set(*k, *v);
            }
            c
        };
        let plain: BaseProducer = client(&[]).create().unwrap();
        plain
            .send(BaseRecord::to("in").key("k").payload("{}"))
            .unwrap();
        plain.flush(Duration::from_secs(10)).unwrap();

        let mut config = RuntimeConfig::local("unused");
        config.brokers = cluster.bootstrap_servers();
        let stores = StateStores::temporary().unwrap();
        let reports = DeliveryReports::default();
        let timeouts = Timeouts {
            call: Duration::from_millis(500),
            retry_for: Duration::ZERO,
        };
        let producer = StreamsProducer::with_client(
            &client(&[("transactional.id", "doubt-0")]),
            reports.clone(),
            timeouts,
            Duration::from_secs(10),
        )
        .unwrap();
        let collector = RecordCollector::new("doubt", &config, reports);
        let spec = AppSpec::new("doubt", &["in"], &["s"]);
        let mut engine = Engine::new(
            spec,
            config,
            stores.clone(),
            producer,
            collector,
            Box::new(|_| Put),
        )
        .unwrap();
        let consumer: BaseConsumer<DefaultConsumerContext> = client(&[
            ("group.id", "doubt"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .create()
        .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("in", 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        engine.assigned(&consumer, &[0]).unwrap();
        // Turn the loop as the runner does until the record is processed: its task takes
        // records once its (empty) store is restored.
        let deadline = Instant::now() + Duration::from_secs(30);
        while engine.txn.records == 0 {
            assert!(Instant::now() < deadline, "the record was never processed");
            let polled = consumer.poll(Duration::from_millis(50));
            engine.maintain(&consumer, Instant::now()).unwrap();
            if let Some(Ok(msg)) = &polled {
                engine.process(&consumer, msg).unwrap();
            }
        }

        // The coordinator keeps answering the commit with a retriable error for longer than
        // a call waits; librdkafka retries it in the background meanwhile.
        cluster.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS; 6],
        );
        match engine.commit(&consumer) {
            Err(EngineError::CommitInDoubt(_)) => {}
            other => panic!("an unconfirmed commit is in doubt, got {other:?}"),
        }
        assert!(matches!(
            engine.recovery,
            Some(Recovery::CommitAgain { .. })
        ));
        assert!(
            matches!(engine.abort(&consumer), Err(EngineError::CommitInDoubt(_))),
            "an abort asked for meanwhile calls the commit again instead"
        );
        assert!(matches!(
            engine.recovery,
            Some(Recovery::CommitAgain { .. })
        ));

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match engine.recover(&consumer) {
                Ok(()) => break,
                Err(EngineError::CommitInDoubt(_)) if Instant::now() < deadline => {}
                Err(e) => panic!("the commit called again completes, got {e}"),
            }
        }
        assert!(!engine.is_recovering());
        engine.settle().unwrap();
        assert_eq!(
            stores.get("s", 0, b"k").unwrap(),
            Some(b"\"v\"".to_vec()),
            "the committed transaction's writes are applied"
        );
        assert_eq!(
            Metrics::global().aborts.with_label_values(&["doubt"]).get(),
            0,
            "nothing was aborted"
        );
    }

    #[test]
    fn a_consumer_without_group_metadata_is_its_own_error_and_ridden_through() {
        // No group.id: librdkafka has no group metadata for this consumer.
        let consumer: BaseConsumer<DefaultConsumerContext> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .unwrap();
        let Err(e) = group_metadata(&consumer) else {
            panic!("a consumer without a group has no group metadata");
        };
        assert!(matches!(e, EngineError::NoGroupMetadata), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("no consumer group metadata") && message.contains("offsets"),
            "{message}"
        );
        assert!(
            e.is_transient(),
            "aborted and retried, up to the task timeout"
        );
    }
}
