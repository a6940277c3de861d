//! The catalog app: vendors, keyed by vendor id, from `vendor-commands` to `view-vendors`.
//!
//! It also keeps, per vendor, the products the stock app created under it (`ProductListed`
//! from the stock app, one store entry per product: [`keys`]), and deletes them when the vendor
//! is deleted: a `DeleteProduct` per product on `stock-commands`, keyed by product id, to the
//! product's only writer. A product listed under a vendor that is already deleted is deleted at
//! once. The rules are the domain's ([`pickple_domain::vendor`]).

use pickple_domain::vendor::{Vendor, VendorSlice, VendorState};
use pickple_domain::Aggregate;
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record, Route};
use pickple_schemas::topic::{STOCK_COMMANDS, VENDOR_COMMANDS, VIEW_VENDORS};
use pickple_schemas::VendorCommand;
use pickple_topics::catalogue::app;
use serde::de::IgnoredAny;

use crate::state::{checked_key, load, no_entity, store_changed, store_rejected};

pub const STORE: &str = "vendors";

pub fn spec() -> AppSpec {
    AppSpec::new(app::CATALOG.name, &[VENDOR_COMMANDS], &[STORE]).with_route(route)
}

/// A vendor and the products listed under it go with the vendor.
pub fn route<'k>(_store: &str, key: &'k [u8]) -> Route<'k> {
    match keys::vendor_of(key) {
        Some(vendor_id) => Route::Key(vendor_id),
        None => Route::Stay,
    }
}

/// The keys of the store `vendors` (docs/state.md).
///
/// | key | value |
/// |---|---|
/// | `<vendor id>` | the vendor ([`crate::state::Versioned`] of a `VendorState`) |
/// | `FF 'p' <vendor id> FF <product id>` | `null`: the product is listed under the vendor |
///
/// `0xFF` occurs in no UTF-8 text, and record keys (so vendor and product ids) are UTF-8: no
/// vendor id can name a listing entry, and the range of vendor `v1` (`FF 'p' v1 FF` ...) never
/// reaches a product of vendor `v10` or `v1/x`.
pub mod keys {
    const MARK: u8 = 0xFF;
    const LISTED: u8 = b'p';

    fn prefix(vendor_id: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(vendor_id.len() + 3);
        k.extend_from_slice(&[MARK, LISTED]);
        k.extend_from_slice(vendor_id.as_bytes());
        k.push(MARK);
        k
    }

    /// The entry of a product listed under a vendor.
    pub fn listed(vendor_id: &str, product_id: &str) -> Vec<u8> {
        let mut k = prefix(vendor_id);
        k.extend_from_slice(product_id.as_bytes());
        k
    }

    /// The range of every product listed under a vendor: a product id holds no `0xFF`, so
    /// every entry sorts below the prefix followed by `0xFF`.
    pub fn listed_under(vendor_id: &str) -> (Vec<u8>, Vec<u8>) {
        let from = prefix(vendor_id);
        let mut to = from.clone();
        to.push(MARK);
        (from, to)
    }

    /// The vendor id a key of the store belongs to: the key itself for a vendor, the vendor
    /// named in a listing entry; `None` for a key this layout never writes.
    pub fn vendor_of(key: &[u8]) -> Option<&[u8]> {
        match key {
            [MARK, LISTED, rest @ ..] => {
                let end = rest.iter().position(|b| *b == MARK)?;
                Some(&rest[..end])
            }
            [MARK, ..] => None,
            _ => Some(key),
        }
    }

    /// The product id of an entry of `listed_under(vendor_id)`.
    pub fn product_of<'k>(vendor_id: &str, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(prefix(vendor_id).as_slice())?;
        std::str::from_utf8(rest).ok()
    }
}

pub struct CatalogProcessor;

