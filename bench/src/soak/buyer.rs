//! A buyer's order: place it (one Idempotency-Key per logical order, the same key on every
//! retry), wait until it awaits payment (long-poll), then act as the mix says: pay with an
//! approving or a declining token, pay late, cancel, pay then cancel, or abandon.
//!
//! Tokens of the fake payment provider (processors/apps/src/payment/provider.rs): `tok_decline`
//! is declined, `tok_timeout` hangs, `tok_slow_<ms>` approves late, anything else approves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::{status_of, version_of, Session};
use crate::cli::Action;
use crate::ctx::Ctx;
use crate::ledger::OrderRec;
use crate::stats::{record, Stats};

pub const APPROVE_TOKEN: &str = "tok_visa_soak";
pub const DECLINE_TOKEN: &str = "tok_decline";

/// Random lines over the ordinary products: 1 to 3 distinct products, 1 to 3 units each.
pub fn random_lines(rng: &mut StdRng, products: &[String]) -> Vec<(String, u64)> {
    let n = rng.random_range(1..=3usize).min(products.len());
    products
        .choose_multiple(rng, n)
        .map(|p| (p.clone(), rng.random_range(1..=3)))
        .collect()
}

/// An order awaiting payment.
pub struct Placed {
    pub order_id: String,
    pub view: Value,
}

/// How a placement ended.
pub enum Placement {
    /// The order awaits payment.
    Awaiting(Placed),
    /// The shop cancelled it (out of stock, sale rules): a correct answer, not a failure.
    Refused,
    /// No 202, or the order never showed in time.
    Failed,
}

/// Place an order and wait until it awaits payment (or the shop refuses it); outcomes are
/// counted.
pub async fn place_and_wait(
    ctx: &Ctx,
    buyer: &Session,
    lines: Vec<(String, u64)>,
    intended: Instant,
    flash: bool,
    rng: &mut StdRng,
) -> Placement {
    let stats = &ctx.stats;
    let label = if flash { "flash" } else { "order" };
    // The counters and histograms are the load's; flash orders only count as outcomes.
    let main = !flash;
    if main {
        Stats::inc(&stats.offered);
    }
    let key = format!("{}-k{}", ctx.run, ctx.next_seq());
    let idx = ctx.ledger.key(&buyer.username, &key);
    let body = json!({
        "lines": lines.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect::<Vec<_>>(),
        "shipping": {"recipient": buyer.username, "address": "1 Soak Street, Seoul", "contact": "010-0000-0000"}
    });
    // A few buyers double-click: the same placement twice, at once.
    let double = rng.random_bool(0.05);
    let r = ctx
        .api
        .call(
            Method::POST,
            "/orders",
            Some(buyer),
            Some(&body),
            Some(&key),
        )
        .await;
    let r = match r {
        Ok(r) if r.status == 202 => r,
        Ok(r) => {
            if main {
                Stats::inc(&stats.place_failed);
            }
            stats.outcome(format!("{label}: placement answered {}", r.status));
            if r.status >= 500 {
                stats.anomaly("placement 5xx after every retry", r.describe());
            } else {
                stats.anomaly("placement refused (4xx)", r.describe());
            }
            return Placement::Failed;
        }
        Err(e) => {
            if main {
                Stats::inc(&stats.place_failed);
            }
            stats.outcome(format!("{label}: placement got no answer"));
            stats.anomaly("placement without answer after every retry", e);
            return Placement::Failed;
        }
    };
    if main {
        record(&stats.accept, intended.elapsed());
        Stats::inc(&stats.accepted);
    }
    let Some(order_id) = r.body["id"].as_str().map(str::to_string) else {
        stats.anomaly("202 without an id", r.describe());
        return Placement::Failed;
    };
    let replayed = r.body["replayed"] == true;
    ctx.ledger.key_answered(idx, &order_id, replayed);
    ctx.ledger.add_order(OrderRec {
        order_id: order_id.clone(),
        username: buyer.username.clone(),
        lines: lines.clone(),
        flash,
        ..Default::default()
    });
    // A retry answered "replayed": an earlier attempt reached the gateway (and claimed the key).
    let replayed_after_retry = replayed && r.attempts > 1;
    if replayed {
        stats.outcome("placement retried: replayed (same order)");
    }
    if double {
        match ctx
            .api
            .call(
                Method::POST,
                "/orders",
                Some(buyer),
                Some(&body),
                Some(&key),
            )
            .await
        {
            Ok(again) if again.status == 202 => {
                let id = again.body["id"].as_str().unwrap_or_default().to_string();
                ctx.ledger
                    .key_answered(idx, &id, again.body["replayed"] == true);
                if id != order_id {
                    stats.anomaly(
                        "same Idempotency-Key, different order id",
                        format!("{key}: {order_id} then {id}"),
                    );
                } else if again.body["replayed"] != true {
                    stats.anomaly(
                        "repeated Idempotency-Key not flagged replayed",
                        again.describe(),
                    );
                } else {
                    stats.outcome("double submit: replayed (same order)");
                }
            }
            Ok(again) => stats.anomaly("repeated placement refused", again.describe()),
            Err(e) => stats.anomaly("repeated placement without answer", e),
        }
    }
    let path = format!("/orders/{order_id}");
    let view = match ctx
        .api
        .wait_status(&path, Some(buyer), "AWAITING_PAYMENT")
        .await
    {
        Ok(v) => v,
        Err(e) => {
            stats.outcome(format!("{label}: not visible in time"));
            ctx.ledger.update(&order_id, |o| o.unseen = true);
            if replayed_after_retry {
                stats.anomaly(
                    "retried placement answered 202 replayed, order never visible",
                    format!(
                        "{order_id} (user {}, key {key}, {} attempts): {e}",
                        buyer.username, r.attempts
                    ),
                );
            } else {
                stats.anomaly("order not AWAITING_PAYMENT nor final in time", e);
            }
            return Placement::Failed;
        }
    };
    if status_of(&view) != "AWAITING_PAYMENT" {
        if main {
            Stats::inc(&stats.rejected);
        }
        stats.outcome(format!(
            "{label}: {} ({})",
            status_of(&view),
            rejection_kind(&view)
        ));
        return Placement::Refused;
    }
    let now = Instant::now();
    if main {
        record(&stats.visible_lat, now - intended);
        Stats::inc(&stats.visible);
    }
    let at = (stats.ms(intended), stats.ms(now));
    stats.visible_at_ms.lock().unwrap().push(at);
    Placement::Awaiting(Placed { order_id, view })
}

