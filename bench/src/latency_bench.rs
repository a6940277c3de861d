//! `latency-bench`: latency through a chain of N exactly-once hops (counter → counter → …) at a
//! fixed offered rate, from produce to `read_committed` visibility at the end of the chain, on
//! the runtime and on Kafka Streams (bench/kstreams-peer), each at its defaults, side by side.
//!
//!   cargo run --release -p pickple-bench --bin latency-bench -- --hops 1,4 --rate 1000 --seconds 30
//!
//! Hop i reads `chain-<i-1>` and writes `chain-<i>` (6 partitions each), counting per key in a
//! changelogged store and carrying the input's `sent_us` along. Each system runs its N hops as
//! N applications in one process (own group, transactional producer and commit cycle each, as
//! the shop's processors): the runtime's in this process, Kafka Streams' in one JVM.
//!
//! The load is open loop: send times are scheduled at the offered rate and each record carries
//! its scheduled time, so a sender or a chain falling behind shows in the figures instead of
//! slowing the load (no coordinated omission). Records sent during the warm-up (from the first
//! record seen at the end of the chain, plus `--warmup-secs`: group joins, the start-up backlog)
//! are not counted. Every run's topics are deleted after it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use pickple_bench::{
    create_topics, delete_topics, epoch_micros, run_prefix, CommitTuning, KStreamsPeer, Worker,
};
use pickple_runtime::{
    run_until, AppSpec, Context, ProcessError, Processor, Record, RuntimeConfig, RuntimeError,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Chain lengths (exactly-once hops), each measured on fresh topics. 0 reads the input
    /// topic itself: the floor that producer, broker and reader put under every figure.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    hops: Vec<usize>,
    /// Offered load, records/s (open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Measured seconds per chain, after the warm-up.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds of load after the first record crossed the chain, before measuring.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Systems to measure, in this order for each chain length.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "runtime,kstreams"
    )]
    systems: Vec<System>,
    #[command(flatten)]
    tuning: CommitTuning,
    /// Options for the Kafka Streams peer's JVM; none by default.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    java_opts: String,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum System {
    Runtime,
    Kstreams,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Runtime => "runtime",
            System::Kstreams => "kstreams",
        }
    }
}

const PARTITIONS: i32 = 6;

#[derive(Deserialize)]
struct Sent {
    sent_us: i64,
}

#[derive(Serialize)]
struct HopOutput<'a> {
    key: &'a str,
    count: u64,
    sent_us: i64,
}

/// One hop: the reference counter, carrying the scheduled send time along.
struct Hop {
    output: String,
}

impl Processor for Hop {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let input: Sent = record.decode()?;
        let key = record.key_str()?;
        let count = ctx.get::<u64>("counts", key)?.unwrap_or(0) + 1;
        ctx.put("counts", key, &count);
        ctx.send_value(
            &self.output,
            key,
            "Counted",
            &HopOutput {
                key,
                count,
                sent_us: input.sent_us,
            },
        );
        Ok(())
    }
}

/// A chain being run by one system.
enum Chain {
    Runtime {
        stop: Arc<AtomicBool>,
        hops: Vec<JoinHandle<Result<(), RuntimeError>>>,
        _state: tempfile::TempDir,
    },
    KStreams {
        worker: Worker,
        _state: tempfile::TempDir,
    },
}

impl Chain {
    fn check_alive(&mut self) -> anyhow::Result<()> {
        match self {
            Chain::Runtime { hops, .. } => {
                anyhow::ensure!(
                    !hops.iter().any(|h| h.is_finished()),
                    "a runtime hop stopped early"
                );
                Ok(())
            }
            Chain::KStreams { worker, .. } => worker.check_alive(),
        }
    }

    fn stop(self) -> anyhow::Result<()> {
        match self {
            Chain::Runtime { stop, hops, .. } => {
                stop.store(true, Ordering::Relaxed);
                for h in hops {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a runtime hop panicked"))??;
                }
            }
            Chain::KStreams { worker, .. } => {
                worker.stop(Duration::from_secs(60))?;
            }
        }
        Ok(())
    }
}

fn chain_topic(prefix: &str, i: usize) -> String {
    format!("{prefix}chain-{i}")
}

