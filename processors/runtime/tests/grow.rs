//! Growing the partitions with state present, against the real local broker: the reference
//! counter on 6 partitions counts keys and holds reminders not yet due; it is stopped, its
//! topics grow to 12 and its changelogs are rekeyed (`pickple_runtime::grow`); two instances
//! then run on 12 partitions, one on the old state dir (it restores the tombstones of what left
//! its trees), one on an empty one (it restores what moved to the new partitions). Counts go on
//! exactly from where they were, and every reminder fires once, with its key's count.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use pickple_runtime::grow::{check_drained, rekey, GrowError};
use pickple_runtime::partition_for;
use pickple_runtime::reference::counter_spec;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

const GROWN: i32 = 12;

async fn grow_topics(sb: &Sandbox) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let new: Vec<NewPartitions> = sb
        .topics()
        .iter()
        .map(|t| NewPartitions::new(t, GROWN as usize))
        .collect();
    for r in admin
        .create_partitions(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    wait_for(30, "every topic to show 12 partitions", || {
        sb.topics().iter().all(|t| partition_count(t) == GROWN)
    });
}

/// How many of `keys` hash to another partition of 12 than of 6.
fn moving<'k>(keys: impl Iterator<Item = &'k String>) -> usize {
    keys.filter(|k| partition_for(k.as_bytes(), 6) != partition_for(k.as_bytes(), GROWN))
        .count()
}

/// Records asking for a reminder in `ms`, one per key.
fn reminders(keys: &[String], ms: i64) -> Vec<(String, Vec<u8>)> {
    keys.iter()
        .map(|k| (k.clone(), format!("{{\"remind_in_ms\":{ms}}}").into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_and_pending_timers_survive_growing_from_6_to_12_partitions() {
    let sb = Sandbox::new().await;
    let spec = counter_spec();
    let mut outputs = Reader::new(&sb.topic(COUNT_OUTPUT));
    let mut a = sb.start("a", None);

    // Counts on 6 partitions, and a reminder per `rem-` key, due well after the growth.
    let (first, mut expected) = keyed_inputs(200, 3, 0);
    sb.produce(&first);
    let rem: Vec<String> = (0..40).map(|i| format!("rem-{i}")).collect();
    sb.produce(&reminders(&rem, 25_000));
    for k in &rem {
        expected.insert(k.clone(), 1);
    }
    let mut total = first.len() + rem.len();
    outputs.read_until(90, |r| r.len() >= total);
    assert!(moving(expected.keys()) > 50, "about half the keys move");

    // The guards: no growth under a running instance, nor with records left to process.
    let brokers = brokers();
    assert!(matches!(
        check_drained(&brokers, &sb.prefix, &spec, Duration::ZERO),
        Err(GrowError::Running { .. })
    ));
    sigterm(&mut a);
    let late = vec![("late".to_string(), b"{}".to_vec())];
    sb.produce(&late);
    match check_drained(&brokers, &sb.prefix, &spec, Duration::from_secs(30)) {
        Err(GrowError::NotDrained { pending, .. }) => {
            let p = partition_for(b"late", 6);
            assert_eq!(pending.len(), 1, "{pending:?}");
            assert!(pending[0].starts_with(&format!("{}[{p}]@", sb.topic(COUNT_INPUT))));
        }
        other => panic!("records left must refuse the growth: {other:?}"),
    }
    let mut a = sb.start("a", None);
    expected.insert("late".into(), 1);
    total += 1;
    outputs.read_until(60, |r| r.len() >= total);
    sigterm(&mut a);
    check_drained(&brokers, &sb.prefix, &spec, Duration::from_secs(30)).unwrap();

    grow_topics(&sb).await;
    let moved = rekey(&brokers, &sb.prefix, &spec, Duration::from_secs(60)).unwrap();
    eprintln!("rekeyed: {moved:?}");
    let by_store: HashMap<&str, (u64, u64)> = moved
        .iter()
        .map(|m| (m.store.as_str(), (m.entries, m.moved)))
        .collect();
    assert_eq!(by_store["counts"], (241, moving(expected.keys()) as u64));
    let timers_moved = moving(rem.iter()) as u64;
    assert!(timers_moved > 0);
    assert_eq!(by_store["timers"], (rem.len() as u64, timers_moved));
    let again = rekey(&brokers, &sb.prefix, &spec, Duration::from_secs(60)).unwrap();
    assert!(
        again.iter().all(|m| m.moved == 0 && m.copied == 0),
        "a second run moves nothing: {again:?}"
    );

    // a keeps its state dir, b starts empty; the range assignor gives b partitions 6-11.
    let mut a = sb.start("a", None);
    let mut b = sb.start("b", None);
    let mut reminded = Reader::new(&sb.topic(COUNT_REMINDERS));
    let mut outputs = Reader::new(&sb.topic(COUNT_OUTPUT));
    let (second, more) = keyed_inputs(200, 2, 3);
    sb.produce(&second);
    add(&mut expected, more);
    total += second.len();
    outputs.read_until(120, |r| r.len() >= total);
    reminded.read_until(90, |r| r.len() >= rem.len());

    sigterm(&mut a);
    sigterm(&mut b);
    let all = outputs.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_eq!(all.len(), total, "nothing lost or doubled");
    assert_exact_counts(&all, &expected);
    let fired = reminded.read_to_end(&sb.topic(COUNT_REMINDERS)).to_vec();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for r in &fired {
        assert_eq!(
            r.value["count"].as_u64(),
            Some(1),
            "the reminder of {} reads its key's count where the timer fired",
            r.key
        );
        assert_eq!(r.partition, partition_for(&r.raw_key, GROWN));
        *seen.entry(r.key.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), rem.len(), "every reminder fired");
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");
}
