//! The runtime's promises, checked against the real local broker with the `pickple-counter`
//! reference app run as a child process.

mod common;

use std::time::Duration;

use common::*;
use pickple_runtime::{now_millis, partition_for};
use pickple_schemas::topic;
use rand::Rng;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_neither_loses_nor_duplicates() {
    let seed = ChaosSeed::from_env_or_fresh();
    let mut rng = seed.rng();
    let sb = Sandbox::new().await;
    let (records, expected) = keyed_inputs(24, 250, 0); // 6,000 records
    sb.produce(&records);
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let total = records.len();
    let mut child = sb.start("a", None);
    for round in 0..4 {
        // Let it get a share of the way (output committed), then kill it at a random moment.
        let share = records.len() * (round + 1) / 6;
        let reached = reader.read_within(Duration::from_secs(60), |r| r.len() >= share);
        assert!(
            reached.is_some(),
            "round {round}: {} of {share} outputs within 60 s ({seed})",
            reader.records.len()
        );
        let delay = rng.random_range(50..600);
        std::thread::sleep(Duration::from_millis(delay));
        sigkill(&mut child);
        eprintln!("round {round}: killed {delay} ms after reading {share} committed outputs");
        child = sb.start("a", None);
    }
    let finished = reader.read_within(Duration::from_secs(120), |r| r.len() >= total);
    assert!(
        finished.is_some(),
        "{} of {total} outputs within 120 s of the last restart ({seed})",
        reader.records.len()
    );
    sigterm(&mut child);
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_eq!(
        outputs.len(),
        total,
        "exactly one output per input ({seed})"
    );
    assert_exact_counts(&outputs, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_state_dir_is_restored_from_the_changelog_before_processing() {
    let sb = Sandbox::new().await;
    let (first, mut expected) = keyed_inputs(12, 20, 0);
    sb.produce(&first);
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let mut child = sb.start("a", Some(19411));
    reader.read_until(60, |r| r.len() >= first.len());
    sigterm(&mut child);
    std::fs::remove_dir_all(sb.state_dir("a")).unwrap();

    let (second, more) = keyed_inputs(12, 5, 20);
    sb.produce(&second);
    add(&mut expected, more);
    let mut child = sb.start("a", Some(19411));
    let total = first.len() + second.len();
    reader.read_until(60, |r| r.len() >= total);
    // Counts go on from 20: had a record been processed before the restore, a key would
    // restart at 1 and the sequence would show a duplicate.
    let text = scrape(19411);
    sigterm(&mut child);
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
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
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
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

    let (first, mut expected) = keyed_inputs(30, 10, 0);
    sb.produce(&first);
    let mut total = first.len();
    reader.read_until(60, |r| r.len() >= total);

    // Stop b: its partitions and their state move to a.
    sigterm(&mut b);
    let (second, more) = keyed_inputs(30, 10, 10);
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
    let (third, more) = keyed_inputs(30, 10, 20);
    sb.produce(&third);
    add(&mut expected, more);
    total += third.len();
    reader.read_until(90, |r| r.len() >= total);
    sigterm(&mut a);
    sigterm(&mut b);
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
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
    let mut out = Reader::new(&sb.topic(COUNT_OUTPUT));
    out.read_until(60, |r| r.len() >= 2);
    let mut dlq = Reader::new(&sb.topic(&topic::dead_letter(APP)));
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
    assert_eq!(first.headers["dlq-source-topic"], COUNT_INPUT);
    assert_eq!(first.headers["dlq-source-offset"], "1");
    assert!(
        dlq.records[1].headers["dlq-error"].contains("does not match the `Input` schema"),
        "{:?}",
        dlq.records[1].headers
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_punctuator_fires_after_wall_clock_time_even_across_a_restart() {
    const DELAY_MS: i64 = 3000;
    let sb = Sandbox::new().await;
    let input = format!("{{\"remind_in_ms\":{DELAY_MS}}}");
    sb.produce(&[("late".to_string(), input.into_bytes())]);
    let mut child = sb.start("a", None);
    let mut out = Reader::new(&sb.topic(COUNT_OUTPUT));
    out.read_until(60, |r| !r.is_empty());
    // The timer is committed with the record's output; kill the instance before it is due.
    sigkill(&mut child);
    let killed_at = now_millis();
    let due = timer_due(&sb);
    assert!(
        killed_at < due,
        "killed {} ms after the timer was due: the restart must come first to be tested",
        killed_at - due
    );

    let mut child = sb.start("a", None);
    let mut reminders = Reader::new(&sb.topic(COUNT_REMINDERS));
    let waited = reminders.read_within(Duration::from_secs(60), |r| !r.is_empty());
    assert!(
        waited.is_some(),
        "no reminder within 60 s of the restart; the timer was due {} ms after the kill",
        due - killed_at
    );
    sigterm(&mut child);
    let all = reminders.read_to_end(&sb.topic(COUNT_REMINDERS)).to_vec();
    assert_eq!(all.len(), 1, "the timer fires once");
    assert_eq!(all[0].key, "late");
    assert_eq!(all[0].value["count"], 1);
    let sent_at = all[0].timestamp.expect("the reminder has a timestamp");
    assert!(
        sent_at >= due,
        "the reminder was sent {} ms before its timer was due",
        due - sent_at
    );
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

/// When the sandbox's only timer is due, from its changelog record (key: big-endian due
/// millis, then the record key; see `pickple_runtime::reference`).
fn timer_due(sb: &Sandbox) -> i64 {
    let mut changelog = Reader::new(&sb.topic(&topic::changelog(APP, TIMERS_STORE)));
    let set = changelog.read_until(60, |r| r.iter().any(|t| !t.raw.is_empty()));
    let timer = set.iter().find(|t| !t.raw.is_empty()).unwrap();
    let due: [u8; 8] = timer.raw_key[..8].try_into().unwrap();
    i64::from_be_bytes(due)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_record_lands_on_the_partition_that_partition_for_names() {
    let sb = Sandbox::new().await;
    let (records, _) = keyed_inputs(60, 1, 0);
    sb.produce(&records);
    let mut reader = Reader::new(&sb.topic(COUNT_INPUT));
    let read = reader.read_to_end(&sb.topic(COUNT_INPUT));
    assert_eq!(read.len(), records.len());
    let mut used = std::collections::BTreeSet::new();
    for r in read {
        assert_eq!(
            r.partition,
            partition_for(&r.raw_key, PARTITIONS),
            "key {:?}: the producer's murmur2 partitioner and partition_for disagree",
            r.key
        );
        used.insert(r.partition);
    }
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "60 keys reach every partition"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_deletes_its_topics_when_dropped() {
    let sb = Sandbox::new().await;
    let prefix = sb.prefix.clone();
    let mut names = sb.topics().to_vec();
    names.sort_unstable();
    // A create is acknowledged before every broker lists the topic.
    wait_for(30, "the sandbox's topics to be listed", || {
        existing_topics(&prefix) == names
    });
    drop(sb);
    // The broker deletes in the background: the names leave its metadata shortly after.
    wait_for(30, "the sandbox's topics to be deleted", || {
        existing_topics(&prefix).is_empty()
    });
}