fn start_runtime_chain(args: &Args, prefix: &str, hops: usize) -> anyhow::Result<Chain> {
    let state = tempfile::tempdir()?;
    let mut config = RuntimeConfig::local(state.path());
    config.brokers = args.brokers.clone();
    config.topic_prefix = prefix.to_string();
    args.tuning.apply(&mut config);
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (1..=hops)
        .map(|i| {
            let (config, stop) = (config.clone(), stop.clone());
            let spec = AppSpec::new(
                &format!("hop{i}"),
                &[&format!("chain-{}", i - 1)],
                &["counts"],
            );
            let output = format!("chain-{i}");
            std::thread::spawn(move || {
                run_until(
                    config,
                    spec,
                    move |_| Hop {
                        output: output.clone(),
                    },
                    stop,
                )
            })
        })
        .collect();
    Ok(Chain::Runtime {
        stop,
        hops: handles,
        _state: state,
    })
}

/// The shared clock of a run: when the measured window opens and closes (epoch µs, 0 = not
/// yet), and whether anything has crossed the chain.
#[derive(Default)]
struct Window {
    start: AtomicI64,
    end: AtomicI64,
    crossed: AtomicBool,
    received: AtomicU64,
    stop: AtomicBool,
}

impl Window {
    fn contains(&self, sent_us: i64) -> bool {
        let start = self.start.load(Ordering::Relaxed);
        start != 0 && sent_us >= start && sent_us < self.end.load(Ordering::Relaxed)
    }
}

/// What the sender did in the window: records sent, and how far it fell behind its schedule.
struct SendReport {
    sent: u64,
    max_behind: Duration,
}

/// Open loop: record k is due at `k / rate` after the start and carries that time, whenever it
/// actually goes out.
fn send(
    brokers: &str,
    topic: &str,
    rate: u64,
    keys: usize,
    window: &Window,
) -> anyhow::Result<SendReport> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        // A record is due now: batching would only delay it.
        .set("linger.ms", "0")
        .set("partitioner", "murmur2_random")
        .create()?;
    let (t0, epoch0) = (Instant::now(), epoch_micros());
    let mut report = SendReport {
        sent: 0,
        max_behind: Duration::ZERO,
    };
    for k in 0u64.. {
        let offset_us = k * 1_000_000 / rate;
        let due = t0 + Duration::from_micros(offset_us);
        let sent_us = epoch0 + offset_us as i64;
        let end = window.end.load(Ordering::Relaxed);
        if window.stop.load(Ordering::Relaxed) || (end != 0 && sent_us >= end) {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let key = format!("key-{}", k as usize % keys);
        let payload = format!("{{\"sent_us\":{sent_us}}}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    producer.poll(Duration::from_millis(1));
                    record = r;
                }
            }
        }
        if window.contains(sent_us) {
            report.sent += 1;
            report.max_behind = report.max_behind.max(due.elapsed());
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(report)
}

/// What the reader saw at the end of the chain, in the window.
struct ReadReport {
    latencies: Histogram<u64>,
    duplicates: u64,
}

/// Reads the chain's last topic read_committed and records, for every record sent in the
/// window, the time from its scheduled send to now.
fn read(brokers: &str, topic: &str, group: &str, window: &Window) -> anyhow::Result<ReadReport> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // The broker answers a read_committed fetch as soon as the stable offset moves; a short
        // wait only bounds what a missed wake-up could add.
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    // 1 µs to 10 minutes at 3 significant digits.
    let mut latencies = Histogram::new_with_bounds(1, 600_000_000, 3)?;
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    while !window.stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let now = epoch_micros();
        let message = message?;
        window.crossed.store(true, Ordering::Relaxed);
        let sent: Sent = serde_json::from_slice(message.payload().unwrap_or_default())?;
        if !window.contains(sent.sent_us) {
            continue;
        }
        // Scheduled send times are distinct at any rate up to 1M records/s.
        if !seen.insert(sent.sent_us) {
            duplicates += 1;
            continue;
        }
        latencies.saturating_record((now - sent.sent_us).max(1) as u64);
        window.received.fetch_add(1, Ordering::Relaxed);
    }
    Ok(ReadReport {
        latencies,
        duplicates,
    })
}

