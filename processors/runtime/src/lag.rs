//! Consumer lag from positions, not from librdkafka's `consumer_lag` statistic.
//!
//! librdkafka computes `consumer_lag` against the committed offset it knows itself, which offsets
//! committed through `send_offsets_to_transaction` never update: under exactly-once it counts
//! every record processed since the partition was assigned. The lag here is the partition's end
//! offset as the broker last reported it in a fetch response (the last stable offset, as inputs
//! are read `read_committed`) minus the consumer's position (the offset after the last record
//! handed to the application, or the committed offset fetched at assignment before any).
//!
//! A partition whose last offset is a transaction's commit marker shows a lag of 1 when idle:
//! markers are never handed to the application, so its position stops before them. Kafka's own
//! `kafka-consumer-groups --describe` shows the same 1 against the committed offsets.

/// Records between a consumer's position and the end of a partition; `None` while either is
/// unknown (no fetch response yet, no position and no committed offset).
pub fn lag(end: i64, app_position: i64, committed: i64) -> Option<i64> {
    if end < 0 {
        return None;
    }
    let position = if app_position >= 0 {
        app_position
    } else if committed >= 0 {
        committed
    } else {
        return None;
    };
    Some((end - position).max(0))
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    fn lag_is_end_minus_position_and_ignores_what_librdkafka_thinks_is_committed() {
        // Processed up to 1,000 of 1,001 (a trailing marker); the committed offset librdkafka
        // knows is the one from the assignment, long ago.
        assert_eq!(lag(1_001, 1_000, 3), Some(1));
        assert_eq!(lag(5_000, 1_000, 3), Some(4_000));
    }

    #[test]
    fn before_the_first_record_the_committed_offset_is_the_position() {
        assert_eq!(lag(120, -1001, 100), Some(20));
    }

    #[test]
    fn unknown_ends_or_positions_report_nothing_and_lag_is_never_negative() {
        assert_eq!(lag(-1, 10, 10), None);
        assert_eq!(lag(10, -1001, -1001), None);
        // A fetch response older than the position just reached.
        assert_eq!(lag(10, 12, 0), Some(0));
    }
}
