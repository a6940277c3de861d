//! The record collector (Kafka Streams' `RecordCollector`): everything a transaction sends
//! (outputs, changelog records, dead letters) goes out through it, tagged with the
//! transaction's generation, and their delivery reports come back to it.
//!
//! Delivery reports arrive on librdkafka's thread, those of an aborted transaction (its purged
//! records) possibly after the abort has returned. A report of an earlier generation is
//! ignored: counting it would blame the next transaction for a failure that was not its own,
//! or move a store's checkpoint to a record that was never committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pickple_schemas::topic;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Message};

use crate::context::Output;
use crate::metrics::Metrics;
use crate::producer::{ProducerError, StreamsProducer};
use crate::RuntimeConfig;

/// Per (physical topic, partition) values, nested so that updating an existing entry by `&str`
/// allocates nothing: these maps are touched once per record.
pub(crate) type PerPartition<T> = HashMap<String, HashMap<i32, T>>;

/// A record's delivery opaque: its transaction's generation, shifted left once, with the low
/// bit set for a changelog record (whose position becomes a store checkpoint).
fn tag(generation: usize, changelog: bool) -> usize {
    (generation << 1) | usize::from(changelog)
}

fn untag(opaque: usize) -> (usize, bool) {
    (opaque >> 1, opaque & 1 == 1)
}

/// What the delivery reports of the open transaction told so far.
#[derive(Default)]
struct Reported {
    /// Per changelog partition, the position after the last delivered record.
    positions: PerPartition<i64>,
    /// The first record of the transaction that was not delivered, and why.
    failed: Option<String>,
}

/// The producer's context: receives the delivery reports of the current generation.
#[derive(Default, Clone)]
pub(crate) struct DeliveryReports {
    generation: Arc<AtomicUsize>,
    /// Also taken when the generation moves, so that a report checked against the old
    /// generation never lands in the new one.
    reported: Arc<Mutex<Reported>>,
}

impl DeliveryReports {
    fn generation(&self) -> usize {
        self.generation.load(Ordering::Relaxed)
    }

    /// The transaction ended: forget all that was reported of it, and ignore its late reports.
    fn next_generation(&self) -> Reported {
        let mut reported = self.reported.lock().unwrap();
        self.generation.fetch_add(1, Ordering::Relaxed);
        std::mem::take(&mut *reported)
    }

    fn delivered(&self, generation: usize, topic: &str, partition: i32, offset: i64) {
        let mut reported = self.reported.lock().unwrap();
        if generation != self.generation() {
            return;
        }
        let partitions = match reported.positions.get_mut(topic) {
            Some(partitions) => partitions,
            None => reported.positions.entry(topic.to_string()).or_default(),
        };
        let entry = partitions.entry(partition).or_insert(0);
        *entry = (*entry).max(offset + 1);
    }

    fn not_delivered(&self, generation: usize, reason: String) {
        let mut reported = self.reported.lock().unwrap();
        if generation == self.generation() {
            reported.failed.get_or_insert(reason);
        }
    }
}

impl ClientContext for DeliveryReports {}

impl ProducerContext for DeliveryReports {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (generation, changelog) = untag(opaque);
        match result {
            Ok(msg) if changelog => {
                self.delivered(generation, msg.topic(), msg.partition(), msg.offset())
            }
            Ok(_) => {}
            Err((e, msg)) => self.not_delivered(
                generation,
                format!("{}[{}]: {e}", msg.topic(), msg.partition()),
            ),
        }
    }
}

pub(crate) struct RecordCollector {
    app: String,
    config: RuntimeConfig,
    reports: DeliveryReports,
    metrics: &'static Metrics,
    /// Physical names of logical output topics and of the stores' changelogs, built once
    /// rather than per record.
    physical: HashMap<String, Arc<str>>,
    changelogs: HashMap<String, Arc<str>>,
    dead_letters: String,
    /// Per-topic counters of records out, resolved once: a label lookup per record showed in
    /// profiles.
    counted_out: HashMap<String, prometheus::IntCounter>,
}

impl RecordCollector {
    pub fn new(app: &str, config: &RuntimeConfig, reports: DeliveryReports) -> Self {
        RecordCollector {
            app: app.to_string(),
            dead_letters: config.topic(&topic::dead_letter(app)),
            config: config.clone(),
            reports,
            metrics: Metrics::global(),
            physical: HashMap::new(),
            changelogs: HashMap::new(),
            counted_out: HashMap::new(),
        }
    }

    /// The physical changelog topic of a store.
    pub fn changelog(&mut self, store: &str) -> Arc<str> {
        if let Some(topic) = self.changelogs.get(store) {
            return topic.clone();
        }
        let physical: Arc<str> = self
            .config
            .topic(&topic::changelog(&self.app, store))
            .into();
        self.changelogs.insert(store.to_string(), physical.clone());
        physical
    }