/// One chain's figures.
struct Outcome {
    sent: u64,
    latencies: Histogram<u64>,
    duplicates: u64,
    max_behind: Duration,
    /// The runtime's transactions over the run, all hops together (none for Kafka Streams).
    commits: Option<CommitStats>,
}

/// Transactions committed, and the time spent committing them, from the runtime's own metrics
/// (`pickple_commits_total`, `pickple_commit_latency_seconds`), summed over every hop.
#[derive(Clone, Copy, Default)]
struct CommitStats {
    count: u64,
    seconds: f64,
}

impl CommitStats {
    fn now() -> Self {
        let mut stats = CommitStats::default();
        for family in prometheus::gather() {
            if family.name() == "pickple_commit_latency_seconds" {
                for metric in family.get_metric() {
                    let h = metric.get_histogram();
                    stats.count += h.get_sample_count();
                    stats.seconds += h.get_sample_sum();
                }
            }
        }
        stats
    }

    fn since(self, before: CommitStats) -> Self {
        CommitStats {
            count: self.count - before.count,
            seconds: self.seconds - before.seconds,
        }
    }
}

/// Drive a running chain: load it, wait for the first record through, warm up, measure, and
/// wait for the window's last records.
fn drive(args: &Args, prefix: &str, hops: usize, chain: &mut Chain) -> anyhow::Result<Outcome> {
    let window = Arc::new(Window::default());
    let reader = {
        let (brokers, window) = (args.brokers.clone(), window.clone());
        let (topic, group) = (chain_topic(prefix, hops), format!("{prefix}reader"));
        std::thread::spawn(move || read(&brokers, &topic, &group, &window))
    };
    let sender = {
        let (brokers, window) = (args.brokers.clone(), window.clone());
        let (topic, rate, keys) = (chain_topic(prefix, 0), args.rate, args.keys);
        std::thread::spawn(move || send(&brokers, &topic, rate, keys, &window))
    };
    let outcome = (|| {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !window.crossed.load(Ordering::Relaxed) {
            chain.check_alive()?;
            anyhow::ensure!(
                !reader.is_finished() && !sender.is_finished(),
                "the reader or the sender stopped"
            );
            anyhow::ensure!(
                Instant::now() < deadline,
                "nothing crossed the chain in 180 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let start = epoch_micros() + args.warmup_secs as i64 * 1_000_000;
        window
            .end
            .store(start + args.seconds as i64 * 1_000_000, Ordering::Relaxed);
        window.start.store(start, Ordering::Relaxed);
        Ok(())
    })();
    if outcome.is_err() {
        window.stop.store(true, Ordering::Relaxed);
    }
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    let sent = outcome.and(sent);
    if let Ok(report) = &sent {
        // The window's last records still have the chain to cross.
        let deadline = Instant::now() + Duration::from_secs(30);
        while window.received.load(Ordering::Relaxed) < report.sent && Instant::now() < deadline {
            if chain.check_alive().is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    window.stop.store(true, Ordering::Relaxed);
    let read = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    let (sent, read) = (sent?, read?);
    Ok(Outcome {
        sent: sent.sent,
        latencies: read.latencies,
        duplicates: read.duplicates,
        max_behind: sent.max_behind,
        commits: None,
    })
}

async fn run_chain(
    args: &Args,
    hops: usize,
    system: System,
    peer: Option<&KStreamsPeer>,
) -> anyhow::Result<Outcome> {
    let prefix = run_prefix("lat");
    let mut topics: Vec<String> = (0..=hops).map(|i| chain_topic(&prefix, i)).collect();
    let mut peer_changelogs = Vec::new();
    for i in 1..=hops {
        match system {
            System::Runtime => {
                topics.push(format!("{prefix}hop{i}-counts-changelog"));
                topics.push(format!("{prefix}hop{i}-dlq"));
            }
            // Kafka Streams creates its changelogs itself.
            System::Kstreams => {
                peer_changelogs.push(format!("{prefix}kstreams-hop{i}-counts-changelog"))
            }
        }
    }
    create_topics(&args.brokers, &topics, PARTITIONS).await?;
    let commits_before = CommitStats::now();
    let chain = match system {
        System::Runtime => start_runtime_chain(args, &prefix, hops),
        System::Kstreams => (|| {
            let state = tempfile::tempdir()?;
            let state_dir = state.path().to_string_lossy().to_string();
            let command = peer.expect("peer built").command(
                "chain",
                &[
                    "--brokers",
                    &args.brokers,
                    "--topic-prefix",
                    &prefix,
                    "--hops",
                    &hops.to_string(),
                    "--state-dir",
                    &state_dir,
                ],
            );
            Ok(Chain::KStreams {
                worker: Worker::spawn("kstreams chain", command)?,
                _state: state,
            })
        })(),
    };
    let outcome = match chain {
        Ok(mut chain) => tokio::task::block_in_place(|| {
            let outcome = drive(args, &prefix, hops, &mut chain);
            let stopped = chain.stop();
            outcome.and_then(|o| stopped.map(|()| o))
        }),
        Err(e) => Err(e),
    };
    topics.extend(peer_changelogs);
    delete_topics(&args.brokers, &topics).await?;
    let mut outcome = outcome?;
    if system == System::Runtime {
        outcome.commits = Some(CommitStats::now().since(commits_before));
    }
    Ok(outcome)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn print_outcome(hops: usize, system: System, o: &Outcome) {
    let h = &o.latencies;
    println!(
        "{hops:>4}  {:<9} {:>8} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>8} {:>10} {:>13.1} {:>9} {:>9}",
        if hops == 0 { "direct" } else { system.label() },
        h.len(),
        ms(h, 0.5),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1000.0,
        o.sent.saturating_sub(h.len()),
        o.duplicates,
        o.max_behind.as_secs_f64() * 1000.0,
        o.commits.map_or("-".to_string(), |c| c.count.to_string()),
        o.commits
            .filter(|c| c.count > 0)
            .map_or("-".to_string(), |c| format!(
                "{:.1}",
                c.seconds * 1000.0 / c.count as f64
            )),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = pickple_telemetry::init("latency-bench", "warn");
    let peer = if args.systems.contains(&System::Kstreams) {
        Some(KStreamsPeer::build(&args.java_opts)?)
    } else {
        None
    };
    println!(
        "offered {} records/s (open loop), {} s measured after {} s of warm-up, {} partitions, {} keys, broker {}; \
         {}; kstreams at its defaults (exactly_once_v2)",
        args.rate,
        args.seconds,
        args.warmup_secs,
        PARTITIONS,
        args.keys,
        args.brokers,
        args.tuning.describe()
    );
    println!("produce → read_committed at the end of the chain, ms:");
    println!(
        "hops  system     records      p50      p99     p99.9      max  missing duplicates  sender late ms   commits commit ms"
    );
    let mut rows = Vec::new();
    for &hops in &args.hops {
        // Without a hop both systems would measure the same thing: producer, broker, reader.
        let systems = if hops == 0 {
            &args.systems[..1]
        } else {
            &args.systems[..]
        };
        for &system in systems {
            let o = run_chain(&args, hops, system, peer.as_ref()).await?;
            print_outcome(hops, system, &o);
            rows.push((hops, system, o));
        }
    }
    if args.systems.len() > 1 {
        println!("side by side, ms:");
        let names: Vec<String> = args
            .systems
            .iter()
            .map(|s| format!("  {:<26}", s.label()))
            .collect();
        println!("    {}", names.join(""));
        let quantiles = format!("  {:>8} {:>8} {:>8}", "p50", "p99", "p99.9");
        println!("hops{}", quantiles.repeat(args.systems.len()));
        for &hops in &args.hops {
            let mut line = format!("{hops:>4}");
            for &system in &args.systems {
                match rows.iter().find(|(h, s, _)| *h == hops && *s == system) {
                    Some((_, _, o)) => {
                        let h = &o.latencies;
                        line += &format!(
                            "  {:>8.1} {:>8.1} {:>8.1}",
                            ms(h, 0.5),
                            ms(h, 0.99),
                            ms(h, 0.999)
                        );
                    }
                    None => line += &format!("  {:>26}", "-"),
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}
