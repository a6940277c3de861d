//! Records that carry a `traceparent` are processed inside a `record` span continuing it: log
//! lines written while processing them carry the trace id, the span is exported when OTLP export
//! is on, and the records they cause carry the span's own `traceparent` onwards. A punctuation
//! that sends records (a payment deadline passing, a reminder falling due) starts a trace of its
//! own, as nothing upstream caused it.

use pickple_schemas::RecordHeaders;
use pickple_telemetry::{continue_from, continue_trace, TraceParent};
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
        trace_id = %parent.trace_id,
        app,
        topic,
        partition,
        offset
    );
    let mut onward = headers.clone();
    onward.traceparent = continue_from(&span, &parent).to_string();
    Some((span, onward))
}

/// A `punctuate` span starting a new trace for what one punctuation sent, and every untraced
/// output stamped with it; `None` when the punctuation sent nothing, so idle punctuations (one
/// per task per interval) neither allocate nor export anything. An output the processor gave a
/// `traceparent` of its own (a trace it kept in its state) keeps it.
pub(crate) fn punctuation_span(
    app: &str,
    partition: i32,
    outputs: &mut [crate::Output],
) -> Option<Span> {
    if outputs.is_empty() {
        return None;
    }
    let span = tracing::info_span!(
        "punctuate",
        trace_id = tracing::field::Empty,
        app,
        partition,
        records = outputs.len()
    );
    let traceparent = continue_trace(&span, None).to_string();
    for out in outputs.iter_mut() {
        if out.headers.traceparent.is_empty() {
            out.headers.traceparent.clone_from(&traceparent);
        }
    }
    Some(span)
}
