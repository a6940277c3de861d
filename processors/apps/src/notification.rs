//! The notification app: e-mails on `OrderConfirmed` (`order-events`), `DeliveryStarted` and
//! `DeliveryCompleted` (`delivery-events`), each keyed by order id.
//!
//! Exactly once as seen by the user: every mail has a deterministic Message-ID
//! `<order-id.kind@pickple.local>`, and a "sent" marker in store `sent` (keyed by that id,
//! written in the same processing step as the send) stops a redelivered event from sending
//! again. The SMTP send itself cannot join the Kafka transaction: if the transaction aborts after
//! a send, the marker is lost with it, so the task also remembers what it sent in memory (which
//! survives an abort and retry). The step that sends asks the runtime to commit at once
//! (`Context::commit_soon`), so only a crash between a send and that commit, a few milliseconds,
//! can send again: at least once, at most one repeat per crash, always with the same
//! Message-ID for receivers to deduplicate. An SMTP failure is a `Retry`. The record's `traceparent` is
//! carried into a `Traceparent` header of the mail. Each sent mail publishes
//! `view-notifications` keyed by the message id (without angle brackets).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::{Message, SmtpTransport, Transport};
use pickple_runtime::{AppSpec, Context, ProcessError, Processor, Record};
use pickple_schemas::{DeliveryEvent, NotificationKind, NotificationView, OrderEvent};
use serde::{Deserialize, Serialize};

use crate::state::checked_key;

pub const STORE: &str = "sent";
pub const ORDER_EVENTS: &str = "order-events";
pub const DELIVERY_EVENTS: &str = "delivery-events";
pub const VIEW: &str = "view-notifications";
pub const DOMAIN: &str = "pickple.local";

pub fn spec() -> AppSpec {
    AppSpec::new("notification", &[ORDER_EVENTS, DELIVERY_EVENTS], &[STORE])
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
    }
}

pub fn message_id(order_id: &str, kind: NotificationKind) -> String {
    format!("{order_id}.{}@{DOMAIN}", kind_slug(kind))
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
}

pub struct NotificationProcessor {
    mailer: Arc<dyn Mailer>,
    /// Sent by this task, committed or not (see the module docs).
    sent_here: HashSet<String>,
}

impl NotificationProcessor {
    pub fn new(mailer: Arc<dyn Mailer>) -> Self {
        NotificationProcessor {
            mailer,
            sent_here: HashSet::new(),
        }
    }
}

struct Notice {
    order_id: String,
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
            username,
            email,
            kind: NotificationKind::OrderConfirmed,
        }),
        OrderEvent::OrderCancelled { .. }
        | OrderEvent::OrderCompleted { .. }
        | OrderEvent::OrderCancelRequested { .. } => None,
    }
}

fn from_delivery(e: DeliveryEvent) -> Notice {
    match e {
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
            username,
            email,
            kind: NotificationKind::DeliveryCompleted,
        },
    }
}

impl Processor for NotificationProcessor {
    fn process(&mut self, ctx: &mut Context<'_>, record: &Record<'_>) -> Result<(), ProcessError> {
        let notice = match record.topic {
            ORDER_EVENTS => {
                let e: OrderEvent = record.decode()?;
                checked_key(record, crate::delivery::event_order_id(&e))?;
                from_order(e)
            }
            _ => {
                let e: DeliveryEvent = record.decode()?;
                let id = match &e {
                    DeliveryEvent::DeliveryStarted { order_id, .. }
                    | DeliveryEvent::DeliveryCompleted { order_id, .. } => order_id.clone(),
                };
                checked_key(record, &id)?;
                Some(from_delivery(e))
            }
        };
        let Some(n) = notice else { return Ok(()) };
        let id = message_id(&n.order_id, n.kind);
        if ctx.get::<Sent>(STORE, &id)?.is_some() {
            return Ok(());
        }
        if !self.sent_here.contains(&id) {
            let mail = Mail {
                message_id: id.clone(),
                to: n.email.clone(),
                subject: n.subject.clone(),
                body: n.body.clone(),
                traceparent: record.headers.traceparent.clone(),
            };
            match self.mailer.send(&mail) {
                Ok(()) => {}
                Err(MailError::Invalid(reason)) => return Err(ProcessError::Invalid(reason)),
                Err(MailError::Transient(reason)) => return Err(ProcessError::Retry(reason)),
            }
            self.sent_here.insert(id.clone());
        }
        let now = ctx.now();
        ctx.put(STORE, &id, &Sent { sent_at: now });
        // The mail is out: make its marker durable now, not at the next commit interval, so a
        // crash can send again only the mail in flight.
        ctx.commit_soon();
        let view = NotificationView {
            message_id: id.clone(),
            username: n.username,
            email: n.email,
            order_id: n.order_id,
            kind: n.kind,
            subject: n.subject,
            sent_at: now,
            version: 1,
        };
        ctx.send_value(VIEW, &id, "NotificationSent", &view);
        Ok(())
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
        }
    }

    fn driver() -> (TestDriver<NotificationProcessor>, Arc<Recording>) {
        let rec = Arc::new(Recording::default());
        (
            TestDriver::new(NotificationProcessor::new(rec.clone()), 5_000),
            rec,
        )
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
