//! Standby replicas (Kafka Streams' `num.standby.replicas`): warm copies of the stores of tasks
//! this instance does not own, kept by reading their changelog partitions into the local sled
//! trees, with their checkpoints, outside any transaction. When a task moves here, its restore
//! starts from that checkpoint and reads only the tail the standby had not reached.
//!
//! **Placement.** Kafka Streams places standbys with its own group assignor, and gives an active
//! task to the instance whose standby is caught up. librdkafka cannot host a custom assignor, so
//! the runtime does the opposite: it leaves the assignment to librdkafka's range assignor and
//! places the standbys where that assignor *will* move each task. The range assignor is
//! deterministic: it sorts the members by their `group.instance.id` (static membership, which
//! the runtime always sets) and cuts the partitions into contiguous ranges. So every instance
//! reads the group's members from the coordinator (DescribeGroups, the same answer for all),
//! and works out, for every set of up to `N` members that could die, the assignment the
//! survivors would get. An instance keeps a standby of every task it would own in one of those
//! futures and does not own now. With `N = 1` the loss of any one instance moves each of its
//! tasks, and every task the range cut shifts between survivors, to an instance that already
//! holds its stores. No coordination topic is needed: each instance computes the same map from
//! the same membership, and publishes its own share as `pickple_standby_partitions` and in the
//! log.
//!
//! A standby never writes a tree while this instance's own task for the partition owns it: the
//! task manager marks a partition active (under a write lock) before its restore starts, and
//! the standby thread writes a batch only under the read lock, for partitions not marked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::metrics::Metrics;
use crate::processor::AppSpec;
use crate::restore::{RestoreContext, RestoreError};
use crate::store::StateStores;
use crate::RuntimeConfig;

/// How often the group's membership is read again.
const REFRESH: Duration = Duration::from_secs(2);
/// Records applied to a tree in one batch.
const BATCH: usize = 1000;

/// The client ids of `group`'s members, as its coordinator lists them (DescribeGroups).
pub(crate) fn group_members<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    group: &str,
    timeout: Duration,
) -> KafkaResult<Vec<String>> {
    Ok(consumer
        .fetch_group_list(Some(group), timeout)?
        .groups()
        .iter()
        .flat_map(|g| g.members())
        .map(|m| m.client_id().to_string())
        .collect())
}

/// The partitions the range assignor gives each of `members` (sorted as librdkafka sorts them:
/// by `group.instance.id`, byte-wise), out of `partitions`.
pub fn range_assignment(members: &[String], partitions: i32) -> BTreeMap<String, Vec<i32>> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    let k = sorted.len() as i32;
    let mut out = BTreeMap::new();
    if k == 0 {
        return out;
    }
    let (per, extra) = (partitions / k, partitions % k);
    for (i, m) in sorted.into_iter().enumerate() {
        let i = i as i32;
        let start = i * per + i.min(extra);
        let count = per + i32::from(i < extra);
        out.insert(m.clone(), (start..start + count).collect());
    }
    out
}

/// Which partitions each member keeps a standby of, so that after the loss of any `replicas`
/// members (or fewer) every task lands on an instance that holds its stores: the partitions a
/// member would own in one of those futures and does not own now. Pure, so every instance
/// computes the same map from the same membership.
pub fn placement(
    members: &[String],
    partitions: i32,
    replicas: usize,
) -> BTreeMap<String, BTreeSet<i32>> {
    let mut sorted: Vec<String> = members.to_vec();
    sorted.sort();
    sorted.dedup();
    let now = range_assignment(&sorted, partitions);
    let mut out: BTreeMap<String, BTreeSet<i32>> = sorted
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    // Every non-empty set of at most `replicas` members that leaves a survivor.
    let mut dead: Vec<Vec<usize>> = vec![vec![]];
    for _ in 0..replicas.min(sorted.len().saturating_sub(1)) {
        let mut next = Vec::new();
        for set in &dead {
            let from = set.last().map_or(0, |&i| i + 1);
            for i in from..sorted.len() {
                let mut bigger = set.clone();
                bigger.push(i);
                next.push(bigger);
            }
        }
        for set in &next {
            let survivors: Vec<String> = sorted
                .iter()
                .enumerate()
                .filter(|(i, _)| !set.contains(i))
                .map(|(_, m)| m.clone())
                .collect();
            for (member, future) in range_assignment(&survivors, partitions) {
                let owned = &now[&member];
                out.entry(member)
                    .or_default()
                    .extend(future.into_iter().filter(|p| !owned.contains(p)));
            }
        }
        dead = next;
    }
    out
}

