//! Pickple's domain rules, free of I/O: no Kafka, no store, no clock, no randomness.
//!
//! Every entity is an [`Aggregate`]: `decide(state, input)` gives facts (or a [`Rejection`]),
//! `apply` folds each fact into the state, `effects` derives the records a fact calls for, and
//! [`Aggregate::handle`] chains them. The app layer stores the state that comes out (the stores
//! hold each entity's latest state, changelogged to a compacted topic; facts are not
//! persisted) and sends the effects. Because `decide` never mutates, `apply` never refuses and
//! effects come from facts alone, an input that changes nothing stores and sends nothing.
//!
//! Time comes in as `now: Millis`, so tests and the runtime's test driver control the clock.

pub mod aggregate;
pub mod delivery;
pub mod email;
pub mod order;
pub mod payment;
pub mod rejection;
pub mod rules;
pub mod shipping;
pub mod stock;
pub mod user;
pub mod vendor;

pub use aggregate::{Aggregate, Outcome};
pub use pickple_schemas::{Amount, Millis};
pub use rejection::Rejection;

/// What a view needs beyond the aggregate's state. The app layer owns these: the version must
/// grow with every view it publishes (rejections included, which leave the state unchanged), so
/// the views sink can drop an older view that arrives late.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewMeta {
    pub version: u64,
    pub updated_at: Millis,
    /// `to_string()` of the last rejection, if the last command was refused.
    pub rejection: Option<String>,
}

/// `u64` quantities meet `i64` money and counters; saturate instead of wrapping because a
/// clamped total is a visible error while a wrapped one is a silent negative price.
pub(crate) fn qty_i64(q: u64) -> i64 {
    i64::try_from(q).unwrap_or(i64::MAX)
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
