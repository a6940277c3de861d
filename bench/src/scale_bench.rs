//! `scale-bench`: one application run as several instances, each its own process, of one
//! consumer group. `--app counter` (default) is the runtime's reference counter (a store per
//! key, one changelog record and one output per input); `--app stock` and `--app order` are the
//! shop's processors (`pickple-processor`, built next to this binary) on a private copy of the
//! topic catalogue: the stock app reserving one unit per record over `--products` products
//! created beforehand, the order app placing one-line orders (its payment deadlines pending):
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
    cores, create_topics, dir_size, machine_busy, median, process_cpu, run_prefix,
    wait_for_stdin_close, Worker,
};
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{partition_for, run_until, RuntimeConfig};
use pickple_schemas::{OrderCommand, OrderLine, ShippingAddress, StockCommand};
use pickple_topics::{catalogue_with, Replication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Which application the instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AppKind {
    Counter,
    Stock,
    Order,
}

impl AppKind {
    fn name(self) -> &'static str {
        match self {
            AppKind::Counter => "counter",
            AppKind::Stock => "stock",
            AppKind::Order => "order",
        }
    }

    fn input(self) -> &'static str {
        match self {
            AppKind::Counter => "count-input",
            AppKind::Stock => pickple_schemas::topic::STOCK_COMMANDS,
            AppKind::Order => pickple_schemas::topic::ORDER_COMMANDS,
        }
    }

    /// The `i`th input record of a load: `(key, value)`.
    fn record(self, i: usize, keys: usize, products: usize) -> (String, Vec<u8>) {
        match self {
            AppKind::Counter => (format!("key-{}", i % keys), b"{}".to_vec()),
            AppKind::Stock => {
                let product_id = format!("p{}", i % products);
                let cmd = reserve(&product_id, format!("o{i}"), format!("buyer{}", i % 1000));
                (product_id, serde_json::to_vec(&cmd).expect("serializes"))
            }
            AppKind::Order => {
                let order_id = format!("o{i}");
                let cmd = place_order(&order_id, i, products);
                (order_id, serde_json::to_vec(&cmd).expect("serializes"))
            }
        }
    }

    /// A record keyed `key` that the app processes (a reserve of a product that does not exist
    /// is refused, which is processing too).
    fn probe(self, key: String) -> (String, Vec<u8>) {
        let value = match self {
            AppKind::Counter => b"{}".to_vec(),
            AppKind::Stock => {
                serde_json::to_vec(&reserve(&key, format!("order-{key}"), "prober".into()))
                    .expect("serializes")
            }
            AppKind::Order => serde_json::to_vec(&place_order(&key, 0, 1)).expect("serializes"),
        };
        (key, value)
    }

    /// Records that set a load up before it is measured: the stock app's products, each with
    /// more units than any run reserves.
    fn setup(self, products: usize) -> Vec<(String, Vec<u8>)> {
        if self != AppKind::Stock {
            return Vec::new();
        }
        (0..products)
            .flat_map(|i| {
                let product_id = format!("p{i}");
                let create = StockCommand::CreateProduct {
                    product_id: product_id.clone(),
                    vendor_id: "v1".into(),
                    name: format!("product {i}"),
                    description: String::new(),
                    price: 1000,
                    image_url: None,
                    public: true,
                };
                let stock = StockCommand::SetStock {
                    product_id: product_id.clone(),
                    quantity: 1_000_000_000,
                };
                [create, stock].map(|c| (product_id.clone(), serde_json::to_vec(&c).unwrap()))
            })
            .collect()
    }
}

/// A reserve of one unit of `product_id` for `order_id`, placed now.
fn reserve(product_id: &str, order_id: String, username: String) -> StockCommand {
    StockCommand::Reserve {
        product_id: product_id.to_string(),
        order_id,
        username,
        quantity: 1,
        placed_at: pickple_runtime::now_millis(),
    }
}

/// Order `order_id`: one unit of product `p{i % products}` for buyer `buyer{i % 1000}`.
fn place_order(order_id: &str, i: usize, products: usize) -> OrderCommand {
    OrderCommand::PlaceOrder {
        order_id: order_id.to_string(),
        username: format!("buyer{}", i % 1000),
        email: format!("buyer{}@pickple.local", i % 1000),
        lines: vec![OrderLine {
            product_id: format!("p{}", i % products),
            quantity: 1,
        }],
        shipping: Some(ShippingAddress {
            recipient: "Ann".into(),
            address: "1 Main St".into(),
            contact: "010-1234-5678".into(),
            request: None,
        }),
    }
}

