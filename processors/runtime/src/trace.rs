//! Records that carry a `traceparent` are processed inside a `record` span continuing it: log
//! lines written while processing them carry the trace id, the span is exported when OTLP export
//! is on, and the records they cause carry the span's own `traceparent` onwards.

use pickple_schemas::RecordHeaders;
use pickple_telemetry::{continue_trace, TraceParent};
use tracing::Span;

/// The span to process a record in, and the headers its outputs derive from (the record's, with
/// the span's own `traceparent`); `None` for an untraced record, which costs nothing here.
pub(crate) fn record_span(
    headers: &RecordHeaders,
    app: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<(Span, RecordHeaders)> {
    if headers.traceparent.is_empty() {
        return None;
    }
    let parent = TraceParent::parse(&headers.traceparent)?;
    let span = tracing::info_span!(
        "record",
        trace_id = tracing::field::Empty,
        app,
        topic,
        partition,
        offset
    );
    let mut onward = headers.clone();
    onward.traceparent = continue_trace(&span, Some(&parent)).to_string();
    Some((span, onward))
}
