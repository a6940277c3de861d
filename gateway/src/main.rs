//! `pickple-gateway`: parse the configuration and serve.

use clap::Parser;
use pickple_gateway::Config;

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // Installed before the async runtime starts and dropped after it ends: the trace export
    // client blocks, which the runtime's threads must not do.
    let telemetry = pickple_telemetry::init("pickple-gateway", "info");
    let config = Config::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(pickple_gateway::serve(config));
    drop(runtime);
    if let Err(e) = result {
        tracing::error!(error = %e, "gateway stopped");
        drop(telemetry);
        std::process::exit(1);
    }
}
