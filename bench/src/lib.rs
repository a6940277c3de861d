//! What `runtime-bench` and `latency-bench` share: the run's topics, a worker process (the
//! runtime's counter, the plain loop, the Kafka Streams peer) and what /proc says about it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use pickple_runtime::RuntimeConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Create `topics` with `partitions` each, replicated as the shop's topics are on this cluster
/// (`PICKPLE_REPLICATION_FACTOR`, `PICKPLE_MIN_INSYNC_REPLICAS`); names ending in `-changelog`
/// are compacted, as the runtime's changelogs are.
pub async fn create_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let replication = pickple_topics::Replication::from_env().map_err(anyhow::Error::msg)?;
    let min_insync = replication.min_insync.to_string();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|n| {
            let t = NewTopic::new(n, partitions, TopicReplication::Fixed(replication.factor))
                .set("min.insync.replicas", &min_insync);
            if n.ends_with("-changelog") {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    for r in admin(brokers)?
        .create_topics(&new, &admin_options())
        .await?
    {
        r.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    pickple_topics::wait_visible(brokers, topics)?;
    Ok(())
}

/// Delete a run's topics: a broker left holding every earlier run's partitions (thousands after
/// a day of runs) spends ever more of the shared cores on them, and the figures drift. Topics
/// only a peer may have created (Kafka Streams' changelogs) may be missing.
pub async fn delete_topics(brokers: &str, topics: &[String]) -> anyhow::Result<()> {
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    for r in admin(brokers)?
        .delete_topics(&names, &admin_options())
        .await?
    {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, e)) => anyhow::bail!("delete {t}: {e}"),
        }
    }
    Ok(())
}

/// The runtime's commit settings a benchmark may change; the ones left unset keep the runtime's
/// own defaults ([`RuntimeConfig`]), so a benchmark measures what the shop runs.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CommitTuning {
    /// Commit at least this often (ms) [default: the runtime's].
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// Adaptive commit: commit once the input is drained and this long has passed since the
    /// last commit (ms). Equal to --commit-interval-ms, commits are periodic only [default: the
    /// runtime's].
    #[arg(long)]
    pub min_commit_interval_ms: Option<u64>,
    /// Records per transaction at most [default: the runtime's].
    #[arg(long)]
    pub commit_records: Option<usize>,
}

impl CommitTuning {
    pub fn apply(&self, config: &mut RuntimeConfig) {
        if let Some(ms) = self.commit_interval_ms {
            config.commit_interval_ms = ms;
        }
        if let Some(ms) = self.min_commit_interval_ms {
            config.min_commit_interval_ms = ms;
        }
        if let Some(n) = self.commit_records {
            config.commit_records = n;
        }
    }

    /// The same settings as arguments, for a worker process.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                args.extend([name.to_string(), v]);
            }
        };
        push(
            "--commit-interval-ms",
            self.commit_interval_ms.map(|v| v.to_string()),
        );
        push(
            "--min-commit-interval-ms",
            self.min_commit_interval_ms.map(|v| v.to_string()),
        );
        push(
            "--commit-records",
            self.commit_records.map(|v| v.to_string()),
        );
        args
    }

    /// The settings in effect, for a benchmark's header line.
    pub fn describe(&self) -> String {
        let mut config = RuntimeConfig::local(".");
        self.apply(&mut config);
        format!(
            "runtime commits every {} ms / {} records, adaptively from {} ms",
            config.commit_interval_ms, config.commit_records, config.min_commit_interval_ms
        )
    }
}

/// A fresh prefix for one run's topics, groups and transactional ids on the shared broker.
pub fn run_prefix(kind: &str) -> String {
    format!(
        "{kind}{}.",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Microseconds since the Unix epoch: the clock every process on this machine shares, so a
/// time written into a record by one process can be read against it by another.
pub fn epoch_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn clock_ticks() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some(hz as f64)
}

/// Busy time of all CPUs since boot, from the first line of /proc/stat (Linux only).
pub fn machine_busy() -> Option<Duration> {
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
    Some(Duration::from_secs_f64(busy as f64 / clock_ticks()?))
}

/// CPU (user + system, every thread) a process has used, from /proc/<pid>/stat.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (2nd field) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line, utime and stime, are 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()?))
}

/// Peak resident set size (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// Size of the files under `p`, recursively.
pub fn dir_size(p: &Path) -> u64 {
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

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A worker process: lines it writes to stdout arrive on a channel (`first` marks its first
/// input record); closing its stdin asks it to stop, so a benchmark that dies takes its workers
/// with it. Its stderr (logs) goes to ours.
pub struct Worker {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Worker {
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Worker> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("start {name} ({command:?}): {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Worker {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the worker has exited (it should run until told to stop).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited early: {status}", self.name),
            None => Ok(()),
        }
    }

    /// Wait for the worker to print `line`; the other lines it prints meanwhile are returned.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut other = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) if l == line => return Ok(other),
                Ok(l) => other.push(l),
                Err(RecvTimeoutError::Timeout) => {
                    self.check_alive()?;
                    if Instant::now() > deadline {
                        anyhow::bail!("{} did not print {line:?} within {timeout:?}", self.name);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.check_alive()?;
                    anyhow::bail!("{} closed its stdout", self.name);
                }
            }
        }
    }

    /// Ask the worker to stop (close its stdin), wait for it up to `timeout`, then kill it.
    /// Returns what it printed after the lines already read.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                eprintln!("{} did not stop within {timeout:?}: killed", self.name);
                self.child.kill()?;
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            eprintln!("{} ended with {status}", self.name);
        }
        Ok(self.lines.try_iter().collect())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Stopped workers have been waited for; this only catches an error path.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Tell the parent that the first input record is being handled (the start of the measured
/// window), from inside a worker.
pub fn announce_first() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "first");
    let _ = out.flush();
}

/// Block until the parent closes our stdin (its way of saying stop, or it died).
pub fn wait_for_stdin_close() {
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

/// The Kafka Streams peer (bench/kstreams-peer): built by scripts/kstreams-peer.sh when out of
/// date, run with `java`.
pub struct KStreamsPeer {
    classpath: String,
    java_opts: Vec<String>,
}

impl KStreamsPeer {
    pub fn build(java_opts: &str) -> anyhow::Result<KStreamsPeer> {
        let script: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "..",
            "scripts",
            "kstreams-peer.sh",
        ]
        .iter()
        .collect();
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| anyhow::anyhow!("run {}: {e}", script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            out.status
        );
        let classpath = String::from_utf8(out.stdout)?.trim().to_string();
        Ok(KStreamsPeer {
            classpath,
            java_opts: java_opts.split_whitespace().map(String::from).collect(),
        })
    }

    /// `java ... KStreamsPeer <mode> <args>`.
    pub fn command(&self, mode: &str, args: &[&str]) -> Command {
        let mut c = Command::new("java");
        c.args(&self.java_opts)
            .arg("-cp")
            .arg(&self.classpath)
            .arg("pickple.bench.KStreamsPeer")
            .arg(mode)
            .args(args);
        c
    }
}
