//! The stock app: the single writer of every product (stock levels, reservations, sale), keyed by
//! product id. Reserve answers the order saga on `order-replies` (keyed by order id); every
//! change publishes `view-products`. A product created is listed under its vendor
//! (`ProductListed` on `vendor-commands`, keyed by vendor id), so that the catalog app deletes it
//! (`DeleteProduct`) when the vendor is deleted. Only a public product that is not deleted is
//! sold.
//!
//! A refused Reserve is the order's business, not the product's: it is answered to the saga (the
//! order's view shows the reason) and leaves the product and its view untouched, so a flash sale
//! does not bury the product view under thousands of "sold out" versions. Every other refused
//! command is recorded in the product's view.
//!
//! A product is stored as several entries of the store (issue #18, docs/state.md): its own
//! value, whose size does not grow with orders, one entry per reservation and one per buyer of
//! the current sale ([`keys`]). A command loads the value and the entries it touches, the
//! domain decides, and what changed is written back ([`entries`]). Released and restocked
//! reservations are kept [`FINISHED_RESERVATION_RETENTION_MS`] against a redelivered Reserve,
//! then deleted by the punctuator ([`sweep`]).

pub mod entries;
pub mod keys;
pub mod listing;
#[cfg(test)]
mod store_tests;
pub mod sweep;

use pickple_domain::stock::{Product, ProductSlice, StockEffect};
use pickple_domain::{Aggregate, Millis};
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record, Route};
use pickple_schemas::topic::{
    ORDER_REPLIES, STOCK_COMMANDS, VENDOR_COMMANDS, VIEW_PRODUCTS, VIEW_SALE_TAKES,
};
use pickple_schemas::{SaleTakeView, StockCommand};
use pickple_topics::catalogue::app;

use crate::state::{checked_key, no_entity, store_changed, store_rejected};

pub use sweep::MAX_SWEEP_DELETES;

pub const STORE: &str = "products";

/// How long a released or restocked reservation is kept after it became final: while it is
/// there, a redelivered Reserve of its order is answered without taking the stock again.
/// Release, Commit and Restock of it are no-ops with or without it. Under exactly-once the saga
/// sends an order's Reserve once (docs/state.md, "Retention"), so this is a margin far beyond
/// any delay the runtime rides through (task timeout 5 min) and the payment timeout (5 min).
/// Committed reservations are kept until restocked: a Restock may come any time a paid order is
/// cancelled before its delivery starts.
pub const FINISHED_RESERVATION_RETENTION_MS: Millis = 60 * 60 * 1000;

pub fn spec() -> AppSpec {
    AppSpec::new(app::STOCK.name, &[STOCK_COMMANDS], &[STORE]).with_route(route)
}

/// Every entry of a product (its value, reservations, buyers' counters, expiries, a closed
/// sale's marker) goes with the product; the sweep's cursor and the listing's progress are the
/// task's own.
pub fn route<'k>(_store: &str, key: &'k [u8]) -> Route<'k> {
    use keys::Entry;
    match keys::parse(key) {
        Some(
            Entry::Product(product_id)
            | Entry::Reservation { product_id, .. }
            | Entry::Buyer { product_id, .. }
            | Entry::Expiry { product_id, .. }
            | Entry::ClosedSale(product_id),
        ) => Route::Key(product_id.as_bytes()),
        Some(Entry::Cursor | Entry::Listing) | None => Route::Stay,
    }
}

/// The stock processor of one task: keeps released and restocked reservations for
/// `retention_ms` (`PICKPLE_RESERVATION_RETENTION_MS`, default
/// [`FINISHED_RESERVATION_RETENTION_MS`]).
#[derive(Debug, Clone)]
pub struct StockProcessor {
    pub retention_ms: Millis,
    /// The products made before they were listed under their vendors, still to list.
    listing: listing::Backlog,
}

impl StockProcessor {
    pub fn new(retention_ms: Millis) -> Self {
        StockProcessor {
            retention_ms,
            listing: listing::Backlog::default(),
        }
    }
}

impl Default for StockProcessor {
    fn default() -> Self {
        StockProcessor::new(FINISHED_RESERVATION_RETENTION_MS)
    }
}

