//! Reservation sales and stock visibility on the gateway (real Kafka and Redis, views seeded
//! through the sink's own upsert): who sees exact levels, the sale reads and listing, the
//! caller's units in a sale, and the sale administration routes (403, 404, 422, the command
//! published).

mod common;

use common::*;
use pickple_schemas::{topic, Role};
use pickple_view_model::Kind;
use serde_json::{json, Value};

/// A public product of `vendor` with a sale `[opens_at, closes_at)` of 10 units, 4 taken.
fn product_on_sale(id: &str, vendor: &str, opens_at: i64, closes_at: i64, version: u64) -> Value {
    let mut v = product_view(id, vendor, true, version);
    v["stock"] = json!({"initial": 0, "added": 20, "available": 12, "reserved": 4, "sold": 4});
    v["sale"] = json!({
        "terms": {"opens_at": opens_at, "closes_at": closes_at, "quantity": 10, "per_user_limit": 3},
        "taken": 4, "epoch": 2
    });
    v
}

async fn send(
    gw: &Gw,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = gw.http.request(method, gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    into_parts(req.send().await.unwrap()).await
}

const LEVELS: [&str; 5] = ["initial", "added", "available", "reserved", "sold"];

fn shows_no_levels(p: &Value) {
    assert!(p.get("stock").is_none(), "{p}");
    assert!(p.get("rejection").is_none(), "{p}");
    assert!(p["sale"].get("taken").is_none(), "{p}");
    let text = p.to_string();
    for level in LEVELS {
        assert!(!text.contains(&format!("\"{level}\"")), "{level} in {p}");
    }
}

/// Anonymous callers, USERs and the manager of another vendor see availability states; the
/// vendor's manager and MASTER see the levels, on the product, its vendor's listing and the
/// public listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_levels_only_for_the_vendors_managers_and_master() {
    let gw = Gw::start().await;
    let now = now_ms();
    let mia = gw.token("mia1", Role::VendorManager);
    let max = gw.token("max1", Role::VendorManager);
    let ann = gw.token("ann1", Role::User);
    let root = gw.token("root", Role::Master);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(Kind::Vendor, "v2", &vendor_view("v2", "max1", 1));
    gw.put_view(
        Kind::Product,
        "p1",
        &product_on_sale("p1", "v1", now - 1_000, now + 60_000, 3),
    );
    let mut low = product_view("p2", "v1", true, 1);
    low["stock"] = json!({"initial": 10, "added": 0, "available": 3, "reserved": 0, "sold": 7});
    gw.put_view(Kind::Product, "p2", &low);

    for token in [None, Some(ann.as_str()), Some(max.as_str())] {
        let (s, p) = gw.get("/api/v1/products/p1", token).await;
        assert_eq!(s, 200, "{p}");
        shows_no_levels(&p);
        assert_eq!(p["availability"], "IN_STOCK", "{p}");
        assert_eq!(p["sale"]["state"], "OPEN", "{p}");
        assert_eq!(p["sale"]["remaining"], "IN_STOCK", "{p}");
        assert_eq!(p["sale"]["terms"]["quantity"], 10, "{p}");
        let (_, p) = gw.get("/api/v1/products/p2", token).await;
        assert_eq!(p["availability"], "LOW", "{p}");

        for path in ["/api/v1/products", "/api/v1/vendors/v1/products"] {
            let (s, page) = gw.get(path, token).await;
            assert_eq!((s, page["total"].as_u64()), (200, Some(2)), "{page}");
            for item in page["items"].as_array().unwrap() {
                shows_no_levels(item);
                assert!(item["availability"].is_string(), "{item}");
            }
        }
    }
    for token in [&mia, &root] {
        let (s, p) = gw.get("/api/v1/products/p1", Some(token)).await;
        assert_eq!(s, 200, "{p}");
        assert_eq!(p["stock"]["available"], 12, "{p}");
        assert_eq!(p["sale"]["taken"], 4, "{p}");
        for path in ["/api/v1/products", "/api/v1/vendors/v1/products"] {
            let (_, page) = gw.get(path, Some(token)).await;
            for item in page["items"].as_array().unwrap() {
                assert!(item["stock"]["available"].is_i64(), "{item}");
            }
        }
    }
}

