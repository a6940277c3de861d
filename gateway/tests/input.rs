//! Hostile input: malformed JSON, wrong types, huge bodies, wrong content types, and generated
//! garbage on every POST route. Every answer is a documented 4xx in the one error shape, and
//! the server keeps serving.

mod common;

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use proptest::prelude::*;
use serde_json::{json, Value};

fn assert_error_shape(status: u16, body: &Value, allowed: &[u16]) {
    assert!(allowed.contains(&status), "status {status}: {body}");
    let code = body["error"]["code"].as_str();
    assert!(code.is_some_and(|c| !c.is_empty()), "no error code: {body}");
    assert!(body["error"]["message"].is_string(), "no message: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_json_errors() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    let url = gw.url("/api/v1/orders");
    let send = |body: Vec<u8>, ctype: &'static str| {
        gw.http
            .post(&url)
            .bearer_auth(&alice)
            .header("content-type", ctype)
            .body(body)
            .send()
    };

    let (s, body) = into_parts(
        send(b"{\"lines\": [".to_vec(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_error_shape(s, &body, &[400]);
    assert_eq!(body["error"]["code"], "malformed_json");

    let wrong =
        json!({"lines": [{"product_id": "p1", "quantity": "three"}], "shipping": shipping()});
    let (s, body) = into_parts(
        send(wrong.to_string().into_bytes(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_error_shape(s, &body, &[422]);
    assert_eq!(body["error"]["fields"][0]["field"], "lines[0].quantity");

    let invalid = json!({"lines": [{"product_id": "p1", "quantity": 0}, {"product_id": "p1", "quantity": 2}], "shipping": shipping()});
    let (s, body) = into_parts(
        send(invalid.to_string().into_bytes(), "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_error_shape(s, &body, &[422]);
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["lines[0].quantity", "lines[1].product_id"]);

    let huge = format!("{{\"lines\": [], \"pad\": \"{}\"}}", "x".repeat(200 * 1024));
    // The server answers before reading the whole body and drops the connection; keep the
    // client from pooling it, or the next request may go out on a connection already closed.
    let too_large = gw
        .http
        .post(&url)
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .header("connection", "close")
        .body(huge)
        .send();
    let (s, body) = into_parts(too_large.await.unwrap()).await;
    assert_error_shape(s, &body, &[413]);
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (s, body) = into_parts(
        send(b"lines=1".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
    )
    .await;
    assert_error_shape(s, &body, &[415]);

    let (s, body) = into_parts(
        send(vec![0xff, 0xfe, 0x00], "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_error_shape(s, &body, &[400]);

    let (s, body) = gw.get("/api/v1/orders/mine?limit=lots", Some(&alice)).await;
    assert_error_shape(s, &body, &[400]);
    let (s, body) = gw.get("/api/v1/orders/x?wait=-1", Some(&alice)).await;
    assert_error_shape(s, &body, &[400]);

    let res = gw
        .http
        .post(&url)
        .bearer_auth(&alice)
        .header("idempotency-key", "has spaces")
        .json(&json!({"lines": [{"product_id": "p1", "quantity": 1}], "shipping": shipping()}))
        .send()
        .await
        .unwrap();
    let (s, body) = into_parts(res).await;
    assert_error_shape(s, &body, &[400]);

    // Still serving.
    let (s, body) = gw.get("/health", None).await;
    assert_eq!((s, body["status"].as_str()), (200, Some("ok")));
}

/// Every POST route (with the ids it needs), authenticated as MASTER so validation is reached.
const POST_ROUTES: &[&str] = &[
    "/api/v1/auth/sign-up",
    "/api/v1/auth/sign-in",
    "/api/v1/vendors",
    "/api/v1/products",
    "/api/v1/products/p1/stock",
    "/api/v1/products/p1/sale",
    "/api/v1/orders",
    "/api/v1/orders/o1/pay",
    "/api/v1/orders/o1/cancel",
    "/api/v1/deliveries/o1/start",
    "/api/v1/deliveries/o1/details",
    "/api/v1/deliveries/o1/shipments/v1/start",
    "/api/v1/deliveries/o1/shipments/v1/details",
];

/// Documented answers to a bad request (409: a taken username at sign-up or an inactive user
/// placing an order, never an entity's status, which the processors decide; 401: sign-in with
/// wrong credentials).
const DOCUMENTED: &[u16] = &[400, 401, 403, 404, 409, 413, 415, 422];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("lines".to_string()),
                        Just("quantity".to_string()),
                        Just("product_id".to_string()),
                        Just("username".to_string()),
                        Just("name".to_string()),
                        Just("price".to_string()),
                        Just("vendor_id".to_string()),
                        "[a-z_]{1,8}"
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Bodies that must never be accepted: raw bytes, or JSON that is not a valid request.
fn bad_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| {
            let mut s = v.to_string().into_bytes();
            s.truncate(s.len() / 2);
            s
        }),
    ]
}

#[test]
fn generated_invalid_bodies_get_documented_errors_on_every_post_route() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(Gw::start());
    rt.block_on(async {
        gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "root", 1));
        gw.put_view(Kind::Product, "p1", &product_view("p1", "v1", true, 1));
        gw.put_view(
            Kind::Order,
            "o1",
            &order_view("o1", "root", &["v1"], "PENDING", 1),
        );
        gw.put_view(
            Kind::Delivery,
            "o1",
            &delivery_view("o1", "root", &["v1"], "PENDING", 1),
        );
        gw.put_view(
            Kind::User,
            "root",
            &user_view(
                "root",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
                Role::Master,
                "ACTIVE",
                1,
            ),
        );
    });
    let token = gw.token("root", Role::Master);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(prop::sample::select(POST_ROUTES), bad_body()),
            |(route, body)| {
                let (status, answer) = rt.block_on(async {
                    let res = gw
                        .http
                        .post(gw.url(route))
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    into_parts(res).await
                });
                // Generated JSON might by chance be a valid request: 202 is then acceptable.
                if status == 202 {
                    return Ok(());
                }
                prop_assert!(
                    DOCUMENTED.contains(&status),
                    "{route} answered {status} to {:?}: {answer}",
                    String::from_utf8_lossy(&body)
                );
                prop_assert!(answer["error"]["code"].is_string(), "{route}: {answer}");
                Ok(())
            },
        )
        .unwrap();
    // Each route also with an empty object and with no body at all.
    rt.block_on(async {
        for route in POST_ROUTES {
            let (s, body) = gw.post(route, Some(&token), &json!({})).await;
            // `{}` is a valid cancel (the reason is optional).
            if !(route.ends_with("/cancel") && s == 202) {
                assert_error_shape(s, &body, DOCUMENTED);
            }
            let res = gw
                .http
                .post(gw.url(route))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let (s, body) = into_parts(res).await;
            assert_error_shape(s, &body, DOCUMENTED);
        }
        let (s, _) = gw.get("/health", None).await;
        assert_eq!(s, 200);
    });
}

/// The shape rules are the domain's: what the processor would refuse (and, for a create,
/// dead-letter) is a 422 here, with the field, and nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shape_rules_come_from_the_domain() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    let root = gw.token("root", Role::Master);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(Kind::Product, "p1", &product_view("p1", "v1", true, 1));
    let field = |body: &Value| {
        body["error"]["fields"][0]["field"]
            .as_str()
            .map(String::from)
    };
    let message = |body: &Value| {
        body["error"]["fields"][0]["message"]
            .as_str()
            .map(String::from)
    };

    // Price 0: the stock processor refuses it ("price must be positive").
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &json!({"vendor_id": "v1", "name": "Tea", "price": 0}),
        )
        .await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("price")), "{body}");
    let price_rule = pickple_domain::stock::check_price(0)
        .err()
        .map(|r| match r {
            pickple_domain::Rejection::Invalid(m) => m,
            other => other.to_string(),
        });
    assert_eq!(message(&body), price_rule);
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &json!({"vendor_id": "v1", "name": "Tea", "price": -5}),
        )
        .await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("price")));
    let res = gw
        .http
        .patch(gw.url("/api/v1/products/p1"))
        .bearer_auth(&mia)
        .json(&json!({"price": 0}))
        .send()
        .await
        .unwrap();
    let (s, body) = into_parts(res).await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("price")));
    assert_eq!(message(&body), price_rule);
    // A blank name, a sale that closes before it opens, no units to add.
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &json!({"vendor_id": "v1", "name": "   ", "price": 3}),
        )
        .await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("name")));
    let (s, body) = gw
        .post(
            "/api/v1/products/p1/sale",
            Some(&mia),
            &json!({"opens_at": 10, "closes_at": 10, "quantity": 5, "per_user_limit": 1}),
        )
        .await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("closes_at")));
    let (s, body) = gw
        .post(
            "/api/v1/products/p1/stock",
            Some(&mia),
            &json!({"quantity": 0}),
        )
        .await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("quantity")));
    // The username rule is the domain user module's, wherever a username comes in: a sign-up,
    // a vendor for a manager whose name is not a username.
    let username_rule = |name: &str| {
        pickple_domain::user::validate_username(name)
            .err()
            .map(|r| match r {
                pickple_domain::Rejection::Invalid(m) => m,
                other => other.to_string(),
            })
    };
    let (s, body) = gw
        .post(
            "/api/v1/auth/sign-up",
            None,
            &json!({"username": "ab", "nickname": "Ab", "email": "ab@example.com", "password": "password1"}),
        )
        .await;
    assert_eq!(
        (s, field(&body).as_deref()),
        (422, Some("username")),
        "{body}"
    );
    assert_eq!(message(&body), username_rule("ab"));
    let (s, body) = gw
        .post(
            "/api/v1/vendors",
            Some(&root),
            &json!({"name": "Shop", "manager": "x"}),
        )
        .await;
    assert_eq!((s, field(&body).as_deref()), (422, Some("manager")));
    assert_eq!(message(&body), username_rule("x"));
    // Nothing above was published; a valid product is.
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &json!({"vendor_id": "v1", "name": "Tea", "price": 1}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let records = read_topic(&gw.topic(topic::STOCK_COMMANDS));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].value["type"], "CreateProduct");
    assert_eq!(records[0].value["price"], 1);
    assert!(read_topic(&gw.topic(topic::VENDOR_COMMANDS)).is_empty());
    assert!(read_topic(&gw.topic(topic::USER_COMMANDS)).is_empty());
}

