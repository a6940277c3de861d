//! The task manager (Kafka Streams' `TaskManager`): which tasks this instance owns and in what
//! state. It creates the tasks of an assignment as RESTORING with their inputs paused, starts
//! their restore off the poll loop and makes them RUNNING (inputs resumed) when their stores
//! have reached their changelogs' ends; it pauses a task that backs off from a failing record
//! and resumes it when the back-off is due; it closes revoked tasks, cancelling their restore,
//! and parks their processors for when the partition comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::processor::{AppSpec, Processor};
use crate::restore::{RestoreError, RestoreEvent, RestoreJob, Restoring};
use crate::standby::Standbys;
use crate::store::StateStores;
use crate::task::{Lifecycle, Task};
use crate::RuntimeConfig;

/// How long a seek may wait for librdkafka to take it.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct TaskManager<P> {
    spec: AppSpec,
    config: RuntimeConfig,
    stores: StateStores,
    /// The physical input topics: partition `p` of each is task `p`'s.
    inputs: Vec<String>,
    factory: Box<dyn Fn(i32) -> P + Send>,
    tasks: BTreeMap<i32, Task<P>>,
    /// Processors of tasks this instance gave up, kept for when it gets the partition back. A
    /// processor's memory of effects outside Kafka (the notification app's mails sent but not
    /// yet committed) must outlive a consumer replaced after a broker restart, or the mails of
    /// the aborted transaction go out again.
    parked: BTreeMap<i32, P>,
    restores: Vec<RestoreJob>,
    next_job: u64,
    /// Warm copies of other instances' tasks (`PICKPLE_STANDBY_REPLICAS`), if kept.
    standbys: Option<Standbys>,
    metrics: &'static Metrics,
}

