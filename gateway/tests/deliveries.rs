//! Shipments on the gateway: the listings' filters (index keys the delivery view contributes,
//! seeded through the sink's own upsert), who may list, the enums' and the address's 422s.

mod common;

use common::*;
use pickple_schemas::Role;
use pickple_view_model::Kind;
use serde_json::{json, Value};

/// A shipment of a delivery view: (vendor, status, carrier, type, tracking number).
type Ship<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);

fn delivery(order: &str, created_at: i64, shipments: &[Ship], version: u64) -> Value {
    let vendors: Vec<&str> = shipments.iter().map(|s| s.0).collect();
    let shipments: Vec<Value> = shipments
        .iter()
        .map(|(v, status, carrier, kind, tracking)| {
            json!({"vendor_id": v, "status": status, "carrier": carrier,
                   "delivery_type": kind, "tracking_number": tracking,
                   "lines": [{"product_id": format!("p-{v}"), "quantity": 1}]})
        })
        .collect();
    json!({
        "order_id": order, "username": "ann1", "vendor_ids": vendors, "status": "IN_TRANSIT",
        "created_at": created_at, "shipping": shipping(), "shipments": shipments,
        "rejection": null, "version": version
    })
}

fn ids(listing: &Value) -> Vec<&str> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["order_id"].as_str().unwrap())
        .collect()
}

