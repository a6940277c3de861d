//! Make a broker match the catalogue (`apply`), report how it differs (`check`), and delete
//! topics that are no longer wanted (`delete`, `delete_prefixed`, `DeleteOnDrop`).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::catalogue::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("deleting topic {topic}: {code}")]
    Delete {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("growing topic {topic}: {code}")]
    Grow {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("topic {topic} has {actual} partitions, more than {wanted}: partitions never shrink")]
    Shrink {
        topic: String,
        actual: i32,
        wanted: i32,
    },
    #[error("refusing to delete by an empty name prefix: it matches every topic")]
    EmptyPrefix,
    #[error("created topics the brokers' metadata still does not list: {}", .0.join(", "))]
    NotVisible(Vec<String>),
    #[error("building a runtime to delete topics from a drop: {0}")]
    Runtime(#[from] std::io::Error),
}

/// One difference between the catalogue and the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Missing {
        topic: String,
    },
    Partitions {
        topic: String,
        expected: i32,
        actual: i32,
    },
    Config {
        topic: String,
        key: &'static str,
        expected: String,
        actual: String,
    },
    Replication {
        topic: String,
        expected: i32,
        actual: i32,
    },
}

/// How every topic is replicated: a property of the cluster, not of the catalogue. 1 and 1 on
/// a single node; 3 and 2 on a three-broker cluster, so a transaction survives the loss of one
/// broker (`acks=all` waits for two copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// The replication factor of created topics.
    pub factor: i32,
    /// `min.insync.replicas` of every topic.
    pub min_insync: i32,
}

impl Replication {
    pub const SINGLE: Replication = Replication {
        factor: 1,
        min_insync: 1,
    };

    /// A checked pair: both at least 1, and never more in-sync replicas than replicas.
    pub fn new(factor: i32, min_insync: i32) -> Result<Replication, String> {
        if factor < 1 || min_insync < 1 || min_insync > factor {
            return Err(format!(
                "replication factor {factor} and min.insync.replicas {min_insync}: both must be \
                 at least 1, and min.insync.replicas at most the factor"
            ));
        }
        Ok(Replication { factor, min_insync })
    }

    /// From `PICKPLE_REPLICATION_FACTOR` and `PICKPLE_MIN_INSYNC_REPLICAS` (1 each when unset),
    /// as the `topics` tool reads them.
    pub fn from_env() -> Result<Replication, String> {
        let read = |name: &str| match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("{name}={v}: not a number")),
            Err(_) => Ok(1),
        };
        Replication::new(
            read("PICKPLE_REPLICATION_FACTOR")?,
            read("PICKPLE_MIN_INSYNC_REPLICAS")?,
        )
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing { topic } => write!(f, "{topic}: missing"),
            Drift::Partitions {
                topic,
                expected,
                actual,
            } => {
                write!(f, "{topic}: {actual} partitions, catalogue says {expected}")
            }
            Drift::Config {
                topic,
                key,
                expected,
                actual,
            } => {
                write!(f, "{topic}: {key}={actual}, catalogue says {expected}")
            }
            Drift::Replication {
                topic,
                expected,
                actual,
            } => {
                write!(f, "{topic}: {actual} replicas, configured {expected}")
            }
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
}

fn configs(spec: &TopicSpec, replication: &Replication) -> Vec<(&'static str, String)> {
    let mut c = vec![("cleanup.policy", spec.cleanup.as_str().to_string())];
    if let Some(ms) = spec.retention_ms {
        c.push(("retention.ms", ms.to_string()));
    }
    c.push(("min.insync.replicas", replication.min_insync.to_string()));
    c
}

/// How an existing topic is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    partitions: i32,
    /// Replicas of its first partition.
    replicas: i32,
}

/// The layout of every existing topic, from one metadata request.
fn existing_topics(brokers: &str) -> Result<HashMap<String, Layout>, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            let layout = Layout {
                partitions: t.partitions().len() as i32,
                replicas: t
                    .partitions()
                    .first()
                    .map_or(0, |p| p.replicas().len() as i32),
            };
            (t.name().to_string(), layout)
        })
        .collect())
}

/// The partition count of every topic the broker has, from one metadata request.
pub fn partition_counts(brokers: &str) -> Result<HashMap<String, i32>, KafkaError> {
    Ok(existing_topics(brokers)?
        .into_iter()
        .map(|(name, layout)| (name, layout.partitions))
        .collect())
}

