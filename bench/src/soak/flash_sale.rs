//! The flash sale: from half a second before the opening on, every flash buyer fires orders for the
//! sale product at short random intervals, for up to `limit + 1` units each, without waiting for
//! the previous ones and without regard for the limit. The shop must enforce the opening time,
//! the sale quantity and the per-user limit; most accepted orders are paid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinSet;

use crate::buyer::{act, place_and_wait, Placement};
use crate::cli::Action;
use crate::ctx::Ctx;
use crate::setup::epoch_ms;

/// Run the flash buyers until `until` or until each placed `--flash-orders`; returns when every
/// order they placed is done.
pub async fn run(ctx: Arc<Ctx>, until: Instant) {
    let Some(product) = ctx.flash_product.clone() else {
        return;
    };
    // Just before the opening: the first orders must be refused (sale not open).
    if let Some(opens_at) = ctx.flash_opens_at {
        let early = (opens_at - 500 - epoch_ms()).max(0) as u64;
        let start = (Instant::now() + Duration::from_millis(early)).min(until);
        tokio::time::sleep_until(start.into()).await;
    }
    let mut buyers = JoinSet::new();
    for (i, buyer) in ctx.flash_buyers.iter().cloned().enumerate() {
        let ctx = ctx.clone();
        let product = product.clone();
        buyers.spawn(async move {
            let mut rng = ctx.rng(3, i as u64);
            let mut orders = JoinSet::new();
            for n in 0..ctx.cli.flash_orders {
                if Instant::now() >= until || ctx.stopping() {
                    break;
                }
                let qty = rng.random_range(1..=ctx.cli.flash_limit + 1);
                let action = match rng.random_range(0..10) {
                    0 => Action::Abandon,
                    1 => Action::Cancel,
                    _ => Action::Approve,
                };
                let Ok(permit) = ctx.inflight.clone().acquire_owned().await else {
                    break;
                };
                let (ctx2, buyer2, product2) = (ctx.clone(), buyer.clone(), product.clone());
                let mut order_rng = ctx.rng(4, (i as u64) << 32 | n as u64);
                orders.spawn(async move {
                    let intended = Instant::now();
                    let lines = vec![(product2, qty)];
                    if let Placement::Awaiting(p) =
                        place_and_wait(&ctx2, &buyer2, lines, intended, true, &mut order_rng).await
                    {
                        act(ctx2, buyer2, p, action).await;
                    }
                    drop(permit);
                });
                let pause = rng.random_range(50..400);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            while orders.join_next().await.is_some() {}
        });
    }
    while buyers.join_next().await.is_some() {}
}
