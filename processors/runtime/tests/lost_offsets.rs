//! A group coordinator that has lost the group's committed offsets must not make a processor
//! process its inputs again from the beginning. A single broker SIGKILLed twice under load
//! rebuilt group `stock` as Empty, with no offsets, and librdkafka's `auto.offset.reset`
//! replayed a whole partition over state that had already taken it. Here the loss is made on
//! purpose: the group is deleted while the instance is stopped, and the instance comes back on
//! the same state directory. Against the real local broker, with the runtime in-process.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pickple_runtime::reference::{counter_spec, Counter};
use pickple_runtime::{run_until, RuntimeConfig};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Partitions this process started from its own position (`pickple_offsets_guarded_total`).
fn guarded() -> u64 {
    counter_total("pickple_offsets_guarded_total")
}

fn round(sb: &Sandbox, expected: &mut HashMap<String, u64>) -> usize {
    let records: Vec<(String, Vec<u8>)> = (0..12)
        .map(|k| (format!("key-{k}"), b"{}".to_vec()))
        .collect();
    for (k, _) in &records {
        *expected.entry(k.clone()).or_insert(0) += 1;
    }
    sb.produce(&records);
    expected.values().sum::<u64>() as usize
}

/// Run one instance until `done` holds for its outputs, then stop it cleanly.
fn run_instance(sb: &Sandbox, reader: &mut Reader, total: usize) {
    let mut config = RuntimeConfig::local(sb.state_dir("a"));
    config.topic_prefix = sb.prefix.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let instance = {
        let stop = stop.clone();
        std::thread::spawn(move || run_until(config, counter_spec(), |_| Counter, stop))
    };
    reader.read_until(60, |r| r.len() >= total);
    stop.store(true, Ordering::SeqCst);
    instance.join().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_group_offsets_do_not_replay_what_the_state_has_taken() {
    let sb = Sandbox::new().await;
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let mut expected = HashMap::new();

    let total = round(&sb, &mut expected);
    run_instance(&sb, &mut reader, total);
    assert_exact_counts(&reader.records, &expected);

    // Lose the group's offsets. A static member does not leave the group when it closes, so
    // the group is deletable once its session has timed out.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let group = format!("{}{APP}", sb.prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = admin
            .delete_groups(&[group.as_str()], &AdminOptions::new())
            .await
            .unwrap();
        match &answer[0] {
            Ok(_) => break,
            Err((_, RDKafkaErrorCode::NonEmptyGroup)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("deleting group {group}: {e:?}"),
        }
    }

    let before = guarded();
    let total = round(&sb, &mut expected);
    run_instance(&sb, &mut reader, total);
    assert!(
        guarded() > before,
        "the instance noticed the coordinator had no offsets for what it had processed"
    );
    // Every key counted 1 then 2, once each: the first round was not processed again.
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_exact_counts(&outputs, &expected);
}
