//! The load models, the background churn and the progress line.
//!
//! * Open loop (`--rate N`): order `i` is due at `start + i/N`, whatever happened to the
//!   others; its latencies are measured from that intended start, so a stalled shop shows as
//!   latency instead of silently lowering the offered rate (no coordinated omission).
//! * Closed loop (`--max N`): the number of buyers that place an order and wait until it awaits
//!   payment, then at once place the next, ramps up in steps to N; each step's achieved rate
//!   and p99 tell the sustainable rate.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::Rng;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::api::Session;
use crate::buyer::{act, place_and_wait, random_lines, Placement};
use crate::ctx::Ctx;
use crate::stats::{histogram, summary, Stats, Summary};

/// Orders an open loop offers in `duration` at `rate` per second.
pub fn scheduled_count(rate: f64, duration: Duration) -> u64 {
    if rate.is_nan() || rate <= 0.0 {
        return 0;
    }
    (rate * duration.as_secs_f64()).floor() as u64
}

/// When order `i` of an open loop at `rate` per second is due, from the start.
pub fn intended_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

fn pick_buyer(ctx: &Ctx, i: u64) -> Arc<Session> {
    let buyers = ctx.buyers.read().unwrap();
    buyers[(i as usize) % buyers.len()].clone()
}

/// The open loop: returns once every order is offered (the flows go on; drain them).
pub async fn open_loop(ctx: Arc<Ctx>, start: Instant, duration: Duration) {
    let rate = ctx.cli.rate;
    let n = scheduled_count(rate, duration);
    for i in 0..n {
        let due = start + intended_offset(i, rate);
        tokio::time::sleep_until(due.into()).await;
        let mut rng = ctx.rng(1, i);
        let Ok(permit) = ctx.inflight.clone().try_acquire_owned() else {
            Stats::inc(&ctx.stats.offered);
            Stats::inc(&ctx.stats.not_offered);
            continue;
        };
        let buyer = pick_buyer(&ctx, rng.random());
        let lines = random_lines(&mut rng, &ctx.products);
        let action = ctx.mix.pick(rng.random());
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let placed = place_and_wait(&ctx, &buyer, lines, due, false, &mut rng).await;
            if let Placement::Awaiting(p) = placed {
                act(ctx.clone(), buyer, p, action).await;
            }
            drop(permit);
        });
    }
}

/// One step of the closed loop.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepResult {
    pub concurrency: usize,
    pub seconds: f64,
    /// Orders started in the step.
    pub started: u64,
    /// ... that reached AWAITING_PAYMENT.
    pub visible: u64,
    /// ... that did not (placement failed or not visible; shop cancellations excluded).
    pub failed: u64,
    pub visible_per_s: f64,
    pub visible_latency: Summary,
}

struct Step {
    started: u64,
    visible: u64,
    failed: u64,
    hist: Histogram<u64>,
}

/// The highest visible/s among steps whose p99 (place -> AWAITING_PAYMENT) is within `slo_ms`
/// and at most `max_fail` of whose orders failed.
pub fn sustainable(steps: &[StepResult], slo_ms: f64, max_fail: f64) -> Option<f64> {
    steps
        .iter()
        .filter(|s| s.started > 0)
        .filter(|s| s.visible_latency.p99_ms <= slo_ms)
        .filter(|s| (s.failed as f64) <= max_fail * s.started as f64)
        .map(|s| s.visible_per_s)
        .fold(None, |best, r| Some(best.map_or(r, |b: f64| b.max(r))))
}

