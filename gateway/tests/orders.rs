//! Orders through the gateway: Idempotency-Key, the command on the topic (read_committed) with
//! its headers, and long-polls woken by the views sink's change notices.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_places_one_order() {
    let gw = Gw::start().await;
    gw.put_user("alice", "password1", Role::User).await;
    gw.put_user("bob1", "password1", Role::User).await;
    let alice = gw.token("alice", Role::User);
    let bob = gw.token("bob1", Role::User);
    let body = json!({"lines": [{"product_id": "p1", "quantity": 2}], "shipping": shipping()});
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
    let other = json!({"lines": [{"product_id": "p2", "quantity": 1}], "shipping": shipping()});
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

    let records = read_topic(&gw.topic(topic::ORDER_COMMANDS));
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

/// A gateway killed between claiming an Idempotency-Key and publishing its command left the key
/// claimed with nothing on the topic, and every retry was answered "replayed" without
/// publishing: the order was lost. A repeat of a key whose command was never marked published
/// now publishes it again, with the first command id (the order processor takes an identical
/// PlaceOrder as a redelivery); a repeat of a published key publishes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_publishes_again_unless_the_first_command_was_published() {
    use redis::Commands;
    let gw = Gw::start().await;
    gw.put_user("carol", "password1", Role::User).await;
    let carol = gw.token("carol", Role::User);
    let body = json!({"lines": [{"product_id": "p1", "quantity": 1}], "shipping": shipping()});
    let place = || {
        gw.http
            .post(gw.url("/api/v1/orders"))
            .bearer_auth(carol.clone())
            .header("idempotency-key", "k-crash")
            .json(&body)
            .send()
    };
    let (s, first) = into_parts(place().await.unwrap()).await;
    assert_eq!(s, 202);
    let id = first["id"].as_str().unwrap().to_string();
    let (_, again) = into_parts(place().await.unwrap()).await;
    assert_eq!(again["replayed"], true);
    let commands = |gw: &Gw| -> Vec<String> {
        read_topic(&gw.topic(topic::ORDER_COMMANDS))
            .into_iter()
            .filter(|r| r.key == id)
            .map(|r| r.headers["command-id"].clone())
            .collect()
    };
    assert_eq!(
        commands(&gw).len(),
        1,
        "a published key publishes nothing again"
    );

    // What a gateway killed after the claim and before the publish leaves: the claim alone.
    let mut con = redis_con(&gw.config);
    let key = gw.state.views.keys.idempotency("carol", "order:k-crash");
    let stored: String = con.get(&key).unwrap();
    let claim_only = stored.trim_end_matches(" published").to_string();
    assert_ne!(
        claim_only, stored,
        "the published command is marked: {stored}"
    );
    let _: () = con.set(&key, &claim_only).unwrap();

    let (s, retried) = into_parts(place().await.unwrap()).await;
    assert_eq!(s, 202);
    assert_eq!(retried["id"], id.as_str());
    assert_eq!(retried["replayed"], true);
    assert_eq!(retried["command_id"], first["command_id"]);
    let published = commands(&gw);
    assert_eq!(
        published,
        vec![first["command_id"].as_str().unwrap().to_string(); 2],
        "the unmarked claim is published again, under the first command id"
    );
    let stored: String = con.get(&key).unwrap();
    assert!(stored.ends_with(" published"), "marked again: {stored}");
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
    gw.until_waiting(Kind::Order, "o-lp", None, 1).await;
    gw.put_view(
        Kind::Order,
        "o-lp",
        &order_view("o-lp", "alice", &[], "PENDING", 1),
    );
    // PENDING is not the awaited status: the waiter reads it and waits on.
    gw.until_waiting(Kind::Order, "o-lp", Some(1), 1).await;
    gw.put_view(
        Kind::Order,
        "o-lp",
        &order_view("o-lp", "alice", &[], "AWAITING_PAYMENT", 2),
    );
    let (elapsed, (s, body)) = waiter.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "AWAITING_PAYMENT");
    assert_eq!(body["version"], 2);
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
    gw.until_waiting(Kind::Order, "o-lp", Some(2), 20).await;
    assert_eq!(gw.state.notifier.waiters(), 20);
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
    gw.until_waiters(0).await;
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

    // Nothing changes: the current view after the wait, which says so.
    let start = Instant::now();
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/o-lp?wait=1", Some(&alice))
        .await;
    assert_eq!((s, body["version"].as_u64()), (200, Some(3)), "{body}");
    assert_eq!(header(&headers, "pickple-wait"), Some("timeout"));
    assert!(start.elapsed() >= Duration::from_millis(900));
    // No view, before or after the wait: 404.
    let (s, _) = gw.get("/api/v1/orders/never?wait=0.5", Some(&alice)).await;
    assert_eq!(s, 404);
    let (s, _) = gw.get("/api/v1/orders/never", Some(&alice)).await;
    assert_eq!(s, 404);
}