/// The vendor's value and the listed products `cmd` reads: the one a `ProductListed` names (if
/// listed), every one for the deletion of a live vendor. Returns the slice and the view version.
fn load_slice(
    ctx: &Context<'_>,
    vendor_id: &str,
    cmd: &VendorCommand,
) -> Result<(VendorSlice, u64), ProcessError> {
    let (vendor, version) = load::<VendorState>(ctx, STORE, vendor_id)?;
    let mut slice = VendorSlice::new(vendor);
    if let Some(product_id) = VendorSlice::product_of(cmd) {
        let entry = ctx.get::<IgnoredAny>(STORE, keys::listed(vendor_id, product_id))?;
        if entry.is_some() {
            slice.products.insert(product_id.to_string());
        }
    } else if slice.needs_every_product(cmd) {
        let (from, to) = keys::listed_under(vendor_id);
        for (key, _) in ctx.range::<IgnoredAny>(STORE, from, to)? {
            if let Some(product_id) = keys::product_of(vendor_id, &key) {
                slice.products.insert(product_id.to_string());
            }
        }
    }
    Ok((slice, version))
}

impl Processor for CatalogProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let cmd: VendorCommand = record.decode()?;
        let key = checked_key(record, cmd.vendor_id())?.to_string();
        let (before, version) = load_slice(ctx, &key, &cmd)?;
        let out = Vendor.handle(before.clone(), &cmd, ctx.now());
        if let Some(rejection) = &out.rejection {
            // A refused listing is not the manager's doing and has no place on the vendor's
            // view (only the stock app sends one, for a product it created under a vendor the
            // gateway saw): like a command for a vendor that does not exist, a dead letter.
            let vendor = match (&cmd, &before.vendor) {
                (VendorCommand::ProductListed { product_id, .. }, _) => {
                    return Err(ProcessError::Invalid(format!(
                        "product {product_id} listed under vendor {key}: {rejection}"
                    )))
                }
                (_, None) => return Err(no_entity("vendor", &key, rejection)),
                (_, Some(vendor)) => vendor,
            };
            let meta = store_rejected(ctx, STORE, &key, vendor, version, rejection);
            ctx.send_value(VIEW_VENDORS, &key, "VendorRejected", &vendor.to_view(&meta));
            return Ok(());
        }
        // The listed products: an entry per product, written or deleted as the slice changed.
        for product_id in out.state.products.difference(&before.products) {
            ctx.put(STORE, keys::listed(&key, product_id), &());
        }
        for product_id in before.products.difference(&out.state.products) {
            ctx.delete(STORE, keys::listed(&key, product_id));
        }
        // Deletions of the vendor's products, each keyed by its product.
        for command in &out.effects {
            ctx.send(STOCK_COMMANDS, crate::stock::product_id(command), command);
        }
        if out.state.vendor != before.vendor {
            let vendor = out
                .state
                .vendor
                .as_ref()
                .ok_or_else(|| ProcessError::Invalid("facts without a vendor".into()))?;
            let meta = store_changed(ctx, STORE, &key, vendor, version);
            ctx.send_value(VIEW_VENDORS, &key, "VendorUpdated", &vendor.to_view(&meta));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stock::{self, StockProcessor};
    use pickple_runtime::{Output, TestDriver};
    use pickple_schemas::topic::{ORDER_REPLIES, VIEW_PRODUCTS};
    use pickple_schemas::{OrderReply, ProductView, StockCommand, VendorView};

    fn create_vendor(id: &str) -> VendorCommand {
        VendorCommand::CreateVendor {
            vendor_id: id.into(),
            name: "Mugs".into(),
            manager: "vm01".into(),
        }
    }
    fn delete_vendor(id: &str) -> VendorCommand {
        VendorCommand::DeleteVendor {
            vendor_id: id.into(),
        }
    }
    fn listed(vendor: &str, product: &str) -> VendorCommand {
        VendorCommand::ProductListed {
            vendor_id: vendor.into(),
            product_id: product.into(),
        }
    }
    fn create_product(product: &str, vendor: &str) -> StockCommand {
        StockCommand::CreateProduct {
            product_id: product.into(),
            vendor_id: vendor.into(),
            name: "Mug".into(),
            description: "a mug".into(),
            price: 1200,
            image_url: None,
            public: true,
        }
    }
    fn reserve(product: &str, order: &str) -> StockCommand {
        StockCommand::Reserve {
            product_id: product.into(),
            order_id: order.into(),
            username: "ann1".into(),
            quantity: 1,
            placed_at: 1_000,
        }
    }

    type Listings = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

    /// The catalog task, with a copy of every listing entry of its store after each step.
    struct Probe(Listings);

    impl Processor for Probe {
        fn process(
            &mut self,
            ctx: &mut Context<'_>,
            record: &Record<'_>,
        ) -> Result<(), ProcessError> {
            CatalogProcessor.process(ctx, record)?;
            let all = ctx.range::<()>(STORE, [0xFF, b'p'], [0xFF, b'q'])?;
            *self.0.lock().unwrap() = all.into_iter().map(|(k, ())| k).collect();
            Ok(())
        }
    }

    struct Catalog {
        d: TestDriver<Probe>,
        listings: Listings,
    }

    impl Catalog {
        fn new() -> Catalog {
            let listings = Listings::default();
            Catalog {
                d: TestDriver::new(Probe(listings.clone()), 1_000),
                listings,
            }
        }
        fn pipe(&mut self, cmd: &VendorCommand) {
            self.d.pipe(VENDOR_COMMANDS, cmd.vendor_id(), cmd).unwrap();
        }
        fn listed(&self, vendor: &str, product: &str) -> bool {
            self.listings
                .lock()
                .unwrap()
                .contains(&keys::listed(vendor, product))
        }
    }
    fn deletions(outputs: &[Output]) -> Vec<(String, String)> {
        outputs
            .iter()
            .map(|o| {
                let cmd: StockCommand = pickple_schemas::decode(o.value.as_deref()).unwrap();
                let StockCommand::DeleteProduct { product_id } = cmd else {
                    panic!("{cmd:?}")
                };
                assert_eq!(o.headers.event_type, "DeleteProduct");
                (o.key_str().to_string(), product_id)
            })
            .collect()
    }

    #[test]
    fn listed_products_are_deleted_with_their_vendor_and_never_twice() {
        let mut c = Catalog::new();
        c.pipe(&create_vendor("v1"));
        c.pipe(&create_vendor("v10"));
        c.pipe(&listed("v1", "p1"));
        c.pipe(&listed("v1", "p2"));
        c.pipe(&listed("v10", "p9"));
        // Redelivered: nothing stored again, nothing sent, the vendor's view untouched.
        c.pipe(&listed("v1", "p1"));
        assert!(c.listed("v1", "p1") && c.listed("v1", "p2") && c.listed("v10", "p9"));
        let views: Vec<VendorView> = c.d.take(VIEW_VENDORS);
        assert_eq!(views.len(), 2, "only the two creations show");
        assert!(c.d.take_outputs(STOCK_COMMANDS).is_empty());

        c.pipe(&delete_vendor("v1"));
        assert_eq!(
            deletions(&c.d.take_outputs(STOCK_COMMANDS)),
            [("p1".into(), "p1".into()), ("p2".into(), "p2".into())],
            "each keyed by its product; v10's products untouched"
        );
        let views: Vec<VendorView> = c.d.take(VIEW_VENDORS);
        assert_eq!(views.len(), 1);
        assert!(views[0].deleted && views[0].version == 2);
        assert!(!c.listed("v1", "p1") && !c.listed("v1", "p2"));
        assert!(c.listed("v10", "p9"));

        // A redelivered deletion deletes nothing again.
        c.pipe(&delete_vendor("v1"));
        assert!(c.d.take_outputs(STOCK_COMMANDS).is_empty());
        assert!(c.d.take_outputs(VIEW_VENDORS).is_empty());
        assert!(c.d.dead_letters().is_empty());
    }

    #[test]
    fn a_product_listed_after_its_vendor_was_deleted_is_deleted_at_once() {
        let mut c = Catalog::new();
        c.pipe(&create_vendor("v1"));
        c.pipe(&delete_vendor("v1"));
        c.d.take_outputs(VIEW_VENDORS);
        c.pipe(&listed("v1", "p3"));
        assert_eq!(
            deletions(&c.d.take_outputs(STOCK_COMMANDS)),
            [("p3".into(), "p3".into())]
        );
        // Nothing kept for it, and the vendor's view is untouched.
        assert!(!c.listed("v1", "p3"));
        assert!(c.d.take_outputs(VIEW_VENDORS).is_empty());
        // A listing for a vendor that does not exist is nobody's: a dead letter, as is one
        // without a product id (neither lands on a vendor's view).
        c.pipe(&listed("v9", "p4"));
        c.pipe(&create_vendor("v2"));
        c.pipe(&listed("v2", " "));
        let reasons: Vec<&str> =
            c.d.dead_letters()
                .iter()
                .map(|l| l.reason.as_str())
                .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("no such vendor") && reasons[1].contains("product id"));
        assert!(c.d.take_outputs(STOCK_COMMANDS).is_empty());
        let views: Vec<VendorView> = c.d.take(VIEW_VENDORS);
        assert_eq!(views.len(), 1, "v2's creation only");
    }

    /// The catalog and stock apps, each on its own driver, with the records each sends the other
    /// delivered by hand.
    struct Shop {
        catalog: Catalog,
        stock: TestDriver<StockProcessor>,
    }

    impl Shop {
        fn new() -> Shop {
            Shop {
                catalog: Catalog::new(),
                stock: TestDriver::new(StockProcessor::default(), 1_000),
            }
        }
        fn vendor(&mut self, cmd: &VendorCommand) {
            self.catalog.pipe(cmd);
        }
        fn stock(&mut self, cmd: &StockCommand) {
            self.stock
                .pipe(STOCK_COMMANDS, stock::product_id(cmd), cmd)
                .unwrap();
        }
        /// Take what each app sent the other, without delivering it yet.
        fn in_flight(&mut self) -> (Vec<Output>, Vec<Output>) {
            (
                self.stock.take_outputs(VENDOR_COMMANDS),
                self.catalog.d.take_outputs(STOCK_COMMANDS),
            )
        }
        fn deliver(&mut self, to_catalog: &[Output], to_stock: &[Output]) {
            for o in to_catalog {
                let (key, value) = (Some(o.key.as_slice()), o.value.as_deref());
                self.catalog
                    .d
                    .pipe_raw(VENDOR_COMMANDS, key, value, o.headers.clone())
                    .unwrap();
            }
            for o in to_stock {
                let (key, value) = (Some(o.key.as_slice()), o.value.as_deref());
                self.stock
                    .pipe_raw(STOCK_COMMANDS, key, value, o.headers.clone())
                    .unwrap();
            }
        }
        /// Deliver until neither app has anything more for the other.
        fn settle(&mut self) {
            loop {
                let (to_catalog, to_stock) = self.in_flight();
                if to_catalog.is_empty() && to_stock.is_empty() {
                    return;
                }
                self.deliver(&to_catalog, &to_stock);
            }
        }
        fn product(&mut self) -> ProductView {
            self.stock.take::<ProductView>(VIEW_PRODUCTS).pop().unwrap()
        }
        fn reply(&mut self, cmd: &StockCommand) -> OrderReply {
            self.stock(cmd);
            self.stock.take::<OrderReply>(ORDER_REPLIES).pop().unwrap()
        }
    }

    fn stocked(shop: &mut Shop, product: &str, vendor: &str) {
        shop.stock(&create_product(product, vendor));
        shop.stock(&StockCommand::SetStock {
            product_id: product.into(),
            quantity: 5,
        });
    }

    #[test]
    fn the_products_of_a_deleted_vendor_are_deleted_and_no_longer_sold() {
        let mut shop = Shop::new();
        shop.vendor(&create_vendor("v1"));
        stocked(&mut shop, "p1", "v1");
        stocked(&mut shop, "p2", "v1");
        shop.settle();
        assert!(matches!(
            shop.reply(&reserve("p1", "o1")),
            OrderReply::StockReserved { .. }
        ));
        shop.stock.take_outputs(VIEW_PRODUCTS);

        shop.vendor(&delete_vendor("v1"));
        shop.settle();
        let views: Vec<ProductView> = shop.stock.take(VIEW_PRODUCTS);
        let deleted: Vec<(&str, bool)> = views
            .iter()
            .map(|v| (v.product_id.as_str(), v.deleted))
            .collect();
        assert_eq!(deleted, [("p1", true), ("p2", true)]);
        // An order placed now is refused with the reason, which cancels it (the saga's path for
        // any refused Reserve); the order that reserved before can still finish.
        match shop.reply(&reserve("p2", "o2")) {
            OrderReply::StockRejected { reason, .. } => {
                assert_eq!(reason, "not found: the product was deleted")
            }
            other => panic!("{other:?}"),
        }
        shop.stock(&StockCommand::Commit {
            product_id: "p1".into(),
            order_id: "o1".into(),
        });
        assert_eq!(shop.product().stock.sold, 1);
    }

    #[test]
    fn a_product_created_while_its_vendor_is_deleted_is_deleted_too_once() {
        let mut shop = Shop::new();
        shop.vendor(&create_vendor("v1"));
        // The product is created (the gateway still saw the vendor) while the deletion is on its
        // way: the catalog deletes the vendor before it hears of the product.
        stocked(&mut shop, "p1", "v1");
        let (listing, none) = shop.in_flight();
        assert_eq!(listing.len(), 1);
        assert!(none.is_empty());
        shop.vendor(&delete_vendor("v1"));
        assert!(
            shop.catalog.d.take_outputs(STOCK_COMMANDS).is_empty(),
            "not listed yet"
        );
        // The listing arrives, twice (a redelivery): a deletion each time.
        shop.deliver(&listing, &[]);
        shop.deliver(&listing, &[]);
        let (_, deletion) = shop.in_flight();
        assert_eq!(deletions(&deletion).len(), 2);
        shop.stock.take_outputs(VIEW_PRODUCTS);
        // The stock app deletes the product once: the second deletion changes nothing.
        shop.deliver(&[], &deletion);
        let views: Vec<ProductView> = shop.stock.take(VIEW_PRODUCTS);
        assert_eq!(views.len(), 1, "one new version: {views:?}");
        assert!(views[0].deleted);
        assert!(shop.stock.dead_letters().is_empty() && shop.catalog.d.dead_letters().is_empty());
        assert!(matches!(
            shop.reply(&reserve("p1", "o1")),
            OrderReply::StockRejected { .. }
        ));
        // And nothing more goes back and forth.
        assert_eq!(shop.in_flight(), (vec![], vec![]));
    }

    #[test]
    fn create_rename_reject_delete() {
        let mut d = TestDriver::new(CatalogProcessor, 1_000);
        d.pipe(
            VENDOR_COMMANDS,
            "v1",
            &VendorCommand::CreateVendor {
                vendor_id: "v1".into(),
                name: "Mugs".into(),
                manager: "vm01".into(),
            },
        )
        .unwrap();
        d.pipe(
            VENDOR_COMMANDS,
            "v1",
            &VendorCommand::UpdateVendor {
                vendor_id: "v1".into(),
                name: " ".into(),
            },
        )
        .unwrap();
        d.pipe(
            VENDOR_COMMANDS,
            "v1",
            &VendorCommand::DeleteVendor {
                vendor_id: "v1".into(),
            },
        )
        .unwrap();
        d.pipe(
            VENDOR_COMMANDS,
            "v2",
            &VendorCommand::DeleteVendor {
                vendor_id: "v2".into(),
            },
        )
        .unwrap();
        let views = d.take_outputs(VIEW_VENDORS);
        assert!(views.iter().all(|o| o.key_str() == "v1"));
        let views: Vec<VendorView> = views
            .iter()
            .map(|o| serde_json::from_value(o.json()).unwrap())
            .collect();
        let got: Vec<(u64, bool, bool)> = views
            .iter()
            .map(|v| (v.version, v.rejection.is_some(), v.deleted))
            .collect();
        assert_eq!(
            got,
            vec![(1, false, false), (2, true, false), (3, false, true)]
        );
        assert_eq!(d.dead_letters().len(), 1);
    }
}
