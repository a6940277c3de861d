//! `scale-bench`: the runtime's reference counter (a store per key, one changelog record and one
//! output per input) run as several instances, each its own process, of one consumer group:
//!
//! * `throughput` (default): 1, 2, 3... instances on one input of `--partitions` partitions,
//!   started and settled before the input is produced; records/s from the first record produced
//!   to the group's committed offsets reaching the end, the instances' CPU per record, and the
//!   whole machine's (broker included);
//! * `--failover`: three instances, one SIGKILLed for good once `--state-keys` keys are in the
//!   stores, with 0 and then 1 standby replica (`PICKPLE_STANDBY_REPLICAS`): how long until the
//!   survivors own every task and until a new record on every partition is processed, how many
//!   changelog records they restored to get there, and what the standbys cost each instance
//!   beforehand (CPU over the load, state on disk).
//!
//! Runs alternate between the settings, medians are printed at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pickple_bench::{
    cores, create_topics, delete_topics, dir_size, machine_busy, median, process_cpu, run_prefix,
    wait_for_stdin_close, Worker,
};
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{partition_for, run_until, RuntimeConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    /// Partitions of every topic of a run.
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Instance counts to compare (throughput).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    instances: Vec<usize>,
    /// Input records per throughput run.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Distinct keys in a throughput run.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Runs of each setting.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measure the takeover after an instance loss instead of the throughput.
    #[arg(long)]
    failover: bool,
    /// Standby replica counts to compare (failover).
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    replicas: Vec<usize>,
    /// Keys in the stores when the instance is lost (failover): one changelog record each.
    #[arg(long, default_value_t = 200_000)]
    state_keys: usize,
    /// First metrics port; instance i serves on the next ones.
    #[arg(long, default_value_t = 19600)]
    port: u16,
    /// Internal: run as one instance.
    #[arg(long, hide = true)]
    worker: bool,
    #[arg(long, hide = true, default_value = "")]
    prefix: String,
    #[arg(long, hide = true, default_value = "0")]
    instance: String,
    #[arg(long, hide = true)]
    state_dir: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    standby: usize,
}

const TOPICS: [&str; 6] = [
    "count-input",
    "count-output",
    "count-reminders",
    "counter-dlq",
    "counter-counts-changelog",
    "counter-timers-changelog",
];

/// One instance until its stdin closes.
fn worker(args: &Args) -> anyhow::Result<()> {
    let state = args
        .state_dir
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--state-dir is required"))?;
    let mut config = RuntimeConfig::local(state);
    config.brokers = args.brokers.clone();
    config.topic_prefix = args.prefix.clone();
    config.instance_id = args.instance.clone();
    config.standby_replicas = args.standby;
    config.metrics_addr = Some(format!("127.0.0.1:{}", args.port));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            wait_for_stdin_close();
            stop.store(true, Ordering::Relaxed);
        });
    }
    run_until(config, counter_spec(), |_| Counter, stop)?;
    Ok(())
}

/// A run's instances and topics.
struct Group {
    brokers: String,
    prefix: String,
    partitions: i32,
    state: tempfile::TempDir,
    workers: Vec<(String, u16, Worker)>,
}

impl Group {
    async fn start(
        args: &Args,
        partitions: i32,
        names: &[&str],
        standby: usize,
    ) -> anyhow::Result<Group> {
        let prefix = run_prefix("scale");
        let topics: Vec<String> = TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
        create_topics(&args.brokers, &topics, partitions).await?;
        let state = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let mut workers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let port = args.port + i as u16;
            let mut command = std::process::Command::new(&exe);
            command
                .args(["--worker", "--brokers", &args.brokers, "--prefix", &prefix])
                .args(["--instance", name, "--port", &port.to_string()])
                .args(["--standby", &standby.to_string()])
                .arg("--state-dir")
                .arg(state.path())
                .env("RUST_LOG", "warn,rdkafka=error");
            workers.push((name.to_string(), port, Worker::spawn(name, command)?));
        }
        let group = Group {
            brokers: args.brokers.clone(),
            prefix,
            partitions,
            state,
            workers,
        };
        group.wait_until(
            "every instance to own tasks",
            Duration::from_secs(120),
            |g| {
                let owned: Vec<f64> = g
                    .workers
                    .iter()
                    .map(|(_, port, _)| gauge(*port, "pickple_assigned_partitions"))
                    .collect();
                owned.iter().all(|&n| n > 0.0) && owned.iter().sum::<f64>() == partitions as f64
            },
        )?;
        Ok(group)
    }

    fn input(&self) -> String {
        format!("{}count-input", self.prefix)
    }

    fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Group) -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        while !done(self) {
            anyhow::ensure!(start.elapsed() < limit, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Offsets the group has committed on the input, summed over its partitions (stable ones
    /// only: committed in the same transactions as the outputs).
    fn committed(&self, observer: &BaseConsumer) -> anyhow::Result<i64> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.input(), p);
        }
        let committed = observer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum())
    }

    fn observer(&self) -> anyhow::Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}counter", self.prefix))
            .set("isolation.level", "read_committed")
            .create()?)
    }

    fn cpu(&self) -> Vec<Option<Duration>> {
        self.workers
            .iter()
            .map(|(_, _, w)| process_cpu(w.pid()))
            .collect()
    }

    async fn stop(self) -> anyhow::Result<()> {
        for (_, _, w) in self.workers {
            w.stop(Duration::from_secs(60))?;
        }
        let topics: Vec<String> = TOPICS
            .iter()
            .map(|t| format!("{}{t}", self.prefix))
            .collect();
        delete_topics(&self.brokers, &topics).await
    }
}

