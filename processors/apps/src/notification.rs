//! The notification app: e-mails on `OrderConfirmed` (`order-events`), `ShipmentStarted`,
//! `ShipmentDelivered` (one per vendor's shipment) and `DeliveryCompleted` (the order's last
//! shipment arrived) on `delivery-events`, each keyed by order id, and the confirmation codes
//! of sign-ups and e-mail changes (`ConfirmationRequested`, `user-events`, keyed by username).
//! A confirmation mail stays out of `view-notifications`: its code is a secret.
//!
//! Exactly once as seen by the user: every mail has a deterministic Message-ID
//! `<order-id.kind@pickple.local>` (`<order-id.vendor-id.kind@pickple.local>` for a shipment's),
//! and a "sent" marker in store `sent` (keyed by that id,
//! written in the same processing step as the send) stops a redelivered event from sending
//! again. The SMTP send itself cannot join the Kafka transaction: if the transaction aborts after
//! a send, the marker is lost with it, so the task also remembers what it sent in memory (which
//! survives an abort and retry). The step that sends asks the runtime to commit at once
//! (`Context::commit_soon`), so only a crash between a send and that commit, a few milliseconds,
//! can send again: at least once, at most one repeat per crash, always with the same
//! Message-ID for receivers to deduplicate. An SMTP failure is a `Retry`. The record's `traceparent` is
//! carried into a `Traceparent` header of the mail. Each sent mail publishes
//! `view-notifications` keyed by the message id (without angle brackets).
//!
//! **Bounded state.** Store `sent` holds, per task:
//! - `<message-id>` -> `{"sent_at": millis}`: the marker, looked up by each event;
//! - `0xFF ++ due millis (i64 big-endian) ++ <message-id>` -> the message id: the marker's
//!   expiry, at `sent_at + SENT_RETENTION_MS`, written in the same step as the marker. The
//!   punctuator deletes the markers that fell due, oldest first, at most
//!   [`EXPIRE_BATCH`] per punctuation. (A Message-ID is UTF-8, whose bytes are never 0xFE or 0xFF,
//!   so these keys never meet a marker's.)
//! - `0xFE ++ "legacy markers indexed"` -> millis: set once every marker written before the
//!   index existed has been given its expiry. Until then the punctuator reads every marker
//!   once per task start and indexes (or deletes, when already expired) those without one,
//!   within the same batch limit, so a running shop upgrades in place.
//!
//! The in-memory set of what the task sent keeps only the last [`SENT_HERE_CAPACITY`] ids
//! (see [`NotificationProcessor`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::{Message, SmtpTransport, Transport};
use pickple_runtime::{AppSpec, Context, Millis, ProcessError, Processor, Record, Route};
use pickple_schemas::{
    confirmation_mail, DeliveryEvent, NotificationCommand, NotificationKind, NotificationView,
    OrderEvent, ShippingAddress, UserEvent,
};
use pickple_topics::catalogue::app;
use serde::{Deserialize, Serialize};

use crate::state::checked_key;

pub const STORE: &str = "sent";
pub use pickple_schemas::topic::{
    DELIVERY_EVENTS, NOTIFICATION_COMMANDS, ORDER_EVENTS, USER_EVENTS, VIEW_NOTIFICATIONS as VIEW,
};
pub const DOMAIN: &str = "pickple.local";

const DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// How long a "sent" marker is kept: as long as the event that caused its mail can be read
/// again.
///
/// The order and delivery processors publish each event that makes a mail once: they run
/// exactly-once, so a crash before their commit aborts what they had sent, which this app
/// (reading `read_committed`) never sees, and their state makes a redelivered input a no-op
/// (`Paid` only without a payment id, `Started` only while pending, `Delivered` only in
/// transit). This app commits its input offsets with its markers, so it does not read a marked
/// event again either, unless its group re-reads its inputs: offsets reset by an operator, or
/// dropped by the broker after the group stayed empty longer than `offsets.retention.minutes`
/// (7 days by default), after which `auto.offset.reset = earliest` replays whatever the topics
/// still hold. `order-events` and `delivery-events` keep 30 days, and a record outlives that
/// by up to one segment roll (a segment is deleted only once its newest record is past the
/// retention; `segment.ms` is 7 days by default): 37 days. A marker kept that long stops any
/// such replay from mailing anyone twice; one kept 7 days would let a replay after a week's
/// outage send three weeks of mails again. (The app's own abort-and-retry is not the
/// markers' job: a marker is lost with its aborted transaction; `sent_here` covers that.)
pub const SENT_RETENTION_MS: Millis = (30 + 7) * DAY_MS;

/// The most markers one punctuation of a task deletes (or, while upgrading, indexes): two
/// changelog records each. A task sends at most a few hundred mails a second (each is a
/// synchronous SMTP exchange), so a thousand a second keeps up with any steady state and
/// works a backlog (after an outage, or the upgrade) down without one huge transaction.
pub const EXPIRE_BATCH: usize = 1_000;

/// How many Message-IDs a task remembers having sent (see [`NotificationProcessor`]).
pub const SENT_HERE_CAPACITY: usize = 256;

/// First byte of the expiry index's keys.
const DUE: u8 = 0xFF;
/// Set once every marker of a version without the expiry index has been indexed.
const LEGACY_SWEPT: &[u8] = b"\xFElegacy markers indexed";
/// Every marker key sorts below this.
const MARKERS_END: [u8; 1] = [0xFE];