/// The order's status in a view is not the gateway's business: whatever it shows (and a view
/// may lag behind commands already accepted), pay and cancel are accepted and published, and
/// the order processor accepts or refuses them (a refusal shows in the view's `rejection`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_and_cancel_are_published_whatever_the_order_view_says() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    let bob = gw.token("bob1", Role::User);
    let pay = json!({"payment_token": "tok"});
    let mut expected = Vec::new();
    for (status, version) in [
        ("PENDING", 1),
        ("PAID", 2),
        ("SHIPPING", 3),
        ("COMPLETED", 4),
        ("CANCELLED", 5),
    ] {
        gw.put_view(
            Kind::Order,
            "o-2",
            &order_view("o-2", "alice", &[], status, version),
        );
        let (s, body) = gw.post("/api/v1/orders/o-2/pay", Some(&alice), &pay).await;
        assert_eq!(s, 202, "pay on {status}: {body}");
        assert_eq!(body["id"], "o-2");
        let (s, body) = gw
            .post(
                "/api/v1/orders/o-2/cancel",
                Some(&alice),
                &json!({"reason": "changed my mind"}),
            )
            .await;
        assert_eq!(s, 202, "cancel on {status}: {body}");
        expected.extend(["PayOrder", "CancelOrder"]);
    }
    // Identity and ownership are still the gateway's: a stranger gets 404, bad input 422.
    let (s, _) = gw.post("/api/v1/orders/o-2/pay", Some(&bob), &pay).await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .post("/api/v1/orders/o-2/cancel", Some(&bob), &json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, body) = gw
        .post(
            "/api/v1/orders/o-2/pay",
            Some(&alice),
            &json!({"payment_token": "  "}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("payment_token"))
    );
    let records = read_topic(&gw.topic(topic::ORDER_COMMANDS));
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r.value["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, expected);
    assert!(records.iter().all(|r| r.key == "o-2"));
    assert!(records
        .iter()
        .all(|r| r.value["username"] == "alice" && r.value["order_id"] == "o-2"));
}

/// A MASTER cancels a customer's order: the command names the MASTER as the requester, with
/// `master` set, and the order processor's rules (`pickple_domain::order`) cancel the
/// customer's order with it. A customer who does not own the order gets 404, and nothing of
/// theirs is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_cancels_a_customers_order_a_stranger_cannot() {
    use pickple_domain::order::{Order, OrderInput};
    use pickple_domain::Aggregate;
    use pickple_schemas::{OrderCommand, OrderLine, OrderStatus};

    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    let bob = gw.token("bob1", Role::User);
    gw.put_view(
        Kind::Order,
        "o-m",
        &order_view("o-m", "alice", &[], "PENDING", 1),
    );
    let (s, body) = gw
        .post("/api/v1/orders/o-m/cancel", Some(&bob), &json!({}))
        .await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = gw
        .post(
            "/api/v1/orders/o-m/cancel",
            Some(&root),
            &json!({"reason": "fraud"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["id"], "o-m");

    let records = read_topic(&gw.topic(topic::ORDER_COMMANDS));
    assert_eq!(records.len(), 1, "only the MASTER's cancel: {records:?}");
    let cancel: OrderCommand = serde_json::from_value(records[0].value.clone()).unwrap();
    assert_eq!(
        cancel,
        OrderCommand::CancelOrder {
            order_id: "o-m".into(),
            username: "root".into(),
            reason: "fraud".into(),
            master: true,
        }
    );

    // What the order processor does with it: alice's order ends CANCELLED.
    let rules = Order {
        payment_timeout_ms: 300_000,
    };
    let place = OrderCommand::PlaceOrder {
        order_id: "o-m".into(),
        username: "alice".into(),
        email: "alice@example.com".into(),
        lines: vec![OrderLine {
            product_id: "p1".into(),
            quantity: 1,
        }],
        shipping: None,
    };
    let placed = rules.handle(None, &OrderInput::Command(place), 1_000).state;
    let out = rules.handle(placed.clone(), &OrderInput::Command(cancel), 2_000);
    assert_eq!(out.rejection, None);
    assert_eq!(out.state.map(|o| o.status), Some(OrderStatus::Cancelled));
    // The flag is what lets it through: the same cancel from a non-owner without it is refused.
    let stranger = OrderCommand::CancelOrder {
        order_id: "o-m".into(),
        username: "root".into(),
        reason: "fraud".into(),
        master: false,
    };
    let out = rules.handle(placed, &OrderInput::Command(stranger), 2_000);
    assert!(out.rejection.is_some());
}

/// A long-poll for a status answers when the command is refused instead: a newer view that
/// carries a `rejection` (as the order processor publishes it) ends the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_long_poll_answers_when_the_command_is_refused() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    gw.put_view(
        Kind::Order,
        "o-r",
        &order_view("o-r", "alice", &[], "PENDING", 1),
    );
    let waiter = {
        let http = gw.http.clone();
        let url = gw.url("/api/v1/orders/o-r?wait=20&status=PAID");
        let token = alice.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            (start.elapsed(), into_parts(res).await)
        })
    };
    gw.until_waiting(Kind::Order, "o-r", Some(1), 1).await;
    let mut refused = order_view("o-r", "alice", &[], "PENDING", 2);
    refused["rejection"] = json!("not allowed now: the stock is not reserved yet");
    gw.put_view(Kind::Order, "o-r", &refused);
    let (elapsed, (s, body)) = waiter.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["version"], 2);
    assert!(body["rejection"].as_str().unwrap().contains("not reserved"));
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // A rejection that was there before the wait began does not answer it.
    let start = Instant::now();
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/o-r?wait=1&status=PAID", Some(&alice))
        .await;
    assert_eq!((s, body["version"].as_u64()), (200, Some(2)), "{body}");
    assert_eq!(header(&headers, "pickple-wait"), Some("timeout"));
    assert!(start.elapsed() >= Duration::from_millis(900));
}

