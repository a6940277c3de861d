//! A listing's page holds every item its `total` counts: a view that cannot be read fails the
//! request loudly instead of vanishing from the page, and a filtered listing counts what it
//! lists.

mod common;

use common::*;
use pickple_gateway::metrics::ViewMetrics;
use pickple_schemas::Role;
use pickple_view_model::Kind;

fn unreadable_orders() -> u64 {
    ViewMetrics::global()
        .unreadable
        .with_label_values(&[Kind::Order.as_str()])
        .get()
}

/// Corrupt Redis by hand: an order view the sink would never write, then an index entry with
/// no view behind it. Each makes the listing a 500 `view_unreadable` naming the id (logged and
/// counted), never a page one item short of its total; a sound view heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_view_fails_the_listing_and_is_counted() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    for (id, version) in [("o-1", 1), ("o-2", 1)] {
        gw.put_view(
            Kind::Order,
            id,
            &order_view(id, "alice", &[], "PENDING", version),
        );
    }
    let (s, body) = gw.get("/api/v1/orders/mine", Some(&alice)).await;
    assert_eq!((s, body["total"].as_u64()), (200, Some(2)), "{body}");

    let keys = gw.config.redis.keys();
    let mut con = redis_con(&gw.config);
    let before = unreadable_orders();
    let _: () = redis::pipe()
        .hset_multiple(
            keys.view(Kind::Order, "o-bad"),
            &[("version", "3"), ("json", r#"{"version": 3}"#)],
        )
        .ignore()
        .zadd(keys.orders_of_user("alice"), "o-bad", 2_000)
        .ignore()
        .query(&mut con)
        .unwrap();

    let (s, body) = gw.get("/api/v1/orders/mine", Some(&alice)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (500, Some("view_unreadable")),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("o-bad"),
        "{body}"
    );
    assert_eq!(unreadable_orders(), before + 1);
    // Read alone, the same view is the same error.
    let (s, body) = gw.get("/api/v1/orders/o-bad", Some(&alice)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (500, Some("view_unreadable"))
    );
    assert_eq!(unreadable_orders(), before + 2);
    let (_, metrics) = gw.get("/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("pickple_views_unreadable_total{kind=\"order\"}"),
        "the counter is exported"
    );

    // The sink's next version of the view heals the listing: every item, as many as the total.
    gw.put_view(
        Kind::Order,
        "o-bad",
        &order_view("o-bad", "alice", &[], "PENDING", 4),
    );
    let (s, body) = gw.get("/api/v1/orders/mine", Some(&alice)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["total"], 3);
    assert_eq!(body["items"].as_array().unwrap().len(), 3);

    // An indexed id with no view at all.
    let _: () = redis::cmd("ZADD")
        .arg(keys.orders_of_user("alice"))
        .arg(3_000)
        .arg("o-gone")
        .query(&mut con)
        .unwrap();
    let (s, body) = gw.get("/api/v1/orders/mine", Some(&alice)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (500, Some("view_unreadable")),
        "{body}"
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("o-gone"));
    assert_eq!(unreadable_orders(), before + 3);
}

/// A vendor's products: a stranger sees the public ones, and the total counts those only (the
/// vendor's index also holds the private ones); the manager sees all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_counts_only_the_public_products_of_a_vendor() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    for (id, public) in [("p1", true), ("p2", false), ("p3", true)] {
        gw.put_view(Kind::Product, id, &product_view(id, "v1", public, 1));
    }
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["product_id"].as_str().unwrap().to_string())
            .collect()
    };

    let (s, body) = gw.get("/api/v1/vendors/v1/products", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["total"], 2);
    let mut public = ids(&body);
    public.sort();
    assert_eq!(public, ["p1", "p3"]);
    let (_, first) = gw.get("/api/v1/vendors/v1/products?limit=1", None).await;
    let (_, second) = gw
        .get("/api/v1/vendors/v1/products?offset=1&limit=1", None)
        .await;
    assert_eq!(
        (first["total"].as_u64(), second["total"].as_u64()),
        (Some(2), Some(2))
    );
    let mut paged = [ids(&first), ids(&second)].concat();
    paged.sort();
    assert_eq!(paged, public, "the pages add up to the listing");

    let (s, body) = gw.get("/api/v1/vendors/v1/products", Some(&mia)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["total"], 3);
    assert_eq!(ids(&body).len(), 3);
}
