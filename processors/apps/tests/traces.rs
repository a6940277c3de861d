//! One trace follows a request from the gateway into a processor: both export their spans over
//! OTLP/HTTP to a local receiver standing in for the collector, the processor's span hangs under
//! the gateway's, and the processor's JSON log lines carry the trace id.
//!
//! This test process plays the gateway (its library, with `pickple_telemetry::init` as in its
//! `main`); the users app runs as the `pickple-processor` binary.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::routing::post;
use common::*;

use pickple_schemas::RecordHeaders;
use pickple_telemetry::TraceParent;
use serde_json::{json, Value};

/// One exported span, as read from an OTLP/JSON export request.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

fn spans_of(export: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |k: &str| span[k].as_str().unwrap_or_default().to_string();
                out.push(Span {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                });
            }
        }
    }
    out
}

/// An OTLP/HTTP endpoint on 127.0.0.1 that hands every exported span to the test.
struct Receiver {
    url: String,
    spans: mpsc::Receiver<Span>,
    seen: Vec<Span>,
}

impl Receiver {
    fn start() -> Receiver {
        let (tx, rx) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().route(
                    "/v1/traces",
                    post(move |body: axum::body::Bytes| async move {
                        let export: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        for span in spans_of(&export) {
                            let _ = tx.send(span);
                        }
                        axum::Json(json!({}))
                    }),
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Receiver {
            url: format!("http://{addr}"),
            spans: rx,
            seen: Vec::new(),
        }
    }

    /// The first exported span matching `pred`, waiting for exports up to 60 s.
    fn wait(&mut self, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.seen.iter().find(|s| pred(s)) {
                return s.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => self.seen.push(span),
                Err(_) => panic!("no exported span for {what}; got {:#?}", self.seen),
            }
        }
    }
}

const OTEL_ENV: [(&str, &str); 2] = [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    // Export within 100 ms instead of the default 5 s batch delay.
    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
];

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_trace_follows_a_request_from_the_gateway_into_a_processor() {
    let mut receiver = Receiver::start();
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url);
    for (k, v) in OTEL_ENV {
        std::env::set_var(k, v);
    }
    let telemetry = pickple_telemetry::init("pickple-gateway", "info,rdkafka=warn");
    assert!(telemetry.exporting());

    let p = Pipeline::start("otel", &config(300_000), &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("users.log");
    let users = Kill(
        Command::new(env!("CARGO_BIN_EXE_pickple-processor"))
            .args(["--app", "users", "--brokers", &brokers()])
            .args(["--topic-prefix", &p.prefix])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--commit-interval-ms", "50"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
            .envs(OTEL_ENV)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start pickple-processor"),
    );

    // A sign-up through the gateway, continuing the caller's trace.
    let caller = TraceParent::root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answered = rt.block_on(async {
        let redis_prefix = format!("otel{}:", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let config = pickple_gateway::Config::local(&p.prefix, &redis_prefix);
        let state = pickple_gateway::AppState::new(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, pickple_gateway::app(state)).await });
        let res = reqwest::Client::new()
            .post(format!("{base}/api/v1/auth/sign-up"))
            .header("traceparent", caller.to_string())
            .json(&json!({"username": "otel1", "nickname": "otel", "email": "otel1@example.com", "password": "correct-horse-1", "role": "USER"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
        let header = res.headers()["traceparent"].to_str().unwrap().to_string();
        TraceParent::parse(&header).expect("a valid traceparent is echoed")
    });
    assert_eq!(answered.trace_id, caller.trace_id);

    // The gateway's span is the caller's child and is the one named on the response.
    let request = receiver.wait("the gateway's request", |s| {
        s.name == "request" && s.trace_id == caller.trace_id
    });
    assert_eq!(request.service, "pickple-gateway");
    assert_eq!(request.parent_span_id, caller.span_id);
    assert_eq!(request.span_id, answered.span_id);
    // The users app processed the command the gateway published, under the gateway's span.
    let record = receiver.wait("the users app's record", |s| {
        s.service == "pickple-users" && s.trace_id == caller.trace_id
    });
    assert_eq!(record.name, "record");
    assert_eq!(record.parent_span_id, request.span_id);

    // A malformed record of another trace: the dead-letter log line carries that trace id.
    let poison = TraceParent::root();
    let mut headers = RecordHeaders::new("SignUp", "poison");
    headers.traceparent = poison.to_string();
    p.send_bytes("user-commands", "otel2", b"{not json", Some(&headers));
    p.flush();
    p.wait_for(60, "the dead letter", |s| s.records("users-dlq").len() == 1);
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let dead = lines
        .iter()
        .find(|l| l["fields"]["message"] == "dead letter")
        .unwrap_or_else(|| panic!("no dead-letter line in {logs}"));
    assert_eq!(dead["span"]["trace_id"], poison.trace_id.as_str(), "{dead}");
    assert_eq!(dead["span"]["name"], "record");

    drop(users);
    drop(rt);
    p.stop();
    drop(telemetry);
}
