//! Abuse limits: request rates per client address and per account, shared by every gateway
//! instance through Redis, and a bounded pool for password hashing.
//!
//! Rates follow GCRA (the generic cell rate algorithm, as `redis-cell`, `go-redis/redis_rate`
//! and `governor` do): one timestamp per key, the theoretical arrival time of the next request.
//! It runs as a Redis script so that concurrent gateways update a key atomically, on the
//! gateway's own Sentinel-aware connection. The Rust crates that implement it against Redis
//! (`redis-rate`, `throttle-kit`) each bring a second, older Redis client that knows nothing of
//! Sentinel failover; `governor` keeps its state in process memory only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};
use crate::views::Views;

/// Returns 0 when the request is allowed (and counts it), or else the milliseconds until it
/// would be.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - interval * burst
if now < allowed_at then return allowed_at - now end
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now)
return 0
"#;

/// A rate: `per_minute` requests a minute on average, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_minute: u32, burst: u32) -> Rate {
        Rate { per_minute, burst }
    }

    /// `per_minute/burst`, e.g. `10/5`; `off` disables the limit.
    pub fn parse(text: &str) -> Result<Option<Rate>, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (rate, burst) = text
            .split_once('/')
            .ok_or_else(|| format!("expected per_minute/burst or off, got {text:?}"))?;
        let number = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{s:?} is not a positive number"))
        };
        Ok(Some(Rate::new(number(rate)?, number(burst)?)))
    }
}

/// A configured rate, or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting(pub Option<Rate>);

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Setting, String> {
        Rate::parse(s).map(Setting)
    }
}

/// What is limited, each with its own rate and key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Sign-in attempts from one client address.
    SignInPerClient,
    /// Sign-in attempts on one account, from anywhere (password guessing spread over many
    /// addresses).
    SignInPerAccount,
    /// Sign-ups from one client address.
    SignUpPerClient,
    /// Sign-up status reads from one client address.
    SignUpStatusPerClient,
    /// E-mail confirmations sent from one client address.
    ConfirmPerClient,
    /// Order placements by one user.
    PlacePerUser,
}

impl Limit {
    pub const ALL: [Limit; 6] = [
        Limit::SignInPerClient,
        Limit::SignInPerAccount,
        Limit::SignUpPerClient,
        Limit::SignUpStatusPerClient,
        Limit::ConfirmPerClient,
        Limit::PlacePerUser,
    ];

    /// The limit's label in keys and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Limit::SignInPerClient => "sign-in-client",
            Limit::SignInPerAccount => "sign-in-account",
            Limit::SignUpPerClient => "sign-up-client",
            Limit::SignUpStatusPerClient => "sign-up-status-client",
            Limit::ConfirmPerClient => "confirm-client",
            Limit::PlacePerUser => "place-user",
        }
    }
}

/// The rates in force (`None`: no limit), from the configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct Rates {
    /// Sign-in attempts per client address: per_minute/burst, or off.
    #[arg(long, env = "PICKPLE_LIMIT_SIGN_IN_CLIENT", default_value = "30/10")]
    pub sign_in_client: Setting,
    /// Sign-in attempts per account: per_minute/burst, or off.
    #[arg(long, env = "PICKPLE_LIMIT_SIGN_IN_ACCOUNT", default_value = "10/5")]
    pub sign_in_account: Setting,
    /// Sign-ups per client address: per_minute/burst, or off.
    #[arg(long, env = "PICKPLE_LIMIT_SIGN_UP_CLIENT", default_value = "10/5")]
    pub sign_up_client: Setting,
    /// Sign-up status reads per client address: per_minute/burst, or off.
    #[arg(
        long,
        env = "PICKPLE_LIMIT_SIGN_UP_STATUS_CLIENT",
        default_value = "120/30"
    )]
    pub sign_up_status_client: Setting,
    /// E-mail confirmations per client address: per_minute/burst, or off.
    #[arg(long, env = "PICKPLE_LIMIT_CONFIRM_CLIENT", default_value = "30/10")]
    pub confirm_client: Setting,
    /// Order placements per user: per_minute/burst, or off.
    #[arg(long, env = "PICKPLE_LIMIT_PLACE_USER", default_value = "120/20")]
    pub place_user: Setting,
}

