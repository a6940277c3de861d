//! `topics apply|check|list|partitions|apps|delete`: create the catalogue's missing topics, report
//! drift, print the catalogue or the deployment's partition count, or delete topics by name or
//! name prefix (test leftovers).

use clap::{Parser, Subcommand};
use pickple_topics::{
    apply, catalogue, catalogue_with, check, delete, delete_prefixed, deployed_partitions,
    Replication, APPS, PARTITIONS,
};

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
    /// Replication factor of created topics (`check` reports topics with another): 1 on a
    /// single node, 3 on a cluster.
    #[arg(
        long,
        env = "PICKPLE_REPLICATION_FACTOR",
        default_value_t = 1,
        global = true
    )]
    replication_factor: i32,
    /// `min.insync.replicas` of every topic: 1 on a single node, 2 on a three-broker cluster.
    #[arg(
        long,
        env = "PICKPLE_MIN_INSYNC_REPLICAS",
        default_value_t = 1,
        global = true
    )]
    min_insync_replicas: i32,
    /// Partitions of every topic. By default the deployment's own: the count its existing
    /// topics have (what `pickple-grow` raised them to), or 6 when none exists yet. Set it to
    /// create or check another count.
    #[arg(long, env = "PICKPLE_PARTITIONS", global = true)]
    partitions: Option<i32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create missing topics (idempotent).
    Apply {
        /// Keep trying this long while the cluster cannot take them yet (brokers still
        /// starting or joining, too few for the replication factor).
        #[arg(long, env = "PICKPLE_TOPICS_WAIT_SECS", default_value_t = 0)]
        wait_secs: u64,
    },
    /// Report topics that are missing or differ from the catalogue; exit 1 on drift.
    Check,
    /// Print the catalogue, with 6 partitions a topic unless --partitions names another (it does
    /// not ask the broker).
    List,
    /// Print the partition count `apply` and `check` use (see --partitions), for scripts.
    Partitions,
    /// Print the applications' names, one a line (what `pickple-processor --app` takes), so
    /// scripts start every app from the one catalogue.
    Apps,
    /// Delete the topics named and every topic whose name starts with a --name-prefix (never
    /// Kafka's internal topics). The catalogue's --prefix plays no part. Names that do not exist
    /// are skipped.
    Delete {
        /// Delete every topic whose name starts with this (repeatable; not empty).
        #[arg(long = "name-prefix", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        name_prefixes: Vec<String>,
        /// Topics to delete, by full name.
        #[arg(required_unless_present = "name_prefixes")]
        names: Vec<String>,
    },
}

/// The partition count `apply` and `check` keep to: --partitions when given, else the count the
/// deployment's topics already have, else (no topic yet) the catalogue's 6.
fn partitions_of(cli: &Cli) -> anyhow::Result<i32> {
    Ok(match cli.partitions {
        Some(n) => n,
        None => deployed_partitions(&cli.brokers, &catalogue(&cli.prefix))?.unwrap_or(PARTITIONS),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let replication = Replication::new(cli.replication_factor, cli.min_insync_replicas)
        .map_err(anyhow::Error::msg)?;
    match &cli.command {
        Command::Apply { wait_secs } => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(*wait_secs);
            // The count is asked inside the retry too: the broker may not answer yet.
            let (specs, created) = loop {
                let attempt = async {
                    let specs = catalogue_with(&cli.prefix, partitions_of(&cli)?);
                    let created = apply(&cli.brokers, &specs, &replication).await?;
                    anyhow::Ok((specs, created))
                };
                match attempt.await {
                    Ok(done) => break done,
                    Err(e) if std::time::Instant::now() < deadline => {
                        eprintln!("topics apply: {e:#}; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
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
            let specs = catalogue_with(&cli.prefix, partitions_of(&cli)?);
            let drift = check(&cli.brokers, &specs, &replication).await?;
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
            let partitions = cli.partitions.unwrap_or(PARTITIONS);
            for t in catalogue_with(&cli.prefix, partitions) {
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
        Command::Partitions => println!("{}", partitions_of(&cli)?),
        Command::Apps => {
            for app in APPS {
                println!("{}", app.name);
            }
        }
        Command::Delete {
            name_prefixes,
            names,
        } => {
            let mut deleted = delete(&cli.brokers, names).await?;
            for prefix in name_prefixes {
                deleted.extend(delete_prefixed(&cli.brokers, prefix).await?);
            }
            for t in &deleted {
                println!("deleted {t}");
            }
            println!("{} topics deleted", deleted.len());
        }
    }
    Ok(())
}
