//! The transactional producer (Kafka Streams' `StreamsProducer`): one per instance, fenced by
//! its `transactional.id`, and the only place that calls librdkafka's transaction API. Every
//! error of that API is sorted here into what the engine must do next, as `rdkafka.h` documents:
//! a retriable error means calling again (a commit that timed out goes on in the background and
//! can no longer be aborted), an abortable one means aborting, a fatal one means stopping.

use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::collector::DeliveryReports;
use crate::RuntimeConfig;

/// The transaction timeout (`transaction.timeout.ms`): the coordinator aborts a transaction open
/// longer, so waiting longer for one call is pointless.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one transactional call may block, and how long a call that librdkafka reports as
/// retriable is made again before the caller is told.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub call: Duration,
    pub retry_for: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: TXN_TIMEOUT,
            retry_for: TXN_TIMEOUT,
        }
    }
}

/// What a failed producer call means for the transaction.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Another instance with our transactional.id took over: this one is a zombie and stops.
    #[error("producer fenced: another instance with the same id is running")]
    Fenced,
    #[error("fatal producer error: {0}")]
    Fatal(KafkaError),
    /// The transaction cannot commit: abort it and process its inputs again.
    #[error("transaction must be aborted: {0}")]
    Abortable(KafkaError),
    /// The call may still succeed if it is made again (a timeout while the broker is away).
    #[error("transactional call to retry: {0}")]
    Retriable(KafkaError),
}

impl ProducerError {
    /// Whether the instance can go on (after aborting or calling again), as opposed to stopping.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProducerError::Abortable(_) | ProducerError::Retriable(_)
        )
    }
}

/// Sort a producer error. Fencing is checked by code first: librdkafka reports some fencings
/// (an old epoch) as plain errors rather than fatal ones, and a fenced producer must never write.
pub(crate) fn classify(e: KafkaError) -> ProducerError {
    if matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) {
        return ProducerError::Fenced;
    }
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => ProducerError::Fatal(e),
        KafkaError::Transaction(t) if t.txn_requires_abort() => ProducerError::Abortable(e),
        KafkaError::Transaction(t) if t.is_retriable() => ProducerError::Retriable(e),
        // A failed send, a timed-out flush, or an error librdkafka gave no advice for: the
        // transaction is still open, so aborting it is always allowed.
        _ => ProducerError::Abortable(e),
    }
}

pub(crate) struct StreamsProducer {
    producer: ThreadedProducer<DeliveryReports>,
    in_txn: bool,
    timeouts: Timeouts,
}