/// The expiry index key of a marker: `0xFF`, the due time big-endian, the message id.
pub fn due_key(due: Millis, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + message_id.len());
    k.push(DUE);
    k.extend_from_slice(&due.to_be_bytes());
    k.extend_from_slice(message_id.as_bytes());
    k
}

pub fn spec() -> AppSpec {
    AppSpec::new(
        app::NOTIFICATION.name,
        &[
            ORDER_EVENTS,
            DELIVERY_EVENTS,
            USER_EVENTS,
            NOTIFICATION_COMMANDS,
        ],
        &[STORE],
    )
    .with_route(route)
}

/// A sent mail's marker (and its expiry) about an order is copied to the order's partition,
/// where the mail's later commands (a MASTER's deletion) look it up, and stays where it is,
/// where a replay of the events already there would check it. A confirmation mail's marker
/// names the user's id, not the username its event was keyed by: it stays, as its events do
/// (kept a day, the code's own life). So does the progress of the legacy sweep.
pub fn route<'k>(_store: &str, key: &'k [u8]) -> Route<'k> {
    let id = match key {
        [DUE, rest @ ..] => rest.get(8..).unwrap_or_default(),
        [0xFE, ..] => return Route::Stay,
        _ => key,
    };
    let Ok(id) = std::str::from_utf8(id) else {
        return Route::Stay;
    };
    if confirmation_mail::expiry(id).is_some() {
        return Route::Stay;
    }
    // `ORDER.kind@domain` or `ORDER.VENDOR.kind@domain`: order ids are UUIDs, without dots.
    match id.split_once('.') {
        Some((order_id, _)) if !order_id.is_empty() => Route::Copy(order_id.as_bytes()),
        _ => Route::Stay,
    }
}

/// One e-mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Without angle brackets: `o1.order-confirmed@pickple.local`.
    pub message_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    /// W3C trace context of the record that caused the mail ("" when none).
    pub traceparent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The mail can never be sent (a malformed address): dead letter.
    #[error("mail cannot be sent: {0}")]
    Invalid(String),
    /// The server is down or refused for now: retry.
    #[error("mail server trouble: {0}")]
    Transient(String),
}

pub trait Mailer: Send + Sync + 'static {
    fn send(&self, mail: &Mail) -> Result<(), MailError>;
}

/// `kind` as it appears in Message-IDs.
pub fn kind_slug(kind: NotificationKind) -> &'static str {
    match kind {
        NotificationKind::OrderConfirmed => "order-confirmed",
        NotificationKind::DeliveryStarted => "delivery-started",
        NotificationKind::DeliveryCompleted => "delivery-completed",
        NotificationKind::ShipmentStarted => "shipment-started",
        NotificationKind::ShipmentDelivered => "shipment-delivered",
    }
}

pub fn message_id(order_id: &str, kind: NotificationKind) -> String {
    format!("{order_id}.{}@{DOMAIN}", kind_slug(kind))
}

/// The Message-ID of a shipment's mail: one per (order, vendor, step), so a redelivered event
/// is the same mail. The vendor id is written with ASCII letters, digits and `-` only (any
/// other byte as `_XX`), so whatever it holds the id stays a valid, distinct Message-ID.
pub fn shipment_message_id(order_id: &str, vendor_id: &str, kind: NotificationKind) -> String {
    let mut vendor = String::with_capacity(vendor_id.len());
    for b in vendor_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            vendor.push(char::from(b));
        } else {
            vendor.push_str(&format!("_{b:02X}"));
        }
    }
    format!("{order_id}.{vendor}.{}@{DOMAIN}", kind_slug(kind))
}

/// The `Traceparent` header of our mails.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Traceparent(String);

