//! A vendor manager cancels, through HTTP, an unpaid order of their vendor's product that the
//! vendor cannot fill, with every processor and the views sink on threads and the gateway
//! in-process (real Kafka, Redis and SMTP sink): the order processor cancels it with the
//! vendor's reason and releases its stock, which is available again. A paid order is refused,
//! and the refusal shows in the order's view. The status filters of the listings follow the
//! order through the real views sink.

mod common;

use common::last_reason;
use common::shop::{shipping, Shop};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The ids of a listing's items.
fn listed(listing: &Value) -> Vec<String> {
    listing["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"))
        .iter()
        .map(|o| o["order_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vendor_manager_cancels_an_unpaid_order_and_the_stock_comes_back() {
    let shop = Shop::start("vcancel").await;
    let http = &shop.http;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let vendor_token = http
        .sign_up_and_in(&format!("vend{suffix}"), "VENDOR_MANAGER")
        .await;
    let buyer_token = http.sign_up_and_in(&format!("buy{suffix}"), "USER").await;

    // Vendor, product, 5 in stock.
    let (vendor_id, product_id) = http
        .stocked_product(
            &vendor_token,
            "Kiln",
            json!({"name": "Teapot", "description": "", "price": 2000, "public": true}),
            5,
        )
        .await;
    let product_path = format!("/products/{product_id}");

    // The buyer orders 3: reserved, awaiting payment.
    let line =
        json!({"lines": [{"product_id": product_id, "quantity": 3}], "shipping": shipping()});
    let (code, placed) = http.post("/orders", Some(&buyer_token), line.clone()).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{placed}");
    let order_id = placed["id"].as_str().unwrap().to_string();
    let order_path = format!("/orders/{order_id}");
    http.wait_view(&order_path, Some(&buyer_token), Some("AWAITING_PAYMENT"))
        .await;
    http.wait_until(&product_path, Some(&vendor_token), |p| {
        p["stock"]["available"] == 2 && p["stock"]["reserved"] == 3
    })
    .await;
    let vendor_orders = format!("/vendors/{vendor_id}/orders");
    let (code, awaiting) = http
        .get(
            &format!("{vendor_orders}?status=AWAITING_PAYMENT"),
            Some(&vendor_token),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{awaiting}");
    assert_eq!(listed(&awaiting), vec![order_id.clone()]);

    // The vendor cannot fill it: cancelled with the vendor's reason, the 3 units back.
    let (code, body) = http
        .post(
            &format!("{vendor_orders}/{order_id}/cancel"),
            Some(&vendor_token),
            json!({"reason": "the glaze cracked"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["location"], format!("/api/v1{order_path}"));
    let cancelled = http
        .wait_view(&order_path, Some(&buyer_token), Some("CANCELLED"))
        .await;
    let reason = last_reason(&cancelled);
    assert_eq!(
        reason,
        format!("cancelled by vendor {vendor_id}: the glaze cracked"),
        "{cancelled}"
    );
    assert_eq!(cancelled["rejection"], Value::Null, "{cancelled}");
    let product = http
        .wait_until(&product_path, Some(&vendor_token), |p| {
            p["stock"]["available"] == 5
        })
        .await;
    assert_eq!(product["stock"]["reserved"], 0, "{product}");
    assert_eq!(product["stock"]["sold"], 0, "{product}");

    // The listings' status indexes followed the order.
    let (_, mine) = http
        .get("/orders/mine?status=CANCELLED", Some(&buyer_token))
        .await;
    assert_eq!(listed(&mine), vec![order_id.clone()]);
    let (_, awaiting) = http
        .get(
            &format!("{vendor_orders}?status=AWAITING_PAYMENT"),
            Some(&vendor_token),
        )
        .await;
    assert_eq!(awaiting["total"], 0, "{awaiting}");

    // A paid order is not the vendor's to cancel: refused, visibly, and still PAID.
    let (code, placed) = http.post("/orders", Some(&buyer_token), line).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{placed}");
    let paid_path = format!("/orders/{}", placed["id"].as_str().unwrap());
    http.wait_view(&paid_path, Some(&buyer_token), Some("AWAITING_PAYMENT"))
        .await;
    let (code, body) = http
        .post(
            &format!("{paid_path}/pay"),
            Some(&buyer_token),
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let paid = http
        .wait_view(&paid_path, Some(&buyer_token), Some("PAID"))
        .await;
    let (code, body) = http
        .post(
            &format!("{vendor_orders}/{}/cancel", placed["id"].as_str().unwrap()),
            Some(&vendor_token),
            json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let refused = http
        .wait_until(&paid_path, Some(&buyer_token), |o| {
            o["version"].as_u64() > paid["version"].as_u64()
        })
        .await;
    assert_eq!(refused["status"], "PAID", "{refused}");
    let rejection = refused["rejection"].as_str().unwrap_or_default();
    assert!(rejection.contains("paid"), "{refused}");

    shop.stop().await;
}
