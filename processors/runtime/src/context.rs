//! What a processor sees while it handles one record or one punctuation: its task's stores, the
//! clock, and a way to send records. Writes and outputs are held here until the record succeeds,
//! so a record that fails leaves nothing behind.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use pickple_schemas::messages::MessageType;
use pickple_schemas::RecordHeaders;
use serde::{de::DeserializeOwned, Serialize};

use crate::processor::ProcessError;
use crate::store::{layer, merge_range, Entries, Layer, StateStores, StoreError, Writes};
use crate::{now_millis, Millis};

/// A record to produce. `topic` is logical (the runtime adds the deployment prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub headers: RecordHeaders,
}

impl Output {
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(&self.key).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        self.value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Read access to the stores of one task, in three layers: the open transaction's writes, then
/// the committed writes still on their way to sled, then sled.
pub struct StoreView<'a> {
    pub(crate) stores: &'a StateStores,
    pub(crate) applying: Option<&'a Writes>,
    pub(crate) txn: &'a Writes,
    pub(crate) partition: i32,
}

impl StoreView<'_> {
    /// A key's value through the three layers (`None`: absent or deleted).
    pub(crate) fn get(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for writes in [Some(self.txn), self.applying].into_iter().flatten() {
            if let Some(v) = layer(writes, store, self.partition).and_then(|w| w.get(key)) {
                return Ok(v.clone());
            }
        }
        self.stores.get(store, self.partition, key)
    }

    /// Entries with `from <= key < to` through the three layers and then `own`, in key order.
    pub(crate) fn range(
        &self,
        store: &str,
        from: &[u8],
        to: &[u8],
        own: Option<&Layer>,
    ) -> Result<Entries, StoreError> {
        let base = self.stores.range(store, self.partition, from, to)?;
        let layers: Vec<&Layer> = [
            self.applying.and_then(|w| layer(w, store, self.partition)),
            layer(self.txn, store, self.partition),
            own,
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(merge_range(base, &layers, from, to))
    }
}

/// What caused the records sent from a context: their causation id. Formatted only when a
/// record is sent, as most inputs of most processors send nothing.
pub(crate) enum Cause<'a> {
    Record {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    Named(String),
}

impl Cause<'_> {
    /// The causation id: `topic/partition/offset` for a record, else the name. Built without
    /// `fmt`, as it is built for every record sent.
    fn id(&self) -> String {
        match self {
            Cause::Record {
                topic,
                partition,
                offset,
            } => {
                let (mut p, mut o) = (itoa::Buffer::new(), itoa::Buffer::new());
                let (p, o) = (p.format(*partition), o.format(*offset));
                let mut id = String::with_capacity(topic.len() + p.len() + o.len() + 2);
                for part in [*topic, "/", p, "/", o] {
                    id.push_str(part);
                }
                id
            }
            Cause::Named(name) => name.clone(),
        }
    }
}

pub struct Context<'a> {
    view: StoreView<'a>,
    /// Read from the wall clock on first use: most records never ask.
    now: OnceCell<Millis>,
    /// Headers of the input record (or of a punctuation), parent of everything sent.
    parent: &'a RecordHeaders,
    cause: Cause<'a>,
    pub(crate) writes: BTreeMap<String, Layer>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) commit_requested: bool,
}

impl<'a> Context<'a> {
    /// `now: None` reads the wall clock when the processor first asks.
    pub(crate) fn new(
        view: StoreView<'a>,
        now: Option<Millis>,
        parent: &'a RecordHeaders,
        cause: Cause<'a>,
    ) -> Self {
        Context {
            view,
            now: now.map(OnceCell::from).unwrap_or_default(),
            parent,
            cause,
            writes: BTreeMap::new(),
            outputs: Vec::new(),
            commit_requested: false,
        }
    }

    /// Wall-clock time of this processing step (the test driver's clock in tests).
    pub fn now(&self) -> Millis {
        *self.now.get_or_init(now_millis)
    }

    pub fn partition(&self) -> i32 {
        self.view.partition
    }

