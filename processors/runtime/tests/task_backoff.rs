//! A record whose processor asks for a retry holds back its own task only: the task backs off
//! (its inputs paused, the record rewound) while the other tasks' records are processed and
//! committed, and the record is processed once when it finally goes through. Against the real
//! local broker, with the runtime in-process.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{
    partition_for, run_until, Context, ProcessError, Processor, Record, RuntimeConfig,
};

const STUCK: &str = "stuck";

/// The counter, except that the record of key [`STUCK`] fails transiently until released; each
/// try is reported with its time.
struct Flaky {
    tried: Sender<Instant>,
    released: Arc<AtomicBool>,
}

impl Processor for Flaky {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        if record.key == Some(STUCK.as_bytes()) {
            let _ = self.tried.send(Instant::now());
            if !self.released.load(Ordering::SeqCst) {
                return Err(ProcessError::Retry("the provider is down".into()));
            }
        }
        Counter.process(ctx, record)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_record_holds_back_its_own_task_only_and_is_processed_once() {
    let sb = Sandbox::new().await;
    let stuck_task = partition_for(STUCK.as_bytes(), PARTITIONS);
    let keys: Vec<String> = (0..24).map(|k| format!("key-{k}")).collect();
    let (behind, others): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| partition_for(k.as_bytes(), PARTITIONS) == stuck_task);
    assert!(!behind.is_empty() && !others.is_empty());

    // The stuck record first: the later records of its task wait behind it.
    let mut records = vec![(STUCK.to_string(), b"{}".to_vec())];
    let mut expected = HashMap::from([(STUCK.to_string(), 1)]);
    for _ in 0..5 {
        for k in &keys {
            records.push((k.clone(), b"{}".to_vec()));
            *expected.entry(k.clone()).or_insert(0) += 1;
        }
    }
    sb.produce(&records);

    let (tried, tries) = mpsc::channel();
    let released = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = RuntimeConfig::local(sb.state_dir("a"));
    config.topic_prefix = sb.prefix.clone();
    let instance = {
        let (released, stop) = (released.clone(), stop.clone());
        std::thread::spawn(move || {
            let factory = move |_| Flaky {
                tried: tried.clone(),
                released: released.clone(),
            };
            run_until(config, counter_spec(), factory, stop)
        })
    };

    let times: Vec<Instant> = (0..3)
        .map(|n| {
            tries
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("try {} of the stuck record never came", n + 1))
        })
        .collect();
    assert!(
        times[1] - times[0] >= Duration::from_millis(100)
            && times[2] - times[1] >= Duration::from_millis(200),
        "the task waits before each retry, longer each time: {:?}, {:?}",
        times[1] - times[0],
        times[2] - times[1]
    );
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let others_total = 5 * others.len();
    reader.read_until(60, |r| {
        r.iter().filter(|o| others.contains(&&o.key)).count() >= others_total
    });
    assert!(
        reader
            .records
            .iter()
            .all(|o| o.key != STUCK && !behind.contains(&&o.key)),
        "the other tasks' records are committed, and nothing of the stuck task went past its failing record"
    );

    released.store(true, Ordering::SeqCst);
    let total = records.len();
    reader.read_until(60, |r| r.len() >= total);
    stop.store(true, Ordering::SeqCst);
    instance.join().unwrap().unwrap();
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_eq!(outputs.len(), total);
    // The stuck record's count is 1, once: it was processed once, after its retries.
    assert_exact_counts(&outputs, &expected);
}