/// The partition count a deployment's topics have: the largest among those of `specs` that exist
/// (`pickple-grow` raises them all together, so a smaller one is one a grow left behind, which
/// `check` reports), or `None` when none of them exists yet. Only the names of `specs` count.
pub fn deployed_partitions(brokers: &str, specs: &[TopicSpec]) -> Result<Option<i32>, KafkaError> {
    let existing = existing_topics(brokers)?;
    Ok(specs
        .iter()
        .filter_map(|s| existing.get(&s.name))
        .map(|layout| layout.partitions)
        .max())
}

/// Wait until the broker's metadata lists every topic in `names`: a create is acknowledged by
/// the controller before every broker serves the new topic, and callers expect to use it at once
/// (a metadata or watermark request in between answers UNKNOWN_TOPIC_OR_PART).
pub fn wait_visible(brokers: &str, names: &[String]) -> Result<(), AdminError> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let existing = existing_topics(brokers)?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !existing.contains_key(*n))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(AdminError::NotVisible(missing));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Create every catalogued topic that does not exist. Existing topics are left alone (their
/// drift is `check`'s business). Returns the names created.
pub async fn apply(
    brokers: &str,
    specs: &[TopicSpec],
    replication: &Replication,
) -> Result<Vec<String>, AdminError> {
    let existing = existing_topics(brokers)?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }
    let configs: Vec<Vec<(&str, String)>> =
        missing.iter().map(|s| configs(s, replication)).collect();
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .zip(&configs)
        .map(|(s, c)| {
            c.iter().fold(
                NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(replication.factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin(brokers)?
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
        )
        .await?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(topic) => created.push(topic),
            // Someone else created it between our metadata read and now: that is the goal.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(AdminError::Create { topic, code }),
        }
    }
    wait_visible(brokers, &created)?;
    Ok(created)
}

/// A topic whose partitions [`grow`] added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grown {
    pub topic: String,
    pub from: i32,
    pub to: i32,
}