/// Reads and commands while the views sink has never reported (503: nothing to serve), after
/// it stopped reporting (degraded: stale views served, commands accepted), and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sink_answers_503_and_a_dead_one_degrades_the_views() {
    let gw = Gw::start_with(false, |_| {}).await;
    let alice = gw.token("alice", Role::User);
    gw.put_view(
        Kind::Order,
        "o-1",
        &order_view("o-1", "alice", &["v-1"], "AWAITING_PAYMENT", 2),
    );
    // Never reported.
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/mine", Some(&alice))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("views_unavailable")),
        "{body}"
    );
    assert!(header(&headers, "pickple-views-lag").is_none());
    let (s, _) = gw.get("/api/v1/orders/o-1", Some(&alice)).await;
    assert_eq!(s, 503);
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!(s, 503);
    assert_eq!(body["kafka"]["ok"], true);
    assert_eq!(body["redis"]["ok"], true);
    assert_eq!(body["views"]["ok"], false);
    // An ownership check needs views: 503, nothing published.
    let pay = json!({"payment_token": "tok"});
    let (s, body) = gw.post("/api/v1/orders/o-1/pay", Some(&alice), &pay).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("views_unavailable"))
    );
    assert!(read_topic(&gw.topic(topic::ORDER_COMMANDS)).is_empty());

    // Reported, then stopped (killed, restarting, waiting for a broker): the last heartbeat is
    // older than the staleness bound (15 s). The views are served, marked stale, lag unknown.
    gw.heartbeat(&[0; 6], 60_000).await;
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/o-1", Some(&alice))
        .await;
    assert_eq!(
        (s, body["status"].as_str()),
        (200, Some("AWAITING_PAYMENT")),
        "{body}"
    );
    assert_eq!(header(&headers, "pickple-views-stale"), Some("true"));
    assert!(header(&headers, "pickple-views-lag").is_none());
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!(
        s, 200,
        "a silent sink degrades the gateway, it does not take it out: {body}"
    );
    assert_eq!(body["degraded"], true);
    assert_eq!(body["views"]["stale"], true);
    assert_eq!(body["views"]["ok"], false);
    assert!(body["views"]["error"]
        .as_str()
        .unwrap()
        .contains("no heartbeat"));
    // Commands go on: the ownership check reads the (stale) view.
    let (s, body) = gw.post("/api/v1/orders/o-1/pay", Some(&alice), &pay).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(read_topic(&gw.topic(topic::ORDER_COMMANDS)).len(), 1);

    // Alive again.
    gw.heartbeat(&[0; 6], 0).await;
    let (s, body) = gw.get("/ready", None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["degraded"], false);
    let (s, headers, _) = gw
        .get_with_headers("/api/v1/orders/mine", Some(&alice))
        .await;
    assert_eq!(s, 200);
    assert_eq!(header(&headers, "pickple-views-lag"), Some("0"));
    assert!(header(&headers, "pickple-views-stale").is_none());
}

