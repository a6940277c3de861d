//! Prometheus metrics of the runtime, and a small `/metrics` HTTP endpoint.

use std::net::SocketAddr;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, Encoder,
    HistogramVec, IntCounterVec, IntGaugeVec, TextEncoder,
};

/// Process-wide runtime metrics (registered once in the default registry, labelled by app).
#[derive(Clone)]
pub struct Metrics {
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub commits: IntCounterVec,
    pub commit_latency: HistogramVec,
    pub aborts: IntCounterVec,
    /// Input partitions started from this instance's own position because the group
    /// coordinator's offset was missing or behind it.
    pub offsets_guarded: IntCounterVec,
    /// Records a task will process again after its back-off (`ProcessError::Retry`).
    pub retries: IntCounterVec,
    pub restore_records: IntCounterVec,
    pub restore_remaining: IntGaugeVec,
    /// Standby replicas: partitions placed here, changelog records applied, store-partitions
    /// not yet at their changelog's end.
    pub standby_partitions: IntGaugeVec,
    pub standby_records: IntCounterVec,
    pub standby_behind: IntGaugeVec,
    pub dlq: IntCounterVec,
    pub lag: IntGaugeVec,
    pub assigned: IntGaugeVec,
    pub store_largest_value: IntGaugeVec,
    pub store_entries: IntGaugeVec,
    pub store_bytes: IntGaugeVec,
    pub state_disk: IntGaugeVec,
    pub value_limit: IntGaugeVec,
}

impl Metrics {
    /// The process's metrics; the first call registers them.
    pub fn global() -> &'static Metrics {
        static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
        METRICS.get_or_init(|| Metrics {
            records_in: register_int_counter_vec!(
                "pickple_records_in_total",
                "Input records processed",
                &["app", "topic"]
            )
            .unwrap(),
            records_out: register_int_counter_vec!(
                "pickple_records_out_total",
                "Records produced",
                &["app", "topic"]
            )
            .unwrap(),
            commits: register_int_counter_vec!(
                "pickple_commits_total",
                "Transactions committed",
                &["app"]
            )
            .unwrap(),
            commit_latency: register_histogram_vec!(
                "pickple_commit_latency_seconds",
                "Time to commit a transaction (offsets, changelogs, outputs)",
                &["app"],
                vec![0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
            )
            .unwrap(),
            aborts: register_int_counter_vec!(
                "pickple_transaction_aborts_total",
                "Transactions aborted",
                &["app"]
            )
            .unwrap(),
            offsets_guarded: register_int_counter_vec!(
                "pickple_offsets_guarded_total",
                "Input partitions started from the state's own position, the group coordinator's offset being missing or behind it",
                &["app"]
            )
            .unwrap(),
            retries: register_int_counter_vec!(
                "pickple_task_retries_total",
                "Records failed transiently (ProcessError::Retry), to be processed again after the task's back-off",
                &["app", "topic"]
            )
            .unwrap(),
            restore_records: register_int_counter_vec!(
                "pickple_restore_records_total",
                "Changelog records restored",
                &["app", "store"]
            )
            .unwrap(),
            restore_remaining: register_int_gauge_vec!(
                "pickple_restore_remaining_records",
                "Changelog records left to restore",
                &["app", "store"]
            )
            .unwrap(),
            standby_partitions: register_int_gauge_vec!(
                "pickple_standby_partitions",
                "Tasks this instance keeps standby replicas of",
                &["app"]
            )
            .unwrap(),
            standby_records: register_int_counter_vec!(
                "pickple_standby_records_total",
                "Changelog records applied to standby replicas",
                &["app", "store"]
            )
            .unwrap(),
            standby_behind: register_int_gauge_vec!(
                "pickple_standby_behind_partitions",
                "Standby store-partitions not yet at the end of their changelog",
                &["app"]
            )
            .unwrap(),
            dlq: register_int_counter_vec!(
                "pickple_dlq_records_total",
                "Records sent to the dead-letter topic",
                &["app", "topic"]
            )
            .unwrap(),
            lag: register_int_gauge_vec!(
                "pickple_consumer_lag",
                "Records between the consumer's position and the last stable offset of an input partition (a trailing commit marker counts as one)",
                &["app", "topic", "partition"]
            )
            .unwrap(),
            assigned: register_int_gauge_vec!(
                "pickple_assigned_partitions",
                "Tasks (partitions) this instance owns",
                &["app"]
            )
            .unwrap(),
            store_largest_value: register_int_gauge_vec!(
                "pickple_store_largest_value_bytes",
                "Largest value written to a store since the process started",
                &["app", "store"]
            )
            .unwrap(),
            store_entries: register_int_gauge_vec!(
                "pickple_store_entries",
                "Entries in a store's local trees (every partition on this disk), counted every 30 s",
                &["app", "store"]
            )
            .unwrap(),
            value_limit: register_int_gauge_vec!(
                "pickple_store_value_limit_bytes",
                "The largest store value or output record a step may write (PICKPLE_MAX_VALUE_BYTES)",
                &["app"]
            )
            .unwrap(),
            state_disk: register_int_gauge_vec!(
                "pickple_state_disk_bytes",
                "Bytes the instance's sled database uses on disk, measured every 30 s",
                &["app"]
            )
            .unwrap(),
            store_bytes: register_int_gauge_vec!(
                "pickple_store_bytes",
                "Key and value bytes in a store's local trees, counted every 30 s",
                &["app", "store"]
            )
            .unwrap(),
        })
    }
}

/// The default registry in Prometheus text format.
pub fn render() -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("encode metrics");
    String::from_utf8(buf).unwrap_or_default()
}

/// Count the stores' entries and bytes every 30 s on a thread of its own (a full scan).
pub(crate) fn watch_stores(app: String, stores: crate::StateStores) {
    let spawned = std::thread::Builder::new()
        .name("store-stats".into())
        .spawn(move || loop {
            let m = Metrics::global();
            match stores.stats() {
                Ok(stats) => {
                    for (store, (entries, bytes)) in stats {
                        m.store_entries
                            .with_label_values(&[&app, &store])
                            .set(entries as i64);
                        m.store_bytes
                            .with_label_values(&[&app, &store])
                            .set(bytes as i64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "counting the stores failed"),
            }
            m.state_disk
                .with_label_values(&[&app])
                .set(stores.size_on_disk() as i64);
            std::thread::sleep(std::time::Duration::from_secs(30));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no store-stats thread");
    }
}

/// `/health`: 200 when the instance is doing its job, 503 with the problems otherwise (see
/// [`crate::health`]).
fn health() -> axum::response::Response {
    use axum::response::IntoResponse;
    let report = crate::health::Health::global().report();
    let status = if report.healthy {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

/// Serve `GET /metrics` and `GET /health` on `addr` from a background thread with its own small
/// tokio runtime.
pub fn serve_metrics(addr: SocketAddr) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .route("/metrics", axum::routing::get(|| async { render() }))
                    .route("/health", axum::routing::get(|| async { health() }));
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "metrics server stopped");
                }
            });
        })?;
    Ok(())
}
