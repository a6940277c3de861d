//! The W3C `traceparent` value (<https://www.w3.org/TR/trace-context/>) that every HTTP request
//! and Kafka record of Pickple carries, so one trace follows an order from the request to the
//! e-mail.

use std::fmt;

/// A parsed `traceparent`: the trace, the span that caused this work, and the sampling flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 2 hex digits; `01` means sampled.
    pub flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn random_hex<const N: usize>() -> String {
    use fmt::Write;
    let bytes: [u8; N] = rand::random();
    bytes.iter().fold(String::with_capacity(N * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl TraceParent {
    /// Parse a `traceparent` (version 00; later versions are read by their first four fields,
    /// as the spec asks), or `None` if it is malformed or has an all-zero id.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !is_hex(trace, 32) || !is_hex(span, 16) || !is_hex(flags, 2) {
            return None;
        }
        if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(TraceParent {
            trace_id: trace.into(),
            span_id: span.into(),
            flags: flags.into(),
        })
    }

    /// The start of a new sampled trace.
    pub fn root() -> TraceParent {
        TraceParent {
            trace_id: random_hex::<16>(),
            span_id: random_hex::<8>(),
            flags: "01".into(),
        }
    }

    /// A new span of the same trace, caused by this one.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id.clone(),
            span_id: random_hex::<8>(),
            flags: self.flags.clone(),
        }
    }
}

/// The header value, `00-<trace>-<span>-<flags>`.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_values_and_rejects_garbage() {
        let header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let t = TraceParent::parse(header).unwrap();
        assert_eq!(t.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(t.span_id, "b7ad6b7169203331");
        assert_eq!(t.to_string(), header);
        // A future version with an extra field is read by its first four.
        assert!(TraceParent::parse(&format!("01{}-extra", &header[2..])).is_some());
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn roots_and_children_are_valid_and_distinct() {
        let root = TraceParent::root();
        assert_eq!(TraceParent::parse(&root.to_string()), Some(root.clone()));
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(TraceParent::root().trace_id, root.trace_id);
    }
}
