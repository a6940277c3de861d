//! The topic catalogue (what exists, keyed how, partitioned how, kept how long) and the admin
//! operations that make a broker match it.

pub mod admin;
pub mod catalogue;

pub use admin::{apply, check, Drift};
pub use catalogue::{catalogue, Cleanup, TopicSpec, APPS, PARTITIONS};
