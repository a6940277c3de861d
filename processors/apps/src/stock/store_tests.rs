//! The stock store's layout through the app (issue #18): entries under their own keys, the
//! sweep of final reservations and closed sales' counters, and the split of old values.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pickple_runtime::{Context, ProcessError, Processor, Record, TestDriver};
use pickple_schemas::{OrderReply, ProductView, RecordHeaders, SaleTerms, StockCommand};
use serde_json::{json, Value};

use super::keys::{self, Entry};
use super::*;

const SEED: &str = "test-seed";
const START: Millis = 1_000;

type Snapshot = Arc<Mutex<BTreeMap<Vec<u8>, Value>>>;

/// The stock task, plus a way to write a raw store value (an old product, for the migration)
/// and a copy of the whole store after each step.
struct Probe {
    task: StockProcessor,
    store: Snapshot,
    snapshots: Arc<AtomicBool>,
}

impl Probe {
    fn snap(&self, ctx: &Context<'_>) -> Result<(), ProcessError> {
        if self.snapshots.load(Ordering::Relaxed) {
            let all = ctx.range::<Value>(STORE, [0u8], [0xFFu8, 0xFF, 0xFF])?;
            *self.store.lock().unwrap() = all.into_iter().collect();
        }
        Ok(())
    }
}

impl Processor for Probe {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        if record.topic == SEED {
            let value: Value = serde_json::from_slice(record.value.unwrap()).unwrap();
            ctx.put(STORE, record.key.unwrap(), &value);
        } else {
            self.task.process(ctx, record)?;
        }
        self.snap(ctx)
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        self.task.punctuate(ctx)?;
        self.snap(ctx)
    }
}

struct Shop {
    d: TestDriver<Probe>,
    store: Snapshot,
    snapshots: Arc<AtomicBool>,
}

impl Shop {
    fn new(retention_ms: Millis) -> Shop {
        let (store, snapshots) = (Snapshot::default(), Arc::new(AtomicBool::new(true)));
        let probe = Probe {
            task: StockProcessor::new(retention_ms),
            store: store.clone(),
            snapshots: snapshots.clone(),
        };
        Shop {
            d: TestDriver::new(probe, START),
            store,
            snapshots,
        }
    }

    fn pipe(&mut self, cmd: StockCommand) {
        let key = product_id(&cmd).to_string();
        self.d.pipe(STOCK_COMMANDS, &key, &cmd).unwrap();
    }

    fn seed(&mut self, key: &str, value: &Value) {
        let bytes = serde_json::to_vec(value).unwrap();
        self.d
            .pipe_raw(
                SEED,
                Some(key.as_bytes()),
                Some(&bytes),
                RecordHeaders::new("Seed", "seed"),
            )
            .unwrap();
    }

    /// Advance the clock and punctuate, with a snapshot after.
    fn advance(&mut self, ms: Millis) {
        self.snapshots.store(true, Ordering::Relaxed);
        self.d.advance(ms).unwrap();
    }

