//! Settings of a runtime instance, from flags or `PICKPLE_*` environment variables.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    /// Bootstrap servers of the Kafka or Redpanda cluster.
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,
    /// Prefix of every topic and group name (several pipelines on one cluster, isolated tests).
    #[arg(long, env = "PICKPLE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Stable identity of this instance: its transactional.id is `<app>-<instance>`, so a
    /// restarted instance fences its own zombie. Give every running instance its own.
    #[arg(long, env = "PICKPLE_INSTANCE_ID", default_value = "0")]
    pub instance_id: String,
    /// Directory of the local sled stores (a cache of the changelogs).
    #[arg(long, env = "PICKPLE_STATE_DIR", default_value = ".work/state")]
    pub state_dir: PathBuf,
    /// Commit the transaction at least this often (milliseconds).
    #[arg(long, env = "PICKPLE_COMMIT_INTERVAL_MS", default_value_t = 100)]
    pub commit_interval_ms: u64,
    /// Commit sooner, as soon as the input is drained, but no sooner than this after the last
    /// commit (milliseconds): latency stays low under light traffic, batching holds under load.
    #[arg(long, env = "PICKPLE_MIN_COMMIT_INTERVAL_MS", default_value_t = 1)]
    pub min_commit_interval_ms: u64,
    /// ...or after this many input records, whichever comes first.
    #[arg(long, env = "PICKPLE_COMMIT_RECORDS", default_value_t = 20000)]
    pub commit_records: usize,
    /// How often punctuators run (milliseconds).
    #[arg(long, env = "PICKPLE_PUNCTUATE_INTERVAL_MS", default_value_t = 1000)]
    pub punctuate_interval_ms: u64,
    /// How long broker trouble (an outage, a coordinator moving) is ridden through before the
    /// instance gives up and exits: calls are retried, the open transaction aborted, and
    /// processing resumes from the committed offsets (Kafka Streams' `task.timeout.ms`).
    #[arg(long, env = "PICKPLE_TASK_TIMEOUT_MS", default_value_t = 300_000)]
    pub task_timeout_ms: u64,
    /// The largest store value or output record (key + value bytes) a processing step may
    /// write; a step over it is refused and its input dead-lettered. Far below the broker's
    /// maximum record size (1 MB by default), which would make the transaction fail forever.
    #[arg(long, env = "PICKPLE_MAX_VALUE_BYTES", default_value_t = 256 * 1024)]
    pub max_value_bytes: usize,
    /// sled's page cache per instance, in MiB (sled's own default is 1 GiB, which each of a
    /// machine's processes would grow into as its state grows).
    #[arg(long, env = "PICKPLE_STORE_CACHE_MB", default_value_t = 128)]
    pub store_cache_mb: u64,
    /// Standby replicas (Kafka Streams' `num.standby.replicas`): keep warm copies of the stores
    /// of the tasks this instance would take over if up to this many instances were lost, so
    /// that a takeover restores only the changelog tail (see docs/scaling.md). 0: none.
    #[arg(long, env = "PICKPLE_STANDBY_REPLICAS", default_value_t = 0)]
    pub standby_replicas: usize,
    /// Where to serve Prometheus `/metrics` and `/health` (e.g. 127.0.0.1:9101); none when unset.
    #[arg(long, env = "PICKPLE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl RuntimeConfig {
    /// Defaults for tests and tools: local broker, given state dir.
    pub fn local(state_dir: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            brokers: std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into()),
            topic_prefix: String::new(),
            instance_id: "0".into(),
            state_dir: state_dir.into(),
            commit_interval_ms: 100,
            min_commit_interval_ms: 1,
            commit_records: 20000,
            punctuate_interval_ms: 1000,
            task_timeout_ms: 300_000,
            max_value_bytes: 256 * 1024,
            store_cache_mb: 128,
            standby_replicas: 0,
            metrics_addr: None,
        }
    }

    pub fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.commit_interval_ms)
    }

    pub fn min_commit_interval(&self) -> Duration {
        Duration::from_millis(self.min_commit_interval_ms)
    }

    pub fn task_timeout(&self) -> Duration {
        Duration::from_millis(self.task_timeout_ms)
    }

    pub fn punctuate_interval(&self) -> Duration {
        Duration::from_millis(self.punctuate_interval_ms)
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }
}

/// librdkafka's `fetch.queue.backoff.ms` for the runtime's consumers. librdkafka stops fetching
/// while its local queue is over its limits and by default looks again only a second later: a
/// consumer catching up on a backlog empties the queue within that second and then sits idle
/// (in runtime-bench, a plain loop stalled for half a second every ~140,000 records with
/// headers). Looking again soon keeps the queue fed.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// How a runtime input consumer fetches: [`FETCH_QUEUE_BACKOFF_MS`], and how much it fetches
/// ahead. librdkafka's defaults (up to 64 MiB
/// and 100,000 records per partition queued, 1 MiB per partition and 50 MiB per fetch) let a
/// processor catching up on a backlog grow to ~130-220 MiB, mostly fetch buffers: a fetched
/// buffer lives until its last record is processed. These bounds kept the reference counter
/// at 60-70 MiB reading a backlog of 1,000,000 records, at the same records/s (runtime-bench);
/// records over 256 KiB are still fetched (librdkafka grows the size for them).
pub const INPUT_FETCH: [(&str, &str); 5] = [
    ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
    ("queued.max.messages.kbytes", "8192"),
    ("queued.min.messages", "10000"),
    ("fetch.message.max.bytes", "262144"),
    ("fetch.max.bytes", "2097152"),
];
