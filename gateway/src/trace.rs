//! W3C trace context: every request runs in a `request` span that continues the caller's
//! `traceparent` (or starts a trace), so its log lines carry the trace id and, with OTLP export
//! on, it is exported. The span's own `traceparent` goes into the request's extensions for the
//! Kafka headers and is echoed on the response.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use pickple_telemetry::continue_trace;
use tracing::Instrument;

pub use pickple_telemetry::TraceParent;

pub const TRACEPARENT: &str = "traceparent";

/// Middleware: trace the request, log it once it is answered, echo the `traceparent`.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let span = tracing::info_span!(
        "request",
        trace_id = tracing::field::Empty,
        method = %req.method(),
        path = req.uri().path(),
    );
    let trace = continue_trace(&span, incoming.as_ref());
    let header = HeaderValue::from_str(&trace.to_string()).ok();
    req.extensions_mut().insert(trace);
    let start = Instant::now();
    let mut res = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            elapsed_ms = start.elapsed().as_secs_f64() * 1e3,
            "answered"
        )
    });
    if let Some(h) = header {
        res.headers_mut().insert(TRACEPARENT, h);
    }
    res
}
