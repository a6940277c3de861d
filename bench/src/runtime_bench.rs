//! `runtime-bench`: records/s through the stateful exactly-once path (the reference counter:
//! a sled store changelogged, outputs and offsets in Kafka transactions) against a plain
//! consume+produce loop (no state, no transactions, auto-committed offsets), on the same local
//! broker, alternating runs, each on fresh topics (deleted after it) with the same input.
//! Throughput is measured from the first record processed to the last one committed (start-up:
//! group join, producer init, restore, is printed apart). Prints every run, the medians and
//! their ratio.
//!
//!   cargo run --release -p pickple-bench --bin runtime-bench -- --records 200000 --runs 5
//!
//! `--traced` gives every input the standard headers and a trace of its own, as records from the
//! gateway have.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{run_until, Metrics, RuntimeConfig, FETCH_QUEUE_BACKOFF_MS};
use pickple_schemas::RecordHeaders;
use pickple_telemetry::TraceParent;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Give every input the standard headers with a trace of its own, as the gateway does for
    /// each command: the runtime then processes each record in a span; the plain loop forwards
    /// the headers.
    #[arg(long)]
    traced: bool,
}

const PARTITIONS: i32 = 6;

/// CPU used so far: by this process (the client side: poll loop, librdkafka's threads, sled)
/// and, on Linux, by the whole machine (broker included). Taken at both ends of a measured
/// window, it tells what a record costs and whether the cores were saturated.
struct Cpu {
    process: Duration,
    machine_busy: Option<Duration>,
}

impl Cpu {
    fn now() -> Cpu {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let process = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            tv(usage.ru_utime) + tv(usage.ru_stime)
        };
        Cpu {
            process,
            machine_busy: machine_busy(),
        }
    }

    /// What the window since `start` cost per record.
    fn report(&self, start: &Cpu, records: usize, elapsed: Duration) -> CpuUse {
        let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
        let client = per_record(self.process - start.process);
        let busy = match (self.machine_busy, start.machine_busy) {
            (Some(end), Some(begin)) => Some(end - begin),
            _ => None,
        };
        let text = match busy {
            Some(busy) => format!(
                "client CPU {client:.1} µs/record, machine CPU {:.1} µs/record, machine busy {:.2} of {} cores",
                per_record(busy),
                busy.as_secs_f64() / elapsed.as_secs_f64(),
                cores()
            ),
            None => format!("client CPU {client:.1} µs/record"),
        };
        CpuUse {
            client,
            machine: busy.map(per_record),
            text,
        }
    }
}

/// CPU per record (µs) over a measured window: this process's, and the whole machine's (broker
/// included) where known.
struct CpuUse {
    client: f64,
    machine: Option<f64>,
    /// As printed.
    text: String,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Busy time of all CPUs since boot, from the first line of /proc/stat (Linux only).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy.
    let busy: u64 = ticks.iter().sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(busy as f64 / hz as f64))
}

/// The topics of one run, all under `prefix`.
fn topic_names(prefix: &str) -> Vec<String> {
    [
        "count-input",
        "count-output",
        "count-reminders",
        "counter-dlq",
        "counter-counts-changelog",
        "counter-timers-changelog",
    ]
    .iter()
    .map(|n| format!("{prefix}{n}"))
    .collect()
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

async fn create_topics(brokers: &str, prefix: &str) -> anyhow::Result<()> {
    let full = topic_names(prefix);
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
    for r in admin(brokers)?
        .create_topics(&topics, &admin_options())
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    Ok(())
}

/// Delete a run's topics: a broker left holding every earlier run's partitions (thousands after
/// a day of runs) spends ever more of the shared cores on them, and the figures drift.
async fn delete_topics(brokers: &str, prefix: &str) -> anyhow::Result<()> {
    let full = topic_names(prefix);
    let names: Vec<&str> = full.iter().map(String::as_str).collect();
    for r in admin(brokers)?
        .delete_topics(&names, &admin_options())
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("delete {t}: {e}"))?;
    }
    Ok(())
}

fn produce_input(
    brokers: &str,
    topic: &str,
    records: usize,
    keys: usize,
    traced: bool,
) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()?;
    for i in 0..records {
        let key = format!("key-{}", i % keys);
        let mut record = BaseRecord::to(topic).key(&key).payload("{}");
        if traced {
            let mut headers = RecordHeaders::new("Count", uuid::Uuid::new_v4().to_string());
            headers.traceparent = TraceParent::root().to_string();
            record = record.headers(headers.to_kafka());
        }
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
fn plain(brokers: &str, prefix: &str, records: usize) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut first: Option<(Instant, Cpu)> = None;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{prefix}plain"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // As the runtime's consumers: librdkafka's default (1 s) stalls a consumer that
        // empties its queue faster than that.
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
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
                first.get_or_insert_with(|| (Instant::now(), Cpu::now()));
                let mut record = BaseRecord::to(&out)
                    .key(m.key().unwrap_or_default())
                    .payload(m.payload().unwrap_or_default());
                if let Some(headers) = m.headers() {
                    record = record.headers(headers.detach());
                }
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
    Ok(Measured::until_now(started, first, records))
}