/// Why the shop cancelled an order before payment, in a few words (from its last transition).
pub fn rejection_kind(view: &Value) -> String {
    let reason = view["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|t| t["reason"].as_str())
        .unwrap_or("");
    let r = reason.to_ascii_lowercase();
    for (needle, kind) in [
        ("not open", "sale not open"),
        ("not_open", "sale not open"),
        ("sold out", "sale sold out"),
        ("sold_out", "sale sold out"),
        ("limit", "per-user limit"),
        ("closed", "sale closed"),
        ("stock", "out of stock"),
    ] {
        if r.contains(needle) {
            return kind.into();
        }
    }
    let mut s = reason.to_string();
    s.truncate(60);
    s
}

/// What paying led to.
enum Paid {
    /// PAID (or later): the view.
    Done(Value),
    /// Declined: back to AWAITING_PAYMENT.
    Declined(Value),
    /// Anything else, described (cancelled, refused, not visible).
    Other(String),
}

/// Pay and follow the order until the payment settles.
async fn pay(ctx: &Ctx, buyer: &Session, order_id: &str, before: &Value, token: &str) -> Paid {
    let path = format!("/orders/{order_id}");
    let sent = Instant::now();
    let r = ctx
        .api
        .post(
            &format!("{path}/pay"),
            buyer,
            json!({"payment_token": token}),
        )
        .await;
    match r {
        Ok(r) if r.status == 202 => {}
        // A retry refused as the order is no longer AWAITING_PAYMENT: the first try got through.
        Ok(r) if r.status == 409 && r.attempts > 1 => {}
        Ok(r) => return Paid::Other(format!("pay answered {}", r.describe())),
        Err(e) => return Paid::Other(format!("pay got no answer: {e}")),
    }
    let v0 = version_of(before);
    let rejection0 = before["rejection"].clone();
    let settled = ctx
        .api
        .follow(&path, Some(buyer), |v| {
            let s = status_of(v);
            matches!(s, "PAID" | "SHIPPING" | "COMPLETED" | "CANCELLED")
                || (s == "AWAITING_PAYMENT"
                    && version_of(v) > v0
                    && (v["payment_status"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("DECLINED"))
                        || v["rejection"] != rejection0))
        })
        .await;
    match settled {
        Ok(v) if matches!(status_of(&v), "PAID" | "SHIPPING" | "COMPLETED") => {
            record(&ctx.stats.paid_lat, sent.elapsed());
            Stats::inc(&ctx.stats.paid);
            Paid::Done(v)
        }
        Ok(v) if status_of(&v) == "AWAITING_PAYMENT" && v["rejection"] == rejection0 => {
            Paid::Declined(v)
        }
        Ok(v) => Paid::Other(format!(
            "{} ({})",
            status_of(&v),
            v["rejection"]
                .as_str()
                .unwrap_or_else(|| rejection_last(&v))
        )),
        Err(e) => Paid::Other(format!("not settled: {e}")),
    }
}

fn history_has(v: &Value, needle: &str) -> bool {
    v["history"].as_array().is_some_and(|h| {
        h.iter()
            .any(|t| t["reason"].as_str().is_some_and(|r| r.contains(needle)))
    })
}

fn rejection_last(v: &Value) -> &str {
    v["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|t| t["reason"].as_str())
        .unwrap_or("")
}

/// Cancel and wait until CANCELLED; the outcome.
async fn cancel(ctx: &Ctx, buyer: &Session, order_id: &str) -> String {
    let path = format!("/orders/{order_id}");
    match ctx
        .api
        .post(
            &format!("{path}/cancel"),
            buyer,
            json!({"reason": "pickple-soak"}),
        )
        .await
    {
        Ok(r) if r.status == 202 => {}
        Ok(r) if r.status == 409 && r.attempts > 1 => {}
        Ok(r) => {
            ctx.stats
                .anomaly("cancel refused on an unpaid order", r.describe());
            return format!("cancel answered {}", r.status);
        }
        Err(e) => return format!("cancel got no answer: {e}"),
    }
    ctx.ledger.update(order_id, |o| o.cancel_sent = true);
    match ctx.api.wait_status(&path, Some(buyer), "CANCELLED").await {
        Ok(v) => status_of(&v).to_string(),
        Err(e) => {
            ctx.stats.anomaly("cancel not visible in time", e);
            "cancel not visible".into()
        }
    }
}

/// Hand a paid order to the manager of its first vendor.
fn to_vendor(ctx: &Ctx, order_id: &str, view: &Value) {
    if let Some(v) = view["vendor_ids"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|v| v.as_str())
    {
        ctx.ship(order_id, v);
    }
}

/// What the buyer does once the order awaits payment.
pub async fn act(ctx: Arc<Ctx>, buyer: Arc<Session>, placed: Placed, action: Action) {
    let Placed { order_id, view } = placed;
    ctx.ledger.update(&order_id, |o| o.action = Some(action));
    let name = action.name();
    let outcome = match action {
        Action::Approve => match pay(&ctx, &buyer, &order_id, &view, APPROVE_TOKEN).await {
            Paid::Done(v) => {
                to_vendor(&ctx, &order_id, &v);
                "PAID".to_string()
            }
            Paid::Declined(_) => {
                ctx.stats
                    .anomaly("approving token declined", order_id.clone());
                "declined".into()
            }
            Paid::Other(s) => s,
        },
        Action::Decline => match pay(&ctx, &buyer, &order_id, &view, DECLINE_TOKEN).await {
            Paid::Declined(_) => {
                format!("declined, then {}", cancel(&ctx, &buyer, &order_id).await)
            }
            Paid::Done(_) => {
                ctx.stats
                    .anomaly("declining token approved", order_id.clone());
                "PAID".into()
            }
            Paid::Other(s) => s,
        },
        Action::Retry => match pay(&ctx, &buyer, &order_id, &view, DECLINE_TOKEN).await {
            Paid::Declined(v) => match pay(&ctx, &buyer, &order_id, &v, APPROVE_TOKEN).await {
                Paid::Done(v) => {
                    to_vendor(&ctx, &order_id, &v);
                    "declined, then PAID".into()
                }
                Paid::Declined(_) => "declined twice".into(),
                Paid::Other(s) => format!("declined, then {s}"),
            },
            Paid::Done(_) => "PAID at once".into(),
            Paid::Other(s) => s,
        },
        Action::Late => {
            tokio::time::sleep(Duration::from_secs(ctx.cli.late_secs)).await;
            let now = ctx
                .api
                .view(&format!("/orders/{order_id}"), Some(&*buyer))
                .await
                .ok()
                .flatten()
                .unwrap_or(view);
            match pay(&ctx, &buyer, &order_id, &now, APPROVE_TOKEN).await {
                Paid::Done(v) => {
                    to_vendor(&ctx, &order_id, &v);
                    "PAID".into()
                }
                Paid::Declined(_) => "declined".into(),
                // 409 once the payment deadline has passed: the order expired (CANCELLED).
                Paid::Other(s) => s,
            }
        }
        Action::Cancel => cancel(&ctx, &buyer, &order_id).await,
        Action::CancelPaid => match pay(&ctx, &buyer, &order_id, &view, APPROVE_TOKEN).await {
            Paid::Done(v) => {
                to_vendor(&ctx, &order_id, &v);
                cancel_paid(&ctx, &buyer, &order_id, &v).await
            }
            Paid::Declined(_) => "declined".into(),
            Paid::Other(s) => s,
        },
        Action::Abandon => "left AWAITING_PAYMENT".into(),
    };
    let label = if ctx.ledger.order(&order_id).is_some_and(|o| o.flash) {
        "flash "
    } else {
        ""
    };
    let mut outcome = outcome;
    outcome.truncate(120);
    ctx.stats.outcome(format!("{label}{name}: {outcome}"));
}

/// Cancel a paid order: CANCELLED (refunded) if the delivery had not started, else the cancel
/// is refused and the order goes on.
async fn cancel_paid(ctx: &Ctx, buyer: &Session, order_id: &str, paid: &Value) -> String {
    let path = format!("/orders/{order_id}");
    let r = ctx
        .api
        .post(
            &format!("{path}/cancel"),
            buyer,
            json!({"reason": "pickple-soak changed its mind"}),
        )
        .await;
    match r {
        Ok(r) if r.status == 202 => {}
        Ok(r) if r.status == 409 => return "PAID, cancel 409 (already shipped)".into(),
        Ok(r) => return format!("PAID, cancel answered {}", r.describe()),
        Err(e) => return format!("PAID, cancel got no answer: {e}"),
    }
    ctx.ledger.update(order_id, |o| o.cancel_sent = true);
    let v0 = version_of(paid);
    let rejection0 = paid["rejection"].clone();
    match ctx
        .api
        .follow(&path, Some(buyer), |v| {
            let refused = history_has(v, "cancellation refused")
                || (!v["rejection"].is_null() && v["rejection"] != rejection0);
            matches!(status_of(v), "CANCELLED" | "COMPLETED")
                || (version_of(v) > v0 && v["cancel_requested"].is_null() && refused)
        })
        .await
    {
        Ok(v) if status_of(&v) == "CANCELLED" => "PAID, then CANCELLED".into(),
        Ok(v) => format!("PAID, cancel refused ({})", status_of(&v)),
        Err(e) => {
            ctx.stats.anomaly("cancel of a paid order not settled", e);
            "PAID, cancel not settled".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn lines_are_distinct_products_of_one_to_three_units() {
        let products: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let lines = random_lines(&mut rng, &products);
            assert!((1..=3).contains(&lines.len()));
            let mut ids: Vec<&String> = lines.iter().map(|(p, _)| p).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), lines.len(), "a product twice: {lines:?}");
            assert!(lines.iter().all(|(_, q)| (1..=3).contains(q)));
        }
        let one = vec!["only".to_string()];
        assert_eq!(random_lines(&mut rng, &one).len(), 1);
        // Same seed, same choices.
        let a = random_lines(&mut StdRng::seed_from_u64(1), &products);
        let b = random_lines(&mut StdRng::seed_from_u64(1), &products);
        assert_eq!(a, b);
    }

    #[test]
    fn shop_cancellations_are_classified() {
        let v = |reason: &str| json!({"history": [{"status": "CANCELLED", "reason": reason}]});
        assert_eq!(
            rejection_kind(&v("p1: the sale has not opened yet (opens at 5)")),
            "sale not open"
        );
        assert_eq!(rejection_kind(&v("p1: SALE_SOLD_OUT")), "sale sold out");
        assert_eq!(
            rejection_kind(&v(
                "p1: per-user limit of 2 exceeded: 2 already taken, 1 requested"
            )),
            "per-user limit"
        );
        assert_eq!(
            rejection_kind(&v("p1: out of stock: 3 requested, 1 available")),
            "out of stock"
        );
        assert_eq!(rejection_kind(&json!({})), "");
    }
}
