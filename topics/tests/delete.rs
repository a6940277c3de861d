//! `delete`, `delete_prefixed`, `DeleteOnDrop` and `topics delete` against the real local broker
//! (started by scripts/test.sh).

use std::process::Command;
use std::time::{Duration, Instant};

use pickple_schemas::topic;
use pickple_topics::{catalogue, DeleteOnDrop, TopicSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn fresh_prefix() -> String {
    format!("del{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The catalogue's topics in `names`, under `prefix`.
fn specs(prefix: &str, names: &[&str]) -> Vec<TopicSpec> {
    catalogue(prefix)
        .into_iter()
        .filter(|t| names.iter().any(|n| t.name == format!("{prefix}{n}")))
        .collect()
}

fn existing(prefix: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && t.name().starts_with(prefix))
        .map(|t| t.name().to_string())
        .collect();
    names.sort_unstable();
    names
}

/// The broker deletes in the background: wait until no topic under `prefix` is listed.
fn assert_gone(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = existing(prefix);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still listed 30 s after deletion: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn topics_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_topics"))
        .args(["--brokers", &brokers()])
        .args(args)
        .output()
        .expect("run topics");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn delete_prefixed_deletes_the_topics_under_the_prefix_only() {
    let (mine, other) = (fresh_prefix(), fresh_prefix());
    let _cleanup = DeleteOnDrop::new(&brokers(), &other);
    let names = [topic::ORDER_COMMANDS, topic::ORDER_EVENTS];
    pickple_topics::apply(
        &brokers(),
        &specs(&mine, &names),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();
    pickple_topics::apply(
        &brokers(),
        &specs(&other, &names),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();

    let mut deleted = pickple_topics::delete_prefixed(&brokers(), &mine)
        .await
        .unwrap();
    deleted.sort_unstable();
    let mut want: Vec<String> = names.iter().map(|n| format!("{mine}{n}")).collect();
    want.sort_unstable();
    assert_eq!(deleted, want);
    assert_gone(&mine);
    assert_eq!(existing(&other).len(), 2, "another prefix's topics stay");
}

#[tokio::test]
async fn deleting_a_topic_that_does_not_exist_is_not_an_error() {
    let missing = format!("{}{}", fresh_prefix(), topic::ORDER_COMMANDS);
    let deleted = pickple_topics::delete(&brokers(), &[missing])
        .await
        .unwrap();
    assert!(deleted.is_empty(), "{deleted:?}");
}

#[tokio::test]
async fn a_dropped_guard_deletes_the_topics_under_its_prefix() {
    let prefix = fresh_prefix();
    let guard = DeleteOnDrop::new(&brokers(), &prefix);
    pickple_topics::apply(
        &brokers(),
        &specs(&prefix, &[topic::ORDER_COMMANDS]),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();
    assert_eq!(existing(&prefix).len(), 1);
    drop(guard);
    assert_gone(&prefix);
}

#[tokio::test]
async fn the_cli_deletes_by_name_and_by_prefix_and_refuses_an_empty_prefix() {
    let (by_prefix, by_name) = (fresh_prefix(), fresh_prefix());
    let _cleanup = (
        DeleteOnDrop::new(&brokers(), &by_prefix),
        DeleteOnDrop::new(&brokers(), &by_name),
    );
    let names = [topic::ORDER_COMMANDS, topic::ORDER_EVENTS];
    pickple_topics::apply(
        &brokers(),
        &specs(&by_prefix, &names),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();
    pickple_topics::apply(
        &brokers(),
        &specs(&by_name, &names),
        &pickple_topics::Replication::SINGLE,
    )
    .await
    .unwrap();

    let (code, out) = topics_cli(&["delete", "--name-prefix", ""]);
    assert_ne!(code, 0, "an empty prefix matches everything: {out}");
    assert_eq!(existing(&by_prefix).len(), 2, "nothing deleted: {out}");

    let named = format!("{by_name}{}", topic::ORDER_COMMANDS);
    let (code, out) = topics_cli(&["delete", "--name-prefix", &by_prefix, &named]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 topics deleted"), "{out}");
    assert!(out.contains(&format!("deleted {named}")), "{out}");
    assert_gone(&by_prefix);
    assert_eq!(
        existing(&by_name),
        vec![format!("{by_name}{}", topic::ORDER_EVENTS)],
        "only the named topic of that prefix is deleted"
    );
}
