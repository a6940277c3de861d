//! Growing an application's partitions with its state kept exact (`pickple-grow`).
//!
//! A task owns partition `p` of every input and the entities whose keys hash to `p`. Adding
//! partitions changes where keys hash: an entity's later records land on a new partition while
//! its state sits in the changelog partition (and sled tree) of the old one. Kafka Streams has
//! no way out but an application reset. Here every store names, for each of its keys, the
//! entity it belongs to ([`Route`]), so the state can follow the entities:
//!
//! 1. the applications are stopped and their inputs drained ([`check_drained`]): no record is
//!    left on an old partition for a task that no longer owns its key;
//! 2. every topic gets the new partition count (the topic catalogue's job);
//! 3. [`rekey`] reads each changelog partition to its end, and in one transaction per
//!    application writes every live entry whose entity now hashes elsewhere to that partition,
//!    with a tombstone where it was (or only a copy, for [`Route::Copy`]);
//! 4. the applications start again. A task restores its stores as always, from its trees'
//!    checkpoints: an old partition's tree reads the tombstones of what left it, a new
//!    partition's tree reads everything that moved there. State dirs need no wiping, and
//!    standby trees catch up the same way.
//!
//! The new count must be a multiple of the old one. Then an entity on partition `p` of `n`
//! moves, if at all, to `p + k·n`, a new partition: existing partitions only lose entries, so
//! what a task keeps about itself ([`Route::Stay`]: a sweep's cursor over its own keys) stays
//! true, and the new partitions start with none, as a new task does.
//!
//! Running it again changes nothing: once a transaction has committed, every entry is on its
//! entity's partition; one that did not commit wrote nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::partitioner::partition_for;
use crate::processor::{AppSpec, Route, Router};
use crate::standby::group_members;

/// How long one broker call may take.
const CALL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Layout(String),
    #[error("group {group} still has members {members:?}: stop every instance first")]
    Running { group: String, members: Vec<String> },
    #[error("group {group} has records left to process: {pending:?}")]
    NotDrained {
        group: String,
        /// `topic[partition]@offset` of the first record left on each such partition.
        pending: Vec<String>,
    },
    #[error("store {store}: key {key:?} is live on partitions {a} and {b}")]
    Conflict {
        store: String,
        key: String,
        a: i32,
        b: i32,
    },
    #[error("reading {topic}[{partition}] timed out at offset {offset}")]
    Timeout {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// What growing one store did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreMoves {
    pub store: String,
    /// Live entries read.
    pub entries: u64,
    /// Entries moved to their entity's new partition (a record there, a tombstone here).
    pub moved: u64,
    /// Entries copied to their entity's new partition and kept where they were.
    pub copied: u64,
}

/// The live entries of one changelog partition: key -> latest value.
pub type Live = BTreeMap<Vec<u8>, Vec<u8>>;

/// One changelog record to write: `(partition, key, value)`, `None` a tombstone.
pub type Write = (i32, Vec<u8>, Option<Vec<u8>>);

/// What must be written so that every live entry of one store is where `route` says, with
/// `live[p]` the live entries of changelog partition `p` and `live.len()` the partition count.
/// Pure, so the rules are tested without a broker.
pub fn plan(
    route: Router,
    store: &str,
    live: &[Live],
) -> Result<(StoreMoves, Vec<Write>), GrowError> {
    let partitions = live.len() as i32;
    let mut moves = StoreMoves {
        store: store.to_string(),
        ..StoreMoves::default()
    };
    let mut writes = Vec::new();
    for (p, entries) in live.iter().enumerate() {
        let p = p as i32;
        for (key, value) in entries {
            moves.entries += 1;
            let (entity, keep) = match route(store, key) {
                Route::Stay => continue,
                Route::Key(entity) => (entity, false),
                Route::Copy(entity) => (entity, true),
            };
            let target = partition_for(entity, partitions);
            if target == p {
                continue;
            }
            match live[target as usize].get(key) {
                // A copy made by an earlier run.
                Some(there) if keep && there == value => continue,
                Some(_) => {
                    return Err(GrowError::Conflict {
                        store: store.to_string(),
                        key: String::from_utf8_lossy(key).into_owned(),
                        a: p,
                        b: target,
                    })
                }
                None => {}
            }
            writes.push((target, key.clone(), Some(value.clone())));
            if keep {
                moves.copied += 1;
            } else {
                writes.push((p, key.clone(), None));
                moves.moved += 1;
            }
        }
    }
    Ok((moves, writes))
}

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// The partition count of `topic`.
pub fn partition_count(brokers: &str, topic: &str) -> Result<i32, GrowError> {
    count_of(&client(brokers).create()?, topic)
}

