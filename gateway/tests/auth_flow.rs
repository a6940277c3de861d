//! Sign-up publishes an argon2 hash (never the password); sign-in checks it against the user
//! view and issues a JWT; refresh re-reads the role.

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
    gw.put_view(
        Kind::User,
        "carol1",
        &user_view("carol1", &hash, Role::VendorManager, "ACTIVE", 1),
    );
    let (s, status) = gw
        .get("/api/v1/auth/sign-up/carol1?wait=2&status=ACTIVE", None)
        .await;
    assert_eq!((s, status["status"].as_str()), (200, Some("ACTIVE")));
    assert!(status.get("password_hash").is_none());

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

    // A role change shows at refresh.
    gw.put_view(
        Kind::User,
        "carol1",
        &user_view("carol1", &hash, Role::User, "ACTIVE", 2),
    );
    let res = gw
        .http
        .post(gw.url("/api/v1/auth/refresh"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let (s, refreshed) = into_parts(res).await;
    assert_eq!((s, refreshed["role"].as_str()), (200, Some("USER")));
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
        "/api/v1/notifications/mine",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the document");
    }
    assert!(doc["components"]["schemas"]["OrderView"]["properties"]["status"].is_object());
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
