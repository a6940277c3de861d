//! W3C trace context: `traceparent` taken from the request (or generated), kept in the request's
//! extensions for the Kafka headers, and echoed on the response.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const TRACEPARENT: &str = "traceparent";

/// The trace of one request: the caller's trace id and a span id of our own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        out.push_str(&format!("{:02x}", rand::random::<u8>()));
    }
    out
}

impl TraceContext {
    /// Parse a `traceparent` (version 00 format; later versions are read by their first four
    /// fields), or `None` if it is malformed or all-zero.
    pub fn parse(value: &str) -> Option<(String, String, String)> {
        let mut parts = value.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !is_hex(trace, 32) || !is_hex(parent, 16) || !is_hex(flags, 2) {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
            return None;
        }
        Some((trace.into(), parent.into(), flags.into()))
    }

    /// Continue the caller's trace with a new span, or start a new sampled trace.
    pub fn from_header(value: Option<&str>) -> TraceContext {
        match value.and_then(Self::parse) {
            Some((trace_id, _, flags)) => TraceContext {
                trace_id,
                span_id: random_hex(8),
                flags,
            },
            None => TraceContext {
                trace_id: random_hex(16),
                span_id: random_hex(8),
                flags: "01".into(),
            },
        }
    }

    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

/// Middleware: attach a [`TraceContext`] to the request and echo it on the response.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let incoming = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let trace = TraceContext::from_header(incoming);
    let header = HeaderValue::from_str(&trace.traceparent()).ok();
    req.extensions_mut().insert(trace);
    let mut res = next.run(req).await;
    if let Some(h) = header {
        res.headers_mut().insert(TRACEPARENT, h);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_trace_id_and_rejects_garbage() {
        let t = TraceContext::from_header(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ));
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_ne!(t.span_id, "b7ad6b7169203331");
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let fresh = TraceContext::from_header(Some("nonsense"));
        assert!(TraceContext::parse(&fresh.traceparent()).is_some());
    }
}
