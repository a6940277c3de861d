//! Pickple's stream processors: one module per application, each a [`Processor`] that decodes its
//! inputs, loads the entity's state from its store, lets the pure domain (`pickple-domain`)
//! decide, stores the new state, sends the effects keyed by the entity that receives them (a
//! stock command by product id, a payment command by order id) and publishes the entity's view
//! with a version that grows on every change and every rejection ([`entity::handle`]).
//!
//! [`run_app`] runs one application on the runtime; the `pickple-processor` binary is a thin
//! command line around it, and the integration tests run every app in-process with it (through
//! the `harness` module, built only with the `harness` feature).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pickple_runtime::{run_until, AppSpec, Processor, RuntimeConfig, RuntimeError};

pub mod catalog;
pub mod delivery;
pub mod entity;
pub mod grow;
#[cfg(feature = "harness")]
pub mod harness;
pub mod notification;
pub mod order;
pub mod payment;
pub mod state;
pub mod stock;
pub mod users;

/// The stream processors this crate runs (one consumer group each). Their names and stores are
/// the topic catalogue's (`pickple_topics::catalogue::APPS`, the one list of applications); the
/// catalogue's other application, the views sink, is `pickple_views`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Users,
    Catalog,
    Stock,
    Order,
    Payment,
    Delivery,
    Notification,
}

impl App {
    pub const ALL: [App; 7] = [
        App::Users,
        App::Catalog,
        App::Stock,
        App::Order,
        App::Payment,
        App::Delivery,
        App::Notification,
    ];

    /// The application's entry in the topic catalogue: its name and stores.
    pub fn catalogue(self) -> &'static pickple_topics::catalogue::App {
        use pickple_topics::catalogue::app;
        match self {
            App::Users => &app::USERS,
            App::Catalog => &app::CATALOG,
            App::Stock => &app::STOCK,
            App::Order => &app::ORDER,
            App::Payment => &app::PAYMENT,
            App::Delivery => &app::DELIVERY,
            App::Notification => &app::NOTIFICATION,
        }
    }

    /// The name given on the command line, e.g. `stock`.
    pub fn name(self) -> &'static str {
        self.catalogue().name
    }

    /// Consumer group, inputs and stores (the store names are the topic catalogue's).
    pub fn spec(self) -> AppSpec {
        match self {
            App::Users => users::spec(),
            App::Catalog => catalog::spec(),
            App::Stock => stock::spec(),
            App::Order => order::spec(),
            App::Payment => payment::spec(),
            App::Delivery => delivery::spec(),
            App::Notification => notification::spec(),
        }
    }
}

#[cfg(test)]
mod app_tests {
    use super::App;

    /// The changelogs the topic catalogue creates are the ones each processor writes.
    #[test]
    fn every_spec_is_its_catalogue_entry() {
        for app in App::ALL {
            let spec = app.spec();
            assert_eq!(spec.name, app.name());
            assert_eq!(spec.stores, app.catalogue().stores, "{}", app.name());
        }
    }
}

/// Application settings beyond the runtime's, from flags or `PICKPLE_*` environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct AppConfig {
    /// How long a customer has to pay once the stock is reserved (order app).
    #[arg(long, env = "PICKPLE_PAYMENT_TIMEOUT_MS", default_value_t = 300_000)]
    pub payment_timeout_ms: i64,
    /// How long the stock app keeps a released or restocked reservation against a duplicate
    /// command (docs/state.md, "Retention").
    #[arg(long, env = "PICKPLE_RESERVATION_RETENTION_MS", default_value_t = stock::FINISHED_RESERVATION_RETENTION_MS)]
    pub reservation_retention_ms: i64,
    /// How long the notification app keeps a mail's "sent" marker against a replayed event
    /// (docs/state.md); never shorter than the retention of its input topics.
    #[arg(long, env = "PICKPLE_SENT_RETENTION_MS", default_value_t = notification::SENT_RETENTION_MS)]
    pub sent_retention_ms: i64,
    /// SMTP server (host:port, plain, no TLS) the notification app sends through.
    #[arg(long, env = "PICKPLE_SMTP", default_value = "127.0.0.1:12525")]
    pub smtp: String,
    /// Sender address of the notification e-mails.
    #[arg(
        long,
        env = "PICKPLE_MAIL_FROM",
        default_value = "noreply@pickple.local"
    )]
    pub mail_from: String,
    /// Payment provider adapter: `fake` (local, behaves by token; see `payment::provider`).
    #[arg(long, env = "PICKPLE_PAYMENT_PROVIDER", default_value = "fake")]
    pub payment_provider: String,
    /// Timeout of one payment provider call.
    #[arg(long, env = "PICKPLE_PROVIDER_TIMEOUT_MS", default_value_t = 5_000)]
    pub provider_timeout_ms: u64,
    /// Consecutive provider failures (timeouts, errors) that open the circuit breaker.
    #[arg(long, env = "PICKPLE_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// How long the open breaker refuses calls before letting one through.
    #[arg(long, env = "PICKPLE_BREAKER_OPEN_MS", default_value_t = 10_000)]
    pub breaker_open_ms: u64,
    /// The MASTER account created at start by the users app (all three or none).
    #[arg(long, env = "PICKPLE_MASTER_USERNAME")]
    pub master_username: Option<String>,
    #[arg(long, env = "PICKPLE_MASTER_EMAIL")]
    pub master_email: Option<String>,
    /// argon2 PHC string of the MASTER's password.
    #[arg(long, env = "PICKPLE_MASTER_PASSWORD_HASH")]
    pub master_password_hash: Option<String>,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            payment_timeout_ms: 300_000,
            reservation_retention_ms: stock::FINISHED_RESERVATION_RETENTION_MS,
            sent_retention_ms: notification::SENT_RETENTION_MS,
            smtp: "127.0.0.1:12525".into(),
            mail_from: "noreply@pickple.local".into(),
            payment_provider: "fake".into(),
            provider_timeout_ms: 5_000,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
            master_username: None,
            master_email: None,
            master_password_hash: None,
        }
    }
}

