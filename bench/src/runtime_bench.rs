//! `runtime-bench`: records/s through the stateful exactly-once path (the reference counter:
//! a sled store changelogged, outputs and offsets in Kafka transactions) against a plain
//! consume+produce loop (no state, no transactions, auto-committed offsets) and, with
//! `--peer kstreams`, the same counter on Kafka Streams (bench/kstreams-peer), on the same local
//! broker, alternating runs, each on fresh topics (deleted after it) with the same input.
//!
//! Every mode runs as a process of its own (the runtime's counter and the plain loop are this
//! binary again, in a hidden worker mode; the peer is a JVM), so that its CPU and peak RSS are
//! read from /proc for it alone. Throughput is measured from the first record the worker
//! handles to the last one committed (start-up: process start, group join, producer init, is
//! printed apart). Prints every run, the medians and their ratios.
//!
//!   cargo run --release -p pickple-bench --bin runtime-bench -- --records 200000 --runs 5
//!   cargo run --release -p pickple-bench --bin runtime-bench -- --peer kstreams --runs 3
//!
//! `--traced` gives every input the standard headers and a trace of its own, as records from the
//! gateway have.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use pickple_bench::{
    announce_first, cores, create_topics, delete_topics, dir_size, machine_busy, median, peak_rss,
    process_cpu, run_prefix, wait_for_stdin_close, CommitTuning, KStreamsPeer, Worker,
};
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{
    run_until, Context, Metrics, ProcessError, Processor, Record, RuntimeConfig, INPUT_FETCH,
};
use pickple_schemas::RecordHeaders;
use pickple_telemetry::TraceParent;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Input records per run [default: 100000, or 1000000 with --peer, so that the JVM's JIT
    /// has warmed up for most of the run].
    #[arg(long)]
    records: Option<usize>,
    /// Distinct keys (state entries).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[command(flatten)]
    tuning: CommitTuning,
    /// Runs of each mode (alternating).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Give every input the standard headers with a trace of its own, as the gateway does for
    /// each command: the runtime then processes each record in a span; the plain loop and
    /// Kafka Streams forward the headers.
    #[arg(long)]
    traced: bool,
    /// Also run the counter on this peer, alternating with the runtime and the plain loop.
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// Options for the peer's JVM (e.g. "-Xmx256m"); none by default: the JVM's own defaults.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    java_opts: String,
    /// Internal: run as the worker process of one mode.
    #[arg(long, value_enum, hide = true)]
    worker: Option<WorkerMode>,
    /// Internal: the worker's topic prefix.
    #[arg(long, hide = true, default_value = "")]
    prefix: String,
    /// Internal: the runtime worker's state directory.
    #[arg(long, hide = true)]
    state_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Peer {
    /// The counter on Kafka Streams (bench/kstreams-peer), built with scripts/kstreams-peer.sh.
    Kstreams,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum WorkerMode {
    Counter,
    Plain,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    Runtime,
    KStreams,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Plain => "plain loop",
            Mode::Runtime => "runtime EOS",
            Mode::KStreams => "kstreams EOS",
        }
    }
}

const PARTITIONS: i32 = 6;

/// The topics of one run, all under `prefix`: the runtime counter's (the other modes use the
/// first two).
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

/// The peer's application id, hence its group and the prefix of the changelog it creates.
fn kstreams_app(prefix: &str) -> String {
    format!("{prefix}kstreams-counter")
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

/// Worker: the plain loop. Consumes every input record and produces one output per record, no
/// state; prints `done` once `records` outputs are acknowledged.
fn plain_worker(brokers: &str, prefix: &str, records: usize) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{prefix}plain"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true");
    // As the runtime's input consumers fetch (see INPUT_FETCH).
    for (key, value) in INPUT_FETCH {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create()?;
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
                if seen == 0 {
                    announce_first();
                }
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
    println!("done");
    wait_for_stdin_close();
    Ok(())
}

