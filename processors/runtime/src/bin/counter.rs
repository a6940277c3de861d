//! `pickple-counter`: the runtime's reference application, used by its integration tests and
//! benchmark. It counts records per key (store `counts`), emits `{key, count}` to `count-output`
//! for every input, and, when an input asks for it, a reminder on `count-reminders` after a
//! wall-clock delay (store `timers`, fired by the punctuator). A value that is not JSON of the
//! expected shape goes to `counter-dlq`.

use clap::Parser;
use pickple_runtime::{run, AppSpec, Context, ProcessError, Processor, Record, RuntimeConfig};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
}

#[derive(Deserialize)]
struct Input {
    /// Ask for a reminder this many milliseconds from now.
    remind_in_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Count {
    key: String,
    count: u64,
}

struct Counter;

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

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let spec = AppSpec::new("counter", &["count-input"], &["counts", "timers"]);
    if let Err(e) = run(cli.runtime, spec, |_| Counter) {
        tracing::error!(error = %e, "counter stopped");
        std::process::exit(1);
    }
}