#[derive(Parser)]
struct Args {
    /// The application to scale.
    #[arg(long, value_enum, default_value_t = AppKind::Counter)]
    app: AppKind,
    /// Products the stock and order loads spread over.
    #[arg(long, default_value_t = 1_000)]
    products: usize,
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
    app: AppKind,
    brokers: String,
    prefix: String,
    partitions: i32,
    state: tempfile::TempDir,
    workers: Vec<(String, u16, Worker)>,
}

/// The command that runs one instance of `app`.
fn instance_command(
    args: &Args,
    prefix: &str,
    name: &str,
    port: u16,
    standby: usize,
    state: &std::path::Path,
) -> anyhow::Result<std::process::Command> {
    let exe = std::env::current_exe()?;
    let mut command = match args.app {
        AppKind::Counter => {
            let mut c = std::process::Command::new(&exe);
            c.args(["--worker", "--brokers", &args.brokers, "--prefix", prefix])
                .args(["--instance", name, "--port", &port.to_string()])
                .args(["--standby", &standby.to_string()])
                .arg("--state-dir")
                .arg(state);
            c
        }
        app => {
            let processor = exe.with_file_name("pickple-processor");
            anyhow::ensure!(
                processor.exists(),
                "{} is missing: build it with the same profile (cargo build --release --bin pickple-processor)",
                processor.display()
            );
            let mut c = std::process::Command::new(processor);
            c.args(["--app", app.name()])
                .env("PICKPLE_BROKERS", &args.brokers)
                .env("PICKPLE_TOPIC_PREFIX", prefix)
                .env("PICKPLE_INSTANCE_ID", name)
                .env("PICKPLE_STATE_DIR", state)
                .env("PICKPLE_METRICS_ADDR", format!("127.0.0.1:{port}"))
                .env("PICKPLE_STANDBY_REPLICAS", standby.to_string());
            c
        }
    };
    command.env("RUST_LOG", "warn,rdkafka=error");
    Ok(command)
}

impl Group {
    async fn start(
        args: &Args,
        partitions: i32,
        names: &[&str],
        standby: usize,
    ) -> anyhow::Result<Group> {
        let prefix = run_prefix("scale");
        match args.app {
            AppKind::Counter => {
                let topics: Vec<String> = TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
                create_topics(&args.brokers, &topics, partitions).await?;
            }
            _ => {
                let replication = Replication::from_env().map_err(anyhow::Error::msg)?;
                let topics = catalogue_with(&prefix, partitions);
                pickple_topics::apply(&args.brokers, &topics, &replication).await?;
            }
        }
        let state = tempfile::tempdir()?;
        let mut workers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let port = args.port + i as u16;
            let command = instance_command(args, &prefix, name, port, standby, state.path())?;
            workers.push((name.to_string(), port, Worker::spawn(name, command)?));
        }
        let group = Group {
            app: args.app,
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
                    .map(|(_, port, _)| g.gauge(*port, "pickple_assigned_partitions"))
                    .collect();
                owned.iter().all(|&n| n > 0.0) && owned.iter().sum::<f64>() == partitions as f64
            },
        )?;
        Ok(group)
    }

    fn input(&self) -> String {
        format!("{}{}", self.prefix, self.app.input())
    }

    /// The sum of a metric's series of this group's application on the instance at `port`.
    fn gauge(&self, port: u16, name: &str) -> f64 {
        sum(port, name, self.app.name())
    }

    /// Produce `records` and wait until the group has committed past them: the offsets
    /// committed once they are processed.
    fn load(
        &self,
        observer: &BaseConsumer,
        records: impl Iterator<Item = (String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let before = self.committed(observer)?;
        let n = produce(&self.brokers, &self.input(), records)?;
        self.wait_until("every record committed", Duration::from_secs(900), |g| {
            g.committed(observer).unwrap_or(0) >= before + n as i64
        })
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

    /// The stock load did what it claims: every product's latest view holds its share of the
    /// reserves, none refused.
    fn check_reserved(&self, records: usize, products: usize) -> anyhow::Result<()> {
        let topic = format!("{}{}", self.prefix, pickple_schemas::topic::VIEW_PRODUCTS);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}check", self.prefix))
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut reserved: BTreeMap<String, i64> = BTreeMap::new();
        let mut open = self.partitions;
        let deadline = Instant::now() + Duration::from_secs(120);
        while open > 0 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "could not read {topic} to its end"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    use rdkafka::Message;
                    let view: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or_default())?;
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    let n = view["stock"]["reserved"].as_i64().unwrap_or(-1);
                    reserved.insert(key, n);
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => open -= 1,
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        let want = (records / products) as i64;
        let wrong: Vec<_> = reserved.iter().filter(|(_, n)| **n != want).collect();
        anyhow::ensure!(
            reserved.len() == products && wrong.is_empty(),
            "{} products seen, expected {products} with {want} reserved each; differing: {:?}",
            reserved.len(),
            wrong.iter().take(5).collect::<Vec<_>>()
        );
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
            .set("group.id", format!("{}{}", self.prefix, self.app.name()))
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
            if self.app != AppKind::Counter {
                // The processors stop on SIGTERM (the counter worker when its stdin closes).
                // SAFETY: kill(2) on the pid of our own child.
                unsafe {
                    libc::kill(w.pid() as libc::pid_t, libc::SIGTERM);
                }
            }
            w.stop(Duration::from_secs(60))?;
        }
        // Every topic of the run, whichever app made them, is under its unique prefix.
        pickple_topics::delete_prefixed(&self.brokers, &self.prefix).await?;
        Ok(())
    }
}

