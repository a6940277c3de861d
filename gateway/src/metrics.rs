//! HTTP metrics: `pickple_http_requests_total{route,method,status}`,
//! `pickple_http_request_duration_seconds{route,method,status}` and `pickple_http_in_flight`,
//! labelled by the matched route template (never the raw path: bounded cardinality); and the
//! views' own: `pickple_views_unreadable_total{kind}`, `pickple_longpoll_waiters` and
//! `pickple_views_sink_live`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, Encoder, HistogramVec,
    IntCounterVec, IntGauge, TextEncoder,
};

/// What the gateway sees of the views beyond HTTP.
pub struct ViewMetrics {
    /// Views that could not be read as their type (each is also logged with its id): a sink
    /// of another schema version, or a value written by something else than the sink.
    pub unreadable: IntCounterVec,
    /// Long-polls waiting for a view to change.
    pub waiters: IntGauge,
    /// 1 while the views sink reports (a fresh heartbeat), 0 while the views are served
    /// without one (degraded) or not at all.
    pub sink_live: IntGauge,
}

impl ViewMetrics {
    /// The process's view metrics (registered once in the default registry).
    pub fn global() -> &'static ViewMetrics {
        static METRICS: std::sync::OnceLock<ViewMetrics> = std::sync::OnceLock::new();
        METRICS.get_or_init(|| {
            let unreadable = register_int_counter_vec!(
                "pickple_views_unreadable_total",
                "Views in Redis the gateway could not read as their type",
                &["kind"]
            )
            .expect("register pickple_views_unreadable_total");
            // Every kind's series exists from the start at 0, so dashboards and the alert see
            // the first unreadable view as an increase, not as a series appearing.
            for kind in pickple_view_model::Kind::ALL {
                unreadable.with_label_values(&[kind.as_str()]);
            }
            ViewMetrics {
                unreadable,
                waiters: register_int_gauge!(
                    "pickple_longpoll_waiters",
                    "Long-poll requests waiting for a view to change"
                )
                .expect("register pickple_longpoll_waiters"),
                sink_live: register_int_gauge!(
                    "pickple_views_sink_live",
                    "1 while the views sink reports a fresh heartbeat; 0 while the views are served stale without one, or not at all"
                )
                .expect("register pickple_views_sink_live"),
            }
        })
    }
}

pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
}

impl HttpMetrics {
    /// The process's HTTP metrics (registered once in the default registry).
    pub fn global() -> &'static HttpMetrics {
        static METRICS: std::sync::OnceLock<HttpMetrics> = std::sync::OnceLock::new();
        METRICS.get_or_init(|| HttpMetrics {
            requests: register_int_counter_vec!(
                "pickple_http_requests_total",
                "HTTP requests answered",
                &["route", "method", "status"]
            )
            .expect("register pickple_http_requests_total"),
            duration: register_histogram_vec!(
                "pickple_http_request_duration_seconds",
                "HTTP request latency",
                &["route", "method", "status"],
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0
                ]
            )
            .expect("register pickple_http_request_duration_seconds"),
            in_flight: register_int_gauge!("pickple_http_in_flight", "HTTP requests being served")
                .expect("register pickple_http_in_flight"),
        })
    }
}

struct InFlight(&'static IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware recording every request.
pub async fn layer(req: Request, next: Next) -> Response {
    let m = HttpMetrics::global();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    m.in_flight.inc();
    let _guard = InFlight(&m.in_flight);
    let start = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    m.requests.with_label_values(&labels).inc();
    m.duration
        .with_label_values(&labels)
        .observe(start.elapsed().as_secs_f64());
    res
}

/// `GET /metrics`: the default registry in Prometheus text format.
pub async fn handler() -> Response {
    HttpMetrics::global();
    ViewMetrics::global();
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&prometheus::gather(), &mut buf) {
        return crate::error::ApiError::internal(format!("metrics: {e}")).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

/// The gateway's abuse limits at work: `pickple_rate_limited_total{limit}` (requests answered
/// 429) and `pickple_password_shed_total` (sign-ins and sign-ups shed with 503 for want of a
/// password hasher).
struct AbuseMetrics {
    limited: IntCounterVec,
    shed: prometheus::IntCounter,
}

fn abuse() -> &'static AbuseMetrics {
    static METRICS: std::sync::OnceLock<AbuseMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let limited = register_int_counter_vec!(
            "pickple_rate_limited_total",
            "Requests refused with 429 by a rate limit",
            &["limit"]
        )
        .expect("register pickple_rate_limited_total");
        for limit in crate::limits::Limit::ALL {
            limited.with_label_values(&[limit.name()]);
        }
        AbuseMetrics {
            limited,
            shed: prometheus::register_int_counter!(
                "pickple_password_shed_total",
                "Sign-ins and sign-ups shed with 503: every password hasher was busy"
            )
            .expect("register pickple_password_shed_total"),
        }
    })
}

pub fn rate_limited(limit: &str) {
    abuse().limited.with_label_values(&[limit]).inc();
}

pub fn password_shed() {
    abuse().shed.inc();
}
