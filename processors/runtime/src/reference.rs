//! The runtime's reference application: counts records per key (store `counts`), emits
//! `{key, count}` to `count-output` for every input, and, when an input asks for it, a reminder
//! on `count-reminders` after a wall-clock delay (store `timers`, fired by the punctuator). Used
//! by the runtime's integration tests (as `pickple-counter`) and by its benchmark.

use serde::{Deserialize, Serialize};

use crate::{AppSpec, Context, ProcessError, Processor, Record, Route};

/// The counter's shape: app `counter`, input `count-input`, stores `counts` and `timers`.
pub fn counter_spec() -> AppSpec {
    AppSpec::new("counter", &["count-input"], &["counts", "timers"]).with_route(route)
}

/// A count's key is its record key; a timer's is the due time, then the record key.
fn route<'k>(store: &str, key: &'k [u8]) -> Route<'k> {
    match store {
        "timers" => Route::Key(key.get(8..).unwrap_or_default()),
        _ => Route::Key(key),
    }
}

#[derive(Deserialize)]
struct Input {
    /// Ask for a reminder this many milliseconds from now.
    remind_in_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

/// The counting processor.
pub struct Counter;

/// Timer keys sort by due time: big-endian millis, then the record key.
fn timer_key(due: i64, key: &str) -> Vec<u8> {
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

impl Processor for Counter {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let input: Input = record.decode()?;
        let key = record.key_str()?.to_string();
        let count = ctx.get::<u64>("counts", &key)?.unwrap_or(0) + 1;
        ctx.put("counts", &key, &count);
        ctx.send_value(
            "count-output",
            &key,
            "Counted",
            &Count {
                key: key.clone(),
                count,
            },
        );
        if let Some(delay) = input.remind_in_ms {
            ctx.put("timers", timer_key(ctx.now() + delay, &key), &key);
        }
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let due: Vec<(Vec<u8>, String)> =
            ctx.range("timers", 0i64.to_be_bytes(), (ctx.now() + 1).to_be_bytes())?;
        for (timer, key) in due {
            ctx.delete("timers", timer);
            let count = ctx.get::<u64>("counts", &key)?.unwrap_or(0);
            ctx.send_value(
                "count-reminders",
                &key,
                "Reminder",
                &Count {
                    key: key.clone(),
                    count,
                },
            );
        }
        Ok(())
    }
}
