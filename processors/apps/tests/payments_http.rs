//! MASTER's refund through HTTP and the real processors: the gateway in-process, every processor
//! and the views sink on threads, against the real local Kafka, Redis and SMTP sink.
//!
//! A buyer's first payment is declined, the second authorized; MASTER refunds the order before
//! it ships: the order ends CANCELLED and `GET /payments/{id}` shows REFUNDED with every attempt
//! and outcome. A second order is shipped first: MASTER's refund is refused (on the order's view)
//! and its payment stays AUTHORIZED.

mod common;

use common::shop::{shipping, Http, Shop};
use pickple_processors::{App, AppConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Place an order of one unit of `product_id` and pay it with `tokens` in turn (each but the
/// last declined); answers the order id once PAID.
async fn paid_order(http: &Http, buyer: &str, product_id: &str, tokens: &[&str]) -> String {
    let (code, placed) = http
        .post(
            "/orders",
            Some(buyer),
            json!({"lines": [{"product_id": product_id, "quantity": 1}], "shipping": shipping()}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{placed}");
    let order_id = placed["id"].as_str().unwrap().to_string();
    let order = format!("/orders/{order_id}");
    for token in tokens {
        http.wait_until(&order, Some(buyer), |o| o["status"] == "AWAITING_PAYMENT")
            .await;
        let (code, body) = http
            .post(
                &format!("{order}/pay"),
                Some(buyer),
                json!({"payment_token": token}),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        // Past PAYMENT_PENDING: back to AWAITING_PAYMENT with the decline, or PAID.
        http.wait_until(&order, Some(buyer), |o| {
            o["status"] == "PAID"
                || (o["status"] == "AWAITING_PAYMENT"
                    && o["payment_status"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("DECLINED")))
        })
        .await;
    }
    http.wait_until(&order, Some(buyer), |o| o["status"] == "PAID")
        .await;
    order_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_refunds_a_paid_order_before_it_ships_and_not_after() {
    let hash = pickple_gateway::auth::hash_password("master-horse-1".into())
        .await
        .unwrap();
    let config = AppConfig {
        master_username: Some("root".into()),
        master_email: Some("root@pickple.local".into()),
        master_password_hash: Some(hash),
        ..AppConfig::default()
    };
    let shop = Shop::start_with("pay", config, &App::ALL).await;
    let http = &shop.http;

    // MASTER signs in once the users app has created it and the sink has written its view.
    let deadline = Instant::now() + Duration::from_secs(60);
    let master = loop {
        let (code, body) = http
            .post(
                "/auth/sign-in",
                None,
                json!({"username": "root", "password": "master-horse-1"}),
            )
            .await;
        if code == StatusCode::OK {
            break body["access_token"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "MASTER cannot sign in: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // the bootstrap has no event to await over HTTP
    };
    let master = master.as_str();

    // MASTER's own vendor and product, ten in stock.
    let (_, product_id) = http
        .stocked_product(
            master,
            "Refund Shop",
            json!({"name": "Kettle", "description": "boils", "price": 3000, "public": true}),
            10,
        )
        .await;

    let buyer_name = format!("buy{}", &uuid::Uuid::new_v4().simple().to_string()[..4]);
    let buyer = http.sign_up_and_in(&buyer_name, "USER").await;
    let buyer = buyer.as_str();

    // Declined once, then authorized.
    let order_id = paid_order(http, buyer, &product_id, &["tok_decline", "tok_ok"]).await;
    let payment = format!("/payments/{order_id}");
    let authorized = http
        .wait_until(&payment, Some(buyer), |p| p["status"] == "AUTHORIZED")
        .await;
    assert_eq!(authorized["username"], buyer_name.as_str());
    assert_eq!(authorized["amount"], 3000);
    assert!(authorized["payment_id"].is_string(), "{authorized}");

    // Only MASTER refunds.
    let reason = json!({"reason": "out of warranty stock"});
    let (code, body) = http
        .post(&format!("{payment}/refund"), Some(buyer), reason.clone())
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    let (code, body) = http
        .post(&format!("{payment}/refund"), Some(master), reason.clone())
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["location"], format!("/api/v1{payment}"));

    let refunded = http
        .wait_until(&payment, Some(buyer), |p| p["status"] == "REFUNDED")
        .await;
    assert_eq!(refunded["refunded_amount"], 3000);
    // The saga's refund reason: the cancel's, as the order tells it.
    assert_eq!(
        refunded["refund_reason"],
        "order cancelled: out of warranty stock"
    );
    let history: Vec<(&str, Option<&str>)> = refunded["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["reason"].as_str()))
        .collect();
    assert_eq!(
        history,
        vec![
            ("AUTHORIZE_REQUESTED", None),
            ("DECLINED", Some("card declined")),
            ("AUTHORIZE_REQUESTED", None),
            ("AUTHORIZED", None),
            (
                "REFUND_REQUESTED",
                Some("order cancelled: out of warranty stock")
            ),
            ("REFUNDED", None),
        ],
        "{refunded}"
    );
    let order = http
        .wait_until(&format!("/orders/{order_id}"), Some(buyer), |o| {
            o["status"] == "CANCELLED" && o["payment_status"] == "REFUNDED"
        })
        .await;
    assert_eq!(order["rejection"], Value::Null, "{order}");
    // The units came back to the shelf.
    http.wait_until(&format!("/products/{product_id}"), Some(master), |p| {
        p["stock"]["available"] == 10 && p["stock"]["sold"] == 0
    })
    .await;

    // Listed for the buyer and for MASTER's REFUNDED filter.
    let (code, mine) = http.get("/payments/mine", Some(buyer)).await;
    assert_eq!(
        (code, &mine["items"][0]["order_id"]),
        (StatusCode::OK, &json!(order_id))
    );
    let (code, listed) = http
        .get(
            &format!("/payments?status=REFUNDED&username={buyer_name}"),
            Some(master),
        )
        .await;
    assert_eq!(
        (code, listed["total"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{listed}"
    );

    // Once shipped, the refund is refused: the order says why, the payment stays AUTHORIZED.
    let shipped = paid_order(http, buyer, &product_id, &["tok_ok"]).await;
    let delivery = format!("/deliveries/{shipped}");
    http.wait_until(&delivery, Some(master), |d| d["status"] == "PENDING")
        .await;
    let (code, body) = http
        .post(
            &format!("{delivery}/start"),
            Some(master),
            json!({"carrier": "CJ_LOGISTICS", "delivery_type": "COURIER", "tracking_number": "T-9"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let before = http
        .wait_until(&format!("/orders/{shipped}"), Some(buyer), |o| {
            o["status"] == "SHIPPING"
        })
        .await;
    let (code, body) = http
        .post(&format!("/payments/{shipped}/refund"), Some(master), reason)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let refused = http
        .wait_until(&format!("/orders/{shipped}"), Some(buyer), |o| {
            o["version"].as_u64() > before["version"].as_u64() && o["rejection"].is_string()
        })
        .await;
    assert_eq!(refused["status"], "SHIPPING", "{refused}");
    let (code, still) = http.get(&format!("/payments/{shipped}"), Some(buyer)).await;
    assert_eq!(
        (code, &still["status"]),
        (StatusCode::OK, &json!("AUTHORIZED")),
        "{still}"
    );
    assert!(
        still["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "REFUND_REQUESTED"),
        "{still}"
    );

    shop.stop().await;
}