/// The first invalid field of a 422 answer and its message.
fn first_field(body: &Value) -> (Option<&str>, Option<&str>) {
    let field = &body["error"]["fields"][0];
    (field["field"].as_str(), field["message"].as_str())
}

/// The domain's character rule's message for `what` holding `c` (the one the processor gives).
fn invisible_rule(what: &str, c: char) -> String {
    match pickple_domain::rules::visible_text(what, &format!("a{c}"), false) {
        Err(pickple_domain::Rejection::Invalid(m)) => m,
        other => panic!("{c:?} is not refused: {other:?}"),
    }
}

async fn patch(gw: &Gw, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let res = gw
        .http
        .patch(gw.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    into_parts(res).await
}

/// Right-to-left overrides, zero-width and other format characters, and control characters in
/// a vendor's name are a 422 naming `name`, escaped in the JSON or not; Hangul is a name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_in_a_vendor_name_are_refused() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    for name in [
        "Shop\u{202E}gnp.exe",
        "\u{2066}Shop",
        "Sh\u{200B}op",
        "Shop\u{FEFF}",
        "Shop\u{AD}",
        "Shop\u{7}",
        "Shop\nTwo",
        "Shop\tTwo",
    ] {
        let (s, body) = gw
            .post("/api/v1/vendors", Some(&mia), &json!({ "name": name }))
            .await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some("name")),
            "{name:?}: {body}"
        );
        let (s, body) = patch(&gw, "/api/v1/vendors/v1", &mia, &json!({ "name": name })).await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some("name")),
            "{name:?}: {body}"
        );
    }
    let (_, body) = gw
        .post(
            "/api/v1/vendors",
            Some(&mia),
            &json!({"name": "Shop\u{202E}gnp.exe"}),
        )
        .await;
    assert_eq!(
        first_field(&body).1,
        Some(invisible_rule("vendor name", '\u{202E}').as_str()),
        "{body}"
    );
    // Written as a JSON escape, it is the same character.
    let res = gw
        .http
        .post(gw.url("/api/v1/vendors"))
        .bearer_auth(&mia)
        .header("content-type", "application/json")
        .body(r#"{"name": "Shop\u202egnp.exe"}"#)
        .send()
        .await
        .unwrap();
    let (s, body) = into_parts(res).await;
    assert_eq!((s, first_field(&body).0), (422, Some("name")), "{body}");
    // Letters of any script are names.
    let (s, body) = gw
        .post("/api/v1/vendors", Some(&mia), &json!({"name": "픽플 상점"}))
        .await;
    assert_eq!(s, 202, "{body}");
    let records = read_topic(&gw.topic(topic::VENDOR_COMMANDS));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].value["name"], "픽플 상점");
}