impl AppConfig {
    pub fn master(&self) -> Option<users::Master> {
        match (
            &self.master_username,
            &self.master_email,
            &self.master_password_hash,
        ) {
            (Some(u), Some(e), Some(h)) => Some(users::Master {
                username: u.clone(),
                email: e.clone(),
                password_hash: h.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("configuration: {0}")]
    Config(String),
}

fn go<P, F>(
    runtime: RuntimeConfig,
    spec: AppSpec,
    factory: F,
    stop: Arc<AtomicBool>,
) -> Result<(), AppError>
where
    P: Processor,
    F: Fn(i32) -> P + Send + 'static,
{
    Ok(run_until(runtime, spec, factory, stop)?)
}

/// The partition count of `spec`'s first input, which every input shares (6 unless the
/// deployment grew it). Asked for a minute while the broker does not answer.
fn input_partitions(runtime: &RuntimeConfig, spec: &AppSpec) -> Result<i32, AppError> {
    let topic = runtime.topic(&spec.inputs[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match pickple_runtime::grow::partition_count(&runtime.brokers, &topic) {
            Ok(n) if n > 0 => return Ok(n),
            Ok(_) => {}
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(AppError::Config(format!("partitions of {topic}: {e}")))
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the partitions of {topic} yet"),
        }
        if std::time::Instant::now() > deadline {
            return Err(AppError::Config(format!("{topic} has no partitions")));
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Run one application until `stop` is set (or a fatal runtime error).
pub fn run_app(
    app: App,
    config: &AppConfig,
    runtime: RuntimeConfig,
    stop: Arc<AtomicBool>,
) -> Result<(), AppError> {
    let spec = app.spec();
    match app {
        App::Users => {
            let master = config.master();
            let partitions = input_partitions(&runtime, &spec)?;
            go(
                runtime,
                spec,
                move |p| users::UsersProcessor::new(p, partitions, master.clone()),
                stop,
            )
        }
        App::Catalog => go(runtime, spec, |_| catalog::CatalogProcessor, stop),
        App::Stock => {
            let retention = config.reservation_retention_ms;
            go(
                runtime,
                spec,
                move |_| stock::StockProcessor::new(retention),
                stop,
            )
        }
        App::Order => {
            let shared = order::OrderMetrics::new();
            let timeout = config.payment_timeout_ms;
            go(
                runtime,
                spec,
                move |p| order::OrderProcessor::new(p, timeout, shared.clone()),
                stop,
            )
        }
        App::Payment => {
            let provider = payment::provider::from_config(config).map_err(AppError::Config)?;
            go(
                runtime,
                spec,
                move |_| payment::PaymentProcessor::new(provider.clone()),
                stop,
            )
        }
        App::Delivery => go(runtime, spec, |_| delivery::DeliveryProcessor, stop),
        App::Notification => {
            let mailer = notification::SmtpMailer::new(&config.smtp, &config.mail_from)
                .map_err(AppError::Config)?;
            let mailer: Arc<dyn notification::Mailer> = Arc::new(mailer);
            let retention = config.sent_retention_ms;
            go(
                runtime,
                spec,
                move |_| {
                    notification::NotificationProcessor::new(mailer.clone())
                        .with_retention(retention)
                },
                stop,
            )
        }
    }
}
