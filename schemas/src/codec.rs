//! JSON encoding of topic values, with a typed error for what cannot be decoded.

use serde::{de::DeserializeOwned, Serialize};

/// Why a record's value could not be turned into its message type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    Missing,
    #[error("value is not valid JSON: {0}")]
    Syntax(String),
    #[error("value does not match the `{type_name}` schema: {message}")]
    Shape {
        type_name: &'static str,
        message: String,
    },
}

/// Decode a record value, telling malformed JSON apart from JSON of the wrong shape.
pub fn decode<T: DeserializeOwned>(bytes: Option<&[u8]>) -> Result<T, DecodeError> {
    let bytes = bytes.ok_or(DecodeError::Missing)?;
    // One pass, no intermediate `Value` (this is every processor's hot path); serde_json's error
    // category tells bad JSON from JSON of the wrong shape.
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::Shape {
            type_name: short_type_name::<T>(),
            message: e.to_string(),
        },
        _ => DecodeError::Syntax(e.to_string()),
    })
}

/// Encode a value as compact JSON. Our types always serialize, so this cannot fail.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("message types serialize to JSON")
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}
