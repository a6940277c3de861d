//! Growing the partitions (`pickple-grow`) keeps every application's state exact, on the real
//! local broker: the whole shop (every processor and the views sink) builds state on 6
//! partitions (stock levels, reservations of orders awaiting payment with their payment
//! deadlines, paid orders with their payments and deliveries, a sale's per-buyer counters), is
//! drained and stopped, grows to 12 partitions, and starts again: on the state directories it
//! had, or on none (a full restore from the rekeyed changelogs). About half the entities hash to
//! a new partition; the ids are picked so that products, orders and the sale's buyer counters
//! both move and stay. After the growth the state must show, in the views and in what the
//! processors decide: the levels are exactly what they were (a reservation one unit over the
//! remaining stock is refused with the exact count, one of exactly the remaining succeeds), the
//! pending orders are cancelled by their deadlines and their units come back once, a paid order
//! is cancelled and refunded with its units restocked, the sale's buyer at the limit is refused,
//! and nothing went to a dead-letter topic.
//!
//! Without the rekeying every moved entity would be unknown on its new partition: the releases
//! of its reservations would find nothing and its levels would never come back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::commands::*;
use common::*;
use pickple_processors::stock::keys;
use pickple_processors::App;
use pickple_runtime::{partition_for, Route};
use pickple_schemas::{OrderCommand, SaleTerms, StockCommand, VendorCommand};
use serde_json::Value;

const FROM: i32 = pickple_topics::PARTITIONS;
const TO: i32 = 2 * FROM;
/// Long enough for every pending order to still await its payment when the shop stops (it is
/// stopped for the growth, so no deadline fires before the restart), short enough to watch the
/// deadlines fire after it.
const PAYMENT_TIMEOUT_MS: i64 = 30_000;
const WAIT: u64 = 60;

const SALE_QUANTITY: u64 = 10;
const PER_USER_LIMIT: u64 = 3;

fn moves(id: &str) -> bool {
    partition_for(id.as_bytes(), FROM) != partition_for(id.as_bytes(), TO)
}

/// The first id `{base}{i}` that moves (or stays) when `FROM` partitions become `TO`.
fn pick(base: &str, moving: bool) -> String {
    (0..)
        .map(|i| format!("{base}{i}"))
        .find(|id| moves(id) == moving)
        .unwrap()
}

/// The whole shop: the processors (the harness's pipeline) and the views sink, whose group
/// `pickple-grow` also wants drained and empty.
struct Shop {
    pipeline: Pipeline,
    stop_views: Arc<AtomicBool>,
    views: JoinHandle<Result<(), pickple_views::ViewsError>>,
}

impl Shop {
    fn with_views(pipeline: Pipeline) -> Shop {
        let mut rt = test_runtime(&pipeline.prefix, pipeline.state_dir(), App::Users);
        rt.state_dir = pipeline.state_dir().join("views");
        let redis = pickple_views::RedisConfig::local(format!("{}:", pipeline.prefix));
        let stop_views = Arc::new(AtomicBool::new(false));
        let stop = stop_views.clone();
        let views = std::thread::Builder::new()
            .name("views".into())
            .spawn(move || pickple_views::run_until(rt, redis, stop))
            .unwrap();
        Shop {
            pipeline,
            stop_views,
            views,
        }
    }

    fn halt(self) -> Halted {
        self.stop_views.store(true, Ordering::Relaxed);
        self.views.join().unwrap().unwrap();
        self.pipeline.halt()
    }
}

fn vendor(p: &Pipeline, id: &str) {
    p.send(
        "vendor-commands",
        id,
        &VendorCommand::CreateVendor {
            vendor_id: id.into(),
            name: format!("Vendor {id}"),
            manager: "vicky1".into(),
        },
        None,
    );
}

/// A product of `vendor` with `stock` units (the stock app lists it under the vendor).
fn product(p: &Pipeline, vendor: &str, id: &str, stock: u64) {
    stocked_product(p, id, vendor, 100, stock);
}

