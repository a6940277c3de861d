//! The messages Pickple's gateway and processors exchange over Kafka.
//!
//! Every topic carries JSON values (readable with `rpk topic consume` or `kcat`) of one root type
//! listed in [`catalogue::topic_values`], with the same [`headers::RecordHeaders`] on every record
//! (changelog topics excepted: they hold the processors' internal state, without headers).
//! `cargo run -p pickple-schemas --bin gen-schemas` writes one JSON Schema per topic into
//! `schemas/json/`; a test fails when the committed files drift from the types.

pub mod catalogue;
pub mod codec;
pub mod headers;
pub mod messages;
pub mod topic;

pub use codec::{decode, encode, DecodeError};
pub use headers::RecordHeaders;
pub use messages::*;

/// Version of the value format carried in the `schema-version` header. Bump on a breaking change.
pub const SCHEMA_VERSION: u32 = 1;
