//! `topics apply` and `topics check` against the real local broker (started by scripts/test.sh).

use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

fn brokers() -> String {
    std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

fn topics_cli(prefix: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_topics"))
        .args(["--brokers", &brokers(), "--prefix", prefix])
        .args(args)
        // The count is the broker's unless a test names one: scripts may export theirs.
        .env_remove("PICKPLE_PARTITIONS")
        .output()
        .expect("run topics");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn apply_is_idempotent_and_check_reports_drift() {
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let all = pickple_topics::catalogue(&prefix);
    let missing = format!("{prefix}view-orders");
    let narrow = format!("{prefix}order-events");

    // A topic created by hand with the wrong partition count, and one topic never created.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new(&narrow, 3, TopicReplication::Fixed(1))
                .set("retention.ms", "2592000000")],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let partial: Vec<_> = all.iter().filter(|t| t.name != missing).cloned().collect();
    let created = pickple_topics::apply(&brokers(), &partial, &pickple_topics::Replication::SINGLE)
        .await
        .unwrap();
    assert_eq!(
        created.len(),
        partial.len() - 1,
        "all but the hand-made topic are created"
    );

    let (code, out) = topics_cli(&prefix, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("drift: {missing}: missing")), "{out}");
    assert!(
        out.contains(&format!("drift: {narrow}: 3 partitions, catalogue says 6")),
        "{out}"
    );
    assert_eq!(out.matches("drift:").count(), 2, "{out}");

    // apply creates what is missing, then has nothing left to do.
    let (code, out) = topics_cli(&prefix, &["apply"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("created {missing}")), "{out}");
    let (code, out) = topics_cli(&prefix, &["apply"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(", 0 created"), "{out}");

    // The partition drift is reported, not silently "fixed" by apply.
    let (code, out) = topics_cli(&prefix, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("drift:").count(), 1, "{out}");

    // Replication is the cluster's: checked against a cluster's settings, a single node's
    // topics (1 replica, min.insync.replicas 1, set by apply) drift on both, every one.
    let (code, out) = topics_cli(
        &prefix,
        &[
            "--replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
            "check",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.matches("min.insync.replicas=1, catalogue says 2")
            .count(),
        all.len(),
        "{out}"
    );
    assert_eq!(
        out.matches(": 1 replicas, configured 3").count(),
        all.len(),
        "{out}"
    );
    // A pair that cannot hold is refused before anything is asked of the broker.
    let (code, out) = topics_cli(
        &prefix,
        &[
            "--replication-factor",
            "1",
            "--min-insync-replicas",
            "2",
            "apply",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("at most the factor"), "{out}");

    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    admin
        .delete_topics(&names, &AdminOptions::new())
        .await
        .unwrap();
}

/// After a grow, `topics` keeps to the count the deployment's topics have without being told it:
/// a topic a later version adds is created at the grown count (6 partitions among 12 would break
/// the co-partitioning every processor relies on), and `check` is clean.
#[tokio::test]
async fn a_grown_deployment_keeps_its_partition_count() {
    let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
    let _topics = pickple_topics::DeleteOnDrop::new(&brokers(), &prefix);
    let added = format!("{prefix}view-orders");

    let (code, out) = topics_cli(&prefix, &["partitions"]);
    assert_eq!(
        (code, out.trim()),
        (0, "6"),
        "a new deployment has the catalogue's 6"
    );

    let older: Vec<_> = pickple_topics::catalogue(&prefix)
        .into_iter()
        .filter(|t| t.name != added)
        .collect();
    pickple_topics::apply(&brokers(), &older, &pickple_topics::Replication::SINGLE)
        .await
        .unwrap();
    let to_12: Vec<_> = pickple_topics::catalogue_with(&prefix, 12)
        .into_iter()
        .filter(|t| t.name != added)
        .collect();
    let grown = pickple_topics::grow(&brokers(), &to_12).await.unwrap();
    assert_eq!(grown.len(), older.len());

    let (code, out) = topics_cli(&prefix, &["partitions"]);
    assert_eq!((code, out.trim()), (0, "12"), "{out}");
    let (code, out) = topics_cli(&prefix, &["apply"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("created {added}")), "{out}");
    let counts = pickple_topics::partition_counts(&brokers()).unwrap();
    assert_eq!(
        counts.get(&added),
        Some(&12),
        "the added topic has the deployment's count"
    );

    let (code, out) = topics_cli(&prefix, &["check"]);
    assert_eq!(code, 0, "{out}");
    // A count given explicitly still wins: checked against 6, every topic drifts.
    let (code, out) = topics_cli(&prefix, &["--partitions", "6", "check"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.matches("12 partitions, catalogue says 6").count(),
        older.len() + 1,
        "{out}"
    );
}
