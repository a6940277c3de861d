//! Payments through the gateway: who reads a payment, MASTER's filtered listing, and MASTER's
//! refund, which publishes the order's cancel (the saga's refund path) on `order-commands`.

mod common;

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::{json, Value};

fn payment_view(order: &str, user: &str, status: &str, at: i64, version: u64) -> Value {
    json!({
        "order_id": order, "username": user, "status": status, "amount": 700,
        "payment_id": if status == "DECLINED" { Value::Null } else { json!("pay-1") },
        "decline_reason": if status == "DECLINED" { json!("card declined") } else { Value::Null },
        "refunded_amount": if status == "REFUNDED" { json!(700) } else { Value::Null },
        "refund_reason": null, "created_at": at, "authorized_at": null, "refunded_at": null,
        "updated_at": at,
        "history": [{"kind": "AUTHORIZE_REQUESTED", "at": at, "amount": 700}],
        "rejection": null, "version": version
    })
}

fn ids(listing: &Value) -> Vec<&str> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["order_id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buyer_and_master_read_a_payment_and_others_get_a_404() {
    let gw = Gw::start().await;
    let ann = gw.token("ann1", Role::User);
    let bob = gw.token("bob1", Role::User);
    let vendor = gw.token("vend1", Role::VendorManager);
    let master = gw.token("root", Role::Master);
    gw.put_view(
        Kind::Payment,
        "o1",
        &payment_view("o1", "ann1", "AUTHORIZED", 10, 2),
    );
    gw.put_view(
        Kind::Payment,
        "o2",
        &payment_view("o2", "bob1", "DECLINED", 20, 1),
    );

    let (s, p) = gw.get("/api/v1/payments/o1", Some(&ann)).await;
    assert_eq!((s, p["status"].as_str()), (200, Some("AUTHORIZED")), "{p}");
    assert_eq!(p["history"][0]["kind"], "AUTHORIZE_REQUESTED");
    for token in [&bob, &vendor] {
        let (s, e) = gw.get("/api/v1/payments/o1", Some(token)).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{e}"
        );
    }
    let (s, e) = gw.get("/api/v1/payments/nope", Some(&ann)).await;
    assert_eq!(s, 404, "{e}");
    let (s, _) = gw.get("/api/v1/payments/o1", None).await;
    assert_eq!(s, 401);
    let (s, p) = gw.get("/api/v1/payments/o2", Some(&master)).await;
    assert_eq!((s, p["username"].as_str()), (200, Some("bob1")));

    // Each buyer lists their own.
    let (s, mine) = gw.get("/api/v1/payments/mine", Some(&ann)).await;
    assert_eq!((s, ids(&mine)), (200, vec!["o1"]), "{mine}");
    assert_eq!(mine["total"], 1);
    let (_, mine) = gw.get("/api/v1/payments/mine", Some(&vendor)).await;
    assert_eq!(mine["total"], 0);

    // A long-poll for REFUNDED is answered by the refund's view.
    let waiting = {
        let (http, url, ann) = (
            gw.http.clone(),
            gw.url("/api/v1/payments/o1?wait=20&status=REFUNDED"),
            ann.clone(),
        );
        tokio::spawn(async move {
            into_parts(http.get(url).bearer_auth(ann).send().await.unwrap()).await
        })
    };
    gw.until_waiting(Kind::Payment, "o1", Some(2), 1).await;
    gw.put_view(
        Kind::Payment,
        "o1",
        &payment_view("o1", "ann1", "REFUNDED", 10, 3),
    );
    let (s, p) = waiting.await.unwrap();
    assert_eq!(
        (s, p["status"].as_str(), p["version"].as_u64()),
        (200, Some("REFUNDED"), Some(3))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_lists_payments_by_status_and_buyer() {
    let gw = Gw::start().await;
    let ann = gw.token("ann1", Role::User);
    let master = gw.token("root", Role::Master);
    gw.put_view(
        Kind::Payment,
        "o1",
        &payment_view("o1", "ann1", "AUTHORIZED", 10, 1),
    );
    gw.put_view(
        Kind::Payment,
        "o2",
        &payment_view("o2", "ann1", "DECLINED", 20, 1),
    );
    gw.put_view(
        Kind::Payment,
        "o3",
        &payment_view("o3", "bob1", "DECLINED", 30, 1),
    );
    gw.put_view(
        Kind::Payment,
        "o4",
        &payment_view("o4", "bob1", "REFUNDED", 40, 1),
    );

    let (s, e) = gw.get("/api/v1/payments", Some(&ann)).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );

    let list = |q: &'static str| {
        let master = master.clone();
        let gw = &gw;
        async move { gw.get(&format!("/api/v1/payments{q}"), Some(&master)).await }
    };
    let (s, all) = list("").await;
    assert_eq!(
        (s, ids(&all)),
        (200, vec!["o4", "o3", "o2", "o1"]),
        "newest first: {all}"
    );
    let (_, declined) = list("?status=DECLINED").await;
    assert_eq!(ids(&declined), vec!["o3", "o2"]);
    let (_, anns) = list("?username=Ann1").await;
    assert_eq!(ids(&anns), vec!["o2", "o1"], "the username is normalized");
    let (_, both) = list("?username=ann1&status=DECLINED").await;
    assert_eq!((ids(&both), both["total"].as_u64()), (vec!["o2"], Some(1)));
    let (_, paged) = list("?status=DECLINED&offset=1&limit=1").await;
    assert_eq!(
        (ids(&paged), paged["total"].as_u64()),
        (vec!["o2"], Some(2))
    );
    // A status leaves its old index when the payment moves on.
    gw.put_view(
        Kind::Payment,
        "o2",
        &payment_view("o2", "ann1", "AUTHORIZED", 20, 2),
    );
    let (_, declined) = list("?status=DECLINED").await;
    assert_eq!(ids(&declined), vec!["o3"]);

    for bad in [
        "?status=PAID",
        "?status=declined",
        "?username=x!",
        "?status=REQUESTED",
    ] {
        let (s, e) = list(bad).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (422, Some("validation_failed")),
            "{bad}: {e}"
        );
    }
    let (s, e) = list("?status=PAID").await;
    assert_eq!(s, 422);
    assert!(
        e.to_string().contains("AUTHORIZED, DECLINED, REFUNDED"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_refunds_by_cancelling_the_order() {
    let gw = Gw::start().await;
    let ann = gw.token("ann1", Role::User);
    let master = gw.token("root", Role::Master);
    gw.put_view(
        Kind::Order,
        "o1",
        &order_view("o1", "ann1", &["v1"], "PAID", 3),
    );
    gw.put_view(
        Kind::Payment,
        "o1",
        &payment_view("o1", "ann1", "AUTHORIZED", 10, 2),
    );
    let body = json!({"reason": "damaged in stock"});

    // Only MASTER refunds, not even the buyer (who cancels their order instead).
    let (s, e) = gw
        .post("/api/v1/payments/o1/refund", Some(&ann), &body)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    let (s, _) = gw.post("/api/v1/payments/o1/refund", None, &body).await;
    assert_eq!(s, 401);
    for bad in [
        json!({}),
        json!({"reason": "  "}),
        json!({"reason": "a\u{202E}b"}),
        json!({"reason": "x".repeat(501)}),
        json!({"reason": "ok", "amount": 5}),
    ] {
        let (s, e) = gw
            .post("/api/v1/payments/o1/refund", Some(&master), &bad)
            .await;
        assert_eq!(s, 422, "{bad}: {e}");
    }
    let (s, e) = gw
        .post("/api/v1/payments/o9/refund", Some(&master), &body)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{e}"
    );

    let refund = || {
        gw.http
            .post(gw.url("/api/v1/payments/o1/refund"))
            .bearer_auth(&master)
            .header("idempotency-key", "refund-1")
            .json(&body)
            .send()
    };
    let res = refund().await.unwrap();
    assert_eq!(res.status().as_u16(), 202);
    assert_eq!(res.headers()["location"], "/api/v1/payments/o1");
    let (_, first) = into_parts(res).await;
    assert_eq!(first["id"], "o1");
    let (s, again) = into_parts(refund().await.unwrap()).await;
    assert_eq!((s, &again["replayed"]), (202, &json!(true)));
    assert_eq!(again["command_id"], first["command_id"]);

    // The key names this refund: another reason under it is refused.
    let (s, e) = into_parts(
        gw.http
            .post(gw.url("/api/v1/payments/o1/refund"))
            .bearer_auth(&master)
            .header("idempotency-key", "refund-1")
            .json(&json!({"reason": "another reason"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );

    let records = read_topic(&gw.topic(topic::ORDER_COMMANDS));
    let mine: Vec<_> = records.iter().filter(|r| r.key == "o1").collect();
    assert_eq!(
        mine.len(),
        1,
        "one command for one Idempotency-Key: {records:?}"
    );
    assert_eq!(
        mine[0].value,
        json!({"type": "CancelOrder", "order_id": "o1", "username": "root", "master": true, "reason": "damaged in stock"})
    );
    assert_eq!(mine[0].headers["event-type"], "CancelOrder");
    assert_eq!(
        mine[0].headers["command-id"],
        first["command_id"].as_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_has_the_payment_routes_and_their_constraints() {
    let gw = Gw::start().await;
    let (s, doc) = gw.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/v1/payments", "get"),
        ("/api/v1/payments/mine", "get"),
        ("/api/v1/payments/{order_id}", "get"),
        ("/api/v1/payments/{order_id}/refund", "post"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path}");
    }
    let list = &paths["/api/v1/payments"]["get"];
    let status = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .unwrap();
    assert_eq!(
        status["schema"]["enum"],
        json!(["AUTHORIZED", "DECLINED", "REFUNDED"]),
        "{status}"
    );
    for code in ["200", "403", "422"] {
        assert!(list["responses"][code].is_object(), "{code}");
    }
    let refund = &paths["/api/v1/payments/{order_id}/refund"]["post"];
    for code in ["202", "401", "403", "404", "422"] {
        assert!(refund["responses"][code].is_object(), "{code}");
    }
    let reason = &doc["components"]["schemas"]["RefundRequest"]["properties"]["reason"];
    assert_eq!(reason["maxLength"].as_u64(), Some(500), "{reason}");
    assert!(
        reason["pattern"].is_string(),
        "not blank, no invisible characters: {reason}"
    );
    let view = &doc["components"]["schemas"]["PaymentView"];
    assert!(view["properties"]["history"].is_object(), "{view}");
}