/// The group member name of an instance: its `client.id`, `<app>-<instance>`. Members sort by
/// `group.instance.id`, which is the same string behind the deployment's common prefix.
pub(crate) fn member_name(app: &str, instance: &str) -> String {
    format!("{app}-{instance}")
}

/// What the task manager and the standby thread share.
struct Shared {
    /// Partitions whose tasks this instance owns (restoring or running): the standby thread
    /// never writes their trees. Changed under the write lock; a batch is written under the
    /// read lock, so a change returns only once no standby write of those partitions is under
    /// way.
    active: RwLock<BTreeSet<i32>>,
    stop: AtomicBool,
}

/// The standby replicas of one instance: a thread keeping the standby trees up to date.
pub(crate) struct Standbys {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Standbys {
    /// Start keeping `config.standby_replicas` standbys, or `None` when there are none to keep
    /// (no replicas wanted, or an app without stores).
    pub fn start(
        config: &RuntimeConfig,
        spec: &AppSpec,
        stores: &StateStores,
    ) -> Result<Option<Standbys>, RestoreError> {
        if config.standby_replicas == 0 || spec.stores.is_empty() || spec.inputs.is_empty() {
            return Ok(None);
        }
        let shared = Arc::new(Shared {
            active: RwLock::new(BTreeSet::new()),
            stop: AtomicBool::new(false),
        });
        let readers = spec
            .stores
            .iter()
            .map(|store| {
                Ok(Reader {
                    consumer: standby_consumer(config, &spec.name, store)?,
                    changelog: config.topic(&spec.changelog(store)),
                    store: store.clone(),
                })
            })
            .collect::<Result<Vec<_>, RestoreError>>()?;
        let mut updater = Updater {
            readers,
            shared: shared.clone(),
            stores: stores.clone(),
            app: spec.name.clone(),
            me: member_name(&spec.name, &config.instance_id),
            group: format!("{}{}", config.topic_prefix, spec.name),
            input: config.topic(&spec.inputs[0]),
            replicas: config.standby_replicas,
            placed: BTreeSet::new(),
            fetching: BTreeSet::new(),
            batches: HashMap::new(),
            behind: BTreeSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("standby".into())
            .spawn(move || updater.run())
            .map_err(RestoreError::Thread)?;
        tracing::info!(
            replicas = config.standby_replicas,
            "keeping standby replicas"
        );
        Ok(Some(Standbys {
            shared,
            thread: Some(thread),
        }))
    }

    /// This instance's tasks now own `partitions`: returns once no standby write of them is
    /// under way, and none follows until they are released.
    pub fn activate(&self, partitions: &[i32]) {
        self.shared
            .active
            .write()
            .unwrap()
            .extend(partitions.iter().copied());
    }

    /// This instance's tasks gave `partitions` up (their last commit applied): the standby may
    /// keep them from their checkpoints on.
    pub fn release(&self, partitions: &[i32]) {
        let mut active = self.shared.active.write().unwrap();
        for p in partitions {
            active.remove(p);
        }
    }
}

impl Drop for Standbys {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A consumer per store, as for a restore: an end-of-partition event names only the partition.
fn standby_consumer(
    config: &RuntimeConfig,
    app: &str,
    store: &str,
) -> Result<BaseConsumer<RestoreContext>, RestoreError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        // Never joins this group (partitions are assigned by hand) nor commits to it.
        .set(
            "group.id",
            format!("{}{}-standby", config.topic_prefix, app),
        )
        .set(
            "client.id",
            format!("{}-standby-{store}", member_name(app, &config.instance_id)),
        )
        .set("enable.auto.commit", "false")
        // Only committed changelog records describe state that really happened.
        .set("isolation.level", "read_committed")
        // End-of-partition events tell when a standby has caught up (see `behind`).
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", crate::FETCH_QUEUE_BACKOFF_MS)
        .create_with_context(RestoreContext)?)
}

/// Changelog records read and not yet applied to one tree, and the position after them.
type Batch = (Vec<(Vec<u8>, Option<Vec<u8>>)>, i64);

/// Reads one store's changelog partitions.
struct Reader {
    consumer: BaseConsumer<RestoreContext>,
    store: String,
    /// Physical changelog topic.
    changelog: String,
}

/// The standby thread's state.
struct Updater {
    readers: Vec<Reader>,
    shared: Arc<Shared>,
    stores: StateStores,
    app: String,
    me: String,
    group: String,
    /// The first input (physical): its partition count is the number of tasks.
    input: String,
    replicas: usize,
    /// The partitions the placement gives this instance.
    placed: BTreeSet<i32>,
    /// The partitions whose changelogs are being read now.
    fetching: BTreeSet<i32>,
    /// Records read and not yet applied, per (store, partition), with the position after them.
    batches: HashMap<(String, i32), Batch>,
    /// Store-partitions read but not yet at their changelog's end.
    behind: BTreeSet<(String, i32)>,
}

impl Updater {
    fn run(&mut self) {
        let mut next_refresh = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_refresh {
                next_refresh = Instant::now() + REFRESH;
                if let Err(e) = self.refresh() {
                    tracing::debug!(error = %e, "standby: group not readable now, keeping the last placement");
                }
            }
            let step = self.follow().and_then(|()| self.poll());
            if let Err(e) = step {
                // A standby is a cache: trouble costs only a longer restore later.
                tracing::warn!(error = %e, "standby: reading changelogs failed; trying again");
                self.fetching.clear();
                self.batches.clear();
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    /// Read the group's members and the task count, and recompute this instance's share.
    fn refresh(&mut self) -> Result<(), KafkaError> {
        let timeout = Duration::from_secs(1);
        let consumer = &self.readers[0].consumer;
        let members = group_members(consumer, &self.group, timeout)?;
        if !members.contains(&self.me) {
            return Ok(()); // not in the group yet (or any more): keep what we have
        }
        let metadata = consumer.fetch_metadata(Some(&self.input), timeout)?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let map = placement(&members, partitions, self.replicas);
        let mine = map.get(&self.me).cloned().unwrap_or_default();
        if mine != self.placed {
            tracing::info!(standbys = ?mine, placement = ?map, "standby placement");
            Metrics::global()
                .standby_partitions
                .with_label_values(&[&self.app])
                .set(mine.len() as i64);
            self.placed = mine;
        }
        Ok(())
    }

    /// Read the changelogs of the placed partitions this instance's tasks do not own: reassign
    /// when that set changed, from each tree's checkpoint.
    fn follow(&mut self) -> Result<(), RestoreError> {
        let wanted: BTreeSet<i32> = {
            let active = self.shared.active.read().unwrap();
            self.placed.difference(&active).copied().collect()
        };
        if wanted == self.fetching {
            return Ok(());
        }
        self.apply_batches()?;
        self.behind.clear();
        for reader in &self.readers {
            let (store, changelog) = (&reader.store, &reader.changelog);
            let mut tpl = TopicPartitionList::new();
            for &p in &wanted {
                let (low, high) =
                    reader
                        .consumer
                        .fetch_watermarks(changelog, p, Duration::from_secs(5))?;
                let mut checkpoint = self.stores.checkpoint(store, p)?;
                if checkpoint.is_some_and(|c| c > high || c < low) {
                    // The changelog was recreated or truncated past this tree.
                    self.stores.wipe(store, p)?;
                    checkpoint = None;
                }
                let start = checkpoint.unwrap_or(low).max(low);
                tpl.add_partition_offset(changelog, p, Offset::Offset(start))?;
                self.behind.insert((store.clone(), p));
            }
            reader.consumer.assign(&tpl)?;
        }
        self.fetching = wanted;
        self.count_behind();
        Ok(())
    }

    fn poll(&mut self) -> Result<(), RestoreError> {
        if self.fetching.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            return Ok(());
        }
        let mut read = 0usize;
        for reader in &self.readers {
            while read < BATCH {
                match reader.consumer.poll(Duration::from_millis(20)) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        self.behind.remove(&(reader.store.clone(), p));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(msg)) => {
                        let key = (reader.store.clone(), msg.partition());
                        self.behind.insert(key.clone());
                        let batch = self.batches.entry(key).or_default();
                        batch.0.push((
                            msg.key().unwrap_or_default().to_vec(),
                            msg.payload().map(<[u8]>::to_vec),
                        ));
                        batch.1 = msg.offset() + 1;
                        read += 1;
                    }
                }
            }
        }
        self.apply_batches()?;
        self.count_behind();
        Ok(())
    }

