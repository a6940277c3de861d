//! `run`: wire consumer, transactional producer, stores and engine, then poll until told to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::collector::{DeliveryReports, RecordCollector};
use crate::engine::{Engine, EngineError};
use crate::health::Health;
use crate::processor::{AppSpec, Processor};
use crate::producer::StreamsProducer;
use crate::rebalance::RebalanceContext;
use crate::store::{StateStores, StoreError};
use crate::RuntimeConfig;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// librdkafka declared a client unusable (e.g. a static member fenced after a coordinator
    /// restart). The process ends so that its supervisor starts a fresh one: a live process
    /// whose consumer does nothing would hold its partitions until someone notices.
    #[error("fatal {client} error: {reason}")]
    FatalClient {
        client: &'static str,
        reason: String,
    },
    #[error("broker trouble for longer than the task timeout ({secs} s): {last}")]
    TaskTimeout { secs: u64, last: String },
}

/// Run an application until SIGTERM/SIGINT (clean: the transaction is committed and the group
/// left) or a fatal error (fenced by a newer instance with the same id, a client declared
/// unusable, broker trouble for longer than the task timeout). Shorter broker trouble is ridden
/// through: the open transaction is aborted, the inputs rewound to their committed offsets, and
/// processing resumes once the broker answers.
pub fn run<P, F>(config: RuntimeConfig, spec: AppSpec, factory: F) -> Result<(), RuntimeError>
where
    P: Processor,
    F: Fn(i32) -> P + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    run_until(config, spec, factory, stop)
}