impl Rates {
    /// No limit at all (tests that are not about limits).
    pub fn off() -> Rates {
        Rates {
            sign_in_client: Setting(None),
            sign_in_account: Setting(None),
            sign_up_client: Setting(None),
            sign_up_status_client: Setting(None),
            confirm_client: Setting(None),
            place_user: Setting(None),
        }
    }

    fn of(&self, limit: Limit) -> Option<Rate> {
        let Setting(rate) = match limit {
            Limit::SignInPerClient => self.sign_in_client,
            Limit::SignInPerAccount => self.sign_in_account,
            Limit::SignUpPerClient => self.sign_up_client,
            Limit::SignUpStatusPerClient => self.sign_up_status_client,
            Limit::ConfirmPerClient => self.confirm_client,
            Limit::PlacePerUser => self.place_user,
        };
        rate
    }
}

pub struct Limiter {
    rates: Rates,
    script: redis::Script,
}

impl Limiter {
    pub fn new(rates: Rates) -> Limiter {
        Limiter {
            rates,
            script: redis::Script::new(GCRA_LUA),
        }
    }

    /// Count a request of `who` against `limit`: 429 with `Retry-After` when over it.
    pub async fn check(&self, views: &Views, limit: Limit, who: &str) -> ApiResult<()> {
        let Some(rate) = self.rates.of(limit) else {
            return Ok(());
        };
        let interval_ms = (60_000 / u64::from(rate.per_minute)).max(1);
        let key = views.keys.auth(&format!("rate:{}:{who}", limit.name()));
        let mut call = self.script.prepare_invoke();
        call.key(key).arg(interval_ms).arg(rate.burst);
        let wait_ms: u64 = views.invoke(&call).await?;
        if wait_ms == 0 {
            return Ok(());
        }
        crate::metrics::rate_limited(limit.name());
        Err(ApiError::too_many(
            format!("too many requests ({}); try again later", limit.name()),
            wait_ms.div_ceil(1000),
        ))
    }
}

/// The client's address: the TCP peer. A proxy in front must be trusted to be the only peer;
/// `X-Forwarded-For` is not read, since any client can write it.
pub fn client_address(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The client's address, for the rate limits.
pub struct Client(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(client_address(parts)))
    }
}

/// Runs password hashing (argon2id, 19 MiB and tens of milliseconds each) on at most
/// `permits` blocking threads at once. A request that cannot get one within `wait` is shed
/// with 503 and `Retry-After`, instead of queueing without bound and exhausting memory.
pub struct PasswordPool {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl PasswordPool {
    pub fn new(permits: usize, wait: Duration) -> PasswordPool {
        PasswordPool {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
        }
    }

    async fn permit(&self) -> ApiResult<tokio::sync::OwnedSemaphorePermit> {
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                crate::metrics::password_shed();
                Err(ApiError::busy(
                    "too many sign-ins and sign-ups at once; try again shortly",
                    1,
                ))
            }
        }
    }

    pub async fn hash(&self, password: String) -> ApiResult<String> {
        let _permit = self.permit().await?;
        crate::auth::hash_password(password).await
    }

    pub async fn verify(&self, password: String, hash: String) -> ApiResult<bool> {
        let _permit = self.permit().await?;
        Ok(crate::auth::verify_password(password, hash).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_or_switch_off() {
        assert_eq!(Rate::parse("10/5"), Ok(Some(Rate::new(10, 5))));
        assert_eq!(Rate::parse("OFF"), Ok(None));
        for bad in ["10", "0/5", "10/0", "a/b", ""] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_pool_sheds_what_it_cannot_start_in_time() {
        let pool = PasswordPool::new(1, Duration::from_millis(50));
        let held = pool.permit().await.unwrap();
        let shed = pool.permit().await.unwrap_err();
        assert_eq!((shed.status.as_u16(), shed.retry_after), (503, Some(1)));
        drop(held);
        assert!(pool.permit().await.is_ok());
    }
}
