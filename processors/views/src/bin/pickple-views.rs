//! `pickple-views`: the views sink as its own process (the processors binary runs the same
//! thing with `--app views`).

use clap::Parser;
use pickple_runtime::RuntimeConfig;
use pickple_views::RedisConfig;

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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = pickple_views::run(cli.runtime, cli.redis) {
        tracing::error!(error = %e, "views sink stopped");
        std::process::exit(1);
    }
}
