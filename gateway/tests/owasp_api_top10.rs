//! The gateway against the OWASP API Security Top 10 (2023), one module per item covered,
//! each test driving the real gateway over HTTP with Kafka and Redis.
//!
//! - API2 broken authentication: no signing secret in the source (a generated one shared
//!   through Redis), refresh tokens that rotate and revoke their sign-in when reused,
//!   sign-out, tokens that die with the account they were issued to.
//! - API1 broken object level authorization: a vendor's manager sees only their vendor's share
//!   of an order shared with other vendors, and cannot drive its delivery for them; a vendor
//!   is made only for an active manager, so it never passes to a later account under a free
//!   name (more ownership cases in `security.rs`).
//! - API3 broken object property level authorization: no secret property is served, and no
//!   privileged one (role, status, identity, token version) can be written by its user.
//! - API4 unrestricted resource consumption: rate limits shared by every gateway instance,
//!   and a bounded password-hashing pool that sheds load.
//! - API5 broken function level authorization: administration is MASTER's, vendor work the
//!   managers'.

mod common;

use common::*;
use pickple_gateway::auth::{now_secs, Claims, Jwt};
use pickple_gateway::{AppState, Config};
use pickple_schemas::Role;
use pickple_view_model::Kind;
use serde_json::{json, Value};

mod api2_broken_authentication {
    use super::*;

    async fn sign_in(gw: &Gw, username: &str, password: &str) -> Value {
        let (s, tokens) = gw
            .post(
                "/api/v1/auth/sign-in",
                None,
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(s, 200, "{tokens}");
        tokens
    }

    async fn refresh(gw: &Gw, refresh_token: &Value) -> (u16, Value) {
        gw.post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": refresh_token}),
        )
        .await
    }

