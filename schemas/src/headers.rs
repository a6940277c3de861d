//! Headers carried by every record the gateway and the processors send (not by changelog records,
//! which hold a store's internal state): what it is, which schema version, why it exists and the
//! trace. Dead letters keep the original headers and add their own `dlq-*` ones.

/// Header names, shared with any Kafka tool (`kcat -f '%h'`, `rpk topic consume`).
pub const EVENT_TYPE: &str = "event-type";
pub const SCHEMA_VERSION: &str = "schema-version";
pub const COMMAND_ID: &str = "command-id";
pub const CAUSATION_ID: &str = "causation-id";
pub const TRACEPARENT: &str = "traceparent";

/// The standard headers of a record, independent of any Kafka client type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordHeaders {
    /// The message variant, e.g. `OrderPlaced`.
    pub event_type: String,
    pub schema_version: u32,
    /// Id of the command at the root of this chain (the HTTP request's command id).
    pub command_id: String,
    /// Id of the record that directly caused this one.
    pub causation_id: String,
    /// W3C trace context, propagated from the HTTP request to the e-mail.
    pub traceparent: String,
}

impl RecordHeaders {
    pub fn new(event_type: impl Into<String>, command_id: impl Into<String>) -> Self {
        let command_id = command_id.into();
        Self {
            event_type: event_type.into(),
            schema_version: crate::SCHEMA_VERSION,
            causation_id: command_id.clone(),
            command_id,
            traceparent: String::new(),
        }
    }

    /// Headers of a record caused by `self` (same command and trace, new type and causation).
    pub fn caused(&self, event_type: impl Into<String>, causation_id: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            schema_version: crate::SCHEMA_VERSION,
            command_id: self.command_id.clone(),
            causation_id: causation_id.into(),
            traceparent: self.traceparent.clone(),
        }
    }

    /// Fold over the standard headers as (name, value) pairs, in a fixed order, without
    /// allocating them: producers call this once per record.
    pub fn fold_pairs<B>(&self, init: B, mut f: impl FnMut(B, &'static str, &[u8]) -> B) -> B {
        let mut version = itoa::Buffer::new();
        let acc = f(init, EVENT_TYPE, self.event_type.as_bytes());
        let acc = f(
            acc,
            SCHEMA_VERSION,
            version.format(self.schema_version).as_bytes(),
        );
        let acc = f(acc, COMMAND_ID, self.command_id.as_bytes());
        let acc = f(acc, CAUSATION_ID, self.causation_id.as_bytes());
        f(acc, TRACEPARENT, self.traceparent.as_bytes())
    }

    /// The headers as rdkafka headers, in the order of [`Self::fold_pairs`].
    #[cfg(feature = "kafka")]
    pub fn to_kafka(&self) -> rdkafka::message::OwnedHeaders {
        self.fold_pairs(
            rdkafka::message::OwnedHeaders::new(),
            |owned, key, value| {
                owned.insert(rdkafka::message::Header {
                    key,
                    value: Some(value),
                })
            },
        )
    }

    /// Read the standard headers from (name, value) pairs; unknown names are ignored, missing
    /// ones stay empty so a record from a foreign producer still decodes.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Self {
        let mut h = RecordHeaders::default();
        for (name, value) in pairs {
            let text = value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            match name {
                EVENT_TYPE => h.event_type = text,
                SCHEMA_VERSION => h.schema_version = text.parse().unwrap_or(0),
                COMMAND_ID => h.command_id = text,
                CAUSATION_ID => h.causation_id = text,
                TRACEPARENT => h.traceparent = text,
                _ => {}
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_caused_keeps_the_chain() {
        let mut h = RecordHeaders::new("PlaceOrder", "cmd-1");
        h.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        let pairs = h.fold_pairs(Vec::new(), |mut pairs, name, value| {
            pairs.push((name, value.to_vec()));
            pairs
        });
        let back = RecordHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, Some(v.as_slice()))));
        assert_eq!(back, h);
        let child = h.caused("OrderPlaced", "evt-9");
        assert_eq!(child.command_id, "cmd-1");
        assert_eq!(child.causation_id, "evt-9");
        assert_eq!(child.traceparent, h.traceparent);
        assert_eq!(child.event_type, "OrderPlaced");
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_headers_read_back_as_the_same_headers() {
        use rdkafka::message::Headers;
        let mut h = RecordHeaders::new("PlaceOrder", "cmd-1");
        h.causation_id = "order-commands/2/17".into();
        h.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        let kafka = h.to_kafka();
        let names: Vec<&str> = kafka.iter().map(|header| header.key).collect();
        assert_eq!(
            names,
            [
                EVENT_TYPE,
                SCHEMA_VERSION,
                COMMAND_ID,
                CAUSATION_ID,
                TRACEPARENT
            ]
        );
        let back = RecordHeaders::from_pairs(kafka.iter().map(|header| (header.key, header.value)));
        assert_eq!(back, h);
    }
}
