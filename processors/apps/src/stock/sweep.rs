//! The stock app's punctuator: deletes final reservations whose retention is over, and the
//! buyers' counters of sales that are no longer any product's current sale. Each punctuation
//! deletes at most [`MAX_SWEEP_DELETES`] keys, so one transaction never carries a backlog; the
//! deletes reach the changelog as tombstones, which compaction then reclaims.
//!
//! Expiries are an index keyed by big-endian due time, like the order app's deadlines. The
//! runtime's `range` reads every entry between its bounds at once, so the sweep does not ask
//! for everything due: it walks the index from a stored cursor in windows of due time, halving
//! the window when one holds more than it may delete, doubling it while they hold few, and
//! starting narrow again once caught up. A punctuation thus reads about what it deletes, even
//! after a long pause has left hours of expiries due. Every expiry is due at or after the
//! cursor (`schedule_expiry` lowers it when needed).

use std::sync::OnceLock;

use pickple_domain::stock::Reservation;
use pickple_domain::Millis;
use pickple_runtime::{Context, ProcessError};
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::keys::{self, Entry};
use super::STORE;

/// The most keys one punctuation deletes (an expired reservation is two: it and its expiry).
pub const MAX_SWEEP_DELETES: usize = 2_000;

/// The first window of due time the sweep reads, and the widest.
const FIRST_WINDOW_MS: Millis = 1_000;
const WIDEST_WINDOW_MS: Millis = 3_600_000;

/// The cursor moves in memory on every punctuation, but is stored only when the sweep deleted
/// something or the cursor went this far: an idle task writes nothing.
const STORE_CURSOR_AFTER_MS: Millis = 3_600_000;

/// Where the expiry sweep goes on from: no expiry is due before `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub from: Millis,
    pub width: Millis,
}

fn pruned() -> &'static IntCounterVec {
    static C: OnceLock<IntCounterVec> = OnceLock::new();
    C.get_or_init(|| {
        register_int_counter_vec!(
            "pickple_stock_entries_pruned_total",
            "Store entries the stock app's punctuator deleted: final reservations past their retention, and counters of closed sales",
            &["kind"]
        )
        .expect("register pickple_stock_entries_pruned_total")
    })
}

/// Index a final reservation for deletion at `due`.
pub fn schedule_expiry(
    ctx: &mut Context<'_>,
    product_id: &str,
    order_id: &str,
    due: Millis,
) -> Result<(), ProcessError> {
    ctx.put(STORE, keys::expiry(due, product_id, order_id), &());
    match ctx.get::<Cursor>(STORE, keys::CURSOR)? {
        Some(c) if c.from <= due => {}
        known => ctx.put(
            STORE,
            keys::CURSOR,
            &Cursor {
                from: due.max(0),
                width: known.map_or(FIRST_WINDOW_MS, |c| c.width),
            },
        ),
    }
    Ok(())
}

/// One punctuation's sweep: expired reservations first, then closed sales' counters.
pub fn sweep(ctx: &mut Context<'_>) -> Result<(), ProcessError> {
    let now = ctx.now();
    let deleted = expire(ctx, now, MAX_SWEEP_DELETES)?;
    sweep_closed_sales(ctx, MAX_SWEEP_DELETES - deleted)?;
    Ok(())
}

/// Delete expiries due by `now` and their reservations, at most `budget` keys; returns how many.
pub fn expire(ctx: &mut Context<'_>, now: Millis, budget: usize) -> Result<usize, ProcessError> {
    let Some(start) = ctx.get::<Cursor>(STORE, keys::CURSOR)? else {
        return Ok(0);
    };
    let mut cur = start;
    let end = now.saturating_add(1);
    let mut deleted = 0;
    let mut reservations = 0;
    while cur.from < end {
        let room = (budget - deleted) / 2;
        if room == 0 {
            break;
        }
        let to = end.min(cur.from.saturating_add(cur.width));
        let due: Vec<(Vec<u8>, IgnoredAny)> =
            ctx.range(STORE, keys::expiry_bound(cur.from), keys::expiry_bound(to))?;
        let take = due.len().min(room);
        for (index, _) in &due[..take] {
            ctx.delete(STORE, index);
            deleted += 1;
            let Some(Entry::Expiry {
                product_id,
                order_id,
                ..
            }) = keys::parse(index)
            else {
                continue;
            };
            let key = keys::reservation(product_id, order_id);
            // Final reservations never change again; anything else is left alone.
            if ctx
                .get::<Reservation>(STORE, &key)?
                .is_some_and(|r| r.status.is_final())
            {
                ctx.delete(STORE, key);
                deleted += 1;
                reservations += 1;
            }
        }
        if take < due.len() {
            // More in this window than this punctuation may delete: go on from the last one
            // deleted next time, in a narrower window.
            if let Some(Entry::Expiry { due, .. }) = keys::parse(&due[take - 1].0) {
                cur.from = due;
            }
            cur.width = (cur.width / 2).max(1);
            break;
        }
        cur.from = to;
        if cur.from >= end {
            // Caught up: what falls due next falls due a punctuation at a time, and a backlog
            // (after a pause) is best met with a narrow window.
            cur.width = FIRST_WINDOW_MS;
        } else if due.len() <= room / 2 {
            cur.width = cur.width.saturating_mul(2).min(WIDEST_WINDOW_MS);
        }
    }
    if cur != start && (deleted > 0 || cur.from - start.from >= STORE_CURSOR_AFTER_MS) {
        ctx.put(STORE, keys::CURSOR, &cur);
    }
    if reservations > 0 {
        pruned()
            .with_label_values(&["reservation"])
            .inc_by(reservations as u64);
    }
    Ok(deleted)
}

/// Delete the counters of sales that are over (a product opened a new one), at most `budget`
/// keys; returns how many. A closed sale leaves at most as many counters as it had buyers
/// holding units when it was replaced, at most its quantity.
pub fn sweep_closed_sales(ctx: &mut Context<'_>, budget: usize) -> Result<usize, ProcessError> {
    if budget == 0 {
        return Ok(0);
    }
    let (from, to) = keys::closed_sales();
    let marked: Vec<(Vec<u8>, u32)> = ctx.range(STORE, from, to)?;
    let mut deleted = 0;
    for (marker, epoch) in marked {
        let Some(Entry::ClosedSale(product_id)) = keys::parse(&marker) else {
            ctx.delete(STORE, &marker);
            continue;
        };
        let (from, to) = keys::buyers_before(product_id, epoch);
        let stale: Vec<(Vec<u8>, IgnoredAny)> = ctx.range(STORE, from, to)?;
        let take = stale.len().min(budget - deleted);
        for (key, _) in &stale[..take] {
            ctx.delete(STORE, key);
        }
        deleted += take;
        pruned()
            .with_label_values(&["closed_sale_counter"])
            .inc_by(take as u64);
        if take == stale.len() {
            ctx.delete(STORE, &marker);
        }
        if deleted >= budget {
            break;
        }
    }
    Ok(deleted)
}
