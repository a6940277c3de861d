//! Run a processor in-process with no broker, like Kafka Streams' TopologyTestDriver: pipe
//! records in, move the wall clock, read outputs, dead letters and stores.
//!
//! A step runs in a task as in the runtime, and its writes go through the same layers: the open
//! transaction's write buffer, the applier holding committed writes until they are in sled, and
//! sled. [`TestDriver::new`] commits and applies every step at once;
//! [`TestDriver::with_store_layers`] leaves commits and their application to the test.

use pickple_schemas::messages::MessageType;
use pickple_schemas::RecordHeaders;
use serde::{de::DeserializeOwned, Serialize};

use crate::applier::{Applier, Committed};
use crate::context::{Output, StoreView};
use crate::processor::{ProcessError, Processor, Record};
use crate::store::{StateStores, Writes};
use crate::task::{Lifecycle, Outcome, Step, StepSettings, Task};
use crate::Millis;

/// A dead letter captured by the driver.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub topic: String,
    pub key: Vec<u8>,
    pub reason: String,
}

/// What the open transaction holds besides its writes.
#[derive(Default)]
struct Uncommitted {
    writes: Writes,
    outputs: Vec<Output>,
    dead_letters: Vec<DeadLetter>,
}

/// Drives one task (partition 0) of a processor. A `Retry` failure leaves nothing behind and is
/// returned to the test.
pub struct TestDriver<P> {
    task: Task<P>,
    stores: StateStores,
    applier: Applier,
    txn: Uncommitted,
    /// Whether the test commits and settles ([`with_store_layers`](Self::with_store_layers)),
    /// rather than every step being committed and applied at once.
    layered: bool,
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
    /// Every piped record and every punctuation is its own transaction, committed and applied
    /// to the stores at once.
    pub fn new(processor: P, start: Millis) -> Self {
        let stores = StateStores::temporary().expect("in-memory sled");
        TestDriver {
            task: Task::new(0, processor, Lifecycle::Running),
            applier: Applier::on_settle(stores.clone()),
            stores,
            txn: Uncommitted::default(),
            layered: false,
            now: start,
            offset: 0,
            outputs: Vec::new(),
            dead_letters: Vec::new(),
            commits_requested: Vec::new(),
            max_value_bytes: 256 * 1024,
        }
    }

    /// Steps join one open transaction until [`commit`](Self::commit), as in the runtime: its
    /// writes are readable by later steps, and its outputs and dead letters appear only once it
    /// commits. The committed writes then stay with the applier, read from memory, until
    /// [`settle`](Self::settle) (or the next commit) applies them to sled.
    pub fn with_store_layers(processor: P, start: Millis) -> Self {
        TestDriver {
            layered: true,
            ..Self::new(processor, start)
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

    fn settings(&self) -> StepSettings<'static> {
        StepSettings {
            app: "driver",
            now: Some(self.now),
            max_value_bytes: self.max_value_bytes,
        }
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
        let settings = self.settings();
        let view = StoreView {
            stores: &self.stores,
            applying: self.applier.pending(),
            txn: &self.txn.writes,
            partition: 0,
        };
        let Outcome { step, span } = self.task.process(view, &record, settings);
        let _entered = span.as_ref().map(tracing::Span::enter);
        match step {
            Step::Keep {
                writes,
                outputs,
                commit_requested,
            } => {
                if commit_requested {
                    self.commits_requested.push(offset);
                }
                crate::store::buffer(&mut self.txn.writes, 0, writes);
                self.txn.outputs.extend(outputs);
            }
            Step::Refuse(reason) => self.txn.dead_letters.push(DeadLetter {
                topic: topic.into(),
                key: key.unwrap_or_default().to_vec(),
                reason,
            }),
            Step::Retry(reason) => return Err(ProcessError::Retry(reason)),
        }
        self.step_done();
        Ok(())
    }

    /// Move the wall clock forward and run the punctuator once.
    pub fn advance(&mut self, ms: Millis) -> Result<(), ProcessError> {
        self.now += ms;
        let settings = self.settings();
        let view = StoreView {
            stores: &self.stores,
            applying: self.applier.pending(),
            txn: &self.txn.writes,
            partition: 0,
        };
        let headers = RecordHeaders::new("Punctuate", "punctuate-driver-0");
        let Outcome { step, span } = self.task.punctuate(view, &headers, settings)?;
        let _entered = span.as_ref().map(tracing::Span::enter);
        match step {
            Step::Keep {
                writes, outputs, ..
            } => {
                crate::store::buffer(&mut self.txn.writes, 0, writes);
                self.txn.outputs.extend(outputs);
            }
            // As in the runtime: a refused punctuation leaves nothing and runs again later.
            Step::Refuse(_) | Step::Retry(_) => {}
        }
        self.step_done();
        Ok(())
    }

    fn step_done(&mut self) {
        if !self.layered {
            self.commit();
            self.settle();
        }
    }

    /// Commit the open transaction: its outputs and dead letters appear, and its writes go to
    /// the applier, which holds them (readable) until they are applied to sled.
    pub fn commit(&mut self) {
        let txn = std::mem::take(&mut self.txn);
        self.outputs.extend(txn.outputs);
        self.dead_letters.extend(txn.dead_letters);
        if txn.writes.is_empty() {
            return;
        }
        self.applier
            .submit(Committed {
                writes: std::sync::Arc::new(txn.writes),
                checkpoints: Default::default(),
                inputs: Vec::new(),
            })
            .expect("in-memory sled write");
    }

    /// Apply the committed writes the applier holds to sled.
    pub fn settle(&mut self) {
        self.applier.settle().expect("in-memory sled write");
    }

    /// Take the outputs sent to `topic` so far (by committed transactions).
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
    /// commit at once ([`Context::commit_soon`](crate::Context::commit_soon)).
    pub fn commits_requested(&self) -> &[i64] {
        &self.commits_requested
    }

    /// Dead letters of committed transactions.
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// A value as the processor's next step would read it: through the open transaction, the
    /// committed writes the applier holds, then sled.
    pub fn get<T: DeserializeOwned>(&self, store: &str, key: &str) -> Option<T> {
        let view = StoreView {
            stores: &self.stores,
            applying: self.applier.pending(),
            txn: &self.txn.writes,
            partition: 0,
        };
        decoded(
            view.get(store, key.as_bytes())
                .expect("in-memory sled read"),
        )
    }

    /// A value as sled holds it, without the writes of the open transaction or those the
    /// applier still holds.
    pub fn get_applied<T: DeserializeOwned>(&self, store: &str, key: &str) -> Option<T> {
        decoded(
            self.stores
                .get(store, 0, key.as_bytes())
                .expect("in-memory sled read"),
        )
    }
}

fn decoded<T: DeserializeOwned>(bytes: Option<Vec<u8>>) -> Option<T> {
    bytes.map(|v| serde_json::from_slice(&v).expect("stored value decodes"))
}