fn produce(brokers: &str, topic: &str, keys: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()?;
    for key in keys {
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

/// The /metrics text of an instance, or "" while it is not serving.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let mut body = String::new();
    if write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").is_err()
        || stream.read_to_string(&mut body).is_err()
    {
        return String::new();
    }
    body
}

/// The sum of a metric's series of the counter app.
fn sum(port: u16, name: &str) -> f64 {
    let prefix = format!("{name}{{app=\"counter\"");
    scrape(port)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn gauge(port: u16, name: &str) -> f64 {
    sum(port, name)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

struct Throughput {
    rate: f64,
    cpu: f64,
    machine: Option<f64>,
}

async fn throughput(args: &Args, instances: usize) -> anyhow::Result<Throughput> {
    let names: Vec<String> = (0..instances).map(|i| i.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let group = Group::start(args, args.partitions, &names, 0).await?;
    let observer = group.observer()?;
    let (cpu0, busy0) = (group.cpu(), machine_busy());
    let start = Instant::now();
    let keys = args.keys;
    produce(
        &group.brokers,
        &group.input(),
        (0..args.records).map(|i| format!("key-{}", i % keys)),
    )?;
    group.wait_until("every record committed", Duration::from_secs(600), |g| {
        g.committed(&observer).unwrap_or(0) >= args.records as i64
    })?;
    let elapsed = start.elapsed();
    let (cpu1, busy1) = (group.cpu(), machine_busy());
    let per_record = |d: Duration| d.as_secs_f64() * 1e6 / args.records as f64;
    let cpu: Duration = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => *b - *a,
            _ => Duration::ZERO,
        })
        .sum();
    group.stop().await?;
    Ok(Throughput {
        rate: args.records as f64 / elapsed.as_secs_f64(),
        cpu: per_record(cpu),
        machine: busy0.zip(busy1).map(|(a, b)| per_record(b - a)),
    })
}

struct Takeover {
    /// From the SIGKILL until the survivors own every task.
    moved: Duration,
    /// From the SIGKILL until a record produced right after it on every partition is processed.
    processing: Duration,
    restored: f64,
    standby_records: f64,
    /// CPU per instance over the load (producing and processing `state_keys` records, and the
    /// standbys catching up), seconds.
    load_cpu: f64,
    /// State on disk per instance after the load, MiB.
    disk: f64,
}

async fn failover(args: &Args, replicas: usize) -> anyhow::Result<Takeover> {
    let partitions = 6;
    let group = Group::start(args, partitions, &["a", "b", "c"], replicas).await?;
    let observer = group.observer()?;
    let cpu0 = group.cpu();
    produce(
        &group.brokers,
        &group.input(),
        (0..args.state_keys).map(|i| format!("key-{i}")),
    )?;
    group.wait_until("the state to be committed", Duration::from_secs(600), |g| {
        g.committed(&observer).unwrap_or(0) >= args.state_keys as i64
    })?;
    if replicas > 0 {
        // Read to the end, and still there a second later (an end seen before the last fetch
        // would be reported again at once).
        let since = std::cell::Cell::new(None::<Instant>);
        group.wait_until("the standbys to catch up", Duration::from_secs(600), |g| {
            let caught_up = g.workers.iter().all(|(_, port, _)| {
                gauge(*port, "pickple_standby_partitions") > 0.0
                    && gauge(*port, "pickple_standby_behind_partitions") == 0.0
            });
            if !caught_up {
                since.set(None);
                return false;
            }
            let first = since.get().unwrap_or_else(Instant::now);
            since.set(Some(first));
            first.elapsed() >= Duration::from_secs(1)
        })?;
    }
    let cpu1 = group.cpu();
    let load_cpu = median(
        cpu0.iter()
            .zip(&cpu1)
            .filter_map(|(a, b)| Some(secs(b.as_ref()?.saturating_sub(*a.as_ref()?))))
            .collect(),
    );
    let disk = median(
        ["a", "b", "c"]
            .iter()
            .map(|n| {
                dir_size(
                    &group
                        .state
                        .path()
                        .join(format!("{}counter-{n}", group.prefix)),
                ) as f64
                    / (1024.0 * 1024.0)
            })
            .collect(),
    );
    let survivors = [group.workers[0].1, group.workers[2].1];
    let restored0: f64 = survivors
        .iter()
        .map(|&p| sum(p, "pickple_restore_records_total"))
        .sum();

    let killed = Instant::now();
    // SAFETY: kill(2) on the pid of our own child.
    unsafe {
        libc::kill(group.workers[1].2.pid() as libc::pid_t, libc::SIGKILL);
    }
    // One record for every partition, right away: each is processed once its task runs again.
    let mut probes: BTreeMap<i32, String> = BTreeMap::new();
    for i in 0.. {
        let key = format!("probe-{i}");
        probes
            .entry(partition_for(key.as_bytes(), partitions))
            .or_insert(key);
        if probes.len() == partitions as usize {
            break;
        }
    }
    produce(&group.brokers, &group.input(), probes.into_values())?;
    let target = (args.state_keys + partitions as usize) as i64;
    let moved = std::cell::Cell::new(None::<Duration>);
    group.wait_until(
        "every task to process again",
        Duration::from_secs(600),
        |g| {
            let owned: f64 = survivors
                .iter()
                .map(|&p| gauge(p, "pickple_assigned_partitions"))
                .sum();
            if moved.get().is_none() && owned == partitions as f64 {
                moved.set(Some(killed.elapsed()));
            }
            g.committed(&observer).unwrap_or(0) >= target
        },
    )?;
    let processing = killed.elapsed();
    let restored: f64 = survivors
        .iter()
        .map(|&p| sum(p, "pickple_restore_records_total"))
        .sum::<f64>()
        - restored0;
    let standby_records = survivors
        .iter()
        .map(|&p| sum(p, "pickple_standby_records_total"))
        .sum();
    group.stop().await?;
    Ok(Takeover {
        moved: moved.get().unwrap_or(processing),
        processing,
        restored,
        standby_records,
        load_cpu,
        disk,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.worker {
        return worker(&args);
    }
    println!(
        "scale-bench: {} core(s), broker {}, {} run(s) of each setting",
        cores(),
        args.brokers,
        args.runs
    );
    if args.failover {
        let mut runs: BTreeMap<usize, Vec<Takeover>> = BTreeMap::new();
        for run in 1..=args.runs {
            for &r in &args.replicas {
                let t = failover(&args, r).await?;
                println!(
                    "run {run} standby {r}: survivors own every task {:.2} s and process new input on every task {:.2} s after the SIGKILL; restored {:.0} records; standbys applied {:.0}; per instance over the load: {:.2} s CPU, {:.1} MiB state",
                    secs(t.moved), secs(t.processing), t.restored, t.standby_records, t.load_cpu, t.disk
                );
                runs.entry(r).or_default().push(t);
            }
        }
        println!("\nmedians, {} keys in the stores, 3 instances on 6 partitions, one SIGKILLed for good:", args.state_keys);
        println!("| standby replicas | tasks moved | new input processed on every task | records restored | CPU per instance over the load | state per instance |");
        println!("|---|---|---|---|---|---|");
        for (r, ts) in &runs {
            println!(
                "| {r} | {:.2} s | {:.2} s | {:.0} | {:.2} s | {:.1} MiB |",
                median(ts.iter().map(|t| secs(t.moved)).collect()),
                median(ts.iter().map(|t| secs(t.processing)).collect()),
                median(ts.iter().map(|t| t.restored).collect()),
                median(ts.iter().map(|t| t.load_cpu).collect()),
                median(ts.iter().map(|t| t.disk).collect()),
            );
        }
        return Ok(());
    }
    let mut runs: BTreeMap<usize, Vec<Throughput>> = BTreeMap::new();
    for run in 1..=args.runs {
        for &k in &args.instances {
            let t = throughput(&args, k).await?;
            println!(
                "run {run}, {k} instance(s): {:.0} records/s, instances' CPU {:.1} µs/record, machine {} µs/record",
                t.rate,
                t.cpu,
                t.machine.map_or("?".into(), |m| format!("{m:.1}"))
            );
            runs.entry(k).or_default().push(t);
        }
    }
    println!(
        "\nmedians, {} records over {} keys, {} partitions:",
        args.records, args.keys, args.partitions
    );
    println!("| instances | records/s | instances' CPU µs/record | machine CPU µs/record |");
    println!("|---|---|---|---|");
    for (k, ts) in &runs {
        println!(
            "| {k} | {:.0} | {:.1} | {:.1} |",
            median(ts.iter().map(|t| t.rate).collect()),
            median(ts.iter().map(|t| t.cpu).collect()),
            median(ts.iter().filter_map(|t| t.machine).collect()),
        );
    }
    Ok(())
}
