//! Pickple's domain rules, free of I/O: no Kafka, no store, no clock, no randomness.
//!
//! Every aggregate follows the same shape. The app layer loads the state stored under the
//! record's key, calls `decide(state, input, now, ..)` to get facts (or a [`Rejection`]), folds
//! them with `apply`, stores the new state and turns the facts' effects into records. Because
//! `decide` never mutates and `apply` never refuses, replaying the stored facts (or a changelog)
//! always rebuilds the same state.
//!
//! Time comes in as `now: Millis`, so tests and the runtime's test driver control the clock.

pub mod delivery;
pub mod order;
pub mod payment;
pub mod rejection;
pub mod stock;
pub mod user;
pub mod vendor;

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

/// The state, the facts and the side effects of one handled input, for app layers that want
/// decide, apply and effects in one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<S, F, E> {
    pub state: S,
    pub facts: Vec<F>,
    pub effects: Vec<E>,
}

/// `u64` quantities meet `i64` money and counters; saturate instead of wrapping because a
/// clamped total is a visible error while a wrapped one is a silent negative price.
pub(crate) fn qty_i64(q: u64) -> i64 {
    i64::try_from(q).unwrap_or(i64::MAX)
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
