//! What an application implements.

use pickple_schemas::{decode, RecordHeaders};
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::Millis;

/// Where a store entry belongs when the partition count grows (`pickple-grow`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'k> {
    /// The entry is state of the entity whose record key this is: it moves to the partition
    /// that key hashes to under the new count, as the entity's later input records do.
    Key(&'k [u8]),
    /// The entry belongs to its task, not to an entity (a sweep's cursor, a one-time
    /// upgrade's progress), or to input records already on its partition (the marker that a
    /// record's side effect happened, checked if the record is read again): it stays.
    Stay,
    /// Both: a copy goes to the entity key's partition and the entry stays where it is (a
    /// sent mail's marker, which the mail's later commands look up on the entity's partition
    /// and a replay of the records already on this partition checks here).
    Copy(&'k [u8]),
}

/// Names the [`Route`] of a key of a store: `(store, key) -> route`.
pub type Router = for<'k> fn(&str, &'k [u8]) -> Route<'k>;

/// The route of a store whose keys are the entity keys themselves (every key hashes to its own
/// partition): the default.
pub fn route_by_key<'k>(_store: &str, key: &'k [u8]) -> Route<'k> {
    Route::Key(key)
}

/// The static shape of an application.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Application id: the consumer group, the transactional.id prefix, and the prefix of its
    /// changelog (`<name>-<store>-changelog`) and dead-letter (`<name>-dlq`) topics.
    pub name: String,
    /// Input topics (logical names), all co-partitioned.
    pub inputs: Vec<String>,
    /// State stores, each changelogged.
    pub stores: Vec<String>,
    /// Which entity each store key belongs to, for growing the partitions. Every key a store
    /// holds on task `p` must route (by [`Route::Key`]) to `p` under the current count: the
    /// key of the input records that made it, never something else.
    pub route: Router,
}

impl AppSpec {
    pub fn new(name: &str, inputs: &[&str], stores: &[&str]) -> Self {
        AppSpec {
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            stores: stores.iter().map(|s| s.to_string()).collect(),
            route: route_by_key,
        }
    }

    /// The same application with keys routed by `route` instead of by themselves.
    pub fn with_route(mut self, route: Router) -> Self {
        self.route = route;
        self
    }

    pub fn changelog(&self, store: &str) -> String {
        pickple_schemas::topic::changelog(&self.name, store)
    }

    pub fn dlq(&self) -> String {
        pickple_schemas::topic::dead_letter(&self.name)
    }
}

/// One input record, as a processor sees it.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Logical topic name (without the deployment's prefix).
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: RecordHeaders,
    pub timestamp: Option<Millis>,
}

impl Record<'_> {
    /// Decode the value as `T`; a malformed value is [`ProcessError::Invalid`] (dead letter).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ProcessError> {
        decode(self.value).map_err(|e| ProcessError::Invalid(e.to_string()))
    }

    /// The key as UTF-8; a missing or non-UTF-8 key is invalid (every Pickple topic is keyed).
    pub fn key_str(&self) -> Result<&str, ProcessError> {
        let key = self
            .key
            .ok_or_else(|| ProcessError::Invalid("record has no key".into()))?;
        std::str::from_utf8(key).map_err(|_| ProcessError::Invalid("key is not UTF-8".into()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record can never be processed (undecodable, invalid): it goes to the dead-letter
    /// topic and processing continues. Nothing the processor wrote for it is kept.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// A transient failure (an SMTP server down...): nothing the processor wrote or sent for
    /// the record is kept, and the record is processed again after a back-off of its task
    /// (100 ms, doubling to 5 s while it keeps failing); the other tasks go on meanwhile.
    #[error("transient failure: {0}")]
    Retry(String),
}

/// A stream processor. One value per task (partition), made by the application's factory.
pub trait Processor: Send + 'static {
    /// Handle one input record. Reads and writes go through `ctx`; outputs are sent with
    /// `ctx.send`. Everything joins the current transaction.
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError>;

    /// Wall-clock timer, called every punctuate interval for each task.
    fn punctuate(&mut self, _ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        Ok(())
    }
}
