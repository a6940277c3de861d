//! FLASH SALE on the real local broker: 2,000 PlaceOrder commands from 500 users for a sale of
//! 100 units with a limit of 2 per user. Exactly 100 units are reserved, nobody gets more than 2,
//! nothing goes negative, and every other order is CANCELLED with a reason.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::*;
use pickple_processors::App;

#[test]
fn flash_sale_sells_exactly_the_sale_quantity() {
    let started = Instant::now();
    let p = Pipeline::start(
        "flash",
        &config(300_000),
        &[App::Stock, App::Order, App::Payment],
    )
    .unwrap();
    let sale = FlashSale {
        product_id: "sneaker".into(),
        orders: 2_000,
        users: 500,
        sale: 100,
        limit: 2,
    };
    sale.prepare(&p);
    let out = sale.run(&p, 120);
    eprintln!("flash sale settled in {:?}: {out:?}", out.settle);

    assert_eq!(out.reserved_units, 100, "{out:?}");
    assert_eq!(out.reserved_orders + out.cancelled, 2_000);
    p.wait_for(30, "product view settled", |s| {
        s.get("view-products", &sale.product_id)
            .is_some_and(|v| v["stock"]["reserved"] == 100)
    });
    let product = p.view("view-products", &sale.product_id).unwrap();
    let st = &product["stock"];
    assert_eq!(st["reserved"], 100);
    assert_eq!(st["available"], 50);
    assert_eq!(st["sold"], 0);
    for k in ["initial", "added", "available", "reserved", "sold"] {
        assert!(st[k].as_i64().unwrap() >= 0, "{k} negative: {st}");
    }
    assert_eq!(
        st["initial"].as_i64().unwrap() + st["added"].as_i64().unwrap(),
        st["available"].as_i64().unwrap()
            + st["reserved"].as_i64().unwrap()
            + st["sold"].as_i64().unwrap()
    );
    assert_eq!(product["sale"]["taken"], 100);

    let s = p.seen.lock().unwrap();
    let mut per_user: HashMap<String, u64> = HashMap::new();
    for i in 0..sale.orders {
        let v = s.get("view-orders", &sale.order_id(i)).unwrap();
        match v["status"].as_str().unwrap() {
            "AWAITING_PAYMENT" => {
                *per_user.entry(sale.user(i)).or_default() += sale.quantity(i);
                assert_eq!(v["username"].as_str().unwrap(), sale.user(i));
            }
            "CANCELLED" => {
                let reason = last_reason(v);
                assert!(
                    reason.contains("sold out") || reason.contains("per-user limit"),
                    "order {i}: {reason}"
                );
            }
            other => panic!("order {i} is {other}"),
        }
    }
    assert!(per_user.values().all(|n| *n <= 2), "a user above the limit");
    assert_eq!(per_user.values().sum::<u64>(), 100);
    drop(s);
    p.stop();
    eprintln!("flash sale test took {:?}", started.elapsed());
}
