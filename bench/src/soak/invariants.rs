//! The invariants checked once the shop is quiet, as pure functions of what the driver did
//! (its ledger) and what the shop says (the views, the maildir). Each gives rows of the
//! invariant table: name, expected, actual, ok.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::cli::Action;
use crate::ledger::{KeyUse, SaleRec, SignUpRec};
use crate::maildir::{earliest_expiry, Confirmation};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub name: String,
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

fn row(name: &str, expected: impl Into<String>, actual: impl Into<String>, ok: bool) -> Row {
    Row {
        name: name.into(),
        expected: expected.into(),
        actual: actual.into(),
        ok,
    }
}

/// Up to 3 examples, then "and N more".
fn examples(v: &[String]) -> String {
    let mut s = v.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
    if v.len() > 3 {
        s.push_str(&format!("; and {} more", v.len() - 3));
    }
    s
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineFacts {
    pub product_id: String,
    pub quantity: u64,
    /// The stock processor reserved the line (the view's `reserved`).
    pub reserved: bool,
}

/// One order as the views show it, with what the driver did to it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFacts {
    pub order_id: String,
    pub username: String,
    pub status: String,
    pub lines: Vec<LineFacts>,
    /// The vendors of its reserved lines: one shipment (and its mails) each.
    pub vendor_ids: Vec<String>,
    /// PAID appears in its history (the confirmation mail is due).
    pub was_paid: bool,
    /// A cancel of the paid order waits for the delivery processor.
    pub cancel_requested: bool,
    pub payment_deadline: Option<i64>,
    pub action: Option<Action>,
    pub start_sent: bool,
    pub end_sent: bool,
}

