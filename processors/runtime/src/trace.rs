//! Records that carry a `traceparent` are processed inside a `record` span continuing it: log
//! lines written while processing them carry the trace id, the span is exported when OTLP export
//! is on, and the records they cause carry the span's own `traceparent` onwards.

use pickple_schemas::RecordHeaders;
use pickple_telemetry::{continue_trace, TraceParent};
use tracing::Span;

/// The span to process a record in, or `None` for an untraced record (no cost on that path).
/// Rewrites `headers.traceparent` to the span's own, which the outputs inherit.
pub(crate) fn record_span(
    headers: &mut RecordHeaders,
    app: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Option<Span> {
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
    headers.traceparent = continue_trace(&span, Some(&parent)).to_string();
    Some(span)
}
