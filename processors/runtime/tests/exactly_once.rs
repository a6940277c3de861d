//! The runtime's promises, checked against the real local broker with the `pickple-counter`
//! reference app run as a child process.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rand::Rng;

/// Keyed input records, and how many each key got.
type Inputs = (Vec<(String, Vec<u8>)>, HashMap<String, u64>);

fn inputs(keys: usize, per_key: usize, start: usize) -> Inputs {
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

fn add(total: &mut HashMap<String, u64>, more: HashMap<String, u64>) {
    for (k, v) in more {
        *total.entry(k).or_insert(0) += v;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_neither_loses_nor_duplicates() {
    let sb = Sandbox::new().await;
    let (records, expected) = inputs(24, 250, 0); // 6,000 records
    sb.produce(&records);
    let mut reader = Reader::new(&sb.topic("count-output"));
    let mut rng = rand::rng();
    let total = records.len();
    let mut child = sb.start("a", None);
    for round in 0..4 {
        // Let it get a share of the way (output committed), then kill it at a random moment.
        let share = records.len() * (round + 1) / 6;
        reader.read_until(60, |r| r.len() >= share);
        std::thread::sleep(Duration::from_millis(rng.random_range(50..600)));
        sigkill(&mut child);
        eprintln!(
            "round {round}: killed after {} committed outputs",
            reader.records.len()
        );
        child = sb.start("a", None);
    }
    reader.read_until(120, |r| r.len() >= total);
    sigterm(&mut child);
    let outputs = reader.read_to_end(&sb.topic("count-output")).to_vec();
    assert_eq!(outputs.len(), total, "exactly one output per input");
    assert_exact_counts(&outputs, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_state_dir_is_restored_from_the_changelog_before_processing() {
    let sb = Sandbox::new().await;
    let (first, mut expected) = inputs(12, 20, 0);
    sb.produce(&first);
    let mut reader = Reader::new(&sb.topic("count-output"));
    let mut child = sb.start("a", Some(19411));
    reader.read_until(60, |r| r.len() >= first.len());
    sigterm(&mut child);
    std::fs::remove_dir_all(sb.state_dir("a")).unwrap();

    let (second, more) = inputs(12, 5, 20);
    sb.produce(&second);
    add(&mut expected, more);
    let mut child = sb.start("a", Some(19411));
    let total = first.len() + second.len();
    reader.read_until(60, |r| r.len() >= total);
    // Counts go on from 20: had a record been processed before the restore, a key would
    // restart at 1 and the sequence would show a duplicate.
    let text = scrape(19411);
    sigterm(&mut child);
    let outputs = reader.read_to_end(&sb.topic("count-output")).to_vec();
    assert_eq!(outputs.len(), total);
    assert_exact_counts(&outputs, &expected);
    let restored = metric(
        &text,
        "pickple_restore_records_total{app=\"counter\",store=\"counts\"}",
    )
    .unwrap();
    assert!(
        restored >= 12.0,
        "restore metric counts the changelog records: {restored}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_split_partitions_and_hand_them_over_without_loss() {
    let sb = Sandbox::new().await;
    let mut reader = Reader::new(&sb.topic("count-output"));
    let mut a = sb.start("a", Some(19421));
    let mut b = sb.start("b", Some(19422));
    let assigned = |port| {
        metric(
            &scrape(port),
            "pickple_assigned_partitions{app=\"counter\"}",
        )
        .unwrap_or(0.0)
    };
    wait_for(60, "both instances to own partitions", || {
        assigned(19421) + assigned(19422) == 6.0 && assigned(19422) > 0.0 && assigned(19421) > 0.0
    });

    let (first, mut expected) = inputs(30, 10, 0);
    sb.produce(&first);
    let mut total = first.len();
    reader.read_until(60, |r| r.len() >= total);

    // Stop b: its partitions and their state move to a.
    sigterm(&mut b);
    let (second, more) = inputs(30, 10, 10);
    sb.produce(&second);
    add(&mut expected, more);
    total += second.len();
    reader.read_until(90, |r| r.len() >= total);
    assert_eq!(assigned(19421), 6.0, "a owns everything while b is away");

    // Start b again: the group rebalances back and b picks up the state a built.
    let mut b = sb.start("b", Some(19422));
    wait_for(60, "b to own partitions again", || {
        assigned(19422) > 0.0 && assigned(19421) + assigned(19422) == 6.0
    });
    let (third, more) = inputs(30, 10, 20);
    sb.produce(&third);
    add(&mut expected, more);
    total += third.len();
    reader.read_until(90, |r| r.len() >= total);
    sigterm(&mut a);
    sigterm(&mut b);
    let outputs = reader.read_to_end(&sb.topic("count-output")).to_vec();
    assert_eq!(outputs.len(), total);
    assert_exact_counts(&outputs, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_goes_to_the_dlq_with_its_reason_and_processing_goes_on() {
    let sb = Sandbox::new().await;
    let records = vec![
        ("k".to_string(), b"{}".to_vec()),
        ("k".to_string(), b"not json at all".to_vec()),
        ("k".to_string(), b"{\"remind_in_ms\":\"soon\"}".to_vec()),
        ("k".to_string(), b"{}".to_vec()),
    ];
    sb.produce(&records);
    let mut child = sb.start("a", None);
    let mut out = Reader::new(&sb.topic("count-output"));
    out.read_until(60, |r| r.len() >= 2);
    let mut dlq = Reader::new(&sb.topic("counter-dlq"));
    dlq.read_until(60, |r| r.len() >= 2);
    sigterm(&mut child);

    let counts: Vec<u64> = out
        .records
        .iter()
        .map(|r| r.value["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts,
        vec![1, 2],
        "the good records on both sides of the poison ones are counted"
    );
    let first = &dlq.records[0];
    assert_eq!(first.raw, b"not json at all");
    assert!(
        first.headers["dlq-error"].contains("not valid JSON"),
        "{:?}",
        first.headers
    );
    assert_eq!(first.headers["dlq-source-topic"], "count-input");
    assert_eq!(first.headers["dlq-source-offset"], "1");
    assert!(
        dlq.records[1].headers["dlq-error"].contains("does not match the `Input` schema"),
        "{:?}",
        dlq.records[1].headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_punctuator_fires_after_wall_clock_time_even_across_a_restart() {
    let sb = Sandbox::new().await;
    sb.produce(&[("late".to_string(), b"{\"remind_in_ms\":3000}".to_vec())]);
    let mut child = sb.start("a", None);
    let mut out = Reader::new(&sb.topic("count-output"));
    out.read_until(60, |r| !r.is_empty());
    // The timer is committed with the record; kill the instance before it is due.
    sigkill(&mut child);
    let started = std::time::Instant::now();
    let mut child = sb.start("a", None);
    let mut reminders = Reader::new(&sb.topic("count-reminders"));
    reminders.read_until(60, |r| !r.is_empty());
    sigterm(&mut child);
    let all = reminders.read_to_end(&sb.topic("count-reminders")).to_vec();
    assert_eq!(all.len(), 1, "the timer fires once");
    assert_eq!(all[0].key, "late");
    assert_eq!(all[0].value["count"], 1);
    assert!(started.elapsed() < Duration::from_secs(60));
    // The input was untraced; the punctuation that sent the reminder started a trace.
    let traceparent = all[0]
        .headers
        .get("traceparent")
        .cloned()
        .unwrap_or_default();
    assert!(
        pickple_telemetry::TraceParent::parse(&traceparent).is_some(),
        "a reminder carries the punctuation's traceparent: {:?}",
        all[0].headers
    );
}