fn place(p: &Pipeline, order: &str, user: &str, lines: &[(&str, u64)]) {
    place_order(p, order, user, "grow.test", lines, None);
}

fn pay(p: &Pipeline, order: &str, user: &str) {
    pay_order(p, order, user, "tok_ok", None);
}

fn statuses(p: &Pipeline, orders: &[&str], status: &str) {
    p.wait_for(WAIT, &format!("{orders:?} {status}"), |s| {
        orders.iter().all(|o| s.order_status(o) == Some(status))
    });
}

/// Wait until the product's view shows `want` (available, reserved, sold) in a version after
/// `after`.
fn wait_levels(p: &Pipeline, product: &str, want: (i64, i64, i64), after: u64) -> Value {
    p.wait_for(
        WAIT,
        &format!("{product} at {want:?} after v{after}"),
        |s| {
            s.get("view-products", product)
                .is_some_and(|v| stock_levels(v) == want && v["version"].as_u64() > Some(after))
        },
    );
    p.view("view-products", product).unwrap()
}

/// No dead letter so far, as the watcher read them, and (once `drained`) as every
/// application's dead-letter topic holds them.
fn no_dead_letters(p: &Pipeline, partitions: i32) {
    let dead = p.seen.lock().unwrap().dead_letters();
    assert!(dead.is_empty(), "dead letters: {dead:?}");
    for app in pickple_topics::APPS {
        let topic = format!(
            "{}{}",
            p.prefix,
            pickple_schemas::topic::dead_letter(app.name)
        );
        let dead = pickple_runtime::grow::live_entries(
            &brokers(),
            &topic,
            partitions,
            Duration::from_secs(30),
        )
        .unwrap();
        let keys: Vec<String> = dead
            .iter()
            .flat_map(|letters| letters.keys())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert!(keys.is_empty(), "dead letters on {topic}: {keys:?}");
    }
}

/// Wait until no application (the views sink included) has a record left to process.
fn drained(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(WAIT);
    loop {
        let pending = pickple_processors::grow::pending(&brokers(), prefix).unwrap();
        if pending.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "never drained: {pending:?}");
        std::thread::sleep(Duration::from_millis(200)); // the offsets have no event to await
    }
}

/// A regular product of the scenario and what happens to it.
struct Item {
    id: String,
    stock: i64,
    /// Placed before the growth and left unpaid (2 units): cancelled by its deadline after.
    pending: String,
    /// Placed and paid before the growth (3 units).
    paid: String,
}