/// Give every existing catalogued topic with fewer partitions than its spec the spec's count
/// (missing topics are `apply`'s business). A topic with more is an error: partitions never
/// shrink. Returns what grew, once the brokers' metadata shows it. Moving the state to the new
/// layout is `pickple-grow`'s job: on its own this breaks the stateful applications' key
/// ownership.
pub async fn grow(brokers: &str, specs: &[TopicSpec]) -> Result<Vec<Grown>, AdminError> {
    let existing = existing_topics(brokers)?;
    let mut grown = Vec::new();
    for spec in specs {
        let Some(actual) = existing.get(&spec.name) else {
            continue;
        };
        if actual.partitions > spec.partitions {
            return Err(AdminError::Shrink {
                topic: spec.name.clone(),
                actual: actual.partitions,
                wanted: spec.partitions,
            });
        }
        if actual.partitions < spec.partitions {
            grown.push(Grown {
                topic: spec.name.clone(),
                from: actual.partitions,
                to: spec.partitions,
            });
        }
    }
    if grown.is_empty() {
        return Ok(grown);
    }
    let new: Vec<NewPartitions> = grown
        .iter()
        .map(|g| NewPartitions::new(&g.topic, g.to as usize))
        .collect();
    let results = admin(brokers)?
        .create_partitions(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
        .await?;
    for result in results {
        if let Err((topic, code)) = result {
            return Err(AdminError::Grow { topic, code });
        }
    }
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let now = existing_topics(brokers)?;
        let visible = grown
            .iter()
            .all(|g| now.get(&g.topic).is_some_and(|l| l.partitions >= g.to));
        if visible || std::time::Instant::now() > deadline {
            return Ok(grown);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything in which the broker differs from the catalogue and `replication`: missing topics,
/// partition counts, replicas, and the cleanup, retention and min.insync.replicas configs.
pub async fn check(
    brokers: &str,
    specs: &[TopicSpec],
    replication: &Replication,
) -> Result<Vec<Drift>, AdminError> {
    let existing = existing_topics(brokers)?;
    let mut drift = Vec::new();
    let mut present = Vec::new();
    for spec in specs {
        match existing.get(&spec.name) {
            None => drift.push(Drift::Missing {
                topic: spec.name.clone(),
            }),
            Some(actual) => {
                if actual.partitions != spec.partitions {
                    drift.push(Drift::Partitions {
                        topic: spec.name.clone(),
                        expected: spec.partitions,
                        actual: actual.partitions,
                    });
                }
                if actual.replicas != replication.factor {
                    drift.push(Drift::Replication {
                        topic: spec.name.clone(),
                        expected: replication.factor,
                        actual: actual.replicas,
                    });
                }
                present.push(spec);
            }
        }
    }
    if present.is_empty() {
        return Ok(drift);
    }
    let resources: Vec<ResourceSpecifier> = present
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let described = admin(brokers)?
        .describe_configs(
            &resources,
            &AdminOptions::new().request_timeout(Some(TIMEOUT)),
        )
        .await?;
    for (spec, result) in present.iter().zip(described) {
        let resource = result.map_err(KafkaError::AdminOp)?;
        for (key, expected) in configs(spec, replication) {
            let actual = resource
                .get(key)
                .and_then(|e| e.value.clone())
                .unwrap_or_default();
            if actual != expected {
                drift.push(Drift::Config {
                    topic: spec.name.clone(),
                    key,
                    expected,
                    actual,
                });
            }
        }
    }
    Ok(drift)
}

/// Topics per DeleteTopics request: thousands of leftovers in one request would outlast the
/// request timeout on a busy controller.
const DELETE_BATCH: usize = 500;

/// Delete the topics in `names`. A topic that does not exist is skipped: it is gone, which is
/// what the caller wants. Returns the names deleted. The broker removes a deleted topic's data
/// in the background, so a name may stay visible in metadata for a moment.
pub async fn delete(brokers: &str, names: &[String]) -> Result<Vec<String>, AdminError> {
    let admin = admin(brokers)?;
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let mut deleted = Vec::new();
    for batch in names.chunks(DELETE_BATCH) {
        let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
        for result in admin.delete_topics(&batch, &options).await? {
            match result {
                Ok(topic) => deleted.push(topic),
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => return Err(AdminError::Delete { topic, code }),
            }
        }
    }
    Ok(deleted)
}

/// The names in `names` that start with `prefix`, Kafka's internal topics (`__...`) excepted.
fn prefixed<'a>(
    names: impl IntoIterator<Item = &'a String>,
    prefix: &str,
) -> Result<Vec<String>, AdminError> {
    if prefix.is_empty() {
        return Err(AdminError::EmptyPrefix);
    }
    let mut matching: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(prefix) && !n.starts_with("__"))
        .cloned()
        .collect();
    matching.sort_unstable();
    Ok(matching)
}

/// Delete every topic whose name starts with `prefix` (a test's private namespace, say).
/// Kafka's internal topics are never matched and an empty prefix is refused. Returns the names
/// deleted.
pub async fn delete_prefixed(brokers: &str, prefix: &str) -> Result<Vec<String>, AdminError> {
    let existing = existing_topics(brokers)?;
    let names = prefixed(existing.keys(), prefix)?;
    delete(brokers, &names).await
}

/// Deletes every topic under a prefix when dropped: a test fixture holds one, so its topics
/// do not outlive the test on a shared broker. Best effort: a failure is logged to stderr,
/// never raised, because a drop must not panic (it may run while a failed test unwinds).
#[must_use = "the topics are deleted when this is dropped"]
pub struct DeleteOnDrop {
    brokers: String,
    prefix: String,
}

impl DeleteOnDrop {
    pub fn new(brokers: &str, prefix: &str) -> DeleteOnDrop {
        DeleteOnDrop {
            brokers: brokers.to_string(),
            prefix: prefix.to_string(),
        }
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let (brokers, prefix) = (self.brokers.clone(), self.prefix.clone());
        // A drop may run on a thread inside a tokio runtime, which cannot block on a future;
        // a thread of our own with its own runtime can.
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(delete_prefixed(&brokers, &prefix))
        })
        .join();
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("could not delete the topics under {}: {e}", self.prefix),
            Err(_) => eprintln!(
                "deleting the topics under {} panicked; they are left behind",
                self.prefix
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(all: &[&str]) -> Vec<String> {
        all.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_prefix_selects_the_topics_under_it_and_never_internal_ones() {
        let all = names(&[
            "rt0123456789ab.count-input",
            "rt0123456789ab.counter-dlq",
            "rt0123456789cd.count-input",
            "order-commands",
            "__consumer_offsets",
        ]);
        assert_eq!(
            prefixed(&all, "rt0123456789ab.").unwrap(),
            names(&["rt0123456789ab.count-input", "rt0123456789ab.counter-dlq"])
        );
        assert_eq!(
            prefixed(&all, "_").unwrap(),
            Vec::<String>::new(),
            "Kafka's internal topics are never deleted by prefix"
        );
    }

    #[test]
    fn an_empty_prefix_is_refused() {
        let all = names(&["order-commands"]);
        assert!(matches!(prefixed(&all, ""), Err(AdminError::EmptyPrefix)));
    }
}
