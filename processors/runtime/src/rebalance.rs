//! Consumer callbacks: assignment changes reach the engine while the poll loop is inside `poll`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

use crate::engine::{Engine, EngineError};
use crate::metrics::Metrics;
use crate::processor::Processor;

pub(crate) struct RebalanceContext<P> {
    pub engine: Arc<Mutex<Engine<P>>>,
    pub app: String,
    pub prefix: String,
    /// The first engine failure inside a callback; the poll loop stops on it.
    pub failure: Arc<Mutex<Option<EngineError>>>,
    /// The (topic, partition) lag series set by the last statistics, to drop those of
    /// partitions that have left.
    pub lag_series: Mutex<HashSet<(String, i32)>>,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut ps: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    ps.sort_unstable();
    ps.dedup();
    ps
}

impl<P: Processor> RebalanceContext<P> {
    fn record(&self, result: Result<(), EngineError>) {
        if let Err(e) = result {
            tracing::error!(error = %e, "rebalance handling failed");
            self.failure.lock().unwrap().get_or_insert(e);
        }
    }
}

impl<P: Processor> ClientContext for RebalanceContext<P> {
    /// Lag per assigned input partition from positions (see [`crate::lag`]), never from
    /// librdkafka's `consumer_lag`.
    fn stats(&self, stats: Statistics) {
        let gauge = &Metrics::global().lag;
        let mut set = HashSet::new();
        for (topic, t) in &stats.topics {
            let logical = topic.strip_prefix(self.prefix.as_str()).unwrap_or(topic);
            for (p, part) in &t.partitions {
                if *p < 0 || part.fetch_state != "active" {
                    continue;
                }
                let Some(lag) =
                    crate::lag::lag(part.ls_offset, part.app_offset, part.committed_offset)
                else {
                    continue;
                };
                gauge
                    .with_label_values(&[&self.app, logical, &p.to_string()])
                    .set(lag);
                set.insert((logical.to_string(), *p));
            }
        }
        let mut previous = self.lag_series.lock().unwrap();
        for (topic, p) in previous.difference(&set) {
            let _ = gauge.remove_label_values(&[&self.app, topic, &p.to_string()]);
        }
        *previous = set;
    }
}

impl<P: Processor> ConsumerContext for RebalanceContext<P> {
    /// librdkafka's eager rebalance, with one change: an assignment is taken with explicit
    /// start offsets ([`Engine::start_positions`]), so that librdkafka never falls back to
    /// `auto.offset.reset` for a partition the coordinator answers without an offset. That
    /// fallback replayed a whole stock partition after a broker lost the group's offsets.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positioned = self.engine.lock().unwrap().start_positions(consumer, tpl);
                let assigned = match positioned {
                    Ok(positions) => consumer.assign(&positions),
                    Err(e) => {
                        // The poll loop stops before processing anything: the supervisor's
                        // restart asks the coordinator again.
                        self.record(Err(e));
                        consumer.assign(tpl)
                    }
                };
                if let Err(e) = assigned {
                    self.record(Err(e.into()));
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                if let Err(e) = consumer.unassign() {
                    self.record(Err(e.into()));
                }
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let lost = consumer.assignment_lost();
            let result = self
                .engine
                .lock()
                .unwrap()
                .revoked(consumer, &partitions(tpl), lost);
            self.record(result);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let result = self
                .engine
                .lock()
                .unwrap()
                .assigned(consumer, &partitions(tpl));
            self.record(result);
        }
    }
}
