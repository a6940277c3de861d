//! Logs and traces of every Pickple process.
//!
//! - **Logs** are JSON lines on stderr (`tracing`). A line written inside a traced span (an HTTP
//!   request, a Kafka record that carries a `traceparent`) has the trace id in `span.trace_id`,
//!   so `jq 'select(.span.trace_id == "…")'` follows one order across the gateway and every
//!   processor.
//! - **Traces** follow the W3C `traceparent` from the HTTP request through every record header
//!   to the e-mail. Export is optional: set `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and the spans go over OTLP/HTTP to a collector,
//!   Jaeger or Tempo; `OTEL_EXPORTER_OTLP_PROTOCOL` picks `http/protobuf` (default) or
//!   `http/json`. `OTEL_SERVICE_NAME` overrides the service name.

mod span;
mod span_fields;
mod traceparent;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use span::{continue_from, continue_trace};
pub use span_fields::JsonSpanFields;
pub use traceparent::TraceParent;

/// The JSON log layer every process uses, writing to `writer`: one object per line, with the
/// fields of the current span (and so its `trace_id`) under `span`, written by
/// [`JsonSpanFields`].
pub fn json_logs<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(JsonSpanFields)
        .with_writer(writer)
}

/// Keeps the exporter alive; dropping it flushes the spans still buffered. Drop it outside any
/// async runtime (the export client blocks).
#[must_use = "dropping the guard stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the trace export failed");
            }
        }
    }
}

fn export_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.is_empty()))
}

fn tracer_provider(
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| service.to_string());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// Install the process-wide subscriber: `RUST_LOG` (or `default_filter`) chooses what is
/// logged; JSON lines go to stderr; spans are exported when an OTLP endpoint is configured.
pub fn init(service: &str, default_filter: &str) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (provider, export_error) = if export_configured() {
        match tracer_provider(service) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    // Only Pickple's own spans are exported: the HTTP client that ships them must not trace
    // itself into a feedback loop when RUST_LOG turns on debug everywhere.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("pickple"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target().starts_with("pickple")
            }))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json_logs(std::io::stderr))
        .with(otel)
        .init();
    match (&provider, export_error) {
        (Some(_), _) => tracing::info!(service, "exporting traces over OTLP"),
        (None, Some(e)) => tracing::warn!(error = %e, "trace export disabled"),
        (None, None) => {}
    }
    Telemetry { provider }
}