/// One run's figures: start-up, the measured window, and its CPU use.
struct Measured {
    startup: Duration,
    elapsed: Duration,
    cpu: CpuUse,
}

impl Measured {
    /// The window from the first record (`first`: when, and the CPU then) to now, for a run
    /// started at `started`.
    fn until_now(started: Instant, first: Option<(Instant, Cpu)>, records: usize) -> Measured {
        let (first, cpu) = first.unwrap_or_else(|| (started, Cpu::now()));
        let elapsed = first.elapsed();
        Measured {
            startup: first - started,
            elapsed,
            cpu: Cpu::now().report(&cpu, records, elapsed),
        }
    }
}

/// The runtime's exactly-once path with the counting processor, in-process.
fn stateful(
    mut config: RuntimeConfig,
    prefix: &str,
    records: usize,
) -> anyhow::Result<(Measured, u64)> {
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
    let mut first: Option<(Instant, Cpu)> = None;
    let latency = Metrics::global()
        .commit_latency
        .with_label_values(&["counter"]);
    let (c0, s0) = (latency.get_sample_count(), latency.get_sample_sum());
    loop {
        if first.is_none() && counter.get() > base {
            first = Some((Instant::now(), Cpu::now()));
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
    let measured = Measured::until_now(started, first, records);
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
    Ok((measured, disk))
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
    // As in the processors' binaries, so that traced records cost here what they cost there
    // (their spans are enabled at info). Logs go to stderr.
    let _telemetry = pickple_telemetry::init("runtime-bench", "info,rdkafka=warn");
    let (mut plain_rates, mut eos_rates) = (Vec::new(), Vec::new());
    let (mut plain_cpu, mut eos_cpu) = (Vec::new(), Vec::new());
    let (mut plain_machine, mut eos_machine) = (Vec::new(), Vec::new());
    println!(
        "{} records{}, {} keys, {} partitions, broker {}",
        args.records,
        if args.traced { " (traced)" } else { "" },
        args.keys,
        PARTITIONS,
        args.brokers
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
                args.traced,
            )?;
            let (brokers, run_prefix) = (args.brokers.clone(), prefix.clone());
            let records = args.records;
            if mode == "plain" {
                let m = tokio::task::spawn_blocking(move || plain(&brokers, &run_prefix, records))
                    .await??;
                let rate = records as f64 / m.elapsed.as_secs_f64();
                println!(
                    "run {run} {mode:>13}: {:>8.0} records/s ({:.2} s after a {:.2} s start-up), {}",
                    rate,
                    m.elapsed.as_secs_f64(),
                    m.startup.as_secs_f64(),
                    m.cpu.text
                );
                plain_rates.push(rate);
                plain_cpu.push(m.cpu.client);
                plain_machine.extend(m.cpu.machine);
            } else {
                let dir = tempfile::tempdir()?;
                let mut config = RuntimeConfig::local(dir.path());
                config.brokers = brokers;
                config.commit_records = args.commit_records;
                config.commit_interval_ms = args.commit_interval_ms;
                let (m, disk) =
                    tokio::task::spawn_blocking(move || stateful(config, &run_prefix, records))
                        .await??;
                let rate = records as f64 / m.elapsed.as_secs_f64();
                println!(
                    "run {run} {mode:>13}: {:>8.0} records/s ({:.2} s after a {:.2} s start-up), {}, sled on disk {:.1} MiB",
                    rate,
                    m.elapsed.as_secs_f64(),
                    m.startup.as_secs_f64(),
                    m.cpu.text,
                    disk as f64 / (1024.0 * 1024.0)
                );
                eos_rates.push(rate);
                eos_cpu.push(m.cpu.client);
                eos_machine.extend(m.cpu.machine);
            }
            delete_topics(&args.brokers, &prefix).await?;
        }
    }
    let (p, e) = (median(plain_rates), median(eos_rates));
    println!("median plain loop:          {p:>8.0} records/s");
    println!("median stateful EOS path:   {e:>8.0} records/s");
    println!("ratio stateful EOS / plain: {:.2}", e / p);
    let (pc, ec) = (median(plain_cpu), median(eos_cpu));
    println!(
        "median client CPU per record: plain {pc:.1} µs, stateful EOS {ec:.1} µs (x{:.1})",
        ec / pc
    );
    if !plain_machine.is_empty() && !eos_machine.is_empty() {
        let (pm, em) = (median(plain_machine), median(eos_machine));
        // What the EOS path could reach here if it kept every core busy, as nothing else may
        // use them: the ceiling of the ratio on this machine.
        let ceiling = cores() as f64 * 1e6 / em;
        println!(
            "median machine CPU per record (broker included): plain {pm:.1} µs, stateful EOS {em:.1} µs; \
             with all {} cores busy the EOS path would reach {ceiling:.0} records/s, {:.2} of the plain loop's median",
            cores(),
            ceiling / p
        );
    }
    Ok(())
}
