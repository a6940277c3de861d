//! Sign-up publishes an argon2 hash (never the password); sign-in checks it against the user
//! view and issues a short-lived JWT and a refresh token; refresh re-reads the account.

mod common;

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_sign_in_refresh() {
    let gw = Gw::start().await;
    let (s, body) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &json!({"username": "Carol1", "nickname": "Carol", "email": "carol@example.com",
                    "password": "s3cret-pass", "role": "VENDOR_MANAGER"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["id"], "carol1");
    let records = read_topic(&gw.topic(topic::USER_COMMANDS));
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(rec.key, "carol1");
    assert_eq!(rec.value["type"], "SignUp");
    assert_eq!(rec.value["role"], "VENDOR_MANAGER");
    let hash = rec.value["password_hash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("$argon2id$"));
    assert!(!rec.value.to_string().contains("s3cret-pass"));

    // The users processor would now publish the view; write it as the sink would.
    let (s, _) = gw
        .post(
            "/api/v1/auth/sign-in",
            None,
            &json!({"username": "carol1", "password": "s3cret-pass"}),
        )
        .await;
    assert_eq!(s, 401, "no view yet");
    let mut view = user_view("carol1", &hash, Role::VendorManager, "ACTIVE", 1);
    view["user_id"] = rec.value["user_id"].clone();
    gw.put_view(Kind::User, "carol1", &view);
    // The status is the signer's alone: its location carries a token.
    let location = body["location"].as_str().unwrap().to_string();
    assert!(location.contains("?token="), "{location}");
    let (s, status) = gw
        .get(&format!("{location}&wait=2&status=ACTIVE"), None)
        .await;
    assert_eq!((s, status["status"].as_str()), (200, Some("ACTIVE")));
    assert!(status.get("password_hash").is_none());
    for stranger in [
        "/api/v1/auth/sign-up/carol1".to_string(),
        "/api/v1/auth/sign-up/carol1?token=guess".to_string(),
        location.replace("carol1", "dave1"),
    ] {
        let (s, _) = gw.get(&stranger, None).await;
        assert_eq!(
            s, 404,
            "{stranger}: the same answer as for a name nobody has"
        );
    }

    let (s, _) = gw
        .post(
            "/api/v1/auth/sign-in",
            None,
            &json!({"username": "carol1", "password": "wrong-pass"}),
        )
        .await;
    assert_eq!(s, 401);
    let (s, token) = gw
        .post(
            "/api/v1/auth/sign-in",
            None,
            &json!({"username": "CAROL1", "password": "s3cret-pass"}),
        )
        .await;
    assert_eq!(s, 200, "{token}");
    assert_eq!(token["role"], "VENDOR_MANAGER");
    let access = token["access_token"].as_str().unwrap().to_string();
    let (s, me) = gw.get("/api/v1/users/me", Some(&access)).await;
    assert_eq!(s, 200);
    assert_eq!(me["username"], "carol1");
    assert!(
        me.get("password_hash").is_none(),
        "the hash is never served"
    );

    // Duplicate sign-up is a conflict; MASTER cannot be chosen.
    let (s, _) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &json!({"username": "carol1", "nickname": "C", "email": "c2@example.com", "password": "password2"}),
        )
        .await;
    assert_eq!(s, 409);
    let (s, body) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &json!({"username": "dave1", "nickname": "D", "email": "d@example.com", "password": "password2", "role": "MASTER"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["fields"][0]["field"].as_str()),
        (422, Some("role"))
    );

    // A refresh token gives the next tokens, with the account as it stands.
    let (s, refreshed) = gw
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": token["refresh_token"]}),
        )
        .await;
    assert_eq!(
        (s, refreshed["role"].as_str()),
        (200, Some("VENDOR_MANAGER"))
    );
    assert_ne!(
        refreshed["refresh_token"], token["refresh_token"],
        "rotated"
    );
    let (s, _) = gw
        .get("/api/v1/users/me", refreshed["access_token"].as_str())
        .await;
    assert_eq!(s, 200);

    // A role change (the processor moves the token version on with it) voids the tokens.
    let mut changed = user_view("carol1", &hash, Role::User, "ACTIVE", 2);
    changed["user_id"] = rec.value["user_id"].clone();
    changed["token_version"] = json!(1);
    gw.put_view(Kind::User, "carol1", &changed);
    let (s, _) = gw
        .get("/api/v1/users/me", refreshed["access_token"].as_str())
        .await;
    assert_eq!(s, 401, "the access token of the old role");
    let (s, _) = gw
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": refreshed["refresh_token"]}),
        )
        .await;
    assert_eq!(s, 401, "the refresh token of the old role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_metrics_and_trace() {
    let gw = Gw::start().await;
    let (s, doc) = gw.get("/openapi.json", None).await;
    assert_eq!(s, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/auth/sign-in",
        "/api/v1/deliveries/{order_id}/end",
        "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/start",
        "/api/v1/deliveries",
        "/api/v1/notifications/mine",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the document");
    }
    assert!(doc["components"]["schemas"]["OrderView"]["properties"]["status"].is_object());
    // The carrier and delivery type enums, in the bodies and in the listings' filters.
    let start = &doc["components"]["schemas"]["StartDeliveryRequest"]["properties"];
    assert_eq!(
        start["carrier"]["enum"],
        serde_json::json!(["LOZEN", "CJ_LOGISTICS", "HANJIN", "EPOST"])
    );
    assert_eq!(
        start["delivery_type"]["enum"],
        serde_json::json!(["DIRECT", "COURIER", "EXPRESS"])
    );
    for listing in [
        "/api/v1/deliveries",
        "/api/v1/vendors/{vendor_id}/deliveries",
    ] {
        let params = doc["paths"][listing]["get"]["parameters"]
            .as_array()
            .unwrap();
        let carrier = params.iter().find(|p| p["name"] == "carrier").unwrap();
        assert_eq!(carrier["schema"]["enum"][1], "CJ_LOGISTICS", "{listing}");
        let status = params.iter().find(|p| p["name"] == "status").unwrap();
        assert_eq!(status["schema"]["enum"][0], "PENDING", "{listing}");
    }
    let shipping = &doc["components"]["schemas"]["ShippingRequest"];
    assert_eq!(shipping["properties"]["recipient"]["maxLength"], 50);
    assert!(shipping["properties"]["contact"]["pattern"].is_string());
    assert!(
        doc["components"]["schemas"]["PlaceOrderRequest"]["required"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("shipping"))
    );
    // Every view read documents the freshness headers; no command documents a 409 for a status
    // the processors decide.
    for p in [
        "/api/v1/orders/{order_id}",
        "/api/v1/orders/mine",
        "/api/v1/products",
        "/api/v1/deliveries/{order_id}",
    ] {
        let ok = &doc["paths"][p]["get"]["responses"]["200"];
        assert!(ok["headers"]["Pickple-Views-Lag"].is_object(), "{p}: {ok}");
        assert!(
            ok["headers"]["Pickple-Views-Stale"].is_object(),
            "{p}: {ok}"
        );
    }
    for p in [
        "/api/v1/orders/{order_id}/pay",
        "/api/v1/orders/{order_id}/cancel",
        "/api/v1/deliveries/{order_id}/start",
        "/api/v1/deliveries/{order_id}/details",
        "/api/v1/deliveries/{order_id}/end",
        "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/start",
        "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/details",
        "/api/v1/deliveries/{order_id}/shipments/{vendor_id}/end",
    ] {
        let responses = &doc["paths"][p]["post"]["responses"];
        assert!(
            responses["202"].is_object() && responses["409"].is_null(),
            "{p}"
        );
    }
    assert!(doc["paths"]["/ready"]["get"]["responses"]["200"].is_object());
    let res = gw.http.get(gw.url("/docs")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);

    let res = gw
        .http
        .get(gw.url("/health"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    let tp = res.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));

    let text = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "pickple_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(text.contains("pickple_http_request_duration_seconds_bucket"));
    assert!(text.contains("pickple_http_in_flight"));
}