    fn record<'r>(
        &self,
        topic: &'r str,
        key: &'r [u8],
        changelog: bool,
    ) -> BaseRecord<'r, [u8], [u8], usize> {
        BaseRecord::with_opaque_to(topic, tag(self.reports.generation(), changelog)).key(key)
    }

    /// Send a processor's output record.
    pub fn send_output(
        &mut self,
        producer: &StreamsProducer,
        out: &Output,
    ) -> Result<(), ProducerError> {
        let topic = match self.physical.get(out.topic.as_str()) {
            Some(topic) => topic.clone(),
            None => {
                let topic: Arc<str> = self.config.topic(&out.topic).into();
                self.physical.insert(out.topic.clone(), topic.clone());
                topic
            }
        };
        let mut record = self
            .record(&topic, &out.key, false)
            .headers(out.headers.to_kafka());
        if let Some(v) = &out.value {
            record = record.payload(v.as_slice());
        }
        producer.send(record)?;
        match self.counted_out.get(out.topic.as_str()) {
            Some(counter) => counter.inc(),
            None => {
                let counter = self
                    .metrics
                    .records_out
                    .with_label_values(&[&self.app, &out.topic]);
                counter.inc();
                self.counted_out.insert(out.topic.clone(), counter);
            }
        }
        Ok(())
    }

    /// Send a store write to its changelog partition (`None` is a tombstone).
    pub fn send_changelog(
        &self,
        producer: &StreamsProducer,
        changelog: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), ProducerError> {
        let mut record = self.record(changelog, key, true).partition(partition);
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer.send(record)
    }

    /// Send the original record to `<app>-dlq`, with why and where it came from.
    pub fn send_dead_letter(
        &self,
        producer: &StreamsProducer,
        msg: &BorrowedMessage<'_>,
        topic: &str,
        reason: &str,
    ) -> Result<(), ProducerError> {
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
            ("dlq-app", self.app.as_str()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let key = msg.key().unwrap_or_default();
        let mut record = self.record(&self.dead_letters, key, false).headers(headers);
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        producer.send(record)?;
        self.metrics
            .dlq
            .with_label_values(&[&self.app, topic])
            .inc();
        Ok(())
    }

    /// Why the open transaction must not commit: a record of it was not delivered (call after
    /// flushing, when every report of it is in).
    pub fn undelivered(&self) -> Option<String> {
        self.reports.reported.lock().unwrap().failed.clone()
    }

    /// The transaction committed: the positions its changelog records reached (the stores'
    /// checkpoints), per changelog topic and partition. Reports from now on are the next
    /// transaction's.
    pub fn committed(&self) -> PerPartition<i64> {
        self.reports.next_generation().positions
    }

    /// The transaction was aborted: forget its positions and its failed deliveries alike, so
    /// neither a checkpoint nor a failure of it carries over to the next transaction.
    pub fn aborted(&self) {
        self.reports.next_generation();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGELOG: &str = "app-store-changelog";

    fn collector() -> (RecordCollector, DeliveryReports) {
        let reports = DeliveryReports::default();
        let config = RuntimeConfig::local("unused");
        (
            RecordCollector::new("app", &config, reports.clone()),
            reports,
        )
    }

    #[test]
    fn the_tag_carries_the_generation_and_whether_the_record_is_a_changelog_record() {
        assert_eq!(untag(tag(41, true)), (41, true));
        assert_eq!(untag(tag(41, false)), (41, false));
        assert_eq!(untag(tag(0, false)), (0, false));
    }

    #[test]
    fn a_transaction_after_an_aborted_one_with_a_failed_delivery_commits() {
        let (collector, reports) = collector();
        let aborted = reports.generation();
        reports.delivered(aborted, CHANGELOG, 0, 10);
        reports.not_delivered(aborted, "out[0]: message timed out".into());
        assert!(collector.undelivered().is_some());
        collector.aborted();

        let next = reports.generation();
        assert_ne!(next, aborted);
        assert_eq!(
            collector.undelivered(),
            None,
            "the aborted transaction's failure is not the next one's"
        );
        // The aborted transaction's purged records report late; they count for nothing.
        reports.not_delivered(aborted, "out[0]: purged".into());
        reports.delivered(aborted, CHANGELOG, 0, 99);
        reports.delivered(next, CHANGELOG, 0, 11);
        assert_eq!(
            collector.undelivered(),
            None,
            "the next transaction may commit"
        );
        assert_eq!(
            collector.committed(),
            HashMap::from([(CHANGELOG.to_string(), HashMap::from([(0, 12)]))]),
            "its checkpoint is its own record's position, not the aborted one's"
        );
    }

    #[test]
    fn a_failed_delivery_of_the_open_transaction_keeps_it_from_committing() {
        let (collector, reports) = collector();
        let open = reports.generation();
        reports.not_delivered(open, "first".into());
        reports.not_delivered(open, "second".into());
        assert_eq!(collector.undelivered().as_deref(), Some("first"));
        assert!(
            collector.committed().is_empty(),
            "no changelog record was delivered"
        );
        assert_eq!(
            collector.undelivered(),
            None,
            "a commit starts a new generation"
        );
    }

    #[test]
    fn changelog_names_come_from_the_topic_catalogue_with_the_deployment_prefix() {
        let reports = DeliveryReports::default();
        let mut config = RuntimeConfig::local("unused");
        config.topic_prefix = "t1.".into();
        let mut collector = RecordCollector::new("order", &config, reports);
        assert_eq!(&*collector.changelog("orders"), "t1.order-orders-changelog");
        assert_eq!(collector.dead_letters, "t1.order-dlq");
    }
}
