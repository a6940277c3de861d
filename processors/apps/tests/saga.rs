//! The order saga end to end on the real local broker and SMTP sink: every app runs in-process
//! (one thread each) under a private topic prefix; commands go in through an idempotent producer
//! and the views are read back read_committed. No sleeps: every step waits (bounded) for a view
//! or a mail to show up.

mod common;

use std::time::{Duration, Instant};

use common::commands::*;
use common::*;
use pickple_processors::App;
use pickple_schemas::{Carrier, DeliveryCommand, DeliveryType, OrderCommand};
use serde_json::Value;

/// Short enough to watch orders expire, long enough for a test to pay in time.
const PAYMENT_TIMEOUT_MS: i64 = 5_000;
/// The fake provider's late answer for the late-approval scenario: after the deadline.
const SLOW_TOKEN: &str = "tok_slow_7000";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn product(p: &Pipeline, id: &str, price: i64, stock: u64) {
    stocked_product(p, id, &format!("v-{id}"), price, stock);
}

fn place(p: &Pipeline, order: &str, user: &str, lines: &[(&str, u64)]) {
    place_order(p, order, user, "saga.test", lines, Some(TRACE));
    p.flush();
}

fn pay(p: &Pipeline, order: &str, user: &str, token: &str) {
    pay_order(p, order, user, token, Some(TRACE));
    p.flush();
}

fn stock_of(p: &Pipeline, product: &str) -> (i64, i64, i64) {
    stock_levels(&p.view("view-products", product).expect("product view"))
}

fn wait_stock(p: &Pipeline, product: &str, want: (i64, i64, i64)) {
    p.wait_for(30, &format!("{product} stock {want:?}"), |s| {
        s.get("view-products", product)
            .is_some_and(|v| stock_levels(v) == want)
    });
}

/// The vendor starts the delivery of order `o` (not flushed).
fn start_delivery(p: &Pipeline, o: &str, tracking: &str, trace: Option<&str>) {
    p.send(
        "delivery-commands",
        o,
        &DeliveryCommand::StartDelivery {
            order_id: o.into(),
            // Without a vendor, as a command from before shipments: the only shipment's.
            vendor_id: None,
            carrier: Carrier::CjLogistics,
            delivery_type: DeliveryType::Courier,
            tracking_number: tracking.into(),
            by: "vm01".into(),
        },
        trace,
    );
}

