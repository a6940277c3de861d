//! `pickple-counter`: the runtime's reference application as a process (see
//! `pickple_runtime::reference`). A value that is not JSON of the expected shape goes to
//! `counter-dlq`.

use clap::Parser;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{run, RuntimeConfig};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli.runtime, counter_spec(), |_| Counter) {
        tracing::error!(error = %e, "counter stopped");
        std::process::exit(1);
    }
}