/// A zero-width space in a product's description, an isolate in its name: 422 naming the
/// field, on create and on update. A Hangul name with a description of several lines is
/// accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_in_a_product_are_refused() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(Kind::Product, "p1", &product_view("p1", "v1", true, 1));

    let product = |name: &str, description: &str| json!({"vendor_id": "v1", "name": name, "description": description, "price": 5});
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &product("Green tea", "Fresh\u{200B}leaves"),
        )
        .await;
    assert_eq!(
        (s, first_field(&body)),
        (
            422,
            (
                Some("description"),
                Some(invisible_rule("description", '\u{200B}').as_str())
            )
        ),
        "{body}"
    );
    for (name, description, field) in [
        ("Green\u{2066} tea", "leaves", "name"),
        ("Green tea\u{202D}", "leaves", "name"),
        ("Green\ntea", "leaves", "name"),
        ("Green tea", "\u{202E}sevael", "description"),
        ("Green tea", "leaves\u{2060}", "description"),
        ("Green tea", "leaves\r\nmore", "description"),
        ("Green tea", "leaves\u{1B}[31m", "description"),
    ] {
        let (s, body) = gw
            .post("/api/v1/products", Some(&mia), &product(name, description))
            .await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some(field)),
            "{name:?} {description:?}: {body}"
        );
        let update = if field == "name" {
            json!({ "name": name })
        } else {
            json!({ "description": description })
        };
        let (s, body) = patch(&gw, "/api/v1/products/p1", &mia, &update).await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some(field)),
            "{update}: {body}"
        );
    }
    // Hangul, accented Latin, several lines with a tab: accepted.
    let (s, body) = gw
        .post(
            "/api/v1/products",
            Some(&mia),
            &product("녹차 세트", "제주 녹차.\n\tCrème brûlée à côté."),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let (s, body) = patch(
        &gw,
        "/api/v1/products/p1",
        &mia,
        &json!({"name": "보성 녹차", "description": "두 줄\n설명"}),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    // Two keys, two partitions: no order between the records read back.
    let records = read_topic(&gw.topic(topic::STOCK_COMMANDS));
    assert_eq!(records.len(), 2, "{records:?}");
    let of = |kind: &str| {
        records
            .iter()
            .find(|r| r.value["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {records:?}"))
    };
    assert_eq!(of("CreateProduct").value["name"], "녹차 세트");
    assert_eq!(
        of("CreateProduct").value["description"],
        "제주 녹차.\n\tCrème brûlée à côté."
    );
    assert_eq!(of("UpdateProduct").value["name"], "보성 녹차");
}

/// A zero-width space in a tracking number or a detail, a carrier or type outside its enum: 422
/// naming the field. Hangul is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_in_a_delivery_are_refused() {
    let gw = Gw::start().await;
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(
        Kind::Delivery,
        "o1",
        &delivery_view("o1", "ann1", &["v1"], "PENDING", 1),
    );
    let start = |carrier: &str, delivery_type: &str, tracking: &str| json!({"carrier": carrier, "delivery_type": delivery_type, "tracking_number": tracking});
    let (s, body) = gw
        .post(
            "/api/v1/deliveries/o1/start",
            Some(&mia),
            &start("CJ_LOGISTICS", "COURIER", "1234\u{200B}5678"),
        )
        .await;
    assert_eq!(
        (s, first_field(&body)),
        (
            422,
            (
                Some("tracking_number"),
                Some(invisible_rule("tracking number", '\u{200B}').as_str())
            )
        ),
        "{body}"
    );
    for (body, field) in [
        (start("CJ\u{202E}", "COURIER", "12345678"), "carrier"),
        (start("DHL", "COURIER", "12345678"), "carrier"),
        (start("cj_logistics", "COURIER", "12345678"), "carrier"),
        (
            start("HANJIN", "EXPRESS\u{2069}", "12345678"),
            "delivery_type",
        ),
        (start("HANJIN", "STANDARD", "12345678"), "delivery_type"),
        (
            start("HANJIN", "EXPRESS", "\u{FEFF}12345678"),
            "tracking_number",
        ),
        (start("HANJIN", "EXPRESS", "1234\n5678"), "tracking_number"),
    ] {
        let (s, answer) = gw
            .post("/api/v1/deliveries/o1/start", Some(&mia), &body)
            .await;
        assert_eq!(
            (s, first_field(&answer).0),
            (422, Some(field)),
            "{body}: {answer}"
        );
    }
    for (location, description, field) in [
        ("Seoul\u{202E}", "sorted", "location"),
        ("Seoul\tHub", "sorted", "location"),
        ("Seoul", "sorted\u{200D}", "description"),
        ("Seoul", "\u{2067}sorted", "description"),
    ] {
        let (s, body) = gw
            .post(
                "/api/v1/deliveries/o1/details",
                Some(&mia),
                &json!({"location": location, "description": description}),
            )
            .await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some(field)),
            "{location:?} {description:?}: {body}"
        );
    }
    let (s, body) = gw
        .post(
            "/api/v1/deliveries/o1/start",
            Some(&mia),
            &start("HANJIN", "DIRECT", "한진-1234-5678"),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    // The enum's message names the field and the values it takes.
    let (s, body) = gw
        .post(
            "/api/v1/deliveries/o1/shipments/v1/start",
            Some(&mia),
            &start("DHL", "COURIER", "1"),
        )
        .await;
    assert_eq!((s, first_field(&body).0), (422, Some("carrier")), "{body}");
    let message = body["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("DHL") && message.contains("CJ_LOGISTICS"),
        "{message}"
    );
    let (s, body) = gw
        .post(
            "/api/v1/deliveries/o1/details",
            Some(&mia),
            &json!({"location": "서울 허브", "description": "분류 완료\n\tÉvry"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
    let records = read_topic(&gw.topic(topic::DELIVERY_COMMANDS));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0].value["carrier"], "HANJIN");
    assert_eq!(records[0].value["vendor_id"], "v1");
}

/// Sign-up checks its nickname with the gateway's one-line text check, which refuses invisible
/// characters; a Hangul nickname signs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_in_a_nickname_are_refused() {
    let gw = Gw::start().await;
    let sign_up = |username: &str, nickname: &str| {
        json!({
            "username": username, "nickname": nickname,
            "email": format!("{username}@example.com"), "password": "password1"
        })
    };
    for nickname in [
        "\u{2066}Ann",
        "An\u{200B}n",
        "Ann\u{202E}",
        "Ann\u{0}",
        "Ann\nAnn",
    ] {
        let (s, body) = gw
            .post("/api/v1/auth/sign-up", None, &sign_up("ann1", nickname))
            .await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some("nickname")),
            "{nickname:?}: {body}"
        );
    }
    let (s, body) = gw
        .post("/api/v1/auth/sign-up", None, &sign_up("ann1", "김민지"))
        .await;
    assert_eq!(s, 202, "{body}");
    let records = read_topic(&gw.topic(topic::USER_COMMANDS));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].value["nickname"], "김민지");
}

/// A cancel's reason is free text of several lines, but no invisible characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_characters_in_a_cancel_reason_are_refused() {
    let gw = Gw::start().await;
    let ann = gw.token("ann1", Role::User);
    gw.put_view(
        Kind::Order,
        "o1",
        &order_view("o1", "ann1", &["v1"], "PENDING", 1),
    );
    for reason in ["too late\u{202E}", "\u{200B}", "changed\u{2066} mind"] {
        let (s, body) = gw
            .post(
                "/api/v1/orders/o1/cancel",
                Some(&ann),
                &json!({ "reason": reason }),
            )
            .await;
        assert_eq!(
            (s, first_field(&body).0),
            (422, Some("reason")),
            "{reason:?}: {body}"
        );
    }
    let (s, body) = gw
        .post(
            "/api/v1/orders/o1/cancel",
            Some(&ann),
            &json!({"reason": "마음이 바뀌었어요.\n\tSorry"}),
        )
        .await;
    assert_eq!(s, 202, "{body}");
}
