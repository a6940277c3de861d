//! One module per bounded context. Commands are what someone asks for, events what happened,
//! replies what another processor answers to the saga, views what the gateway serves.

pub mod delivery;
pub mod notification;
pub mod order;
pub mod payment;
pub mod stock;
pub mod user;
pub mod vendor;

pub use delivery::*;
pub use notification::*;
pub use order::*;
pub use payment::*;
pub use stock::*;
pub use user::*;
pub use vendor::*;

/// Milliseconds since the Unix epoch (UTC). Plain integers keep values compact and portable.
pub type Millis = i64;
/// An amount of money in the shop's minor unit (e.g. won or cents).
pub type Amount = i64;

/// Variant name of a tagged message, used for the `event-type` header.
pub trait MessageType {
    fn message_type(&self) -> &'static str;
}

/// Implements [`MessageType`] for a `#[serde(tag = "type")]` enum of struct variants.
#[macro_export]
macro_rules! message_type {
    ($ty:ident { $($variant:ident),* $(,)? }) => {
        impl $crate::messages::MessageType for $ty {
            fn message_type(&self) -> &'static str {
                match self { $($ty::$variant { .. } => stringify!($variant),)* }
            }
        }
    };
}
