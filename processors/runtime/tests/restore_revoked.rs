//! A rebalance in the middle of a restore: the instance restoring a big changelog gives its
//! tasks up (cancelling the restore) when a second instance joins, and whichever instance then
//! owns the task restores it to the full state, from where the cancelled restore stopped or
//! from the start. Nothing is lost or counted twice. Against the real local broker, with both
//! instances in-process.

mod common;
mod restoring;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::*;
use pickple_runtime::reference::counter_spec;
use pickple_runtime::{run_until, RuntimeConfig, RuntimeError};
use restoring::*;

const BIG: usize = 200_000;

fn start(
    sb: &Sandbox,
    instance: &'static str,
    seen: mpsc::Sender<Seen>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Result<(), RuntimeError>> {
    let mut config = RuntimeConfig::local(sb.state_dir(instance));
    config.topic_prefix = sb.prefix.clone();
    config.instance_id = instance.into();
    std::thread::spawn(move || {
        let factory = move |_| Observed {
            instance,
            seen: seen.clone(),
        };
        run_until(config, counter_spec(), factory, stop)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_cancelled_by_a_rebalance_is_taken_up_again_with_the_full_state() {
    let sb = Sandbox::new().await;
    let keys = big_changelog(&sb, BIG);
    let probes = [&keys[0], &keys[BIG / 2], &keys[BIG - 1]];
    inputs(&sb, &probes);
    let others = other_keys(60);
    inputs(&sb, &others.iter().collect::<Vec<_>>());

    let (seen, observed) = mpsc::channel::<Seen>();
    let stop = Arc::new(AtomicBool::new(false));
    let a = start(&sb, "a", seen.clone(), stop.clone());
    // Once a processes other tasks' records while task 0 restores, b joins the group.
    loop {
        let s = observed
            .recv_timeout(Duration::from_secs(120))
            .expect("a processes the other tasks' records");
        assert!(s.partition != 0, "task 0 was restored before b could join");
        if s.remaining > 0 {
            break;
        }
    }
    let b = start(&sb, "b", seen, stop.clone());

    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let total = probes.len() + others.len();
    reader.read_until(180, |r| r.len() >= total);
    stop.store(true, Ordering::SeqCst);
    a.join().unwrap().unwrap();
    b.join().unwrap().unwrap();
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_eq!(outputs.len(), total, "nothing processed twice");

    let restored = restoring::counts_of(&outputs, 0);
    assert_eq!(
        restored,
        HashMap::from([
            (probes[0].as_str(), 8),
            (probes[1].as_str(), 8),
            (probes[2].as_str(), 42)
        ]),
        "task 0 counted on from its full restored state"
    );
    let expected: HashMap<String, u64> = others.iter().map(|k| (k.clone(), 1)).collect();
    let others_out: Vec<Read> = outputs.into_iter().filter(|o| o.partition != 0).collect();
    assert_exact_counts(&others_out, &expected);
}
