//! Loading the slice of a product a command needs, and writing back what changed (layout in
//! [`super::keys`] and docs/state.md).

use pickple_domain::stock::{order_of, Legacy, ProductSlice, ProductState, Reservation};
use pickple_domain::Millis;
use pickple_runtime::{Context, ProcessError};
use pickple_schemas::StockCommand;

use super::keys::{self, Entry};
use super::sweep::schedule_expiry;
use super::STORE;
use crate::state::Versioned;

fn epoch(p: &ProductSlice) -> Option<u32> {
    p.state.as_ref()?.sale.as_ref().map(|s| s.epoch)
}

/// The product's value and the entries `cmd` touches: its order's reservation, and the
/// counter of the buyer it names (every counter of the sale for an OpenSale that lowers the
/// limit). Returns the slice and the view version (0 when there is no product).
///
/// A value written before issue #18 is split here, on the first command that loads it: its
/// reservations and counters go to their own keys (final reservations with an expiry) and the
/// slim value is written back, whatever the command then does.
pub fn load(
    ctx: &mut Context<'_>,
    product_id: &str,
    cmd: &StockCommand,
    retention_ms: Millis,
) -> Result<(ProductSlice, u64), ProcessError> {
    let Some(mut stored) = ctx.get::<Versioned<ProductState>>(STORE, product_id)? else {
        return Ok((ProductSlice::default(), 0));
    };
    let legacy = stored.state.split_legacy();
    if !legacy.is_empty() {
        migrate(ctx, product_id, &stored, legacy, retention_ms)?;
    }
    let version = stored.version;
    let mut slice = ProductSlice::new(Some(stored.state));
    if let Some(order_id) = order_of(cmd) {
        if let Some(r) = ctx.get::<Reservation>(STORE, keys::reservation(product_id, order_id))? {
            slice.reservations.insert(order_id.to_string(), r);
        }
    }
    if let Some(epoch) = epoch(&slice) {
        if slice.needs_every_buyer(cmd, ctx.now()) {
            let (from, to) = keys::buyers_of(product_id, epoch);
            for (key, n) in ctx.range::<u64>(STORE, from, to)? {
                if let Some(Entry::Buyer { username, .. }) = keys::parse(&key) {
                    slice.buyers.insert(username.to_string(), n);
                }
            }
        } else if let Some(buyer) = slice.buyer_of(cmd).map(str::to_string) {
            if let Some(n) = ctx.get::<u64>(STORE, keys::buyer(product_id, epoch, &buyer))? {
                slice.buyers.insert(buyer, n);
            }
        }
    }
    Ok((slice, version))
}

/// Move what an old value carried inline to keys of its own and store the slim value (same
/// version: the view does not change). The final reservations get their expiry one
/// millisecond apart, so the sweep meets them spread over time rather than all at one instant.
fn migrate(
    ctx: &mut Context<'_>,
    product_id: &str,
    slim: &Versioned<ProductState>,
    legacy: Legacy,
    retention_ms: Millis,
) -> Result<(), ProcessError> {
    ctx.put(STORE, product_id, slim);
    let due = ctx.now().saturating_add(retention_ms);
    let mut finals: Millis = 0;
    for (order_id, r) in &legacy.reservations {
        ctx.put(STORE, keys::reservation(product_id, order_id), r);
        if r.status.is_final() {
            schedule_expiry(ctx, product_id, order_id, due.saturating_add(finals))?;
            finals += 1;
        }
    }
    if let Some(sale) = &slim.state.sale {
        for (username, n) in legacy.buyers.iter().filter(|(_, n)| **n > 0) {
            ctx.put(STORE, keys::buyer(product_id, sale.epoch, username), n);
        }
    }
    tracing::info!(
        product = %product_id,
        reservations = legacy.reservations.len(),
        buyers = legacy.buyers.len(),
        "moved the product's reservations and sale counters to keys of their own"
    );
    Ok(())
}

/// Write the entries that changed between the slice as loaded and after the facts: the
/// reservation (indexed for expiry when it becomes final), the buyers' counters (deleted at
/// zero), and, when a new sale replaces one, a marker to sweep the old sale's counters.
pub fn write_back(
    ctx: &mut Context<'_>,
    product_id: &str,
    before: &ProductSlice,
    after: &ProductSlice,
    retention_ms: Millis,
) -> Result<(), ProcessError> {
    for (order_id, r) in &after.reservations {
        let was = before.reservations.get(order_id);
        if was == Some(r) {
            continue;
        }
        ctx.put(STORE, keys::reservation(product_id, order_id), r);
        if r.status.is_final() && !was.is_some_and(|w| w.status.is_final()) {
            let due = ctx.now().saturating_add(retention_ms);
            schedule_expiry(ctx, product_id, order_id, due)?;
        }
    }
    let (old, new) = (epoch(before), epoch(after));
    if let Some(new) = new {
        for (username, n) in &after.buyers {
            if old != Some(new) || before.buyers.get(username) != Some(n) {
                ctx.put(STORE, keys::buyer(product_id, new, username), n);
            }
        }
    }
    if let Some(old) = old {
        for username in before.buyers.keys() {
            if new != Some(old) || !after.buyers.contains_key(username) {
                ctx.delete(STORE, keys::buyer(product_id, old, username));
            }
        }
        if new.is_some_and(|new| new != old) {
            ctx.put(STORE, keys::closed_sale(product_id), &new);
        }
    }
    Ok(())
}