impl OrderFacts {
    /// From an order view and the driver's record of it.
    pub fn from_view(v: &Value, action: Option<Action>, start_sent: bool, end_sent: bool) -> Self {
        OrderFacts {
            order_id: v["order_id"].as_str().unwrap_or_default().into(),
            username: v["username"].as_str().unwrap_or_default().into(),
            status: v["status"].as_str().unwrap_or_default().into(),
            lines: v["lines"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|l| LineFacts {
                            product_id: l["product_id"].as_str().unwrap_or_default().into(),
                            quantity: l["quantity"].as_u64().unwrap_or(0),
                            reserved: l["reserved"].as_bool().unwrap_or(false),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            vendor_ids: v["vendor_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            was_paid: v["history"]
                .as_array()
                .is_some_and(|h| h.iter().any(|t| t["status"] == "PAID")),
            cancel_requested: !v["cancel_requested"].is_null(),
            payment_deadline: v["payment_deadline"].as_i64(),
            action,
            start_sent,
            end_sent,
        }
    }

    /// Status whose reserved lines still hold stock as reserved (not yet sold nor released).
    fn holds_reservation(&self) -> bool {
        matches!(
            self.status.as_str(),
            "PENDING" | "AWAITING_PAYMENT" | "PAYMENT_PENDING"
        )
    }

    fn sold(&self) -> bool {
        matches!(self.status.as_str(), "PAID" | "SHIPPING" | "COMPLETED")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StockFacts {
    pub initial: i64,
    pub added: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// One product: its view's stock and sale, and what the driver set and added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductFacts {
    pub product_id: String,
    pub stock: Option<StockFacts>,
    pub driver_initial: u64,
    pub driver_added: u64,
    pub driver_added_unsure: u64,
    pub sale: Option<SaleRec>,
    /// The view's `sale.taken`.
    pub sale_taken: Option<u64>,
}

impl ProductFacts {
    pub fn stock_from_view(v: &Value) -> Option<StockFacts> {
        let s = &v["stock"];
        Some(StockFacts {
            initial: s["initial"].as_i64()?,
            added: s["added"].as_i64()?,
            available: s["available"].as_i64()?,
            reserved: s["reserved"].as_i64()?,
            sold: s["sold"].as_i64()?,
        })
    }
}

/// Stock conservation and its agreement with the orders and the driver's ledger.
pub fn stock(products: &[ProductFacts], orders: &[OrderFacts]) -> Vec<Row> {
    let mut reserved_by: HashMap<&str, i64> = HashMap::new();
    let mut sold_by: HashMap<&str, i64> = HashMap::new();
    let mut open = 0;
    for o in orders {
        if o.holds_reservation() {
            open += 1;
        }
        for l in &o.lines {
            if o.holds_reservation() && l.reserved {
                *reserved_by.entry(&l.product_id).or_default() += l.quantity as i64;
            }
            if o.sold() {
                *sold_by.entry(&l.product_id).or_default() += l.quantity as i64;
            }
        }
    }
    let (mut missing, mut equation, mut ledger, mut reserved, mut sold, mut negative) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in products {
        let Some(s) = p.stock else {
            missing.push(p.product_id.clone());
            continue;
        };
        let id = &p.product_id;
        if s.initial + s.added != s.available + s.reserved + s.sold {
            equation.push(format!(
                "{id}: {}+{} != {}+{}+{}",
                s.initial, s.added, s.available, s.reserved, s.sold
            ));
        }
        if [s.initial, s.added, s.available, s.reserved, s.sold]
            .iter()
            .any(|n| *n < 0)
        {
            negative.push(format!("{id}: {s:?}"));
        }
        let supplied = s.initial + s.added;
        let low = (p.driver_initial + p.driver_added) as i64;
        let high = low + p.driver_added_unsure as i64;
        if supplied < low || supplied > high {
            ledger.push(format!("{id}: view {supplied}, driver {low}..={high}"));
        }
        let want_reserved = reserved_by.get(id.as_str()).copied().unwrap_or(0);
        if s.reserved != want_reserved {
            reserved.push(format!(
                "{id}: reserved {} but open orders hold {want_reserved}",
                s.reserved
            ));
        }
        let want_sold = sold_by.get(id.as_str()).copied().unwrap_or(0);
        if s.sold != want_sold {
            sold.push(format!(
                "{id}: sold {} but PAID/SHIPPING/COMPLETED lines hold {want_sold}",
                s.sold
            ));
        }
    }
    let n = products.len();
    let all = |v: &Vec<String>, good: &str| {
        if v.is_empty() {
            good.to_string()
        } else {
            format!("{} of {n}: {}", v.len(), examples(v))
        }
    };
    let mut rows = vec![
        row(
            "product views present",
            format!("{n} products"),
            all(&missing, &format!("{n} present")),
            missing.is_empty(),
        ),
        row(
            "stock conservation",
            "initial + added = available + reserved + sold",
            all(&equation, &format!("holds for {n} products")),
            equation.is_empty(),
        ),
        row(
            "no negative stock counter",
            "all >= 0",
            all(&negative, "none negative"),
            negative.is_empty(),
        ),
        row(
            "stock supplied = driver's",
            "view initial + added = stock the driver set and added",
            all(&ledger, "matches"),
            ledger.is_empty(),
        ),
        row(
            "reserved = open orders' reserved lines",
            "reserved = units of PENDING/AWAITING_PAYMENT/PAYMENT_PENDING reserved lines",
            all(&reserved, "matches"),
            reserved.is_empty(),
        ),
        row(
            "sold = paid orders' lines",
            "sold = units of PAID/SHIPPING/COMPLETED lines",
            all(&sold, "matches"),
            sold.is_empty(),
        ),
    ];
    let total_reserved: i64 = products
        .iter()
        .filter_map(|p| p.stock)
        .map(|s| s.reserved)
        .sum();
    rows.push(if open == 0 {
        row(
            "reserved = 0 once nothing is pending",
            "0",
            total_reserved.to_string(),
            total_reserved == 0,
        )
    } else {
        row(
            "reserved = 0 once nothing is pending",
            "0 (n/a)",
            format!("{open} orders still open (awaiting payment, deadline not passed)"),
            true,
        )
    });
    rows
}

/// The sale's quantity and per-user limit: from the orders holding sale units, and the view.
pub fn sale(products: &[ProductFacts], orders: &[OrderFacts]) -> Vec<Row> {
    let mut rows = Vec::new();
    for p in products {
        let Some(terms) = p.sale else { continue };
        let mut per_user: BTreeMap<&str, u64> = BTreeMap::new();
        for o in orders.iter().filter(|o| o.status != "CANCELLED") {
            for l in o
                .lines
                .iter()
                .filter(|l| l.product_id == p.product_id && l.reserved)
            {
                *per_user.entry(&o.username).or_default() += l.quantity;
            }
        }
        let held: u64 = per_user.values().sum();
        let taken = p.sale_taken.unwrap_or(0);
        rows.push(row(
            "sale: units held <= sale quantity",
            format!("<= {}", terms.quantity),
            format!("{held} held by orders, sale.taken {taken}"),
            held <= terms.quantity && taken <= terms.quantity,
        ));
        rows.push(row(
            "sale: taken = units held by orders",
            held.to_string(),
            taken.to_string(),
            held == taken,
        ));
        let over: Vec<String> = per_user
            .iter()
            .filter(|(_, n)| **n > terms.per_user_limit)
            .map(|(u, n)| format!("{u} holds {n}"))
            .collect();
        let max = per_user.values().max().copied().unwrap_or(0);
        rows.push(row(
            "sale: no user above the per-user limit",
            format!("<= {} per user", terms.per_user_limit),
            if over.is_empty() {
                format!("max {max} over {} users", per_user.len())
            } else {
                format!("{} users over: {}", over.len(), examples(&over))
            },
            over.is_empty(),
        ));
    }
    rows
}

/// Exactly one order per (user, Idempotency-Key): every key got one order id, and each user has
/// as many orders in the views as order ids the driver was given (plus at most the keys never
/// answered, whose placement may have got through): no order the driver does not know of.
pub fn idempotency(keys: &[KeyUse], orders_per_user: &HashMap<String, u64>) -> Vec<Row> {
    let split: Vec<String> = keys
        .iter()
        .filter(|k| k.order_ids.len() > 1)
        .map(|k| format!("{}/{}: {}", k.username, k.key, k.order_ids.join(",")))
        .collect();
    let mut answered: HashMap<&str, u64> = HashMap::new();
    let mut unanswered: HashMap<&str, u64> = HashMap::new();
    let mut ids: HashSet<&str> = HashSet::new();
    let mut shared = Vec::new();
    for k in keys {
        if k.order_ids.is_empty() {
            *unanswered.entry(&k.username).or_default() += 1;
        }
        for id in &k.order_ids {
            if ids.insert(id) {
                *answered.entry(&k.username).or_default() += 1;
            } else {
                shared.push(format!("{id} answered for two keys"));
            }
        }
    }
    let mut off = Vec::new();
    let users: HashSet<&str> = answered.keys().chain(unanswered.keys()).copied().collect();
    for u in users {
        let want = answered.get(u).copied().unwrap_or(0);
        let slack = unanswered.get(u).copied().unwrap_or(0);
        let have = orders_per_user.get(u).copied().unwrap_or(0);
        if have < want || have > want + slack {
            off.push(format!(
                "{u}: {have} orders for {want} known ids (+{slack} unanswered keys)"
            ));
        }
    }
    let replays: u32 = keys.iter().map(|k| k.replays).sum();
    vec![
        row(
            "one order id per Idempotency-Key",
            "1",
            if split.is_empty() && shared.is_empty() {
                format!(
                    "{} keys, {replays} replays answered with the same id",
                    keys.len()
                )
            } else {
                examples(&[split.clone(), shared.clone()].concat())
            },
            split.is_empty() && shared.is_empty(),
        ),
        row(
            "orders per user = keys used",
            "one order per (user, key)",
            if off.is_empty() {
                format!("{} users match", orders_per_user.len())
            } else {
                format!("{} users off: {}", off.len(), examples(&off))
            },
            off.is_empty(),
        ),
    ]
}

/// Why an order is not where it should be once the shop is quiet, or `None` if it is fine.
pub fn unfinished(o: &OrderFacts, now_ms: i64) -> Option<String> {
    let id = &o.order_id;
    match o.status.as_str() {
        "COMPLETED" => None,
        "CANCELLED" => {
            if o.end_sent {
                Some(format!("{id}: CANCELLED after its delivery ended"))
            } else {
                None
            }
        }
        "PAID" | "SHIPPING" => {
            if o.cancel_requested {
                Some(format!("{id}: {} with a cancel still pending", o.status))
            } else if o.end_sent {
                Some(format!("{id}: {} though its delivery ended", o.status))
            } else if o.start_sent && o.status == "PAID" {
                Some(format!("{id}: PAID though its delivery started"))
            } else {
                None
            }
        }
        // Left unpaid: fine until its payment deadline, then it must expire (within the grace
        // the order app's punctuation, its commit and the views sink take).
        "AWAITING_PAYMENT" => match o.payment_deadline {
            Some(d) if d + EXPIRY_GRACE_MS > now_ms => None,
            Some(d) => Some(format!(
                "{id}: AWAITING_PAYMENT {} s after its deadline",
                (now_ms - d) / 1000
            )),
            None => Some(format!("{id}: AWAITING_PAYMENT without a deadline")),
        },
        other => Some(format!("{id}: stuck in {other}")),
    }
}

/// How long past its payment deadline an unpaid order may still show AWAITING_PAYMENT: the
/// order app's deadline punctuation runs every second, then commits, then the views sink writes.
pub const EXPIRY_GRACE_MS: i64 = 5_000;

/// Every order final (COMPLETED, CANCELLED), or PAID/SHIPPING where the driver did not finish
/// its delivery, or awaiting payment before its deadline; and every accepted order visible.
pub fn orders(facts: &[OrderFacts], missing: &[String], now_ms: i64) -> Vec<Row> {
    let bad: Vec<String> = facts.iter().filter_map(|o| unfinished(o, now_ms)).collect();
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for o in facts {
        *by_status.entry(&o.status).or_default() += 1;
    }
    let statuses = by_status
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        row(
            "every accepted order visible",
            format!("{} views", facts.len() + missing.len()),
            if missing.is_empty() {
                format!("{} views", facts.len())
            } else {
                format!("{} missing: {}", missing.len(), examples(missing))
            },
            missing.is_empty(),
        ),
        row(
            "every order final",
            "COMPLETED/CANCELLED, or PAID/SHIPPING not fully shipped by the driver, or unpaid before its deadline",
            if bad.is_empty() {
                statuses
            } else {
                format!("{} not: {} ({statuses})", bad.len(), examples(&bad))
            },
            bad.is_empty(),
        ),
    ]
}

/// An order as the driver placed it: id, buyer, (product, quantity) lines.
pub type Placement = (String, String, Vec<(String, u64)>);

/// Each order's view names its buyer and the lines as the driver placed them.
pub fn as_placed(placed: &[Placement], facts: &[OrderFacts]) -> Row {
    let by_id: HashMap<&str, &OrderFacts> =
        facts.iter().map(|f| (f.order_id.as_str(), f)).collect();
    let mut off = Vec::new();
    for (id, user, lines) in placed {
        let Some(f) = by_id.get(id.as_str()) else {
            continue;
        };
        let mut want: Vec<(&str, u64)> = lines.iter().map(|(p, q)| (p.as_str(), *q)).collect();
        let mut have: Vec<(&str, u64)> = f
            .lines
            .iter()
            .map(|l| (l.product_id.as_str(), l.quantity))
            .collect();
        want.sort_unstable();
        have.sort_unstable();
        if f.username != *user || want != have {
            off.push(format!(
                "{id}: {} {have:?}, placed by {user} {want:?}",
                f.username
            ));
        }
    }
    row(
        "orders as placed",
        "buyer and lines of every view = the placement",
        if off.is_empty() {
            format!("{} orders match", placed.len())
        } else {
            format!("{} differ: {}", off.len(), examples(&off))
        },
        off.is_empty(),
    )
}

/// Message-IDs the notification app gives an order's mails (processors/apps/src/notification.rs).
pub fn mail_id(order_id: &str, slug: &str) -> String {
    format!("{order_id}.{slug}@pickple.local")
}

/// Message-IDs of a shipment's mails, one per (order, vendor, step): the vendor id written
/// with ASCII letters, digits and `-`, any other byte as `_XX` (`shipment_message_id` in
/// processors/apps/src/notification.rs).
pub fn shipment_mail_id(order_id: &str, vendor_id: &str, slug: &str) -> String {
    let mut vendor = String::with_capacity(vendor_id.len());
    for b in vendor_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            vendor.push(char::from(b));
        } else {
            vendor.push_str(&format!("_{b:02X}"));
        }
    }
    format!("{order_id}.{vendor}.{slug}@pickple.local")
}

/// The mails every order must have had: its confirmation; each shipment's start once the
/// driver started them all; each shipment's arrival and the order's "delivered" once it ended
/// them all.
pub fn expected_mails(o: &OrderFacts) -> Vec<String> {
    let mut out = Vec::new();
    if o.was_paid {
        out.push(mail_id(&o.order_id, "order-confirmed"));
    }
    if o.start_sent && matches!(o.status.as_str(), "SHIPPING" | "COMPLETED") {
        for v in &o.vendor_ids {
            out.push(shipment_mail_id(&o.order_id, v, "shipment-started"));
        }
    }
    if o.end_sent && o.status == "COMPLETED" {
        for v in &o.vendor_ids {
            out.push(shipment_mail_id(&o.order_id, v, "shipment-delivered"));
        }
        out.push(mail_id(&o.order_id, "delivery-completed"));
    }
    out
}

/// How many times the processes of `app` (every instance: `app.log`, `app-2.log`, ...) in
/// `logs` were restarted by `scripts/supervise.sh`, which logs a line per exit.
pub fn supervised_restarts(logs: &std::path::Path, app: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(logs) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name == format!("{app}.log") || name.starts_with(&format!("{app}-"))
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| restarts_in(&text))
        .sum()
}

/// The supervisor's exit lines in one log.
pub fn restarts_in(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.starts_with("{\"supervisor\":") && l.contains("\"exit\":"))
        .count() as u64
}