/// The counter, announcing its first record to the benchmark.
struct Announced {
    counter: Counter,
    seen: Arc<AtomicBool>,
}

impl Processor for Announced {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        if !self.seen.load(Ordering::Relaxed) && !self.seen.swap(true, Ordering::Relaxed) {
            announce_first();
        }
        self.counter.process(ctx, record)
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        self.counter.punctuate(ctx)
    }
}

/// Worker: the runtime's reference counter until stdin closes; then prints
/// `commits <count> <seconds committing>`.
fn counter_worker(args: &Args) -> anyhow::Result<()> {
    let state = args
        .state_dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--state-dir is required"))?;
    let mut config = RuntimeConfig::local(state);
    config.brokers = args.brokers.clone();
    config.topic_prefix = args.prefix.clone();
    args.tuning.apply(&mut config);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            wait_for_stdin_close();
            stop.store(true, Ordering::Relaxed);
        });
    }
    let seen = Arc::new(AtomicBool::new(false));
    run_until(
        config,
        counter_spec(),
        move |_| Announced {
            counter: Counter,
            seen: seen.clone(),
        },
        stop,
    )?;
    let latency = Metrics::global()
        .commit_latency
        .with_label_values(&["counter"]);
    println!(
        "commits {} {}",
        latency.get_sample_count(),
        latency.get_sample_sum()
    );
    Ok(())
}

/// How the benchmark tells that a worker has committed all `records`.
enum End {
    /// The worker prints `done` (the plain loop: its outputs are visible once acknowledged).
    Printed,
    /// The group's committed offsets on the input reach the record count: committed in the
    /// same transactions as the outputs, they mean every output is visible read_committed.
    Committed { group: String, input: String },
}

/// One run's figures.
struct Measured {
    rate: f64,
    startup: Duration,
    elapsed: Duration,
    /// CPU of the worker process per record (µs) over the measured window.
    cpu: f64,
    /// CPU of the whole machine (broker included) per record (µs), where known.
    machine: Option<f64>,
    machine_cores_busy: Option<f64>,
    peak_rss: Option<u64>,
    /// What the worker printed after the window.
    tail: Vec<String>,
}