impl Header for Traceparent {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Traceparent")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Traceparent(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Plain SMTP (no TLS, no auth): the local sink or a relay on a trusted network.
pub struct SmtpMailer {
    transport: SmtpTransport,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(server: &str, from: &str) -> Result<Self, String> {
        let (host, port) = server
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h, p)))
            .ok_or_else(|| format!("smtp server '{server}' is not host:port"))?;
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("sender '{from}': {e}"))?;
        let transport = SmtpTransport::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(SmtpMailer { transport, from })
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let to = mail
            .to
            .parse::<Mailbox>()
            .map_err(|e| MailError::Invalid(format!("recipient '{}': {e}", mail.to)))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}>", mail.message_id)))
            .header(ContentType::TEXT_PLAIN);
        if !mail.traceparent.is_empty() {
            builder = builder.header(Traceparent(mail.traceparent.clone()));
        }
        let message = builder
            .body(mail.body.clone())
            .map_err(|e| MailError::Invalid(e.to_string()))?;
        self.transport.send(&message).map_err(|e| {
            if e.is_permanent() {
                MailError::Invalid(e.to_string())
            } else {
                MailError::Transient(e.to_string())
            }
        })?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sent {
    sent_at: i64,
    /// A MASTER took the mail out of the history: its view was republished marked deleted.
    /// Kept on the marker, so a repeated deletion publishes nothing again (and, like every
    /// marker, it stops a redelivered event from mailing or publishing the entry again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// The version of a deleted entry's view: above the sent mail's (always 1), so the views
/// sink's guard keeps the deletion whatever order the two reach it in, and a sent view
/// published again (a replay after the marker expired) never brings the entry back.
pub const DELETED_VIEW_VERSION: u64 = 2;

/// The kind of the mail `message_id` about `order_id`, if it is one with a view.
pub fn kind_of(order_id: &str, message_id: &str) -> Option<NotificationKind> {
    [
        NotificationKind::OrderConfirmed,
        NotificationKind::DeliveryStarted,
        NotificationKind::DeliveryCompleted,
    ]
    .into_iter()
    .find(|kind| self::message_id(order_id, *kind) == message_id)
}

/// The Message-IDs a task sent most recently, at most `capacity`; the oldest is forgotten first.
struct Recent {
    order: VecDeque<String>,
    ids: HashSet<String>,
    capacity: usize,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Recent {
            order: VecDeque::new(),
            ids: HashSet::new(),
            capacity,
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }
}

pub struct NotificationProcessor {
    mailer: Arc<dyn Mailer>,
    /// What this task sent, committed or not (see the module docs), for the one case the
    /// store cannot answer: a mail sent in a transaction that then aborted, taking its marker
    /// along, and whose event is therefore read again. Only the latest mail of a task can be in
    /// that case: the step that sends asks for a commit right after it, and a commit that fails
    /// aborts and rewinds the partition to before that step, so the task meets that event again
    /// before any later one, and sends nothing more until the marker is committed. The last
    /// [`SENT_HERE_CAPACITY`] ids are kept, far more than that one, in case the commit ever
    /// stops following each mail (256 mails take longer than a commit interval).
    sent_here: Recent,
    retention_ms: Millis,
    expire_batch: usize,
    /// Markers found without an expiry (written before the index existed), still to be
    /// indexed; `None` until the task has looked (again).
    legacy: Option<VecDeque<String>>,
    /// The store says every old marker has its expiry.
    legacy_swept: bool,
}

impl NotificationProcessor {
    pub fn new(mailer: Arc<dyn Mailer>) -> Self {
        NotificationProcessor {
            mailer,
            sent_here: Recent::new(SENT_HERE_CAPACITY),
            retention_ms: SENT_RETENTION_MS,
            expire_batch: EXPIRE_BATCH,
            legacy: None,
            legacy_swept: false,
        }
    }

    /// Keep markers this long instead of [`SENT_RETENTION_MS`] (markers already indexed keep
    /// their due time; when it comes, a marker not yet this old is indexed again).
    pub fn with_retention(mut self, retention_ms: Millis) -> Self {
        self.retention_ms = retention_ms;
        self
    }

    /// Delete the markers that fell due, oldest first, at most `expire_batch`; then spend what
    /// is left of the batch on markers of an earlier version that have no expiry yet.
    fn expire(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let now = ctx.now();
        let due: Vec<(Vec<u8>, String)> =
            ctx.range(STORE, due_key(0, ""), due_key(now.saturating_add(1), ""))?;
        let taken = due.len().min(self.expire_batch);
        for (key, id) in due.into_iter().take(taken) {
            ctx.delete(STORE, key);
            retire(ctx, &id, now, self.retention_ms)?;
        }
        self.sweep_legacy(ctx, now, self.expire_batch - taken)
    }

    fn sweep_legacy(
        &mut self,
        ctx: &mut Context<'_>,
        now: Millis,
        budget: usize,
    ) -> Result<(), ProcessError> {
        if self.legacy_swept || budget == 0 {
            return Ok(());
        }
        if self.legacy.is_none() {
            if ctx.get::<Millis>(STORE, LEGACY_SWEPT)?.is_some() {
                self.legacy_swept = true;
                return Ok(());
            }
            let markers: Vec<(Vec<u8>, Sent)> = ctx.range(STORE, b"", MARKERS_END)?;
            let mut unindexed = VecDeque::new();
            for (key, sent) in markers {
                let Ok(id) = String::from_utf8(key) else {
                    continue;
                };
                let due = due_key(sent.sent_at.saturating_add(self.retention_ms), &id);
                if ctx.get::<String>(STORE, due)?.is_none() {
                    unindexed.push_back(id);
                }
            }
            if unindexed.is_empty() {
                ctx.put(STORE, LEGACY_SWEPT, &now);
                self.legacy_swept = true;
                return Ok(());
            }
            tracing::info!(
                markers = unindexed.len(),
                "indexing the expiry of sent markers of an earlier version"
            );
            self.legacy = Some(unindexed);
        }
        let queue = self.legacy.as_mut().expect("set above");
        for _ in 0..budget {
            let Some(id) = queue.pop_front() else { break };
            retire(ctx, &id, now, self.retention_ms)?;
        }
        if queue.is_empty() {
            // Look again next time: what a punctuation that aborted wrote is found missing,
            // and a look that finds nothing left records that the sweep is done.
            self.legacy = None;
        }
        Ok(())
    }
}

/// Delete the marker of `id` if its retention is over; a marker not yet that old (the
/// retention grew, or the marker has no expiry yet) gets its expiry at its own due time.
fn retire(
    ctx: &mut Context<'_>,
    id: &str,
    now: Millis,
    retention_ms: Millis,
) -> Result<(), ProcessError> {
    if let Some(sent) = ctx.get::<Sent>(STORE, id)? {
        let due = sent.sent_at.saturating_add(retention_ms);
        if due > now {
            ctx.put(STORE, due_key(due, id), &id.to_string());
        } else {
            ctx.delete(STORE, id);
        }
    }
    Ok(())
}

struct Notice {
    order_id: String,
    /// The vendor of the shipment the mail is about.
    vendor_id: Option<String>,
    username: String,
    email: String,
    kind: NotificationKind,
    subject: String,
    body: String,
}

fn from_order(e: OrderEvent) -> Option<Notice> {
    match e {
        OrderEvent::OrderConfirmed {
            order_id,
            username,
            email,
            amount,
            ..
        } => Some(Notice {
            subject: format!("Your Pickple order {order_id} is confirmed"),
            body: format!(
                "Hello {username},\n\nwe received your payment of {amount} for order {order_id}.\n\
                 We will let you know when it ships.\n\n-- Pickple\n"
            ),
            order_id,
            vendor_id: None,
            username,
            email,
            kind: NotificationKind::OrderConfirmed,
        }),
        OrderEvent::OrderCancelled { .. }
        | OrderEvent::OrderCompleted { .. }
        | OrderEvent::OrderCancelRequested { .. } => None,
    }
}

/// The address lines of a shipment's mail.
fn address_lines(shipping: &Option<ShippingAddress>) -> String {
    match shipping {
        None => String::new(),
        Some(a) => {
            let mut s = format!(
                "Delivery to: {}, {} ({})\n",
                a.recipient, a.address, a.contact
            );
            if let Some(r) = &a.request {
                s.push_str(&format!("Request: {r}\n"));
            }
            s
        }
    }
}

fn from_delivery(e: DeliveryEvent) -> Notice {
    match e {
        DeliveryEvent::ShipmentStarted {
            order_id,
            vendor_id,
            username,
            email,
            carrier,
            delivery_type,
            tracking_number,
            shipping,
        } => Notice {
            subject: format!("Your Pickple order {order_id}: a shipment is on its way"),
            body: format!(
                "Hello {username},\n\nthe shipment of vendor {vendor_id} for order {order_id} has \
                 left with {} ({}), tracking number {tracking_number}.\n{}\n-- Pickple\n",
                carrier.as_str(),
                delivery_type.as_str(),
                address_lines(&shipping)
            ),
            order_id,
            vendor_id: Some(vendor_id),
            username,
            email,
            kind: NotificationKind::ShipmentStarted,
        },
        DeliveryEvent::ShipmentDelivered {
            order_id,
            vendor_id,
            username,
            email,
            carrier,
            tracking_number,
            shipping,
        } => Notice {
            subject: format!("Your Pickple order {order_id}: a shipment arrived"),
            body: format!(
                "Hello {username},\n\nthe shipment of vendor {vendor_id} for order {order_id} \
                 ({}, tracking number {}) was delivered.\n{}\n-- Pickple\n",
                carrier.map_or("carrier not recorded", |c| c.as_str()),
                tracking_number.as_deref().unwrap_or("not recorded"),
                address_lines(&shipping)
            ),
            order_id,
            vendor_id: Some(vendor_id),
            username,
            email,
            kind: NotificationKind::ShipmentDelivered,
        },
        DeliveryEvent::DeliveryStarted {
            order_id,
            username,
            email,
            carrier,
            tracking_number,
        } => Notice {
            subject: format!("Your Pickple order {order_id} is on its way"),
            body: format!(
                "Hello {username},\n\norder {order_id} has shipped with {carrier}, tracking number \
                 {tracking_number}.\n\n-- Pickple\n"
            ),
            order_id,
            vendor_id: None,
            username,
            email,
            kind: NotificationKind::DeliveryStarted,
        },
        DeliveryEvent::DeliveryCompleted {
            order_id,
            username,
            email,
        } => Notice {
            subject: format!("Your Pickple order {order_id} was delivered"),
            body: format!("Hello {username},\n\norder {order_id} was delivered.\n\n-- Pickple\n"),
            order_id,
            vendor_id: None,
            username,
            email,
            kind: NotificationKind::DeliveryCompleted,
        },
    }
}

/// The Message-ID of a confirmation mail: one per request (a new code expires later).
pub fn confirmation_message_id(user_id: &str, expires_at: Millis) -> String {
    confirmation_mail::message_id(user_id, expires_at, DOMAIN)
}

fn confirmation_mail(e: UserEvent, traceparent: &str) -> Mail {
    let UserEvent::ConfirmationRequested {
        username,
        user_id,
        email,
        code,
        sign_up,
        expires_at,
    } = e;
    let (subject, what) = if sign_up {
        ("Confirm your Pickple sign-up", "your new Pickple account")
    } else {
        (
            "Confirm your new Pickple e-mail address",
            "your Pickple account",
        )
    };
    let code_line = confirmation_mail::CODE_LINE;
    Mail {
        message_id: confirmation_message_id(&user_id, expires_at),
        to: email,
        subject: subject.to_string(),
        body: format!(
            "Hello {username},\n\nto use this address for {what}, send this code back within a \
             day of the request:\n\n{code_line} {code}\n\n(POST /api/v1/auth/confirm-email with \
             {{\"username\": \"{username}\", \"code\": \"{code}\"}})\n\nIf you did not ask \
             for this, ignore this mail: nothing changes without the code. If this address already \
             belongs to a Pickple account, a confirmed sign-up with it is refused and that \
             account stays as it is.\n\n-- Pickple\n"
        ),
        traceparent: traceparent.to_string(),
    }
}

impl Processor for NotificationProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        if record.topic == NOTIFICATION_COMMANDS {
            let command: NotificationCommand = record.decode()?;
            return delete_entry(ctx, record, command);
        }
        if record.topic == USER_EVENTS {
            let e: UserEvent = record.decode()?;
            let UserEvent::ConfirmationRequested { username, .. } = &e;
            checked_key(record, username)?;
            let mail = confirmation_mail(e, &record.headers.traceparent);
            self.send_once(ctx, &mail)?;
            return Ok(());
        }
        let notice = match record.topic {
            ORDER_EVENTS => {
                let e: OrderEvent = record.decode()?;
                checked_key(record, crate::delivery::event_order_id(&e))?;
                from_order(e)
            }
            _ => {
                let e: DeliveryEvent = record.decode()?;
                checked_key(record, e.order_id())?;
                Some(from_delivery(e))
            }
        };
        let Some(n) = notice else { return Ok(()) };
        let id = match &n.vendor_id {
            Some(vendor) => shipment_message_id(&n.order_id, vendor, n.kind),
            None => message_id(&n.order_id, n.kind),
        };
        let mail = Mail {
            message_id: id.clone(),
            to: n.email.clone(),
            subject: n.subject.clone(),
            body: n.body.clone(),
            traceparent: record.headers.traceparent.clone(),
        };
        if !self.send_once(ctx, &mail)? {
            return Ok(());
        }
        let now = ctx.now();
        let view = NotificationView {
            message_id: id.clone(),
            username: n.username,
            email: n.email,
            order_id: n.order_id,
            kind: n.kind,
            vendor_id: n.vendor_id,
            subject: n.subject,
            sent_at: now,
            deleted: false,
            version: 1,
        };
        ctx.send_value(VIEW, &id, "NotificationSent", &view);
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        self.expire(ctx)
    }
}