/// `GET /sales` lists the public products' open and upcoming sales: one closed early leaves
/// the index, one past its end is filtered at read, a private product is never listed.
/// `GET /sales/{id}` gives the state (exact counts for the owners only) or 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_are_listed_while_open_or_upcoming_with_their_state() {
    let gw = Gw::start().await;
    let now = now_ms();
    let mia = gw.token("mia1", Role::VendorManager);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(
        Kind::Product,
        "open",
        &product_on_sale("open", "v1", now - 1_000, now + 60_000, 1),
    );
    gw.put_view(
        Kind::Product,
        "soon",
        &product_on_sale("soon", "v1", now + 30_000, now + 60_000, 1),
    );
    gw.put_view(
        Kind::Product,
        "over",
        &product_on_sale("over", "v1", now - 60_000, now - 1_000, 1),
    );
    let mut sold_out = product_on_sale("gone", "v1", now - 1_000, now + 60_000, 1);
    sold_out["sale"]["taken"] = json!(10);
    gw.put_view(Kind::Product, "gone", &sold_out);
    let mut early = product_on_sale("early", "v1", now - 1_000, now + 60_000, 1);
    early["sale"]["closed_at"] = json!(now - 500);
    gw.put_view(Kind::Product, "early", &early);
    let mut private = product_on_sale("hidden", "v1", now - 1_000, now + 60_000, 1);
    private["public"] = json!(false);
    gw.put_view(Kind::Product, "hidden", &private);
    gw.put_view(
        Kind::Product,
        "plain",
        &product_view("plain", "v1", true, 1),
    );

    let keys = gw.config.redis.keys();
    let mut con = redis_con(&gw.config);
    let indexed: Vec<String> = redis::cmd("ZRANGE")
        .arg(keys.sales())
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(indexed, ["over", "gone", "open", "soon"]);

    let (s, page) = gw.get("/api/v1/sales", None).await;
    assert_eq!(s, 200, "{page}");
    let states: Vec<(String, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            shows_no_levels(&json!({"sale": i}));
            assert!(i.get("remaining_units").is_none(), "{i}");
            (
                i["product_id"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Latest opening first; the one past its end is not counted.
    assert_eq!(
        states,
        [
            ("soon".to_string(), "UPCOMING".to_string()),
            ("open".to_string(), "OPEN".to_string()),
            ("gone".to_string(), "SOLD_OUT".to_string()),
        ]
    );
    assert_eq!(page["total"], 3);
    let (_, owner_page) = gw.get("/api/v1/sales?limit=1", Some(&mia)).await;
    assert_eq!(owner_page["items"][0]["taken"], 4, "{owner_page}");
    assert_eq!(owner_page["items"][0]["remaining_units"], 6, "{owner_page}");

    let (s, sale) = gw.get("/api/v1/sales/early", None).await;
    assert_eq!((s, sale["state"].as_str()), (200, Some("CLOSED")), "{sale}");
    let (_, sale) = gw.get("/api/v1/sales/over", None).await;
    assert_eq!(sale["state"], "CLOSED", "{sale}");
    let (_, sale) = gw.get("/api/v1/sales/gone", None).await;
    assert_eq!(
        (sale["state"].as_str(), sale["remaining"].as_str()),
        (Some("SOLD_OUT"), Some("SOLD_OUT"))
    );
    for missing in ["plain", "hidden", "nope"] {
        let (s, body) = gw.get(&format!("/api/v1/sales/{missing}"), None).await;
        assert_eq!(s, 404, "{missing}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
    }
    // The owner sees its private product's sale.
    let (s, sale) = gw.get("/api/v1/sales/hidden", Some(&mia)).await;
    assert_eq!((s, sale["taken"].as_u64()), (200, Some(4)), "{sale}");
}

/// `GET /sales/{id}/mine` reads the caller's count from `view-sale-takes`; a count of an
/// earlier sale of the product (another epoch) is 0; it needs a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_units_in_a_sale_come_from_the_take_view_of_the_current_sale() {
    let gw = Gw::start().await;
    let now = now_ms();
    let ann = gw.token("ann1", Role::User);
    let bob = gw.token("bob1", Role::User);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(
        Kind::Product,
        "p1",
        &product_on_sale("p1", "v1", now - 1_000, now + 60_000, 5),
    );
    let take = |user: &str, epoch: u32, taken: u64| {
        json!({"product_id": "p1", "username": user, "epoch": epoch, "taken": taken,
               "updated_at": now, "version": 5})
    };
    gw.put_view(Kind::SaleTake, "p1/ann1", &take("ann1", 2, 2));
    gw.put_view(Kind::SaleTake, "p1/bob1", &take("bob1", 1, 3));

    let (s, mine) = gw.get("/api/v1/sales/p1/mine", Some(&ann)).await;
    assert_eq!(s, 200, "{mine}");
    assert_eq!(
        mine,
        json!({"product_id": "p1", "username": "ann1", "taken": 2, "per_user_limit": 3,
               "state": "OPEN", "version": 5})
    );
    let (_, mine) = gw.get("/api/v1/sales/p1/mine", Some(&bob)).await;
    assert_eq!(mine["taken"], 0, "{mine}");
    // A long-poll answers once the caller's count changes.
    let (waited, changed) = tokio::join!(
        gw.get("/api/v1/sales/p1/mine?wait=10&after_version=5", Some(&bob)),
        async {
            gw.until_waiting(Kind::SaleTake, "p1/bob1", Some(5), 1)
                .await;
            let mut next = take("bob1", 2, 1);
            next["version"] = json!(6);
            gw.put_view(Kind::SaleTake, "p1/bob1", &next)
        }
    );
    assert!(changed);
    assert_eq!(
        (waited.0, waited.1["taken"].as_u64()),
        (200, Some(1)),
        "{:?}",
        waited.1
    );
    let (s, body) = gw.get("/api/v1/sales/p1/mine", None).await;
    assert_eq!(s, 401, "{body}");
    let (s, _) = gw.get("/api/v1/sales/nope/mine", Some(&ann)).await;
    assert_eq!(s, 404);
}

/// Close, quantity and delete: the vendor's manager and MASTER publish the stock command keyed
/// by the product; a USER or another vendor's manager is 403, an unknown product 404, a bad
/// quantity 422 with the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_administration_is_for_the_vendors_managers_and_master() {
    let gw = Gw::start().await;
    let now = now_ms();
    let mia = gw.token("mia1", Role::VendorManager);
    let max = gw.token("max1", Role::VendorManager);
    let ann = gw.token("ann1", Role::User);
    let root = gw.token("root", Role::Master);
    gw.put_view(Kind::Vendor, "v1", &vendor_view("v1", "mia1", 1));
    gw.put_view(
        Kind::Product,
        "p1",
        &product_on_sale("p1", "v1", now - 1_000, now + 60_000, 1),
    );
    use reqwest::Method;
    let routes = [
        (Method::POST, "/api/v1/products/p1/sale/close", None),
        (
            Method::PUT,
            "/api/v1/products/p1/sale/quantity",
            Some(json!({"quantity": 7})),
        ),
        (Method::DELETE, "/api/v1/products/p1/sale", None),
    ];
    for (method, path, body) in &routes {
        for (token, want) in [(None, 401), (Some(&ann), 403), (Some(&max), 403)] {
            let (s, err) = send(
                &gw,
                method.clone(),
                path,
                token.map(|t| t.as_str()),
                body.as_ref(),
            )
            .await;
            assert_eq!(s, want, "{method} {path}: {err}");
            assert!(err["error"]["code"].is_string(), "{err}");
        }
        let unknown = path.replace("/p1/", "/p9/");
        let (s, _) = send(&gw, method.clone(), &unknown, Some(&mia), body.as_ref()).await;
        assert_eq!(s, 404, "{method} {unknown}");
    }
    for bad in [
        json!({"quantity": 0}),
        json!({"quantity": 1_000_000_001u64}),
        json!({"quantity": -1}),
        json!({}),
    ] {
        let (s, err) = send(
            &gw,
            Method::PUT,
            "/api/v1/products/p1/sale/quantity",
            Some(&mia),
            Some(&bad),
        )
        .await;
        assert_eq!(s, 422, "{bad}: {err}");
    }
    let (s, err) = send(
        &gw,
        Method::PUT,
        "/api/v1/products/p1/sale/quantity",
        Some(&mia),
        Some(&json!({"quantity": 0})),
    )
    .await;
    assert_eq!(
        (s, err["error"]["fields"][0]["field"].as_str()),
        (422, Some("quantity")),
        "{err}"
    );

    for (i, (method, path, body)) in routes.iter().enumerate() {
        let token = if i == 1 { &root } else { &mia };
        let (s, accepted) = send(&gw, method.clone(), path, Some(token), body.as_ref()).await;
        assert_eq!(s, 202, "{method} {path}: {accepted}");
        assert_eq!(accepted["id"], "p1");
    }
    let commands: Vec<Value> = read_topic(&gw.topic(topic::STOCK_COMMANDS))
        .into_iter()
        .inspect(|r| assert_eq!(r.key, "p1"))
        .map(|r| r.value)
        .collect();
    assert_eq!(
        commands,
        [
            json!({"type": "CloseSale", "product_id": "p1"}),
            json!({"type": "SetSaleQuantity", "product_id": "p1", "quantity": 7}),
            json!({"type": "DeleteSale", "product_id": "p1"}),
        ]
    );
}

/// The OpenAPI document shows the new routes with their statuses and both product shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_shows_the_sale_routes_and_both_product_shapes() {
    let doc = pickple_gateway::openapi::document();
    for (path, method, statuses) in [
        (
            "/api/v1/products/{product_id}/sale/close",
            "post",
            &["202", "403", "404"][..],
        ),
        (
            "/api/v1/products/{product_id}/sale/quantity",
            "put",
            &["202", "403", "404", "422"],
        ),
        (
            "/api/v1/products/{product_id}/sale",
            "delete",
            &["202", "403", "404"],
        ),
        ("/api/v1/sales", "get", &["200"]),
        ("/api/v1/sales/{product_id}", "get", &["200", "404"]),
        ("/api/v1/sales/{product_id}/mine", "get", &["200", "404"]),
    ] {
        let op = &doc["paths"][path][method];
        for status in statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} {status}: {op}"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    let shapes = schemas["ProductRead"].to_string();
    assert!(
        shapes.contains("ProductView") && shapes.contains("PublicProductView"),
        "{shapes}"
    );
    assert_eq!(
        schemas["Availability"]["enum"],
        json!(["IN_STOCK", "LOW", "SOLD_OUT"])
    );
    assert_eq!(
        schemas["SaleQuantityRequest"]["properties"]["quantity"]["maximum"],
        1_000_000_000
    );
}
