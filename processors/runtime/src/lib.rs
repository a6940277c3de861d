//! Pickple's stream runtime: Kafka Streams semantics in a small Rust library.
//!
//! An application is a [`Processor`] plus an [`AppSpec`] (its name, input topics and state
//! stores). [`run`] turns it into a consumer-group member that:
//!
//! * runs one **task per partition number** over co-partitioned inputs (partition `p` of every
//!   input topic belongs to the same task, so one task owns an entity's whole history);
//! * processes **exactly once**: outputs, changelog records and input offsets go out in one Kafka
//!   transaction, committed every `commit_interval` or `commit_records`;
//! * keeps state in **sled**, one tree per (store, partition); writes are buffered during a
//!   transaction and applied to disk, with the changelog checkpoint, only after it commits;
//! * restores each task's stores from `<app>-<store>-changelog` before processing it, off the
//!   poll loop, while the other tasks go on;
//! * fires wall-clock **punctuators** whose effects join the transaction;
//! * sends records it cannot decode or validate to `<app>-dlq` with the reason in headers, and
//!   backs off per task from a record that failed transiently, while the other tasks go on.
//!
//! [`TestDriver`] runs the same processor in-process without a broker, through the same write
//! buffer, applier and sled layers.
//!
//! Where each job lives, as in Kafka Streams:
//!
//! * `runner`: the poll loop (`run`): consumer, broker trouble, health; `rebalance`: the
//!   consumer's callbacks;
//! * `engine`: the transaction cycle: process, punctuate, commit or abort, recover;
//! * `producer`: the transactional producer (`StreamsProducer`) and what its errors mean;
//! * `collector`: the record collector: outputs, changelog records, dead letters, and their
//!   generation-tagged delivery reports;
//! * `task_manager`: assignment and revocation, parked processors, restores, back-offs;
//! * `task`: one task: its processor, lifecycle (restoring or running) and retry back-off;
//! * `restore`: restore jobs off the poll loop; `standby`: standby replicas and their
//!   placement; `applier`: committed writes into sled;
//!   `store`: sled and the write layers; `context`: what a processor sees.

mod applier;
mod collector;
mod config;
mod context;
mod driver;
mod engine;
pub mod grow;
mod health;
pub mod lag;
mod limits;
mod metrics;
mod partitioner;
mod processor;
mod producer;
mod rebalance;
pub mod reference;
mod restore;
mod runner;
pub mod standby;
mod store;
mod task;
mod task_manager;
mod trace;

pub use config::{RuntimeConfig, FETCH_QUEUE_BACKOFF_MS, INPUT_FETCH};
pub use context::{Context, Output, StoreView};
pub use driver::TestDriver;
pub use metrics::{serve_metrics, Metrics};
pub use partitioner::{murmur2, partition_for};
pub use processor::{route_by_key, AppSpec, ProcessError, Processor, Record, Route, Router};
pub use runner::{run, run_until, RuntimeError};
pub use store::StateStores;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Wall-clock now in milliseconds.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
