//! `pickple-gateway`: parse the configuration and serve.

use clap::Parser;
use pickple_gateway::Config;

#[tokio::main]
async fn main() {
    // JSON lines, like the processors': one log pipeline (Loki, jq) reads them all.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    if let Err(e) = pickple_gateway::serve(config).await {
        tracing::error!(error = %e, "gateway stopped");
        std::process::exit(1);
    }
}