/// Whether an address belongs to an account or not, a sign-up is answered the same: the
/// gateway never looks the address up, and the command carries a code the users processor mails
/// to the address, so only the address's reader learns more (after confirming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_never_tells_whether_an_address_is_in_use_and_confirming_carries_the_code() {
    let gw = Gw::start().await;
    let mut owner = user_view("alice1", "$argon2id$x", Role::User, "ACTIVE", 1);
    owner["email"] = json!("alice@example.com");
    gw.put_view(Kind::User, "alice1", &owner);

    let sign_up = |username: &str, email: &str| json!({"username": username, "nickname": "N", "email": email, "password": "s3cret-pass"});
    let (s_taken, taken) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &sign_up("carol1", "Alice@Example.com"),
        )
        .await;
    let (s_free, free) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &sign_up("dave1", "dave@example.com"),
        )
        .await;
    assert_eq!((s_taken, s_free), (202, 202), "{taken} {free}");
    let shape = |b: &serde_json::Value| {
        let mut keys: Vec<String> = b.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (keys, b["replayed"].clone())
    };
    assert_eq!(shape(&taken), shape(&free));
    let records = read_topic(&gw.topic(topic::USER_COMMANDS));
    let codes: Vec<String> = records
        .iter()
        .map(|r| r.value["confirmation_code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 2);
    assert!(codes
        .iter()
        .all(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit())));
    assert_ne!(codes[0], codes[1], "each sign-up its own secret");
    for body in [&taken, &free] {
        assert!(
            !body.to_string().contains(&codes[0]) && !body.to_string().contains(&codes[1]),
            "the code goes to the mailbox, never to the caller"
        );
    }

    // Confirming: the code goes to the users processor, which alone checks it.
    let mut pending = user_view("dave1", "$argon2id$x", Role::User, "PENDING", 1);
    pending["confirm_by"] = json!(now_ms() + 60_000);
    gw.put_view(Kind::User, "dave1", &pending);
    let (s, body) = gw
        .post(
            "/api/v1/auth/confirm-email",
            None,
            &json!({"username": "Dave1", "code": codes[1]}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["location"], "/api/v1/auth/sign-up/dave1");
    let records = read_topic(&gw.topic(topic::USER_COMMANDS));
    let confirm = records.last().unwrap();
    assert_eq!(confirm.key, "dave1");
    assert_eq!(confirm.value["type"], "ConfirmEmail");
    assert_eq!(confirm.value["code"], codes[1].as_str());
    for (bad, status) in [
        (json!({"username": "dave1", "code": "not hex"}), 422),
        (json!({"username": "dave1", "code": ""}), 422),
        (json!({"username": "nobody1", "code": "c0ffee"}), 404),
        (json!({"username": "dave1"}), 422),
    ] {
        let (s, body) = gw.post("/api/v1/auth/confirm-email", None, &bad).await;
        assert_eq!(s, status, "{bad}: {body}");
    }
    assert_eq!(
        read_topic(&gw.topic(topic::USER_COMMANDS)).len(),
        3,
        "nothing published for a refused confirmation"
    );

    // A pending sign-up whose code expired no longer holds its name.
    pending["confirm_by"] = json!(now_ms() - 1);
    pending["version"] = json!(2);
    assert!(gw.put_view(Kind::User, "dave1", &pending));
    let (s, body) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &sign_up("dave1", "dave2@example.com"),
        )
        .await;
    assert_eq!(s, 202, "{body}");

    // A change of address carries a code for the new address too.
    gw.put_user("erin1", "s3cret-pass", Role::User).await;
    let token = gw.token("erin1", Role::User);
    let res = reqwest::Client::new()
        .patch(gw.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .json(&json!({"email": "erin2@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let update = read_topic(&gw.topic(topic::USER_COMMANDS))
        .into_iter()
        .rfind(|r| r.value["type"] == "UpdateProfile")
        .unwrap();
    assert_eq!(
        update.value["confirmation_code"].as_str().map(str::len),
        Some(64)
    );
}
