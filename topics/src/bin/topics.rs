//! `topics apply|check|list`: create the catalogue's missing topics, report drift, or print it.

use clap::{Parser, Subcommand};
use pickple_topics::{apply, catalogue, check};

#[derive(Parser)]
#[command(about = "Pickple topic catalogue: apply it to a broker or check a broker against it")]
struct Cli {
    /// Bootstrap servers of the Kafka or Redpanda cluster.
    #[arg(
        long,
        env = "PICKPLE_BROKERS",
        default_value = "127.0.0.1:19092",
        global = true
    )]
    brokers: String,
    /// Prefix of every topic name (to run several pipelines on one cluster).
    #[arg(long, env = "PICKPLE_TOPIC_PREFIX", default_value = "", global = true)]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create missing topics (idempotent).
    Apply {
        /// Replication factor of created topics.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
    /// Report topics that are missing or differ from the catalogue; exit 1 on drift.
    Check,
    /// Print the catalogue.
    List,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let specs = catalogue(&cli.prefix);
    match cli.command {
        Command::Apply { replication } => {
            let created = apply(&cli.brokers, &specs, replication).await?;
            for t in &created {
                println!("created {t}");
            }
            println!(
                "{} topics in catalogue, {} created",
                specs.len(),
                created.len()
            );
        }
        Command::Check => {
            let drift = check(&cli.brokers, &specs).await?;
            for d in &drift {
                println!("drift: {d}");
            }
            if !drift.is_empty() {
                eprintln!("{} differences from the catalogue", drift.len());
                std::process::exit(1);
            }
            println!("{} topics match the catalogue", specs.len());
        }
        Command::List => {
            println!(
                "{:<40} {:>4} {:<8} {:<12} description",
                "topic", "part", "cleanup", "key"
            );
            for t in &specs {
                println!(
                    "{:<40} {:>4} {:<8} {:<12} {}",
                    t.name,
                    t.partitions,
                    t.cleanup.as_str(),
                    t.key,
                    t.description
                );
            }
        }
    }
    Ok(())
}