impl StreamsProducer {
    /// The instance's producer, `transactional.id = <prefix><app>-<instance>`, with its
    /// transactions initialised: that fences any zombie with our id and aborts what it left open.
    pub fn start(config: &RuntimeConfig, app: &str, reports: DeliveryReports) -> KafkaResult<Self> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set(
                "transactional.id",
                format!("{}{}-{}", config.topic_prefix, app, config.instance_id),
            )
            .set(
                "transaction.timeout.ms",
                TXN_TIMEOUT.as_millis().to_string(),
            )
            // Same partitioner as Java clients and Redpanda's tools, so anyone can co-partition.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            // The first produce of a transaction waits for the previous commit's markers (the
            // broker answers CONCURRENT_TRANSACTIONS until then): retry soon, not after 100 ms.
            .set("retry.backoff.ms", "10")
            .set("compression.type", "lz4");
        Self::with_client(
            &client,
            reports,
            Timeouts::default(),
            Duration::from_secs(60),
        )
    }

    pub(crate) fn with_client(
        client: &ClientConfig,
        reports: DeliveryReports,
        timeouts: Timeouts,
        init_timeout: Duration,
    ) -> KafkaResult<Self> {
        let producer: ThreadedProducer<DeliveryReports> = client.create_with_context(reports)?;
        producer.init_transactions(init_timeout)?;
        Ok(StreamsProducer {
            producer,
            in_txn: false,
            timeouts,
        })
    }

    /// Whether a transaction is open (begun, and neither committed nor aborted yet).
    pub fn in_transaction(&self) -> bool {
        self.in_txn
    }

    /// Begin a transaction unless one is open; true when this began one.
    pub fn begin(&mut self) -> Result<bool, ProducerError> {
        if self.in_txn {
            return Ok(false);
        }
        self.producer.begin_transaction().map_err(classify)?;
        self.in_txn = true;
        Ok(true)
    }

    /// Send a record in the open transaction, waiting for room in the local queue if it is full.
    pub fn send(&self, mut record: BaseRecord<'_, [u8], [u8], usize>) -> Result<(), ProducerError> {
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

    /// Add the inputs' next offsets to the transaction, for the consumer group in `group`.
    pub fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), ProducerError> {
        let call = self.timeouts.call;
        self.retrying(|| {
            self.producer
                .send_offsets_to_transaction(offsets, group, call)
        })
    }

    /// Wait until every produced record is acknowledged, sending what lingers at once.
    ///
    /// rdkafka's `flush` (which `commit_transaction` calls first) waits in 100 ms `poll` slices
    /// that run to the end, as our producer's own thread takes the acknowledgements: committing
    /// with records in flight would cost 100 ms per transaction. librdkafka's `rd_kafka_flush`
    /// itself, with delivery reports as events (as rdkafka sets them up), only waits for the
    /// queue to empty and makes every broker thread send without `linger.ms`, so call it
    /// directly.
    pub fn flush(&self) -> Result<(), ProducerError> {
        let deadline = Instant::now() + self.timeouts.call;
        while self.producer.in_flight_count() > 0 {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(ProducerError::Abortable(KafkaError::Flush(
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

    /// Commit the open transaction. On [`ProducerError::Retriable`] the commit goes on in the
    /// background and the transaction stays open: call `commit` again (librdkafka resumes it),
    /// never `abort`, which librdkafka refuses in that state. On [`ProducerError::Abortable`]
    /// call [`abort`](Self::abort).
    pub fn commit(&mut self) -> Result<(), ProducerError> {
        let call = self.timeouts.call;
        self.retrying(|| self.producer.commit_transaction(call))?;
        self.in_txn = false;
        Ok(())
    }

    /// Abort the open transaction, if any; it stays open (for a later try) if that fails.
    /// Returns whether a transaction was aborted.
    pub fn abort(&mut self) -> Result<bool, ProducerError> {
        if !self.in_txn {
            return Ok(false);
        }
        let call = self.timeouts.call;
        self.retrying(|| self.producer.abort_transaction(call))?;
        self.in_txn = false;
        Ok(true)
    }

    /// Make a transactional call again while librdkafka says it may be retried as it is, up to
    /// the retry window; then sort its error.
    fn retrying(&self, mut call: impl FnMut() -> KafkaResult<()>) -> Result<(), ProducerError> {
        let deadline = Instant::now() + self.timeouts.retry_for;
        loop {
            match call().map_err(classify) {
                Err(ProducerError::Retriable(e)) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "retrying a transactional call");
                    std::thread::sleep(Duration::from_millis(50));
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against librdkafka's mock cluster (in-process, no broker needed).

    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    use super::*;

    fn producer(
        cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    ) -> StreamsProducer {
        cluster.create_topic("out", 1, 1).unwrap();
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("transactional.id", "test-producer");
        let timeouts = Timeouts {
            call: Duration::from_millis(500),
            retry_for: Duration::ZERO,
        };
        StreamsProducer::with_client(
            &client,
            DeliveryReports::default(),
            timeouts,
            Duration::from_secs(10),
        )
        .unwrap()
    }

    fn send_one(p: &mut StreamsProducer) {
        assert!(p.begin().unwrap(), "a transaction begins");
        p.send(
            BaseRecord::with_opaque_to("out", 0)
                .key(&b"k"[..])
                .payload(&b"v"[..]),
        )
        .unwrap();
        p.flush().unwrap();
    }

    #[test]
    fn a_commit_that_times_out_is_retriable_and_completes_when_called_again() {
        let cluster = MockCluster::new(1).unwrap();
        let mut p = producer(&cluster);
        send_one(&mut p);
        // The coordinator answers EndTxn after the call's timeout: librdkafka reports a
        // retriable timeout while the commit goes on in the background.
        cluster
            .broker_round_trip_time(1, Duration::from_secs(2))
            .unwrap();
        match p.commit() {
            Err(ProducerError::Retriable(_)) => {}
            other => panic!("a timed-out commit is retriable, got {other:?}"),
        }
        assert!(
            p.in_transaction(),
            "the transaction is still being committed"
        );
        assert!(
            p.producer
                .abort_transaction(Duration::from_millis(100))
                .is_err(),
            "librdkafka refuses to abort a commit in progress: calling commit again is the way"
        );
        cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match p.commit() {
                Ok(()) => break,
                Err(ProducerError::Retriable(_)) if Instant::now() < deadline => {}
                other => panic!("calling commit again completes it, got {other:?}"),
            }
        }
        assert!(!p.in_transaction());
        send_one(&mut p);
        p.commit().unwrap();
    }

    #[test]
    fn an_abortable_commit_error_is_sorted_for_abort_and_the_abort_ends_the_transaction() {
        let cluster = MockCluster::new(1).unwrap();
        let mut p = producer(&cluster);
        send_one(&mut p);
        cluster.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID],
        );
        match p.commit() {
            Err(ProducerError::Abortable(_)) => {}
            other => panic!("an abortable commit error, got {other:?}"),
        }
        assert!(p.abort().unwrap(), "the transaction is aborted");
        assert!(!p.in_transaction());
        send_one(&mut p);
        p.commit().unwrap();
    }
}
