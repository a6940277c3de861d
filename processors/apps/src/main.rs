//! `pickple-processor --app <name>`: one of Pickple's stream processors, or the views sink (see
//! the library docs). The names are the topic catalogue's (`pickple_topics::catalogue::APPS`).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock};

use clap::builder::PossibleValue;
use clap::Parser;
use pickple_processors::{run_app, App, AppConfig};
use pickple_runtime::RuntimeConfig;
use pickple_topics::catalogue::app;
use pickple_views::RedisConfig;

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What `--app` names: one of the pipeline's processors, or the views Redis sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Processor(App),
    Views,
}

/// Every target, in the topic catalogue's order: the processors, then the views sink.
static TARGETS: LazyLock<Vec<Target>> = LazyLock::new(|| {
    App::ALL
        .into_iter()
        .map(Target::Processor)
        .chain([Target::Views])
        .collect()
});

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Processor(app) => app.name(),
            Target::Views => app::VIEWS.name,
        }
    }
}

impl clap::ValueEnum for Target {
    fn value_variants<'a>() -> &'a [Self] {
        &TARGETS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

#[derive(Parser)]
#[command(
    name = "pickple-processor",
    about = "Run one of Pickple's stream processors, or the views sink"
)]
struct Cli {
    /// Which application to run (its consumer group, inputs and stores).
    #[arg(long, env = "PICKPLE_APP", value_enum)]
    app: Target,
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
    tracing::info!(app = cli.app.name(), "starting");
    let result = match cli.app {
        Target::Processor(app) => {
            run_app(app, &cli.config, cli.runtime, stop).map_err(|e| e.to_string())
        }
        Target::Views => {
            pickple_views::run_until(cli.runtime, cli.redis, stop).map_err(|e| e.to_string())
        }
    };
    if let Err(e) = result {
        tracing::error!(app = cli.app.name(), error = %e, "stopped");
        drop(telemetry);
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// `--app` accepts exactly the topic catalogue's applications, each once.
    #[test]
    fn the_app_names_are_the_topic_catalogue() {
        let names: Vec<&str> = Target::value_variants().iter().map(|t| t.name()).collect();
        let catalogue: Vec<&str> = pickple_topics::APPS.iter().map(|a| a.name).collect();
        assert_eq!(names, catalogue);
        for name in catalogue {
            let parsed = Target::from_str(name, false).unwrap();
            assert_eq!(parsed.name(), name);
        }
        assert_eq!(
            Cli::try_parse_from(["pickple-processor", "--app", "views"])
                .unwrap()
                .app,
            Target::Views
        );
        assert!(Cli::try_parse_from(["pickple-processor", "--app", "gateway"]).is_err());
    }
}
