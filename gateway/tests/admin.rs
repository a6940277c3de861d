//! User administration and notification history for MASTER, through the in-process gateway on
//! the real Kafka and Redis: who may (403 for USER and VENDOR_MANAGER, 401 without a token),
//! what is unknown (404), the user search over the index the sink's upsert keeps, the commands
//! published, and the tokens of a deleted account. Views are seeded with the sink's own upsert,
//! standing in for the processors (the processors' side: processors/apps/tests/admin.rs).

mod common;

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::{json, Value};

async fn send(
    gw: &Gw,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = gw.http.request(method, gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    into_parts(req.send().await.unwrap()).await
}

async fn put(gw: &Gw, path: &str, token: &str, body: &Value) -> (u16, Value) {
    send(
        gw,
        reqwest::Method::PUT,
        path,
        Some(token),
        Some(body),
        None,
    )
    .await
}

async fn delete(gw: &Gw, path: &str, token: Option<&str>) -> (u16, Value) {
    send(gw, reqwest::Method::DELETE, path, token, None, None).await
}

fn user(username: &str, email: &str, status: &str, version: u64) -> Value {
    let mut view = user_view(username, "$argon2id$secret", Role::User, status, version);
    view["email"] = email.into();
    view
}

fn notification(order: &str, username: &str, sent_at: i64) -> (String, Value) {
    let id = format!("{order}.order-confirmed@pickple.local");
    let view = json!({
        "message_id": id, "username": username, "email": format!("{username}@example.com"),
        "order_id": order, "kind": "ORDER_CONFIRMED", "subject": "Your order is confirmed",
        "sent_at": sent_at, "version": 1
    });
    (id, view)
}

fn usernames(listing: &Value) -> Vec<&str> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_is_for_master_only() {
    let gw = Gw::start().await;
    gw.put_view(Kind::User, "ann1", &user("ann1", "ann@x.io", "ACTIVE", 1));
    let (id, view) = notification("o1", "ann1", 5);
    gw.put_view(Kind::Notification, &id, &view);
    let body = json!({"nickname": "Annie"});
    for (name, role) in [("bob1", Role::User), ("vera1", Role::VendorManager)] {
        let token = gw.token(name, role);
        let token = Some(token.as_str());
        let answers = [
            gw.get("/api/v1/users?q=ann", token).await,
            send(
                &gw,
                reqwest::Method::PUT,
                "/api/v1/users/ann1",
                token,
                Some(&body),
                None,
            )
            .await,
            delete(&gw, "/api/v1/users/ann1", token).await,
            gw.get("/api/v1/users/ann1/notifications", token).await,
            delete(&gw, &format!("/api/v1/notifications/{id}"), token).await,
        ];
        for (i, (s, body)) in answers.into_iter().enumerate() {
            assert_eq!(s, 403, "{role:?}, call {i}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        // Another user's notification is not theirs to read either.
        assert_eq!(
            gw.get(&format!("/api/v1/notifications/{id}"), token)
                .await
                .0,
            404
        );
    }
    assert_eq!(delete(&gw, "/api/v1/users/ann1", None).await.0, 401);
    assert_eq!(
        gw.get("/api/v1/users/ann1/notifications", None).await.0,
        401
    );
    // Nothing was published.
    assert!(read_topic(&gw.topic(topic::USER_COMMANDS)).is_empty());
    assert!(read_topic(&gw.topic(topic::NOTIFICATION_COMMANDS)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_notifications_are_404() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    let (s, body) = put(
        &gw,
        "/api/v1/users/nobody1",
        &root,
        &json!({"nickname": "N"}),
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(
        delete(&gw, "/api/v1/users/nobody1", Some(&root)).await.0,
        404
    );
    assert_eq!(
        gw.get("/api/v1/users/nobody1/notifications", Some(&root))
            .await
            .0,
        404
    );
    let missing = "/api/v1/notifications/o9.order-confirmed@pickple.local";
    assert_eq!(gw.get(missing, Some(&root)).await.0, 404);
    assert_eq!(delete(&gw, missing, Some(&root)).await.0, 404);
    assert!(read_topic(&gw.topic(topic::USER_COMMANDS)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_exactly_the_name_and_address_prefixes() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    for (name, email, status) in [
        ("anna1", "Zed@X.io", "ACTIVE"),
        ("annb2", "Anna.B@Y.io", "ACTIVE"),
        ("bob01", "ann.bob@z.io", "ACTIVE"),
        // A pending sign-up's address may be anyone's; a deleted account gave its back.
        ("carl1", "annc@x.io", "PENDING"),
        ("dave1", "annd@x.io", "DELETED"),
        ("erin1", "erin@x.io", "ACTIVE"),
    ] {
        assert!(gw.put_view(Kind::User, name, &user(name, email, status, 1)));
    }
    let search = |q: &str| format!("/api/v1/users?q={q}");

    let (s, found) = gw.get(&search("ANN"), Some(&root)).await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(usernames(&found), ["anna1", "annb2", "bob01"]);
    assert_eq!(found["total"], 3);
    assert!(found["items"][0].get("password_hash").is_none(), "{found}");
    let (_, found) = gw.get(&search("anna"), Some(&root)).await;
    assert_eq!(usernames(&found), ["anna1", "annb2"], "by name, by address");
    let (_, found) = gw.get(&search("zed%40x"), Some(&root)).await;
    assert_eq!(usernames(&found), ["anna1"]);
    let (_, found) = gw.get(&search("carl"), Some(&root)).await;
    assert_eq!(usernames(&found), ["carl1"], "every account by its name");
    for q in ["annc", "annd", "x", "zz"] {
        let (_, found) = gw.get(&search(q), Some(&root)).await;
        assert_eq!(found["total"], 0, "{q}: {found}");
    }
    let (_, page) = gw
        .get("/api/v1/users?q=ann&offset=1&limit=1", Some(&root))
        .await;
    assert_eq!(
        (usernames(&page), &page["total"]),
        (vec!["annb2"], &json!(3))
    );

    // A new version of a view takes its old entries back (the upsert's lexicographic
    // memberships): the changed address, and the address of an account now deleted.
    assert!(gw.put_view(Kind::User, "anna1", &user("anna1", "new@x.io", "ACTIVE", 2)));
    assert!(gw.put_view(
        Kind::User,
        "bob01",
        &user("bob01", "ann.bob@z.io", "DELETED", 2)
    ));
    let (_, found) = gw.get(&search("zed"), Some(&root)).await;
    assert_eq!(found["total"], 0, "{found}");
    let (_, found) = gw.get(&search("new%40"), Some(&root)).await;
    assert_eq!(usernames(&found), ["anna1"]);
    let (_, found) = gw.get(&search("ann"), Some(&root)).await;
    assert_eq!(usernames(&found), ["anna1", "annb2"]);

    // Blank: every user, as before. Too long or with a control character: 422.
    let (_, all) = gw.get(&search("%20"), Some(&root)).await;
    assert_eq!(all["total"], 7, "six and root: {all}");
    let (s, body) = gw.get(&search(&"a".repeat(255)), Some(&root)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    assert_eq!(gw.get(&search("a%01"), Some(&root)).await.0, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_updates_a_profile_and_a_new_address_waits_for_its_code() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    gw.put_view(Kind::User, "ann1", &user("ann1", "ann@x.io", "ACTIVE", 1));
    let body = json!({"nickname": " Annie ", "email": " New@X.io "});
    let (s, first) = send(
        &gw,
        reqwest::Method::PUT,
        "/api/v1/users/ANN1",
        Some(&root),
        Some(&body),
        Some("k1"),
    )
    .await;
    assert_eq!(s, 202, "{first}");
    assert_eq!(first["location"], "/api/v1/users/ann1");
    // The same key and request: the first command, not a second one.
    let (s, again) = send(
        &gw,
        reqwest::Method::PUT,
        "/api/v1/users/ann1",
        Some(&root),
        Some(&body),
        Some("k1"),
    )
    .await;
    assert_eq!((s, &again["command_id"]), (202, &first["command_id"]));
    assert_eq!(again["replayed"], true);

    let records = read_topic(&gw.topic(topic::USER_COMMANDS));
    assert_eq!(records.len(), 1, "{records:?}");
    let command = &records[0];
    assert_eq!(command.key, "ann1");
    assert_eq!(command.value["type"], "UpdateProfile");
    assert_eq!(command.value["by"], "root");
    assert_eq!(command.value["nickname"], "Annie");
    assert_eq!(command.value["email"], "New@X.io");
    assert!(command.value["password_hash"].is_null());
    // The code the users processor mails to the new address, which its reader sends back.
    let code = command.value["confirmation_code"].as_str().unwrap();
    assert_eq!(code.len(), 64);
    // The view the users processor publishes for it shows the address waiting for its code.
    let mut waiting = user("ann1", "ann@x.io", "ACTIVE", 2);
    waiting["nickname"] = "Annie".into();
    waiting["pending_email"] = "new@x.io".into();
    assert!(gw.put_view(Kind::User, "ann1", &waiting));
    let (s, view) = gw.get("/api/v1/users/ann1", Some(&root)).await;
    assert_eq!(s, 200, "{view}");
    assert_eq!(
        (&view["email"], &view["pending_email"], &view["nickname"]),
        (&json!("ann@x.io"), &json!("new@x.io"), &json!("Annie"))
    );
    for internal in ["password_hash", "user_id", "token_version"] {
        assert!(view.get(internal).is_none(), "{internal}: {view}");
    }

    for (body, field) in [
        (json!({"password": "correct-horse-9"}), "password"),
        (json!({}), ""),
        (json!({"email": "nope"}), "email"),
        (json!({"nickname": "a\u{202e}b"}), "nickname"),
    ] {
        let (s, answer) = put(&gw, "/api/v1/users/ann1", &root, &body).await;
        assert_eq!(s, 422, "{body}: {answer}");
        let fields = answer["error"]["fields"].as_array().unwrap();
        assert!(
            fields.iter().any(|f| f["field"] == field),
            "{body}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_users_tokens_stop_working() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    gw.put_user("ann1", "ann-pass-1", Role::User).await;
    let (s, tokens) = gw
        .post(
            "/api/v1/auth/sign-in",
            None,
            &json!({"username": "ann1", "password": "ann-pass-1"}),
        )
        .await;
    assert_eq!(s, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(gw.get("/api/v1/users/me", Some(access)).await.0, 200);

    let (s, accepted) = delete(&gw, "/api/v1/users/Ann1", Some(&root)).await;
    assert_eq!(s, 202, "{accepted}");
    assert_eq!(accepted["id"], "ann1");
    let records = read_topic(&gw.topic(topic::USER_COMMANDS));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, "ann1");
    assert_eq!(
        records[0].value,
        json!({"type": "DeleteUser", "username": "ann1", "by": "root"})
    );

    // What the users processor publishes for it: DELETED, the token version moved on.
    let mut deleted = gw
        .state
        .views
        .get::<pickple_schemas::UserView>("ann1")
        .await
        .unwrap()
        .map(|v| serde_json::to_value(v).unwrap())
        .unwrap();
    deleted["status"] = "DELETED".into();
    deleted["token_version"] = 1.into();
    deleted["version"] = 2.into();
    assert!(gw.put_view(Kind::User, "ann1", &deleted));
    let (s, body) = gw.get("/api/v1/users/me", Some(access)).await;
    assert_eq!(s, 401, "{body}");
    let (s, body) = gw
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    let (s, _) = gw
        .post(
            "/api/v1/auth/sign-in",
            None,
            &json!({"username": "ann1", "password": "ann-pass-1"}),
        )
        .await;
    assert_eq!(s, 401, "a deleted account signs in no more");
    // The admin still reads it, marked DELETED.
    let (s, view) = gw.get("/api/v1/users/ann1", Some(&root)).await;
    assert_eq!((s, view["status"].as_str()), (200, Some("DELETED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_deletes_their_own_account_only_through_users_me() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    for path in ["/api/v1/users/root", "/api/v1/users/ROOT"] {
        let (s, body) = delete(&gw, path, Some(&root)).await;
        assert_eq!(s, 409, "{body}");
        assert_eq!(body["error"]["code"], "own_account");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/users/me"));
    }
    assert!(read_topic(&gw.topic(topic::USER_COMMANDS)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_reads_a_users_notifications_and_removes_one() {
    let gw = Gw::start().await;
    let root = gw.token("root", Role::Master);
    let ann = gw.token("ann1", Role::User);
    let (first, view) = notification("o1", "ann1", 10);
    gw.put_view(Kind::Notification, &first, &view);
    let (second, view) = notification("o2", "ann1", 20);
    gw.put_view(Kind::Notification, &second, &view);
    let (theirs, view) = notification("o3", "bob1", 30);
    gw.put_view(Kind::Notification, &theirs, &view);

    let (s, history) = gw
        .get("/api/v1/users/ann1/notifications", Some(&root))
        .await;
    assert_eq!(s, 200, "{history}");
    let (_, mine) = gw.get("/api/v1/notifications/mine", Some(&ann)).await;
    assert_eq!(history, mine, "what the user sees of their own");
    assert_eq!(history["total"], 2);
    assert_eq!(history["items"][0]["message_id"], second, "newest first");
    let (s, one) = gw
        .get(&format!("/api/v1/notifications/{first}"), Some(&ann))
        .await;
    assert_eq!((s, one["order_id"].as_str()), (200, Some("o1")));

    let (s, accepted) = delete(&gw, &format!("/api/v1/notifications/{first}"), Some(&root)).await;
    assert_eq!(s, 202, "{accepted}");
    assert_eq!(
        accepted["location"],
        format!("/api/v1/notifications/{first}")
    );
    let records = read_topic(&gw.topic(topic::NOTIFICATION_COMMANDS));
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].key, "o1",
        "the order's key: the task that sent the mail"
    );
    assert_eq!(
        records[0].value,
        json!({"type": "DeleteNotification", "message_id": first, "order_id": "o1", "by": "root"})
    );

    // What the notification processor publishes for it: the view, deleted, one version on.
    let deleted = json!({
        "message_id": first, "username": "", "email": "", "order_id": "o1",
        "kind": "ORDER_CONFIRMED", "subject": "", "sent_at": 10, "deleted": true, "version": 2
    });
    assert!(gw.put_view(Kind::Notification, &first, &deleted));
    let (_, history) = gw
        .get("/api/v1/users/ann1/notifications", Some(&root))
        .await;
    assert_eq!(history["total"], 1, "{history}");
    assert_eq!(history["items"][0]["message_id"], second);
    for token in [&root, &ann] {
        let (s, _) = gw
            .get(&format!("/api/v1/notifications/{first}"), Some(token))
            .await;
        assert_eq!(s, 404);
    }
    assert_eq!(
        delete(&gw, &format!("/api/v1/notifications/{first}"), Some(&root))
            .await
            .0,
        404,
        "removed already"
    );
    // The sent view again (a redelivery) changes nothing: its version is older.
    assert!(!gw.put_view(Kind::Notification, &first, &view_of(&first)));
    assert_eq!(
        gw.get("/api/v1/users/ann1/notifications", Some(&root))
            .await
            .1["total"],
        1
    );
}

fn view_of(id: &str) -> Value {
    let order = id.split('.').next().unwrap();
    notification(order, "ann1", 10).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_states_the_admin_routes_and_their_constraints() {
    let gw = Gw::start().await;
    let (s, doc) = gw.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"));
        responses.keys().cloned().collect()
    };
    for (path, method, wanted) in [
        (
            "/api/v1/users/{username}",
            "put",
            &["202", "401", "403", "404", "422"][..],
        ),
        (
            "/api/v1/users/{username}",
            "delete",
            &["202", "401", "403", "404", "409"],
        ),
        (
            "/api/v1/users/{username}/notifications",
            "get",
            &["200", "401", "403", "404"],
        ),
        ("/api/v1/users", "get", &["200", "401", "403", "422"]),
        (
            "/api/v1/notifications/{notification_id}",
            "get",
            &["200", "401", "404"],
        ),
        (
            "/api/v1/notifications/{notification_id}",
            "delete",
            &["202", "401", "403", "404"],
        ),
    ] {
        let documented = statuses(path, method);
        for status in wanted {
            assert!(
                documented.iter().any(|d| d == status),
                "{method} {path}: {status} in {documented:?}"
            );
        }
    }
    let q = doc["paths"]["/api/v1/users"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "q")
        .expect("q is documented");
    assert_eq!(q["schema"]["maxLength"], 254, "{q}");
    assert!(q["schema"]["pattern"].is_string(), "{q}");
    let body = &doc["components"]["schemas"]["AdminUpdateProfileRequest"];
    assert!(body["properties"]["password"].is_null(), "{body}");
    assert_eq!(body["properties"]["nickname"]["maxLength"], 30, "{body}");
    assert!(body["properties"]["email"]["pattern"].is_string(), "{body}");
    assert!(body["anyOf"].is_array(), "something to change: {body}");
}
