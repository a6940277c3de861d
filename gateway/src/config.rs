//! Gateway settings, from flags or `PICKPLE_*` environment variables, with local defaults.

use pickple_view_model::RedisConfig;

use crate::limits::Rates;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "pickple-gateway", about = "Pickple's HTTP API")]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PICKPLE_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "PICKPLE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    #[command(flatten)]
    pub redis: RedisConfig,
    /// HS256 secret of the access tokens (required in production). Without it, the gateways
    /// of a deployment share one they generate on first start and keep in Redis.
    #[arg(long, env = "PICKPLE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// `production` makes the JWT secret mandatory.
    #[arg(long = "env", env = "PICKPLE_ENV", default_value = "development")]
    pub environment: String,
    /// Lifetime of an access token, in seconds: short, as a refresh token renews it.
    #[arg(long, env = "PICKPLE_JWT_TTL_SECS", default_value_t = 900)]
    pub jwt_ttl_secs: u64,
    /// Lifetime of a refresh token (and of a sign-in left unused), in seconds.
    #[arg(long, env = "PICKPLE_REFRESH_TTL_SECS", default_value_t = 30 * 24 * 3600)]
    pub refresh_ttl_secs: u64,
    #[command(flatten)]
    pub rates: Rates,
    /// Password hashes (argon2id, 19 MiB each) computed at once; more wait.
    #[arg(long, env = "PICKPLE_PASSWORD_HASHERS", default_value_t = 4)]
    pub password_hashers: usize,
    /// How long a sign-in or sign-up waits for a hasher before it is shed with 503, in ms.
    #[arg(long, env = "PICKPLE_PASSWORD_WAIT_MS", default_value_t = 2_000)]
    pub password_wait_ms: u64,
    /// Longest `?wait=` a GET may ask for, in seconds.
    #[arg(long, env = "PICKPLE_MAX_WAIT_SECS", default_value_t = 30)]
    pub max_wait_secs: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PICKPLE_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// The views sink is alive while its heartbeat is at most this old (ms); older, view reads
    /// are served marked `Pickple-Views-Stale: true` and `/ready` reports itself degraded. Never
    /// written, they answer 503.
    #[arg(long, env = "PICKPLE_VIEWS_MAX_STALENESS_MS", default_value_t = 15_000)]
    pub views_max_staleness_ms: i64,
    /// Over this lag (records), view reads are still served but marked
    /// `Pickple-Views-Stale: true`, and `/ready` reports itself degraded.
    #[arg(long, env = "PICKPLE_VIEWS_MAX_LAG", default_value_t = 100)]
    pub views_max_lag: i64,
    /// Serve views even when the sink has never reported (development without the sink).
    #[arg(long, env = "PICKPLE_VIEWS_IGNORE_READINESS", default_value_t = false)]
    pub views_ignore_readiness: bool,
}

impl Config {
    /// Local defaults for tests: given topic prefix and Redis key prefix.
    pub fn local(topic_prefix: &str, redis_prefix: &str) -> Config {
        Config {
            addr: "127.0.0.1:0".into(),
            brokers: std::env::var("PICKPLE_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".into()),
            topic_prefix: topic_prefix.into(),
            redis: RedisConfig::local(redis_prefix),
            jwt_secret: Some("test-secret".into()),
            environment: "test".into(),
            jwt_ttl_secs: 900,
            refresh_ttl_secs: 3600,
            rates: Rates::off(),
            password_hashers: 4,
            password_wait_ms: 2_000,
            max_wait_secs: 30,
            body_limit: 64 * 1024,
            views_max_staleness_ms: 15_000,
            views_max_lag: 100,
            views_ignore_readiness: false,
        }
    }

    pub fn is_production(&self) -> bool {
        self.environment.eq_ignore_ascii_case("production")
    }

    /// The configured JWT secret, if any. Production refuses to start without a real one;
    /// elsewhere `None` means the shared generated secret ([`crate::auth::Jwt::sync`]).
    pub fn jwt_secret(&self) -> anyhow::Result<Option<String>> {
        match self.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => {
                if self.is_production() && s.len() < 32 {
                    anyhow::bail!(
                        "PICKPLE_JWT_SECRET must be at least 32 characters in production"
                    );
                }
                Ok(Some(s.to_string()))
            }
            None if self.is_production() => {
                anyhow::bail!("PICKPLE_JWT_SECRET is required when PICKPLE_ENV=production")
            }
            None => Ok(None),
        }
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_requires_a_real_secret() {
        let mut c = Config::local("", "x:");
        c.jwt_secret = None;
        assert_eq!(
            c.jwt_secret().unwrap(),
            None,
            "no secret in the source to fall back on"
        );
        c.environment = "production".into();
        assert!(c.jwt_secret().is_err());
        c.jwt_secret = Some("short".into());
        assert!(c.jwt_secret().is_err());
        c.jwt_secret = Some("a-long-enough-secret-for-production-use".into());
        assert!(c.jwt_secret().is_ok());
    }
}