    /// Write the batches read, each with its checkpoint, except for partitions that became
    /// active meanwhile (their restore reads them again from the checkpoint).
    fn apply_batches(&mut self) -> Result<(), RestoreError> {
        if self.batches.is_empty() {
            return Ok(());
        }
        let active = self.shared.active.read().unwrap();
        let counter = &Metrics::global().standby_records;
        for ((store, p), (records, position)) in self.batches.drain() {
            if active.contains(&p) {
                continue;
            }
            let n = records.len() as u64;
            self.stores.apply(&store, p, records, Some(position))?;
            counter.with_label_values(&[&self.app, &store]).inc_by(n);
        }
        Ok(())
    }

    fn count_behind(&self) {
        Metrics::global()
            .standby_behind
            .with_label_values(&[&self.app])
            .set(self.behind.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ms: &[&str]) -> Vec<String> {
        ms.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn range_cuts_contiguous_ranges_in_member_order_with_the_extra_ones_first() {
        let a = range_assignment(&names(&["s-b", "s-a", "s-c"]), 7);
        assert_eq!(a["s-a"], vec![0, 1, 2]);
        assert_eq!(a["s-b"], vec![3, 4]);
        assert_eq!(a["s-c"], vec![5, 6]);
        assert!(range_assignment(&[], 6).is_empty());
    }

    #[test]
    fn every_task_of_a_lost_member_lands_on_a_member_holding_its_standby() {
        for members in 2..=5 {
            let ms: Vec<String> = (0..members).map(|i| format!("app-{i}")).collect();
            for partitions in [6, 12] {
                let now = range_assignment(&ms, partitions);
                let standbys = placement(&ms, partitions, 1);
                for dead in &ms {
                    let survivors: Vec<String> =
                        ms.iter().filter(|m| *m != dead).cloned().collect();
                    for (member, after) in range_assignment(&survivors, partitions) {
                        for p in after {
                            assert!(
                                now[&member].contains(&p) || standbys[&member].contains(&p),
                                "{members} members, {partitions} partitions, {dead} lost: \
                                 {member} gets {p} without its stores"
                            );
                        }
                    }
                }
                // A member never keeps a standby of a task it owns.
                for (m, s) in &standbys {
                    assert!(s.iter().all(|p| !now[m].contains(p)));
                }
            }
        }
    }

    #[test]
    fn two_replicas_cover_the_loss_of_any_two_members() {
        let ms = names(&["a", "b", "c", "d"]);
        let now = range_assignment(&ms, 12);
        let standbys = placement(&ms, 12, 2);
        for i in 0..ms.len() {
            for j in i + 1..ms.len() {
                let survivors: Vec<String> = ms
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != i && *k != j)
                    .map(|(_, m)| m.clone())
                    .collect();
                for (member, after) in range_assignment(&survivors, 12) {
                    assert!(after
                        .iter()
                        .all(|p| now[&member].contains(p) || standbys[&member].contains(p)));
                }
            }
        }
    }

    #[test]
    fn a_lone_member_keeps_no_standby_and_two_members_each_keep_the_others_tasks() {
        assert!(placement(&names(&["a"]), 6, 1)["a"].is_empty());
        let two = placement(&names(&["a", "b"]), 6, 1);
        assert_eq!(two["a"], BTreeSet::from([3, 4, 5]));
        assert_eq!(two["b"], BTreeSet::from([0, 1, 2]));
    }
}
