//! The in-process test driver: stores, outputs, dead letters and the clock, with no broker.

use pickple_runtime::{Context, ProcessError, Processor, Record, TestDriver};

/// Remembers the last value per key, and after 1 s of wall-clock time reports how many keys it
/// holds; a value that is not a JSON string is invalid.
struct LastValue;

impl Processor for LastValue {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let value: String = record.decode()?;
        let key = record.key_str()?.to_string();
        ctx.put("last", &key, &value);
        if ctx.get::<i64>("due", "report")?.is_none() {
            ctx.put("due", "report", &(ctx.now() + 1000));
        }
        ctx.send_value("echo", &key, "Echo", &value);
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        match ctx.get::<i64>("due", "report")? {
            Some(due) if due <= ctx.now() => {
                let keys = ctx.range::<String>("last", "", "\u{10ffff}")?.len();
                ctx.delete("due", "report");
                ctx.send_value("report", "all", "Report", &keys);
            }
            _ => {}
        }
        Ok(())
    }
}

fn headers() -> pickple_schemas::RecordHeaders {
    pickple_schemas::RecordHeaders::new("Test", "cmd")
}

/// The trace id in [`traced`].
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// Headers of a record sent within a caller's trace.
fn traced() -> pickple_schemas::RecordHeaders {
    let mut headers = headers();
    headers.traceparent = format!("00-{CALLER_TRACE}-b7ad6b7169203331-01");
    headers
}

#[test]
fn the_driver_pipes_records_reads_stores_and_advances_the_clock() {
    let mut driver = TestDriver::new(LastValue, 1_000_000);
    driver
        .pipe_raw("in", Some(b"a"), Some(b"\"one\""), headers())
        .unwrap();
    driver
        .pipe_raw("in", Some(b"b"), Some(b"\"two\""), headers())
        .unwrap();
    driver
        .pipe_raw("in", Some(b"a"), Some(b"\"three\""), headers())
        .unwrap();
    driver
        .pipe_raw("in", Some(b"c"), Some(b"42"), headers())
        .unwrap();

    assert_eq!(driver.get::<String>("last", "a").as_deref(), Some("three"));
    assert_eq!(
        driver.get::<String>("last", "c"),
        None,
        "the invalid record wrote nothing"
    );
    assert_eq!(driver.dead_letters().len(), 1);
    assert!(
        driver.dead_letters()[0].reason.contains("String"),
        "{:?}",
        driver.dead_letters()
    );
    let echoes: Vec<String> = driver.take("echo");
    assert_eq!(echoes, vec!["one", "two", "three"]);
    let first = driver.take_outputs("echo");
    assert!(first.is_empty(), "take drains");

    driver.advance(500).unwrap();
    assert!(driver.take_outputs("report").is_empty(), "not due yet");
    driver.advance(500).unwrap();
    let reports: Vec<usize> = driver.take("report");
    assert_eq!(reports, vec![2]);
    driver.advance(5000).unwrap();
    assert!(driver.take_outputs("report").is_empty(), "fires once");
}

#[test]
fn outputs_name_their_input_record_as_their_cause() {
    let mut driver = TestDriver::new(LastValue, 1_000_000);
    for value in [&b"\"one\""[..], b"\"two\""] {
        driver
            .pipe_raw("order-commands", Some(b"a"), Some(value), headers())
            .unwrap();
    }
    let echoes = driver.take_outputs("echo");
    let causes: Vec<&str> = echoes
        .iter()
        .map(|o| o.headers.causation_id.as_str())
        .collect();
    assert_eq!(causes, ["order-commands/0/0", "order-commands/0/1"]);
    for echo in &echoes {
        assert_eq!(echo.headers.command_id, "cmd");
        assert_eq!(echo.headers.event_type, "Echo");
    }
}

#[test]
fn outputs_continue_the_trace_of_their_input() {
    let mut driver = TestDriver::new(LastValue, 1_000_000);
    driver
        .pipe_raw("in", Some(b"a"), Some(b"\"one\""), traced())
        .unwrap();
    driver
        .pipe_raw("in", Some(b"b"), Some(b"\"two\""), headers())
        .unwrap();
    let outputs = driver.take_outputs("echo");
    let parts: Vec<&str> = outputs[0].headers.traceparent.split('-').collect();
    assert_eq!(parts[1], CALLER_TRACE, "same trace");
    assert_ne!(parts[2], "b7ad6b7169203331", "a span of its own");
    assert_eq!(parts[3], "01");
    assert_eq!(
        outputs[1].headers.traceparent, "",
        "an untraced input starts no trace"
    );
}

#[test]
fn a_punctuation_that_sends_starts_a_trace_of_its_own() {
    let mut driver = TestDriver::new(LastValue, 1_000_000);
    driver
        .pipe_raw("in", Some(b"a"), Some(b"\"one\""), traced())
        .unwrap();
    driver.advance(1000).unwrap();
    let first = driver.take_outputs("report");
    driver
        .pipe_raw("in", Some(b"b"), Some(b"\"two\""), headers())
        .unwrap();
    driver.advance(1000).unwrap();
    let second = driver.take_outputs("report");

    let trace_of = |outputs: &[pickple_runtime::Output]| {
        assert_eq!(outputs.len(), 1);
        let parent = pickple_telemetry::TraceParent::parse(&outputs[0].headers.traceparent)
            .unwrap_or_else(|| panic!("not a traceparent: {:?}", outputs[0].headers));
        parent.trace_id
    };
    let (first, second) = (trace_of(&first), trace_of(&second));
    assert_ne!(
        first, CALLER_TRACE,
        "not the trace of the record that armed the timer: the punctuation caused it"
    );
    assert_ne!(first, second, "each punctuation is a trace of its own");
}

/// The size guard: a step that would write a value over the limit is refused as a whole (its
/// record dead-lettered with the reason) and the next record is processed as usual.
#[test]
fn a_value_over_the_size_limit_is_dead_lettered_and_processing_goes_on() {
    let mut driver = TestDriver::new(LastValue, 1_000_000).with_max_value_bytes(64);
    let big = format!("\"{}\"", "x".repeat(100));
    driver
        .pipe_raw("in", Some(b"a"), Some(big.as_bytes()), headers())
        .unwrap();
    driver
        .pipe_raw("in", Some(b"b"), Some(b"\"small\""), headers())
        .unwrap();
    let dead = driver.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, b"a");
    assert!(
        dead[0].reason.contains("store last") && dead[0].reason.contains("over the limit of 64"),
        "{}",
        dead[0].reason
    );
    assert_eq!(
        driver.get::<String>("last", "a"),
        None,
        "nothing of the refused step is kept"
    );
    assert_eq!(driver.get::<String>("last", "b").as_deref(), Some("small"));
    assert_eq!(driver.take_outputs("echo").len(), 1);
}
