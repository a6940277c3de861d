//! MASTER's refund through HTTP and the real processors: the gateway in-process, every processor
//! and the views sink on threads, against the real local Kafka, Redis and SMTP sink.
//!
//! A buyer's first payment is declined, the second authorized; MASTER refunds the order before
//! it ships: the order ends CANCELLED and `GET /payments/{id}` shows REFUNDED with every attempt
//! and outcome. A second order is shipped first: MASTER's refund is refused (on the order's view)
//! and its payment stays AUTHORIZED.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_runtime, Pipeline};
use pickple_processors::{App, AppConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}/api/v1{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    /// The view once it exists, long-polled (`after_version=0` answers with any view there is).
    async fn wait_view(&self, path: &str, token: &str) -> Value {
        let (code, view) = self
            .get(&format!("{path}?wait=30&after_version=0"), Some(token))
            .await;
        assert_eq!(code, StatusCode::OK, "{path}: {view}");
        view
    }

    /// Long-poll until `pred` holds for the view, following its versions.
    async fn wait_until(&self, path: &str, token: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut view = self.wait_view(path, token).await;
        while !pred(&view) {
            let version = view["version"].as_u64().expect("views carry a version");
            let (code, next) = self
                .get(
                    &format!("{path}?wait=30&after_version={version}"),
                    Some(token),
                )
                .await;
            assert_eq!(code, StatusCode::OK, "{path} after v{version}: {next}");
            assert!(
                next["version"].as_u64() > Some(version),
                "{path}: no version after v{version} within 30 s: {next}"
            );
            view = next;
        }
        view
    }

    async fn sign_in(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.post(
            "/auth/sign-in",
            None,
            json!({"username": username, "password": password}),
        )
        .await
    }

    /// A USER signed up, confirmed with the code mailed to it, and signed in.
    async fn buyer(&self, username: &str) -> String {
        let email = format!(
            "{username}.{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (code, body) = self
            .post(
                "/auth/sign-up",
                None,
                json!({"username": username, "nickname": username, "email": email, "password": "correct-horse-1"}),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let status = body["location"].as_str().unwrap();
        let status = status.strip_prefix("/api/v1").unwrap_or(status).to_string();
        let mailed = mailed_code(&email).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (code, body) = self
                .post(
                    "/auth/confirm-email",
                    None,
                    json!({"username": username, "code": mailed}),
                )
                .await;
            // The mail can come before the views sink has written the user's view.
            if code == StatusCode::NOT_FOUND && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await; // no event to await
                continue;
            }
            assert_eq!(code, StatusCode::ACCEPTED, "{body}");
            break;
        }
        // The status link carries the sign-up's token in its query.
        let sep = if status.contains('?') { '&' } else { '?' };
        let (code, view) = self
            .get(&format!("{status}{sep}wait=30&status=ACTIVE"), None)
            .await;
        assert_eq!((code, &view["status"]), (StatusCode::OK, &json!("ACTIVE")));
        let (code, body) = self.sign_in(username, "correct-horse-1").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }

    /// Place an order of one unit of `product_id` and pay it with `tokens` in turn (each but the
    /// last declined); answers the order id once PAID.
    async fn paid_order(&self, buyer: &str, product_id: &str, tokens: &[&str]) -> String {
        let (code, placed) = self
            .post(
                "/orders",
                Some(buyer),
                json!({"lines": [{"product_id": product_id, "quantity": 1}]}),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{placed}");
        let order_id = placed["id"].as_str().unwrap().to_string();
        let order = format!("/orders/{order_id}");
        for token in tokens {
            self.wait_until(&order, buyer, |o| o["status"] == "AWAITING_PAYMENT")
                .await;
            let (code, body) = self
                .post(
                    &format!("{order}/pay"),
                    Some(buyer),
                    json!({"payment_token": token}),
                )
                .await;
            assert_eq!(code, StatusCode::ACCEPTED, "{body}");
            // Past PAYMENT_PENDING: back to AWAITING_PAYMENT with the decline, or PAID.
            self.wait_until(&order, buyer, |o| {
                o["status"] == "PAID"
                    || (o["status"] == "AWAITING_PAYMENT"
                        && o["payment_status"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("DECLINED")))
            })
            .await;
        }
        self.wait_until(&order, buyer, |o| o["status"] == "PAID")
            .await;
        order_id
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_refunds_a_paid_order_before_it_ships_and_not_after() {
    common::ensure_maildir();
    let hash = pickple_gateway::auth::hash_password("master-horse-1".into())
        .await
        .unwrap();
    let config = AppConfig {
        master_username: Some("root".into()),
        master_email: Some("root@pickple.local".into()),
        master_password_hash: Some(hash),
        ..AppConfig::default()
    };
    let pipeline =
        tokio::task::spawn_blocking(move || Pipeline::start("pay", &config, &App::ALL).unwrap())
            .await
            .unwrap();
    let redis_prefix = format!("pay{}:", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let state = tempfile::tempdir().unwrap();
    let stop_views = Arc::new(AtomicBool::new(false));
    let mut views_runtime = test_runtime(&pipeline.prefix, state.path(), App::Users);
    views_runtime.state_dir = state.path().join("views");
    let views = {
        let (redis, stop) = (
            pickple_views::RedisConfig::local(redis_prefix.clone()),
            stop_views.clone(),
        );
        std::thread::spawn(move || pickple_views::run_until(views_runtime, redis, stop))
    };
    let gateway_config = pickple_gateway::Config::local(&pipeline.prefix, &redis_prefix);
    let gateway = pickple_gateway::AppState::new(gateway_config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = Http {
        base: format!("http://{}", listener.local_addr().unwrap()),
        client: reqwest::Client::new(),
    };
    let router = pickple_gateway::app(gateway);
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // MASTER signs in once the users app has created it and the sink has written its view.
    let deadline = Instant::now() + Duration::from_secs(60);
    let master = loop {
        let (code, body) = http.sign_in("root", "master-horse-1").await;
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
    let (code, vendor) = http
        .post("/vendors", Some(master), json!({"name": "Refund Shop"}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{vendor}");
    let vendor_id = vendor["id"].as_str().unwrap();
    http.wait_view(&format!("/vendors/{vendor_id}"), master)
        .await;
    let (code, product) = http
        .post(
            "/products",
            Some(master),
            json!({"vendor_id": vendor_id, "name": "Kettle", "description": "boils", "price": 3000, "public": true}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{product}");
    let product_id = product["id"].as_str().unwrap().to_string();
    http.wait_view(&format!("/products/{product_id}"), master)
        .await;
    let (code, body) = http
        .call(
            reqwest::Method::PUT,
            &format!("/products/{product_id}/stock"),
            Some(master),
            Some(json!({"quantity": 10})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    http.wait_until(&format!("/products/{product_id}"), master, |p| {
        p["stock"]["available"] == 10
    })
    .await;

    let buyer_name = format!("buy{}", &uuid::Uuid::new_v4().simple().to_string()[..4]);
    let buyer = http.buyer(&buyer_name).await;
    let buyer = buyer.as_str();

    // Declined once, then authorized.
    let order_id = http
        .paid_order(buyer, &product_id, &["tok_decline", "tok_ok"])
        .await;
    let payment = format!("/payments/{order_id}");
    let authorized = http
        .wait_until(&payment, buyer, |p| p["status"] == "AUTHORIZED")
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
        .wait_until(&payment, buyer, |p| p["status"] == "REFUNDED")
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
        .wait_until(&format!("/orders/{order_id}"), buyer, |o| {
            o["status"] == "CANCELLED" && o["payment_status"] == "REFUNDED"
        })
        .await;
    assert_eq!(order["rejection"], Value::Null, "{order}");
    // The units came back to the shelf.
    http.wait_until(&format!("/products/{product_id}"), master, |p| {
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
    let shipped = http.paid_order(buyer, &product_id, &["tok_ok"]).await;
    let delivery = format!("/deliveries/{shipped}");
    http.wait_until(&delivery, master, |d| d["status"] == "PENDING")
        .await;
    let (code, body) = http
        .post(
            &format!("{delivery}/start"),
            Some(master),
            json!({"carrier": "CJ", "delivery_type": "PARCEL", "tracking_number": "T-9"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let before = http
        .wait_until(&format!("/orders/{shipped}"), buyer, |o| {
            o["status"] == "SHIPPING"
        })
        .await;
    let (code, body) = http
        .post(&format!("/payments/{shipped}/refund"), Some(master), reason)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let refused = http
        .wait_until(&format!("/orders/{shipped}"), buyer, |o| {
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

    server.abort();
    stop_views.store(true, Ordering::Relaxed);
    views.join().unwrap().unwrap();
    tokio::task::spawn_blocking(move || pipeline.stop())
        .await
        .unwrap();
}

/// The code mailed to `email`, once the notification app has sent it to the sink (60 s at most).
async fn mailed_code(email: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let to = email.to_string();
        let found = tokio::task::spawn_blocking(move || common::confirmation_code(&to))
            .await
            .unwrap();
        if let Some(code) = found {
            return code;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation mail to {email} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await; // the maildir has no event to await
    }
}