/// A vendor who starts a delivery and ends it at once (the view still says PENDING) gets two
/// 202s, and both commands are published in order: the delivery processor takes them in that
/// order (one partition per order), so the order completes. Out-of-order steps are published
/// too, and refused there (visibly, in the delivery view's `rejection`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_steps_are_published_whatever_the_delivery_view_says() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    let max = gw.token("max1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v-mia", &vendor_view("v-mia", "mia1", 1));
    gw.put_view(
        Kind::Delivery,
        "o-d",
        &delivery_view("o-d", "alice", &["v-mia"], "PENDING", 1),
    );
    let start =
        json!({"carrier": "CJ_LOGISTICS", "delivery_type": "COURIER", "tracking_number": "T1"});
    let detail = json!({"location": "Seoul hub", "description": "sorted"});
    let (s, body) = gw
        .post("/api/v1/deliveries/o-d/start", Some(&mia), &start)
        .await;
    assert_eq!(s, 202, "{body}");
    let (s, body) = gw
        .post("/api/v1/deliveries/o-d/end", Some(&mia), &json!({}))
        .await;
    assert_eq!(s, 202, "end right after start, view still PENDING: {body}");
    // Out of order for the view (PENDING, then DELIVERED): still the processor's decision.
    let (s, body) = gw
        .post("/api/v1/deliveries/o-d/details", Some(&mia), &detail)
        .await;
    assert_eq!(s, 202, "{body}");
    gw.put_view(
        Kind::Delivery,
        "o-d",
        &delivery_view("o-d", "alice", &["v-mia"], "DELIVERED", 3),
    );
    let (s, body) = gw
        .post("/api/v1/deliveries/o-d/start", Some(&mia), &start)
        .await;
    assert_eq!(s, 202, "{body}");
    // Ownership and shape are still checked here.
    let (s, _) = gw
        .post("/api/v1/deliveries/o-d/end", Some(&max), &json!({}))
        .await;
    assert_eq!(s, 403);
    let (s, body) = gw
        .post(
            "/api/v1/deliveries/o-d/details",
            Some(&mia),
            &json!({"location": "Seoul hub"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("description")),
        "the delivery processor refuses an empty description: so does the gateway"
    );
    let records = read_topic(&gw.topic(topic::DELIVERY_COMMANDS));
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r.value["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            "StartDelivery",
            "EndDelivery",
            "AddDeliveryDetail",
            "StartDelivery"
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.key == "o-d" && r.value["by"] == "mia1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_honours_an_idempotency_key() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(
        Kind::Order,
        "o-3",
        &order_view("o-3", "alice", &[], "PENDING", 1),
    );
    gw.put_view(Kind::Vendor, "v-1", &vendor_view("v-1", "mia1", 1));
    gw.put_view(Kind::Product, "p-1", &product_view("p-1", "v-1", true, 1));
    let send = |path: &'static str, token: String, key: &'static str, body: serde_json::Value| {
        let http = gw.http.clone();
        let url = gw.url(path);
        async move {
            let res = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            into_parts(res).await
        }
    };
    for (path, token, body) in [
        (
            "/api/v1/orders/o-3/pay",
            alice.clone(),
            json!({"payment_token": "tok"}),
        ),
        (
            "/api/v1/orders/o-3/cancel",
            alice.clone(),
            json!({"reason": "no"}),
        ),
        (
            "/api/v1/products/p-1/stock",
            mia.clone(),
            json!({"quantity": 5}),
        ),
        (
            // Not signed in: the key is scoped to the account the code is for.
            "/api/v1/auth/confirm-email",
            String::new(),
            json!({"username": "alice", "code": "c0ffee"}),
        ),
    ] {
        let (s, first) = send(path, token.clone(), "k-1", body.clone()).await;
        assert_eq!(s, 202, "{path}: {first}");
        let (s, again) = send(path, token.clone(), "k-1", body.clone()).await;
        assert_eq!(s, 202, "{path}: {again}");
        assert_eq!(again["command_id"], first["command_id"], "{path}");
        assert_eq!(again["replayed"], true, "{path}");
        // The same key for another request is refused.
        let mut other = body.clone();
        if let Some(q) = other.get_mut("quantity") {
            *q = json!(6);
        } else if let Some(r) = other.get_mut("reason") {
            *r = json!("other");
        } else if let Some(c) = other.get_mut("code") {
            *c = json!("beef");
        } else {
            other["payment_token"] = json!("other");
        }
        let (s, body) = send(path, token, "k-1", other).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{path}"
        );
    }
    let count = |topic: &str, kind: &str| {
        read_topic(&gw.topic(topic))
            .iter()
            .filter(|r| r.value["type"] == kind)
            .count()
    };
    assert_eq!(count(topic::ORDER_COMMANDS, "PayOrder"), 1);
    assert_eq!(count(topic::ORDER_COMMANDS, "CancelOrder"), 1);
    assert_eq!(
        count(topic::STOCK_COMMANDS, "AddStock"),
        1,
        "stock added once"
    );
    assert_eq!(count(topic::USER_COMMANDS, "ConfirmEmail"), 1);
}