impl<P: Processor> TaskManager<P> {
    pub fn new(
        spec: AppSpec,
        config: RuntimeConfig,
        stores: StateStores,
        factory: Box<dyn Fn(i32) -> P + Send>,
    ) -> Self {
        // A standby is a cache: an instance that cannot keep one still runs, with full
        // restores on takeover.
        let standbys = Standbys::start(&config, &spec, &stores).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot keep standby replicas; takeovers restore in full");
            None
        });
        TaskManager {
            inputs: spec.inputs.iter().map(|t| config.topic(t)).collect(),
            standbys,
            spec,
            config,
            stores,
            factory,
            tasks: BTreeMap::new(),
            parked: BTreeMap::new(),
            restores: Vec::new(),
            next_job: 0,
            metrics: Metrics::global(),
        }
    }

    pub fn get_mut(&mut self, partition: i32) -> Option<&mut Task<P>> {
        self.tasks.get_mut(&partition)
    }

    /// Whether records of `partition` may be processed now.
    pub fn takes_records(&self, partition: i32) -> Option<bool> {
        self.tasks.get(&partition).map(Task::takes_records)
    }

    /// The tasks whose state is in place (running, back-off or not), which may punctuate.
    pub fn running(&self) -> Vec<i32> {
        self.tasks
            .values()
            .filter(|t| t.is_running())
            .map(Task::partition)
            .collect()
    }

    /// When the task manager next has something to do: a back-off falling due, or a restore
    /// to look at (soon, while one is under way).
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let backoff = self
            .tasks
            .values()
            .filter_map(|t| t.backoff().until())
            .min();
        let restoring = (!self.restores.is_empty()).then(|| now + Duration::from_millis(10));
        backoff.into_iter().chain(restoring).min()
    }

    /// The task's input partitions: partition `p` of every input topic.
    fn inputs_of(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for topic in &self.inputs {
            for &p in partitions {
                tpl.add_partition(topic, p);
            }
        }
        tpl
    }

    /// Pause (or resume) the inputs of the tasks of `partitions`.
    fn set_paused<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
        paused: bool,
    ) -> KafkaResult<()> {
        if partitions.is_empty() {
            return Ok(());
        }
        let inputs = self.inputs_of(partitions);
        if paused {
            consumer.pause(&inputs)
        } else {
            consumer.resume(&inputs)
        }
    }

    fn pause<C: ConsumerContext>(&self, c: &BaseConsumer<C>, ps: &[i32]) -> KafkaResult<()> {
        self.set_paused(c, ps, true)
    }

    fn resume<C: ConsumerContext>(&self, c: &BaseConsumer<C>, ps: &[i32]) -> KafkaResult<()> {
        self.set_paused(c, ps, false)
    }

    /// Partitions were assigned: create the new tasks as RESTORING, pause their inputs, and
    /// start restoring all their store-partitions at once. The caller has let the last commit
    /// reach sled first: the restore starts from each tree's checkpoint.
    pub fn assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
    ) -> Result<(), crate::engine::EngineError> {
        let new: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let wanted: Vec<Restoring> = new
            .iter()
            .flat_map(|&partition| self.spec.stores.iter().map(move |store| (store, partition)))
            .map(|(store, partition)| Restoring {
                store: store.clone(),
                changelog: self.config.topic(&self.spec.changelog(store)),
                partition,
            })
            .collect();
        if let Some(standbys) = &self.standbys {
            // From here on the standby thread leaves these trees to the restore.
            standbys.activate(&new);
        }
        let job = self.next_job;
        self.next_job += 1;
        let now = Instant::now();
        for &p in &new {
            let processor = match self.parked.remove(&p) {
                Some(processor) => processor,
                None => (self.factory)(p),
            };
            let lifecycle = if self.spec.stores.is_empty() {
                Lifecycle::Running
            } else {
                Lifecycle::Restoring {
                    job,
                    stores_left: self.spec.stores.len(),
                    records: 0,
                    since: now,
                }
            };
            self.tasks.insert(p, Task::new(p, processor, lifecycle));
        }
        if wanted.is_empty() {
            // A pause left by an earlier owner of these partitions in this consumer would
            // outlive the assignment: librdkafka keeps it.
            self.resume(consumer, &new)?;
        } else {
            self.pause(consumer, &new)?;
            let deadline = now + self.config.task_timeout();
            self.restores.push(RestoreJob::start(
                job,
                &self.config.brokers,
                &self.spec.name,
                &self.stores,
                &wanted,
                deadline,
            )?);
        }
        self.count();
        tracing::info!(tasks = ?self.tasks.keys().collect::<Vec<_>>(), restoring = ?new, "assigned");
        Ok(())
    }

    /// Take in what the restore jobs reported: a task whose every store-partition is restored
    /// becomes RUNNING and its inputs are resumed. A failed restore is returned: it has waited
    /// out broker trouble up to the task timeout already.
    pub fn poll_restores<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RestoreError> {
        // Whether each job is over, before taking its events: a thread that ends meanwhile has
        // sent its last events by then, and they are taken before the job is let go.
        let over: Vec<bool> = self.restores.iter().map(RestoreJob::is_over).collect();
        let mut ready = Vec::new();
        let mut failure = None;
        for job in &self.restores {
            for event in job.events() {
                match event {
                    RestoreEvent::Restored {
                        store,
                        partition,
                        records: applied,
                    } => {
                        let Some(task) = self.tasks.get_mut(&partition) else {
                            continue;
                        };
                        let Lifecycle::Restoring {
                            job: of,
                            stores_left,
                            records,
                            since,
                        } = task.lifecycle_mut()
                        else {
                            continue;
                        };
                        if *of != job.id() {
                            continue; // an earlier assignment's, cancelled
                        }
                        *stores_left -= 1;
                        *records += applied;
                        tracing::debug!(store, partition, records = applied, "store restored");
                        if *stores_left == 0 {
                            let (records, ms) = (*records, since.elapsed().as_millis() as u64);
                            if records > 0 {
                                tracing::info!(partition, records, ms, "task restored, running");
                            } else {
                                tracing::debug!(partition, ms, "task up to date, running");
                            }
                            *task.lifecycle_mut() = Lifecycle::Running;
                            ready.push(partition);
                        }
                    }
                    RestoreEvent::Failed(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        self.resume(consumer, &ready)?;
        let mut over = over.into_iter();
        self.restores.retain(|_| !over.next().unwrap_or(false));
        Ok(())
    }

    /// A record of `partition` failed transiently: pause the task's inputs until its back-off
    /// is due, and rewind `topic` (physical) to the record, which is processed again then.
    /// Returns when the back-off ends and how many failures in a row it follows.
    pub fn back_off<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        offset: i64,
        now: Instant,
    ) -> KafkaResult<(Instant, u32)> {
        let Some(task) = self.tasks.get_mut(&partition) else {
            return Ok((now, 0));
        };
        let until = task.backoff_mut().failed(now);
        let failures = task.backoff().failures();
        self.pause(consumer, &[partition])?;
        consumer.seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT)?;
        Ok((until, failures))
    }

    /// Resume the tasks whose back-off is due.
    pub fn resume_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        now: Instant,
    ) -> KafkaResult<()> {
        let mut due = Vec::new();
        for task in self.tasks.values_mut() {
            if task.backoff().is_due(now) {
                task.backoff_mut().resumed();
                due.push(task.partition());
            }
        }
        self.resume(consumer, &due)
    }

    /// A record of a task that does not take records now (restoring, or backing off) was
    /// polled, fetched before its inputs were paused: rewind to it so that it is fetched again
    /// once they are resumed.
    pub fn hold_back<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> KafkaResult<()> {
        consumer.seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT)
    }

    /// Partitions are being revoked: cancel their restore, resume their inputs (librdkafka
    /// would keep them paused into a later assignment), and park their processors.
    pub fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        partitions: &[i32],
    ) -> KafkaResult<()> {
        for job in &self.restores {
            job.cancel(partitions);
        }
        let owned: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| self.tasks.contains_key(p))
            .collect();
        self.resume(consumer, &owned)?;
        for p in owned {
            if let Some(task) = self.tasks.remove(&p) {
                self.parked.insert(p, task.into_processor());
            }
        }
        self.count();
        tracing::info!(tasks = ?self.tasks.keys().collect::<Vec<_>>(), "revoked {partitions:?}");
        Ok(())
    }

    /// Revoked `partitions` have had their last commit applied: their trees may be kept as
    /// standbys from their checkpoints on. A task forgotten without revocation (the consumer
    /// replaced) stays marked until it is revoked, or assigned again.
    pub fn release_standbys(&self, partitions: &[i32]) {
        if let Some(standbys) = &self.standbys {
            standbys.release(partitions);
        }
    }

    /// The consumer is gone (replaced after a fatal error) without revoking: drop every task,
    /// cancelling the restores.
    pub fn forget_all(&mut self) {
        let all: Vec<i32> = self.tasks.keys().copied().collect();
        for job in &self.restores {
            job.cancel(&all);
        }
        for (p, task) in std::mem::take(&mut self.tasks) {
            self.parked.insert(p, task.into_processor());
        }
        self.count();
    }

    fn count(&self) {
        self.metrics
            .assigned
            .with_label_values(&[&self.spec.name])
            .set(self.tasks.len() as i64);
        Health::global().set_tasks(self.tasks.len());
    }
}
