//! Log lines inside a traced span carry its trace id, and with an exporter installed the span is
//! exported as the child of the incoming `traceparent` and hands its own id on.

use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use pickple_telemetry::{continue_from, continue_trace, json_logs, TraceParent};
use serde_json::Value;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Log one line inside a span continuing `parent`; return the handed-on traceparent.
fn traced_work(parent: Option<&TraceParent>) -> TraceParent {
    let span = tracing::info_span!("record", trace_id = tracing::field::Empty);
    let next = continue_trace(&span, parent);
    let _entered = span.enter();
    tracing::info!("processing");
    next
}

#[test]
fn log_lines_carry_the_trace_id_without_an_exporter() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry().with(json_logs(logs.clone()));
    let parent = TraceParent::parse(PARENT).unwrap();
    let (next, root) = tracing::subscriber::with_default(subscriber, || {
        tracing::info!("outside any span");
        (traced_work(Some(&parent)), traced_work(None))
    });
    assert_eq!(next.trace_id, parent.trace_id);
    assert_ne!(next.span_id, parent.span_id);
    assert_ne!(root.trace_id, parent.trace_id);

    let lines = logs.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].get("span").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["span"]["trace_id"], parent.trace_id.as_str());
    assert_eq!(lines[1]["fields"]["message"], "processing");
    assert_eq!(lines[2]["span"]["trace_id"], root.trace_id.as_str());
}

#[test]
fn exported_spans_chain_under_the_incoming_traceparent() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(json_logs(logs.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let parent = TraceParent::parse(PARENT).unwrap();
    let (next, root) = tracing::subscriber::with_default(subscriber, || {
        (traced_work(Some(&parent)), traced_work(None))
    });
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 2);
    let child = &spans[0];
    assert_eq!(child.span_context.trace_id().to_string(), parent.trace_id);
    assert_eq!(child.parent_span_id.to_string(), parent.span_id);
    // The handed-on traceparent names the exported span, so the next hop hangs under it.
    assert_eq!(child.span_context.span_id().to_string(), next.span_id);
    assert_eq!(next.trace_id, parent.trace_id);
    assert_eq!(next.flags, "01");
    assert_eq!(spans[1].span_context.trace_id().to_string(), root.trace_id);
    assert_eq!(spans[1].span_context.span_id().to_string(), root.span_id);

    let lines = logs.lines();
    assert_eq!(lines[0]["span"]["trace_id"], parent.trace_id.as_str());
    assert_eq!(lines[1]["span"]["trace_id"], root.trace_id.as_str());
}

/// The stream runtime's way: the span declares its parent's trace id at creation.
fn declared_work(parent: &TraceParent) -> TraceParent {
    let span = tracing::info_span!("record", trace_id = %parent.trace_id);
    let next = continue_from(&span, parent);
    let _entered = span.enter();
    tracing::info!("processing");
    next
}

#[test]
fn a_span_declaring_its_parents_trace_id_continues_it_in_logs_and_exports() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let (logs, exported_logs) = (Captured::default(), Captured::default());
    let parent = TraceParent::parse(PARENT).unwrap();
    let plain = tracing_subscriber::registry().with(json_logs(logs.clone()));
    let without = tracing::subscriber::with_default(plain, || declared_work(&parent));
    let exporting = tracing_subscriber::registry()
        .with(json_logs(exported_logs.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let with = tracing::subscriber::with_default(exporting, || declared_work(&parent));
    provider.force_flush().unwrap();

    for (next, logs) in [(&without, &logs), (&with, &exported_logs)] {
        assert_eq!(next.trace_id, parent.trace_id);
        assert_ne!(next.span_id, parent.span_id);
        let lines = logs.lines();
        assert_eq!(lines[0]["span"]["trace_id"], parent.trace_id.as_str());
    }
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].span_context.trace_id().to_string(),
        parent.trace_id
    );
    assert_eq!(spans[0].parent_span_id.to_string(), parent.span_id);
    assert_eq!(spans[0].span_context.span_id().to_string(), with.span_id);
}
