//! The order app: the order saga, keyed by order id. It reads `order-commands` and
//! the other processors' `order-replies`, sends stock commands keyed by product id, payment
//! commands and `order-events` keyed by order id, publishes `view-orders`, and keeps the payment
//! deadlines in the `deadlines` store (a timer index keyed by big-endian due millis + order id)
//! that its punctuator scans.
//!
//! It also exports `pickple_orders_in_status{status}` and
//! `pickple_order_oldest_waiting_seconds{status}`, computed from each task's orders and summed
//! over the tasks of the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use pickple_domain::order::{Order, OrderEffect, OrderInput, OrderState};
use pickple_domain::Millis;
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record, Route};
use pickple_schemas::topic::{
    ORDER_COMMANDS, ORDER_EVENTS, ORDER_REPLIES, PAYMENT_COMMANDS, STOCK_COMMANDS, VIEW_ORDERS,
};
use pickple_schemas::{OrderCommand, OrderReply, OrderStatus};
use pickple_topics::catalogue::app;
use prometheus::{register_gauge_vec, register_int_gauge_vec, GaugeVec, IntGaugeVec};

use crate::entity::{self, Entity};
use crate::state::{checked_key, Versioned};

pub const ORDERS: &str = "orders";
pub const DEADLINES: &str = "deadlines";

const ORDER: Entity = Entity {
    what: "order",
    store: ORDERS,
    view: VIEW_ORDERS,
    updated: "OrderUpdated",
    rejected: "OrderRejected",
};

/// How often a task recounts its orders for the gauges.
const GAUGE_EVERY_MS: Millis = 5_000;

/// The most payment deadlines one punctuation of a task fires, oldest first. Each cancels an
/// order (a release per line, an event and a view: up to 52 records); after an outage a
/// backlog falls due at once, and firing it in one punctuation would make one transaction
/// without a bound. The rest fire at the next punctuations, a second apart.
pub const DEADLINE_BATCH: usize = 500;

pub fn spec() -> AppSpec {
    AppSpec::new(
        app::ORDER.name,
        &[ORDER_COMMANDS, ORDER_REPLIES],
        &[ORDERS, DEADLINES],
    )
    .with_route(route)
}

/// An order is keyed by its id; a deadline by its due time, then the order's id.
pub fn route<'k>(store: &str, key: &'k [u8]) -> Route<'k> {
    match store {
        DEADLINES => Route::Key(key.get(8..).unwrap_or_default()),
        _ => Route::Key(key),
    }
}

/// Timer keys sort by due time: big-endian millis, then the order id.
pub fn timer_key(due: Millis, order_id: &str) -> Vec<u8> {
    let mut k = due.to_be_bytes().to_vec();
    k.extend_from_slice(order_id.as_bytes());
    k
}

const STATUSES: [OrderStatus; 7] = [
    OrderStatus::Pending,
    OrderStatus::AwaitingPayment,
    OrderStatus::PaymentPending,
    OrderStatus::Paid,
    OrderStatus::Shipping,
    OrderStatus::Completed,
    OrderStatus::Cancelled,
];

pub fn status_label(s: OrderStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

struct Gauges {
    in_status: IntGaugeVec,
    oldest: GaugeVec,
}

fn gauges() -> &'static Gauges {
    static G: OnceLock<Gauges> = OnceLock::new();
    G.get_or_init(|| Gauges {
        in_status: register_int_gauge_vec!(
            "pickple_orders_in_status",
            "Orders held by this process's order tasks, by status",
            &["status"]
        )
        .expect("register pickple_orders_in_status"),
        oldest: register_gauge_vec!(
            "pickple_order_oldest_waiting_seconds",
            "Age of the oldest order waiting in a (non-final) status",
            &["status"]
        )
        .expect("register pickple_order_oldest_waiting_seconds"),
    })
}

/// Per status: how many orders, and since when the oldest waits in it.
pub type StatusCounts = HashMap<OrderStatus, (i64, Option<Millis>)>;

/// The per-task order counts of one process, summed into the gauges.
#[derive(Clone, Default)]
pub struct OrderMetrics {
    per_task: Arc<Mutex<HashMap<i32, StatusCounts>>>,
}

impl OrderMetrics {
    pub fn new() -> Self {
        gauges();
        Self::default()
    }

