//! Standby replicas against the real local broker: three `pickple-counter` instances, one
//! SIGKILLed for good. With one standby replica the instances that take its tasks restore
//! nothing from the changelogs (their standbys already hold the stores); without, they restore
//! the dead instance's share. Counts stay exact either way.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// What losing an instance cost: changelog records the survivors restored, and how long from
/// the SIGKILL until the survivors owned every task and had processed new input on all of them.
struct Takeover {
    restored: f64,
    standby_applied: f64,
    took: Duration,
}

fn restored(port: u16) -> f64 {
    let text = scrape(port);
    ["counts", "timers"]
        .iter()
        .filter_map(|store| {
            metric(
                &text,
                &format!("pickple_restore_records_total{{app=\"counter\",store=\"{store}\"}}"),
            )
        })
        .sum()
}

fn gauge(port: u16, name: &str) -> f64 {
    metric(&scrape(port), &format!("{name}{{app=\"counter\"}}")).unwrap_or(0.0)
}

fn standby_applied(port: u16) -> f64 {
    let text = scrape(port);
    text.lines()
        .filter(|l| l.starts_with("pickple_standby_records_total{app=\"counter\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn lose_an_instance(replicas: &str, ports: [u16; 3]) -> Takeover {
    let sb = Sandbox::new().await;
    let mut reader = Reader::new(&sb.topic(COUNT_OUTPUT));
    let env = [("PICKPLE_STANDBY_REPLICAS", replicas)];
    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .zip(ports)
        .map(|(name, port)| sb.start_with(name, Some(port), &env))
        .collect();
    let assigned = |port| gauge(port, "pickple_assigned_partitions");
    wait_for(90, "three instances to own two tasks each", || {
        ports.iter().all(|&p| assigned(p) == 2.0)
    });

    let (first, mut expected) = keyed_inputs(300, 4, 0);
    sb.produce(&first);
    let mut total = first.len();
    reader.read_until(90, |r| r.len() >= total);
    if replicas != "0" {
        // Every changelog record is committed (the outputs of the same transactions are read):
        // wait until each instance's standbys have read to the end and stayed there a second,
        // as a standby that saw an end before the last fetch would report it again at once.
        let mut since: Option<Instant> = None;
        wait_for(60, "standbys to catch up", || {
            let caught_up = ports.iter().all(|&p| {
                gauge(p, "pickple_standby_partitions") > 0.0
                    && gauge(p, "pickple_standby_behind_partitions") == 0.0
            });
            if !caught_up {
                since = None;
                return false;
            }
            since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1)
        });
    }
    let survivors = [ports[0], ports[2]];
    let before: f64 = survivors.iter().map(|&p| restored(p)).sum();

    // b owns tasks 2 and 3 (range over a, b, c). Lose it for good.
    let killed = Instant::now();
    sigkill(&mut instances[1]);
    let (second, more) = keyed_inputs(300, 2, 4);
    sb.produce(&second);
    add(&mut expected, more);
    total += second.len();
    reader.read_until(120, |r| r.len() >= total);
    let took = killed.elapsed();
    assert_eq!(
        survivors.iter().map(|&p| assigned(p)).sum::<f64>(),
        6.0,
        "a and c own every task once b is gone"
    );
    let after: f64 = survivors.iter().map(|&p| restored(p)).sum();
    let standby_applied = survivors.iter().map(|&p| standby_applied(p)).sum();

    for i in [0, 2] {
        sigterm(&mut instances[i]);
    }
    let outputs = reader.read_to_end(&sb.topic(COUNT_OUTPUT)).to_vec();
    assert_eq!(outputs.len(), total, "nothing lost or doubled");
    assert_exact_counts(&outputs, &expected);
    Takeover {
        restored: after - before,
        standby_applied,
        took,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_standby_replica_a_lost_instances_tasks_restore_nothing() {
    let t = lose_an_instance("1", [19441, 19442, 19443]).await;
    eprintln!(
        "standby 1: restored {} records after the loss, standbys applied {}, new input on every task {:?} after the SIGKILL",
        t.restored, t.standby_applied, t.took
    );
    assert!(t.standby_applied > 0.0, "the standbys read the changelogs");
    assert_eq!(
        t.restored, 0.0,
        "the survivors' standbys held the lost instance's stores: nothing to restore"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_standby_replicas_a_lost_instances_tasks_restore_their_changelogs() {
    let t = lose_an_instance("0", [19451, 19452, 19453]).await;
    eprintln!(
        "standby 0: restored {} records after the loss, new input on every task {:?} after the SIGKILL",
        t.restored, t.took
    );
    assert_eq!(t.standby_applied, 0.0);
    assert!(
        t.restored > 0.0,
        "the lost instance's stores came back from their changelogs"
    );
}