/// Take a sent mail out of the history: republish its view marked deleted (blanked: the
/// address, subject and username are what the history showed), and mark its marker, so a
/// repeat publishes nothing. The key is the order id, the key of the event that sent the mail,
/// so this is the task that wrote the marker. Without a marker (kept [`SENT_RETENTION_MS`];
/// the gateway only sends this for a view it read) the deleted view is still published: its
/// version is above the sent one's either way.
fn delete_entry(
    ctx: &mut Context<'_>,
    record: &Record<'_>,
    command: NotificationCommand,
) -> Result<(), ProcessError> {
    let NotificationCommand::DeleteNotification {
        message_id,
        order_id,
        by,
    } = command;
    checked_key(record, &order_id)?;
    let kind = kind_of(&order_id, &message_id).ok_or_else(|| {
        ProcessError::Invalid(format!(
            "'{message_id}' is not the Message-ID of a mail about order '{order_id}'"
        ))
    })?;
    let sent = ctx.get::<Sent>(STORE, &message_id)?;
    if sent.as_ref().is_some_and(|s| s.deleted) {
        return Ok(());
    }
    let sent_at = sent.as_ref().map_or(0, |s| s.sent_at);
    if sent.is_some() {
        // Same `sent_at`: the marker keeps its place in the expiry index.
        ctx.put(
            STORE,
            &message_id,
            &Sent {
                sent_at,
                deleted: true,
            },
        );
    }
    tracing::info!(%message_id, %by, "notification removed from the history");
    let view = NotificationView {
        message_id: message_id.clone(),
        username: String::new(),
        email: String::new(),
        order_id,
        kind,
        subject: String::new(),
        vendor_id: None,
        sent_at,
        deleted: true,
        version: DELETED_VIEW_VERSION,
    };
    ctx.send_value(VIEW, &message_id, "NotificationDeleted", &view);
    Ok(())
}

