//! The stock app: the single writer of every product (stock levels, reservations, sale), keyed by
//! product id. Reserve answers the order saga on `order-replies` (keyed by order id); every
//! change publishes `view-products`.
//!
//! A refused Reserve is the order's business, not the product's: it is answered to the saga (the
//! order's view shows the reason) and leaves the product and its view untouched, so a flash sale
//! does not bury the product view under thousands of "sold out" versions. Every other refused
//! command is recorded in the product's view.

use pickple_domain::stock::{self, ProductState};
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::StockCommand;

use crate::state::{checked_key, load, no_entity, store_changed, store_rejected};

pub const STORE: &str = "products";
pub const INPUT: &str = "stock-commands";
pub const VIEW: &str = "view-products";
pub const REPLIES: &str = "order-replies";

pub fn spec() -> AppSpec {
    AppSpec::new("stock", &[INPUT], &[STORE])
}

pub struct StockProcessor;

pub fn product_id(cmd: &StockCommand) -> &str {
    match cmd {
        StockCommand::CreateProduct { product_id, .. }
        | StockCommand::UpdateProduct { product_id, .. }
        | StockCommand::DeleteProduct { product_id }
        | StockCommand::SetStock { product_id, .. }
        | StockCommand::AddStock { product_id, .. }
        | StockCommand::OpenSale { product_id, .. }
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
        let (state, version) = load::<ProductState>(ctx, STORE, &key)?;
        let decided = stock::decide(state.as_ref(), &cmd, ctx.now());

        let after = match &decided {
            Ok(facts) if !facts.is_empty() => {
                let after = facts
                    .iter()
                    .fold(state.clone(), stock::apply)
                    .ok_or_else(|| ProcessError::Invalid("facts without a product".into()))?;
                if let Err(broken) = after.check_invariants() {
                    // decide guarantees the invariants; refuse to store a state that breaks them.
                    tracing::error!(product = %key, %broken, "stock invariant broken");
                    return Err(ProcessError::Invalid(format!("invariant broken: {broken}")));
                }
                let meta = store_changed(ctx, STORE, &key, &after, version);
                ctx.send_value(VIEW, &key, "ProductUpdated", &after.to_view(&meta));
                Some(after)
            }
            Ok(_) => state.clone(),
            Err(rejection) => {
                match (&cmd, &state) {
                    (StockCommand::Reserve { .. }, _) => {}
                    (_, Some(s)) => {
                        let meta = store_rejected(ctx, STORE, &key, s, version, rejection);
                        ctx.send_value(VIEW, &key, "ProductRejected", &s.to_view(&meta));
                    }
                    (_, None) => return Err(no_entity("product", &key, rejection)),
                }
                state.clone()
            }
        };

        if let StockCommand::Reserve { order_id, .. } = &cmd {
            let reply =
                stock::reserve_reply(after.as_ref(), &key, order_id, decided.as_ref().err());
            ctx.send(REPLIES, order_id, &reply);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::{OrderReply, ProductView, RecordHeaders, SaleTerms};

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
        let mut d = TestDriver::new(StockProcessor, 1_000);
        d.pipe(INPUT, "p1", &create("p1")).unwrap();
        d.pipe(
            INPUT,
            "p1",
            &StockCommand::SetStock {
                product_id: "p1".into(),
                quantity: 3,
            },
        )
        .unwrap();
        d.pipe(INPUT, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        let views = d.take_outputs(VIEW);
        assert!(views.iter().all(|o| o.key_str() == "p1"));
        let versions: Vec<u64> = views
            .iter()
            .map(|o| o.json()["version"].as_u64().unwrap())
            .collect();
        assert_eq!(versions, vec![1, 2, 3]);
        let last: ProductView = serde_json::from_value(views[2].json()).unwrap();
        assert_eq!(last.stock.available, 1);
        assert_eq!(last.stock.reserved, 2);

        let replies = d.take_outputs(REPLIES);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].key_str(), "o1");
        assert_eq!(replies[0].headers.event_type, "StockReserved");

        // A redelivered Reserve is answered again, without a second reservation or view.
        d.pipe(INPUT, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        assert!(d.take_outputs(VIEW).is_empty());
        let again: Vec<OrderReply> = d.take(REPLIES);
        assert!(matches!(
            again[0],
            OrderReply::StockReserved { quantity: 2, .. }
        ));
    }

    #[test]
    fn refused_reserve_answers_the_saga_and_other_refusals_reach_the_view() {
        let mut d = TestDriver::new(StockProcessor, 1_000);
        d.pipe(INPUT, "p1", &create("p1")).unwrap();
        d.pipe(INPUT, "p1", &reserve("p1", "o1", "ann1", 1))
            .unwrap();
        let replies: Vec<OrderReply> = d.take(REPLIES);
        assert!(
            matches!(&replies[0], OrderReply::StockRejected { reason, .. } if reason.contains("out of stock"))
        );
        // No product view for the refused reserve (only the create's).
        assert_eq!(d.take_outputs(VIEW).len(), 1);

        d.pipe(
            INPUT,
            "p1",
            &StockCommand::AddStock {
                product_id: "p1".into(),
                quantity: 0,
            },
        )
        .unwrap();
        let views: Vec<ProductView> = d.take(VIEW);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].version, 2);
        assert!(views[0].rejection.as_deref().unwrap().contains("positive"));
        d.pipe(
            INPUT,
            "p1",
            &StockCommand::AddStock {
                product_id: "p1".into(),
                quantity: 5,
            },
        )
        .unwrap();
        let views: Vec<ProductView> = d.take(VIEW);
        assert_eq!(views[0].version, 3);
        assert_eq!(views[0].rejection, None);
    }

    #[test]
    fn sale_limits_are_enforced_through_the_app() {
        let mut d = TestDriver::new(StockProcessor, 1_000);
        d.pipe(INPUT, "p1", &create("p1")).unwrap();
        d.pipe(
            INPUT,
            "p1",
            &StockCommand::SetStock {
                product_id: "p1".into(),
                quantity: 10,
            },
        )
        .unwrap();
        d.pipe(
            INPUT,
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
        d.pipe(INPUT, "p1", &reserve("p1", "o1", "ann1", 2))
            .unwrap();
        d.pipe(INPUT, "p1", &reserve("p1", "o2", "ann1", 1))
            .unwrap();
        d.pipe(INPUT, "p1", &reserve("p1", "o3", "bob1", 2))
            .unwrap();
        d.pipe(INPUT, "p1", &reserve("p1", "o4", "bob1", 1))
            .unwrap();
        let replies: Vec<OrderReply> = d.take(REPLIES);
        let ok: Vec<bool> = replies
            .iter()
            .map(|r| matches!(r, OrderReply::StockReserved { .. }))
            .collect();
        assert_eq!(ok, vec![true, false, false, true]);
    }

    #[test]
    fn garbage_and_mis_keyed_records_go_to_the_dlq() {
        let mut d = TestDriver::new(StockProcessor, 1_000);
        d.pipe_raw(
            INPUT,
            Some(b"p1"),
            Some(b"{not json"),
            RecordHeaders::new("X", "c1"),
        )
        .unwrap();
        d.pipe(INPUT, "p2", &create("p1")).unwrap();
        // A command for a product that does not exist has no view: dead letter with the reason.
        d.pipe(
            INPUT,
            "p9",
            &StockCommand::AddStock {
                product_id: "p9".into(),
                quantity: 1,
            },
        )
        .unwrap();
        let reasons: Vec<&str> = d.dead_letters().iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[1].contains("does not match"));
        assert!(reasons[2].contains("no such product"));
        assert!(d.take_outputs(VIEW).is_empty());
    }
}