fn seed(gw: &Gw) {
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(Kind::Vendor, "v2", &vendor_view("v2", "max1", 1));
    let hanjin_express = (
        "v1",
        "IN_TRANSIT",
        Some("HANJIN"),
        Some("EXPRESS"),
        Some("T-100"),
    );
    gw.put_view(
        Kind::Delivery,
        "d1",
        &delivery("d1", 1000, &[hanjin_express], 1),
    );
    let d2 = [
        ("v1", "PENDING", None, None, None),
        (
            "v2",
            "DELIVERED",
            Some("LOZEN"),
            Some("DIRECT"),
            Some("T 200"),
        ),
    ];
    gw.put_view(Kind::Delivery, "d2", &delivery("d2", 2000, &d2, 1));
    let d3 = (
        "v2",
        "IN_TRANSIT",
        Some("HANJIN"),
        Some("COURIER"),
        Some("T-300"),
    );
    gw.put_view(Kind::Delivery, "d3", &delivery("d3", 3000, &[d3], 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendors_deliveries_are_filtered_by_its_own_shipment() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    let max = gw.token("max1", Role::VendorManager);
    let root = gw.token("root", Role::Master);
    seed(&gw);

    let list = |q: &str| format!("/api/v1/vendors/v1/deliveries{q}");
    let (s, all) = gw.get(&list(""), Some(&mia)).await;
    assert_eq!(
        (s, ids(&all), &all["total"]),
        (200, vec!["d2", "d1"], &json!(2)),
        "{all}"
    );
    // The manager is served their own shipment of the shared order only.
    let d2 = &all["items"][0];
    assert_eq!(d2["shipments"].as_array().unwrap().len(), 1, "{d2}");
    assert_eq!(d2["shipments"][0]["vendor_id"], "v1");

    for (q, want) in [
        ("?status=IN_TRANSIT", vec!["d1"]),
        ("?status=PENDING", vec!["d2"]),
        ("?status=DELIVERED", vec![]),
        ("?carrier=HANJIN", vec!["d1"]),
        // v2's shipment of d2 goes with LOZEN, not v1's.
        ("?carrier=LOZEN", vec![]),
        ("?delivery_type=EXPRESS", vec!["d1"]),
        ("?tracking_number=T-100", vec!["d1"]),
        ("?tracking_number=T-10", vec![]),
        ("?status=IN_TRANSIT&carrier=HANJIN", vec!["d1"]),
        ("?status=IN_TRANSIT&delivery_type=DIRECT", vec![]),
    ] {
        let (s, page) = gw.get(&list(q), Some(&mia)).await;
        assert_eq!((s, ids(&page)), (200, want.clone()), "{q}: {page}");
        assert_eq!(page["total"], want.len(), "{q}");
    }
    // MASTER reads the vendor's listing whole.
    let (s, page) = gw.get(&list("?status=PENDING"), Some(&root)).await;
    assert_eq!(s, 200);
    assert_eq!(page["items"][0]["shipments"].as_array().unwrap().len(), 2);
    // Another vendor's manager may not list it.
    let (s, _) = gw.get(&list(""), Some(&max)).await;
    assert_eq!(s, 403);

    // A new version moves the delivery between the status indexes (the sink drops the old
    // membership).
    let delivered = (
        "v1",
        "DELIVERED",
        Some("HANJIN"),
        Some("EXPRESS"),
        Some("T-100"),
    );
    assert!(gw.put_view(Kind::Delivery, "d1", &delivery("d1", 1000, &[delivered], 2)));
    let (_, page) = gw.get(&list("?status=IN_TRANSIT"), Some(&mia)).await;
    assert_eq!(ids(&page), Vec::<&str>::new());
    let (_, page) = gw.get(&list("?status=DELIVERED"), Some(&mia)).await;
    assert_eq!(ids(&page), vec!["d1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_lists_every_delivery_with_the_same_filters() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    seed(&gw);
    for (q, want) in [
        ("", vec!["d3", "d2", "d1"]),
        ("?carrier=HANJIN", vec!["d3", "d1"]),
        ("?carrier=LOZEN", vec!["d2"]),
        // d2 has a PENDING shipment and a DELIVERED one: listed under both.
        ("?status=PENDING", vec!["d2"]),
        ("?status=DELIVERED", vec!["d2"]),
        ("?tracking_number=T%20200", vec!["d2"]),
        ("?delivery_type=COURIER", vec!["d3"]),
        ("?status=IN_TRANSIT&carrier=HANJIN&limit=1", vec!["d3"]),
        ("?status=IN_TRANSIT&carrier=HANJIN&offset=1", vec!["d1"]),
    ] {
        let (s, page) = gw.get(&format!("/api/v1/deliveries{q}"), Some(&root)).await;
        assert_eq!((s, ids(&page)), (200, want), "{q}: {page}");
    }
    let (_, page) = gw
        .get(
            "/api/v1/deliveries?status=IN_TRANSIT&carrier=HANJIN&limit=1",
            Some(&root),
        )
        .await;
    assert_eq!(page["total"], 2);
    // Whole views for MASTER.
    let (_, page) = gw
        .get("/api/v1/deliveries?carrier=LOZEN", Some(&root))
        .await;
    assert_eq!(page["items"][0]["shipments"].as_array().unwrap().len(), 2);

    for (role, who) in [(Role::User, "ann1"), (Role::VendorManager, "mia1")] {
        let (s, body) = gw
            .get("/api/v1/deliveries", Some(&gw.token(who, role)))
            .await;
        assert_eq!(s, 403, "{who}: {body}");
    }
    let (s, _) = gw.get("/api/v1/deliveries", None).await;
    assert_eq!(s, 401);
}

/// A filter outside its enum is a 422 naming the parameter, as is a body's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_outside_the_enums_are_422s_naming_the_parameter() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    let mia = gw.token("mia1", Role::VendorManager);
    seed(&gw);
    for (path, token) in [
        ("/api/v1/deliveries", &root),
        ("/api/v1/vendors/v1/deliveries", &mia),
    ] {
        for (q, field) in [
            ("status=SHIPPED", "status"),
            ("carrier=DHL", "carrier"),
            ("carrier=hanjin", "carrier"),
            ("delivery_type=STANDARD", "delivery_type"),
            ("tracking_number=%E2%80%8BT", "tracking_number"),
        ] {
            let (s, body) = gw.get(&format!("{path}?{q}"), Some(token)).await;
            assert_eq!(s, 422, "{path}?{q}: {body}");
            assert_eq!(body["error"]["fields"][0]["field"], field, "{body}");
        }
    }
}

/// The address is required and checked with the domain's rules, each field named; a good one
/// is published on PlaceOrder, trimmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_needs_a_valid_delivery_address() {
    let gw = Gw::start().await;
    gw.put_user("alice", "password1", Role::User).await;
    let alice = gw.token("alice", Role::User);
    let lines = json!([{"product_id": "p1", "quantity": 1}]);
    let (s, body) = gw
        .post("/api/v1/orders", Some(&alice), &json!({"lines": lines}))
        .await;
    assert_eq!(s, 422, "{body}");
    assert!(body["error"]["fields"][0]["message"]
        .as_str()
        .unwrap()
        .contains("shipping"));
    let with = |field: &str, value: Value| {
        let mut shipping = shipping();
        shipping[field] = value;
        json!({"lines": lines, "shipping": shipping})
    };
    for (field, value) in [
        ("recipient", json!("")),
        ("recipient", json!("x".repeat(51))),
        ("recipient", json!("Ann\u{202E}")),
        ("address", json!("1 Main St\n2nd floor")),
        ("address", json!("y".repeat(201))),
        ("contact", json!("call me")),
        ("contact", json!("12345")),
        ("contact", json!("010+1234+5678")),
        ("request", json!("z".repeat(201))),
        ("request", json!("ring\u{200B}")),
    ] {
        let (s, body) = gw
            .post("/api/v1/orders", Some(&alice), &with(field, value))
            .await;
        assert_eq!(s, 422, "{field}: {body}");
        assert_eq!(
            body["error"]["fields"][0]["field"],
            format!("shipping.{field}"),
            "{body}"
        );
    }
    let (s, body) = gw
        .post("/api/v1/orders", Some(&alice), &with("unknown", json!("x")))
        .await;
    assert_eq!(s, 422, "unknown field: {body}");

    let mut good = with("request", json!("  leave at the door "));
    good["shipping"]["recipient"] = json!(" 김민지 ");
    let (s, body) = gw.post("/api/v1/orders", Some(&alice), &good).await;
    assert_eq!(s, 202, "{body}");
    let records = read_topic(&gw.topic(pickple_schemas::topic::ORDER_COMMANDS));
    assert_eq!(records.len(), 1);
    let shipping = &records[0].value["shipping"];
    assert_eq!(shipping["recipient"], "김민지");
    assert_eq!(shipping["request"], "leave at the door");
    assert_eq!(shipping["contact"], "010-1234-5678");
}