/// Every confirmed order and every delivery step has its mail; duplicates at most `allowed`.
pub fn mails(
    facts: &[OrderFacts],
    counts: &HashMap<String, u32>,
    allowed: u64,
    notification_kills: u64,
) -> Vec<Row> {
    let mut missing_confirmed = Vec::new();
    let mut missing_delivery = Vec::new();
    let (mut confirmed, mut delivery) = (0, 0);
    let mut ours: HashSet<String> = HashSet::new();
    for o in facts {
        for id in expected_mails(o) {
            let present = counts.get(&id).copied().unwrap_or(0) > 0;
            if id.ends_with(".order-confirmed@pickple.local") {
                confirmed += 1;
                if !present {
                    missing_confirmed.push(id.clone());
                }
            } else {
                delivery += 1;
                if !present {
                    missing_delivery.push(id.clone());
                }
            }
            ours.insert(id);
        }
        // Mails sent though not expected (e.g. a start the driver never saw) count too.
        let shipments = o.vendor_ids.iter().flat_map(|v| {
            ["shipment-started", "shipment-delivered"]
                .map(|slug| shipment_mail_id(&o.order_id, v, slug))
        });
        for id in ["order-confirmed", "delivery-completed"]
            .map(|slug| mail_id(&o.order_id, slug))
            .into_iter()
            .chain(shipments)
        {
            if counts.contains_key(&id) {
                ours.insert(id);
            }
        }
    }
    let (extra, dup_ids) = crate::maildir::duplicates(counts, &ours);
    let dup_examples: Vec<String> = dup_ids.iter().map(|(id, n)| format!("{id} x{n}")).collect();
    vec![
        row(
            "confirmation mail per paid order",
            format!("{confirmed} mails"),
            if missing_confirmed.is_empty() {
                format!("{confirmed} present")
            } else {
                format!(
                    "{} missing: {}",
                    missing_confirmed.len(),
                    examples(&missing_confirmed)
                )
            },
            missing_confirmed.is_empty(),
        ),
        row(
            "delivery mails per shipped order",
            format!("{delivery} mails"),
            if missing_delivery.is_empty() {
                format!("{delivery} present")
            } else {
                format!(
                    "{} missing: {}",
                    missing_delivery.len(),
                    examples(&missing_delivery)
                )
            },
            missing_delivery.is_empty(),
        ),
        row(
            "duplicate mails (same Message-ID)",
            format!(
                "<= {allowed} (crashes of notification: {allowed}, of which SIGKILLs by the soak: {notification_kills})"
            ),
            if dup_examples.is_empty() {
                "0".to_string()
            } else {
                format!("{extra}: {}", examples(&dup_examples))
            },
            extra <= allowed,
        ),
    ]
}

