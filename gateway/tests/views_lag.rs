//! A live but lagging views sink: reads are served with the lag in `Pickple-Views-Lag` (and
//! `Pickple-Views-Stale: true` over the maximum), `/ready` stays 200 (degraded), and commands
//! are accepted and published as if the views were caught up.

mod common;

use std::time::Duration;

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::json;

/// One partition far behind (over the default maximum of 100), the others caught up.
const LAGGING: [i64; 6] = [0, 0, 5000, 0, 3, 0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_sink_still_serves_reads_with_the_lag_headers() {
    let gw = Gw::start().await;
    gw.heartbeat(&LAGGING, 0).await;
    let alice = gw.token("alice", Role::User);
    gw.put_view(
        Kind::Order,
        "o-1",
        &order_view("o-1", "alice", &[], "AWAITING_PAYMENT", 1),
    );
    gw.put_view(Kind::Vendor, "v-1", &vendor_view("v-1", "mia1", 1));
    gw.put_view(Kind::Product, "p-1", &product_view("p-1", "v-1", true, 1));

    // One view, listings, a search, public and private reads.
    for path in [
        "/api/v1/orders/o-1",
        "/api/v1/orders/mine",
        "/api/v1/vendors",
        "/api/v1/vendors/v-1",
        "/api/v1/products",
        "/api/v1/products?q=tea",
        "/api/v1/products/p-1",
        "/api/v1/vendors/v-1/products",
        "/api/v1/notifications/mine",
    ] {
        let (s, headers, body) = gw.get_with_headers(path, Some(&alice)).await;
        assert_eq!(s, 200, "{path}: {body}");
        assert_eq!(
            header(&headers, "pickple-views-lag"),
            Some("5000"),
            "{path}: the largest partition lag"
        );
        assert_eq!(
            header(&headers, "pickple-views-stale"),
            Some("true"),
            "{path}"
        );
    }
    let (_, _, listing) = gw
        .get_with_headers("/api/v1/orders/mine", Some(&alice))
        .await;
    assert_eq!(listing["total"], 1);

    // A long-poll woken while the views lag carries the headers too.
    let waiter = {
        let http = gw.http.clone();
        let url = gw.url("/api/v1/orders/o-1?wait=20&status=PAID");
        let token = alice.clone();
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            let headers = res.headers().clone();
            (headers, into_parts(res).await)
        })
    };
    gw.until_waiting(Kind::Order, "o-1", Some(1), 1).await;
    gw.put_view(
        Kind::Order,
        "o-1",
        &order_view("o-1", "alice", &[], "PAID", 2),
    );
    let (headers, (s, body)) = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("the long-poll answers")
        .unwrap();
    assert_eq!((s, body["status"].as_str()), (200, Some("PAID")));
    assert_eq!(header(&headers, "pickple-views-lag"), Some("5000"));
    assert_eq!(header(&headers, "pickple-views-stale"), Some("true"));

    // Readiness: ready, degraded, with the lag in the body.
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["degraded"], true);
    assert_eq!(body["views"]["ok"], true);
    assert_eq!(body["views"]["lag"], 5000);
    assert_eq!(body["views"]["stale"], true);

    // Caught up again: the lag header stays, the stale one goes.
    gw.heartbeat(&[0, 0, 7, 0, 0, 0], 0).await;
    let (s, headers, _) = gw
        .get_with_headers("/api/v1/orders/o-1", Some(&alice))
        .await;
    assert_eq!(s, 200);
    assert_eq!(header(&headers, "pickple-views-lag"), Some("7"));
    assert!(header(&headers, "pickple-views-stale").is_none());
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!((s, body["degraded"].as_bool()), (200, Some(false)));

    // Commands carry no view headers.
    let res = gw
        .http
        .post(gw.url("/api/v1/orders/o-1/cancel"))
        .bearer_auth(&alice)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    assert!(res.headers().get("pickple-views-lag").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_accepted_while_the_views_lag() {
    let gw = Gw::start().await;
    gw.heartbeat(&LAGGING, 0).await;
    gw.put_user("alice", "password1", Role::User).await;
    let alice = gw.token("alice", Role::User);
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v-1", &vendor_view("v-1", "mia1", 1));
    gw.put_view(Kind::Product, "p-1", &product_view("p-1", "v-1", true, 1));
    gw.put_view(
        Kind::Order,
        "o-1",
        &order_view("o-1", "alice", &["v-1"], "AWAITING_PAYMENT", 1),
    );
    gw.put_view(
        Kind::Delivery,
        "o-1",
        &delivery_view("o-1", "alice", &["v-1"], "PENDING", 1),
    );

    let (s, placed) = gw
        .post(
            "/api/v1/orders",
            Some(&alice),
            &json!({"lines": [{"product_id": "p-1", "quantity": 2}], "shipping": shipping()}),
        )
        .await;
    assert_eq!(s, 202, "place: {placed}");
    let (s, body) = gw
        .post(
            "/api/v1/orders/o-1/pay",
            Some(&alice),
            &json!({"payment_token": "tok"}),
        )
        .await;
    assert_eq!(s, 202, "pay: {body}");
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &json!({"vendor_id": "v-1", "name": "Tea", "price": 3}),
        )
        .await;
    assert_eq!(s, 202, "create product: {body}");
    let (s, body) = gw
        .post(
            "/api/v1/deliveries/o-1/start",
            Some(&mia),
            &json!({"carrier": "CJ_LOGISTICS", "delivery_type": "COURIER", "tracking_number": "T1"}),
        )
        .await;
    assert_eq!(s, 202, "start: {body}");
    // Sign-in reads the user's view for identity: served while lagging.
    let (s, body) = gw
        .post(
            "/api/v1/auth/sign-in",
            None,
            &json!({"username": "alice", "password": "password1"}),
        )
        .await;
    assert_eq!(s, 200, "sign-in: {body}");

    // Two orders, two partitions: the read order between them is not the publish order.
    let orders = read_topic(&gw.topic(topic::ORDER_COMMANDS));
    let mut kinds: Vec<(&str, &str)> = orders
        .iter()
        .map(|r| (r.value["type"].as_str().unwrap(), r.key.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("PayOrder", "o-1"),
            ("PlaceOrder", placed["id"].as_str().unwrap())
        ]
    );
    assert_eq!(read_topic(&gw.topic(topic::STOCK_COMMANDS)).len(), 1);
    assert_eq!(read_topic(&gw.topic(topic::DELIVERY_COMMANDS)).len(), 1);
}
