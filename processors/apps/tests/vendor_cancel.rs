//! A vendor manager cancels, through HTTP, an unpaid order of their vendor's product that the
//! vendor cannot fill, with every processor and the views sink on threads and the gateway
//! in-process (real Kafka, Redis and SMTP sink): the order processor cancels it with the
//! vendor's reason and releases its stock, which is available again. A paid order is refused,
//! and the refusal shows in the order's view. The status filters of the listings follow the
//! order through the real views sink.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}/api/v1{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body), None)
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None, None)
            .await
    }

    /// The view, long-polling until it exists (and reaches `status`, when given): the gateway
    /// answers as soon as the views sink writes the change. (`after_version=0` answers with any
    /// view there is: a bare `?wait=` would wait for the change after the one that created a
    /// view between a plain read's 404 and the wait.) A wait that ends first answers the current
    /// view (200, `Pickple-Wait: timeout`), which the status check below rejects, or 404.
    async fn wait_view(&self, path: &str, token: Option<&str>, status: Option<&str>) -> Value {
        let sep = if path.contains('?') { '&' } else { '?' };
        let wait = match status {
            Some(s) => format!("wait=30&status={s}"),
            None => "wait=30&after_version=0".to_string(),
        };
        let (code, view) = self.get(&format!("{path}{sep}{wait}"), token).await;
        assert_eq!(code, StatusCode::OK, "{path}: {view}");
        if let Some(s) = status {
            assert_eq!(view["status"], s, "{path}: {view}");
        }
        view
    }

    /// Long-poll until `pred` holds for the view, following its versions.
    async fn wait_until(
        &self,
        path: &str,
        token: Option<&str>,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut view = self.wait_view(path, token, None).await;
        while !pred(&view) {
            let version = view["version"].as_u64().expect("views carry a version");
            let (code, next) = self
                .get(&format!("{path}?wait=30&after_version={version}"), token)
                .await;
            assert_eq!(code, StatusCode::OK, "{path} after v{version}: {next}");
            // A wait that ends without a newer version answers the same view (`Pickple-Wait:
            // timeout`): nothing happened in 30 s, which is a failure here.
            assert!(
                next["version"].as_u64() > Some(version),
                "{path}: no version after v{version} within 30 s: {next}"
            );
            view = next;
        }
        view
    }

    async fn sign_up_and_in(&self, username: &str, role: &str) -> String {
        // An address of this run only: the sink's maildir keeps earlier runs' mails.
        let email = format!(
            "{username}.{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (code, body) = self
            .post(
                "/auth/sign-up",
                None,
                json!({"username": username, "nickname": username, "email": email, "password": "correct-horse-1", "role": role}),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        // The signer's own status link (it carries the sign-up's token), under /api/v1.
        let location = body["location"].as_str().unwrap();
        let status = location.strip_prefix("/api/v1").unwrap_or(location);
        // PENDING until the code mailed to the address comes back.
        let mailed = mailed_code(&email).await;
        let (code, view) = self.get(status, None).await;
        assert_eq!(code, StatusCode::OK, "{view}");
        assert_eq!(
            view["status"], "PENDING",
            "not ACTIVE before the code: {view}"
        );
        let confirm_by = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (code, body) = self
                .post(
                    "/auth/confirm-email",
                    None,
                    json!({"username": username, "code": mailed}),
                )
                .await;
            // The mail can come before the views sink has written the user's view.
            if code == StatusCode::NOT_FOUND && std::time::Instant::now() < confirm_by {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await; // no event to await
                continue;
            }
            assert_eq!(code, StatusCode::ACCEPTED, "{body}");
            break;
        }
        self.wait_view(status, None, Some("ACTIVE")).await;
        let (code, body) = self
            .post(
                "/auth/sign-in",
                None,
                json!({"username": username, "password": "correct-horse-1"}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }
}

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
    // The notification app mails the sign-ups' codes to the sink, which needs its folders.
    common::ensure_maildir();
    let pipeline = tokio::task::spawn_blocking(|| {
        Pipeline::start("vcancel", &AppConfig::default(), &App::ALL).unwrap()
    })
    .await
    .unwrap();
    let redis_prefix = format!(
        "vcancel{}:",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );

    // The views sink, like `pickple-processor --app views`.
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

    // The gateway on an ephemeral port.
    let config = pickple_gateway::Config::local(&pipeline.prefix, &redis_prefix);
    let gateway = pickple_gateway::AppState::new(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = Http {
        base: format!("http://{}", listener.local_addr().unwrap()),
        client: reqwest::Client::new(),
    };
    let router = pickple_gateway::app(gateway);
    let server = tokio::spawn(async move { axum_serve(listener, router).await });

    // Ready once Kafka, Redis and the views sink answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let resp = http
            .client
            .get(format!("{}/ready", http.base))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never became ready: {:?}",
            resp.text().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await; // readiness has no event to await
    }

    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let vendor_token = http
        .sign_up_and_in(&format!("vend{suffix}"), "VENDOR_MANAGER")
        .await;
    let buyer_token = http.sign_up_and_in(&format!("buy{suffix}"), "USER").await;

    // Vendor, product, 5 in stock.
    let (code, vendor) = http
        .post("/vendors", Some(&vendor_token), json!({"name": "Kiln"}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{vendor}");
    let vendor_id = vendor["id"].as_str().unwrap().to_string();
    http.wait_view(&format!("/vendors/{vendor_id}"), Some(&vendor_token), None)
        .await;
    let (code, product) = http
        .post(
            "/products",
            Some(&vendor_token),
            json!({"vendor_id": vendor_id, "name": "Teapot", "description": "", "price": 2000, "public": true}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{product}");
    let product_id = product["id"].as_str().unwrap().to_string();
    let product_path = format!("/products/{product_id}");
    http.wait_view(&product_path, Some(&vendor_token), None)
        .await;
    let (code, body) = http
        .call(
            reqwest::Method::PUT,
            &format!("{product_path}/stock"),
            Some(&vendor_token),
            Some(json!({"quantity": 5})),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    http.wait_until(&product_path, Some(&vendor_token), |p| {
        p["stock"]["available"] == 5
    })
    .await;

    // The buyer orders 3: reserved, awaiting payment.
    let line = json!({"lines": [{"product_id": product_id, "quantity": 3}]});
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
    let reason = cancelled["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|t| t["reason"].as_str())
        .unwrap_or_default();
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

    server.abort();
    stop_views.store(true, Ordering::Relaxed);
    views.join().unwrap().unwrap();
    tokio::task::spawn_blocking(move || pipeline.stop())
        .await
        .unwrap();
}

/// The code mailed to `email`, once the notification app has sent it to the sink (60 s at most).
async fn mailed_code(email: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let to = email.to_string();
        let found = tokio::task::spawn_blocking(move || common::confirmation_code(&to))
            .await
            .unwrap();
        if let Some(code) = found {
            return code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no confirmation mail to {email} in {} within 60 s",
            common::maildir().display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await; // the maildir has no event to await
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    axum::serve(listener, router).await.unwrap();
}