/// The partition count of `topic`, asked through a client already connected.
fn count_of(consumer: &BaseConsumer, topic: &str) -> Result<i32, GrowError> {
    let metadata = consumer.fetch_metadata(Some(topic), CALL)?;
    let t = metadata
        .topics()
        .first()
        .ok_or_else(|| GrowError::Layout(format!("no metadata for {topic}")))?;
    if let Some(e) = t.error() {
        return Err(GrowError::Layout(format!("{topic}: {e:?}")));
    }
    Ok(t.partitions().len() as i32)
}

/// Whether a watermark query failed only because the partition has no leader yet: partitions a
/// grow just added are in the metadata before they are led.
fn leaderless(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode::{
        LeaderNotAvailable, NotLeaderForPartition, UnknownPartition, UnknownTopicOrPartition,
    };
    matches!(
        e.rdkafka_error_code(),
        Some(
            LeaderNotAvailable | NotLeaderForPartition | UnknownPartition | UnknownTopicOrPartition
        )
    )
}

/// The low and high watermarks of `topic[partition]`, asked again while the partition has no
/// leader, until `deadline`.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    deadline: Instant,
) -> Result<(i64, i64), GrowError> {
    loop {
        match consumer.fetch_watermarks(topic, partition, CALL) {
            Ok(w) => return Ok(w),
            Err(e) if leaderless(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read partitions `0..partitions` of `topic` to their committed ends, from `from[p]` (the
/// beginning when absent), handing each record to `each(partition, offset, key, value)`.
fn read_to_end(
    brokers: &str,
    topic: &str,
    partitions: i32,
    from: &BTreeMap<i32, Offset>,
    timeout: Duration,
    mut each: impl FnMut(i32, i64, Option<&[u8]>, Option<&[u8]>),
) -> Result<(), GrowError> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", "pickple-grow-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        // The ends are known: a fetch at one need not wait for records (up to 500 ms by
        // default, partition after partition) before the end-of-partition event comes.
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    for p in 0..partitions {
        let (low, high) = watermarks(&consumer, topic, p, deadline)?;
        let start = from.get(&p).copied().unwrap_or(Offset::Beginning);
        let at = match start {
            Offset::Offset(o) => o,
            _ => low,
        };
        // Nothing at or after the start: no need to wait for an end-of-partition event.
        if at >= high {
            continue;
        }
        tpl.add_partition_offset(topic, p, start)?;
        open.insert(p, at);
    }
    if open.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    while !open.is_empty() {
        if Instant::now() > deadline {
            let (&partition, &offset) = open.iter().next().expect("open is not empty");
            return Err(GrowError::Timeout {
                topic: topic.to_string(),
                partition,
                offset,
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(m)) => {
                open.insert(m.partition(), m.offset() + 1);
                each(m.partition(), m.offset(), m.key(), m.payload());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The live entries of every partition of a changelog: its latest value per key, tombstones
/// dropped (what compaction keeps, and what a restore builds).
pub fn live_entries(
    brokers: &str,
    changelog: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<Live>, GrowError> {
    let mut live = vec![BTreeMap::new(); partitions as usize];
    read_to_end(
        brokers,
        changelog,
        partitions,
        &BTreeMap::new(),
        timeout,
        |p, _, key, value| {
            let Some(key) = key else { return };
            let entries = &mut live[p as usize];
            match value {
                Some(v) => {
                    entries.insert(key.to_vec(), v.to_vec());
                }
                None => {
                    entries.remove(key);
                }
            }
        },
    )?;
    Ok(live)
}

/// Check that `spec`'s group is empty and has processed every record of its inputs (with
/// `prefix` before every topic and group name). Members of a stopped static group stay until
/// their session times out, so this waits up to `wait` for them to go.
pub fn check_drained(
    brokers: &str,
    prefix: &str,
    spec: &AppSpec,
    wait: Duration,
) -> Result<(), GrowError> {
    let group = format!("{prefix}{}", spec.name);
    let consumer: BaseConsumer = client(brokers).create()?;
    let deadline = Instant::now() + wait;
    loop {
        let members = group_members(&consumer, &group, CALL)?;
        if members.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(GrowError::Running { group, members });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let pending = pending_inputs(brokers, prefix, spec)?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(GrowError::NotDrained { group, pending })
    }
}

/// The input partitions of `spec` where its group has records left to process, each as
/// `topic[partition]@offset` of the first such record: what the broker holds after the group's
/// committed offsets, read as the group reads (committed transactions only), so transaction
/// markers count for nothing. Empty once the group has caught up.
pub fn pending_inputs(
    brokers: &str,
    prefix: &str,
    spec: &AppSpec,
) -> Result<Vec<String>, GrowError> {
    let group = format!("{prefix}{}", spec.name);
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut pending = Vec::new();
    for input in &spec.inputs {
        let topic = format!("{prefix}{input}");
        let partitions = count_of(&consumer, &topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(tpl, CALL)?;
        let from: BTreeMap<i32, Offset> = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Offset::Offset(o)),
                // Never committed: every record of the partition is left.
                _ => (e.partition(), Offset::Beginning),
            })
            .collect();
        let mut first: BTreeMap<i32, i64> = BTreeMap::new();
        read_to_end(
            brokers,
            &topic,
            partitions,
            &from,
            CALL * 6,
            |p, offset, _, _| {
                first.entry(p).or_insert(offset);
            },
        )?;
        pending.extend(
            first
                .into_iter()
                .map(|(p, offset)| format!("{topic}[{p}]@{offset}")),
        );
    }
    Ok(pending)
}

/// Put every live entry of `spec`'s stores on the partition its entity hashes to under the
/// changelogs' (already grown) partition count: in one transaction, so a crash leaves all of
/// it or none. `prefix` goes before every topic name and the transactional id.
pub fn rekey(
    brokers: &str,
    prefix: &str,
    spec: &AppSpec,
    timeout: Duration,
) -> Result<Vec<StoreMoves>, GrowError> {
    let mut all = Vec::new();
    let mut writes: Vec<(String, Write)> = Vec::new();
    let metadata: BaseConsumer = client(brokers).create()?;
    for store in &spec.stores {
        let changelog = format!("{prefix}{}", spec.changelog(store));
        let partitions = count_of(&metadata, &changelog)?;
        let live = live_entries(brokers, &changelog, partitions, timeout)?;
        let (moves, w) = plan(spec.route, store, &live)?;
        all.push(moves);
        writes.extend(w.into_iter().map(|w| (changelog.clone(), w)));
    }
    if writes.is_empty() {
        return Ok(all);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = client(brokers)
        .set("transactional.id", format!("{prefix}{}-grow", spec.name))
        .set("transaction.timeout.ms", timeout.as_millis().to_string())
        .set("linger.ms", "5")
        .create()?;
    producer.init_transactions(CALL * 3)?;
    producer.begin_transaction()?;
    for (topic, (partition, key, value)) in &writes {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(*partition)
            .key(key.as_slice());
        if let Some(v) = value {
            record = record.payload(v.as_slice());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    // The threaded producer drains its queue in the background.
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    producer.abort_transaction(CALL)?;
                    return Err(e.into());
                }
            }
        }
    }
    // The commit flushes and fails if any record failed.
    producer.commit_transaction(timeout)?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys `t<entity>` are a task's own (they stay), `c<entity>` are copied, the rest route by
    /// themselves.
    fn route<'k>(_store: &str, key: &'k [u8]) -> Route<'k> {
        match key {
            [b't', ..] => Route::Stay,
            [b'c', rest @ ..] => Route::Copy(rest),
            _ => Route::Key(key),
        }
    }

    /// The live entries of `n` partitions holding `keys` where `n_before` partitions put them.
    fn laid_out(keys: &[&str], n_before: i32, n: i32) -> Vec<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut live = vec![BTreeMap::new(); n as usize];
        for k in keys {
            let entity = match route("s", k.as_bytes()) {
                Route::Key(e) | Route::Copy(e) => e,
                Route::Stay => k.as_bytes(),
            };
            let p = partition_for(entity, n_before);
            live[p as usize].insert(k.as_bytes().to_vec(), format!("v-{k}").into_bytes());
        }
        live
    }

    /// Apply `writes` to `live` as a restore would.
    fn apply(live: &mut [BTreeMap<Vec<u8>, Vec<u8>>], writes: &[Write]) {
        for (p, k, v) in writes {
            match v {
                Some(v) => live[*p as usize].insert(k.clone(), v.clone()),
                None => live[*p as usize].remove(k),
            };
        }
    }

    #[test]
    fn every_entry_ends_on_its_entitys_partition_and_a_second_run_writes_nothing() {
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut live = laid_out(&keys, 6, 12);
        let (moves, writes) = plan(route, "s", &live).unwrap();
        assert_eq!(moves.entries, 300);
        assert!(moves.moved > 100 && moves.moved < 200, "{moves:?}");
        apply(&mut live, &writes);
        for (p, entries) in live.iter().enumerate() {
            for (k, v) in entries {
                assert_eq!(partition_for(k, 12), p as i32);
                assert_eq!(v, &[b"v-", k.as_slice()].concat());
            }
        }
        assert_eq!(live.iter().map(BTreeMap::len).sum::<usize>(), 300);
        let (again, writes) = plan(route, "s", &live).unwrap();
        assert!(writes.is_empty());
        assert_eq!((again.moved, again.copied), (0, 0));
    }

    #[test]
    fn a_tasks_own_entries_stay_and_copies_stay_too() {
        let keys: Vec<String> = (0..60)
            .flat_map(|i| [format!("t{i}"), format!("c{i}")])
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let before = laid_out(&keys, 6, 12);
        let mut live = before.clone();
        let (moves, writes) = plan(route, "s", &live).unwrap();
        assert_eq!(moves.moved, 0);
        assert!(writes.iter().all(|(_, _, v)| v.is_some()), "no tombstones");
        apply(&mut live, &writes);
        for (p, entries) in before.iter().enumerate() {
            for k in entries.keys() {
                assert!(live[p].contains_key(k), "{k:?} left {p}");
                if let [b'c', entity @ ..] = k.as_slice() {
                    assert!(live[partition_for(entity, 12) as usize].contains_key(k));
                }
            }
        }
        assert_eq!(moves.copied as usize, writes.len());
        let (_, writes) = plan(route, "s", &live).unwrap();
        assert!(writes.is_empty(), "copies are made once");
    }

    #[test]
    fn a_key_live_where_it_would_move_to_is_a_conflict_not_an_overwrite() {
        let mut live = vec![BTreeMap::new(); 12];
        let k = b"k1".to_vec();
        let home = partition_for(&k, 12) as usize;
        let other = (home + 6) % 12;
        live[home].insert(k.clone(), b"a".to_vec());
        live[other].insert(k.clone(), b"b".to_vec());
        assert!(matches!(
            plan(route, "s", &live),
            Err(GrowError::Conflict { .. })
        ));
    }
}
