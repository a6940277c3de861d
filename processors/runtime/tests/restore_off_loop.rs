//! A task restoring a big changelog holds back only itself: its stores are restored off the
//! poll loop while the other tasks process their records, and it starts with the full state
//! once its stores have reached their changelogs' end. Against the real local broker, with the
//! runtime in-process.

mod common;
mod restoring;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pickple_runtime::reference::counter_spec;
use pickple_runtime::{run_until, RuntimeConfig};
use rdkafka::producer::{BaseRecord, Producer};
use restoring::*;

/// Changelog records of the restoring task: enough that restoring them takes a while.
const BIG: usize = 200_000;

#[tokio::test(flavor = "multi_thread")]
async fn other_tasks_process_while_one_restores_a_big_changelog_which_ends_with_the_full_state() {
    let sb = Sandbox::new().await;
    let keys = big_changelog(&sb, BIG);
    let probes = [&keys[0], &keys[BIG / 2], &keys[BIG - 1]];
    inputs(&sb, &probes);
    let others = other_keys(60);
    inputs(&sb, &others.iter().collect::<Vec<_>>());
    let mut expected: HashMap<String, u64> = others.iter().map(|k| (k.clone(), 1)).collect();

    let (seen, observed) = mpsc::channel::<Seen>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut config = RuntimeConfig::local(sb.state_dir("a"));
    config.topic_prefix = sb.prefix.clone();
    let instance = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let factory = move |_| Observed {
                instance: "a",
                seen: seen.clone(),
            };
            run_until(config, counter_spec(), factory, stop)
        })
    };
    // More of the other tasks' records keep coming while task 0 restores.
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (feeding, others, input) = (feeding.clone(), others.clone(), sb.topic(COUNT_INPUT));
        std::thread::spawn(move || {
            let p = producer();
            let mut sent: HashMap<String, u64> = HashMap::new();
            for k in others.iter().cycle() {
                if !feeding.load(Ordering::SeqCst) {
                    break;
                }
                send(
                    &p,
                    BaseRecord::to(&input)
                        .key(k.as_str())
                        .payload(b"{}".as_slice()),
                );
                p.flush(Duration::from_secs(10)).unwrap();
                *sent.entry(k.clone()).or_default() += 1;
            }
            sent
        })
    };

    // Every record processed before task 0's first, which can only come once it is restored.
    let mut before_task_0 = Vec::new();
    loop {
        let seen = observed
            .recv_timeout(Duration::from_secs(120))
            .expect("task 0 processes its records once restored");
        if seen.partition == 0 {
            break;
        }
        before_task_0.push(seen.remaining);
    }
    feeding.store(false, Ordering::SeqCst);
    let during_restore = before_task_0.iter().filter(|r| **r > 0).count();
    eprintln!(
        "{} records of other tasks processed before task 0 started, {during_restore} while it restored",
        before_task_0.len()
    );
    assert!(
        during_restore > 0,
        "other tasks processed {} records before task 0 started, none while it restored",
        before_task_0.len()
    );

    for (k, n) in feeder.join().unwrap() {
        *expected.entry(k).or_default() += n;
    }
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let total = probes.len() + expected.values().sum::<u64>() as usize;
    reader.read_until(120, |r| r.len() >= total);
    stop.store(true, Ordering::SeqCst);
    instance.join().unwrap().unwrap();
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_eq!(outputs.len(), total);

    let restored = restoring::counts_of(&outputs, 0);
    assert_eq!(
        restored,
        HashMap::from([
            (probes[0].as_str(), 8),
            (probes[1].as_str(), 8),
            (probes[2].as_str(), 42)
        ]),
        "task 0 counted on from its restored state, to the changelog's last record"
    );
    let others_out: Vec<Read> = outputs.into_iter().filter(|o| o.partition != 0).collect();
    assert_exact_counts(&others_out, &expected);
}
