//! Order listings filtered by status (the buyer's, a vendor's, MASTER's with a buyer and a
//! vendor too) from views written through the sink's upsert, and a vendor manager's cancel of
//! an order with a line of their vendor (the command on the topic, read_committed).

mod common;

use std::collections::BTreeSet;

use common::*;
use pickple_schemas::{topic, OrderCommand, Role};
use pickple_view_model::Kind;
use serde_json::{json, Value};

/// An order of `user` with one line per vendor, placed at `at`.
fn order(id: &str, user: &str, vendors: &[&str], status: &str, at: i64, version: u64) -> Value {
    let lines: Vec<Value> = vendors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"product_id": format!("p-{v}-{i}"), "quantity": 1, "unit_price": 10,
                   "vendor_id": v, "reserved": true})
        })
        .collect();
    json!({
        "order_id": id, "username": user, "status": status, "lines": lines,
        "amount": 10 * vendors.len() as i64, "payment_deadline": null, "payment_status": null,
        "delivery_status": null, "vendor_ids": vendors,
        "history": [{"status": "PENDING", "at": at, "reason": "order placed"}],
        "rejection": null, "version": version
    })
}

/// The ids of a listing's items, and its total.
fn ids(listing: &Value) -> (BTreeSet<String>, u64) {
    let items = listing["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"));
    (
        items
            .iter()
            .map(|o| o["order_id"].as_str().unwrap().to_string())
            .collect(),
        listing["total"].as_u64().unwrap(),
    )
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// alice: o1 (v1, PENDING, later CANCELLED), o2 (v1 and v2, PAID), o3 (v2, CANCELLED);
/// bobby: o4 (v1, PAID), o5 (v2, AWAITING_PAYMENT).
fn seed(gw: &Gw) {
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(Kind::Vendor, "v2", &vendor_view("v2", "max1", 1));
    for (id, user, vendors, status, at) in [
        ("o1", "alice", &["v1"][..], "PENDING", 1_000),
        ("o2", "alice", &["v1", "v2"][..], "PAID", 2_000),
        ("o3", "alice", &["v2"][..], "CANCELLED", 3_000),
        ("o4", "bobby", &["v1"][..], "PAID", 4_000),
        ("o5", "bobby", &["v2"][..], "AWAITING_PAYMENT", 5_000),
    ] {
        assert!(gw.put_view(Kind::Order, id, &order(id, user, vendors, status, at, 1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_filters_list_exactly_the_matching_orders() {
    let gw = Gw::start().await;
    seed(&gw);
    let alice = gw.token("alice", Role::User);
    let mia = gw.token("mia1", Role::VendorManager);
    let root = gw.token("root", Role::Master);
    let gw_ref = &gw;
    let list = |path: String, token: String| {
        let gw = gw_ref;
        async move {
            let (s, body) = gw.get(&path, Some(&token)).await;
            assert_eq!(s, 200, "{path}: {body}");
            ids(&body)
        }
    };

    // The buyer.
    let mine = |q: &str| list(format!("/api/v1/orders/mine{q}"), alice.clone());
    assert_eq!(mine("").await, (set(&["o1", "o2", "o3"]), 3));
    assert_eq!(mine("?status=PAID").await, (set(&["o2"]), 1));
    assert_eq!(mine("?status=PENDING").await, (set(&["o1"]), 1));
    assert_eq!(mine("?status=CANCELLED").await, (set(&["o3"]), 1));
    assert_eq!(mine("?status=SHIPPING").await, (set(&[]), 0));

    // A new view moves the order from one status index to the other.
    assert!(gw.put_view(
        Kind::Order,
        "o1",
        &order("o1", "alice", &["v1"], "CANCELLED", 1_000, 2)
    ));
    assert_eq!(mine("?status=PENDING").await, (set(&[]), 0));
    assert_eq!(mine("?status=CANCELLED").await, (set(&["o1", "o3"]), 2));

    // The vendor's manager: the vendor's orders in the status, each its share only.
    let vendor = |q: &str| list(format!("/api/v1/vendors/v1/orders{q}"), mia.clone());
    assert_eq!(vendor("").await, (set(&["o1", "o2", "o4"]), 3));
    assert_eq!(vendor("?status=PAID").await, (set(&["o2", "o4"]), 2));
    assert_eq!(vendor("?status=CANCELLED").await, (set(&["o1"]), 1));
    assert_eq!(vendor("?status=AWAITING_PAYMENT").await, (set(&[]), 0));
    let (_, paid) = gw
        .get("/api/v1/vendors/v1/orders?status=PAID", Some(&mia))
        .await;
    let o2 = paid["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["order_id"] == "o2")
        .unwrap();
    assert_eq!(
        o2["vendor_ids"],
        json!(["v1"]),
        "v2's line is not shown: {o2}"
    );
    // MASTER on a vendor's listing.
    let (s, body) = gw
        .get(
            "/api/v1/vendors/v2/orders?status=AWAITING_PAYMENT",
            Some(&root),
        )
        .await;
    assert_eq!((s, ids(&body)), (200, (set(&["o5"]), 1)));

    // MASTER: every order, by status, buyer and vendor, and any two or three of them.
    let all = |q: &str| list(format!("/api/v1/orders{q}"), root.clone());
    assert_eq!(all("").await.1, 5);
    assert_eq!(all("?status=PAID").await, (set(&["o2", "o4"]), 2));
    assert_eq!(all("?status=CANCELLED").await, (set(&["o1", "o3"]), 2));
    assert_eq!(all("?username=bobby").await, (set(&["o4", "o5"]), 2));
    assert_eq!(all("?username=BobBy").await, (set(&["o4", "o5"]), 2));
    assert_eq!(all("?username=bobby&status=PAID").await, (set(&["o4"]), 1));
    assert_eq!(all("?vendor_id=v2").await, (set(&["o2", "o3", "o5"]), 3));
    assert_eq!(all("?vendor_id=v2&status=PAID").await, (set(&["o2"]), 1));
    assert_eq!(
        all("?username=alice&vendor_id=v2").await,
        (set(&["o2", "o3"]), 2)
    );
    assert_eq!(
        all("?username=alice&vendor_id=v2&status=CANCELLED").await,
        (set(&["o3"]), 1)
    );
    assert_eq!(all("?username=nobody").await, (set(&[]), 0));

    // Pages of a filtered listing, newest first, by score.
    let (_, first) = gw
        .get("/api/v1/orders?status=PAID&limit=1", Some(&root))
        .await;
    let (_, second) = gw
        .get("/api/v1/orders?status=PAID&limit=1&offset=1", Some(&root))
        .await;
    assert_eq!(first["total"], 2);
    assert_eq!(first["items"][0]["order_id"], "o4");
    assert_eq!(second["items"][0]["order_id"], "o2");
    let (_, page) = gw
        .get(
            "/api/v1/orders?username=alice&vendor_id=v2&limit=1&offset=1",
            Some(&root),
        )
        .await;
    assert_eq!(
        (page["total"].as_u64(), &page["items"][0]["order_id"]),
        (Some(2), &json!("o2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_is_none_is_a_422_naming_the_parameter() {
    let gw = Gw::start().await;
    seed(&gw);
    let alice = gw.token("alice", Role::User);
    let mia = gw.token("mia1", Role::VendorManager);
    let root = gw.token("root", Role::Master);
    for (path, token) in [
        ("/api/v1/orders/mine?status=SHIPPED", &alice),
        ("/api/v1/orders/mine?status=paid", &alice),
        ("/api/v1/orders/mine?status=", &alice),
        ("/api/v1/vendors/v1/orders?status=LOST", &mia),
        ("/api/v1/orders?status=NOPE", &root),
        ("/api/v1/orders?status=NOPE&username=alice", &root),
    ] {
        let (s, body) = gw.get(path, Some(token)).await;
        assert_eq!(s, 422, "{path}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{path}");
        let field = &body["error"]["fields"][0];
        assert_eq!(field["field"], "status", "{path}: {body}");
        assert!(
            field["message"]
                .as_str()
                .unwrap()
                .contains("AWAITING_PAYMENT"),
            "the message names the statuses: {body}"
        );
    }
    let (s, body) = gw.get("/api/v1/orders?username=a%20b", Some(&root)).await;
    assert_eq!(
        (s, &body["error"]["fields"][0]["field"]),
        (422, &json!("username"))
    );
    let (s, body) = gw.get("/api/v1/orders?vendor_id=a%20b", Some(&root)).await;
    assert_eq!(
        (s, &body["error"]["fields"][0]["field"]),
        (422, &json!("vendor_id"))
    );
    // Who may list is checked as before.
    let (s, _) = gw.get("/api/v1/orders?status=PAID", Some(&alice)).await;
    assert_eq!(s, 403);
    let max = gw.token("max1", Role::VendorManager);
    let (s, _) = gw
        .get("/api/v1/vendors/v1/orders?status=PAID", Some(&max))
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_manager_cancels_an_order_with_a_line_of_their_vendor() {
    let gw = Gw::start().await;
    seed(&gw);
    let mia = gw.token("mia1", Role::VendorManager);
    let max = gw.token("max1", Role::VendorManager);
    let alice = gw.token("alice", Role::User);
    let root = gw.token("root", Role::Master);
    let reason = json!({"reason": "the kiln broke"});
    let send = |path: &str, token: &str, key: Option<&str>, body: &Value| {
        let mut req = gw.http.post(gw.url(path)).bearer_auth(token).json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move { into_parts(req.send().await.unwrap()).await }
    };

    let path = "/api/v1/vendors/v1/orders/o4/cancel";
    let (s, first) = send(path, &mia, Some("k-1"), &reason).await;
    assert_eq!(s, 202, "{first}");
    assert_eq!(first["id"], "o4");
    assert_eq!(first["location"], "/api/v1/orders/o4");
    // The same key: the first command, published once.
    let (s, again) = send(path, &mia, Some("k-1"), &reason).await;
    assert_eq!((s, &again["replayed"]), (202, &json!(true)));
    assert_eq!(again["command_id"], first["command_id"]);
    let (s, body) = send(path, &mia, Some("k-1"), &json!({"reason": "other"})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // MASTER may, for any vendor of the order.
    let (s, body) = send("/api/v1/vendors/v2/orders/o2/cancel", &root, None, &reason).await;
    assert_eq!(s, 202, "{body}");

    // Another vendor's manager, a buyer: 403; an unknown order or vendor, or an order without
    // a line of the vendor: 404; a reason that says nothing: 422.
    let (s, body) = send(path, &max, None, &reason).await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = send(path, &alice, None, &reason).await;
    assert_eq!(s, 403);
    let (s, body) = send(
        "/api/v1/vendors/v1/orders/o-none/cancel",
        &mia,
        None,
        &reason,
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (s, _) = send("/api/v1/vendors/v1/orders/o5/cancel", &mia, None, &reason).await;
    assert_eq!(s, 404, "o5 has no line of v1");
    let (s, _) = send("/api/v1/vendors/v9/orders/o4/cancel", &root, None, &reason).await;
    assert_eq!(s, 404, "no vendor v9");
    for bad in [
        json!({"reason": "  "}),
        json!({}),
        json!({"reason": "a\u{202E}b"}),
    ] {
        let (s, body) = send(path, &mia, None, &bad).await;
        assert_eq!(s, 422, "{bad}: {body}");
        if bad.get("reason").is_some() {
            assert_eq!(body["error"]["fields"][0]["field"], "reason", "{body}");
        }
    }
    let long = json!({"reason": "x".repeat(501)});
    let (s, _) = send(path, &mia, None, &long).await;
    assert_eq!(s, 422);

    let records = read_topic(&gw.topic(topic::ORDER_COMMANDS));
    // Two orders, two partitions maybe: compared by key, not in the order they were read.
    let mut commands: Vec<(String, OrderCommand)> = records
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                serde_json::from_value(r.value.clone()).unwrap(),
            )
        })
        .collect();
    commands.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        commands,
        vec![
            (
                "o2".to_string(),
                OrderCommand::VendorCancelOrder {
                    order_id: "o2".into(),
                    vendor_id: "v2".into(),
                    by: "root".into(),
                    reason: "the kiln broke".into(),
                }
            ),
            (
                "o4".to_string(),
                OrderCommand::VendorCancelOrder {
                    order_id: "o4".into(),
                    vendor_id: "v1".into(),
                    by: "mia1".into(),
                    reason: "the kiln broke".into(),
                }
            ),
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.headers["event-type"] == "VendorCancelOrder"));
}
