//! The whole shop through HTTP: the gateway in-process, every processor and the views sink on
//! threads, against the real local Kafka, Redis and SMTP sink. A vendor manager and a buyer sign
//! up, confirm their addresses with the codes mailed to them (read from the sink's maildir), and
//! sign in; two vendor managers each create a vendor, a product and its stock; the buyer places
//! an order of both products with a delivery address (twice with the same Idempotency-Key),
//! waits for AWAITING_PAYMENT, pays; each manager starts and ends their own shipment; the order
//! is SHIPPING from the first start and COMPLETED at the last arrival, and each shipment step is
//! one mail. A second paid two-vendor order is cancelled: both shipments cancelled, one refund.
//! Then the vendor manager deletes the vendor, and the buyer's next order of its product ends
//! CANCELLED, the product deleted with its vendor. Last, the buyer changes their password: the
//! old token stops working once the users processor has recorded the change.

mod common;

use common::last_reason;
use common::shop::{shipping, Http, Shop};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_orders_pays_and_receives_through_http() {
    let shop = Shop::start("e2e").await;
    let http = &shop.http;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let vendor_token = http
        .sign_up_and_in(&format!("vend{suffix}"), "VENDOR_MANAGER")
        .await;
    let buyer = format!("buy{suffix}");
    let buyer_token = http.sign_up_and_in(&buyer, "USER").await;
    let vendor2_token = http
        .sign_up_and_in(&format!("ven2{suffix}"), "VENDOR_MANAGER")
        .await;

    // Vendor, product, stock.
    let (vendor_id, product_id) = http
        .stocked_product(
            &vendor_token,
            "Pick Shop",
            json!({"name": "Kettle", "description": "boils", "price": 3000, "public": true}),
            10,
        )
        .await;
    // The second vendor and its product.
    let (vendor2_id, product2_id) = http
        .stocked_product(
            &vendor2_token,
            "Cup Shop",
            json!({"name": "Cup", "description": "holds tea", "price": 500, "public": true}),
            10,
        )
        .await;

    // Place the order twice with one Idempotency-Key: one order.
    let shipping = json!({"recipient": "김민지", "address": "서울 강남구 테헤란로 1", "contact": "010-1234-5678", "request": "문 앞"});
    let order = json!({"lines": [{"product_id": product_id, "quantity": 2}, {"product_id": product2_id, "quantity": 1}], "shipping": shipping});
    let (code, first) = http
        .call(
            reqwest::Method::POST,
            "/orders",
            Some(&buyer_token),
            Some(order.clone()),
            Some("checkout-1"),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{first}");
    let (code, again) = http
        .call(
            reqwest::Method::POST,
            "/orders",
            Some(&buyer_token),
            Some(order),
            Some("checkout-1"),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        first["id"], again["id"],
        "the same key gives the same order"
    );
    let order_id = first["id"].as_str().unwrap().to_string();

    let awaiting = http
        .wait_view(
            &format!("/orders/{order_id}"),
            Some(&buyer_token),
            Some("AWAITING_PAYMENT"),
        )
        .await;
    assert_eq!(awaiting["amount"], 6500);
    assert_eq!(awaiting["shipping"], shipping);
    let (code, body) = http
        .post(
            &format!("/orders/{order_id}/pay"),
            Some(&buyer_token),
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    http.wait_view(
        &format!("/orders/{order_id}"),
        Some(&buyer_token),
        Some("PAID"),
    )
    .await;

    // Each vendor ships its own lines.
    let delivery = format!("/deliveries/{order_id}");
    let mine = http
        .wait_view(&delivery, Some(&vendor_token), Some("PENDING"))
        .await;
    let shipments = mine["shipments"].as_array().unwrap();
    assert_eq!(
        shipments.len(),
        1,
        "the manager sees their shipment: {mine}"
    );
    assert_eq!(shipments[0]["vendor_id"], vendor_id.as_str());
    assert_eq!(shipments[0]["lines"][0]["product_id"], product_id.as_str());
    assert_eq!(mine["shipping"], shipping);
    let shipment = |vendor: &str| format!("{delivery}/shipments/{vendor}");
    let start = |carrier: &str, tracking: &str| json!({"carrier": carrier, "delivery_type": "COURIER", "tracking_number": tracking});
    let (code, body) = http
        .post(
            &format!("{delivery}/start"),
            Some(&vendor_token),
            start("HANJIN", "T-1"),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "two shipments: {body}"
    );
    let (code, body) = http
        .post(
            &format!("{}/start", shipment(&vendor2_id)),
            Some(&vendor_token),
            start("HANJIN", "T-1"),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "another vendor's shipment: {body}"
    );
    let (code, body) = http
        .post(
            &format!("{}/start", shipment(&vendor_id)),
            Some(&vendor_token),
            start("HANJIN", "T-1"),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    // The first start ships the order.
    http.wait_view(
        &format!("/orders/{order_id}"),
        Some(&buyer_token),
        Some("SHIPPING"),
    )
    .await;
    let (code, body) = http
        .post(
            &format!("{}/start", shipment(&vendor2_id)),
            Some(&vendor2_token),
            start("EPOST", "E-2"),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let (code, body) = http
        .post(
            &format!("{}/end", shipment(&vendor_id)),
            Some(&vendor_token),
            json!({}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    // One arrival of two: the delivery is still in transit.
    let half = http
        .wait_until(&delivery, Some(&buyer_token), |d| {
            d["shipments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["status"] == "DELIVERED")
        })
        .await;
    assert_eq!(half["status"], "IN_TRANSIT", "{half}");
    assert_eq!(
        half["shipments"].as_array().unwrap().len(),
        2,
        "the buyer sees both"
    );
    let (code, body) = http
        .post(
            &format!("{}/end", shipment(&vendor2_id)),
            Some(&vendor2_token),
            json!({}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let done = http
        .wait_view(
            &format!("/orders/{order_id}"),
            Some(&buyer_token),
            Some("COMPLETED"),
        )
        .await;
    assert_eq!(done["delivery_status"], "DELIVERED");
    // Exactly one mail per shipment step, and one for the whole order.
    {
        use pickple_processors::notification::{message_id, shipment_message_id};
        use pickple_schemas::NotificationKind::*;
        let ids = [
            message_id(&order_id, OrderConfirmed),
            shipment_message_id(&order_id, &vendor_id, ShipmentStarted),
            shipment_message_id(&order_id, &vendor2_id, ShipmentStarted),
            shipment_message_id(&order_id, &vendor_id, ShipmentDelivered),
            shipment_message_id(&order_id, &vendor2_id, ShipmentDelivered),
            message_id(&order_id, DeliveryCompleted),
        ];
        let mails = wait_mails(&ids).await;
        let started2 = common::body(&mails[2]);
        assert!(
            started2.contains(&vendor2_id)
                && started2.contains("EPOST")
                && started2.contains("E-2"),
            "{started2}"
        );
    }

    // A second two-vendor order, paid and then cancelled: no shipment had started, so both
    // are cancelled and the payment is refunded once.
    let (code, second) = http
        .post(
            "/orders",
            Some(&buyer_token),
            json!({"lines": [{"product_id": product_id, "quantity": 1}, {"product_id": product2_id, "quantity": 1}], "shipping": shipping}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    http.wait_view(
        &format!("/orders/{second_id}"),
        Some(&buyer_token),
        Some("AWAITING_PAYMENT"),
    )
    .await;
    let (code, body) = http
        .post(
            &format!("/orders/{second_id}/pay"),
            Some(&buyer_token),
            json!({"payment_token": "tok_visa"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    http.wait_view(
        &format!("/deliveries/{second_id}"),
        Some(&buyer_token),
        Some("PENDING"),
    )
    .await;
    let (code, body) = http
        .post(
            &format!("/orders/{second_id}/cancel"),
            Some(&buyer_token),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let cancelled = http
        .wait_until(&format!("/orders/{second_id}"), Some(&buyer_token), |o| {
            o["payment_status"] == "REFUNDED"
        })
        .await;
    assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
    let gone = http
        .wait_view(
            &format!("/deliveries/{second_id}"),
            Some(&buyer_token),
            Some("CANCELLED"),
        )
        .await;
    assert!(
        gone["shipments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "CANCELLED"),
        "{gone}"
    );
    {
        let seen = shop.pipeline.seen.lock().unwrap();
        let refunds = seen
            .records("payment-commands")
            .iter()
            .filter(|(k, v)| *k == second_id && v["type"] == "Refund")
            .count();
        let cancels = seen
            .records("order-replies")
            .iter()
            .filter(|(k, v)| *k == second_id && v["type"] == "DeliveryCancelled")
            .count();
        assert_eq!((refunds, cancels), (1, 1), "one refund for both shipments");
    }

    // One order, sold stock, three notifications.
    let (code, mine) = http.get("/orders/mine", Some(&buyer_token)).await;
    assert_eq!(code, StatusCode::OK, "{mine}");
    let ids: Vec<String> = serde_json::to_string(&mine)
        .map(|t| t.matches(&order_id).map(String::from).collect())
        .unwrap();
    assert_eq!(ids.len(), 1, "exactly one order for the buyer: {mine}");
    let product = http
        .wait_until(
            &format!("/products/{product_id}"),
            Some(&vendor_token),
            |p| p["stock"]["sold"] == 2,
        )
        .await;
    assert_eq!(
        product["stock"]["available"], 8,
        "the cancelled order's unit came back"
    );
    // Six for the first order (above), the second's confirmation.
    let notified = pipeline_wait_notifications(http, &buyer_token, 7).await;
    assert_eq!(notified, 7, "{notified} notifications");

    // The manager deletes the vendor: its product goes with it, and is no longer sold. The
    // catalog sends the product's deletion in the transaction that publishes the deleted
    // vendor, so an order placed once the view shows it reserves after the deletion.
    let (code, body) = http
        .call(
            reqwest::Method::DELETE,
            &format!("/vendors/{vendor_id}"),
            Some(&vendor_token),
            None,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    http.wait_until(&format!("/vendors/{vendor_id}"), None, |v| {
        v["deleted"] == true
    })
    .await;
    let (code, placed) = http
        .post(
            "/orders",
            Some(&buyer_token),
            json!({"lines": [{"product_id": product_id, "quantity": 1}], "shipping": shipping}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{placed}");
    let refused = http
        .wait_view(
            &format!("/orders/{}", placed["id"].as_str().unwrap()),
            Some(&buyer_token),
            Some("CANCELLED"),
        )
        .await;
    let reason = last_reason(&refused);
    assert_eq!(
        reason,
        format!("{product_id}: not found: the product was deleted"),
        "{refused}"
    );

    // A password change voids the buyer's tokens as soon as the users processor has recorded
    // it: the token version in the user's view moves on.
    let (code, me) = http.get("/users/me", Some(&buyer_token)).await;
    assert_eq!(code, StatusCode::OK, "{me}");
    let (code, body) = http
        .call(
            reqwest::Method::PATCH,
            "/users/me",
            Some(&buyer_token),
            Some(json!({"password": "another-horse-2"})),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let (code, changed) = http
        .get(
            &format!("/users/me?wait=30&after_version={}", me["version"]),
            Some(&buyer_token),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{changed}");
    assert!(
        changed["version"].as_u64() > me["version"].as_u64(),
        "{changed}"
    );
    let (code, _) = http.get("/users/me", Some(&buyer_token)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "the old token is void");
    let (code, _) = http
        .post(
            "/auth/sign-in",
            None,
            json!({"username": buyer, "password": "correct-horse-1"}),
        )
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "the old password");
    let (code, body) = http
        .post(
            "/auth/sign-in",
            None,
            json!({"username": buyer, "password": "another-horse-2"}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    shop.stop().await;
}

/// A reservation sale through HTTP and the real processors: the vendor opens a sale, a buyer
/// takes 2 (`GET /sales/{id}/mine` says 2, and the buyer sees states, not levels), lowering the
/// sale below 2 and deleting it are refused in the product's view, the vendor closes the sale
/// early, and the buyer's next order has its sale line refused: CANCELLED with
/// the stock processor's reason, the 2 units still taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_is_taken_counted_per_buyer_and_closed_early() {
    let shop = Shop::start("sale").await;
    let http = &shop.http;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let vendor_token = http
        .sign_up_and_in(&format!("vend{suffix}"), "VENDOR_MANAGER")
        .await;
    let buyer_token = http.sign_up_and_in(&format!("buy{suffix}"), "USER").await;

    let (_, product_id) = http
        .stocked_product(
            &vendor_token,
            "Sale Shop",
            json!({"name": "Limited mug", "price": 1500}),
            20,
        )
        .await;
    let path = format!("/products/{product_id}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (code, body) = http
        .post(
            &format!("{path}/sale"),
            Some(&vendor_token),
            json!({"opens_at": now - 60_000, "closes_at": now + 3_600_000, "quantity": 10, "per_user_limit": 3}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    http.wait_until(&path, Some(&vendor_token), |p| {
        p["sale"]["terms"]["quantity"] == 10 && p["stock"]["available"] == 20
    })
    .await;
    let (code, listed) = http.get("/sales", None).await;
    assert_eq!(code, StatusCode::OK, "{listed}");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["product_id"] == product_id.as_str() && s["state"] == "OPEN"),
        "{listed}"
    );

    // The buyer takes 2.
    let line =
        json!({"lines": [{"product_id": product_id, "quantity": 2}], "shipping": shipping()});
    let (code, first) = http.post("/orders", Some(&buyer_token), line.clone()).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{first}");
    let first_id = first["id"].as_str().unwrap().to_string();
    http.wait_view(
        &format!("/orders/{first_id}"),
        Some(&buyer_token),
        Some("AWAITING_PAYMENT"),
    )
    .await;
    // The count is published with the product's change; the product view's version orders it.
    http.wait_until(&path, Some(&vendor_token), |p| p["sale"]["taken"] == 2)
        .await;
    // The buyer's count, long-polled until the sink has written it.
    let mine = http
        .wait_until(
            &format!("/sales/{product_id}/mine"),
            Some(&buyer_token),
            |m| m["taken"] == 2,
        )
        .await;
    assert_eq!(mine["taken"], 2, "{mine}");
    assert_eq!(mine["state"], "OPEN", "{mine}");
    // The buyer sees states; the vendor the numbers.
    let (_, seen) = http.get(&path, Some(&buyer_token)).await;
    assert!(seen.get("stock").is_none(), "{seen}");
    assert_eq!(seen["availability"], "IN_STOCK", "{seen}");
    assert_eq!(seen["sale"]["state"], "OPEN", "{seen}");

    // Fewer units than are taken: accepted by the gateway, refused by the stock processor in the
    // product's view; a sale that has opened cannot be deleted either.
    let (code, body) = http
        .call(
            reqwest::Method::PUT,
            &format!("{path}/sale/quantity"),
            Some(&vendor_token),
            Some(json!({"quantity": 1})),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let refused = http
        .wait_until(&path, Some(&vendor_token), |p| !p["rejection"].is_null())
        .await;
    assert!(
        refused["rejection"]
            .as_str()
            .unwrap()
            .contains("below the 2 units already taken"),
        "{refused}"
    );
    assert_eq!(refused["sale"]["terms"]["quantity"], 10, "{refused}");
    let (code, body) = http
        .call(
            reqwest::Method::DELETE,
            &format!("{path}/sale"),
            Some(&vendor_token),
            None,
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let version = refused["version"].as_u64().unwrap();
    let refused = http
        .wait_until(&path, Some(&vendor_token), |p| {
            p["version"].as_u64() > Some(version)
        })
        .await;
    assert!(
        refused["rejection"].as_str().unwrap().contains("opened"),
        "{refused}"
    );

    // The vendor closes the sale early.
    let (code, body) = http
        .post(
            &format!("{path}/sale/close"),
            Some(&vendor_token),
            json!({}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let closed = http
        .wait_until(&path, Some(&vendor_token), |p| {
            p["sale"]["closed_at"].is_i64()
        })
        .await;
    assert_eq!(closed["sale"]["taken"], 2, "taken units stay: {closed}");
    let (_, sale) = http.get(&format!("/sales/{product_id}"), None).await;
    assert_eq!(sale["state"], "CLOSED", "{sale}");

    // The next order's sale line is refused.
    let (code, second) = http.post("/orders", Some(&buyer_token), line).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{second}");
    let second_id = second["id"].as_str().unwrap().to_string();
    let cancelled = http
        .wait_view(
            &format!("/orders/{second_id}"),
            Some(&buyer_token),
            Some("CANCELLED"),
        )
        .await;
    assert!(
        cancelled.to_string().contains("the sale is closed"),
        "{cancelled}"
    );
    let (_, mine) = http
        .get(&format!("/sales/{product_id}/mine"), Some(&buyer_token))
        .await;
    assert_eq!(mine["taken"], 2, "{mine}");

    shop.stop().await;
}

/// The mails with these Message-IDs, exactly one each, once all are in the sink (60 s at most).
async fn wait_mails(ids: &[String]) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let wanted = ids.to_vec();
        let found = tokio::task::spawn_blocking(move || {
            wanted
                .iter()
                .map(|id| common::mails_with_id(id))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        if found.iter().all(|m| !m.is_empty()) {
            for (id, m) in ids.iter().zip(&found) {
                assert_eq!(m.len(), 1, "exactly one mail {id}");
            }
            return found.into_iter().map(|mut m| m.remove(0)).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing mails: {:?}",
            ids.iter()
                .zip(&found)
                .filter(|(_, m)| m.is_empty())
                .map(|(id, _)| id)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await; // the maildir has no event to await
    }
}

/// The buyer's notification history, once the sink has `want` (they follow the COMPLETED
/// view, which the notification app publishes independently).
async fn pipeline_wait_notifications(http: &Http, token: &str, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (code, body) = http.get("/notifications/mine", Some(token)).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let items = body
            .get("items")
            .and_then(Value::as_array)
            .map(Vec::len)
            .or_else(|| body.as_array().map(Vec::len))
            .unwrap_or(0);
        if items >= want || std::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await; // the list has no long-poll
    }
}