/// The confirmation mails of a sign-up sent at `sent_at_ms` to `email`, as Message-ID -> copies
/// (older mails to the address, whose codes expire before this sign-up's, are another run's).
pub fn confirmations_of<'a>(
    email: &str,
    sent_at_ms: i64,
    mails: &'a [Confirmation],
) -> BTreeMap<&'a str, u32> {
    let not_before = earliest_expiry(sent_at_ms);
    let mut out = BTreeMap::new();
    for m in mails.iter().filter(|m| m.is_for(email, not_before)) {
        *out.entry(m.message_id.as_str()).or_default() += 1;
    }
    out
}

/// Every sign-up the shop took got its confirmation mail: one code (copies with the same
/// Message-ID are allowed: at least once), and no account became ACTIVE before the driver sent
/// that code back. `statuses`: each account's status in the views at the end.
pub fn sign_ups(
    sign_ups: &[SignUpRec],
    statuses: &HashMap<String, String>,
    mails: &[Confirmation],
) -> Vec<Row> {
    let (mut missing, mut several, mut active_early) = (vec![], vec![], vec![]);
    let (mut accepted, mut copies, mut active) = (0, 0, 0);
    for s in sign_ups {
        if s.accepted {
            accepted += 1;
            let ids = confirmations_of(&s.email, s.sent_at_ms, mails);
            match ids.len() {
                0 => missing.push(format!("{} ({})", s.username, s.email)),
                1 => copies += ids.values().map(|n| u64::from(n - 1)).sum::<u64>(),
                n => several.push(format!("{}: {n} codes", s.username)),
            }
        }
        let status = statuses.get(&s.username).map(String::as_str);
        if status == Some("ACTIVE") {
            active += 1;
        }
        if s.status_before_confirm.as_deref() == Some("ACTIVE") {
            active_early.push(format!("{}: ACTIVE before its code was sent", s.username));
        } else if !s.code_sent && status == Some("ACTIVE") {
            active_early.push(format!("{}: ACTIVE, its code never sent", s.username));
        }
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("{} missing: {}", missing.len(), examples(&missing)));
    }
    if !several.is_empty() {
        problems.push(format!(
            "{} with more than one code: {}",
            several.len(),
            examples(&several)
        ));
    }
    vec![
        row(
            "confirmation mail per sign-up",
            format!("{accepted} mails, one code each (copies of one allowed)"),
            if problems.is_empty() {
                format!("{accepted} present, {copies} extra copies")
            } else {
                problems.join("; ")
            },
            problems.is_empty(),
        ),
        row(
            "ACTIVE only once confirmed",
            "no account ACTIVE before the driver sent its mailed code",
            if active_early.is_empty() {
                format!(
                    "{active} of {} sign-ups ACTIVE, each after its code",
                    sign_ups.len()
                )
            } else {
                format!("{} not: {}", active_early.len(), examples(&active_early))
            },
            active_early.is_empty(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(id: &str, user: &str, status: &str, lines: &[(&str, u64, bool)]) -> OrderFacts {
        OrderFacts {
            order_id: id.into(),
            username: user.into(),
            status: status.into(),
            lines: lines
                .iter()
                .map(|(p, q, r)| LineFacts {
                    product_id: p.to_string(),
                    quantity: *q,
                    reserved: *r,
                })
                .collect(),
            vendor_ids: vec!["v1".into()],
            was_paid: matches!(status, "PAID" | "SHIPPING" | "COMPLETED"),
            cancel_requested: false,
            payment_deadline: None,
            action: None,
            start_sent: false,
            end_sent: false,
        }
    }

    fn product(id: &str, s: StockFacts, initial: u64, added: u64) -> ProductFacts {
        ProductFacts {
            product_id: id.into(),
            stock: Some(s),
            driver_initial: initial,
            driver_added: added,
            ..Default::default()
        }
    }

    fn failing(rows: &[Row]) -> Vec<String> {
        rows.iter()
            .filter(|r| !r.ok)
            .map(|r| r.name.clone())
            .collect()
    }

    #[test]
    fn consistent_stock_passes() {
        let orders = vec![
            order("o1", "u", "COMPLETED", &[("p", 2, true)]),
            order("o2", "u", "PAID", &[("p", 1, true), ("q", 1, true)]),
            order("o3", "u", "CANCELLED", &[("p", 5, true)]),
        ];
        let s = StockFacts {
            initial: 0,
            added: 10,
            available: 7,
            reserved: 0,
            sold: 3,
        };
        let q = StockFacts {
            initial: 0,
            added: 5,
            available: 4,
            reserved: 0,
            sold: 1,
        };
        let rows = stock(&[product("p", s, 10, 0), product("q", q, 3, 2)], &orders);
        assert!(failing(&rows).is_empty(), "{rows:#?}");
        assert!(rows
            .iter()
            .any(|r| r.name.starts_with("reserved = 0") && r.actual == "0"));
    }

    #[test]
    fn stock_violations_are_caught() {
        let orders = vec![
            order("o1", "u", "COMPLETED", &[("p", 2, true)]),
            order("o2", "u", "AWAITING_PAYMENT", &[("p", 1, true)]),
        ];
        // Lost unit: the equation breaks.
        let broken = StockFacts {
            initial: 0,
            added: 10,
            available: 6,
            reserved: 1,
            sold: 2,
        };
        let f = failing(&stock(&[product("p", broken, 10, 0)], &orders));
        assert_eq!(f, vec!["stock conservation"]);
        // Sold counts a cancelled order's units.
        let oversold = StockFacts {
            initial: 0,
            added: 10,
            available: 6,
            reserved: 1,
            sold: 3,
        };
        let f = failing(&stock(&[product("p", oversold, 10, 0)], &orders));
        assert_eq!(f, vec!["sold = paid orders' lines"]);
        // A reservation nobody holds.
        let leaked = StockFacts {
            initial: 0,
            added: 10,
            available: 5,
            reserved: 3,
            sold: 2,
        };
        let f = failing(&stock(&[product("p", leaked, 10, 0)], &orders));
        assert_eq!(f, vec!["reserved = open orders' reserved lines"]);
        // Stock the driver never added.
        let ok = StockFacts {
            initial: 0,
            added: 10,
            available: 7,
            reserved: 1,
            sold: 2,
        };
        let f = failing(&stock(&[product("p", ok, 5, 0)], &orders));
        assert_eq!(f, vec!["stock supplied = driver's"]);
        let mut unsure = product("p", ok, 5, 0);
        unsure.driver_added_unsure = 5;
        assert!(failing(&stock(&[unsure], &orders)).is_empty());
        // Nothing pending, yet units reserved.
        let done = vec![order("o1", "u", "COMPLETED", &[("p", 2, true)])];
        let stuck = StockFacts {
            initial: 0,
            added: 10,
            available: 7,
            reserved: 1,
            sold: 2,
        };
        let f = failing(&stock(&[product("p", stuck, 10, 0)], &done));
        assert!(
            f.contains(&"reserved = 0 once nothing is pending".to_string()),
            "{f:?}"
        );
        let negative = StockFacts {
            initial: 0,
            added: 0,
            available: -1,
            reserved: 1,
            sold: 0,
        };
        let f = failing(&stock(&[product("p", negative, 0, 0)], &[]));
        assert!(
            f.contains(&"no negative stock counter".to_string()),
            "{f:?}"
        );
        let mut gone = product("p", ok, 10, 0);
        gone.stock = None;
        assert_eq!(failing(&stock(&[gone], &[])), vec!["product views present"]);
    }

    #[test]
    fn sale_limits_are_checked_on_held_units() {
        let terms = SaleRec {
            opens_at: 0,
            closes_at: 1,
            quantity: 4,
            per_user_limit: 2,
        };
        let mut p = product("s", StockFacts::default(), 0, 0);
        p.sale = Some(terms);
        p.sale_taken = Some(4);
        let orders = vec![
            order("o1", "a", "PAID", &[("s", 2, true)]),
            order("o2", "b", "AWAITING_PAYMENT", &[("s", 1, true)]),
            order("o3", "b", "COMPLETED", &[("s", 1, true)]),
            // Released units do not count; unreserved lines neither.
            order("o4", "a", "CANCELLED", &[("s", 2, true)]),
            order("o5", "c", "CANCELLED", &[("s", 3, false)]),
        ];
        assert!(failing(&sale(&[p.clone()], &orders)).is_empty());
        let mut over = orders.clone();
        over.push(order("o6", "a", "PAID", &[("s", 1, true)]));
        p.sale_taken = Some(5);
        let f = failing(&sale(&[p.clone()], &over));
        assert_eq!(
            f,
            vec![
                "sale: units held <= sale quantity",
                "sale: no user above the per-user limit"
            ]
        );
        p.sale_taken = Some(3);
        assert_eq!(
            failing(&sale(&[p], &orders)),
            vec!["sale: taken = units held by orders"]
        );
    }

    fn key(user: &str, k: &str, ids: &[&str]) -> KeyUse {
        KeyUse {
            username: user.into(),
            key: k.into(),
            order_ids: ids.iter().map(|s| s.to_string()).collect(),
            replays: 0,
        }
    }

    #[test]
    fn one_order_per_key() {
        let keys = vec![
            key("a", "k1", &["o1"]),
            key("a", "k2", &["o2"]),
            key("b", "k3", &["o3"]),
            key("b", "k4", &[]),
        ];
        let mut per_user = HashMap::from([("a".to_string(), 2), ("b".to_string(), 1)]);
        assert!(failing(&idempotency(&keys, &per_user)).is_empty());
        // The unanswered key's placement may have got through.
        per_user.insert("b".into(), 2);
        assert!(failing(&idempotency(&keys, &per_user)).is_empty());
        // A retry made a second order.
        per_user.insert("a".into(), 3);
        assert_eq!(
            failing(&idempotency(&keys, &per_user)),
            vec!["orders per user = keys used"]
        );
        per_user.insert("a".into(), 2);
        let split = vec![key("a", "k1", &["o1", "o9"]), key("a", "k2", &["o2"])];
        assert_eq!(
            failing(&idempotency(&split, &per_user)),
            vec![
                "one order id per Idempotency-Key",
                "orders per user = keys used"
            ]
        );
        let shared = vec![key("a", "k1", &["o1"]), key("a", "k2", &["o1"])];
        assert!(failing(&idempotency(&shared, &per_user))
            .contains(&"one order id per Idempotency-Key".to_string()));
    }

    #[test]
    fn orders_must_be_final_or_explained() {
        let now = 1_000_000;
        let mut o = order("o", "u", "COMPLETED", &[]);
        assert_eq!(unfinished(&o, now), None);
        o.status = "PAYMENT_PENDING".into();
        assert!(unfinished(&o, now).is_some());
        o.status = "PENDING".into();
        assert!(unfinished(&o, now).is_some());
        o.status = "PAID".into();
        assert_eq!(unfinished(&o, now), None);
        o.start_sent = true;
        assert!(unfinished(&o, now).is_some(), "started, still PAID");
        o.status = "SHIPPING".into();
        assert_eq!(unfinished(&o, now), None);
        o.end_sent = true;
        assert!(unfinished(&o, now).is_some(), "ended, still SHIPPING");
        o.status = "CANCELLED".into();
        assert!(unfinished(&o, now).is_some(), "ended, then cancelled");
        let mut c = order("c", "u", "PAID", &[]);
        c.cancel_requested = true;
        assert!(unfinished(&c, now).is_some());
        let mut a = order("a", "u", "AWAITING_PAYMENT", &[]);
        a.payment_deadline = Some(now + 1);
        assert_eq!(unfinished(&a, now), None);
        a.payment_deadline = Some(now - EXPIRY_GRACE_MS / 2);
        assert_eq!(unfinished(&a, now), None, "expiring");
        a.payment_deadline = Some(now - EXPIRY_GRACE_MS - 1);
        assert!(unfinished(&a, now).is_some());
        let rows = orders(&[order("x", "u", "PENDING", &[])], &["y".into()], now);
        assert_eq!(
            failing(&rows),
            vec!["every accepted order visible", "every order final"]
        );
    }

    #[test]
    fn views_must_show_the_placement() {
        let facts = vec![order("o1", "u", "PAID", &[("p", 2, true), ("q", 1, true)])];
        let placed = |user: &str, lines: &[(&str, u64)]| {
            vec![(
                "o1".to_string(),
                user.to_string(),
                lines.iter().map(|(p, q)| (p.to_string(), *q)).collect(),
            )]
        };
        assert!(as_placed(&placed("u", &[("q", 1), ("p", 2)]), &facts).ok);
        assert!(!as_placed(&placed("v", &[("q", 1), ("p", 2)]), &facts).ok);
        assert!(!as_placed(&placed("u", &[("p", 2)]), &facts).ok);
        assert!(!as_placed(&placed("u", &[("p", 3), ("q", 1)]), &facts).ok);
    }

    #[test]
    fn mails_missing_and_duplicated() {
        let mut shipped = order("o1", "u", "COMPLETED", &[]);
        shipped.start_sent = true;
        shipped.end_sent = true;
        let paid = order("o2", "u", "PAID", &[]);
        let unpaid = order("o3", "u", "CANCELLED", &[]);
        let facts = vec![shipped, paid, unpaid];
        let mut counts: HashMap<String, u32> = [
            mail_id("o1", "order-confirmed"),
            shipment_mail_id("o1", "v1", "shipment-started"),
            shipment_mail_id("o1", "v1", "shipment-delivered"),
            mail_id("o1", "delivery-completed"),
            mail_id("o2", "order-confirmed"),
        ]
        .into_iter()
        .map(|id| (id, 1))
        .collect();
        counts.insert("other.order-confirmed@pickple.local".into(), 3);
        assert!(failing(&mails(&facts, &counts, 0, 0)).is_empty());
        counts.insert(mail_id("o2", "order-confirmed"), 2);
        assert_eq!(
            failing(&mails(&facts, &counts, 0, 0)),
            vec!["duplicate mails (same Message-ID)"]
        );
        assert!(failing(&mails(&facts, &counts, 1, 1)).is_empty());
        counts.remove(&mail_id("o1", "delivery-completed"));
        counts.remove(&mail_id("o2", "order-confirmed"));
        assert_eq!(
            failing(&mails(&facts, &counts, 0, 0)),
            vec![
                "confirmation mail per paid order",
                "delivery mails per shipped order"
            ]
        );
    }

    #[test]
    fn sign_ups_are_confirmed_by_their_mail() {
        let day = pickple_domain::user::CONFIRMATION_TTL_MS;
        let rec = |user: &str, confirmed: bool| SignUpRec {
            username: user.into(),
            email: format!("{user}@soak.example.com"),
            sent_at_ms: 1_000,
            accepted: true,
            status_before_confirm: confirmed.then(|| "PENDING".into()),
            code_sent: confirmed,
        };
        let mail = |user: &str, expires_at: i64| Confirmation {
            message_id: format!("id-{user}.confirm-{expires_at}@pickple.local"),
            to: format!("{user}@soak.example.com"),
            code: "c0de".into(),
            expires_at,
        };
        let recs = vec![rec("ann", true), rec("bob", true), rec("cid", false)];
        let statuses: HashMap<String, String> =
            [("ann", "ACTIVE"), ("bob", "ACTIVE"), ("cid", "PENDING")]
                .into_iter()
                .map(|(u, s)| (u.to_string(), s.to_string()))
                .collect();
        // Copies of one mail are at-least-once delivery; another run's mail to the same address
        // (its code expired before this sign-up's) is not ours.
        let mut sent = vec![
            mail("ann", 1_500 + day),
            mail("ann", 1_500 + day),
            mail("bob", 2_000 + day),
            mail("cid", 1_200 + day),
            mail("cid", 5),
        ];
        let rows = sign_ups(&recs, &statuses, &sent);
        assert!(failing(&rows).is_empty(), "{rows:#?}");
        assert_eq!(rows[0].actual, "3 present, 1 extra copies");
        // Order mails do not mind confirmation mails in the maildir.
        let counts: HashMap<String, u32> = sent.iter().map(|m| (m.message_id.clone(), 2)).collect();
        assert!(failing(&mails(&[order("o1", "u", "CANCELLED", &[])], &counts, 0, 0)).is_empty());
        // A mail missing, and a second code for one address.
        sent.retain(|m| !m.to.starts_with("bob"));
        sent.push(mail("ann", 3_000 + day));
        assert_eq!(
            failing(&sign_ups(&recs, &statuses, &sent)),
            vec!["confirmation mail per sign-up"]
        );
        // ACTIVE though the driver never sent the code, or before it did.
        let mut unconfirmed = statuses.clone();
        unconfirmed.insert("cid".into(), "ACTIVE".into());
        let sent = vec![
            mail("ann", 1_500 + day),
            mail("bob", 2_000 + day),
            mail("cid", 1_200 + day),
        ];
        assert_eq!(
            failing(&sign_ups(&recs, &unconfirmed, &sent)),
            vec!["ACTIVE only once confirmed"]
        );
        let mut early = recs.clone();
        early[0].status_before_confirm = Some("ACTIVE".into());
        assert_eq!(
            failing(&sign_ups(&early, &statuses, &sent)),
            vec!["ACTIVE only once confirmed"]
        );
    }

    #[test]
    fn facts_are_read_from_an_order_view() {
        let v = json!({
            "order_id": "o1", "username": "u", "status": "CANCELLED",
            "lines": [{"product_id": "p", "quantity": 2, "unit_price": 5, "vendor_id": "v", "reserved": true}],
            "amount": 10, "payment_deadline": null, "payment_status": "REFUNDED",
            "delivery_status": null, "vendor_ids": ["v"],
            "history": [{"status": "PENDING", "at": 1, "reason": ""}, {"status": "PAID", "at": 2, "reason": ""},
                        {"status": "CANCELLED", "at": 3, "reason": ""}],
            "rejection": null, "version": 7
        });
        let f = OrderFacts::from_view(&v, Some(Action::CancelPaid), false, false);
        assert!(f.was_paid && !f.cancel_requested);
        assert_eq!(f.lines[0].quantity, 2);
        assert!(f.lines[0].reserved);
        assert_eq!(expected_mails(&f), vec![mail_id("o1", "order-confirmed")]);
        let p =
            json!({"stock": {"initial": 0, "added": 5, "available": 4, "reserved": 1, "sold": 0}});
        assert_eq!(
            ProductFacts::stock_from_view(&p),
            Some(StockFacts {
                initial: 0,
                added: 5,
                available: 4,
                reserved: 1,
                sold: 0
            })
        );
    }

    #[test]
    fn supervisor_exit_lines_count_as_restarts() {
        let log = concat!(
            "{\"timestamp\":\"x\",\"level\":\"INFO\",\"fields\":{\"message\":\"running\"}}\n",
            "{\"supervisor\":\"notification\",\"exit\":137,\"restart_in_ms\":0}\n",
            "{\"supervisor\":\"notification\",\"exit\":1,\"restart_in_ms\":100}\n",
        );
        assert_eq!(restarts_in(log), 2);
        assert_eq!(restarts_in("{\"supervisor\" in a message\n"), 0);
    }
}
