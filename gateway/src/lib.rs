//! Pickple's HTTP gateway.
//!
//! It authenticates (argon2 passwords, JWT HS256), validates, publishes one command per write
//! request to Kafka (keyed by entity id, idempotent producer, acks=all) and answers
//! `202 Accepted` with the entity id and a `Location`; it serves the views the `views` sink keeps
//! in Redis, optionally long-polling (`?wait=`) until a view changes. It never calls a processor.
//!
//! It checks who is asking (identity, ownership) and the request's shape (with the domain's own
//! shape rules, `pickple_domain`); whether a command fits the entity's current state is decided
//! by the processor, which records a refusal in the view's `rejection`. Views are served even
//! while the sink lags (headers `Pickple-Views-Lag`, `Pickple-Views-Stale`), and are a 503 only
//! while the sink is dead ([`views`]).
//!
//! [`app`] builds the router from an [`AppState`] (tests run it in-process); [`serve`] runs it.

pub mod auth;
pub mod config;
pub mod error;
pub mod kafka;
pub mod limits;
pub mod longpoll;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sessions;
pub mod trace;
pub mod views;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use pickple_view_model::ready::ReadyRule;

pub use config::Config;

use crate::auth::Jwt;
use crate::error::ApiError;
use crate::kafka::Publisher;
use crate::limits::{Limiter, PasswordPool};
use crate::longpoll::Notifier;
use crate::views::Views;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub jwt: Jwt,
    pub kafka: Publisher,
    pub views: Arc<Views>,
    pub notifier: Arc<Notifier>,
    pub limits: Limiter,
    pub passwords: PasswordPool,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Connect the producer, start the change-notice subscription and the readiness refresher.
    /// Must run inside a tokio runtime. Nothing here needs Kafka or Redis to be up yet.
    pub async fn new(config: Config) -> anyhow::Result<AppState> {
        let secret = config.jwt_secret()?;
        let generated = secret.is_none();
        let jwt = Jwt::new(secret.as_deref(), config.jwt_ttl_secs);
        let kafka = Publisher::new(&config.brokers, &config.topic_prefix)?;
        let rule = ReadyRule {
            max_staleness_ms: config.views_max_staleness_ms,
            max_lag: config.views_max_lag,
        };
        let views = Arc::new(Views::new(
            config.redis.clone(),
            rule,
            config.views_ignore_readiness,
        ));
        views.refresh_readiness().await;
        views.spawn_readiness(Duration::from_millis(500));
        let notifier = Notifier::new();
        notifier.spawn(config.redis.clone());
        let limits = Limiter::new(config.rates.clone());
        let passwords = PasswordPool::new(
            config.password_hashers,
            Duration::from_millis(config.password_wait_ms),
        );
        let state = AppState(Arc::new(Shared {
            limits,
            passwords,
            config,
            jwt,
            kafka,
            views,
            notifier,
        }));
        if generated {
            // Redis may be down now; requests load the key when they need it. Later syncs let
            // the gateways agree again should Redis lose the key.
            let _ = state.jwt.sync(&state.views).await;
            let weak = Arc::downgrade(&state.0);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(30));
                loop {
                    every.tick().await;
                    let Some(shared) = weak.upgrade() else { return };
                    if let Err(e) = shared.jwt.sync(&shared.views).await {
                        tracing::debug!(error = ?e, "token key sync failed; trying again");
                    }
                }
            });
        }
        Ok(state)
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    routes::router()
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the route does not accept this method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            views::freshness_layer,
        ))
        .layer(axum::middleware::from_fn(trace::layer))
        .layer(axum::middleware::from_fn(metrics::layer))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| ApiError::internal("internal error").into_response(),
        ))
        .with_state(state)
}

/// Bind `config.addr` and serve until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, brokers = %config.brokers, redis = %config.redis.describe(), "gateway listening");
    let state = AppState::new(config).await?;
    // The peer address is the client's for the rate limits (crate::limits::client_address).
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
