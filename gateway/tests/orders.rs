//! Orders through the gateway: Idempotency-Key, the command on the topic (read_committed) with
//! its headers, and long-polls woken by the views sink's change notices.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pickple_schemas::Role;
use pickple_views::Kind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_places_one_order() {
    let gw = Gw::start().await;
    gw.put_user("alice", "password1", Role::User).await;
    gw.put_user("bob1", "password1", Role::User).await;
    let alice = gw.token("alice", Role::User);
    let bob = gw.token("bob1", Role::User);
    let body = json!({"lines": [{"product_id": "p1", "quantity": 2}]});
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let place = |token: String, key: &'static str, body: serde_json::Value| {
        gw.http
            .post(gw.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .header("traceparent", trace)
            .json(&body)
            .send()
    };
    let first = place(alice.clone(), "k-1", body.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let (_, first) = into_parts(first).await;
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/orders/{id}"));
    assert_eq!(first["location"], location);

    let (s, second) = into_parts(place(alice.clone(), "k-1", body.clone()).await.unwrap()).await;
    assert_eq!(s, 202);
    assert_eq!(second["id"], id.as_str(), "same key, same order id");
    assert_eq!(second["replayed"], true);
    assert_eq!(second["command_id"], first["command_id"]);

    // The same key with another body is refused; another user's key is their own.
    let other = json!({"lines": [{"product_id": "p2", "quantity": 1}]});
    let (s, err) = into_parts(place(alice.clone(), "k-1", other).await.unwrap()).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let (s, bobs) = into_parts(place(bob.clone(), "k-1", body.clone()).await.unwrap()).await;
    assert_eq!(s, 202);
    assert_ne!(bobs["id"], id.as_str());
    // Without a key, every request is a new order.
    let (_, a) = gw.post("/api/v1/orders", Some(&alice), &body).await;
    let (_, b) = gw.post("/api/v1/orders", Some(&alice), &body).await;
    assert_ne!(a["id"], b["id"]);

    let records = read_topic(&gw.topic("order-commands"));
    let mine: Vec<_> = records.iter().filter(|r| r.key == id).collect();
    assert_eq!(
        mine.len(),
        1,
        "exactly one command for the order: {records:?}"
    );
    let rec = mine[0];
    assert_eq!(rec.value["type"], "PlaceOrder");
    assert_eq!(rec.value["order_id"], id.as_str());
    assert_eq!(rec.value["username"], "alice");
    assert_eq!(rec.value["email"], "alice@example.com");
    assert_eq!(rec.value["lines"][0]["quantity"], 2);
    assert_eq!(rec.headers["event-type"], "PlaceOrder");
    assert_eq!(rec.headers["schema-version"], "1");
    assert_eq!(
        rec.headers["command-id"],
        first["command_id"].as_str().unwrap()
    );
    assert_eq!(rec.headers["causation-id"], rec.headers["command-id"]);
    let tp = &rec.headers["traceparent"];
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert_eq!(records.len(), 4, "alice k-1, bob k-1, two unkeyed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_the_view_is_written() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);

    // The view does not exist yet: the waiter answers as soon as it appears.
    let waiter = {
        let http = gw.http.clone();
        let url = gw.url("/api/v1/orders/o-lp?wait=10&status=AWAITING_PAYMENT");
        let token = alice.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            (start.elapsed(), into_parts(res).await)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.put_view(
        Kind::Order,
        "o-lp",
        &order_view("o-lp", "alice", &[], "PENDING", 1),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "PENDING is not the awaited status");
    gw.put_view(
        Kind::Order,
        "o-lp",
        &order_view("o-lp", "alice", &[], "AWAITING_PAYMENT", 2),
    );
    let (elapsed, (s, body)) = waiter.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "AWAITING_PAYMENT");
    assert!(
        elapsed < Duration::from_secs(5),
        "woken by the notice, took {elapsed:?}"
    );

    // Many waiters on one key, plain "until it changes".
    let mut waiters = Vec::new();
    for _ in 0..20 {
        let http = gw.http.clone();
        let url = gw.url("/api/v1/orders/o-lp?wait=10");
        let token = alice.clone();
        waiters.push(tokio::spawn(async move {
            into_parts(http.get(url).bearer_auth(token).send().await.unwrap()).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gw.state.notifier.watched_keys(),
        1,
        "20 waiters share one key"
    );
    let start = Instant::now();
    gw.put_view(
        Kind::Order,
        "o-lp",
        &order_view("o-lp", "alice", &[], "PAID", 3),
    );
    for w in waiters {
        let (s, body) = w.await.unwrap();
        assert_eq!((s, body["version"].as_u64()), (200, Some(3)));
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gw.state.notifier.watched_keys(), 0, "waiters cleaned up");

    // An already satisfied condition answers at once; after_version waits for a newer one.
    let (s, body) = gw
        .get("/api/v1/orders/o-lp?wait=5&status=PAID", Some(&alice))
        .await;
    assert_eq!((s, body["version"].as_u64()), (200, Some(3)));
    let (s, _) = gw
        .get("/api/v1/orders/o-lp?wait=5&after_version=2", Some(&alice))
        .await;
    assert_eq!(s, 200);

    // Nothing changes: 504 after the wait.
    let start = Instant::now();
    let (s, body) = gw.get("/api/v1/orders/o-lp?wait=1", Some(&alice)).await;
    assert_eq!(s, 504);
    assert_eq!(body["error"]["code"], "wait_timeout");
    assert!(start.elapsed() >= Duration::from_millis(900));
    let (s, _) = gw.get("/api/v1/orders/never?wait=0.5", Some(&alice)).await;
    assert_eq!(s, 504);
    let (s, _) = gw.get("/api/v1/orders/never", Some(&alice)).await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_and_cancel_check_the_order_state() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    gw.put_view(
        Kind::Order,
        "o-2",
        &order_view("o-2", "alice", &[], "PENDING", 1),
    );
    let (s, body) = gw
        .post(
            "/api/v1/orders/o-2/pay",
            Some(&alice),
            &json!({"payment_token": "tok"}),
        )
        .await;
    assert_eq!((s, body["error"]["code"].as_str()), (409, Some("conflict")));
    gw.put_view(
        Kind::Order,
        "o-2",
        &order_view("o-2", "alice", &[], "AWAITING_PAYMENT", 2),
    );
    let (s, _) = gw
        .post(
            "/api/v1/orders/o-2/pay",
            Some(&alice),
            &json!({"payment_token": "tok"}),
        )
        .await;
    assert_eq!(s, 202);
    let (s, _) = gw
        .post(
            "/api/v1/orders/o-2/cancel",
            Some(&alice),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(s, 202);
    gw.put_view(
        Kind::Order,
        "o-2",
        &order_view("o-2", "alice", &[], "CANCELLED", 3),
    );
    let (s, _) = gw
        .post("/api/v1/orders/o-2/cancel", Some(&alice), &json!({}))
        .await;
    assert_eq!(s, 409);
    let kinds: Vec<String> = read_topic(&gw.topic("order-commands"))
        .into_iter()
        .map(|r| r.value["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, vec!["PayOrder", "CancelOrder"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_not_caught_up_answer_503() {
    let gw = Gw::start_with(false, |_| {}).await;
    let alice = gw.token("alice", Role::User);
    let (s, body) = gw.get("/api/v1/orders/mine", Some(&alice)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("views_not_ready"))
    );
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!(s, 503);
    assert_eq!(body["kafka"]["ok"], true);
    assert_eq!(body["redis"]["ok"], true);
    assert_eq!(body["views"]["ok"], false);
    mark_ready(&gw.config);
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = gw.get("/api/v1/orders/mine", Some(&alice)).await;
    assert_eq!(s, 200);
}
