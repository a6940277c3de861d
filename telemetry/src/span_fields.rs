//! Span fields written as a JSON object, straight into the span's buffer.
//!
//! The JSON log layer formats a span's fields when the span is created, so that log lines
//! inside it can show them. tracing-subscriber's `JsonFields` first collects them into a map of
//! `serde_json::Value`s and then serializes the map: for the stream runtime, which opens a span
//! per traced record, that was most of the span's cost. This writes the same object directly.
//! Log lines still come out through tracing-subscriber's JSON event formatter, which reads this
//! object back as `span`.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// Formats span fields as one JSON object (`{"trace_id":"…","partition":3}`), in the order they
/// were declared or recorded; a field recorded twice keeps its last value when read back.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<'w> FormatFields<'w> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut visitor = ObjectVisitor::new(&mut writer, true);
        fields.record(&mut visitor);
        visitor.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // `current` is an object this type wrote: reopen it, append, close it again.
        let empty = matches!(current.fields.as_str(), "" | "{}");
        if empty {
            current.fields.clear();
            current.fields.push('{');
        } else {
            current.fields.pop();
        }
        let mut visitor = ObjectVisitor::new(&mut current.fields, empty);
        fields.record(&mut visitor);
        let result = visitor.result;
        current.fields.push('}');
        result
    }
}

/// Writes each visited field as `"name":value`, comma-separated.
struct ObjectVisitor<'a, W: Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: Write> ObjectVisitor<'a, W> {
    fn new(out: &'a mut W, first: bool) -> Self {
        ObjectVisitor {
            out,
            first,
            result: Ok(()),
        }
    }

    /// Write the field's name and let `value` write its value; a name that is log metadata
    /// (the `log` crate's bridge) is skipped, as `JsonFields` does.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            write_json_str(self.out, |s| s.write_str(name))?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl<W: Write> Visit for ObjectVisitor<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; `JsonFields` writes them as null too.
        self.field(field, |out| match value.is_finite() {
            true => write!(out, "{value}"),
            false => out.write_str("null"),
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| write_json_str(out, |s| s.write_str(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| write_json_str(out, |s| write!(s, "{value:?}")));
    }
}

/// Write what `text` writes as a JSON string: quoted, with `"`, `\` and control characters
/// escaped.
fn write_json_str<W: Write>(
    out: &mut W,
    text: impl FnOnce(&mut Escaped<'_, W>) -> fmt::Result,
) -> fmt::Result {
    out.write_char('"')?;
    text(&mut Escaped(out))?;
    out.write_char('"')
}

/// A writer that escapes what it is given for the inside of a JSON string.
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if c < ' ' => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            match escape {
                "" => write!(self.0, "\\u{:04x}", c as u32)?,
                escape => self.0.write_str(escape)?,
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        write_json_str(&mut out, |w| w.write_str(s)).unwrap();
        out
    }

    #[test]
    fn strings_come_out_as_json_strings() {
        for s in [
            "plain",
            "quote \" and \\ back",
            "line\nbreak\ttab\r",
            "bell \u{7} nul \0",
            "ünï 😀",
            "",
        ] {
            let json = escaped(s);
            assert_eq!(serde_json::from_str::<String>(&json).unwrap(), s, "{json}");
        }
    }
}
