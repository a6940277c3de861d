//! Helpers for the runtime's tests against the real local broker: a private topic prefix per
//! test, the `pickple-counter` reference app as a child process, and read_committed reads.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub const PARTITIONS: i32 = 6;

pub fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A private namespace on the shared broker: topics, group and transactional ids.
pub struct Sandbox {
    pub prefix: String,
    pub state: tempfile::TempDir,
}

impl Sandbox {
    pub async fn new() -> Sandbox {
        let prefix = format!("rt{}.", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .unwrap();
        let compacted = ["counter-counts-changelog", "counter-timers-changelog"];
        let names: Vec<String> = [
            "count-input",
            "count-output",
            "count-reminders",
            "counter-dlq",
        ]
        .iter()
        .chain(compacted.iter())
        .map(|t| format!("{prefix}{t}"))
        .collect();
        let topics: Vec<NewTopic> = names
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
            .await
            .unwrap()
        {
            r.unwrap();
        }
        Sandbox {
            prefix,
            state: tempfile::tempdir().unwrap(),
        }
    }

    pub fn topic(&self, t: &str) -> String {
        format!("{}{}", self.prefix, t)
    }

    pub fn state_dir(&self, instance: &str) -> PathBuf {
        self.state.path().join(instance)
    }

    /// Start an instance of the counter app.
    pub fn start(&self, instance: &str, metrics_port: Option<u16>) -> Instance {
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
        let topic = self.topic("count-input");
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
    pub value: serde_json::Value,
    pub raw: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads a topic from the beginning with read_committed, keeping what it has read.
pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<Read>,
}

impl Reader {
    pub fn new(topic: &str) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Reader {
            consumer,
            records: Vec::new(),
        }
    }

    /// Read until `done(records)` holds, or panic after `secs`.
    pub fn read_until(&mut self, secs: u64, done: impl Fn(&[Read]) -> bool) -> &[Read] {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(&self.records) {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs}s with {} records",
                self.records.len()
            );
            self.poll_once(Duration::from_millis(200));
        }
        &self.records
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
            self.records.push(Read {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
                raw,
                headers,
            });
        }
    }

    /// Read everything committed up to the current end of every partition.
    pub fn read_to_end(&mut self, topic: &str) -> &[Read] {
        let mut ends = Vec::new();
        for p in 0..PARTITIONS {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            ends.push(high);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pos = self.consumer.position().unwrap();
            let caught_up =
                (0..PARTITIONS).all(|p| match pos.find_partition(topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o >= ends[p as usize],
                    _ => ends[p as usize] == 0,
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