    async fn me(gw: &Gw, tokens: &Value) -> u16 {
        gw.get("/api/v1/users/me", tokens["access_token"].as_str())
            .await
            .0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_configured_secret_the_gateways_share_a_generated_one() {
        let gw = Gw::start_with(true, |c| c.jwt_secret = None).await;
        gw.put_user("erin1", "erin-pass-1", Role::User).await;
        let tokens = sign_in(&gw, "erin1", "erin-pass-1").await;
        assert_eq!(me(&gw, &tokens).await, 200);

        // A token signed with the secret earlier versions had in their source is refused.
        let claims = gw
            .state
            .jwt
            .verify(tokens["access_token"].as_str().unwrap())
            .unwrap();
        for leaked in [
            "pickple-dev-only-insecure-jwt-secret",
            "dev-only-insecure-jwt-secret-change-me",
        ] {
            let forged = Jwt::new(Some(leaked), 60)
                .sign(&Claims {
                    role: Role::Master,
                    ..claims.clone()
                })
                .unwrap();
            let (s, _) = gw.get("/api/v1/users", Some(&forged)).await;
            assert_eq!(s, 401, "signed with {leaked}");
        }

        // A second gateway of the deployment (same Redis) accepts the first one's tokens.
        let mut config: Config = gw.config.clone();
        config.jwt_secret = None;
        let other = AppState::new(config).await.unwrap();
        other.jwt.ready(&other.views).await.unwrap();
        let verified = other
            .jwt
            .verify(tokens["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(verified.sub, "erin1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_token_works_once_and_its_reuse_revokes_the_sign_in() {
        let gw = Gw::start().await;
        gw.put_user("fred1", "fred-pass-1", Role::User).await;
        let first = sign_in(&gw, "fred1", "fred-pass-1").await;
        let other_sign_in = sign_in(&gw, "fred1", "fred-pass-1").await;

        let (s, second) = refresh(&gw, &first["refresh_token"]).await;
        assert_eq!(s, 200, "{second}");
        assert_eq!(me(&gw, &second).await, 200);

        // The first refresh token again: someone else has it. The whole sign-in is revoked.
        let (s, body) = refresh(&gw, &first["refresh_token"]).await;
        assert_eq!(s, 401, "{body}");
        let (s, _) = refresh(&gw, &second["refresh_token"]).await;
        assert_eq!(s, 401, "the rotated refresh token of a revoked sign-in");
        assert_eq!(me(&gw, &second).await, 401, "its access token too");
        // Another sign-in of the same account is not touched.
        assert_eq!(me(&gw, &other_sign_in).await, 200);
        let (s, _) = refresh(&gw, &other_sign_in["refresh_token"]).await;
        assert_eq!(s, 200);

        let (s, _) = refresh(&gw, &json!("not-a-refresh-token")).await;
        assert_eq!(s, 401);
        // An access token is no refresh token, and refresh takes no bearer instead.
        let (s, _) = refresh(&gw, &first["access_token"]).await;
        assert_eq!(s, 401);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sign_out_ends_the_sign_in_and_everywhere_asks_the_users_processor() {
        let gw = Gw::start().await;
        gw.put_user("gina1", "gina-pass-1", Role::User).await;
        let session = sign_in(&gw, "gina1", "gina-pass-1").await;
        let other = sign_in(&gw, "gina1", "gina-pass-1").await;
        let res = gw
            .http
            .post(gw.url("/api/v1/auth/sign-out"))
            .bearer_auth(session["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 204);
        assert_eq!(me(&gw, &session).await, 401);
        let (s, _) = refresh(&gw, &session["refresh_token"]).await;
        assert_eq!(s, 401);
        assert_eq!(me(&gw, &other).await, 200, "only that sign-in");

        let (s, _) = gw
            .post(
                "/api/v1/auth/sign-out",
                other["access_token"].as_str(),
                &json!({"everywhere": true}),
            )
            .await;
        assert_eq!(s, 204);
        let commands = read_topic(&gw.topic(pickple_schemas::topic::USER_COMMANDS));
        assert!(
            commands
                .iter()
                .any(|r| r.key == "gina1" && r.value["type"] == "RevokeTokens"),
            "sign-out everywhere moves the account's token version on"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_dies_with_its_account_and_never_serves_a_newcomer_under_the_name() {
        let gw = Gw::start().await;
        gw.put_user("hank1", "hank-pass-1", Role::VendorManager)
            .await;
        let tokens = sign_in(&gw, "hank1", "hank-pass-1").await;
        assert_eq!(me(&gw, &tokens).await, 200);

        // Another account under the same name (a different identity): the old token is void.
        let mut newcomer = user_view("hank1", "$argon2id$x", Role::VendorManager, "ACTIVE", 5);
        newcomer["user_id"] = json!("someone-else");
        gw.put_view(Kind::User, "hank1", &newcomer);
        assert_eq!(me(&gw, &tokens).await, 401);
        let (s, _) = refresh(&gw, &tokens["refresh_token"]).await;
        assert_eq!(s, 401);

        // Deleted: void.
        gw.put_user("ivan1", "ivan-pass-1", Role::User).await;
        let tokens = sign_in(&gw, "ivan1", "ivan-pass-1").await;
        gw.put_view(
            Kind::User,
            "ivan1",
            &user_view("ivan1", "$argon2id$x", Role::User, "DELETED", 9),
        );
        assert_eq!(me(&gw, &tokens).await, 401);

        // A token for an account that never existed, signed with the gateway's own key.
        let claims = Claims {
            sub: "ghost1".into(),
            uid: "ghost".into(),
            ver: 0,
            sid: String::new(),
            role: Role::Master,
            iat: now_secs(),
            exp: now_secs() + 60,
            jti: "j".into(),
        };
        let ghost = gw.state.jwt.sign(&claims).unwrap();
        let (s, _) = gw.get("/api/v1/users", Some(&ghost)).await;
        assert_eq!(s, 401);
    }
}

mod api1_vendors_never_pass_to_a_newcomer {
    use super::*;

    /// Vendors are linked to their manager by username, and only an account that is (or was)
    /// active holds its name for good. So MASTER may name only an active vendor manager: a
    /// vendor made for a free, pending or rejected name would go to whoever signs up under it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn master_names_only_an_active_vendor_manager() {
        let gw = Gw::start().await;
        let master = gw.token("root1", Role::Master);
        gw.token("shopper1", Role::User);
        gw.token("seller1", Role::VendorManager);
        let mut pending = user_view("later1", "$argon2id$x", Role::VendorManager, "PENDING", 1);
        pending["confirm_by"] = json!(now_ms() + 60_000);
        gw.put_view(Kind::User, "later1", &pending);
        for name in ["ghost1", "later1", "shopper1"] {
            let (s, body) = gw
                .post(
                    "/api/v1/vendors",
                    Some(&master),
                    &json!({"name": "Shop", "manager": name}),
                )
                .await;
            assert_eq!(
                (s, body["error"]["fields"][0]["field"].as_str()),
                (422, Some("manager")),
                "{name}: {body}"
            );
        }
        assert!(read_topic(&gw.topic(pickple_schemas::topic::VENDOR_COMMANDS)).is_empty());
        let (s, body) = gw
            .post(
                "/api/v1/vendors",
                Some(&master),
                &json!({"name": "Shop", "manager": "Seller1"}),
            )
            .await;
        assert_eq!(s, 202, "{body}");
        let created = read_topic(&gw.topic(pickple_schemas::topic::VENDOR_COMMANDS));
        assert_eq!(created[0].value["manager"], "seller1");
    }
}

mod api4_unrestricted_resource_consumption {
    use super::*;
    use pickple_gateway::limits::{Rate, Setting};

    /// A second gateway of the same deployment (same Redis, same topics), serving HTTP.
    async fn second_gateway(gw: &Gw) -> String {
        let state = AppState::new(gw.config.clone()).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let service = pickple_gateway::app(state)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
        base
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_guessing_is_stopped_per_account_on_every_gateway() {
        let gw = Gw::start_with(true, |c| {
            // One attempt per 10 s on average, three at once (a debug build's argon2 takes a
            // good part of a second: a faster rate would refill during the test).
            c.rates.sign_in_account = Setting(Some(Rate::new(6, 3)));
        })
        .await;
        gw.put_user("jill1", "jill-pass-1", Role::User).await;
        let attempt = |base: String, password: &'static str| {
            let http = gw.http.clone();
            async move {
                let res = http
                    .post(format!("{base}/api/v1/auth/sign-in"))
                    .json(&json!({"username": "jill1", "password": password}))
                    .send()
                    .await
                    .unwrap();
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (res.status().as_u16(), retry)
            }
        };
        for _ in 0..3 {
            assert_eq!(attempt(gw.base.clone(), "wrong-pass").await.0, 401);
        }
        let (status, retry) = attempt(gw.base.clone(), "wrong-pass").await;
        assert_eq!(status, 429);
        let secs: u64 = retry.expect("Retry-After").parse().unwrap();
        assert!((1..=10).contains(&secs), "{secs}");
        // The right password does not get through either: guessing ends here.
        assert_eq!(attempt(gw.base.clone(), "jill-pass-1").await.0, 429);
        // Nor through another gateway instance: the limit lives in Redis.
        let other = second_gateway(&gw).await;
        assert_eq!(attempt(other, "jill-pass-1").await.0, 429);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sign_ups_and_placements_are_rate_limited() {
        let gw = Gw::start_with(true, |c| {
            c.rates.sign_up_client = Setting(Some(Rate::new(1, 2)));
            c.rates.place_user = Setting(Some(Rate::new(1, 2)));
        })
        .await;
        let mut statuses = Vec::new();
        for i in 0..3 {
            let (s, _) = gw
                .post(
                    "/api/v1/auth/sign-up",
                    None,
                    &json!({"username": format!("kim{i}x"), "nickname": "K",
                            "email": format!("kim{i}@example.com"), "password": "kim-pass-1"}),
                )
                .await;
            statuses.push(s);
        }
        assert_eq!(statuses, [202, 202, 429]);

        let token = gw.token("lena1", Role::User);
        let order = json!({"lines": [{"product_id": "p1", "quantity": 1}], "shipping": shipping()});
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(gw.post("/api/v1/orders", Some(&token), &order).await.0);
        }
        assert_eq!(statuses, [202, 202, 429]);
        // Another user is not held back by the first one's rate.
        let other = gw.token("mona1", Role::User);
        assert_eq!(gw.post("/api/v1/orders", Some(&other), &order).await.0, 202);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_hashing_sheds_load_with_503_instead_of_queueing_without_bound() {
        let gw = Gw::start_with(true, |c| {
            c.password_hashers = 1;
            c.password_wait_ms = 1;
        })
        .await;
        gw.put_user("nina1", "nina-pass-1", Role::User).await;
        let attempts = (0..8).map(|_| {
            let http = gw.http.clone();
            let url = gw.url("/api/v1/auth/sign-in");
            async move {
                let res = http
                    .post(url)
                    .json(&json!({"username": "nina1", "password": "nina-pass-1"}))
                    .send()
                    .await
                    .unwrap();
                (
                    res.status().as_u16(),
                    res.headers().contains_key("retry-after"),
                )
            }
        });
        let answers = futures::future::join_all(attempts).await;
        assert!(answers.iter().any(|a| a.0 == 200), "{answers:?}");
        assert!(
            answers.contains(&(503, true)),
            "with one hasher and no wait, concurrent sign-ins are shed: {answers:?}"
        );
        assert!(
            answers.iter().all(|a| a.0 == 200 || a.0 == 503),
            "{answers:?}"
        );
    }
}

mod api1_broken_object_level_authorization {
    use super::*;

    /// Order o-mv has a line of vendor v-a (managed by mia1) and one of v-b (managed by max1).
    fn multi_vendor_order(gw: &Gw) {
        gw.put_view(Kind::Vendor, "v-a", &vendor_view("v-a", "mia1", 1));
        gw.put_view(Kind::Vendor, "v-b", &vendor_view("v-b", "max1", 1));
        let mut order = order_view("o-mv", "ann1", &["v-a", "v-b"], "PAID", 3);
        order["lines"] = json!([
            {"product_id": "p-a", "quantity": 2, "unit_price": 100, "vendor_id": "v-a", "reserved": true},
            {"product_id": "p-b", "quantity": 1, "unit_price": 999, "vendor_id": "v-b", "reserved": true}
        ]);
        order["amount"] = json!(1199);
        order["shipping"] = shipping();
        gw.put_view(Kind::Order, "o-mv", &order);
        gw.put_view(
            Kind::Delivery,
            "o-mv",
            &delivery_view("o-mv", "ann1", &["v-a", "v-b"], "PENDING", 1),
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vendor_manager_reads_only_their_vendors_lines_of_a_shared_order() {
        let gw = Gw::start().await;
        let mia = gw.token("mia1", Role::VendorManager);
        let ann = gw.token("ann1", Role::User);
        multi_vendor_order(&gw);

        let (s, order) = gw.get("/api/v1/orders/o-mv", Some(&mia)).await;
        assert_eq!(s, 200, "{order}");
        assert_eq!(order["lines"].as_array().unwrap().len(), 1, "{order}");
        assert_eq!(order["lines"][0]["vendor_id"], "v-a");
        assert_eq!(order["amount"], 200, "v-a's share, not the buyer's total");
        assert_eq!(order["vendor_ids"], json!(["v-a"]));
        assert_eq!(
            order["shipping"],
            shipping(),
            "a vendor ships to the address"
        );

        let (s, listing) = gw.get("/api/v1/vendors/v-a/orders", Some(&mia)).await;
        assert_eq!(s, 200, "{listing}");
        let item = &listing["items"][0];
        assert_eq!(
            (item["lines"].as_array().unwrap().len(), &item["amount"]),
            (1, &json!(200))
        );
        // Another vendor's listing is not theirs.
        let (s, _) = gw.get("/api/v1/vendors/v-b/orders", Some(&mia)).await;
        assert_eq!(s, 403);

        // The buyer sees the whole order.
        let (s, order) = gw.get("/api/v1/orders/o-mv", Some(&ann)).await;
        assert_eq!((s, order["lines"].as_array().unwrap().len()), (200, 2));
    }

    /// One shipment per vendor: each vendor's manager drives and reads their own; the
    /// per-order routes, which cannot say which shipment, are a 409 on this order; MASTER may
    /// drive any shipment and the buyer reads them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_vendor_manager_drives_and_reads_only_their_vendors_shipment() {
        let gw = Gw::start().await;
        let mia = gw.token("mia1", Role::VendorManager);
        let max = gw.token("max1", Role::VendorManager);
        let ann = gw.token("ann1", Role::User);
        let root = gw.token("root", Role::Master);
        multi_vendor_order(&gw);
        let start =
            json!({"carrier": "LOZEN", "delivery_type": "COURIER", "tracking_number": "T-1"});
        for step in ["start", "end"] {
            let body = if step == "start" {
                start.clone()
            } else {
                json!({})
            };
            let path = format!("/api/v1/deliveries/o-mv/shipments/v-b/{step}");
            let (s, answer) = gw.post(&path, Some(&mia), &body).await;
            assert_eq!(s, 403, "{step} of another vendor's shipment: {answer}");
            let path = format!("/api/v1/deliveries/o-mv/{step}");
            for token in [&mia, &root] {
                let (s, answer) = gw.post(&path, Some(token), &body).await;
                assert_eq!(s, 422, "{step} without a vendor: {answer}");
                assert_eq!(answer["error"]["code"], "shipment_required");
                assert!(answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("/shipments/"));
            }
        }
        let (s, _) = gw
            .post(
                "/api/v1/deliveries/o-mv/shipments/v-zz/start",
                Some(&root),
                &start,
            )
            .await;
        assert_eq!(s, 404, "no shipment of that vendor");
        let (s, _) = gw
            .post(
                "/api/v1/deliveries/o-mv/shipments/v-a/start",
                Some(&ann),
                &start,
            )
            .await;
        assert_eq!(s, 403, "a buyer does not ship");
        let commands = read_topic(&gw.topic(pickple_schemas::topic::DELIVERY_COMMANDS));
        assert!(commands.is_empty(), "nothing published yet: {commands:?}");

        let (s, answer) = gw
            .post(
                "/api/v1/deliveries/o-mv/shipments/v-a/start",
                Some(&mia),
                &start,
            )
            .await;
        assert_eq!(s, 202, "{answer}");
        let (s, answer) = gw
            .post(
                "/api/v1/deliveries/o-mv/shipments/v-b/start",
                Some(&root),
                &start,
            )
            .await;
        assert_eq!(s, 202, "{answer}");
        let commands = read_topic(&gw.topic(pickple_schemas::topic::DELIVERY_COMMANDS));
        let sent: Vec<(&str, &str)> = commands
            .iter()
            .map(|c| {
                (
                    c.value["vendor_id"].as_str().unwrap(),
                    c.value["by"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(sent, [("v-a", "mia1"), ("v-b", "root")]);
        assert!(commands.iter().all(|c| c.key == "o-mv"));

        // Reads: each manager their own shipment, the buyer and MASTER both.
        for (token, want) in [
            (&mia, vec!["v-a"]),
            (&max, vec!["v-b"]),
            (&ann, vec!["v-a", "v-b"]),
            (&root, vec!["v-a", "v-b"]),
        ] {
            let (s, d) = gw.get("/api/v1/deliveries/o-mv", Some(token)).await;
            assert_eq!(s, 200, "{d}");
            let got: Vec<&str> = d["shipments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["vendor_id"].as_str().unwrap())
                .collect();
            assert_eq!(got, want, "{d}");
            assert_eq!(d["vendor_ids"], json!(want));
        }
        let (s, _) = gw
            .get(
                "/api/v1/deliveries/o-mv",
                Some(&gw.token("eve1", Role::VendorManager)),
            )
            .await;
        assert_eq!(s, 404, "a manager of neither vendor");
    }
}

mod api3_broken_object_property_level_authorization {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_user_can_neither_read_the_password_hash_nor_write_their_role_or_status() {
        let gw = Gw::start().await;
        gw.put_user("olga1", "olga-pass-1", Role::User).await;
        let tokens = {
            let (s, t) = gw
                .post(
                    "/api/v1/auth/sign-in",
                    None,
                    &json!({"username": "olga1", "password": "olga-pass-1"}),
                )
                .await;
            assert_eq!(s, 200);
            t
        };
        let token = tokens["access_token"].as_str().unwrap();
        let root = gw.token("root", Role::Master);
        for (path, who) in [
            ("/api/v1/users/me", token),
            ("/api/v1/users/olga1", root.as_str()),
        ] {
            let (s, user) = gw.get(path, Some(who)).await;
            assert_eq!(s, 200, "{path}: {user}");
            for secret in ["password_hash", "token_version", "user_id"] {
                assert!(user.get(secret).is_none(), "{path} serves {secret}: {user}");
            }
        }
        for field in ["role", "status", "token_version", "user_id"] {
            let res = gw
                .http
                .patch(gw.url("/api/v1/users/me"))
                .bearer_auth(token)
                .json(&json!({ field: "MASTER" }))
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            assert!(
                status == 400 || status == 422,
                "PATCH /users/me with {field}: {status}"
            );
        }
        let commands = read_topic(&gw.topic(pickple_schemas::topic::USER_COMMANDS));
        assert!(commands.is_empty(), "nothing published: {commands:?}");
    }
}

mod api5_broken_function_level_authorization {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn administration_is_for_master_and_vendor_work_for_managers() {
        let gw = Gw::start().await;
        let user = gw.token("pete1", Role::User);
        let manager = gw.token("quin1", Role::VendorManager);
        for token in [&user, &manager] {
            let (s, _) = gw.get("/api/v1/users", Some(token)).await;
            assert_eq!(s, 403, "listing users");
            let res = gw
                .http
                .put(gw.url("/api/v1/users/pete1/role"))
                .bearer_auth(token)
                .json(&json!({"role": "MASTER"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 403, "changing a role");
        }
        let (s, _) = gw
            .post("/api/v1/vendors", Some(&user), &json!({"name": "Mine"}))
            .await;
        assert_eq!(s, 403, "a USER creates no vendor");
        let commands = read_topic(&gw.topic(pickple_schemas::topic::USER_COMMANDS));
        assert!(commands.is_empty());
    }
}
