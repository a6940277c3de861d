//! `pickple-grow --partitions N`: give every topic N partitions (a multiple of today's count)
//! and move each application's state to the new layout, with the gateway and every application
//! stopped. `scripts/grow.sh` runs the whole workflow on the local shop: drain, stop, grow,
//! start again.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "pickple-grow",
    about = "Grow every topic's partitions with the applications' state kept exact"
)]
struct Cli {
    /// Bootstrap servers of the Kafka or Redpanda cluster.
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Prefix of every topic and group name.
    #[arg(long, env = "PICKPLE_TOPIC_PREFIX", default_value = "")]
    prefix: String,
    /// The new partition count of every topic: a multiple of the current one.
    #[arg(long, required_unless_present = "pending")]
    partitions: Option<i32>,
    /// Change nothing: print the input partitions where an application has records left to
    /// process (running or not), one a line, and exit 0 when there are none, 1 otherwise.
    #[arg(long)]
    pending: bool,
    /// How long to wait for stopped instances to leave their groups (their sessions to end).
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let wait = Duration::from_secs(cli.wait_secs);
    if cli.pending {
        match pickple_processors::grow::pending(&cli.brokers, &cli.prefix) {
            Ok(pending) => {
                for p in &pending {
                    println!("{p}");
                }
                std::process::exit(if pending.is_empty() { 0 } else { 1 });
            }
            Err(e) => {
                eprintln!("pickple-grow: {e}");
                std::process::exit(2);
            }
        }
    }
    let partitions = cli
        .partitions
        .expect("clap requires --partitions without --pending");
    match pickple_processors::grow::grow(&cli.brokers, &cli.prefix, partitions, wait).await {
        Ok(report) => {
            println!(
                "{} topics grown from {} to {} partitions",
                report.grown.len(),
                report.from,
                report.to
            );
            for (app, stores) in &report.moves {
                for s in stores {
                    println!(
                        "{app}/{}: {} entries, {} moved, {} copied",
                        s.store, s.entries, s.moved, s.copied
                    );
                }
            }
            println!(
                "start the applications again: every process reads the partition count at start"
            );
        }
        Err(e) => {
            eprintln!("pickple-grow: {e}");
            std::process::exit(1);
        }
    }
}
