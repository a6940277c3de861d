//! The whole shop over HTTP for the integration tests: every processor and the views sink on
//! threads, the gateway in-process on an ephemeral port, against the real local Kafka, Redis and
//! SMTP sink; and an HTTP client that signs up (with the mailed code), long-polls views and
//! follows their versions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{test_runtime, Pipeline};
use pickple_processors::{App, AppConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A delivery address for the tests' orders (`POST /orders` requires one).
pub fn shipping() -> Value {
    json!({"recipient": "Kim Minji", "address": "1 Teheran-ro, Seoul", "contact": "010-1234-5678"})
}

/// A running shop; [`Shop::stop`] stops it.
pub struct Shop {
    pub http: Http,
    pub pipeline: Pipeline,
    server: tokio::task::JoinHandle<()>,
    stop_views: Arc<AtomicBool>,
    views: std::thread::JoinHandle<Result<(), pickple_views::ViewsError>>,
    _state: tempfile::TempDir,
}

impl Shop {
    /// Every app, the sink and the gateway, with topics and Redis keys named after `tag`;
    /// returns once the gateway is ready.
    pub async fn start(tag: &'static str) -> Shop {
        Shop::start_with(tag, AppConfig::default(), &App::ALL).await
    }

    /// [`Shop::start`] with these apps' settings, running only `apps` (and the sink).
    pub async fn start_with(tag: &'static str, config: AppConfig, apps: &[App]) -> Shop {
        // The notification app mails the sign-ups' codes to the sink, which needs its folders.
        super::ensure_maildir();
        let apps = apps.to_vec();
        let pipeline =
            tokio::task::spawn_blocking(move || Pipeline::start(tag, &config, &apps).unwrap())
                .await
                .unwrap();
        let redis_prefix = format!("{tag}{}:", &uuid::Uuid::new_v4().simple().to_string()[..10]);

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
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

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
        Shop {
            http,
            pipeline,
            server,
            stop_views,
            views,
            _state: state,
        }
    }

    pub async fn stop(self) {
        self.server.abort();
        self.stop_views.store(true, Ordering::Relaxed);
        self.views.join().unwrap().unwrap();
        let pipeline = self.pipeline;
        tokio::task::spawn_blocking(move || pipeline.stop())
            .await
            .unwrap();
    }
}

pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub async fn call(
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

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body), None)
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, token, None, None)
            .await
    }

    /// The view, long-polling until it exists (and reaches `status`, when given): the gateway
    /// answers as soon as the views sink writes the change. (`after_version=0` answers with any
    /// view there is: a bare `?wait=` would wait for the change after the one that created a
    /// view between a plain read's 404 and the wait.) A wait that ends first answers the current
    /// view (200, `Pickple-Wait: timeout`), which the status check below rejects, or 404.
    pub async fn wait_view(&self, path: &str, token: Option<&str>, status: Option<&str>) -> Value {
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
    pub async fn wait_until(
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

    /// A vendor named `vendor`, managed by the caller of `token`, and a product of it (`product`:
    /// the create body but its `vendor_id`) with `quantity` in stock, once the product's view
    /// shows it: (vendor id, product id).
    pub async fn stocked_product(
        &self,
        token: &str,
        vendor: &str,
        mut product: Value,
        quantity: u64,
    ) -> (String, String) {
        let (code, body) = self
            .post("/vendors", Some(token), json!({"name": vendor}))
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let vendor_id = body["id"].as_str().unwrap().to_string();
        self.wait_view(&format!("/vendors/{vendor_id}"), Some(token), None)
            .await;
        product["vendor_id"] = json!(vendor_id);
        let (code, body) = self.post("/products", Some(token), product).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let product_id = body["id"].as_str().unwrap().to_string();
        let path = format!("/products/{product_id}");
        self.wait_view(&path, Some(token), None).await;
        let (code, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("{path}/stock"),
                Some(token),
                Some(json!({"quantity": quantity})),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        self.wait_until(&path, Some(token), |p| p["stock"]["available"] == quantity)
            .await;
        (vendor_id, product_id)
    }

    pub async fn sign_up_and_in(&self, username: &str, role: &str) -> String {
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

/// The code mailed to `email`, once the notification app has sent it to the sink (60 s at most).
pub async fn mailed_code(email: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let to = email.to_string();
        let found = tokio::task::spawn_blocking(move || super::confirmation_code(&to))
            .await
            .unwrap();
        if let Some(code) = found {
            return code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no confirmation mail to {email} in {} within 60 s",
            super::maildir().display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await; // the maildir has no event to await
    }
}