    fn entries(&self) -> Vec<(Vec<u8>, Value)> {
        let store = self.store.lock().unwrap();
        store.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn product(&self, id: &str) -> Value {
        self.store.lock().unwrap()[id.as_bytes()].clone()
    }

    fn reservations(&self, product: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in self.entries() {
            if let Some(Entry::Reservation {
                product_id,
                order_id,
            }) = keys::parse(&k)
            {
                if product_id == product {
                    out.insert(order_id.into(), v["status"].as_str().unwrap().into());
                }
            }
        }
        out
    }

    fn buyers(&self, product: &str) -> BTreeMap<(u32, String), u64> {
        let mut out = BTreeMap::new();
        for (k, v) in self.entries() {
            if let Some(Entry::Buyer {
                product_id,
                epoch,
                username,
            }) = keys::parse(&k)
            {
                if product_id == product {
                    out.insert((epoch, username.into()), v.as_u64().unwrap());
                }
            }
        }
        out
    }

    fn count(&self, what: fn(&Entry<'_>) -> bool) -> usize {
        self.entries()
            .iter()
            .filter(|(k, _)| keys::parse(k).as_ref().is_some_and(what))
            .count()
    }

    fn expiries(&self) -> usize {
        self.count(|e| matches!(e, Entry::Expiry { .. }))
    }

    fn levels(&self, id: &str) -> (i64, i64, i64, i64) {
        let s = &self.product(id)["state"]["stock"];
        let n = |k: &str| s[k].as_i64().unwrap();
        (n("added"), n("available"), n("reserved"), n("sold"))
    }

    fn last_reply(&mut self) -> OrderReply {
        self.d
            .take::<OrderReply>(ORDER_REPLIES)
            .pop()
            .expect("a reply")
    }
}

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
fn set(p: &str, quantity: u64) -> StockCommand {
    StockCommand::SetStock {
        product_id: p.into(),
        quantity,
    }
}
fn sale(p: &str, closes_at: Millis, quantity: u64, per_user_limit: u64) -> StockCommand {
    StockCommand::OpenSale {
        product_id: p.into(),
        sale: SaleTerms {
            opens_at: 0,
            closes_at,
            quantity,
            per_user_limit,
        },
    }
}
fn reserve(p: &str, order: &str, user: &str, quantity: u64, placed_at: Millis) -> StockCommand {
    StockCommand::Reserve {
        product_id: p.into(),
        order_id: order.into(),
        username: user.into(),
        quantity,
        placed_at,
    }
}
fn release(p: &str, order: &str) -> StockCommand {
    StockCommand::Release {
        product_id: p.into(),
        order_id: order.into(),
    }
}
fn commit(p: &str, order: &str) -> StockCommand {
    StockCommand::Commit {
        product_id: p.into(),
        order_id: order.into(),
    }
}
fn restock(p: &str, order: &str) -> StockCommand {
    StockCommand::Restock {
        product_id: p.into(),
        order_id: order.into(),
    }
}

fn status(v: &[(&str, &str)]) -> BTreeMap<String, String> {
    v.iter()
        .map(|(o, s)| (o.to_string(), s.to_string()))
        .collect()
}

fn is_reserved(reply: &OrderReply) -> bool {
    matches!(reply, OrderReply::StockReserved { .. })
}

#[test]
fn reservations_and_sale_counters_live_under_keys_of_their_own() {
    let mut shop = Shop::new(60_000);
    shop.pipe(create("p1"));
    shop.pipe(create("p10"));
    shop.pipe(set("p1", 10));
    shop.pipe(set("p10", 10));
    shop.pipe(sale("p1", 100_000, 8, 3));
    shop.pipe(reserve("p1", "o1", "ann", 2, START));
    shop.pipe(reserve("p1", "o2", "bob", 1, START));
    shop.pipe(reserve("p10", "o1", "ann", 1, START));
    shop.pipe(commit("p1", "o2"));
    assert_eq!(
        shop.reservations("p1"),
        status(&[("o1", "RESERVED"), ("o2", "COMMITTED")])
    );
    assert_eq!(shop.reservations("p10"), status(&[("o1", "RESERVED")]));
    assert_eq!(
        shop.buyers("p1"),
        BTreeMap::from([((1, "ann".into()), 2), ((1, "bob".into()), 1)])
    );
    // The product's value: levels, terms and counters, no reservation, no buyer.
    let value = serde_json::to_string(&shop.product("p1")).unwrap();
    assert!(!value.contains("o1") && !value.contains("ann"), "{value}");
    assert_eq!(shop.levels("p1"), (10, 7, 2, 1));
    assert_eq!(shop.product("p1")["state"]["sale"]["taken"], 3);
    assert_eq!(shop.expiries(), 0, "nothing final yet");

    // Releasing makes the reservation final: kept with an expiry; the buyer's counter at zero
    // is deleted.
    shop.pipe(release("p1", "o1"));
    assert_eq!(
        shop.reservations("p1"),
        status(&[("o1", "RELEASED"), ("o2", "COMMITTED")])
    );
    assert_eq!(shop.buyers("p1"), BTreeMap::from([((1, "bob".into()), 1)]));
    assert_eq!(shop.expiries(), 1);
    assert_eq!(shop.count(|e| matches!(e, Entry::Cursor)), 1);
    assert_eq!(shop.levels("p1"), (10, 9, 0, 1));
    // A redelivered Reserve of the released order takes nothing and is told so.
    shop.d.take_outputs(ORDER_REPLIES);
    shop.pipe(reserve("p1", "o1", "ann", 2, START));
    assert!(!is_reserved(&shop.last_reply()));
    assert_eq!(shop.levels("p1"), (10, 9, 0, 1));
}

#[test]
fn final_reservations_are_pruned_once_their_retention_is_over() {
    const RETENTION: Millis = 60_000;
    let mut shop = Shop::new(RETENTION);
    shop.pipe(create("p1"));
    shop.pipe(set("p1", 5));
    shop.pipe(reserve("p1", "o1", "ann", 2, START));
    shop.pipe(release("p1", "o1"));
    shop.pipe(reserve("p1", "o2", "bob", 1, START));
    shop.pipe(commit("p1", "o2"));
    shop.advance(RETENTION - 1);
    assert_eq!(
        shop.reservations("p1"),
        status(&[("o1", "RELEASED"), ("o2", "COMMITTED")]),
        "not yet"
    );
    shop.advance(1);
    // The released one is gone with its expiry; the committed one stays, however long: a
    // Restock may still come.
    assert_eq!(shop.reservations("p1"), status(&[("o2", "COMMITTED")]));
    assert_eq!(shop.expiries(), 0);
    // Duplicates of the pruned order's Release, Commit and Restock are no-ops, as they were.
    let versions = shop.product("p1")["version"].clone();
    for cmd in [release("p1", "o1"), commit("p1", "o1"), restock("p1", "o1")] {
        shop.pipe(cmd);
    }
    assert_eq!(shop.product("p1")["version"], versions);
    assert_eq!(shop.levels("p1"), (5, 4, 0, 1));

    shop.advance(10 * RETENTION);
    assert_eq!(shop.reservations("p1"), status(&[("o2", "COMMITTED")]));
    shop.pipe(restock("p1", "o2"));
    assert_eq!(shop.levels("p1"), (5, 5, 0, 0));
    shop.advance(RETENTION);
    assert!(shop.reservations("p1").is_empty());
    // Past the retention an order id is new again: a Reserve this late would take stock (the
    // saga never sends one; docs/state.md, "Retention").
    shop.d.take_outputs(ORDER_REPLIES);
    shop.pipe(reserve("p1", "o1", "ann", 2, START));
    assert!(is_reserved(&shop.last_reply()));
}

#[test]
fn one_punctuation_deletes_a_bounded_number_of_keys() {
    const RETENTION: Millis = 3_600_000;
    const BATCH: usize = 600;
    let mut shop = Shop::new(RETENTION);
    shop.pipe(create("p1"));
    shop.pipe(set("p1", 10));
    // Four bursts of finished orders ten minutes apart; many share a due time.
    for burst in 0..4 {
        shop.snapshots.store(false, Ordering::Relaxed);
        for i in 0..BATCH {
            let order = format!("o{burst}-{i:04}");
            shop.pipe(reserve("p1", &order, "ann", 1, START));
            shop.pipe(release("p1", &order));
        }
        shop.advance(600_000);
    }
    assert_eq!(shop.expiries(), 4 * BATCH);
    let reservations = |shop: &Shop| shop.reservations("p1").len();
    assert_eq!(reservations(&shop), 4 * BATCH);

    // All due at once after a long pause: each punctuation deletes at most the budget.
    let mut left = 2 * 4 * BATCH;
    let mut punctuations = 0;
    shop.advance(2 * RETENTION);
    loop {
        punctuations += 1;
        let now_left = shop.expiries() + reservations(&shop);
        assert!(
            left - now_left <= MAX_SWEEP_DELETES,
            "{} keys in one punctuation",
            left - now_left
        );
        assert_eq!(shop.expiries(), reservations(&shop));
        left = now_left;
        if left == 0 {
            break;
        }
        assert!(punctuations < 10, "{left} keys still there");
        shop.advance(1_000);
    }
    assert_eq!(punctuations, 3, "4,800 keys at 2,000 a punctuation");
    assert_eq!(shop.levels("p1"), (10, 10, 0, 0));
}

#[test]
fn a_new_sale_leaves_the_old_sale_counters_to_the_sweep() {
    let mut shop = Shop::new(60_000);
    shop.pipe(create("p1"));
    shop.pipe(set("p1", 20));
    shop.pipe(sale("p1", 10_000, 10, 3));
    for (order, user, q) in [("o1", "ann", 2), ("o2", "bob", 1), ("o3", "cy", 3)] {
        shop.pipe(reserve("p1", order, user, q, START));
    }
    shop.pipe(commit("p1", "o1"));
    // Lowering the limit reads every counter: below cy's 3, refused; to 3 or above, fine.
    shop.pipe(sale("p1", 10_000, 10, 2));
    let view: ProductView = shop.d.take(VIEW_PRODUCTS).pop().unwrap();
    assert!(
        view.rejection
            .as_deref()
            .unwrap()
            .contains("cy already holds"),
        "{view:?}"
    );
    shop.pipe(release("p1", "o3"));
    shop.pipe(sale("p1", 10_000, 10, 2));
    let view: ProductView = shop.d.take(VIEW_PRODUCTS).pop().unwrap();
    assert_eq!(view.rejection, None);
    assert_eq!(
        shop.buyers("p1"),
        BTreeMap::from([((1, "ann".into()), 2), ((1, "bob".into()), 1)])
    );

    // The sale is over; a new one starts from zero and marks the old counters for the sweep.
    shop.advance(10_000);
    shop.pipe(sale("p1", 100_000, 5, 1));
    assert_eq!(shop.count(|e| matches!(e, Entry::ClosedSale("p1"))), 1);
    shop.pipe(reserve("p1", "o4", "ann", 1, 20_000));
    assert!(
        is_reserved(&shop.last_reply()),
        "ann holds nothing of sale 2"
    );
    shop.advance(1_000);
    assert_eq!(shop.buyers("p1"), BTreeMap::from([((2, "ann".into()), 1)]));
    assert_eq!(shop.count(|e| matches!(e, Entry::ClosedSale(_))), 0);
    // Units of the old sale given back do not touch the new sale's counters.
    shop.pipe(release("p1", "o2"));
    assert_eq!(shop.buyers("p1"), BTreeMap::from([((2, "ann".into()), 1)]));
    assert_eq!(shop.product("p1")["state"]["sale"]["taken"], 1);
}

/// A product as the stock app stored it before issue #18, version 7.
fn old_product(id: &str) -> Value {
    json!({
        "state": {
            "product_id": id, "vendor_id": "v1", "name": "Mug", "description": "a mug",
            "price": 1200, "public": true,
            "stock": {"initial": 0, "added": 10, "available": 4, "reserved": 3, "sold": 3},
            "reservations": {
                "o1": {"quantity": 2, "username": "ann", "unit_price": 1200, "status": "RESERVED", "sale": 1},
                "o2": {"quantity": 3, "username": "bob", "unit_price": 1100, "status": "COMMITTED", "sale": 1},
                "o3": {"quantity": 1, "username": "ann", "unit_price": 1200, "status": "RELEASED", "sale": 1},
                "o4": {"quantity": 1, "username": "cy", "unit_price": 1000, "status": "RESTOCKED"},
                "o5": {"quantity": 1, "username": "dan", "unit_price": 1000, "status": "RESERVED"}
            },
            "sale": {
                "terms": {"opens_at": 0, "closes_at": 100000, "quantity": 6, "per_user_limit": 3},
                "epoch": 1, "taken": 5, "per_user": {"ann": 2, "bob": 3}
            }
        },
        "version": 7,
        "updated_at": 500
    })
}

#[test]
fn an_old_value_is_split_on_the_first_command_that_loads_it() {
    const RETENTION: Millis = 60_000;
    let mut shop = Shop::new(RETENTION);
    shop.seed("p1", &old_product("p1"));
    shop.seed("p2", &old_product("p2"));

    // The first command on p1 moves every reservation and counter out, then runs on them.
    shop.pipe(release("p1", "o1"));
    let value = shop.product("p1");
    let text = serde_json::to_string(&value).unwrap();
    assert!(
        !text.contains("reservations") && !text.contains(r#""per_user":"#),
        "{text}"
    );
    assert_eq!(value["version"], 8);
    assert_eq!(shop.levels("p1"), (10, 6, 1, 3));
    assert_eq!(value["state"]["sale"]["taken"], 3);
    assert_eq!(
        shop.reservations("p1"),
        status(&[
            ("o1", "RELEASED"),
            ("o2", "COMMITTED"),
            ("o3", "RELEASED"),
            ("o4", "RESTOCKED"),
            ("o5", "RESERVED")
        ])
    );
    assert_eq!(shop.buyers("p1"), BTreeMap::from([((1, "bob".into()), 3)]));
    let view: ProductView = shop.d.take(VIEW_PRODUCTS).pop().unwrap();
    assert_eq!((view.version, view.stock.available), (8, 6));

    // The old tombstones still stop a redelivered Reserve; the counters still hold the limit;
    // the old committed reservation can still be restocked.
    shop.d.take_outputs(ORDER_REPLIES);
    shop.pipe(reserve("p1", "o3", "ann", 1, START));
    assert!(!is_reserved(&shop.last_reply()));
    shop.pipe(reserve("p1", "o6", "bob", 1, START));
    assert!(matches!(
        shop.last_reply(),
        OrderReply::StockRejected { reason, .. } if reason.contains("per-user limit")
    ));
    shop.advance(RETENTION / 2);
    shop.pipe(restock("p1", "o2"));
    assert_eq!(shop.levels("p1"), (10, 9, 1, 0));
    assert!(shop.buyers("p1").is_empty());
    shop.pipe(release("p1", "o5"));
    assert_eq!(shop.levels("p1"), (10, 10, 0, 0));

    // A command that changes nothing still leaves the split value behind, same version, no
    // view.
    shop.d.take_outputs(VIEW_PRODUCTS);
    shop.pipe(release("p2", "nobody"));
    assert!(shop.d.take_outputs(VIEW_PRODUCTS).is_empty());
    let p2 = shop.product("p2");
    assert_eq!(p2["version"], 7);
    assert!(p2["state"].get("reservations").is_none());
    assert_eq!(shop.reservations("p2").len(), 5);
    assert_eq!(shop.levels("p2"), (10, 4, 3, 3));

    // The old final reservations expire like new ones, a retention after the split.
    shop.advance(RETENTION / 2 + 10);
    assert_eq!(
        shop.reservations("p1"),
        status(&[("o2", "RESTOCKED"), ("o5", "RELEASED")]),
        "final since the split, or before it: gone; final later: not yet"
    );
    assert_eq!(shop.reservations("p2").len(), 5, "split later");
    shop.advance(RETENTION / 2);
    assert!(shop.reservations("p1").is_empty());
    assert_eq!(
        shop.reservations("p2"),
        status(&[("o1", "RESERVED"), ("o2", "COMMITTED"), ("o5", "RESERVED")])
    );
}

/// A product stored before products were listed under their vendors (no listing was sent).
fn unlisted_product(id: &str, vendor: &str, deleted: bool) -> Value {
    json!({
        "state": {
            "product_id": id, "vendor_id": vendor, "name": "Mug", "description": "a mug",
            "price": 1200, "public": true, "deleted": deleted,
            "stock": {"initial": 0, "added": 1, "available": 1, "reserved": 0, "sold": 0}
        },
        "version": 2,
        "updated_at": 500
    })
}

#[test]
fn products_made_before_the_listing_are_listed_once_in_bounded_batches() {
    use super::listing::{Progress, LISTING_BATCH};
    use pickple_schemas::topic::VENDOR_COMMANDS;
    use pickple_schemas::VendorCommand;

    let mut shop = Shop::new(FINISHED_RESERVATION_RETENTION_MS);
    shop.snapshots.store(false, Ordering::Relaxed);
    let total = 2 * LISTING_BATCH + 100;
    for i in 0..total {
        let id = format!("p{i:04}");
        shop.seed(&id, &unlisted_product(&id, &format!("v{}", i % 3), i == 7));
    }
    let progress = |shop: &Shop| -> Option<Progress> {
        let store = shop.store.lock().unwrap();
        store
            .get(keys::LISTING.as_slice())
            .map(|v| serde_json::from_value(v.clone()).unwrap())
    };
    let mut listed: Vec<(String, String)> = Vec::new();
    let mut take = |shop: &mut Shop| -> usize {
        let out = shop.d.take_outputs(VENDOR_COMMANDS);
        for o in &out {
            let cmd: VendorCommand = pickple_schemas::decode(o.value.as_deref()).unwrap();
            let VendorCommand::ProductListed {
                vendor_id,
                product_id,
            } = cmd
            else {
                panic!("{cmd:?}")
            };
            assert_eq!(o.key_str(), vendor_id, "keyed by the vendor");
            listed.push((product_id, vendor_id));
        }
        out.len()
    };

    shop.advance(1_000);
    assert_eq!(take(&mut shop), LISTING_BATCH);
    // p0007 is deleted: the batch ends one further on.
    let first = format!("p{:04}", LISTING_BATCH);
    assert_eq!(progress(&shop), Some(Progress::After(first)));
    // A lost transaction leaves the stored progress behind what the task sent: it goes on from
    // the stored progress (p0200 to p0500 are listed twice, which the catalog takes as a no-op).
    let behind = serde_json::to_vec(&Progress::After("p0199".into())).unwrap();
    shop.d
        .pipe_raw(
            SEED,
            Some(&keys::LISTING),
            Some(&behind),
            RecordHeaders::new("Seed", "seed"),
        )
        .unwrap();
    shop.advance(1_000);
    assert_eq!(take(&mut shop), LISTING_BATCH);
    assert_eq!(progress(&shop), Some(Progress::After("p0699".into())));
    shop.advance(1_000);
    assert_eq!(take(&mut shop), total - 700);
    assert_eq!(progress(&shop), Some(Progress::Done));
    shop.advance(1_000);
    assert_eq!(take(&mut shop), 0, "done: nothing more, ever");

    let mut ids: Vec<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total - 1, "every product but the deleted one");
    assert!(!ids.contains(&"p0007"));
    assert!(listed.iter().all(|(p, v)| {
        let i: usize = p[1..].parse().unwrap();
        *v == format!("v{}", i % 3)
    }));
}
