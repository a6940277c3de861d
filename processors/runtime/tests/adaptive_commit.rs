//! Adaptive commits: a processor commits as soon as its input is drained (once the minimum
//! interval has passed), not only when the commit interval ends, and an idle processor commits
//! nothing. Against the real local broker, with the runtime in-process.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{run_until, RuntimeConfig};

/// Transactions the counter has committed in this process (`pickple_commits_total`).
fn commits() -> u64 {
    counter_total("pickple_commits_total")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_input_is_committed_at_once_and_an_idle_processor_commits_nothing() {
    let sb = Sandbox::new().await;
    let mut config = RuntimeConfig::local(sb.state_dir("a"));
    config.topic_prefix = sb.prefix.clone();
    // Far longer than the test may take: only the adaptive commit can make outputs visible
    // (a punctuation commits too).
    config.commit_interval_ms = 600_000;
    config.punctuate_interval_ms = 600_000;
    config.commit_records = 1_000_000;
    config.min_commit_interval_ms = 1;
    let stop = Arc::new(AtomicBool::new(false));
    let instance = {
        let stop = stop.clone();
        std::thread::spawn(move || run_until(config, counter_spec(), |_| Counter, stop))
    };

    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let mut expected = HashMap::new();
    for round in 1..=2u64 {
        let records: Vec<(String, Vec<u8>)> = (0..12)
            .map(|k| (format!("key-{k}"), b"{}".to_vec()))
            .collect();
        for (k, _) in &records {
            *expected.entry(k.clone()).or_insert(0) += 1;
        }
        let total = expected.values().sum::<u64>() as usize;
        sb.produce(&records);
        // Within 60 s, a tenth of the commit interval: committed because the input drained.
        reader.read_until(60, |r| r.len() >= total);
        assert_exact_counts(&reader.records, &expected);

        // Idle: the loop keeps polling, but no transaction is opened, so none is committed.
        // There is no event for "nothing happened"; watch for a while instead.
        let before = commits();
        assert!(before >= round, "the drained input was committed");
        let watched = Instant::now();
        while watched.elapsed() < Duration::from_millis(1500) {
            assert!(!instance.is_finished(), "the runtime stopped");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            commits(),
            before,
            "an idle processor committed {} empty transactions in 1.5 s",
            commits() - before
        );
    }

    stop.store(true, Ordering::SeqCst);
    instance.join().unwrap().unwrap();
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_exact_counts(&outputs, &expected);
}