fn scenario(tag: &str, wipe: bool) {
    let started = Instant::now();
    ensure_maildir();
    let pipeline = Pipeline::start(tag, &config(PAYMENT_TIMEOUT_MS), &App::ALL).unwrap();
    let prefix = pipeline.prefix.clone();
    let shop = Shop::with_views(pipeline);
    let p = &shop.pipeline;
    let run = prefix.trim_end_matches('.').to_string();

    // Vendors that move and one that stays; two products that move and two that stay, each
    // with an order awaiting its payment and a paid one (their ids moving or not, alternately).
    let vendors = [
        pick(&format!("{run}-vm-"), true),
        pick(&format!("{run}-vs-"), false),
    ];
    // Deleted after the growth, with the product listed under it before.
    let gone_vendor = pick(&format!("{run}-vgone-"), true);
    let gone_product = format!("{run}-gone");
    let items: Vec<Item> = [true, false, true, false]
        .into_iter()
        .enumerate()
        .map(|(i, moving)| Item {
            id: pick(&format!("{run}-p{i}-"), moving),
            stock: 10 + i as i64,
            pending: pick(&format!("{run}-pending{i}-"), i % 2 == 0),
            paid: pick(&format!("{run}-paid{i}-"), i % 2 == 1),
        })
        .collect();
    // One order awaiting payment over a moving and a staying product.
    let mixed = pick(&format!("{run}-mixed-"), true);
    // A paid order of a moving product, cancelled after the growth: refunded and restocked.
    let refunded = pick(&format!("{run}-refunded-"), true);
    // The sale, on a product that moves: `full` holds the per-user limit (paid), `half` holds 2
    // units of an order left unpaid.
    let sale = pick(&format!("{run}-sale-"), true);
    let (full, half) = ("fullbuyer", "halfbuyer");
    let sale_full = pick(&format!("{run}-sale-full-"), true);
    let sale_half = pick(&format!("{run}-sale-half-"), false);
    // So products, orders and the sale's buyers' counters (they go with the sale's product)
    // both move and stay.
    assert!(moves(&items[0].id) && !moves(&items[1].id) && moves(&sale));
    assert!(moves(&items[0].pending) && !moves(&items[1].pending) && moves(&refunded));

    for v in vendors.iter().chain([&gone_vendor]) {
        vendor(p, v);
    }
    p.flush();
    p.wait_for(WAIT, "the vendors", |s| {
        vendors
            .iter()
            .chain([&gone_vendor])
            .all(|v| s.get("view-vendors", v).is_some())
    });
    for (i, it) in items.iter().enumerate() {
        product(p, &vendors[i % 2], &it.id, it.stock as u64);
    }
    product(p, &vendors[0], &sale, 30);
    product(p, &gone_vendor, &gone_product, 1);
    let now = pickple_runtime::now_millis();
    p.send(
        "stock-commands",
        &sale,
        &StockCommand::OpenSale {
            product_id: sale.clone(),
            sale: SaleTerms {
                opens_at: now - 60_000,
                closes_at: now + 3_600_000,
                quantity: SALE_QUANTITY,
                per_user_limit: PER_USER_LIMIT,
            },
        },
        None,
    );
    p.flush();
    p.wait_for(WAIT, "the products", |s| {
        items.iter().all(|it| {
            s.get("view-products", &it.id)
                .is_some_and(|v| v["version"] == 2)
        }) && s
            .get("view-products", &sale)
            .is_some_and(|v| !v["sale"].is_null())
            && s.get("view-products", &gone_product).is_some()
    });
    eprintln!("{tag}: products ready after {:?}", started.elapsed());

    for it in &items {
        place(p, &it.pending, "patt1", &[(&it.id, 2)]);
        place(p, &it.paid, "paul1", &[(&it.id, 3)]);
    }
    place(p, &mixed, "maxx1", &[(&items[2].id, 1), (&items[3].id, 1)]);
    place(p, &refunded, "rita1", &[(&items[0].id, 2)]);
    place(p, &sale_full, full, &[(&sale, PER_USER_LIMIT)]);
    place(p, &sale_half, half, &[(&sale, 2)]);
    p.flush();
    let mut pending: Vec<&str> = items.iter().map(|it| it.pending.as_str()).collect();
    pending.extend([mixed.as_str(), sale_half.as_str()]);
    let mut paid: Vec<&str> = items.iter().map(|it| it.paid.as_str()).collect();
    paid.extend([refunded.as_str(), sale_full.as_str()]);
    statuses(p, &pending, "AWAITING_PAYMENT");
    statuses(p, &paid, "AWAITING_PAYMENT");
    for it in &items {
        pay(p, &it.paid, "paul1");
    }
    pay(p, &refunded, "rita1");
    pay(p, &sale_full, full);
    p.flush();
    statuses(p, &paid, "PAID");
    p.wait_for(WAIT, "the refunded order's delivery", |s| {
        s.get("view-deliveries", &refunded)
            .is_some_and(|d| d["status"] == "PENDING")
    });

    // What the shop looks like before the growth.
    let before: Vec<(i64, i64, i64)> = items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let mixed_units = i64::from(i >= 2);
            let refund_units = if i == 0 { 2 } else { 0 };
            (
                it.stock - 2 - 3 - mixed_units - refund_units,
                2 + mixed_units,
                3 + refund_units,
            )
        })
        .collect();
    for (it, want) in items.iter().zip(&before) {
        wait_levels(p, &it.id, *want, 0);
    }
    let sale_want = (30 - PER_USER_LIMIT as i64 - 2, 2, PER_USER_LIMIT as i64);
    wait_levels(p, &sale, sale_want, 0);
    p.wait_for(WAIT, "the sale's takes", |s| {
        s.get("view-products", &sale)
            .is_some_and(|v| v["sale"]["taken"] == PER_USER_LIMIT + 2)
            && s.get("view-sale-takes", &format!("{sale}/{full}"))
                .is_some_and(|v| v["taken"] == PER_USER_LIMIT)
            && s.get("view-sale-takes", &format!("{sale}/{half}"))
                .is_some_and(|v| v["taken"] == 2)
    });
    let epoch = p.view("view-products", &sale).unwrap()["sale"]["epoch"]
        .as_u64()
        .unwrap() as u32;
    drained(&prefix);
    no_dead_letters(p, FROM);
    let versions: Vec<u64> = items
        .iter()
        .map(|it| it.id.as_str())
        .chain([sale.as_str()])
        .map(|id| {
            p.view("view-products", id).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let seen = p.seen.clone();
    eprintln!("{tag}: state built after {:?}", started.elapsed());

    // Stop, grow, (wipe,) start again.
    let halted = shop.halt();
    {
        let s = seen.lock().unwrap();
        for o in &pending {
            assert_eq!(s.order_status(o), Some("AWAITING_PAYMENT"), "{o}");
        }
    }
    let t = Instant::now();
    let grow = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(pickple_processors::grow::grow(
                &brokers(),
                &prefix,
                TO,
                Duration::from_secs(30),
            ))
            .unwrap()
    };
    let report = grow();
    eprintln!("{tag}: grown in {:?}: {report:?}", t.elapsed());
    // Growing again changes nothing (checked once: the scenarios are alike up to here).
    if !wipe {
        let again = grow();
        assert!(again.grown.is_empty(), "{again:?}");
        assert!(
            again
                .moves
                .iter()
                .flat_map(|(_, stores)| stores)
                .all(|s| (s.moved, s.copied) == (0, 0)),
            "{again:?}"
        );
    }
    let grown_at = pickple_runtime::now_millis();
    assert_eq!((report.from, report.to), (FROM, TO));
    let catalogue = pickple_topics::catalogue(&prefix);
    assert_eq!(report.grown.len(), catalogue.len(), "{:?}", report.grown);
    assert!(report.grown.iter().all(|g| (g.from, g.to) == (FROM, TO)));
    let moved = |app: &str, store: &str| {
        report
            .moves
            .iter()
            .find(|(a, _)| a == app)
            .and_then(|(_, stores)| stores.iter().find(|s| s.store == store))
            .map_or(0, |s| s.moved)
    };
    for (app, store) in [
        ("catalog", "vendors"),
        ("stock", "products"),
        ("order", "orders"),
        ("order", "deadlines"),
        ("payment", "payments"),
        ("delivery", "deliveries"),
    ] {
        assert!(moved(app, store) > 0, "{app}/{store} moved nothing");
    }
    // The sale's buyers' counters are now on the sale's new partition, and only there.
    let products = pickple_runtime::grow::live_entries(
        &brokers(),
        &format!("{prefix}stock-products-changelog"),
        TO,
        Duration::from_secs(30),
    )
    .unwrap();
    for buyer in [full, half] {
        let key = keys::buyer(&sale, epoch, buyer);
        let Route::Key(entity) = pickple_processors::stock::route("products", &key) else {
            panic!("a buyer's counter goes with its product")
        };
        let (old, new) = (partition_for(entity, FROM), partition_for(entity, TO));
        assert_ne!(old, new, "the sale's product moves");
        let holders: Vec<usize> = (0..TO as usize)
            .filter(|&q| products[q].contains_key(&key))
            .collect();
        assert_eq!(holders, vec![new as usize], "{buyer}'s counter");
    }
    if wipe {
        halted.wipe_state().unwrap();
        assert_eq!(std::fs::read_dir(halted.state_dir()).unwrap().count(), 0);
    }
    let shop = Shop::with_views(halted.resume().unwrap());
    let p = &shop.pipeline;
    eprintln!("{tag}: started again after {:?}", started.elapsed());

    // The pending orders are cancelled by their deadlines, after the growth; the paid order is
    // cancelled by its buyer, refunded, its delivery cancelled.
    p.send(
        "order-commands",
        &refunded,
        &OrderCommand::CancelOrder {
            order_id: refunded.clone(),
            username: "rita1".into(),
            reason: "changed my mind".into(),
            master: false,
        },
        None,
    );
    p.flush();
    statuses(p, &pending, "CANCELLED");
    for o in &pending {
        let v = p.view("view-orders", o).unwrap();
        let last = last_transition(&v).unwrap();
        assert_eq!(last["reason"], "payment deadline passed", "{o}: {v}");
        assert!(last["at"].as_i64().unwrap() >= grown_at, "{o}: {v}");
    }
    // The orders are where their commands now go: paying one now is refused as cancelled (an
    // order its partition did not know would be refused as unknown).
    for it in &items {
        pay(p, &it.pending, "patt1");
    }
    pay(p, &mixed, "maxx1");
    pay(p, &sale_half, half);
    p.flush();
    p.wait_for(WAIT, "the late payments refused", |s| {
        pending.iter().all(|o| {
            s.get("view-orders", o).is_some_and(|v| {
                v["status"] == "CANCELLED"
                    && v["rejection"]
                        .as_str()
                        .is_some_and(|r| r.contains("cancelled"))
            })
        })
    });
    p.wait_for(WAIT, "the refund", |s| {
        s.get("view-orders", &refunded).is_some_and(|v| {
            v["status"] == "CANCELLED" && v["payment_status"].as_str() == Some("REFUNDED")
        }) && s
            .get("view-deliveries", &refunded)
            .is_some_and(|d| d["status"] == "CANCELLED")
    });

    // Every unit of the cancelled orders is back, once; the paid ones stay sold.
    let mut after = Vec::new();
    for ((it, &(available, reserved, sold)), &version) in items.iter().zip(&before).zip(&versions) {
        let refund_units = if it.id == items[0].id { 2 } else { 0 };
        let want = (available + reserved + refund_units, 0, sold - refund_units);
        assert_eq!(want.0 + want.2, it.stock, "{}", it.id);
        let v = wait_levels(p, &it.id, want, version);
        assert_eq!(v["stock"]["added"], it.stock, "{}: {v}", it.id);
        after.push(want.0);
    }
    let sale_version = versions[items.len()];
    wait_levels(
        p,
        &sale,
        (30 - PER_USER_LIMIT as i64, 0, PER_USER_LIMIT as i64),
        sale_version,
    );
    p.wait_for(WAIT, "the sale's takes after the deadline", |s| {
        s.get("view-products", &sale)
            .is_some_and(|v| v["sale"]["taken"] == PER_USER_LIMIT)
            && s.get("view-sale-takes", &format!("{sale}/{half}"))
                .is_some_and(|v| v["taken"] == 0)
    });

    // The levels decide exactly: one unit over what is left is refused with the exact count,
    // and the buyer at the sale's limit is refused...
    let over: Vec<String> = items
        .iter()
        .map(|it| format!("{}-over", it.pending))
        .collect();
    for ((it, o), &left) in items.iter().zip(&over).zip(&after) {
        place(p, o, "olga1", &[(&it.id, left as u64 + 1)]);
    }
    let limited = format!("{sale_full}-again");
    place(p, &limited, full, &[(&sale, 1)]);
    p.flush();
    let mut refused: Vec<&str> = over.iter().map(String::as_str).collect();
    refused.push(&limited);
    statuses(p, &refused, "CANCELLED");
    for ((it, o), &left) in items.iter().zip(&over).zip(&after) {
        let v = p.view("view-orders", o).unwrap();
        let reason = last_reason(&v);
        let exact = format!("out of stock: {} requested, {left} available", left + 1);
        assert!(
            reason.contains(&it.id) && reason.contains(&exact),
            "{o}: {reason}"
        );
    }
    let v = p.view("view-orders", &limited).unwrap();
    let reason = last_reason(&v);
    let exact = format!(
        "per-user limit of {PER_USER_LIMIT} exceeded: {PER_USER_LIMIT} already taken, 1 requested"
    );
    assert!(reason.contains(&exact), "{limited}: {reason}");

    // ...while exactly what is left is reserved (and paid, on the products that moved), and the
    // buyer whose units came back takes the limit.
    let exact: Vec<String> = items
        .iter()
        .map(|it| format!("{}-exact", it.pending))
        .collect();
    for ((it, o), &left) in items.iter().zip(&exact).zip(&after) {
        place(p, o, "erin1", &[(&it.id, left as u64)]);
    }
    let again = format!("{sale_half}-again");
    place(p, &again, half, &[(&sale, PER_USER_LIMIT)]);
    p.flush();
    let mut reserved: Vec<&str> = exact.iter().map(String::as_str).collect();
    reserved.push(&again);
    statuses(p, &reserved, "AWAITING_PAYMENT");
    let moving: Vec<(&Item, &String)> = items
        .iter()
        .zip(&exact)
        .filter(|(it, _)| moves(&it.id))
        .collect();
    assert!(!moving.is_empty());
    for (_, o) in &moving {
        pay(p, o, "erin1");
    }
    p.flush();
    let paid_now: Vec<&str> = moving.iter().map(|(_, o)| o.as_str()).collect();
    statuses(p, &paid_now, "PAID");
    for (it, &left) in items.iter().zip(&after) {
        let want = if moves(&it.id) {
            (0, 0, it.stock)
        } else {
            (0, left, it.stock - left)
        };
        wait_levels(p, &it.id, want, 0);
    }
    p.wait_for(WAIT, "the sale's takes after the new order", |s| {
        s.get("view-products", &sale)
            .is_some_and(|v| v["sale"]["taken"] == 2 * PER_USER_LIMIT)
            && s.get("view-sale-takes", &format!("{sale}/{half}"))
                .is_some_and(|v| v["taken"] == PER_USER_LIMIT)
    });

    // The vendors' listings moved with them: products listed before the growth are deleted with
    // their vendor, and new products are listed under the vendors where they are now (a listing
    // under a vendor the catalog does not know is a dead letter).
    p.send(
        "vendor-commands",
        &gone_vendor,
        &VendorCommand::DeleteVendor {
            vendor_id: gone_vendor.clone(),
        },
        None,
    );
    for (i, v) in vendors.iter().enumerate() {
        product(p, v, &format!("{run}-new{i}"), 1);
    }
    p.flush();
    p.wait_for(WAIT, "the vendor's product deleted", |s| {
        s.get("view-products", &gone_product)
            .is_some_and(|v| v["deleted"] == true)
            && (0..vendors.len())
                .all(|i| s.get("view-products", &format!("{run}-new{i}")).is_some())
    });
    drained(&prefix);
    no_dead_letters(p, TO);
    shop.halt();
    eprintln!("{tag}: took {:?}", started.elapsed());
}

/// The applications start again on the state directories they had: each task restores only
/// what its trees' checkpoints have not seen (what left, what came).
#[test]
fn state_survives_growing_the_partitions() {
    scenario("grow", false);
}

/// The applications start again without their state directories: everything is restored from
/// the rekeyed changelogs.
#[test]
fn state_survives_growing_the_partitions_from_the_changelogs_alone() {
    scenario("growwipe", true);
}
