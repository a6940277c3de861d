//! User administration and the notification history for MASTER, through HTTP on the real
//! processors: the gateway in-process, the users and notification apps and the views sink on
//! threads, against the real local Kafka, Redis and SMTP sink. The MASTER comes from the
//! configuration (the users app's bootstrap); a user signs up and confirms the code mailed to
//! them. The MASTER removes one of the user's mails from their history (it leaves every listing,
//! reads 404, and a redelivered event brings it back neither in the history nor in the mailbox),
//! deletes the user (whose access and refresh tokens stop working), and cannot delete another
//! MASTER before changing its role.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_runtime, Pipeline};
use pickple_processors::App;
use pickple_schemas::topic::{DELIVERY_EVENTS, ORDER_EVENTS};
use pickple_schemas::RecordHeaders;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    async fn call(
        &self,
        method: Method,
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

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A long-poll that must answer 200 with a view meeting its condition.
    async fn wait_view(&self, path: &str, token: &str, condition: &str) -> Value {
        let (code, view) = self
            .get(&format!("{path}?wait=30&{condition}"), Some(token))
            .await;
        assert_eq!(code, StatusCode::OK, "{path}?{condition}: {view}");
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

    /// Sign up, confirm the code mailed to the address, sign in: the tokens and the address.
    async fn sign_up_and_in(&self, username: &str) -> (Value, String) {
        // An address of this run only: the sink's maildir keeps earlier runs' mails.
        let email = format!(
            "{username}.{}@example.com",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (code, body) = self
            .post(
                "/auth/sign-up",
                None,
                json!({"username": username, "nickname": username, "email": email, "password": "correct-horse-1", "role": "USER"}),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let location = body["location"].as_str().unwrap();
        let status = location.strip_prefix("/api/v1").unwrap().to_string();
        let mailed = mailed_code(&email).await;
        let sep = if status.contains('?') { '&' } else { '?' };
        let (code, view) = self
            .get(&format!("{status}{sep}wait=30&after_version=0"), None)
            .await;
        assert_eq!(code, StatusCode::OK, "{view}");
        let (code, body) = self
            .post(
                "/auth/confirm-email",
                None,
                json!({"username": username, "code": mailed}),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let (code, view) = self
            .get(&format!("{status}{sep}wait=30&status=ACTIVE"), None)
            .await;
        assert_eq!(
            (code, view["status"].as_str()),
            (StatusCode::OK, Some("ACTIVE"))
        );
        let (code, tokens) = self.sign_in(username, "correct-horse-1").await;
        assert_eq!(code, StatusCode::OK, "{tokens}");
        (tokens, email)
    }
}

fn token(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_removes_a_users_mail_from_the_history_and_deletes_the_user() {
    common::ensure_maildir();
    let master_password = "root-password-1";
    let mut config = common::config(300_000);
    config.master_username = Some("root".into());
    config.master_email = Some(format!(
        "root.{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    config.master_password_hash = Some(
        pickple_gateway::auth::hash_password(master_password.into())
            .await
            .unwrap(),
    );
    let pipeline = tokio::task::spawn_blocking(move || {
        Pipeline::start("adm", &config, &[App::Users, App::Notification]).unwrap()
    })
    .await
    .unwrap();
    let redis_prefix = format!("adm{}:", &uuid::Uuid::new_v4().simple().to_string()[..10]);

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

    let gateway = pickple_gateway::AppState::new(pickple_gateway::Config::local(
        &pipeline.prefix,
        &redis_prefix,
    ))
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = Http {
        base: format!("http://{}", listener.local_addr().unwrap()),
        client: reqwest::Client::new(),
    };
    let router = pickple_gateway::app(gateway.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let deadline = Instant::now() + Duration::from_secs(60);
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
        assert!(Instant::now() < deadline, "gateway never became ready");
        tokio::time::sleep(Duration::from_millis(250)).await; // readiness has no event to await
    }

    // The configured MASTER, once the users app created it and the sink wrote it.
    let wait = pickple_gateway::longpoll::WaitFor::new(Some(60.0), None, Some(0), 60).unwrap();
    let root = pickple_gateway::longpoll::read_view::<pickple_schemas::UserView>(
        &gateway.views,
        &gateway.notifier,
        "root",
        &wait,
        |_| true,
    )
    .await
    .unwrap()
    .expect("the MASTER account is created at start");
    assert_eq!(root.role, pickple_schemas::Role::Master);
    let (code, root_tokens) = http.sign_in("root", master_password).await;
    assert_eq!(code, StatusCode::OK, "{root_tokens}");
    let root = token(&root_tokens).to_string();

    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let ann = format!("ann{suffix}");
    let (ann_tokens, ann_email) = http.sign_up_and_in(&ann).await;
    let ann_token = token(&ann_tokens).to_string();

    // Two mails to ann, from the events that make them (keyed by the order id).
    let order = uuid::Uuid::new_v4().to_string();
    let event = |kind: &str, extra: Value| {
        let mut v = json!({"type": kind, "order_id": order, "username": ann, "email": ann_email});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    let confirmed = event("OrderConfirmed", json!({"amount": 700, "vendor_ids": []}));
    let send = |topic: &str, kind: &str, value: &str| {
        let headers = RecordHeaders::new(kind, uuid::Uuid::new_v4().to_string());
        pipeline.send_bytes(topic, &order, value.as_bytes(), Some(&headers));
        pipeline.flush();
    };
    send(ORDER_EVENTS, "OrderConfirmed", &confirmed);
    send(
        DELIVERY_EVENTS,
        "DeliveryCompleted",
        &event("DeliveryCompleted", json!({})),
    );
    let removed = format!("{order}.order-confirmed@pickple.local");
    let kept = format!("{order}.delivery-completed@pickple.local");
    for id in [&removed, &kept] {
        http.wait_view(&format!("/notifications/{id}"), &root, "after_version=0")
            .await;
    }
    let (code, history) = http
        .get(&format!("/users/{ann}/notifications"), Some(&root))
        .await;
    assert_eq!(code, StatusCode::OK, "{history}");
    assert_eq!(history["total"], 2, "{history}");
    let (_, mine) = http.get("/notifications/mine", Some(&ann_token)).await;
    assert_eq!(mine, history, "the MASTER sees the history the user sees");

    // Removed from the history: the notification app republishes the view deleted.
    let (code, accepted) = http
        .call(
            Method::DELETE,
            &format!("/notifications/{removed}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{accepted}");
    let (code, body) = http
        .get(
            &format!("/notifications/{removed}?wait=30&after_version=1"),
            Some(&root),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    for (path, who) in [
        (format!("/users/{ann}/notifications"), &root),
        ("/notifications/mine".to_string(), &ann_token),
    ] {
        let (_, history) = http.get(&path, Some(who)).await;
        assert_eq!(history["total"], 1, "{path}: {history}");
        assert_eq!(history["items"][0]["message_id"], kept.as_str());
    }

    // The event redelivered, then a later one of the same order (same partition, so handled
    // after it): no second mail, and the entry stays out of the history.
    send(ORDER_EVENTS, "OrderConfirmed", &confirmed);
    send(
        DELIVERY_EVENTS,
        "DeliveryStarted",
        &event(
            "DeliveryStarted",
            json!({"carrier": "Post", "tracking_number": "T1"}),
        ),
    );
    let started = format!("{order}.delivery-started@pickple.local");
    http.wait_view(
        &format!("/notifications/{started}"),
        &root,
        "after_version=0",
    )
    .await;
    let (code, _) = http
        .get(&format!("/notifications/{removed}"), Some(&root))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, history) = http
        .get(&format!("/users/{ann}/notifications"), Some(&root))
        .await;
    assert_eq!(history["total"], 2, "kept and started: {history}");
    let id = removed.clone();
    let mails = tokio::task::spawn_blocking(move || common::mails_with_id(&id))
        .await
        .unwrap();
    assert_eq!(mails.len(), 1, "the mail was sent once");

    // The MASTER changes ann's nickname and address: the address waits for the code mailed to
    // it, the nickname changes at once, and ann's tokens keep working.
    let (code, me) = http.get("/users/me", Some(&ann_token)).await;
    assert_eq!(code, StatusCode::OK, "{me}");
    let new_email = format!("new.{ann_email}");
    let (code, body) = http
        .call(
            Method::PUT,
            &format!("/users/{ann}"),
            Some(&root),
            Some(json!({"nickname": "Annie", "email": new_email})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let after = me["version"].as_u64().unwrap();
    let view = http
        .wait_view(
            &format!("/users/{ann}"),
            &root,
            &format!("after_version={after}"),
        )
        .await;
    assert_eq!(
        (&view["nickname"], &view["email"], &view["pending_email"]),
        (&json!("Annie"), &json!(ann_email), &json!(new_email)),
        "{view}"
    );
    let mailed = mailed_code(&new_email).await;
    assert_eq!(mailed.len(), 64, "the code went to the new address");

    // The MASTER deletes ann: every token of the account stops working.
    let (code, me) = http.get("/users/me", Some(&ann_token)).await;
    assert_eq!(code, StatusCode::OK, "{me}");
    let (code, accepted) = http
        .call(Method::DELETE, &format!("/users/{ann}"), Some(&root), None)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{accepted}");
    let view = http
        .wait_view(&format!("/users/{ann}"), &root, "status=DELETED")
        .await;
    assert_eq!(view["status"], "DELETED", "{view}");
    let (code, body) = http.get("/users/me", Some(&ann_token)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, body) = http
        .post(
            "/auth/refresh",
            None,
            json!({"refresh_token": ann_tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, _) = http.sign_in(&ann, "correct-horse-1").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    // Another MASTER is deleted only once its role is changed.
    let bob = format!("bob{suffix}");
    http.sign_up_and_in(&bob).await;
    let (code, body) = http
        .call(
            Method::PUT,
            &format!("/users/{bob}/role"),
            Some(&root),
            Some(json!({"role": "MASTER"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{body}");
    let view = http
        .wait_view(&format!("/users/{bob}"), &root, "after_version=0")
        .await;
    let view = if view["role"] == "MASTER" {
        view
    } else {
        let after = view["version"].as_u64().unwrap();
        http.wait_view(
            &format!("/users/{bob}"),
            &root,
            &format!("after_version={after}"),
        )
        .await
    };
    assert_eq!(view["role"], "MASTER", "{view}");
    let (code, _) = http
        .call(Method::DELETE, &format!("/users/{bob}"), Some(&root), None)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let after = view["version"].as_u64().unwrap();
    let refused = http
        .wait_view(
            &format!("/users/{bob}"),
            &root,
            &format!("after_version={after}"),
        )
        .await;
    assert_eq!(refused["status"], "ACTIVE", "{refused}");
    assert!(
        refused["rejection"]
            .as_str()
            .is_some_and(|r| r.contains("change its role first")),
        "{refused}"
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