/// [`run`] with an external stop flag (tests, embedding).
pub fn run_until<P, F>(
    config: RuntimeConfig,
    spec: AppSpec,
    factory: F,
    stop: Arc<AtomicBool>,
) -> Result<(), RuntimeError>
where
    P: Processor,
    F: Fn(i32) -> P + Send + 'static,
{
    if let Some(addr) = &config.metrics_addr {
        let addr = addr
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        crate::serve_metrics(addr)?;
    }
    let dir = config.state_dir.join(format!(
        "{}{}-{}",
        config.topic_prefix, spec.name, config.instance_id
    ));
    let stores = StateStores::open(&dir, config.store_cache_mb * 1024 * 1024)?;
    crate::Metrics::global()
        .value_limit
        .with_label_values(&[&spec.name])
        .set(config.max_value_bytes as i64);
    if config.metrics_addr.is_some() {
        crate::metrics::watch_stores(spec.name.clone(), stores.clone());
    }

    let reports = DeliveryReports::default();
    let producer = StreamsProducer::start(&config, &spec.name, reports.clone())?;
    let collector = RecordCollector::new(&spec.name, &config, reports);
    let engine = Arc::new(Mutex::new(Engine::new(
        spec.clone(),
        config.clone(),
        stores,
        producer,
        collector,
        Box::new(factory),
    )?));
    let failure = Arc::new(Mutex::new(None));
    let inputs: Vec<String> = spec.inputs.iter().map(|t| config.topic(t)).collect();
    let member = || -> Result<BaseConsumer<RebalanceContext<P>>, RuntimeError> {
        let context = RebalanceContext {
            engine: engine.clone(),
            app: spec.name.clone(),
            prefix: config.topic_prefix.clone(),
            failure: failure.clone(),
            lag_series: Default::default(),
        };
        let consumer: BaseConsumer<RebalanceContext<P>> =
            consumer_config(&config, &spec.name).create_with_context(context)?;
        consumer.subscribe(&inputs.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(consumer)
    };
    let mut consumer = member()?;
    tracing::info!(app = %spec.name, instance = %config.instance_id, ?inputs, "running");

    let health = Health::global();
    // A session timeout, and a rebalance, without a task is normal; longer is not.
    health.set_unassigned_grace(Duration::from_secs(16));
    health.loop_turned(Instant::now());
    let _watchdog = Watchdog::start(spec.name.clone());
    let task_timeout = config.task_timeout();
    let mut trouble: Option<(Instant, String)> = None;
    let mut rebuilt: Option<Instant> = None;
    let mut timeout = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let polled = consumer.poll(timeout);
        let now = Instant::now();
        health.loop_turned(now);
        if let Some(e) = failure.lock().unwrap().take() {
            return Err(e.into());
        }
        if let Some(Err(e)) = &polled {
            if let Some((code, reason)) = consumer.client().fatal_error() {
                // Typically FencedInstanceId: after a coordinator restart longer than a session,
                // librdkafka's static member can be fenced by its own rejoin. Its tasks are
                // gone; a fresh member with the same instance id takes them back at once.
                let reason = format!("{code:?}: {reason}");
                if rebuilt.is_some_and(|at: Instant| at.elapsed() < Duration::from_secs(30)) {
                    health.update(|f| f.fatal = Some(reason.clone()));
                    return Err(RuntimeError::FatalClient {
                        client: "consumer",
                        reason,
                    });
                }
                tracing::warn!(%reason, "the consumer is unusable; replacing it with a fresh group member");
                drop(polled);
                engine.lock().unwrap().forget_tasks();
                consumer = member()?;
                rebuilt = Some(Instant::now());
                timeout = Duration::ZERO;
                continue;
            }
            tracing::warn!(error = %e, "consumer error");
        }
        let mut engine = engine.lock().unwrap();
        let step = (|| {
            engine.recover(&consumer)?;
            engine.maintain(&consumer, now)?;
            if let Some(Ok(msg)) = &polled {
                engine.process(&consumer, msg)?;
            }
            engine.commit_if_due(&consumer, now, polled.is_none())?;
            engine.punctuate_if_due(&consumer, now)
        })();
        match step {
            Ok(()) => {
                if let Some((since, _)) = trouble.take() {
                    tracing::info!(
                        ms = since.elapsed().as_millis() as u64,
                        "broker trouble over, processing again"
                    );
                    health.update(|f| f.trouble = None);
                }
                timeout = engine.next_deadline(now).min(Duration::from_millis(100));
            }
            Err(e) if e.is_transient() => {
                let since = trouble.get_or_insert_with(|| (now, e.to_string())).0;
                if now.duration_since(since) > task_timeout {
                    return Err(RuntimeError::TaskTimeout {
                        secs: task_timeout.as_secs(),
                        last: e.to_string(),
                    });
                }
                tracing::warn!(error = %e, "broker trouble: ending the transaction, will go on from the committed offsets");
                health.update(|f| f.trouble = Some((since, e.to_string())));
                // The open transaction, if it could not be aborted yet (or its commit, in doubt,
                // not confirmed yet), is ended on the next turn; meanwhile polled records are
                // dropped and fetched again after the rewind.
                if !engine.is_recovering() {
                    let _ = engine.abort(&consumer);
                }
                // Back off in proportion to how long the trouble has lasted, at most a second.
                timeout = now
                    .duration_since(since)
                    .clamp(Duration::from_millis(50), Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(app = %spec.name, "stopping: committing and leaving the group");
    {
        let mut engine = engine.lock().unwrap();
        // A transaction left in doubt by broker trouble is ended if the broker answers now;
        // otherwise the next instance with our transactional.id aborts it when it starts.
        if let Err(e) = engine.recover(&consumer) {
            tracing::warn!(error = %e, "stopping with the last transaction unfinished");
        }
        engine.commit(&consumer)?;
        engine.settle()?;
    }
    consumer.unsubscribe();
    // Serve the revocation callback so the group rebalances now, not after a session timeout.
    let _ = consumer.poll(Duration::from_millis(100));
    if let Some(e) = failure.lock().unwrap().take() {
        return Err(e.into());
    }
    Ok(())
}

/// Ends the process when the poll loop has been stuck inside one client call past every timeout
/// the runtime gives its calls ([`crate::health::WEDGED_AFTER`]). librdkafka's
/// `send_offsets_to_transaction` can block forever when the group coordinator's broker is lost
/// (librdkafka issues 5456 and 5511, open; seen here with a broker of the three-broker cluster
/// SIGKILLed under the soak's traffic: three processes stuck for minutes). Nothing can unblock
/// that call from outside, so the process exits as a crash would; its supervisor starts a fresh
/// instance, whose transactional producer fences the stuck one's transaction, and processing
/// goes on from the committed offsets: exactly-once holds as for a SIGKILL. Stops with the run.
struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(app: String) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let stop = done.clone();
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let stalled = Health::global().stalled_for(Instant::now());
                    if crate::health::wedged(stalled) && !stop.load(Ordering::Relaxed) {
                        tracing::error!(
                            app,
                            stalled_s = stalled.as_secs(),
                            "the poll loop is stuck in a client call; exiting so that a fresh instance takes over"
                        );
                        std::process::exit(70);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no watchdog thread: a wedged poll loop will not end the process");
        }
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

/// The input consumer's settings: one member of the app's group.
fn consumer_config(config: &RuntimeConfig, app: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("group.id", format!("{}{}", config.topic_prefix, app))
        .set("client.id", format!("{}-{}", app, config.instance_id))
        .set("enable.auto.commit", "false")
        // Only for a position out of range (records deleted ahead of it): an assignment starts
        // at explicit offsets (see RebalanceContext::rebalance), never at librdkafka's reset.
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        // Range gives partition p of every co-partitioned input to the same member (one task per
        // partition number). Cooperative-sticky would not: it places topic-partitions alone.
        .set("partition.assignment.strategy", "range")
        // Statistics carry the end offsets the lag is computed from (see crate::lag).
        .set("statistics.interval.ms", "1000")
        // Static membership: a restarted instance takes its partitions back at once instead of
        // waiting for its dead predecessor's session to time out.
        .set(
            "group.instance.id",
            format!("{}{}-{}", config.topic_prefix, app, config.instance_id),
        )
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000");
    for (key, value) in crate::INPUT_FETCH {
        c.set(key, value);
    }
    c
}
