//! `pickple-processor --app <name>`: one of Pickple's stream processors (see the library docs).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use pickple_processors::{run_app, App, AppConfig};
use pickple_runtime::RuntimeConfig;
use pickple_views::RedisConfig;

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Every application this binary runs: the pipeline's processors and the `views` Redis sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AppName {
    Users,
    Catalog,
    Stock,
    Order,
    Payment,
    Delivery,
    Notification,
    Views,
}

impl AppName {
    /// The name given on the command line, e.g. `stock`.
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }

    /// The pipeline app, or `None` for the views sink.
    fn pipeline(self) -> Option<App> {
        Some(match self {
            AppName::Users => App::Users,
            AppName::Catalog => App::Catalog,
            AppName::Stock => App::Stock,
            AppName::Order => App::Order,
            AppName::Payment => App::Payment,
            AppName::Delivery => App::Delivery,
            AppName::Notification => App::Notification,
            AppName::Views => return None,
        })
    }
}

#[derive(Parser)]
#[command(
    name = "pickple-processor",
    about = "Run one of Pickple's stream processors"
)]
struct Cli {
    /// Which application to run (its consumer group, inputs and stores).
    #[arg(long, env = "PICKPLE_APP", value_enum)]
    app: AppName,
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    config: AppConfig,
    #[command(flatten)]
    redis: RedisConfig,
}

fn main() {
    let cli = Cli::parse();
    let service = format!("pickple-{}", cli.app.name());
    let telemetry = pickple_telemetry::init(&service, "info,rdkafka=warn");
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            tracing::error!(error = %e, "cannot install the signal handler");
            std::process::exit(2);
        }
    }
    tracing::info!(app = ?cli.app, "starting");
    let result = match cli.app.pipeline() {
        Some(app) => run_app(app, &cli.config, cli.runtime, stop).map_err(|e| e.to_string()),
        None => pickple_views::run_until(cli.runtime, cli.redis, stop).map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        tracing::error!(app = ?cli.app, error = %e, "stopped");
        drop(telemetry);
        std::process::exit(1);
    }
}