/// The closed loop, ramping to `--max` buyers in `--ramp-steps`; the steps' results.
pub async fn closed_loop(ctx: Arc<Ctx>, start: Instant, duration: Duration) -> Vec<StepResult> {
    let max = ctx.cli.max.unwrap_or(1).max(1);
    let n_steps = ctx.cli.ramp_steps.clamp(1, max);
    let step_len = duration / n_steps as u32;
    let steps: Arc<Vec<Mutex<Step>>> = Arc::new(
        (0..n_steps)
            .map(|_| {
                Mutex::new(Step {
                    started: 0,
                    visible: 0,
                    failed: 0,
                    hist: histogram(),
                })
            })
            .collect(),
    );
    let end = start + duration;
    let mut workers = JoinSet::new();
    let mut running = 0usize;
    let mut concurrency = Vec::new();
    for k in 0..n_steps {
        let step_start = start + step_len * k as u32;
        tokio::time::sleep_until(step_start.into()).await;
        let target = (max * (k + 1)).div_ceil(n_steps);
        concurrency.push(target);
        eprintln!("max: step {} of {n_steps}: {target} buyers", k + 1);
        while running < target {
            let w = running as u64;
            running += 1;
            let (ctx, steps) = (ctx.clone(), steps.clone());
            workers.spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    let Ok(permit) = ctx.inflight.clone().acquire_owned().await else {
                        break;
                    };
                    let mut rng = ctx.rng(5, w << 32 | n);
                    n += 1;
                    let intended = Instant::now();
                    let k = ((intended - start).as_secs_f64() / step_len.as_secs_f64()) as usize;
                    let k = k.min(steps.len() - 1);
                    steps[k].lock().unwrap().started += 1;
                    let buyer = pick_buyer(&ctx, rng.random());
                    let lines = random_lines(&mut rng, &ctx.products);
                    let action = ctx.mix.pick(rng.random());
                    match place_and_wait(&ctx, &buyer, lines, intended, false, &mut rng).await {
                        Placement::Awaiting(p) => {
                            let mut s = steps[k].lock().unwrap();
                            s.visible += 1;
                            let us = (intended.elapsed().as_micros() as u64).max(1);
                            s.hist.saturating_record(us);
                            drop(s);
                            let ctx = ctx.clone();
                            tokio::spawn(async move {
                                act(ctx, buyer, p, action).await;
                                drop(permit);
                            });
                        }
                        // A cancellation by the shop is not a failure of the load.
                        Placement::Refused => drop(permit),
                        Placement::Failed => {
                            steps[k].lock().unwrap().failed += 1;
                            drop(permit);
                        }
                    }
                }
            });
        }
    }
    while workers.join_next().await.is_some() {}
    steps
        .iter()
        .zip(concurrency)
        .map(|(s, c)| {
            let s = s.lock().unwrap();
            let secs = step_len.as_secs_f64();
            StepResult {
                concurrency: c,
                seconds: secs,
                started: s.started,
                visible: s.visible,
                failed: s.failed,
                visible_per_s: s.visible as f64 / secs,
                visible_latency: summary(&s.hist),
            }
        })
        .collect()
}

/// Every `--churn-every` seconds until the load stops: a new buyer signs up (users processor),
/// a vendor is renamed (catalog processor), and a product low on stock is topped up.
pub async fn churn(ctx: Arc<Ctx>) {
    if ctx.cli.churn_every == 0 {
        return;
    }
    let mut tasks = JoinSet::new();
    let mut tick = 0u64;
    while !ctx.stopping() {
        tokio::time::sleep(Duration::from_secs(ctx.cli.churn_every)).await;
        if ctx.stopping() {
            break;
        }
        let c = ctx.clone();
        let n = tick;
        tasks.spawn(async move {
            let username = format!("{}c{n}", c.run);
            match c
                .api
                .sign_up_and_in(&username, &c.password, &c.ledger)
                .await
            {
                Ok(s) => {
                    c.ledger.users.lock().unwrap().push(username);
                    c.buyers.write().unwrap().push(s);
                    c.stats.outcome("churn: buyer signed up");
                }
                Err(e) => c.stats.anomaly("churn sign-up failed", e),
            }
        });
        let c = ctx.clone();
        tasks.spawn(async move {
            let m = (n as usize) % c.managers.len();
            let mgr = &c.managers[m];
            let r = c
                .api
                .call(
                    Method::PATCH,
                    &format!("/vendors/{}", mgr.vendor_id),
                    Some(&*mgr.session),
                    Some(&json!({"name": format!("Soak {} vendor {m} r{n}", c.run)})),
                    None,
                )
                .await;
            match r {
                Ok(r) if r.status == 202 => c.stats.outcome("churn: vendor renamed"),
                Ok(r) => c.stats.anomaly("vendor rename refused", r.describe()),
                Err(e) => c.stats.anomaly("vendor rename without answer", e),
            }
        });
        let c = ctx.clone();
        tasks.spawn(async move { restock(&c, n).await });
        while tasks.try_join_next().is_some() {}
        tick += 1;
    }
    while tasks.join_next().await.is_some() {}
}