    /// Commit the transaction right after this step instead of at the next interval. For a step
    /// with a side effect outside Kafka (an e-mail sent): its marker in the store becomes
    /// durable at once, so a crash can repeat at most the effect still in flight.
    pub fn commit_soon(&mut self) {
        self.commit_requested = true;
    }

    /// Whether this step asked for [`commit_soon`](Self::commit_soon).
    pub fn commit_requested(&self) -> bool {
        self.commit_requested
    }

    /// Headers of the record being processed.
    pub fn headers(&self) -> &RecordHeaders {
        self.parent
    }

    /// This step's writes and outputs, and whether it asked for a commit at once.
    pub(crate) fn into_effects(self) -> (BTreeMap<String, Layer>, Vec<Output>, bool) {
        (self.writes, self.outputs, self.commit_requested)
    }

    fn raw_get(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        if let Some(v) = self.writes.get(store).and_then(|w| w.get(key)) {
            return Ok(v.clone());
        }
        self.view
            .get(store, key)
            .map_err(|e| ProcessError::Retry(e.to_string()))
    }

    /// Read a value of a store.
    pub fn get<T: DeserializeOwned>(
        &self,
        store: &str,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, ProcessError> {
        match self.raw_get(store, key.as_ref())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                ProcessError::Invalid(format!("store {store} holds an unreadable value: {e}"))
            }),
        }
    }

    /// Write a value; it reaches the changelog and sled only when the transaction commits.
    pub fn put<T: Serialize>(&mut self, store: &str, key: impl AsRef<[u8]>, value: &T) {
        let bytes = serde_json::to_vec(value).expect("state serializes");
        self.own_layer(store)
            .insert(key.as_ref().to_vec(), Some(bytes));
    }

    pub fn delete(&mut self, store: &str, key: impl AsRef<[u8]>) {
        self.own_layer(store).insert(key.as_ref().to_vec(), None);
    }

    /// This step's writes to `store`; the name is copied only by the first write to it.
    fn own_layer(&mut self, store: &str) -> &mut Layer {
        if !self.writes.contains_key(store) {
            self.writes.insert(store.to_string(), Layer::new());
        }
        self.writes.get_mut(store).expect("inserted above")
    }

    /// Entries with `from <= key < to` in key order (e.g. a timer index keyed by due time).
    pub fn range<T: DeserializeOwned>(
        &self,
        store: &str,
        from: impl AsRef<[u8]>,
        to: impl AsRef<[u8]>,
    ) -> Result<Vec<(Vec<u8>, T)>, ProcessError> {
        let (from, to) = (from.as_ref(), to.as_ref());
        self.view
            .range(store, from, to, self.writes.get(store))
            .map_err(|e| ProcessError::Retry(e.to_string()))?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map(|t| (k, t)).map_err(|e| {
                    ProcessError::Invalid(format!("store {store} holds an unreadable value: {e}"))
                })
            })
            .collect()
    }

    /// Send a message keyed by `key`, with headers derived from the input record's.
    pub fn send<M: Serialize + MessageType>(&mut self, topic: &str, key: &str, message: &M) {
        let headers = self.parent.caused(message.message_type(), self.cause.id());
        self.send_raw(
            topic,
            key.as_bytes(),
            Some(pickple_schemas::encode(message)),
            headers,
        );
    }

    /// Send a JSON value that is not a tagged message (a view), with the given event type.
    pub fn send_value<T: Serialize>(
        &mut self,
        topic: &str,
        key: &str,
        event_type: &str,
        value: &T,
    ) {
        let headers = self.parent.caused(event_type, self.cause.id());
        self.send_raw(
            topic,
            key.as_bytes(),
            Some(pickple_schemas::encode(value)),
            headers,
        );
    }

    pub fn send_raw(
        &mut self,
        topic: &str,
        key: &[u8],
        value: Option<Vec<u8>>,
        headers: RecordHeaders,
    ) {
        self.outputs.push(Output {
            topic: topic.to_string(),
            key: key.to_vec(),
            value,
            headers,
        });
    }
}
