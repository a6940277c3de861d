//! Authentication and authorization: 401 without, with an expired or a tampered token; 403 for
//! the wrong role or a vendor someone else manages; 404 for another user's order.

mod common;

use common::*;
use pickple_gateway::auth::{now_secs, Claims, Jwt};
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_checked() {
    let gw = Gw::start().await;
    let (s, body) = gw.get("/api/v1/orders/mine", None).await;
    assert_eq!(s, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let good = gw.token("alice", Role::User);
    let claims = gw.state.jwt.verify(&good).unwrap();
    let expired = gw
        .state
        .jwt
        .sign(&Claims {
            iat: now_secs() - 7200,
            exp: now_secs() - 3600,
            ..claims.clone()
        })
        .unwrap();
    let (s, body) = gw.get("/api/v1/orders/mine", Some(&expired)).await;
    assert_eq!(s, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));

    // Signed with another key, and a valid token whose payload is swapped for a MASTER one.
    let foreign = Jwt::new(Some("not-our-secret"), 60)
        .sign(&Claims {
            role: Role::Master,
            ..claims
        })
        .unwrap();
    let (s, _) = gw.get("/api/v1/orders/mine", Some(&foreign)).await;
    assert_eq!(s, 401);
    let master = gw.token("alice", Role::Master);
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = master.split('.').nth(1).unwrap();
    parts[1] = forged_payload;
    let (s, _) = gw.get("/api/v1/users", Some(&parts.join("."))).await;
    assert_eq!(s, 401);
    for garbage in ["", "abc", "a.b.c", "Bearer"] {
        let res = gw
            .http
            .get(gw.url("/api/v1/orders/mine"))
            .header("authorization", format!("Bearer {garbage}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401, "{garbage:?}");
    }
    let res = gw
        .http
        .get(gw.url("/api/v1/orders/mine"))
        .header("authorization", "Basic YWxpY2U6cHc=")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    let (s, _) = gw.get("/api/v1/orders/mine", Some(&good)).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_ownership_are_enforced() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    let bob = gw.token("bob1", Role::User);
    let mia = gw.token("mia1", Role::VendorManager);
    let max = gw.token("max1", Role::VendorManager);
    let root = gw.token("root", Role::Master);

    // Wrong role.
    for path in ["/api/v1/users", "/api/v1/orders"] {
        let (s, body) = gw.get(path, Some(&alice)).await;
        assert_eq!(s, 403, "{path}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (s, _) = gw
        .post("/api/v1/vendors", Some(&alice), &json!({"name": "x"}))
        .await;
    assert_eq!(s, 403);
    let (s, _) = gw.get("/api/v1/users", Some(&root)).await;
    assert_eq!(s, 200);

    // Vendor ownership: mia manages v-mia; max does not.
    gw.put_view(Kind::Vendor, "v-mia", &vendor_view("v-mia", "mia1", 1));
    gw.put_view(
        Kind::Product,
        "p-mia",
        &product_view("p-mia", "v-mia", true, 1),
    );
    let body = json!({"quantity": 5});
    let res = gw
        .http
        .put(gw.url("/api/v1/products/p-mia/stock"))
        .bearer_auth(&max)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let res = gw
        .http
        .put(gw.url("/api/v1/products/p-mia/stock"))
        .bearer_auth(&mia)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let (s, _) = gw
        .post(
            "/api/v1/products",
            Some(&max),
            &json!({"vendor_id": "v-mia", "name": "Tea", "price": 3}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = gw.get("/api/v1/vendors/v-mia/orders", Some(&max)).await;
    assert_eq!(s, 403);
    let (s, _) = gw.get("/api/v1/vendors/v-mia/orders", Some(&mia)).await;
    assert_eq!(s, 200);

    // Another user's order is not found; its owner, MASTER and the vendor's manager see it.
    gw.put_view(
        Kind::Order,
        "o-alice",
        &order_view("o-alice", "alice", &["v-mia"], "PAID", 3),
    );
    let (s, body) = gw.get("/api/v1/orders/o-alice", Some(&bob)).await;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (s, _) = gw.get("/api/v1/orders/o-alice?wait=5", Some(&bob)).await;
    assert_eq!(s, 404, "waiting does not help a stranger");
    for t in [&alice, &root, &mia] {
        let (s, body) = gw.get("/api/v1/orders/o-alice", Some(t)).await;
        assert_eq!(s, 200);
        assert_eq!(body["order_id"], "o-alice");
    }
    let (s, _) = gw.get("/api/v1/orders/o-alice", Some(&max)).await;
    assert_eq!(s, 404);
    let (s, _) = gw
        .post("/api/v1/orders/o-alice/cancel", Some(&bob), &json!({}))
        .await;
    assert_eq!(s, 404);
    let (s, body) = gw.get("/api/v1/orders/mine", Some(&bob)).await;
    assert_eq!(s, 200);
    assert_eq!(body["total"], 0);

    // Deliveries: the vendor's manager starts it, another manager is refused, a user too.
    gw.put_view(
        Kind::Delivery,
        "o-alice",
        &delivery_view("o-alice", "alice", &["v-mia"], "PENDING", 1),
    );
    let start =
        json!({"carrier": "CJ_LOGISTICS", "delivery_type": "COURIER", "tracking_number": "T1"});
    let (s, _) = gw
        .post("/api/v1/deliveries/o-alice/start", Some(&max), &start)
        .await;
    assert_eq!(s, 403);
    let (s, _) = gw
        .post("/api/v1/deliveries/o-alice/start", Some(&alice), &start)
        .await;
    assert_eq!(s, 403);
    let (s, body) = gw
        .post("/api/v1/deliveries/o-alice/start", Some(&mia), &start)
        .await;
    assert_eq!(s, 202, "{body}");
    let (s, _) = gw.get("/api/v1/deliveries/o-alice", Some(&bob)).await;
    assert_eq!(s, 404);
    let (s, _) = gw.get("/api/v1/deliveries/o-alice", Some(&alice)).await;
    assert_eq!(s, 200);
    let cmds = read_topic(&gw.topic(topic::DELIVERY_COMMANDS));
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].value["type"], "StartDelivery");
    assert_eq!(cmds[0].value["by"], "mia1");
}