impl NotificationProcessor {
    /// Send `mail` unless its marker says it went out already; `false` when it had. Writes the
    /// marker and its expiry in this step.
    fn send_once(&mut self, ctx: &mut Context<'_>, mail: &Mail) -> Result<bool, ProcessError> {
        let id = &mail.message_id;
        if ctx.get::<Sent>(STORE, id)?.is_some() {
            return Ok(false);
        }
        if !self.sent_here.contains(id) {
            match self.mailer.send(mail) {
                Ok(()) => {}
                Err(MailError::Invalid(reason)) => return Err(ProcessError::Invalid(reason)),
                Err(MailError::Transient(reason)) => return Err(ProcessError::Retry(reason)),
            }
            self.sent_here.insert(id.clone());
        }
        let now = ctx.now();
        ctx.put(
            STORE,
            id,
            &Sent {
                sent_at: now,
                deleted: false,
            },
        );
        ctx.put(
            STORE,
            due_key(now.saturating_add(self.retention_ms), id),
            id,
        );
        // The mail is out: make its marker durable now, not at the next commit interval, so a
        // crash can send again only the mail in flight.
        ctx.commit_soon();
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use pickple_runtime::TestDriver;
    use pickple_schemas::RecordHeaders;

    #[derive(Default)]
    struct Recording {
        sent: Mutex<Vec<Mail>>,
        fail_next: Mutex<u32>,
    }
    impl Mailer for Recording {
        fn send(&self, mail: &Mail) -> Result<(), MailError> {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(MailError::Transient("421 try later".into()));
            }
            self.sent.lock().unwrap().push(mail.clone());
            Ok(())
        }
    }

    fn confirmed(o: &str) -> OrderEvent {
        OrderEvent::OrderConfirmed {
            order_id: o.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            amount: 700,
            vendor_ids: vec![],
            lines: vec![],
            shipping: None,
        }
    }

