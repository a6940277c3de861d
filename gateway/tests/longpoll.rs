//! How a long-poll ends: never a 5xx. A wait that ends without the awaited change answers 200
//! with the current view and `Pickple-Wait: timeout`; one whose condition holds (at once or
//! during the wait) answers 200 with `Pickple-Wait: met`; a read without a wait carries no
//! `Pickple-Wait`; a view that does not exist after the wait stays a 404.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pickple_schemas::Role;
use pickple_view_model::Kind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_200_with_the_view_whether_or_not_the_wait_was_met() {
    let gw = Gw::start().await;
    let alice = gw.token("alice", Role::User);
    gw.put_view(
        Kind::Order,
        "o-w",
        &order_view("o-w", "alice", &[], "PENDING", 1),
    );

    // No wait asked: no Pickple-Wait.
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/o-w", Some(&alice))
        .await;
    assert_eq!((s, body["version"].as_u64()), (200, Some(1)), "{body}");
    assert_eq!(header(&headers, "pickple-wait"), None);
    // wait=0 is a plain read too.
    let (s, headers, _) = gw
        .get_with_headers("/api/v1/orders/o-w?wait=0&after_version=1", Some(&alice))
        .await;
    assert_eq!(s, 200);
    assert_eq!(header(&headers, "pickple-wait"), None);

    // after_version=<current>: nothing newer comes, so the wait ends with the current view.
    let start = Instant::now();
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/o-w?wait=1&after_version=1", Some(&alice))
        .await;
    assert_eq!(s, 200, "a wait that times out is not an error: {body}");
    assert_eq!(header(&headers, "pickple-wait"), Some("timeout"));
    assert_eq!(header(&headers, "x-view-version"), Some("1"));
    assert_eq!(body["order_id"], "o-w");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["version"], 1);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "answered after the wait, took {:?}",
        start.elapsed()
    );
    // The other conditions time out the same way: a status not reached, a bare "until it
    // changes".
    for q in ["wait=0.5&status=PAID", "wait=0.5"] {
        let (s, headers, body) = gw
            .get_with_headers(&format!("/api/v1/orders/o-w?{q}"), Some(&alice))
            .await;
        assert_eq!((s, body["version"].as_u64()), (200, Some(1)), "{q}: {body}");
        assert_eq!(header(&headers, "pickple-wait"), Some("timeout"), "{q}");
    }

    // A condition that already holds: answered at once, met.
    for q in ["wait=5&after_version=0", "wait=5&status=PENDING"] {
        let start = Instant::now();
        let (s, headers, body) = gw
            .get_with_headers(&format!("/api/v1/orders/o-w?{q}"), Some(&alice))
            .await;
        assert_eq!((s, body["version"].as_u64()), (200, Some(1)), "{q}: {body}");
        assert_eq!(header(&headers, "pickple-wait"), Some("met"), "{q}");
        assert!(start.elapsed() < Duration::from_secs(3), "{q}: at once");
    }

    // A condition met during the wait: the new view, met.
    let waiter = {
        let http = gw.http.clone();
        let url = gw.url("/api/v1/orders/o-w?wait=10&after_version=1");
        let token = alice.clone();
        tokio::spawn(async move {
            let res = http.get(url).bearer_auth(token).send().await.unwrap();
            let wait = header(res.headers(), "pickple-wait").map(str::to_string);
            (wait, into_parts(res).await)
        })
    };
    gw.until_waiting(Kind::Order, "o-w", Some(1), 1).await;
    gw.put_view(
        Kind::Order,
        "o-w",
        &order_view("o-w", "alice", &[], "AWAITING_PAYMENT", 2),
    );
    let (wait, (s, body)) = waiter.await.unwrap();
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["status"], "AWAITING_PAYMENT");
    assert_eq!(wait.as_deref(), Some("met"));

    // A view that does not exist after the wait stays a 404 (and says nothing of the wait).
    let (s, headers, body) = gw
        .get_with_headers("/api/v1/orders/never?wait=0.5", Some(&alice))
        .await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(header(&headers, "pickple-wait"), None);
    // Nor is someone else's order seen through a wait.
    let bob = gw.token("bob1", Role::User);
    let (s, headers, _) = gw
        .get_with_headers("/api/v1/orders/o-w?wait=0.5&after_version=2", Some(&bob))
        .await;
    assert_eq!(s, 404);
    assert_eq!(header(&headers, "pickple-wait"), None);
}

/// Every long-pollable view read answers a timed-out wait the same way. (The sign-up status,
/// `GET /auth/sign-up/{username}`, reads through the same `read_view` and layer; it needs the
/// signer's token, so it is left to the sign-up tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_long_pollable_read_answers_a_timed_out_wait_with_200() {
    let gw = Gw::start().await;
    gw.put_user("alice", "password1", Role::User).await;
    let alice = gw.token("alice", Role::User);
    let master = gw.token("root1", Role::Master);
    gw.put_view(Kind::Vendor, "v-w", &vendor_view("v-w", "manager1", 1));
    gw.put_view(Kind::Product, "p-w", &product_view("p-w", "v-w", true, 1));
    gw.put_view(
        Kind::Delivery,
        "o-d",
        &delivery_view("o-d", "alice", &["v-w"], "PENDING", 1),
    );
    for (path, token) in [
        ("/api/v1/users/me", Some(&alice)),
        ("/api/v1/users/alice", Some(&master)),
        ("/api/v1/vendors/v-w", None),
        ("/api/v1/products/p-w", None),
        ("/api/v1/deliveries/o-d", Some(&alice)),
    ] {
        let (s, headers, body) = gw
            .get_with_headers(
                &format!("{path}?wait=0.3&after_version=1"),
                token.map(String::as_str),
            )
            .await;
        assert_eq!(s, 200, "{path}: {body}");
        assert_eq!(body["version"], 1, "{path}: {body}");
        assert_eq!(header(&headers, "pickple-wait"), Some("timeout"), "{path}");
        let (s, headers, _) = gw
            .get_with_headers(
                &format!("{path}?wait=5&after_version=0"),
                token.map(String::as_str),
            )
            .await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(header(&headers, "pickple-wait"), Some("met"), "{path}");
    }
}
