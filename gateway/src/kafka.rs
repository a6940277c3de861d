//! Publishing commands: an idempotent producer (acks=all), records keyed by entity id, with the
//! standard headers (event-type, schema-version, command-id, causation-id, traceparent).

use std::time::Duration;

use pickple_schemas::messages::MessageType;
use pickple_schemas::RecordHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::trace::TraceParent;

pub struct Publisher {
    producer: FutureProducer,
    prefix: String,
}

impl Publisher {
    pub fn new(brokers: &str, prefix: &str) -> anyhow::Result<Publisher> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Same partitioner as the processors, Java clients and Redpanda's tools.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "10000")
            .set("client.id", "pickple-gateway")
            .create()?;
        Ok(Publisher {
            producer,
            prefix: prefix.to_string(),
        })
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.prefix, logical)
    }

    /// Publish `message` on `topic` keyed by `key`; resolves once the broker has it (acks=all).
    pub async fn publish<M: Serialize + MessageType>(
        &self,
        topic: &str,
        key: &str,
        message: &M,
        command_id: &str,
        trace: &TraceParent,
    ) -> ApiResult<()> {
        let mut headers = RecordHeaders::new(message.message_type(), command_id);
        headers.traceparent = trace.to_string();
        let payload = pickple_schemas::encode(message);
        let topic = self.topic(topic);
        let record = FutureRecord::to(&topic)
            .key(key)
            .payload(&payload)
            .headers(headers.to_kafka());
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(e, _)| {
                tracing::warn!(error = %e, %topic, "publish failed");
                ApiError::unavailable("kafka_unavailable", "the command could not be queued")
            })
    }

    /// Whether the cluster answers a metadata request for `topic`.
    pub async fn check(&self, topic: &str) -> Result<(), String> {
        let producer = self.producer.clone();
        let topic = self.topic(topic);
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(3))
                .map_err(|e| e.to_string())?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
                _ => Err(format!("topic {topic} is missing")),
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}