    /// Each shipment's start and arrival is its own mail, saying which vendor, carrier and
    /// tracking number, with a Message-ID per (order, vendor, step): a redelivered event is the
    /// same mail, not another.
    #[test]
    fn each_shipment_step_is_one_mail_per_vendor() {
        use pickple_schemas::{Carrier, DeliveryType, ShippingAddress};
        let (mut d, rec) = driver();
        let address = ShippingAddress {
            recipient: "Ann".into(),
            address: "1 Main St".into(),
            contact: "010-1234-5678".into(),
            request: Some("door".into()),
        };
        let started = |vendor: &str, tracking: &str| DeliveryEvent::ShipmentStarted {
            order_id: "o1".into(),
            vendor_id: vendor.into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            carrier: Carrier::Hanjin,
            delivery_type: DeliveryType::Express,
            tracking_number: tracking.into(),
            shipping: Some(address.clone()),
        };
        let delivered = DeliveryEvent::ShipmentDelivered {
            order_id: "o1".into(),
            vendor_id: "v1".into(),
            username: "ann1".into(),
            email: "ann@x.io".into(),
            carrier: Some(Carrier::Hanjin),
            tracking_number: Some("A-1".into()),
            shipping: Some(address.clone()),
        };
        for e in [
            started("v1", "A-1"),
            started("v2", "B-2"),
            started("v1", "A-1"),
            delivered.clone(),
            delivered,
        ] {
            d.pipe(DELIVERY_EVENTS, "o1", &e).unwrap();
        }
        let sent = rec.sent.lock().unwrap().clone();
        let ids: Vec<&str> = sent.iter().map(|m| m.message_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "o1.v1.shipment-started@pickple.local",
                "o1.v2.shipment-started@pickple.local",
                "o1.v1.shipment-delivered@pickple.local"
            ]
        );
        assert!(sent[1].body.contains("vendor v2"), "{}", sent[1].body);
        assert!(sent[1].body.contains("HANJIN") && sent[1].body.contains("B-2"));
        assert!(sent[1]
            .body
            .contains("Delivery to: Ann, 1 Main St (010-1234-5678)"));
        assert!(sent[2].body.contains("A-1") && sent[2].body.contains("was delivered"));
        let views: Vec<NotificationView> = d.take(VIEW);
        assert_eq!(views[1].vendor_id.as_deref(), Some("v2"));
        assert_eq!(views[1].kind, NotificationKind::ShipmentStarted);
        // A vendor id that is no Message-ID text is escaped, and stays distinct.
        assert_eq!(
            shipment_message_id("o1", "v 1@x_", NotificationKind::ShipmentStarted),
            "o1.v_201_40x_5F.shipment-started@pickple.local"
        );
    }

    fn driver() -> (TestDriver<NotificationProcessor>, Arc<Recording>) {
        let rec = Arc::new(Recording::default());
        (
            TestDriver::new(NotificationProcessor::new(rec.clone()), 5_000),
            rec,
        )
    }

    #[test]
    fn a_confirmation_code_is_mailed_once_and_never_reaches_a_view() {
        let (mut d, rec) = driver();
        let event = UserEvent::ConfirmationRequested {
            username: "ann1".into(),
            user_id: "u-1".into(),
            email: "ann@x.io".into(),
            code: "c0ffee".into(),
            sign_up: true,
            expires_at: 86_400_000,
        };
        d.pipe(USER_EVENTS, "ann1", &event).unwrap();
        d.pipe(USER_EVENTS, "ann1", &event).unwrap();
        let sent = rec.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "a redelivery sends nothing");
        assert_eq!(sent[0].to, "ann@x.io");
        assert_eq!(sent[0].message_id, "u-1.confirm-86400000@pickple.local");
        assert!(sent[0].body.contains("Confirmation code: c0ffee\n"));
        assert!(d.take_outputs(VIEW).is_empty(), "the code is a secret");
        // A record under another key than its username is dead-lettered, not mailed.
        d.pipe(USER_EVENTS, "bob1", &event).unwrap();
        assert_eq!(d.dead_letters().len(), 1);
        assert_eq!(rec.sent.lock().unwrap().len(), 1);
    }

    #[test]
    fn sends_once_per_order_and_kind_with_the_trace() {
        let (mut d, rec) = driver();
        let mut h = RecordHeaders::new("OrderConfirmed", "c1");
        h.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        let value = pickple_schemas::encode(&confirmed("o1"));
        d.pipe_raw(ORDER_EVENTS, Some(b"o1"), Some(&value), h.clone())
            .unwrap();
        d.pipe_raw(ORDER_EVENTS, Some(b"o1"), Some(&value), h)
            .unwrap();
        d.pipe(
            DELIVERY_EVENTS,
            "o1",
            &DeliveryEvent::DeliveryCompleted {
                order_id: "o1".into(),
                username: "ann1".into(),
                email: "ann@x.io".into(),
            },
        )
        .unwrap();
        let sent = rec.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            d.commits_requested(),
            &[0, 2],
            "each step that sent a mail, and only those, commits at once"
        );
        assert_eq!(sent[0].message_id, "o1.order-confirmed@pickple.local");
        assert_eq!(sent[0].to, "ann@x.io");
        assert!(sent[0].traceparent.starts_with("00-0af7"));
        assert_eq!(sent[1].message_id, "o1.delivery-completed@pickple.local");
        let views = d.take_outputs(VIEW);
        let keys: Vec<&str> = views.iter().map(|o| o.key_str()).collect();
        assert_eq!(
            keys,
            vec![
                "o1.order-confirmed@pickple.local",
                "o1.delivery-completed@pickple.local"
            ]
        );
    }

    fn delete_command(o: &str, message_id: &str) -> NotificationCommand {
        NotificationCommand::DeleteNotification {
            message_id: message_id.into(),
            order_id: o.into(),
            by: "root".into(),
        }
    }

    #[test]
    fn a_deleted_entry_is_republished_deleted_once_and_never_comes_back() {
        let (mut d, rec) = driver();
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        let id = "o1.order-confirmed@pickple.local";
        let sent: Vec<NotificationView> = d.take(VIEW);
        assert_eq!(
            (sent.len(), sent[0].version, sent[0].deleted),
            (1, 1, false)
        );

        d.pipe(NOTIFICATION_COMMANDS, "o1", &delete_command("o1", id))
            .unwrap();
        let views = d.take_outputs(VIEW);
        assert_eq!(views.len(), 1);
        assert_eq!(
            views[0].key_str(),
            id,
            "the same view, keyed by its Message-ID"
        );
        let deleted: NotificationView = serde_json::from_value(views[0].json()).unwrap();
        assert!(deleted.deleted);
        assert_eq!(deleted.version, DELETED_VIEW_VERSION);
        assert!(deleted.version > sent[0].version);
        assert_eq!(
            (deleted.kind, deleted.order_id.as_str(), deleted.sent_at),
            (NotificationKind::OrderConfirmed, "o1", sent[0].sent_at)
        );
        assert!(deleted.email.is_empty() && deleted.subject.is_empty());
        assert!(d.get::<Sent>(STORE, id).unwrap().deleted);

        // A repeated deletion publishes nothing; a redelivered event mails and publishes
        // nothing either.
        d.pipe(NOTIFICATION_COMMANDS, "o1", &delete_command("o1", id))
            .unwrap();
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        assert!(d.take_outputs(VIEW).is_empty());
        assert_eq!(rec.sent.lock().unwrap().len(), 1);

        // Another order's mail id under this key, a confirmation mail's id, garbage: dead
        // letters.
        let before = d.dead_letters().len();
        d.pipe(
            NOTIFICATION_COMMANDS,
            "o1",
            &delete_command("o1", "o2.order-confirmed@pickple.local"),
        )
        .unwrap();
        d.pipe(
            NOTIFICATION_COMMANDS,
            "o2",
            &delete_command("o1", "o1.order-confirmed@pickple.local"),
        )
        .unwrap();
        d.pipe(
            NOTIFICATION_COMMANDS,
            "u-1",
            &delete_command("u-1", "u-1.confirm-5@pickple.local"),
        )
        .unwrap();
        assert_eq!(d.dead_letters().len(), before + 3);
        assert!(d.take_outputs(VIEW).is_empty());
    }

    #[test]
    fn a_marker_written_before_deletions_existed_reads_as_not_deleted() {
        let old: Sent = serde_json::from_str(r#"{"sent_at": 7}"#).unwrap();
        assert!(!old.deleted);
        let json = serde_json::to_string(&old).unwrap();
        assert_eq!(
            json, r#"{"sent_at":7}"#,
            "an undeleted marker is written as before"
        );
    }

    #[test]
    fn smtp_trouble_retries_and_then_sends_once() {
        let (mut d, rec) = driver();
        *rec.fail_next.lock().unwrap() = 1;
        let err = d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap_err();
        assert!(matches!(err, ProcessError::Retry(_)));
        assert!(d.take_outputs(VIEW).is_empty());
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        assert_eq!(rec.sent.lock().unwrap().len(), 1);
        assert_eq!(d.take_outputs(VIEW).len(), 1);
    }

    #[test]
    fn the_marker_retention_outlasts_a_replay_of_the_inputs() {
        let topics = pickple_topics::catalogue("");
        let kept = |name: &str| {
            topics
                .iter()
                .find(|t| t.name == name)
                .and_then(|t| t.retention_ms)
                .unwrap()
        };
        let segment_roll = 7 * DAY_MS;
        assert!(
            SENT_RETENTION_MS >= kept(ORDER_EVENTS).max(kept(DELIVERY_EVENTS)) + segment_roll,
            "a replay of the inputs could mail again what was sent"
        );
    }

    fn marker(d: &TestDriver<impl Processor>, o: &str) -> Option<i64> {
        d.get::<Sent>(STORE, &message_id(o, NotificationKind::OrderConfirmed))
            .map(|s| s.sent_at)
    }

    #[test]
    fn sent_markers_expire_after_their_retention_in_bounded_batches() {
        let rec = Arc::new(Recording::default());
        let mut p = NotificationProcessor::new(rec.clone()).with_retention(10_000);
        p.expire_batch = 2;
        let mut d = TestDriver::new(p, 5_000);
        for o in ["o1", "o2", "o3"] {
            d.pipe(ORDER_EVENTS, o, &confirmed(o)).unwrap();
        }
        d.advance(7_000).unwrap();
        d.pipe(ORDER_EVENTS, "o4", &confirmed("o4")).unwrap();
        d.advance(2_999).unwrap();
        for o in ["o1", "o2", "o3", "o4"] {
            assert!(marker(&d, o).is_some(), "{o} is not due yet");
        }
        // Due at 15,000: two per punctuation, oldest (then by id) first.
        d.advance(1).unwrap();
        let left: Vec<bool> = ["o1", "o2", "o3", "o4"]
            .iter()
            .map(|o| marker(&d, o).is_some())
            .collect();
        assert_eq!(left, [false, false, true, true]);
        d.advance(1).unwrap();
        assert_eq!(marker(&d, "o3"), None);
        assert_eq!(marker(&d, "o4"), Some(12_000), "sent later, due later");
        d.advance(6_998).unwrap();
        assert_eq!(marker(&d, "o4"), Some(12_000));
        d.advance(1).unwrap();
        assert_eq!(marker(&d, "o4"), None);
        assert_eq!(rec.sent.lock().unwrap().len(), 4);
        assert!(d.dead_letters().is_empty());
    }

    /// The version before the expiry index: it wrote the marker alone.
    struct Upgrading {
        legacy: Arc<std::sync::atomic::AtomicBool>,
        inner: NotificationProcessor,
    }

    impl Processor for Upgrading {
        fn process(
            &mut self,
            ctx: &mut Context<'_>,
            record: &Record<'_>,
        ) -> Result<(), ProcessError> {
            if !self.legacy.load(std::sync::atomic::Ordering::SeqCst) {
                return self.inner.process(ctx, record);
            }
            if let OrderEvent::OrderConfirmed { order_id, .. } = record.decode()? {
                let id = message_id(&order_id, NotificationKind::OrderConfirmed);
                ctx.put(
                    STORE,
                    &id,
                    &Sent {
                        sent_at: ctx.now(),
                        deleted: false,
                    },
                );
            }
            Ok(())
        }

        fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
            if self.legacy.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            self.inner.punctuate(ctx)
        }
    }

    #[test]
    fn markers_of_an_earlier_version_get_their_expiry_after_the_upgrade() {
        let rec = Arc::new(Recording::default());
        let legacy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let mut inner = NotificationProcessor::new(rec.clone()).with_retention(10_000);
        inner.expire_batch = 1;
        let mut d = TestDriver::new(
            Upgrading {
                legacy: legacy.clone(),
                inner,
            },
            5_000,
        );
        d.pipe(ORDER_EVENTS, "o1", &confirmed("o1")).unwrap();
        d.advance(6_000).unwrap();
        d.pipe(ORDER_EVENTS, "o2", &confirmed("o2")).unwrap();
        d.advance(8_000).unwrap();
        // Upgraded at 19,000: o1 (sent at 5,000) is past its retention, o2 (11,000) is not.
        legacy.store(false, std::sync::atomic::Ordering::SeqCst);
        d.pipe(ORDER_EVENTS, "o3", &confirmed("o3")).unwrap();
        assert_eq!(rec.sent.lock().unwrap().len(), 1, "o3 only");
        d.advance(1).unwrap();
        assert_eq!(marker(&d, "o1"), None, "expired already: deleted");
        assert_eq!(marker(&d, "o2"), Some(11_000), "one per punctuation");
        d.advance(1).unwrap();
        // o2's marker still does its job until its own expiry, at 21,000.
        d.pipe(ORDER_EVENTS, "o2", &confirmed("o2")).unwrap();
        assert_eq!(rec.sent.lock().unwrap().len(), 1, "o2 is not mailed again");
        d.advance(1).unwrap();
        d.advance(1_996).unwrap();
        assert_eq!(marker(&d, "o2"), Some(11_000));
        d.advance(1).unwrap();
        assert_eq!(marker(&d, "o2"), None);
        assert_eq!(marker(&d, "o3"), Some(19_000));
        d.advance(8_000).unwrap();
        assert_eq!(marker(&d, "o3"), None);
        assert!(d.dead_letters().is_empty());
    }

    #[test]
    fn the_memory_of_sent_mails_survives_a_lost_step_and_keeps_only_the_latest() {
        let rec = Arc::new(Recording::default());
        // Every step that sends is refused by the size guard: its marker is lost, as with a
        // transaction that aborts after the send.
        let mut d = TestDriver::new(NotificationProcessor::new(rec.clone()), 5_000)
            .with_max_value_bytes(10);
        let sent = || rec.sent.lock().unwrap().len();
        d.pipe(ORDER_EVENTS, "o0", &confirmed("o0")).unwrap();
        d.pipe(ORDER_EVENTS, "o0", &confirmed("o0")).unwrap();
        assert_eq!(sent(), 1, "read again without its marker: not sent again");
        assert_eq!(marker(&d, "o0"), None);
        for i in 1..=SENT_HERE_CAPACITY {
            let o = format!("o{i}");
            d.pipe(ORDER_EVENTS, &o, &confirmed(&o)).unwrap();
        }
        assert_eq!(sent(), SENT_HERE_CAPACITY + 1);
        // The latest are remembered; the oldest, whose marker the runtime would long have
        // committed, is forgotten.
        let last = format!("o{SENT_HERE_CAPACITY}");
        d.pipe(ORDER_EVENTS, &last, &confirmed(&last)).unwrap();
        assert_eq!(sent(), SENT_HERE_CAPACITY + 1);
        d.pipe(ORDER_EVENTS, "o0", &confirmed("o0")).unwrap();
        assert_eq!(sent(), SENT_HERE_CAPACITY + 2);

        let mut recent = Recent::new(3);
        for id in ["a", "b", "a", "c", "d"] {
            recent.insert(id.to_string());
        }
        assert_eq!(recent.len(), 3);
        assert!(!recent.contains("a") && recent.contains("b") && recent.contains("d"));
    }

    #[test]
    fn other_events_send_nothing_and_garbage_is_dead_lettered() {
        let (mut d, rec) = driver();
        d.pipe(
            ORDER_EVENTS,
            "o1",
            &OrderEvent::OrderCancelled {
                order_id: "o1".into(),
                username: "ann1".into(),
                reason: "x".into(),
            },
        )
        .unwrap();
        d.pipe_raw(
            DELIVERY_EVENTS,
            Some(b"o1"),
            Some(b"{\"type\":\"Nope\"}"),
            RecordHeaders::new("Nope", "c"),
        )
        .unwrap();
        assert!(rec.sent.lock().unwrap().is_empty());
        assert_eq!(d.dead_letters().len(), 1);
    }
}
