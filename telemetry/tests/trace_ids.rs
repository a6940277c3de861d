//! Log lines inside a traced span carry its trace id, and with an exporter installed the span is
//! exported as the child of the incoming `traceparent` and hands its own id on. Span fields of
//! every kind reach the log lines as JSON.

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

#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Order {
    id: u32,
}

#[test]
fn span_fields_of_every_kind_reach_log_lines_as_json() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry().with(json_logs(logs.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer", app = "orders");
        let _outer = outer.enter();
        let span = tracing::info_span!(
            "record",
            topic = "order-commands",
            note = "a \"quoted\"\nline\twith \\ and \u{1}",
            partition = 3u32,
            offset = -1i64,
            ok = true,
            ratio = 0.5f64,
            nan = f64::NAN,
            shown = %"display",
            debugged = ?Order { id: 7 },
            later = tracing::field::Empty,
            again = tracing::field::Empty,
        );
        let _entered = span.enter();
        tracing::info!("before recording");
        span.record("later", "recorded");
        span.record("again", 2u64);
        span.record("partition", 4u32);
        tracing::info!("after recording");
        // A span whose fields are all recorded after it was created.
        let empty = tracing::info_span!("empty", trace_id = tracing::field::Empty);
        empty.record("trace_id", "abc");
        let _empty = empty.enter();
        tracing::info!("in an emptily created span");
    });
    let lines = logs.lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let before = &lines[0]["span"];
    assert_eq!(before["name"], "record");
    assert_eq!(before["topic"], "order-commands");
    assert_eq!(before["note"], "a \"quoted\"\nline\twith \\ and \u{1}");
    assert_eq!(before["partition"], 3);
    assert_eq!(before["offset"], -1);
    assert_eq!(before["ok"], true);
    assert_eq!(before["ratio"], 0.5);
    assert!(before["nan"].is_null(), "{before}");
    assert_eq!(before["shown"], "display");
    assert_eq!(before["debugged"], "Order { id: 7 }");
    assert!(before.get("later").is_none(), "{before}");
    assert!(
        before.get("app").is_none(),
        "only the current span: {before}"
    );

    let after = &lines[1]["span"];
    assert_eq!(after["later"], "recorded");
    assert_eq!(after["again"], 2);
    assert_eq!(
        after["partition"], 4,
        "a field recorded again keeps its last value"
    );
    assert_eq!(after["topic"], "order-commands");

    assert_eq!(lines[2]["span"]["trace_id"], "abc");
    assert_eq!(lines[2]["span"]["name"], "empty");
}
