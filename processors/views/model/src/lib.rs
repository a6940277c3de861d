//! The view model: what the views sink writes into Redis and the gateway reads back.
//!
//! * [`View`]: the typed view of each `view-*` topic ([`Kind`]), with its version, its index
//!   memberships, its status and its refusal;
//! * [`Keys`]: the Redis key layout;
//! * [`upsert`]: the version-guarded write that keeps the indexes and publishes change notices;
//! * [`RedisConfig`]: where Redis is (URL or Sentinels);
//! * [`ready`]: the sink's heartbeat and the rule that says whether the views can be served.
//!
//! It links neither a Kafka consumer nor a state store: the gateway depends on this crate and
//! not on the sink.

pub mod backfill;
pub mod keys;
pub mod ready;
pub mod redis_config;
pub mod upsert;
pub mod view;

pub use keys::{Keys, Kind};
pub use redis_config::RedisConfig;
pub use upsert::{apply_upsert, upsert_for, Upsert, UPSERT_LUA};
pub use view::{decode, search_entry, search_entry_username, View, ViewError};
