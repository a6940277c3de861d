//! `pickple-views`: the views sink as its own process (the processors binary runs the same
//! thing with `--app views`).

use clap::Parser;
use pickple_runtime::RuntimeConfig;
use pickple_views::RedisConfig;

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    about = "Writes the view topics into Redis (version-guarded, indexed, with change notices)"
)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    redis: RedisConfig,
}

fn main() {
    let telemetry = pickple_telemetry::init("pickple-views", "info,rdkafka=warn");
    let cli = Cli::parse();
    if let Err(e) = pickple_views::run(cli.runtime, cli.redis) {
        tracing::error!(error = %e, "views sink stopped");
        drop(telemetry);
        std::process::exit(1);
    }
}
