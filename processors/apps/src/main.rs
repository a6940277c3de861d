//! `pickple-processor --app <name>`: one of Pickple's stream processors (see the library docs).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use pickple_processors::{run_app, App, AppConfig};
use pickple_runtime::RuntimeConfig;

#[derive(Parser)]
#[command(
    name = "pickple-processor",
    about = "Run one of Pickple's stream processors"
)]
struct Cli {
    /// Which application to run (its consumer group, inputs and stores).
    #[arg(long, env = "PICKPLE_APP", value_enum)]
    app: App,
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    config: AppConfig,
}

fn main() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            tracing::error!(error = %e, "cannot install the signal handler");
            std::process::exit(2);
        }
    }
    tracing::info!(app = cli.app.name(), "starting");
    if let Err(e) = run_app(cli.app, &cli.config, cli.runtime, stop) {
        tracing::error!(app = cli.app.name(), error = %e, "stopped");
        std::process::exit(1);
    }
}
