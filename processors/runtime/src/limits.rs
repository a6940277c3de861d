//! The size guard: no value the runtime would send may approach the topic's maximum record size.
//!
//! A changelog or output record over the broker's limit (`message.max.bytes`, 1 MB by default)
//! fails its send, which fails the transaction's commit; the input is retried, fails again, and
//! the task can never commit: every entity on its partition stops with it. A processing step
//! whose store value or output is over the configured limit is therefore refused as a whole and
//! its input goes to the dead-letter topic with the reason, while processing goes on.

use std::collections::BTreeMap;

use crate::context::Output;
use crate::store::Layer;

/// Why a step's writes or outputs cannot be kept, if they cannot.
pub(crate) fn oversized(
    writes: &BTreeMap<String, Layer>,
    outputs: &[Output],
    limit: usize,
) -> Option<String> {
    for (store, layer) in writes {
        for (key, value) in layer {
            let size = key.len() + value.as_ref().map_or(0, Vec::len);
            if size > limit {
                return Some(format!(
                    "store {store}: the value of key {} would be {size} bytes, over the limit of {limit} (PICKPLE_MAX_VALUE_BYTES)",
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
    for out in outputs {
        let size = out.key.len() + out.value.as_ref().map_or(0, Vec::len);
        if size > limit {
            return Some(format!(
                "topic {}: the record for key {} would be {size} bytes, over the limit of {limit} (PICKPLE_MAX_VALUE_BYTES)",
                out.topic,
                out.key_str()
            ));
        }
    }
    None
}

/// The largest value per store in a step's writes.
pub(crate) fn largest_values(
    writes: &BTreeMap<String, Layer>,
) -> impl Iterator<Item = (&str, usize)> {
    writes.iter().map(|(store, layer)| {
        let largest = layer
            .values()
            .map(|v| v.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0);
        (store.as_str(), largest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_schemas::RecordHeaders;

    fn writes(store: &str, key: &str, len: usize) -> BTreeMap<String, Layer> {
        let mut layer = Layer::new();
        layer.insert(key.as_bytes().to_vec(), Some(vec![b'x'; len]));
        layer.insert(b"gone".to_vec(), None);
        BTreeMap::from([(store.to_string(), layer)])
    }

    #[test]
    fn a_value_or_output_over_the_limit_is_refused_with_its_place() {
        assert_eq!(oversized(&writes("products", "p1", 90), &[], 100), None);
        let reason = oversized(&writes("products", "p1", 120), &[], 100).unwrap();
        assert!(
            reason.contains("store products") && reason.contains("key p1"),
            "{reason}"
        );
        let out = Output {
            topic: "view-products".into(),
            key: b"p2".to_vec(),
            value: Some(vec![b'y'; 200]),
            headers: RecordHeaders::new("X", "c"),
        };
        let reason = oversized(&BTreeMap::new(), &[out], 100).unwrap();
        assert!(reason.contains("topic view-products") && reason.contains("key p2"));
    }

    #[test]
    fn the_largest_value_per_store_counts_deletes_as_nothing() {
        let w = writes("products", "p1", 70);
        assert_eq!(
            largest_values(&w).collect::<Vec<_>>(),
            vec![("products", 70)]
        );
    }
}
