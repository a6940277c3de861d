//! Vendor managers ship the paid orders of their vendor (MASTER those whose delivery carries
//! several vendors' lines, which no single manager may drive): wait for the delivery (PENDING), start
//! it, then either end it right away (start and end back to back, without waiting: the shop must
//! accept that), or wait until IN_TRANSIT, add a tracking detail and end it; a few are only
//! started and some orders are left PAID. Each step is followed on the delivery's view until it
//! shows (or its `rejection` says it was refused); a refusal of a valid sequence, by the gateway
//! or by the delivery processor, is an anomaly. The ledger records a start only once the view
//! shows IN_TRANSIT, an end once it shows DELIVERED.

use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::api::{status_of, version_of, Reply, Session};
use crate::ctx::Ctx;
use crate::stats::Stats;

/// Deliveries one manager handles at once.
const PER_MANAGER: usize = 32;

/// Ship what arrives on `rx` until the queue is closed and everything queued is done.
pub async fn manager_loop(ctx: Arc<Ctx>, idx: usize, mut rx: mpsc::UnboundedReceiver<String>) {
    let limit = Arc::new(Semaphore::new(PER_MANAGER));
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    while let Some(order_id) = rx.recv().await {
        n += 1;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let ctx = ctx.clone();
        tasks.spawn(async move {
            ship(&ctx, idx, &order_id, n).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Whether a delivery step went unanswered (no answer after the retries, or a 5xx) rather than
/// refused: the availability figures count those; the invariant on valid sequences counts only
/// refusals (a 4xx, or a `rejection` on the view).
fn unanswered(r: &Result<Reply, String>) -> bool {
    match r {
        Err(_) => true,
        Ok(reply) => reply.status >= 500,
    }
}

/// Note a step that did not get its 202: unanswered, or refused under `refusal`.
fn not_accepted(stats: &Stats, refusal: &str, r: &Result<Reply, String>, context: String) {
    if unanswered(r) {
        stats.anomaly("delivery step unanswered (5xx or no answer)", context);
    } else {
        stats.anomaly(refusal, context);
    }
}

fn describe(r: &Result<Reply, String>) -> String {
    match r {
        Ok(r) => r.describe(),
        Err(e) => e.clone(),
    }
}

/// Follow the delivery from `after` until `done` holds, it is CANCELLED or DELIVERED, or a
/// command on it was refused since (a new `rejection`).
async fn settle(
    ctx: &Ctx,
    mgr: &Session,
    path: &str,
    after: &Value,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, String> {
    let v0 = version_of(after);
    let rejection0 = after["rejection"].clone();
    ctx.api
        .follow(path, Some(mgr), |v| {
            done(v)
                || matches!(status_of(v), "CANCELLED" | "DELIVERED")
                || (version_of(v) > v0 && !v["rejection"].is_null() && v["rejection"] != rejection0)
        })
        .await
}

/// Tracking details over the delivery's shipments.
fn details(v: &Value) -> usize {
    v["shipments"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| x["details"].as_array().map(Vec::len).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Every shipment of the delivery has left PENDING (or the delivery is no longer pending).
fn all_started(v: &Value) -> bool {
    status_of(v) != "PENDING"
        && v["shipments"]
            .as_array()
            .is_some_and(|s| s.iter().all(|x| x["status"] != "PENDING"))
}

/// One request per shipment (`/deliveries/{order}/shipments/{vendor}/{step}`); the first answer
/// that is not a 202, if any.
async fn each_shipment(
    ctx: &Ctx,
    mgr: &Session,
    path: &str,
    vendors: &[String],
    step: &str,
    body: Value,
) -> Result<(), Result<Reply, String>> {
    for v in vendors {
        let r = ctx
            .api
            .post(&format!("{path}/shipments/{v}/{step}"), mgr, body.clone())
            .await;
        if !matches!(&r, Ok(r) if r.status == 202) {
            return Err(r);
        }
    }
    Ok(())
}

async fn ship(ctx: &Ctx, idx: usize, order_id: &str, n: u64) {
    let stats = &ctx.stats;
    let mut rng = ctx.rng(2, (idx as u64) << 40 | n);
    let mgr = ctx.manager_session(idx);
    if !rng.random_bool(ctx.cli.ship_share.clamp(0.0, 1.0)) {
        stats.outcome("ship: left PAID");
        return;
    }
    let path = format!("/deliveries/{order_id}");
    // Read as MASTER: a manager's view of a delivery holds only their own vendors' shipments,
    // and the driver must know every vendor of the order to ship it whole.
    let delivery = match ctx
        .api
        .wait_status(&path, Some(&*ctx.master), "PENDING")
        .await
    {
        Ok(v) => v,
        Err(e) => {
            stats.anomaly("delivery of a paid order not visible", e);
            stats.outcome("ship: no delivery");
            return;
        }
    };
    // One shipment per vendor. The driver's manager owns one vendor: MASTER, the operator,
    // ships the orders of several, one shipment after the other.
    let vendors: Vec<String> = delivery["vendor_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let shared = vendors.len() > 1;
    let mgr = if shared { ctx.master.clone() } else { mgr };
    if shared {
        stats.outcome("ship: several vendors, shipped by MASTER");
    }
    let cancelled = || ctx.ledger.order(order_id).is_some_and(|o| o.cancel_sent);
    if status_of(&delivery) != "PENDING" {
        if !cancelled() {
            stats.anomaly(
                "delivery not PENDING without a cancel",
                format!("{order_id}: {}", status_of(&delivery)),
            );
        }
        stats.outcome(format!("ship: delivery {}", status_of(&delivery)));
        return;
    }
    let tracking = format!("SOAK-{}", &order_id[..order_id.len().min(8)]);
    let start = each_shipment(
        ctx,
        &mgr,
        &path,
        &vendors,
        "start",
        json!({"carrier": "CJ_LOGISTICS", "delivery_type": "COURIER", "tracking_number": tracking}),
    )
    .await;
    if let Err(start) = start {
        not_accepted(
            stats,
            "start of a PENDING delivery refused",
            &start,
            describe(&start),
        );
        stats.outcome("ship: start refused by the gateway");
        return;
    }
    let draw: f64 = rng.random();
    let start_only = ctx.cli.start_only_share;
    let immediate = draw >= start_only && draw < start_only + ctx.cli.immediate_end_share;
    if immediate {
        // End right after the start, without waiting for IN_TRANSIT to be visible.
        if let Err(end) = each_shipment(ctx, &mgr, &path, &vendors, "end", json!({})).await {
            not_accepted(
                stats,
                "end right after an accepted start refused",
                &end,
                format!("{order_id}: {}", describe(&end)),
            );
            stats.outcome("ship: immediate end refused by the gateway");
            return;
        }
    }
    // The start's fate.
    let started = match settle(ctx, &mgr, &path, &delivery, all_started).await {
        Ok(v) => v,
        Err(e) => {
            stats.anomaly("started delivery not IN_TRANSIT in time", e);
            return;
        }
    };
    match status_of(&started) {
        "IN_TRANSIT" | "DELIVERED" => ctx.ledger.update(order_id, |o| o.start_sent = true),
        "CANCELLED" if cancelled() => {
            stats.outcome("ship: start refused (the buyer cancelled first)");
            return;
        }
        other => {
            stats.anomaly(
                "start of a PENDING delivery refused",
                format!("{order_id}: {other}, rejection {}", started["rejection"]),
            );
            stats.outcome("ship: start refused by the delivery processor");
            return;
        }
    }
    let _delivered: Value = if immediate {
        match settle(ctx, &mgr, &path, &started, |v| status_of(v) == "DELIVERED").await {
            Ok(v) if status_of(&v) == "DELIVERED" => v,
            Ok(v) => {
                stats.anomaly(
                    "end right after an accepted start refused",
                    format!(
                        "{order_id}: {}, rejection {}",
                        status_of(&v),
                        v["rejection"]
                    ),
                );
                stats.outcome("ship: immediate end refused by the delivery processor");
                return;
            }
            Err(e) => {
                stats.anomaly("ended delivery not DELIVERED in time", e);
                return;
            }
        }
    } else if draw < start_only {
        stats.outcome("ship: started only (stays SHIPPING)");
        return;
    } else {
        let before = details(&started);
        let first = vendors.first().map(String::as_str).unwrap_or_default();
        let detail = ctx
            .api
            .post(
                &format!("{path}/shipments/{first}/details"),
                &mgr,
                json!({"location": format!("Hub {}", n % 7), "description": "sorted by pickple-soak"}),
            )
            .await;
        let mut current = started;
        if matches!(&detail, Ok(r) if r.status == 202) {
            match settle(ctx, &mgr, &path, &current, |v| details(v) > before).await {
                Ok(v) if details(&v) > before => current = v,
                Ok(v) => {
                    stats.anomaly(
                        "detail on an IN_TRANSIT delivery refused",
                        format!(
                            "{order_id}: {}, rejection {}",
                            status_of(&v),
                            v["rejection"]
                        ),
                    );
                    current = v;
                }
                Err(e) => stats.anomaly("delivery detail not visible in time", e),
            }
        } else {
            not_accepted(
                stats,
                "detail on an IN_TRANSIT delivery refused",
                &detail,
                describe(&detail),
            );
        }
        if let Err(end) = each_shipment(ctx, &mgr, &path, &vendors, "end", json!({})).await {
            not_accepted(
                stats,
                "end of an IN_TRANSIT delivery refused",
                &end,
                describe(&end),
            );
            return;
        }
        match settle(ctx, &mgr, &path, &current, |v| status_of(v) == "DELIVERED").await {
            Ok(v) if status_of(&v) == "DELIVERED" => v,
            Ok(v) => {
                stats.anomaly(
                    "end of an IN_TRANSIT delivery refused",
                    format!(
                        "{order_id}: {}, rejection {}",
                        status_of(&v),
                        v["rejection"]
                    ),
                );
                return;
            }
            Err(e) => {
                stats.anomaly("ended delivery not DELIVERED in time", e);
                return;
            }
        }
    };
    ctx.ledger.update(order_id, |o| o.end_sent = true);
    match ctx
        .api
        .wait_status(&format!("/orders/{order_id}"), Some(&*mgr), "COMPLETED")
        .await
    {
        Ok(v) if status_of(&v) == "COMPLETED" => stats.outcome(if immediate {
            "ship: start+end at once, COMPLETED"
        } else {
            "ship: start, detail, end, COMPLETED"
        }),
        Ok(v) => {
            stats.anomaly(
                "delivered, order not COMPLETED",
                format!("{order_id}: {}", status_of(&v)),
            );
            stats.outcome(format!("ship: delivered, order {}", status_of(&v)));
        }
        Err(e) => {
            stats.anomaly("delivered, order not COMPLETED in time", e);
            stats.outcome("ship: delivered, order not COMPLETED in time");
        }
    }
}
