//! Run a processor in-process with no broker, like Kafka Streams' TopologyTestDriver: pipe
//! records in, move the wall clock, read outputs, dead letters and stores.

use std::collections::BTreeMap;

use pickple_schemas::messages::MessageType;
use pickple_schemas::RecordHeaders;
use serde::{de::DeserializeOwned, Serialize};

use crate::context::{Cause, Context, Output, StoreView};
use crate::processor::{ProcessError, Processor, Record};
use crate::store::{StateStores, Writes};
use crate::Millis;

/// A dead letter captured by the driver.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub key: Vec<u8>,
    pub reason: String,
}

/// Drives one task (partition 0) of a processor. Each piped record is its own committed
/// transaction; a `Retry` failure leaves stores untouched and is returned to the test.
pub struct TestDriver<P> {
    processor: P,
    stores: StateStores,
    now: Millis,
    offset: i64,
    outputs: Vec<Output>,
    dead_letters: Vec<DeadLetter>,
    /// Offsets of the records whose step asked to be committed at once.
    commits_requested: Vec<i64>,
    /// The runtime's size guard (`PICKPLE_MAX_VALUE_BYTES`).
    max_value_bytes: usize,
}

impl<P: Processor> TestDriver<P> {
    pub fn new(processor: P, start: Millis) -> Self {
        TestDriver {
            processor,
            stores: StateStores::temporary().expect("in-memory sled"),
            now: start,
            offset: 0,
            outputs: Vec::new(),
            dead_letters: Vec::new(),
            commits_requested: Vec::new(),
            max_value_bytes: 256 * 1024,
        }
    }

    /// The size guard's limit, as `PICKPLE_MAX_VALUE_BYTES` sets it for the runtime: a step
    /// writing a larger value or output is dead-lettered.
    pub fn with_max_value_bytes(mut self, limit: usize) -> Self {
        self.max_value_bytes = limit;
        self
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    /// Pipe a message, with headers as the gateway would set them.
    pub fn pipe<M: Serialize + MessageType>(
        &mut self,
        topic: &str,
        key: &str,
        message: &M,
    ) -> Result<(), ProcessError> {
        let headers = RecordHeaders::new(message.message_type(), format!("cmd-{}", self.offset));
        self.pipe_raw(
            topic,
            Some(key.as_bytes()),
            Some(&pickple_schemas::encode(message)),
            headers,
        )
    }

    pub fn pipe_raw(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: RecordHeaders,
    ) -> Result<(), ProcessError> {
        // Offsets count from 0, as in a fresh Kafka partition.
        let offset = self.offset;
        self.offset += 1;
        let record = Record {
            topic,
            partition: 0,
            offset,
            key,
            value,
            headers,
            timestamp: Some(self.now),
        };
        let empty = Writes::new();
        let view = StoreView {
            stores: &self.stores,
            applying: None,
            txn: &empty,
            partition: 0,
        };
        let cause = Cause::Record {
            topic,
            partition: 0,
            offset,
        };
        // Like the engine: a traced record runs in its span and its outputs continue it.
        let traced = crate::trace::record_span(&record.headers, "driver", topic, 0, offset);
        let _entered = traced.as_ref().map(|(span, _)| span.enter());
        let parent = traced
            .as_ref()
            .map_or(&record.headers, |(_, onward)| onward);
        let mut ctx = Context::new(view, Some(self.now), parent, cause);
        match self.processor.process(&mut ctx, &record) {
            Ok(()) => {
                let (writes, outputs) = (
                    std::mem::take(&mut ctx.writes),
                    std::mem::take(&mut ctx.outputs),
                );
                let commit_requested = ctx.commit_requested;
                drop(ctx);
                if let Some(reason) =
                    crate::limits::oversized(&writes, &outputs, self.max_value_bytes)
                {
                    self.dead_letters.push(DeadLetter {
                        topic: topic.into(),
                        key: key.unwrap_or_default().to_vec(),
                        reason,
                    });
                    return Ok(());
                }
                if commit_requested {
                    self.commits_requested.push(offset);
                }
                self.commit(writes, outputs);
                Ok(())
            }
            Err(ProcessError::Invalid(reason)) => {
                self.dead_letters.push(DeadLetter {
                    topic: topic.into(),
                    key: key.unwrap_or_default().to_vec(),
                    reason,
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Move the wall clock forward and run the punctuator once.
    pub fn advance(&mut self, ms: Millis) -> Result<(), ProcessError> {
        self.now += ms;
        let empty = Writes::new();
        let view = StoreView {
            stores: &self.stores,
            applying: None,
            txn: &empty,
            partition: 0,
        };
        let headers = RecordHeaders::new("Punctuate", "punctuate");
        let cause = Cause::Named("punctuate".into());
        let mut ctx = Context::new(view, Some(self.now), &headers, cause);
        self.processor.punctuate(&mut ctx)?;
        let (writes, mut outputs) = (
            std::mem::take(&mut ctx.writes),
            std::mem::take(&mut ctx.outputs),
        );
        drop(ctx);
        let _traced = crate::trace::punctuation_span("driver", 0, &mut outputs);
        self.commit(writes, outputs);
        Ok(())
    }

    fn commit(
        &mut self,
        writes: BTreeMap<String, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
        outputs: Vec<Output>,
    ) {
        for (store, kv) in writes {
            self.stores
                .apply(&store, 0, kv, None)
                .expect("in-memory sled write");
        }
        self.outputs.extend(outputs);
    }

    /// Take the outputs sent to `topic` so far.
    pub fn take_outputs(&mut self, topic: &str) -> Vec<Output> {
        let (mine, rest) = std::mem::take(&mut self.outputs)
            .into_iter()
            .partition(|o| o.topic == topic);
        self.outputs = rest;
        mine
    }

    /// Take outputs of `topic` decoded as `T`.
    pub fn take<T: DeserializeOwned>(&mut self, topic: &str) -> Vec<T> {
        self.take_outputs(topic)
            .into_iter()
            .map(|o| pickple_schemas::decode(o.value.as_deref()).expect("output decodes"))
            .collect()
    }

    /// Offsets (from 0, one per piped record) of the records whose step asked the runtime to
    /// commit at once ([`Context::commit_soon`]).
    pub fn commits_requested(&self) -> &[i64] {
        &self.commits_requested
    }

    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    pub fn get<T: DeserializeOwned>(&self, store: &str, key: &str) -> Option<T> {
        self.stores
            .get(store, 0, key.as_bytes())
            .expect("in-memory sled read")
            .map(|v| serde_json::from_slice(&v).expect("stored value decodes"))
    }
}