/// Produce `records` to `topic`; returns how many.
fn produce(
    brokers: &str,
    topic: &str,
    records: impl Iterator<Item = (String, Vec<u8>)>,
) -> anyhow::Result<usize> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut n = 0;
    for (key, value) in records {
        n += 1;
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
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
    Ok(n)
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

/// The sum of a metric's series of application `app`.
fn sum(port: u16, name: &str, app: &str) -> f64 {
    let prefix = format!("{name}{{app=\"{app}\"");
    scrape(port)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
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
    group.load(&observer, args.app.setup(args.products).into_iter())?;
    let (cpu0, busy0) = (group.cpu(), machine_busy());
    let start = Instant::now();
    let (app, keys, products) = (args.app, args.keys, args.products);
    group.load(
        &observer,
        (0..args.records).map(|i| app.record(i, keys, products)),
    )?;
    let elapsed = start.elapsed();
    let (cpu1, busy1) = (group.cpu(), machine_busy());
    if app == AppKind::Stock && args.records.is_multiple_of(args.products) {
        group.check_reserved(args.records, args.products)?;
    }
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
    group.load(&observer, args.app.setup(args.products).into_iter())?;
    let cpu0 = group.cpu();
    let (app, products) = (args.app, args.products);
    // Every record a key of its own (the counter) or an order of its own: one new store entry.
    group.load(
        &observer,
        (0..args.state_keys).map(|i| app.record(i, usize::MAX, products)),
    )?;
    if replicas > 0 {
        // Read to the end, and still there a second later (an end seen before the last fetch
        // would be reported again at once).
        let since = std::cell::Cell::new(None::<Instant>);
        group.wait_until("the standbys to catch up", Duration::from_secs(600), |g| {
            let caught_up = g.workers.iter().all(|(_, port, _)| {
                g.gauge(*port, "pickple_standby_partitions") > 0.0
                    && g.gauge(*port, "pickple_standby_behind_partitions") == 0.0
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
                dir_size(&group.state.path().join(format!(
                    "{}{}-{n}",
                    group.prefix,
                    group.app.name()
                ))) as f64
                    / (1024.0 * 1024.0)
            })
            .collect(),
    );
    let survivors = [group.workers[0].1, group.workers[2].1];
    let restored0: f64 = survivors
        .iter()
        .map(|&p| group.gauge(p, "pickple_restore_records_total"))
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
    let before = group.committed(&observer)?;
    produce(
        &group.brokers,
        &group.input(),
        probes.into_values().map(|key| app.probe(key)),
    )?;
    let target = before + partitions as i64;
    let moved = std::cell::Cell::new(None::<Duration>);
    group.wait_until(
        "every task to process again",
        Duration::from_secs(600),
        |g| {
            let owned: f64 = survivors
                .iter()
                .map(|&p| g.gauge(p, "pickple_assigned_partitions"))
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
        .map(|&p| group.gauge(p, "pickple_restore_records_total"))
        .sum::<f64>()
        - restored0;
    // An empty f64 sum is -0.0: start from 0.0 so that "none" prints as 0.
    let standby_records = survivors
        .iter()
        .map(|&p| group.gauge(p, "pickple_standby_records_total"))
        .fold(0.0, |a, b| a + b);
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
        println!("\nmedians, app {}, {} inputs in the stores, 3 instances on 6 partitions, one SIGKILLed for good:", args.app.name(), args.state_keys);
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
        "\nmedians, app {}, {} records over {} keys, {} partitions:",
        args.app.name(),
        args.records,
        match args.app {
            AppKind::Counter => args.keys,
            _ => args.products,
        },
        args.partitions
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
