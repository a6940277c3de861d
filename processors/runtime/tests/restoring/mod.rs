//! Helpers for the restore tests: a big changelog left by a previous owner of task 0, and the
//! counter reporting each record it processes with how much was left to restore then.

#![allow(dead_code)]

use std::sync::mpsc::Sender;
use std::time::Duration;

use pickple_runtime::reference::Counter;
use pickple_runtime::{partition_for, Context, Metrics, ProcessError, Processor, Record};
use pickple_schemas::topic;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::common::{brokers, Read, Sandbox, APP, COUNTS_STORE, COUNT_INPUT, PARTITIONS};

/// What a test learns of each record processed: its instance, its partition, and how many
/// changelog records of the `counts` store were left to restore in the process at that moment.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub instance: &'static str,
    pub partition: i32,
    pub remaining: i64,
}

/// The counter, reporting each record it processes.
pub struct Observed {
    pub instance: &'static str,
    pub seen: Sender<Seen>,
}

impl Processor for Observed {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let remaining = Metrics::global()
            .restore_remaining
            .with_label_values(&[APP, COUNTS_STORE])
            .get();
        let _ = self.seen.send(Seen {
            instance: self.instance,
            partition: record.partition,
            remaining,
        });
        Counter.process(ctx, record)
    }
}

pub fn producer() -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .create()
        .unwrap()
}

pub fn send(producer: &BaseProducer, record: BaseRecord<'_, str, [u8]>) {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// The first `n` keys `big-0`, `big-1`, ... of task `task`.
pub fn keys_of(task: i32, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("big-{i}"))
        .filter(|k| partition_for(k.as_bytes(), PARTITIONS) == task)
        .take(n)
        .collect()
}

/// Task 0's counts as a previous owner left them in its changelog: 7 for every key but the
/// last, whose 41 is the changelog's final record. Returns the keys.
pub fn big_changelog(sb: &Sandbox, n: usize) -> Vec<String> {
    let keys = keys_of(0, n);
    let changelog = sb.topic(&topic::changelog(APP, COUNTS_STORE));
    let p = producer();
    for (i, k) in keys.iter().enumerate() {
        let count: &[u8] = if i == n - 1 { b"41" } else { b"7" };
        send(
            &p,
            BaseRecord::to(&changelog)
                .partition(0)
                .key(k.as_str())
                .payload(count),
        );
    }
    p.flush(Duration::from_secs(60)).unwrap();
    keys
}

/// One input record for each key.
pub fn inputs(sb: &Sandbox, keys: &[&String]) {
    let input = sb.topic(COUNT_INPUT);
    let p = producer();
    for k in keys {
        send(
            &p,
            BaseRecord::to(&input)
                .key(k.as_str())
                .payload(b"{}".as_slice()),
        );
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Keys `other-<i>` of every task but 0.
pub fn other_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("other-{i}"))
        .filter(|k| partition_for(k.as_bytes(), PARTITIONS) != 0)
        .collect()
}

/// The last count output for each key of `partition` (outputs are read in order per partition).
pub fn counts_of(outputs: &[Read], partition: i32) -> std::collections::HashMap<&str, u64> {
    outputs
        .iter()
        .filter(|o| o.partition == partition)
        .map(|o| (o.key.as_str(), o.value["count"].as_u64().unwrap()))
        .collect()
}