/// Top up one product (round robin) if it runs low; the ledger records every addition.
async fn restock(ctx: &Ctx, n: u64) {
    let (product_id, manager) = {
        let products = ctx.ledger.products.lock().unwrap();
        let ordinary: Vec<_> = products.iter().filter(|p| p.sale.is_none()).collect();
        if ordinary.is_empty() {
            return;
        }
        let p = ordinary[(n as usize) % ordinary.len()];
        (p.product_id.clone(), p.manager)
    };
    let mgr = ctx.manager_session(manager);
    let path = format!("/products/{product_id}");
    let Ok(Some(view)) = ctx.api.view(&path, Some(&*mgr)).await else {
        return;
    };
    if view["stock"]["available"].as_u64().unwrap_or(0) >= ctx.cli.restock {
        return;
    }
    let r = ctx
        .api
        .post(
            &format!("{path}/stock"),
            &mgr,
            json!({"quantity": ctx.cli.restock}),
        )
        .await;
    match r {
        Ok(r) if r.status == 202 => {
            ctx.ledger.add_stock(&product_id, ctx.cli.restock, true);
            ctx.stats.outcome("churn: stock added");
        }
        Ok(r) if r.status >= 500 => {
            // The last attempt got a 5xx: it may or may not have been published.
            ctx.ledger.add_stock(&product_id, ctx.cli.restock, false);
            ctx.stats
                .anomaly("stock addition 5xx after every retry", r.describe());
        }
        Ok(r) => ctx.stats.anomaly("stock addition refused", r.describe()),
        Err(e) => {
            ctx.ledger.add_stock(&product_id, ctx.cli.restock, false);
            ctx.stats.anomaly("stock addition without answer", e);
        }
    }
}

/// A progress line every `--progress-every` seconds until the load and the drain are over.
pub async fn progress(ctx: Arc<Ctx>, start: Instant, done: Arc<std::sync::atomic::AtomicBool>) {
    let every = Duration::from_secs(ctx.cli.progress_every.max(1));
    loop {
        tokio::time::sleep(every).await;
        if done.load(Ordering::Relaxed) {
            return;
        }
        let s = &ctx.stats;
        let (total, good) = s.http.non_5xx();
        let share = if total == 0 {
            100.0
        } else {
            good as f64 * 100.0 / total as f64
        };
        let inflight = ctx.cli.max_inflight - ctx.inflight.available_permits();
        eprintln!(
            "[{:>5.0}s] offered {} accepted {} visible {} paid {} rejected {} failed {} | non-5xx {:.2}% ({} answers) | in flight {} | kills {}",
            start.elapsed().as_secs_f64(),
            Stats::get(&s.offered),
            Stats::get(&s.accepted),
            Stats::get(&s.visible),
            Stats::get(&s.paid),
            Stats::get(&s.rejected),
            Stats::get(&s.place_failed) + Stats::get(&s.not_offered),
            share,
            total,
            inflight,
            Stats::get(&s.kills),
        );
    }
}

/// For tests of the pure parts: a step result.
#[cfg(test)]
fn step(started: u64, visible: u64, failed: u64, rate: f64, p99: f64) -> StepResult {
    StepResult {
        concurrency: 1,
        seconds: 10.0,
        started,
        visible,
        failed,
        visible_per_s: rate,
        visible_latency: Summary {
            count: visible,
            p99_ms: p99,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_loop_schedule_does_not_depend_on_answers() {
        assert_eq!(scheduled_count(20.0, Duration::from_secs(60)), 1200);
        assert_eq!(scheduled_count(0.5, Duration::from_secs(3)), 1);
        assert_eq!(scheduled_count(0.0, Duration::from_secs(3)), 0);
        assert_eq!(scheduled_count(f64::NAN, Duration::from_secs(3)), 0);
        assert_eq!(intended_offset(0, 20.0), Duration::ZERO);
        assert_eq!(intended_offset(1, 20.0), Duration::from_millis(50));
        assert_eq!(intended_offset(1199, 20.0), Duration::from_millis(59_950));
        // Evenly spaced: every gap is 1/rate.
        let gaps: Vec<Duration> = (1..100)
            .map(|i| intended_offset(i, 40.0) - intended_offset(i - 1, 40.0))
            .collect();
        assert!(gaps.iter().all(|g| g.as_micros().abs_diff(25_000) <= 1));
    }

    #[test]
    fn the_sustainable_rate_is_the_best_step_within_the_slo() {
        let steps = vec![
            step(100, 100, 0, 10.0, 200.0),
            step(200, 199, 1, 20.0, 900.0),
            step(300, 290, 10, 29.0, 1200.0), // 3.3% failed
            step(300, 300, 0, 30.0, 5000.0),  // over the SLO
        ];
        assert_eq!(sustainable(&steps, 2000.0, 0.01), Some(20.0));
        assert_eq!(sustainable(&steps, 2000.0, 0.05), Some(29.0));
        assert_eq!(sustainable(&steps, 100.0, 0.01), None);
        assert_eq!(sustainable(&[], 100.0, 0.01), None);
    }
}