fn committed_total(consumer: &BaseConsumer, input: &str) -> anyhow::Result<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(input, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

/// Watch a worker through its run: from its first record to `end`, then stop it.
fn measure(
    brokers: &str,
    mut worker: Worker,
    spawned: Instant,
    end: End,
    records: usize,
) -> anyhow::Result<Measured> {
    let pid = worker.pid();
    // A JVM's start-up and the first group join take seconds on a busy machine.
    worker.wait_for_line("first", Duration::from_secs(180))?;
    let first = Instant::now();
    let (cpu0, busy0) = (process_cpu(pid), machine_busy());
    // Generous: only a stalled worker takes this long.
    let limit = Duration::from_secs(60) + Duration::from_millis(records as u64 / 5);
    match end {
        End::Printed => {
            worker.wait_for_line("done", limit)?;
        }
        End::Committed { group, input } => {
            let observer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("group.id", &group)
                // Asks the coordinator for stable offsets only (KIP-447): none of a
                // transaction still open.
                .set("isolation.level", "read_committed")
                .create()?;
            while committed_total(&observer, &input)? < records as i64 {
                worker.check_alive()?;
                anyhow::ensure!(first.elapsed() < limit, "not all committed after {limit:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let elapsed = first.elapsed();
    let (cpu1, busy1, peak) = (process_cpu(pid), machine_busy(), peak_rss(pid));
    let tail = worker.stop(Duration::from_secs(60))?;
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => per_record(b - a),
        _ => anyhow::bail!("cannot read /proc/{pid}/stat"),
    };
    let busy = busy0.zip(busy1).map(|(a, b)| b - a);
    Ok(Measured {
        rate: records as f64 / elapsed.as_secs_f64(),
        startup: first - spawned,
        elapsed,
        cpu,
        machine: busy.map(per_record),
        machine_cores_busy: busy.map(|b| b.as_secs_f64() / elapsed.as_secs_f64()),
        peak_rss: peak,
        tail,
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// One run of one mode on fresh topics.
async fn run_mode(
    args: &Args,
    records: usize,
    mode: Mode,
    peer: Option<&KStreamsPeer>,
) -> anyhow::Result<Measured> {
    let prefix = run_prefix("bench");
    let topics = topic_names(&prefix);
    create_topics(&args.brokers, &topics, PARTITIONS).await?;
    produce_input(&args.brokers, &topics[0], records, args.keys, args.traced)?;
    let state = tempfile::tempdir()?;
    let this = std::env::current_exe()?;
    let (command, end) = match mode {
        Mode::Plain => {
            let mut c = std::process::Command::new(this);
            c.args(["--worker", "plain", "--brokers", &args.brokers])
                .args(["--prefix", &prefix, "--records", &records.to_string()]);
            (c, End::Printed)
        }
        Mode::Runtime => {
            let mut c = std::process::Command::new(this);
            c.args(["--worker", "counter", "--brokers", &args.brokers])
                .args(["--prefix", &prefix])
                .arg("--state-dir")
                .arg(state.path())
                .args(args.tuning.to_args());
            let end = End::Committed {
                group: format!("{prefix}counter"),
                input: topics[0].clone(),
            };
            (c, end)
        }
        Mode::KStreams => {
            let peer = peer.expect("peer built");
            let state_dir = state.path().to_string_lossy().to_string();
            let c = peer.command(
                "counter",
                &[
                    "--brokers",
                    &args.brokers,
                    "--topic-prefix",
                    &prefix,
                    "--state-dir",
                    &state_dir,
                ],
            );
            let end = End::Committed {
                group: kstreams_app(&prefix),
                input: topics[0].clone(),
            };
            (c, end)
        }
    };
    let spawned = Instant::now();
    let worker = Worker::spawn(mode.label(), command)?;
    let brokers = args.brokers.clone();
    let measured =
        tokio::task::spawn_blocking(move || measure(&brokers, worker, spawned, end, records))
            .await?;
    let disk = dir_size(state.path());
    let mut to_delete = topics;
    to_delete.push(format!("{}-counts-changelog", kstreams_app(&prefix)));
    delete_topics(&args.brokers, &to_delete).await?;
    let mut m = measured?;
    if mode != Mode::Plain {
        m.tail.push(format!("state on disk {:.1} MiB", mib(disk)));
    }
    Ok(m)
}

fn print_run(run: usize, mode: Mode, m: &Measured) {
    let mut line = format!(
        "run {run} {:>12}: {:>8.0} records/s ({:.2} s after a {:.2} s start-up), process CPU {:.1} µs/record",
        mode.label(),
        m.rate,
        m.elapsed.as_secs_f64(),
        m.startup.as_secs_f64(),
        m.cpu
    );
    if let (Some(machine), Some(busy)) = (m.machine, m.machine_cores_busy) {
        line += &format!(
            ", machine CPU {machine:.1} µs/record, machine busy {busy:.2} of {} cores",
            cores()
        );
    }
    if let Some(peak) = m.peak_rss {
        line += &format!(", peak RSS {:.1} MiB", mib(peak));
    }
    for extra in &m.tail {
        match extra
            .strip_prefix("commits ")
            .and_then(|s| s.split_once(' '))
        {
            Some((n, secs)) => {
                let secs: f64 = secs.parse().unwrap_or(f64::NAN);
                line += &format!(", {n} commits ({secs:.2} s committing, shutdown included)");
            }
            None => line += &format!(", {extra}"),
        }
    }
    println!("{line}");
}

/// The medians of one mode's runs.
struct Medians {
    rate: f64,
    cpu: f64,
    machine: Option<f64>,
    peak_rss: Option<f64>,
}

fn medians(runs: &[Measured]) -> Medians {
    let all = |f: &dyn Fn(&Measured) -> Option<f64>| {
        let v: Option<Vec<f64>> = runs.iter().map(f).collect();
        v.filter(|v| !v.is_empty()).map(median)
    };
    Medians {
        rate: median(runs.iter().map(|m| m.rate).collect()),
        cpu: median(runs.iter().map(|m| m.cpu).collect()),
        machine: all(&|m| m.machine),
        peak_rss: all(&|m| m.peak_rss.map(mib)),
    }
}

fn opt(v: Option<f64>, precision: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.precision$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    opt(a.zip(b).map(|(a, b)| a / b), 2)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let records = args.records.unwrap_or(if args.peer.is_some() {
        1_000_000
    } else {
        100_000
    });
    let peer = match args.peer {
        Some(Peer::Kstreams) => Some(KStreamsPeer::build(&args.java_opts)?),
        None => None,
    };
    let mut modes = vec![Mode::Plain, Mode::Runtime];
    if peer.is_some() {
        modes.push(Mode::KStreams);
    }
    println!(
        "{} records{}, {} keys, {} partitions, broker {}, {}",
        records,
        if args.traced { " (traced)" } else { "" },
        args.keys,
        PARTITIONS,
        args.brokers,
        args.tuning.describe()
    );
    let mut results: Vec<Vec<Measured>> = modes.iter().map(|_| Vec::new()).collect();
    for run in 1..=args.runs {
        for (i, &mode) in modes.iter().enumerate() {
            let m = run_mode(&args, records, mode, peer.as_ref()).await?;
            print_run(run, mode, &m);
            results[i].push(m);
        }
    }
    let med: Vec<Medians> = results.iter().map(|r| medians(r)).collect();
    println!(
        "medians of {} runs:  {:>10} {:>18} {:>18} {:>14}",
        args.runs, "records/s", "process µs/record", "machine µs/record", "peak RSS MiB"
    );
    for (mode, m) in modes.iter().zip(&med) {
        println!(
            "  {:<18} {:>10.0} {:>18.1} {:>18} {:>14}",
            mode.label(),
            m.rate,
            m.cpu,
            opt(m.machine, 1),
            opt(m.peak_rss, 1)
        );
    }
    let (plain, eos) = (&med[0], &med[1]);
    println!(
        "ratio runtime EOS / plain loop: {:.2} records/s, x{:.1} process CPU per record",
        eos.rate / plain.rate,
        eos.cpu / plain.cpu
    );
    if let Some(em) = eos.machine {
        // What the EOS path could reach here if it kept every core busy, as nothing else may
        // use them: the ceiling of that ratio on this machine.
        let ceiling = cores() as f64 * 1e6 / em;
        println!(
            "  with all {} cores busy at its machine CPU per record the runtime would reach {ceiling:.0} records/s, {:.2} of the plain loop's median",
            cores(),
            ceiling / plain.rate
        );
    }
    if let Some(ks) = med.get(2) {
        println!(
            "ratio runtime / kstreams:       {:.2} records/s, {:.2} process CPU per record, {} machine CPU per record, {} peak RSS",
            eos.rate / ks.rate,
            eos.cpu / ks.cpu,
            ratio(eos.machine, ks.machine),
            ratio(eos.peak_rss, ks.peak_rss)
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // As in the processors' binaries, so that traced records cost here what they cost there
    // (their spans are enabled at info). Logs go to stderr; a worker's stdout talks to us.
    let _telemetry = pickple_telemetry::init("runtime-bench", "info,rdkafka=warn");
    match args.worker {
        Some(WorkerMode::Counter) => counter_worker(&args),
        Some(WorkerMode::Plain) => {
            let records = args.records.unwrap_or(0);
            plain_worker(&args.brokers, &args.prefix, records)
        }
        // Workers run without tokio: nothing of theirs needs it, and its threads would count
        // in their figures.
        None => tokio::runtime::Runtime::new()?.block_on(bench(args)),
    }
}
