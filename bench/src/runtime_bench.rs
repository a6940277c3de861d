//! `runtime-bench`: records/s through the stateful exactly-once path (the reference counter:
//! a sled store changelogged, outputs and offsets in Kafka transactions) against a plain
//! consume+produce loop (no state, no transactions, auto-committed offsets), on the same local
//! broker, alternating runs, each on fresh topics with the same input. Throughput is measured
//! from the first record processed to the last one committed (start-up: group join, producer
//! init, restore, is printed apart). Prints every run, the medians and their ratio.
//!
//!   cargo run --release -p pickple-bench --bin runtime-bench -- --records 100000 --runs 3

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{run_until, Metrics, RuntimeConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Input records per run.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Distinct keys (state entries).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// The runtime's commit batch (records per transaction at most).
    #[arg(long, default_value_t = 20000)]
    commit_records: usize,
    /// The runtime's commit interval (ms).
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    /// Runs of each mode (alternating).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const PARTITIONS: i32 = 6;

async fn create_topics(brokers: &str, prefix: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let names = [
        "count-input",
        "count-output",
        "count-reminders",
        "counter-dlq",
        "counter-counts-changelog",
        "counter-timers-changelog",
    ];
    let full: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
    let topics: Vec<NewTopic> = full
        .iter()
        .map(|n| {
            let t = NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1));
            if n.ends_with("-changelog") {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    for r in admin
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    Ok(())
}

fn produce_input(brokers: &str, topic: &str, records: usize, keys: usize) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()?;
    for i in 0..records {
        let key = format!("key-{}", i % keys);
        let mut record = BaseRecord::to(topic).key(&key).payload("{}");
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Plain loop: consume every input record and produce one output per record, no state.
fn plain(brokers: &str, prefix: &str, records: usize) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{prefix}plain"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .create()?;
    consumer.subscribe(&[&format!("{prefix}count-input")])?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random")
        .create()?;
    let out = format!("{prefix}count-output");
    let mut seen = 0;
    while seen < records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                let mut record = BaseRecord::to(&out)
                    .key(m.key().unwrap_or_default())
                    .payload(m.payload().unwrap_or_default());
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            producer.poll(Duration::from_millis(1));
                            record = r;
                        }
                    }
                }
                seen += 1;
            }
            Some(Err(e)) => anyhow::bail!("consume: {e}"),
            None => {}
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60))?;
    let first = first.unwrap_or(started);
    Ok((first - started, first.elapsed()))
}

/// The runtime's exactly-once path with the counting processor, in-process.
fn stateful(
    mut config: RuntimeConfig,
    prefix: &str,
    records: usize,
) -> anyhow::Result<(Duration, Duration, u64)> {
    let state = config.state_dir.clone();
    config.topic_prefix = prefix.to_string();
    let counter = Metrics::global()
        .records_in
        .with_label_values(&["counter", "count-input"]);
    let commits = Metrics::global().commits.with_label_values(&["counter"]);
    let base = counter.get();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || run_until(config, counter_spec(), |_| Counter, stop))
    };
    // The record count is bumped before the commit; wait for one more commit after reaching it
    // so the figure includes committing the last records.
    let mut reached = None;
    let mut first: Option<Instant> = None;
    let latency = Metrics::global()
        .commit_latency
        .with_label_values(&["counter"]);
    let (c0, s0) = (latency.get_sample_count(), latency.get_sample_sum());
    loop {
        if first.is_none() && counter.get() > base {
            first = Some(Instant::now());
        }
        if handle.is_finished() {
            anyhow::bail!("runtime stopped early: {:?}", handle.join());
        }
        let done = counter.get() - base >= records as u64;
        match (done, reached) {
            (true, None) => reached = Some(commits.get()),
            (true, Some(c)) if commits.get() > c => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let first = first.unwrap_or(started);
    let elapsed = first.elapsed();
    println!(
        "      {} commits, {:.2} s committing",
        latency.get_sample_count() - c0,
        latency.get_sample_sum() - s0
    );
    stop.store(true, Ordering::Relaxed);
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("runtime panicked"))??;
    let disk = dir_size(&state);
    Ok((first - started, elapsed, disk))
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mut plain_rates, mut eos_rates) = (Vec::new(), Vec::new());
    println!(
        "{} records, {} keys, {} partitions, broker {}",
        args.records, args.keys, PARTITIONS, args.brokers
    );
    for run in 1..=args.runs {
        for mode in ["plain", "stateful-eos"] {
            let prefix = format!("bench{}.", &uuid::Uuid::new_v4().simple().to_string()[..10]);
            create_topics(&args.brokers, &prefix).await?;
            produce_input(
                &args.brokers,
                &format!("{prefix}count-input"),
                args.records,
                args.keys,
            )?;
            let brokers = args.brokers.clone();
            let records = args.records;
            if mode == "plain" {
                let (startup, t) =
                    tokio::task::spawn_blocking(move || plain(&brokers, &prefix, records))
                        .await??;
                let rate = records as f64 / t.as_secs_f64();
                println!(
                    "run {run} {mode:>13}: {:>8.0} records/s ({:.2} s after a {:.2} s start-up)",
                    rate,
                    t.as_secs_f64(),
                    startup.as_secs_f64()
                );
                plain_rates.push(rate);
            } else {
                let dir = tempfile::tempdir()?;
                let mut config = RuntimeConfig::local(dir.path());
                config.brokers = brokers;
                config.commit_records = args.commit_records;
                config.commit_interval_ms = args.commit_interval_ms;
                let (startup, t, disk) =
                    tokio::task::spawn_blocking(move || stateful(config, &prefix, records))
                        .await??;
                let rate = records as f64 / t.as_secs_f64();
                println!(
                    "run {run} {mode:>13}: {:>8.0} records/s ({:.2} s after a {:.2} s start-up), sled on disk {:.1} MiB",
                    rate,
                    t.as_secs_f64(),
                    startup.as_secs_f64(),
                    disk as f64 / (1024.0 * 1024.0)
                );
                eos_rates.push(rate);
            }
        }
    }
    let (p, e) = (median(plain_rates), median(eos_rates));
    println!("median plain loop:          {p:>8.0} records/s");
    println!("median stateful EOS path:   {e:>8.0} records/s");
    println!("ratio stateful EOS / plain: {:.2}", e / p);
    Ok(())
}
