//! The run's report: printed, and written as JSON with `--json PATH`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::chaos::KillRecord;
use crate::grow::GrowRecord;
use crate::invariants::Row;
use crate::load::StepResult;
use crate::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Intended start -> 202 of the placement (retries included).
    pub accept: Summary,
    /// Intended start -> the order seen AWAITING_PAYMENT.
    pub awaiting_payment_visible: Summary,
    /// Pay sent -> the order seen PAID.
    pub paid_visible: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Http {
    /// Every attempt, retries included.
    pub answers: u64,
    /// Share of attempts answered with a status below 500 (transport errors count as failures).
    pub non_5xx_share: f64,
    /// By status; `transport` for no answer (connection error, timeout).
    pub status_counts: BTreeMap<String, u64>,
    /// Long-polls whose wait ended without a change (200 with `Pickple-Wait: timeout`), not in
    /// the counts.
    pub long_poll_timeouts: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaxMode {
    pub steps: Vec<StepResult>,
    pub slo_p99_ms: u64,
    /// Highest AWAITING_PAYMENT-visible orders/s of a step within the SLO (p99, <= 1% failed).
    pub sustainable_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub count: u64,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuietReport {
    pub quiet: bool,
    pub waited_s: f64,
    pub note: String,
    pub views_read_from: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub run: String,
    pub url: String,
    pub mode: String,
    pub duration_s: u64,
    pub setup_s: f64,
    /// Orders the load offered (open loop: scheduled), and per second.
    pub offered: u64,
    pub offered_per_s: f64,
    /// Placements answered 202, and per second of load.
    pub accepted: u64,
    pub accepted_per_s: f64,
    /// Orders seen AWAITING_PAYMENT, and per second of load.
    pub visible: u64,
    pub visible_per_s: f64,
    pub paid: u64,
    /// Cancelled by the shop before payment (out of stock).
    pub rejected: u64,
    pub place_failed: u64,
    pub not_offered: u64,
    pub latency_ms: Latencies,
    pub http: Http,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<MaxMode>,
    pub kills: Vec<KillRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow: Option<GrowRecord>,
    pub outcomes: BTreeMap<String, u64>,
    pub anomalies: BTreeMap<String, Anomaly>,
    pub quiet: QuietReport,
    pub invariants: Vec<Row>,
    pub ok: bool,
}

fn opt(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2}")).unwrap_or("-".into())
}

fn lat(name: &str, s: &Summary) -> String {
    format!(
        "  {name:<28} n={:<7} p50 {:>9.1} ms  p99 {:>9.1} ms  p99.9 {:>9.1} ms  max {:>9.1} ms",
        s.count, s.p50_ms, s.p99_ms, s.p999_ms, s.max_ms
    )
}

impl Report {
    pub fn print(&self) {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(String::new());
        line(format!(
            "== pickple-soak run {} (seed {}) against {}: {} for {} s (setup {:.1} s)",
            self.run, self.seed, self.url, self.mode, self.duration_s, self.setup_s
        ));
        line(format!(
            "orders: offered {} ({:.1}/s), accepted {} ({:.1}/s), AWAITING_PAYMENT {} ({:.1}/s), paid {}, cancelled by the shop {}, failed {}, not offered {}",
            self.offered,
            self.offered_per_s,
            self.accepted,
            self.accepted_per_s,
            self.visible,
            self.visible_per_s,
            self.paid,
            self.rejected,
            self.place_failed,
            self.not_offered
        ));
        line("latency:".into());
        line(lat("accept", &self.latency_ms.accept));
        line(lat(
            "place -> AWAITING_PAYMENT",
            &self.latency_ms.awaiting_payment_visible,
        ));
        line(lat("pay -> PAID", &self.latency_ms.paid_visible));
        line(format!(
            "http: {} answers, non-5xx {:.3}%, long-poll timeouts {}; by status: {}",
            self.http.answers,
            self.http.non_5xx_share * 100.0,
            self.http.long_poll_timeouts,
            self.http
                .status_counts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        if let Some(m) = &self.max {
            line(format!(
                "closed loop (SLO p99 <= {} ms): sustainable {} orders/s",
                m.slo_p99_ms,
                opt(m.sustainable_per_s)
            ));
            if m.steps.last().is_some_and(|s| {
                s.visible_latency.p99_ms <= m.slo_p99_ms as f64
                    && s.failed as f64 <= 0.01 * s.started as f64
            }) {
                line("  (the last step held the SLO: raise --max to find the limit)".into());
            }
            for s in &m.steps {
                line(format!(
                    "  {:>4} buyers: {:>7.1}/s visible, {} started, {} failed, p99 {:.0} ms",
                    s.concurrency, s.visible_per_s, s.started, s.failed, s.visible_latency.p99_ms
                ));
            }
        }
        if !self.kills.is_empty() {
            line(format!(
                "kills ({}): target, at s (of load), new pid after s, first commit after s, API ok after s, order visible after s",
                self.kills.len()
            ));
            for k in &self.kills {
                line(format!(
                    "  {:<13} {:>7.1} {:>7} {:>7} {:>7} {:>7}{}",
                    k.target,
                    k.at_s,
                    opt(k.restarted_s),
                    opt(k.first_commit_s),
                    opt(k.api_ok_s),
                    opt(k.pipeline_ok_s),
                    k.note
                        .as_ref()
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                ));
            }
        }
        if let Some(g) = &self.grow {
            line(format!(
                "grow to {} partitions at {:.1} s: {} (waited {:.1} s for chaos recoveries)",
                g.to,
                g.at_s,
                g.outcome(),
                g.waited_for_chaos_s,
            ));
            if let Some(p) = &g.phases {
                line(format!(
                    "  phases (s): gateway stop {:.2}, drain {:.2}, stop {:.2}, grow {:.2}, start {:.2}; gateway down {:.2} ({} attempt(s))",
                    p.gateway_s, p.drain_s, p.stop_s, p.grow_s, p.start_s, p.down_s, p.attempts
                ));
            }
            line(format!(
                "  orders offered during the grow {} (longest wait for AWAITING_PAYMENT {} s); first order seen AWAITING_PAYMENT {} s after the gateway was back",
                g.orders_during,
                opt(g.longest_order_wait_s),
                opt(g.first_visible_after_s)
            ));
            for m in &g.moved {
                line(format!(
                    "  {:<28} {:>7} entries, {:>6} moved, {:>6} copied",
                    format!("{}/{}", m.app, m.store),
                    m.entries,
                    m.moved,
                    m.copied
                ));
            }
        }
        line("outcomes:".into());
        for (k, v) in &self.outcomes {
            line(format!("  {v:>7}  {k}"));
        }
        if !self.anomalies.is_empty() {
            line("anomalies (the shop refused or lost something):".into());
            for (k, a) in &self.anomalies {
                line(format!("  {:>7}  {k}", a.count));
                for e in a.examples.iter().take(2) {
                    let mut e = e.clone();
                    e.truncate(240);
                    line(format!("           e.g. {e}"));
                }
            }
        }
        line(format!(
            "quiet: {} after {:.1} s ({}); views read from {}",
            if self.quiet.quiet { "yes" } else { "NO" },
            self.quiet.waited_s,
            self.quiet.note,
            self.quiet.views_read_from
        ));
        line("invariants:".into());
        for r in &self.invariants {
            line(format!(
                "  [{}] {:<42} expected {}; actual {}",
                if r.ok { " ok " } else { "FAIL" },
                r.name,
                r.expected,
                r.actual
            ));
        }
        line(format!(
            "== {}",
            if self.ok {
                "all invariants hold"
            } else {
                "INVARIANTS VIOLATED"
            }
        ));
        // The plain closing line test runners and CI read: one "test" per invariant.
        let passed = self.invariants.iter().filter(|r| r.ok).count();
        line(format!(
            "soak: {passed} passed, {} failed",
            self.invariants.len() - passed
        ));
        print!("{out}");
    }
}
