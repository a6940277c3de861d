//! `pickple-counter`: the runtime's reference application as a process (see
//! `pickple_runtime::reference`). A value that is not JSON of the expected shape goes to
//! `counter-dlq`.

use clap::Parser;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{run, RuntimeConfig};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
}

fn main() {
    let telemetry = pickple_telemetry::init("pickple-counter", "info,rdkafka=warn");
    let cli = Cli::parse();
    if let Err(e) = run(cli.runtime, counter_spec(), |_| Counter) {
        tracing::error!(error = %e, "counter stopped");
        drop(telemetry);
        std::process::exit(1);
    }
}
