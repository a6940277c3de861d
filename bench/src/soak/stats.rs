//! What the load measures: counters, latency histograms (HdrHistogram, microseconds), the
//! answers of the gateway by status, and the moments things succeeded (to tell, per kill, when
//! the API and the pipeline answered again).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram holds (an hour, in microseconds); longer values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Record `d` in `h`, in microseconds, clamped to the histogram's range.
pub fn record(h: &Mutex<Histogram<u64>>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, MAX_MICROS);
    h.lock().unwrap().saturating_record(us);
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn summary(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

/// Answers of the gateway (every attempt, retries included).
#[derive(Default)]
pub struct HttpStats {
    /// By status code; `transport` for connection errors and timeouts.
    pub counts: Mutex<BTreeMap<String, u64>>,
    /// Long-polls whose wait ended without the change (200 with `Pickple-Wait: timeout`; not an
    /// error: nothing changed in time). Not in `counts` nor `ok_at_ms`.
    pub long_poll_timeouts: AtomicU64,
    /// Milliseconds since the start of the run of every 2xx answer to a load request.
    pub ok_at_ms: Mutex<Vec<u64>>,
}

impl HttpStats {
    pub fn count(&self, what: &str) {
        *self.counts.lock().unwrap().entry(what.into()).or_default() += 1;
    }

    /// (answers, answers that were not a 5xx nor a transport error).
    pub fn non_5xx(&self) -> (u64, u64) {
        let counts = self.counts.lock().unwrap();
        let total: u64 = counts.values().sum();
        let bad: u64 = counts
            .iter()
            .filter(|(k, _)| k.as_str() == "transport" || k.starts_with('5'))
            .map(|(_, v)| *v)
            .sum();
        (total, total - bad)
    }
}

/// The first moment in `sorted` (ms) at or after `after`, as a delay from `after`.
pub fn first_after(sorted: &[u64], after: u64) -> Option<u64> {
    let i = sorted.partition_point(|t| *t < after);
    sorted.get(i).map(|t| t - after)
}

/// Counters and histograms of the whole run.
pub struct Stats {
    pub t0: Instant,
    pub http: HttpStats,
    /// Orders the load meant to place (open loop: scheduled; closed loop: attempted).
    pub offered: AtomicU64,
    /// Scheduled but not started because too many were in flight.
    pub not_offered: AtomicU64,
    /// Placements answered 202.
    pub accepted: AtomicU64,
    /// Placements that failed after every retry (or got a 4xx).
    pub place_failed: AtomicU64,
    /// Orders seen AWAITING_PAYMENT.
    pub visible: AtomicU64,
    /// Orders that did not reach AWAITING_PAYMENT (cancelled: out of stock, sale rules).
    pub rejected: AtomicU64,
    /// Orders seen PAID after a pay.
    pub paid: AtomicU64,
    pub kills: AtomicU64,
    /// Intended start -> 202 of the placement.
    pub accept: Mutex<Histogram<u64>>,
    /// Intended start -> AWAITING_PAYMENT visible.
    pub visible_lat: Mutex<Histogram<u64>>,
    /// Pay sent -> PAID visible.
    pub paid_lat: Mutex<Histogram<u64>>,
    /// (placed at, visible at) in ms since t0, of every order seen AWAITING_PAYMENT.
    pub visible_at_ms: Mutex<Vec<(u64, u64)>>,
    /// Outcomes by name, e.g. `approve: PAID`, `flash: rejected (sale sold out)`.
    pub outcomes: Mutex<BTreeMap<String, u64>>,
    /// Things the shop should not do, by name, with a few examples each.
    pub anomalies: Mutex<BTreeMap<String, (u64, Vec<String>)>>,
}

impl Stats {
    pub fn new(t0: Instant) -> Stats {
        Stats {
            t0,
            http: HttpStats::default(),
            offered: AtomicU64::new(0),
            not_offered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            place_failed: AtomicU64::new(0),
            visible: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            paid: AtomicU64::new(0),
            kills: AtomicU64::new(0),
            accept: Mutex::new(histogram()),
            visible_lat: Mutex::new(histogram()),
            paid_lat: Mutex::new(histogram()),
            visible_at_ms: Mutex::new(Vec::new()),
            outcomes: Mutex::new(BTreeMap::new()),
            anomalies: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.t0).as_millis() as u64
    }

    pub fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    pub fn outcome(&self, what: impl Into<String>) {
        *self
            .outcomes
            .lock()
            .unwrap()
            .entry(what.into())
            .or_default() += 1;
    }

    /// Something the shop should not have done; keeps the first 5 examples.
    pub fn anomaly(&self, what: &str, example: impl Into<String>) {
        let mut a = self.anomalies.lock().unwrap();
        let e = a.entry(what.into()).or_default();
        e.0 += 1;
        if e.1.len() < 5 {
            e.1.push(example.into());
        }
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let h = Mutex::new(histogram());
        for ms in 1..=1000u64 {
            record(&h, Duration::from_millis(ms));
        }
        let s = summary(&h.lock().unwrap());
        assert_eq!(s.count, 1000);
        // 3 significant digits: within 0.1%.
        assert!((s.p50_ms - 500.0).abs() <= 0.6, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999_ms - 999.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() <= 1.0, "{s:?}");
        assert!((s.mean_ms - 500.5).abs() <= 1.0, "{s:?}");
        assert_eq!(summary(&histogram()), Summary::default());
    }

    #[test]
    fn a_tail_shows_in_p99_not_in_p50() {
        let h = Mutex::new(histogram());
        for _ in 0..980 {
            record(&h, Duration::from_millis(10));
        }
        for _ in 0..20 {
            record(&h, Duration::from_secs(5));
        }
        let s = summary(&h.lock().unwrap());
        assert!((s.p50_ms - 10.0).abs() < 0.1, "{s:?}");
        assert!(s.p99_ms > 4900.0, "{s:?}");
    }

    #[test]
    fn first_success_after_a_moment() {
        let t = [100, 200, 350, 900];
        assert_eq!(first_after(&t, 0), Some(100));
        assert_eq!(first_after(&t, 200), Some(0));
        assert_eq!(first_after(&t, 201), Some(149));
        assert_eq!(first_after(&t, 901), None);
    }

    #[test]
    fn non_5xx_share_counts_transport_errors_as_failures() {
        let s = HttpStats::default();
        for k in ["202", "202", "409", "503", "transport"] {
            s.count(k);
        }
        assert_eq!(s.non_5xx(), (5, 3));
    }
}
