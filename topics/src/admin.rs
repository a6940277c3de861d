//! Make a broker match the catalogue (`apply`) or report how it differs (`check`).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
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
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
}

fn configs(spec: &TopicSpec) -> Vec<(&'static str, String)> {
    let mut c = vec![("cleanup.policy", spec.cleanup.as_str().to_string())];
    if let Some(ms) = spec.retention_ms {
        c.push(("retention.ms", ms.to_string()));
    }
    c
}

/// Partition count of every existing topic.
fn existing_partitions(brokers: &str) -> Result<HashMap<String, i32>, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(None, TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// Wait until the broker's metadata lists every topic in `names`: a create is acknowledged by
/// the controller before every broker serves the new topic, and callers expect to use it at once.
fn wait_visible(brokers: &str, names: &[String]) -> Result<(), AdminError> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let existing = existing_partitions(brokers)?;
        if names.iter().all(|n| existing.contains_key(n)) || std::time::Instant::now() > deadline {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Create every catalogued topic that does not exist. Existing topics are left alone (their
/// drift is `check`'s business). Returns the names created.
pub async fn apply(
    brokers: &str,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<String>, AdminError> {
    let existing = existing_partitions(brokers)?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    if missing.is_empty() {
        return Ok(vec![]);
    }
    let configs: Vec<Vec<(&str, String)>> = missing.iter().map(|s| configs(s)).collect();
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .zip(&configs)
        .map(|(s, c)| {
            c.iter().fold(
                NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication)),
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

/// Everything in which the broker differs from the catalogue: missing topics, partition counts,
/// and the cleanup/retention configs.
pub async fn check(brokers: &str, specs: &[TopicSpec]) -> Result<Vec<Drift>, AdminError> {
    let existing = existing_partitions(brokers)?;
    let mut drift = Vec::new();
    let mut present = Vec::new();
    for spec in specs {
        match existing.get(&spec.name) {
            None => drift.push(Drift::Missing {
                topic: spec.name.clone(),
            }),
            Some(&actual) => {
                if actual != spec.partitions {
                    drift.push(Drift::Partitions {
                        topic: spec.name.clone(),
                        expected: spec.partitions,
                        actual,
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
        for (key, expected) in configs(spec) {
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
