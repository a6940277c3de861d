//! The topic catalogue (what exists, keyed how, partitioned how, kept how long), the admin
//! operations that make a broker match it, and the deletion of topics no longer wanted (a
//! test's private topics).

pub mod admin;
pub mod catalogue;

pub use admin::{
    apply, check, delete, delete_prefixed, deployed_partitions, grow, partition_counts,
    wait_visible, DeleteOnDrop, Drift, Grown, Replication,
};
pub use catalogue::{catalogue, catalogue_with, Cleanup, TopicSpec, APPS, PARTITIONS};