    fn set(&self, partition: i32, counts: Option<StatusCounts>, now: Millis) {
        let mut all = self.per_task.lock().unwrap();
        match counts {
            Some(c) => {
                all.insert(partition, c);
            }
            None => {
                all.remove(&partition);
            }
        }
        let g = gauges();
        for s in STATUSES {
            let label = status_label(s);
            let count: i64 = all.values().filter_map(|c| c.get(&s)).map(|c| c.0).sum();
            let oldest = all
                .values()
                .filter_map(|c| c.get(&s).and_then(|c| c.1))
                .min();
            g.in_status.with_label_values(&[&label]).set(count);
            let age = oldest.map(|t| (now - t).max(0) as f64 / 1000.0);
            g.oldest
                .with_label_values(&[&label])
                .set(age.unwrap_or(0.0));
        }
    }

    /// The summed count of a status (tests).
    pub fn count(&self, status: OrderStatus) -> i64 {
        let all = self.per_task.lock().unwrap();
        all.values()
            .filter_map(|c| c.get(&status))
            .map(|c| c.0)
            .sum()
    }
}

pub struct OrderProcessor {
    partition: i32,
    rules: Order,
    metrics: OrderMetrics,
    last_count: Option<Millis>,
    deadline_batch: usize,
}

impl OrderProcessor {
    pub fn new(partition: i32, payment_timeout_ms: Millis, metrics: OrderMetrics) -> Self {
        OrderProcessor {
            partition,
            rules: Order { payment_timeout_ms },
            metrics,
            last_count: None,
            deadline_batch: DEADLINE_BATCH,
        }
    }

    fn handle(
        &self,
        ctx: &mut Context<'_>,
        key: &str,
        input: &OrderInput,
    ) -> Result<(), ProcessError> {
        entity::handle(
            ctx,
            &ORDER,
            key,
            &self.rules,
            input,
            OrderState::to_view,
            |ctx, effect| send_effect(ctx, key, effect),
        )?;
        Ok(())
    }