fn happy_path(p: &Pipeline, run: &str) {
    let (o, user, prod) = (format!("{run}-happy"), "hana1", format!("{run}-mug"));
    place(p, &o, user, &[(&prod, 2)]);
    p.wait_status(30, &o, "AWAITING_PAYMENT");
    pay(p, &o, user, "tok_ok");
    let paid = p.wait_status(30, &o, "PAID");
    assert_eq!(paid["amount"], 2 * 500);
    wait_stock(p, &prod, (8, 0, 2));
    p.wait_for(30, "delivery created", |s| {
        s.get("view-deliveries", &o)
            .is_some_and(|d| d["status"] == "PENDING")
    });
    start_delivery(p, &o, "TRK-1", Some(TRACE));
    p.flush();
    p.wait_status(30, &o, "SHIPPING");
    p.send(
        "delivery-commands",
        &o,
        &DeliveryCommand::EndDelivery {
            order_id: o.clone(),
            vendor_id: None,
            by: "vm01".into(),
        },
        Some(TRACE),
    );
    p.flush();
    let done = p.wait_status(30, &o, "COMPLETED");
    assert_eq!(done["delivery_status"], "DELIVERED");

    // The confirmation, the shipment's start and arrival (one vendor), the order delivered.
    use pickple_processors::notification::{message_id, shipment_message_id};
    use pickple_schemas::NotificationKind::*;
    let vendor = format!("v-{prod}");
    let ids: Vec<String> = vec![
        message_id(&o, OrderConfirmed),
        shipment_message_id(&o, &vendor, ShipmentStarted),
        shipment_message_id(&o, &vendor, ShipmentDelivered),
        message_id(&o, DeliveryCompleted),
    ];
    // Every mail arrives...
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ids.iter().all(|id| !mails_with_id(id).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the four e-mails"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and the notification views say they were sent; by then no second copy may exist.
    p.wait_for(30, "four notification views", |s| {
        ids.iter()
            .all(|id| s.get("view-notifications", id).is_some())
    });
    for id in &ids {
        let mails = mails_with_id(id);
        assert_eq!(mails.len(), 1, "exactly one mail {id}");
        assert_eq!(header(&mails[0], "To").as_deref(), Some("hana1@saga.test"));
        // The e-mail continues the command's trace, under a span of the pipeline's own.
        let mail_trace = header(&mails[0], "Traceparent")
            .and_then(|t| pickple_telemetry::TraceParent::parse(&t))
            .expect("the e-mail carries a traceparent");
        let command_trace = pickple_telemetry::TraceParent::parse(TRACE).unwrap();
        assert_eq!(mail_trace.trace_id, command_trace.trace_id);
        assert_ne!(mail_trace.span_id, command_trace.span_id);
    }
    let sent = p
        .seen
        .lock()
        .unwrap()
        .records("view-notifications")
        .iter()
        .filter(|(k, _)| k.starts_with(&o))
        .count();
    assert_eq!(sent, 4, "one notification view per mail");
}

fn out_of_stock(p: &Pipeline, run: &str) {
    let (o, a, b) = (
        format!("{run}-oos"),
        format!("{run}-pen"),
        format!("{run}-rare"),
    );
    place(p, &o, "olga1", &[(&a, 2), (&b, 5)]);
    let v = p.wait_status(30, &o, "CANCELLED");
    let reason = last_reason(&v);
    assert!(
        reason.contains(&b) && reason.contains("out of stock"),
        "{reason}"
    );
    // The line that was reserved is released: everything is back.
    wait_stock(p, &a, (5, 0, 0));
    wait_stock(p, &b, (1, 0, 0));
}

fn expiry(p: &Pipeline, run: &str) {
    let (o, prod) = (format!("{run}-exp"), format!("{run}-cup"));
    place(p, &o, "eric1", &[(&prod, 3)]);
    let v = p.wait_status(30, &o, "AWAITING_PAYMENT");
    assert!(v["payment_deadline"].as_i64().is_some());
    wait_stock(p, &prod, (0, 3, 0));
    let v = p.wait_status(30, &o, "CANCELLED");
    assert_eq!(last_reason(&v), "payment deadline passed");
    wait_stock(p, &prod, (3, 0, 0));
    // Paying now is refused, visibly.
    pay(p, &o, "eric1", "tok_ok");
    p.wait_for(30, "late pay refused", |s| {
        s.get("view-orders", &o).is_some_and(|v| {
            v["rejection"]
                .as_str()
                .is_some_and(|r| r.contains("cancelled"))
        })
    });
}

fn declined(p: &Pipeline, run: &str) {
    let (o, prod) = (format!("{run}-dec"), format!("{run}-hat"));
    place(p, &o, "dora1", &[(&prod, 1)]);
    p.wait_status(30, &o, "AWAITING_PAYMENT");
    pay(p, &o, "dora1", "tok_decline");
    p.wait_for(30, "decline visible", |s| {
        s.get("view-orders", &o).is_some_and(|v| {
            v["status"] == "AWAITING_PAYMENT"
                && v["payment_status"].as_str() == Some("DECLINED: card declined")
        })
    });
    wait_stock(p, &prod, (1, 1, 0));
    // Another card works (a new idempotency key after a decline).
    pay(p, &o, "dora1", "tok_ok");
    p.wait_status(30, &o, "PAID");
    wait_stock(p, &prod, (1, 0, 1));
}

fn cancel_after_payment(p: &Pipeline, run: &str) {
    let (o, prod) = (format!("{run}-can"), format!("{run}-bag"));
    place(p, &o, "carl1", &[(&prod, 2)]);
    p.wait_status(30, &o, "AWAITING_PAYMENT");
    pay(p, &o, "carl1", "tok_ok");
    p.wait_status(30, &o, "PAID");
    wait_stock(p, &prod, (0, 0, 2));
    p.send(
        "order-commands",
        &o,
        &OrderCommand::CancelOrder {
            order_id: o.clone(),
            username: "carl1".into(),
            reason: "changed my mind".into(),
            master: false,
        },
        None,
    );
    p.flush();
    p.wait_for(30, "refund", |s| {
        s.get("view-orders", &o).is_some_and(|v| {
            v["status"] == "CANCELLED" && v["payment_status"].as_str() == Some("REFUNDED")
        })
    });
    wait_stock(p, &prod, (2, 0, 0));
    p.wait_for(30, "delivery cancelled", |s| {
        s.get("view-deliveries", &o)
            .is_some_and(|d| d["status"] == "CANCELLED")
    });
    // In between, the order's view showed the cancel waiting for the delivery's answer.
    let views: Vec<Value> = p
        .seen
        .lock()
        .unwrap()
        .records("view-orders")
        .iter()
        .filter(|(k, _)| *k == o)
        .map(|(_, v)| v.clone())
        .collect();
    let waiting = views
        .iter()
        .position(|v| v["cancel_requested"] == "changed my mind")
        .expect("a view with the cancel waiting");
    assert_eq!(views[waiting]["status"], "PAID");
    assert!(
        views.last().unwrap()["cancel_requested"].is_null(),
        "the last view no longer waits"
    );
}

/// The race the delivery processor decides: the vendor starts the delivery and the customer
/// cancels at once, in the same flush, so the cancel usually reaches the order before the
/// DeliveryStarted reply does. Whoever wins, the order is refunded if and only if the delivery
/// was cancelled: never a refund for goods on their way.
fn cancel_racing_the_start(p: &Pipeline, run: &str) {
    let (o, prod) = (format!("{run}-race"), format!("{run}-box"));
    place(p, &o, "rita1", &[(&prod, 1)]);
    p.wait_status(30, &o, "AWAITING_PAYMENT");
    pay(p, &o, "rita1", "tok_ok");
    p.wait_status(30, &o, "PAID");
    p.wait_for(30, "delivery created", |s| {
        s.get("view-deliveries", &o)
            .is_some_and(|d| d["status"] == "PENDING")
    });
    start_delivery(p, &o, "TRK-RACE", None);
    p.send(
        "order-commands",
        &o,
        &OrderCommand::CancelOrder {
            order_id: o.clone(),
            username: "rita1".into(),
            reason: "changed my mind".into(),
            master: false,
        },
        None,
    );
    p.flush();
    let refused_by_delivery = "cancellation refused: the delivery has already started";
    p.wait_for(30, "cancel decided", |s| {
        let delivery = s.get("view-deliveries", &o).map(|d| d["status"].clone());
        s.get("view-orders", &o).is_some_and(|v| {
            let refused = v["status"] == "SHIPPING"
                && (last_reason(v) == refused_by_delivery
                    || v["rejection"]
                        .as_str()
                        .is_some_and(|r| r.contains("shipped")));
            let cancelled =
                v["status"] == "CANCELLED" && v["payment_status"].as_str() == Some("REFUNDED");
            (refused && delivery == Some("IN_TRANSIT".into()))
                || (cancelled && delivery == Some("CANCELLED".into()))
        })
    });
    let v = p.view("view-orders", &o).unwrap();
    if v["status"] == "SHIPPING" {
        assert_eq!(v["payment_status"], "AUTHORIZED");
        wait_stock(p, &prod, (0, 0, 1));
        let by = if last_reason(&v) == refused_by_delivery {
            "the delivery processor"
        } else {
            "the order, which had heard of the start"
        };
        eprintln!("cancel racing the start: refused by {by}");
    } else {
        wait_stock(p, &prod, (1, 0, 0));
        eprintln!("cancel racing the start: the cancel won, the start was refused");
    }
}

/// The provider approves after the order's deadline: the deadline cancels the order (stock
/// released), and the approval that comes after is refunded by the saga.
fn late_approval(p: &Pipeline, run: &str) {
    let (o, prod) = (format!("{run}-late"), format!("{run}-pot"));
    place(p, &o, "lena1", &[(&prod, 1)]);
    p.wait_status(30, &o, "AWAITING_PAYMENT");
    pay(p, &o, "lena1", SLOW_TOKEN);
    p.wait_status(30, &o, "PAYMENT_PENDING");
    let v = p.wait_status(30, &o, "CANCELLED");
    assert_eq!(last_reason(&v), "payment deadline passed");
    wait_stock(p, &prod, (1, 0, 0));
    p.wait_for(30, "late approval refunded", |s| {
        s.get("view-orders", &o)
            .is_some_and(|v| v["payment_status"].as_str() == Some("REFUNDED"))
    });
    let v = p.view("view-orders", &o).unwrap();
    assert_eq!(v["status"], "CANCELLED");
}

type Scenario = fn(&Pipeline, &str);

#[test]
fn order_saga_scenarios() {
    let started = Instant::now();
    ensure_maildir();
    let p = Pipeline::start("saga", &config(PAYMENT_TIMEOUT_MS), &App::ALL).unwrap();
    // Unique per run: the sink's maildir outlives runs, and Message-IDs derive from order ids.
    let run = p.prefix.trim_end_matches('.').to_string();
    let run = run.as_str();
    for (id, stock) in [
        ("mug", 10),
        ("pen", 5),
        ("rare", 1),
        ("cup", 3),
        ("hat", 2),
        ("bag", 2),
        ("pot", 1),
        ("box", 1),
    ] {
        product(&p, &format!("{run}-{id}"), 500, stock);
    }
    p.flush();
    p.wait_for(60, "products ready", |s| {
        ["mug", "pen", "rare", "cup", "hat", "bag", "pot", "box"]
            .iter()
            .all(|id| {
                s.get("view-products", &format!("{run}-{id}"))
                    .is_some_and(|v| v["version"] == 2)
            })
    });
    eprintln!("pipeline ready after {:?}", started.elapsed());
    assert_eq!(stock_of(&p, &format!("{run}-mug")), (10, 0, 0));

    // Independent scenarios at once (each on its own products and orders)...
    std::thread::scope(|s| {
        let p = &p;
        let scenarios: Vec<(&str, Scenario)> = vec![
            ("happy path", happy_path),
            ("out of stock", out_of_stock),
            ("expiry", expiry),
            ("declined", declined),
            ("cancel after payment", cancel_after_payment),
            ("cancel racing the start", cancel_racing_the_start),
        ];
        let handles: Vec<_> = scenarios
            .into_iter()
            .map(|(name, f)| {
                (
                    name,
                    s.spawn(move || {
                        let t = Instant::now();
                        f(p, run);
                        eprintln!("{name}: ok in {:?}", t.elapsed());
                    }),
                )
            })
            .collect();
        for (name, h) in handles {
            if h.join().is_err() {
                panic!("scenario '{name}' failed");
            }
        }
    });
    // ...then the late approval alone: its slow provider call holds the payment app.
    let t = Instant::now();
    late_approval(&p, run);
    eprintln!("late approval: ok in {:?}", t.elapsed());

    // Every order of the run ended COMPLETED or CANCELLED, or is PAID (the declined one) or
    // SHIPPING (the one whose cancel lost the race).
    {
        let s = p.seen.lock().unwrap();
        for (key, v) in s.latest.iter().filter(|((t, _), _)| t == "view-orders") {
            let status = v["status"].as_str().unwrap();
            assert!(
                matches!(status, "COMPLETED" | "CANCELLED" | "PAID" | "SHIPPING"),
                "order {} ended {status}",
                key.1
            );
        }
    }
    p.stop();
    eprintln!("saga scenarios took {:?}", started.elapsed());
}