pub fn product_id(cmd: &StockCommand) -> &str {
    match cmd {
        StockCommand::CreateProduct { product_id, .. }
        | StockCommand::UpdateProduct { product_id, .. }
        | StockCommand::DeleteProduct { product_id }
        | StockCommand::SetStock { product_id, .. }
        | StockCommand::AddStock { product_id, .. }
        | StockCommand::OpenSale { product_id, .. }
        | StockCommand::CloseSale { product_id }
        | StockCommand::SetSaleQuantity { product_id, .. }
        | StockCommand::DeleteSale { product_id }
        | StockCommand::Reserve { product_id, .. }
        | StockCommand::Release { product_id, .. }
        | StockCommand::Commit { product_id, .. }
        | StockCommand::Restock { product_id, .. } => product_id,
    }
}

impl Processor for StockProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let cmd: StockCommand = record.decode()?;
        let key = checked_key(record, product_id(&cmd))?.to_string();
        let (before, version) = entries::load(ctx, &key, &cmd, self.retention_ms)?;
        let out = Product.handle(before.clone(), &cmd, ctx.now());
        match (&out.rejection, &before.state) {
            (Some(_), _) if matches!(cmd, StockCommand::Reserve { .. }) => {}
            (Some(rejection), Some(s)) => {
                let meta = store_rejected(ctx, STORE, &key, s, version, rejection);
                ctx.send_value(VIEW_PRODUCTS, &key, "ProductRejected", &s.to_view(&meta));
            }
            (Some(rejection), None) => return Err(no_entity("product", &key, rejection)),
            (None, _) if out.facts.is_empty() => {}
            (None, _) => {
                let after = &out.state;
                let state = after
                    .state
                    .as_ref()
                    .ok_or_else(|| ProcessError::Invalid("facts without a product".into()))?;
                if let Err(broken) = after.check_invariants() {
                    // decide guarantees the invariants; refuse to store a state that breaks them.
                    tracing::error!(product = %key, %broken, "stock invariant broken");
                    return Err(ProcessError::Invalid(format!("invariant broken: {broken}")));
                }
                let meta = store_changed(ctx, STORE, &key, state, version);
                ctx.send_value(VIEW_PRODUCTS, &key, "ProductUpdated", &state.to_view(&meta));
                entries::write_back(ctx, &key, &before, after, self.retention_ms)?;
                // Each buyer's count in the sale, for "how many have I taken". The product's
                // version is the record's: it grows with every change of the counter.
                for (username, epoch, taken) in ProductSlice::take_changes(&before, after) {
                    let view = SaleTakeView {
                        product_id: key.clone(),
                        username: username.clone(),
                        epoch,
                        taken,
                        updated_at: meta.updated_at,
                        version: meta.version,
                    };
                    let id = SaleTakeView::key(&key, &username);
                    // Keyed per (product, buyer): compaction keeps one record per buyer.
                    ctx.send_value(VIEW_SALE_TAKES, &id, "SaleTakeUpdated", &view);
                }
            }
        }
        for effect in &out.effects {
            match effect {
                // The answer to a Reserve, keyed by its order.
                StockEffect::Reply(reply) => ctx.send(ORDER_REPLIES, reply.order_id(), reply),
                // A new product, listed under its vendor by the catalog app.
                StockEffect::Vendor(command) => {
                    ctx.send(VENDOR_COMMANDS, command.vendor_id(), command)
                }
            }
        }
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        sweep::sweep(ctx)?;
        self.listing.list(ctx, listing::LISTING_BATCH)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::{OrderReply, ProductView, RecordHeaders, SaleTerms, VendorCommand};

    fn create(p: &str) -> StockCommand {
        StockCommand::CreateProduct {
            product_id: p.into(),
            vendor_id: "v1".into(),
            name: "Mug".into(),
            description: "a mug".into(),
            price: 1200,
            image_url: None,
            public: true,
        }
    }
    fn reserve(p: &str, order: &str, user: &str, q: u64) -> StockCommand {
        StockCommand::Reserve {
            product_id: p.into(),
            order_id: order.into(),
            username: user.into(),
            quantity: q,
            placed_at: 1_000,
        }
    }

    #[test]
    fn reserve_replies_keyed_by_order_and_views_keyed_by_product() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        d.pipe(STOCK_COMMANDS, "p1", &create("p1")).unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::SetStock {
                product_id: "p1".into(),
                quantity: 3,
            },
        )
        .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        let views = d.take_outputs(VIEW_PRODUCTS);
        assert!(views.iter().all(|o| o.key_str() == "p1"));
        let versions: Vec<u64> = views
            .iter()
            .map(|o| o.json()["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, vec![1, 2, 3]);
        let last: ProductView = serde_json::from_value(views[2].json()).unwrap();
        assert_eq!(last.stock.available, 1);
        assert_eq!(last.stock.reserved, 2);

        let replies = d.take_outputs(ORDER_REPLIES);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].key_str(), "o1");
        assert_eq!(replies[0].headers.event_type, "StockReserved");

        // A redelivered Reserve is answered again, without a second reservation or view.
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        assert!(d.take_outputs(VIEW_PRODUCTS).is_empty());
        let again: Vec<OrderReply> = d.take(ORDER_REPLIES);
        assert!(matches!(
            again[0],
            OrderReply::StockReserved { quantity: 2, .. }
        ));
    }

    #[test]
    fn refused_reserve_answers_the_saga_and_other_refusals_reach_the_view() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        d.pipe(STOCK_COMMANDS, "p1", &create("p1")).unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o1", "ann1", 1))
            .unwrap();
        let replies: Vec<OrderReply> = d.take(ORDER_REPLIES);
        assert!(
            matches!(&replies[0], OrderReply::StockRejected { reason, .. } if reason.contains("out of stock"))
        );
        // No product view for the refused reserve (only the create's).
        assert_eq!(d.take_outputs(VIEW_PRODUCTS).len(), 1);

        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::AddStock {
                request_id: None,
                product_id: "p1".into(),
                quantity: 0,
            },
        )
        .unwrap();
        let views: Vec<ProductView> = d.take(VIEW_PRODUCTS);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].version, 2);
        assert!(views[0].rejection.as_deref().unwrap().contains("positive"));
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::AddStock {
                request_id: None,
                product_id: "p1".into(),
                quantity: 5,
            },
        )
        .unwrap();
        let views: Vec<ProductView> = d.take(VIEW_PRODUCTS);
        assert_eq!(views[0].version, 3);
        assert_eq!(views[0].rejection, None);
    }

    #[test]
    fn a_private_product_is_not_sold_and_its_view_tells_nothing() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        let mut private = create("p1");
        if let StockCommand::CreateProduct { public, .. } = &mut private {
            *public = false;
        }
        d.pipe(STOCK_COMMANDS, "p1", &private).unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::SetStock {
                product_id: "p1".into(),
                quantity: 3,
            },
        )
        .unwrap();
        d.take_outputs(VIEW_PRODUCTS);
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o1", "ann1", 1))
            .unwrap();
        // Refused as a product that does not exist would be, keyed by the order, which the saga
        // then cancels with that reason.
        d.pipe(STOCK_COMMANDS, "p9", &reserve("p9", "o2", "ann1", 1))
            .unwrap();
        let replies = d.take_outputs(ORDER_REPLIES);
        let keys: Vec<&str> = replies.iter().map(|o| o.key_str()).collect();
        assert_eq!(keys, ["o1", "o2"]);
        let reasons: Vec<String> = replies
            .iter()
            .map(
                |o| match pickple_schemas::decode(o.value.as_deref()).unwrap() {
                    OrderReply::StockRejected { reason, .. } => reason,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(reasons[0], "not found: no such product");
        assert_eq!(reasons[0], reasons[1]);
        // Nothing reserved, no new view.
        assert!(d.take_outputs(VIEW_PRODUCTS).is_empty());
        let stored: crate::state::Versioned<pickple_domain::stock::ProductState> =
            d.get(STORE, "p1").unwrap();
        assert_eq!(
            (stored.state.stock.available, stored.state.stock.reserved),
            (3, 0)
        );
    }

    #[test]
    fn a_new_product_is_listed_under_its_vendor_once() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        d.pipe(STOCK_COMMANDS, "p1", &create("p1")).unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &create("p1")).unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::AddStock {
                request_id: None,
                product_id: "p1".into(),
                quantity: 1,
            },
        )
        .unwrap();
        let listed = d.take_outputs(VENDOR_COMMANDS);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].key_str(), "v1");
        assert_eq!(listed[0].headers.event_type, "ProductListed");
        assert_eq!(
            pickple_schemas::decode::<VendorCommand>(listed[0].value.as_deref()).unwrap(),
            VendorCommand::ProductListed {
                vendor_id: "v1".into(),
                product_id: "p1".into(),
            }
        );
    }

    #[test]
    fn sale_limits_are_enforced_through_the_app() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        d.pipe(STOCK_COMMANDS, "p1", &create("p1")).unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::SetStock {
                product_id: "p1".into(),
                quantity: 10,
            },
        )
        .unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::OpenSale {
                product_id: "p1".into(),
                sale: SaleTerms {
                    opens_at: 0,
                    closes_at: 10_000,
                    quantity: 3,
                    per_user_limit: 2,
                },
            },
        )
        .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o2", "ann1", 1))
            .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o3", "bob1", 2))
            .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o4", "bob1", 1))
            .unwrap();
        let replies: Vec<OrderReply> = d.take(ORDER_REPLIES);
        let ok: Vec<bool> = replies
            .iter()
            .map(|r| matches!(r, OrderReply::StockReserved { .. }))
            .collect();
        assert_eq!(ok, vec![true, false, false, true]);
    }

    #[test]
    fn buyers_counts_are_published_per_buyer_and_an_early_close_stops_reserves() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        d.pipe(STOCK_COMMANDS, "p1", &create("p1")).unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::SetStock {
                product_id: "p1".into(),
                quantity: 10,
            },
        )
        .unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::OpenSale {
                product_id: "p1".into(),
                sale: SaleTerms {
                    opens_at: 0,
                    closes_at: 10_000,
                    quantity: 5,
                    per_user_limit: 3,
                },
            },
        )
        .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::Release {
                product_id: "p1".into(),
                order_id: "o1".into(),
            },
        )
        .unwrap();
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o2", "ann1", 1))
            .unwrap();
        let takes = d.take_outputs(VIEW_SALE_TAKES);
        assert!(takes.iter().all(|o| o.key_str() == "p1/ann1"), "{takes:?}");
        let seen: Vec<(u64, u64)> = takes
            .iter()
            .map(|o| {
                let v: SaleTakeView = serde_json::from_value(o.json()).unwrap();
                (v.taken, v.version)
            })
            .collect();
        // The product's versions: create 1, stock 2, sale 3, then one per change.
        assert_eq!(seen, vec![(2, 4), (0, 5), (1, 6)]);

        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::CloseSale {
                product_id: "p1".into(),
            },
        )
        .unwrap();
        let views: Vec<ProductView> = d.take(VIEW_PRODUCTS);
        let sale = views.last().unwrap().sale.clone().unwrap();
        assert_eq!(
            (sale.closed_at, sale.taken, sale.epoch),
            (Some(1_000), 1, 1)
        );
        d.take_outputs(ORDER_REPLIES);
        d.pipe(STOCK_COMMANDS, "p1", &reserve("p1", "o3", "bob1", 1))
            .unwrap();
        let replies: Vec<OrderReply> = d.take(ORDER_REPLIES);
        assert!(
            matches!(&replies[0], OrderReply::StockRejected { reason, .. } if reason.contains("closed")),
            "{replies:?}"
        );
        assert!(d.take_outputs(VIEW_SALE_TAKES).is_empty());
        // Deleting a sale that has opened is refused, and the product's view says why.
        d.pipe(
            STOCK_COMMANDS,
            "p1",
            &StockCommand::DeleteSale {
                product_id: "p1".into(),
            },
        )
        .unwrap();
        let views: Vec<ProductView> = d.take(VIEW_PRODUCTS);
        assert!(views[0].rejection.as_deref().unwrap().contains("opened"));
        assert!(views[0].sale.is_some());
    }

    #[test]
    fn garbage_and_mis_keyed_records_go_to_the_dlq() {
        let mut d = TestDriver::new(StockProcessor::default(), 1_000);
        d.pipe_raw(
            STOCK_COMMANDS,
            Some(b"p1"),
            Some(b"{not json"),
            RecordHeaders::new("X", "c1"),
        )
        .unwrap();
        d.pipe(STOCK_COMMANDS, "p2", &create("p1")).unwrap();
        // A command for a product that does not exist has no view: dead letter with the reason.
        d.pipe(
            STOCK_COMMANDS,
            "p9",
            &StockCommand::AddStock {
                request_id: None,
                product_id: "p9".into(),
                quantity: 1,
            },
        )
        .unwrap();
        let reasons: Vec<&str> = d.dead_letters().iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[1].contains("does not match"));
        assert!(reasons[2].contains("no such product"));
        assert!(d.take_outputs(VIEW_PRODUCTS).is_empty());
    }
}