    fn count(&mut self, ctx: &Context<'_>) -> Result<(), ProcessError> {
        let now = ctx.now();
        if self.last_count.is_some_and(|t| now - t < GAUGE_EVERY_MS) {
            return Ok(());
        }
        self.last_count = Some(now);
        let mut counts = StatusCounts::new();
        for (_, v) in ctx.range::<Versioned<OrderState>>(ORDERS, [0u8], [0xFFu8])? {
            let o = v.state;
            let since = o.history.last().map(|t| t.at);
            let e = counts.entry(o.status).or_insert((0, None));
            e.0 += 1;
            if !o.status.is_final() {
                e.1 = match (e.1, since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        self.metrics.set(self.partition, Some(counts), now);
        Ok(())
    }
}

impl Drop for OrderProcessor {
    /// The task is gone (revoked, or the app stops): its orders no longer count here.
    fn drop(&mut self) {
        self.metrics
            .set(self.partition, None, pickple_runtime::now_millis());
    }
}

fn send_effect(ctx: &mut Context<'_>, order_id: &str, effect: &OrderEffect) {
    if let Some(cmd) = effect.stock_command(order_id) {
        let product_id = crate::stock::product_id(&cmd).to_string();
        ctx.send(STOCK_COMMANDS, &product_id, &cmd);
        return;
    }
    if let Some(cmd) = effect.payment_command(order_id) {
        ctx.send(PAYMENT_COMMANDS, order_id, &cmd);
        return;
    }
    match effect {
        OrderEffect::Publish(event) => ctx.send(ORDER_EVENTS, order_id, event),
        OrderEffect::ScheduleDeadline { at } => {
            ctx.put(DEADLINES, timer_key(*at, order_id), &order_id.to_string())
        }
        OrderEffect::CancelDeadline { at } => ctx.delete(DEADLINES, timer_key(*at, order_id)),
        _ => {}
    }
}

fn command_order_id(cmd: &OrderCommand) -> &str {
    match cmd {
        OrderCommand::PlaceOrder { order_id, .. }
        | OrderCommand::PayOrder { order_id, .. }
        | OrderCommand::CancelOrder { order_id, .. }
        | OrderCommand::VendorCancelOrder { order_id, .. } => order_id,
    }
}

impl Processor for OrderProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let (key, input) = match record.topic {
            ORDER_REPLIES => {
                let reply: OrderReply = record.decode()?;
                let key = checked_key(record, reply.order_id())?.to_string();
                (key, OrderInput::Reply(reply))
            }
            _ => {
                let cmd: OrderCommand = record.decode()?;
                let key = checked_key(record, command_order_id(&cmd))?.to_string();
                (key, OrderInput::Command(cmd))
            }
        };
        self.handle(ctx, &key, &input)
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let now = ctx.now();
        let due: Vec<(Vec<u8>, String)> =
            ctx.range(DEADLINES, 0i64.to_be_bytes(), (now + 1).to_be_bytes())?;
        for (timer, order_id) in due.into_iter().take(self.deadline_batch) {
            ctx.delete(DEADLINES, timer);
            match self.handle(ctx, &order_id, &OrderInput::DeadlinePassed) {
                Ok(()) => {}
                // A timer of an order that cannot be handled is dropped, not fired forever.
                Err(ProcessError::Invalid(reason)) => {
                    tracing::error!(order = %order_id, %reason, "deadline dropped")
                }
                Err(e) => return Err(e),
            }
        }
        self.count(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::{
        OrderEvent, OrderLine, OrderView, PaymentCommand, RecordHeaders, StockCommand,
    };

    const TIMEOUT: Millis = 2_000;

    fn driver() -> TestDriver<OrderProcessor> {
        TestDriver::new(OrderProcessor::new(0, TIMEOUT, OrderMetrics::new()), 10_000)
    }

    fn place(o: &str, lines: &[(&str, u64)]) -> OrderCommand {
        OrderCommand::PlaceOrder {
            order_id: o.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            lines: lines.iter().map(|&l| OrderLine::from(l)).collect(),
            shipping: None,
        }
    }
    fn reserved(o: &str, p: &str) -> OrderReply {
        OrderReply::StockReserved {
            order_id: o.into(),
            product_id: p.into(),
            quantity: 1,
            unit_price: 500,
            vendor_id: "v1".into(),
        }
    }

    #[test]
    fn place_sends_one_reserve_per_line_keyed_by_product() {
        let mut d = driver();
        d.pipe(ORDER_COMMANDS, "o1", &place("o1", &[("p1", 1), ("p2", 2)]))
            .unwrap();
        let stock = d.take_outputs(STOCK_COMMANDS);
        let keys: Vec<&str> = stock.iter().map(|o| o.key_str()).collect();
        assert_eq!(keys, vec!["p1", "p2"]);
        let cmds: Vec<StockCommand> = stock
            .iter()
            .map(|o| serde_json::from_value(o.json()).unwrap())
            .collect();
        assert!(
            matches!(&cmds[1], StockCommand::Reserve { order_id, quantity: 2, .. } if order_id == "o1")
        );
        let views: Vec<OrderView> = d.take(VIEW_ORDERS);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].status, OrderStatus::Pending);
        assert_eq!(views[0].version, 1);
    }

    #[test]
    fn reserved_then_paid_confirms_commits_and_cancels_the_timer() {
        let mut d = driver();
        d.pipe(ORDER_COMMANDS, "o1", &place("o1", &[("p1", 1)]))
            .unwrap();
        d.pipe(ORDER_REPLIES, "o1", &reserved("o1", "p1")).unwrap();
        assert_eq!(
            d.take::<OrderView>(VIEW_ORDERS).last().unwrap().status,
            OrderStatus::AwaitingPayment
        );
        d.pipe(ORDER_COMMANDS, "o1", &pay_o1()).unwrap();
        let pay = d.take_outputs(PAYMENT_COMMANDS);
        assert_eq!(pay[0].key_str(), "o1");
        assert!(matches!(
            serde_json::from_value::<PaymentCommand>(pay[0].json()).unwrap(),
            PaymentCommand::Authorize { amount: 500, .. }
        ));
        d.pipe(ORDER_REPLIES, "o1", &authorized_o1()).unwrap();
        let events: Vec<OrderEvent> = d.take(ORDER_EVENTS);
        assert!(matches!(events[0], OrderEvent::OrderConfirmed { .. }));
        let commits = d.take_outputs(STOCK_COMMANDS);
        assert!(commits.iter().any(|o| o.headers.event_type == "Commit"));
        // The deadline timer is gone: time passing changes nothing.
        d.advance(TIMEOUT * 2).unwrap();
        let views: Vec<OrderView> = d.take(VIEW_ORDERS);
        assert_eq!(views.last().unwrap().status, OrderStatus::Paid);
        assert_eq!(views.last().unwrap().version, 4);
    }

    fn pay_o1() -> OrderCommand {
        OrderCommand::PayOrder {
            order_id: "o1".into(),
            username: "ann1".into(),
            payment_token: "tok_ok".into(),
        }
    }

    fn authorized_o1() -> OrderReply {
        OrderReply::PaymentAuthorized {
            order_id: "o1".into(),
            payment_id: "pay-1".into(),
            amount: 500,
        }
    }

    /// Place, reserve and pay o1 (one line p1 at 500), then drain the outputs.
    fn paid(d: &mut TestDriver<OrderProcessor>) {
        d.pipe(ORDER_COMMANDS, "o1", &place("o1", &[("p1", 1)]))
            .unwrap();
        d.pipe(ORDER_REPLIES, "o1", &reserved("o1", "p1")).unwrap();
        d.pipe(ORDER_COMMANDS, "o1", &pay_o1()).unwrap();
        d.pipe(ORDER_REPLIES, "o1", &authorized_o1()).unwrap();
        for topic in [STOCK_COMMANDS, PAYMENT_COMMANDS, ORDER_EVENTS, VIEW_ORDERS] {
            d.take_outputs(topic);
        }
    }

    fn cancel(o: &str) -> OrderCommand {
        OrderCommand::CancelOrder {
            order_id: o.into(),
            username: "ann1".into(),
            reason: "changed my mind".into(),
            master: false,
        }
    }

    fn vendor_cancel(o: &str) -> OrderCommand {
        OrderCommand::VendorCancelOrder {
            order_id: o.into(),
            vendor_id: "v1".into(),
            by: "vic1".into(),
            reason: "out of glaze".into(),
        }
    }

    #[test]
    fn a_vendor_cancel_releases_keyed_by_product_and_a_paid_one_is_refused_in_the_view() {
        let mut d = driver();
        d.pipe(ORDER_COMMANDS, "o2", &place("o2", &[("p1", 1), ("p2", 1)]))
            .unwrap();
        d.pipe(ORDER_REPLIES, "o2", &reserved("o2", "p1")).unwrap();
        d.pipe(ORDER_REPLIES, "o2", &reserved("o2", "p2")).unwrap();
        d.take_outputs(STOCK_COMMANDS);
        d.pipe(ORDER_COMMANDS, "o2", &vendor_cancel("o2")).unwrap();
        let releases = d.take_outputs(STOCK_COMMANDS);
        let released: Vec<(&str, &str)> = releases
            .iter()
            .map(|o| (o.key_str(), o.headers.event_type.as_str()))
            .collect();
        assert_eq!(released, vec![("p1", "Release"), ("p2", "Release")]);
        let events: Vec<OrderEvent> = d.take(ORDER_EVENTS);
        assert!(
            matches!(&events[..], [OrderEvent::OrderCancelled { reason, .. }]
                if reason == "cancelled by vendor v1: out of glaze"),
            "{events:?}"
        );
        let view = d.take::<OrderView>(VIEW_ORDERS).pop().unwrap();
        assert_eq!(view.status, OrderStatus::Cancelled);
        // The payment timer went with it.
        d.advance(TIMEOUT * 2).unwrap();
        assert!(d.take_outputs(STOCK_COMMANDS).is_empty());

        let mut d = driver();
        paid(&mut d);
        d.pipe(ORDER_COMMANDS, "o1", &vendor_cancel("o1")).unwrap();
        assert!(d.take_outputs(STOCK_COMMANDS).is_empty());
        assert!(d.take_outputs(ORDER_EVENTS).is_empty());
        let views = d.take_outputs(VIEW_ORDERS);
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].headers.event_type, "OrderRejected");
        let view: OrderView = serde_json::from_value(views[0].json()).unwrap();
        assert_eq!(view.status, OrderStatus::Paid);
        assert!(
            view.rejection
                .as_deref()
                .unwrap_or_default()
                .contains("paid"),
            "{view:?}"
        );
    }

    #[test]
    fn a_paid_cancel_asks_the_delivery_and_refunds_on_its_answer() {
        let mut d = driver();
        paid(&mut d);
        d.pipe(ORDER_COMMANDS, "o1", &cancel("o1")).unwrap();
        let events = d.take_outputs(ORDER_EVENTS);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].key_str(), "o1");
        assert_eq!(events[0].headers.event_type, "OrderCancelRequested");
        assert!(d.take_outputs(PAYMENT_COMMANDS).is_empty(), "no refund yet");
        assert!(d.take_outputs(STOCK_COMMANDS).is_empty(), "no restock yet");
        assert_eq!(
            d.take::<OrderView>(VIEW_ORDERS).pop().unwrap().status,
            OrderStatus::Paid
        );
        d.pipe(
            ORDER_REPLIES,
            "o1",
            &OrderReply::DeliveryCancelled {
                order_id: "o1".into(),
            },
        )
        .unwrap();
        let refund: Vec<PaymentCommand> = d.take(PAYMENT_COMMANDS);
        assert!(matches!(&refund[..], [PaymentCommand::Refund { .. }]));
        let restock = d.take_outputs(STOCK_COMMANDS);
        assert_eq!(restock[0].headers.event_type, "Restock");
        let events: Vec<OrderEvent> = d.take(ORDER_EVENTS);
        assert!(matches!(&events[..], [OrderEvent::OrderCancelled { .. }]));
        assert_eq!(
            d.take::<OrderView>(VIEW_ORDERS).pop().unwrap().status,
            OrderStatus::Cancelled
        );
    }

    #[test]
    fn a_refused_cancel_keeps_the_order_and_says_why() {
        let mut d = driver();
        paid(&mut d);
        d.pipe(ORDER_COMMANDS, "o1", &cancel("o1")).unwrap();
        d.take_outputs(ORDER_EVENTS);
        d.pipe(
            ORDER_REPLIES,
            "o1",
            &OrderReply::DeliveryStarted {
                order_id: "o1".into(),
            },
        )
        .unwrap();
        d.pipe(
            ORDER_REPLIES,
            "o1",
            &OrderReply::DeliveryCancelRefused {
                order_id: "o1".into(),
                reason: "the delivery has already started".into(),
            },
        )
        .unwrap();
        assert!(d.take_outputs(PAYMENT_COMMANDS).is_empty());
        assert!(d.take_outputs(STOCK_COMMANDS).is_empty());
        assert!(d.take_outputs(ORDER_EVENTS).is_empty());
        let view = d.take::<OrderView>(VIEW_ORDERS).pop().unwrap();
        assert_eq!(view.status, OrderStatus::Shipping);
        assert_eq!(
            view.history.last().unwrap().reason,
            "cancellation refused: the delivery has already started"
        );
    }

    #[test]
    fn the_deadline_timer_fires_and_releases_the_stock() {
        let mut d = driver();
        d.pipe(ORDER_COMMANDS, "o1", &place("o1", &[("p1", 1)]))
            .unwrap();
        d.pipe(ORDER_REPLIES, "o1", &reserved("o1", "p1")).unwrap();
        d.take_outputs(STOCK_COMMANDS);
        d.advance(TIMEOUT - 1).unwrap();
        assert!(d.take_outputs(ORDER_EVENTS).is_empty());
        d.advance(1).unwrap();
        let events: Vec<OrderEvent> = d.take(ORDER_EVENTS);
        assert!(
            matches!(&events[0], OrderEvent::OrderCancelled { reason, .. } if reason == pickple_domain::order::DEADLINE_REASON)
        );
        let release = d.take_outputs(STOCK_COMMANDS);
        assert_eq!(release.len(), 1);
        assert_eq!(release[0].key_str(), "p1");
        assert_eq!(release[0].headers.event_type, "Release");
        let view = d.take::<OrderView>(VIEW_ORDERS).pop().unwrap();
        assert_eq!(view.status, OrderStatus::Cancelled);
        // The timer is consumed: no second cancel.
        d.advance(TIMEOUT).unwrap();
        assert!(d.take_outputs(ORDER_EVENTS).is_empty());
        // The gauges saw the cancelled order.
        assert_eq!(
            d.get::<Versioned<OrderState>>(ORDERS, "o1")
                .unwrap()
                .version,
            3
        );
    }

    #[test]
    fn due_deadlines_fire_in_bounded_batches_oldest_first() {
        let mut p = OrderProcessor::new(0, TIMEOUT, OrderMetrics::new());
        p.deadline_batch = 2;
        let mut d = TestDriver::new(p, 10_000);
        for o in ["o3", "o1", "o2"] {
            d.pipe(ORDER_COMMANDS, o, &place(o, &[("p1", 1)])).unwrap();
            d.pipe(ORDER_REPLIES, o, &reserved(o, "p1")).unwrap();
            d.advance(1).unwrap();
        }
        d.take_outputs(VIEW_ORDERS);
        // All three fell due during an outage.
        d.advance(TIMEOUT * 10).unwrap();
        let cancelled = |d: &mut TestDriver<OrderProcessor>| -> Vec<String> {
            d.take_outputs(ORDER_EVENTS)
                .iter()
                .map(|e| e.key_str().to_string())
                .collect()
        };
        assert_eq!(cancelled(&mut d), ["o3", "o1"]);
        let o2 = d.get::<Versioned<OrderState>>(ORDERS, "o2").unwrap();
        assert_eq!(o2.state.status, OrderStatus::AwaitingPayment);
        d.advance(1_000).unwrap();
        assert_eq!(cancelled(&mut d), ["o2"]);
        d.advance(1_000).unwrap();
        assert!(cancelled(&mut d).is_empty(), "each fired once");
    }

    #[test]
    fn a_refused_command_is_visible_in_the_view_with_a_new_version() {
        let mut d = driver();
        d.pipe(ORDER_COMMANDS, "o1", &place("o1", &[("p1", 1)]))
            .unwrap();
        d.pipe(
            ORDER_COMMANDS,
            "o1",
            &OrderCommand::PayOrder {
                order_id: "o1".into(),
                username: "ann1".into(),
                payment_token: "tok".into(),
            },
        )
        .unwrap();
        let views: Vec<OrderView> = d.take(VIEW_ORDERS);
        assert_eq!(views.len(), 2);
        assert_eq!(views[1].version, 2);
        assert_eq!(views[1].status, OrderStatus::Pending);
        assert!(views[1]
            .rejection
            .as_deref()
            .unwrap()
            .contains("not reserved"));
        assert!(d.take_outputs(PAYMENT_COMMANDS).is_empty());
    }

    #[test]
    fn garbage_and_unknown_orders_go_to_the_dlq() {
        let mut d = driver();
        d.pipe_raw(
            ORDER_COMMANDS,
            Some(b"o1"),
            Some(b"[]"),
            RecordHeaders::new("X", "c"),
        )
        .unwrap();
        d.pipe(ORDER_REPLIES, "o9", &reserved("o9", "p1")).unwrap();
        d.pipe(ORDER_REPLIES, "o2", &reserved("o9", "p1")).unwrap();
        assert_eq!(d.dead_letters().len(), 3);
        assert!(d.take_outputs(VIEW_ORDERS).is_empty());
    }

    #[test]
    fn gauges_count_the_tasks_orders() {
        let metrics = OrderMetrics::new();
        let mut d = TestDriver::new(OrderProcessor::new(0, TIMEOUT, metrics.clone()), 10_000);
        d.pipe(ORDER_COMMANDS, "o1", &place("o1", &[("p1", 1)]))
            .unwrap();
        d.pipe(ORDER_COMMANDS, "o2", &place("o2", &[("p1", 1)]))
            .unwrap();
        d.pipe(ORDER_REPLIES, "o2", &reserved("o2", "p1")).unwrap();
        d.advance(1).unwrap();
        assert_eq!(metrics.count(OrderStatus::Pending), 1);
        assert_eq!(metrics.count(OrderStatus::AwaitingPayment), 1);
        let text = String::from_utf8({
            use prometheus::Encoder;
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&prometheus::gather(), &mut buf)
                .unwrap();
            buf
        })
        .unwrap();
        assert!(text.contains("pickple_orders_in_status{status=\"PENDING\"}"));
        assert!(text.contains("pickple_order_oldest_waiting_seconds{status=\"AWAITING_PAYMENT\"}"));
    }
}
