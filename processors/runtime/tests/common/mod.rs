//! Helpers for the runtime's tests against the real local broker: a private topic prefix per
//! test (its topics deleted when the test ends), the `pickple-counter` reference app as a child
//! process, read_committed reads, and a printed seed for the tests' random choices.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pickple_schemas::topic;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 6;

/// The reference app's name and topics (`pickple_runtime::reference`); the runtime prefixes
/// each with the sandbox's prefix.
pub const APP: &str = "counter";
pub const COUNT_INPUT: &str = "count-input";
pub const COUNT_OUTPUT: &str = "count-output";
pub const COUNT_REMINDERS: &str = "count-reminders";
pub const COUNTS_STORE: &str = "counts";
pub const TIMERS_STORE: &str = "timers";

pub fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap()
}

/// A private namespace on the shared broker: topics, group and transactional ids.
pub struct Sandbox {
    pub prefix: String,
    pub state: tempfile::TempDir,
    names: Vec<String>,
    /// Deletes the sandbox's topics when the test ends, failed or not, so they do not pile up on
    /// the shared broker (thousands of them make its restart slow).
    _topics: pickple_topics::DeleteOnDrop,
}

impl Sandbox {
    pub async fn new() -> Sandbox {
        let prefix = format!("rt{}.", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let compacted = [
            topic::changelog(APP, COUNTS_STORE),
            topic::changelog(APP, TIMERS_STORE),
        ];
        let plain = [
            COUNT_INPUT.to_string(),
            COUNT_OUTPUT.to_string(),
            COUNT_REMINDERS.to_string(),
            topic::dead_letter(APP),
        ];
        let specs: Vec<(String, bool)> = plain
            .iter()
            .map(|t| (format!("{prefix}{t}"), false))
            .chain(compacted.iter().map(|t| (format!("{prefix}{t}"), true)))
            .collect();
        // Held before the topics exist, so a failed create still cleans up what it made.
        let guard = pickple_topics::DeleteOnDrop::new(&brokers(), &prefix);
        let topics: Vec<NewTopic> = specs
            .iter()
            .map(|(name, compact)| {
                let t = NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1));
                if *compact {
                    t.set("cleanup.policy", "compact")
                } else {
                    t
                }
            })
            .collect();
        for r in admin()
            .create_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .unwrap()
        {
            r.unwrap();
        }
        let names: Vec<String> = specs.into_iter().map(|(name, _)| name).collect();
        pickple_topics::wait_visible(&brokers(), &names).unwrap();
        Sandbox {
            prefix,
            state: tempfile::tempdir().unwrap(),
            names,
            _topics: guard,
        }
    }

    pub fn topic(&self, t: &str) -> String {
        format!("{}{}", self.prefix, t)
    }

    /// Every topic of the sandbox, deleted when it is dropped.
    pub fn topics(&self) -> &[String] {
        &self.names
    }

    pub fn state_dir(&self, instance: &str) -> PathBuf {
        self.state.path().join(instance)
    }

    /// Start an instance of the counter app.
    pub fn start(&self, instance: &str, metrics_port: Option<u16>) -> Instance {
        self.start_with(instance, metrics_port, &[])
    }

    /// Start an instance of the counter app with extra `PICKPLE_*` settings.
    pub fn start_with(
        &self,
        instance: &str,
        metrics_port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Instance {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pickple-counter"));
        cmd.args([
            "--brokers",
            &brokers(),
            "--topic-prefix",
            &self.prefix,
            "--instance-id",
            instance,
        ])
        .arg("--state-dir")
        .arg(self.state_dir(instance))
        .args(["--punctuate-interval-ms", "200"])
        .env("RUST_LOG", "info,rdkafka=warn")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null());
        if let Some(port) = metrics_port {
            cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        }
        Instance(cmd.spawn().expect("start pickple-counter"))
    }

    pub fn produce(&self, records: &[(String, Vec<u8>)]) {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap();
        let topic = self.topic(COUNT_INPUT);
        for (k, v) in records {
            loop {
                match producer.send(BaseRecord::to(&topic).key(k).payload(v)) {
                    Ok(()) => break,
                    Err((_, _)) => {
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
}

/// A running instance; killed if the test fails before stopping it.
pub struct Instance(pub Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Instance {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Instance {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

pub fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

pub fn sigterm(child: &mut Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "instance exited with {status} after SIGTERM"
    );
}

/// A committed record read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub key: String,
    pub raw_key: Vec<u8>,
    pub partition: i32,
    /// Milliseconds since the epoch, when the record has a timestamp.
    pub timestamp: Option<i64>,
    pub value: serde_json::Value,
    pub raw: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads a topic from the beginning with read_committed, keeping what it has read.
pub struct Reader {
    consumer: BaseConsumer,
    /// The topic's partition count when the reader was made.
    partitions: i32,
    pub records: Vec<Read>,
}

/// The partition count of `topic`.
pub fn partition_count(topic: &str) -> i32 {
    pickple_runtime::grow::partition_count(&brokers(), topic).unwrap()
}

impl Reader {
    pub fn new(topic: &str) -> Reader {
        let partitions = partition_count(topic);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Reader {
            consumer,
            partitions,
            records: Vec::new(),
        }
    }

    /// Read until `done(records)` holds, or panic after `secs`.
    pub fn read_until(&mut self, secs: u64, done: impl Fn(&[Read]) -> bool) -> &[Read] {
        if self.read_within(Duration::from_secs(secs), done).is_none() {
            panic!(
                "timed out after {secs}s with {} records",
                self.records.len()
            );
        }
        &self.records
    }

    /// Read until `done(records)` holds: how long that took, or `None` once `limit` has passed
    /// first, so that the caller's own assertion says what did not happen in time.
    pub fn read_within(
        &mut self,
        limit: Duration,
        done: impl Fn(&[Read]) -> bool,
    ) -> Option<Duration> {
        let started = Instant::now();
        while !done(&self.records) {
            if started.elapsed() >= limit {
                return None;
            }
            self.poll_once(Duration::from_millis(200));
        }
        Some(started.elapsed())
    }

    fn poll_once(&mut self, timeout: Duration) {
        if let Some(Ok(m)) = self.consumer.poll(timeout) {
            let raw = m.payload().unwrap_or_default().to_vec();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let raw_key = m.key().unwrap_or_default().to_vec();
            self.records.push(Read {
                key: String::from_utf8_lossy(&raw_key).into_owned(),
                raw_key,
                partition: m.partition(),
                timestamp: m.timestamp().to_millis(),
                value: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
                raw,
                headers,
            });
        }
    }

    /// Read everything committed up to the current end of every partition.
    pub fn read_to_end(&mut self, topic: &str) -> &[Read] {
        let mut ends = Vec::new();
        for p in 0..self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            ends.push(high);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pos = self.consumer.position().unwrap();
            let caught_up = (0..self.partitions).all(|p| {
                match pos.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o >= ends[p as usize],
                    _ => ends[p as usize] == 0,
                }
            });
            if caught_up {
                return &self.records;
            }
            assert!(
                Instant::now() < deadline,
                "could not read {topic} to its end"
            );
            self.poll_once(Duration::from_millis(200));
        }
    }
}

/// The names of the topics on the broker that start with `prefix`, sorted.
pub fn existing_topics(prefix: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && t.name().starts_with(prefix))
        .map(|t| t.name().to_string())
        .collect();
    names.sort_unstable();
    names
}

/// Check counter outputs: for every key, counts are exactly 1..=n with no duplicate or gap.
pub fn assert_exact_counts(outputs: &[Read], expected: &HashMap<String, u64>) {
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    for r in outputs {
        seen.entry(r.key.clone())
            .or_default()
            .push(r.value["count"].as_u64().unwrap());
    }
    for (key, n) in expected {
        let mut counts = seen.remove(key).unwrap_or_default();
        counts.sort_unstable();
        let want: Vec<u64> = (1..=*n).collect();
        assert_eq!(
            counts, want,
            "key {key}: counts must be 1..={n} exactly once each"
        );
    }
    assert!(
        seen.is_empty(),
        "outputs for unexpected keys: {:?}",
        seen.keys()
    );
}

/// Keyed input records, and how many each key got.
pub type Inputs = (Vec<(String, Vec<u8>)>, HashMap<String, u64>);

/// `per_key` records for each of `keys` keys, numbered from `start`.
pub fn keyed_inputs(keys: usize, per_key: usize, start: usize) -> Inputs {
    let mut records = Vec::new();
    let mut expected = HashMap::new();
    for i in start..start + per_key {
        for k in 0..keys {
            let key = format!("key-{k}");
            records.push((key.clone(), format!("{{\"seq\":{i}}}").into_bytes()));
            *expected.entry(key).or_insert(0) += 1;
        }
    }
    (records, expected)
}

pub fn add(total: &mut HashMap<String, u64>, more: HashMap<String, u64>) {
    for (k, v) in more {
        *total.entry(k).or_insert(0) += v;
    }
}

/// The /metrics text of a process, or "" while it is not serving yet.
pub fn scrape(port: u16) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    use std::io::{Read as _, Write};
    let mut body = String::new();
    if write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").is_err()
        || stream.read_to_string(&mut body).is_err()
    {
        return String::new();
    }
    body
}

/// Value of a metric line starting with `prefix` (name and labels), if present.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The seed of a test's random choices: `PICKPLE_CHAOS_SEED` if set, else a fresh one. It is
/// printed when the test starts and again if it panics, so a failing run can be replayed with
/// the same choices.
pub struct ChaosSeed(pub u64);

impl ChaosSeed {
    pub fn from_env_or_fresh() -> ChaosSeed {
        let seed = match std::env::var("PICKPLE_CHAOS_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("PICKPLE_CHAOS_SEED={s:?} is not a u64")),
            Err(_) => rand::random(),
        };
        eprintln!("chaos seed {seed} (replay: PICKPLE_CHAOS_SEED={seed})");
        ChaosSeed(seed)
    }

    pub fn rng(&self) -> StdRng {
        StdRng::seed_from_u64(self.0)
    }
}

impl std::fmt::Display for ChaosSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PICKPLE_CHAOS_SEED={}", self.0)
    }
}

impl Drop for ChaosSeed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("replay this failure with {self}");
        }
    }
}

pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn dir_exists(p: &Path) -> bool {
    p.exists()
}

/// The sum of a counter's series in this process's default registry (the runtime in-process).
pub fn counter_total(name: &str) -> u64 {
    prometheus::gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().value() as u64)
        .sum()
}
