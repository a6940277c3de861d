//! Where Redis is, for the sink that writes the views and the gateway that reads them.

use crate::keys::Keys;

/// Where Redis is: a URL, or Sentinels and a master name (survives a failover).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisConfig {
    /// Redis URL (used when no Sentinels are given), e.g. redis://127.0.0.1:16379/0.
    #[arg(
        long,
        env = "PICKPLE_REDIS_URL",
        default_value = "redis://127.0.0.1:16379"
    )]
    pub redis_url: String,
    /// Comma-separated Sentinel addresses (host:port); when set, the master is asked of them.
    #[arg(long, env = "PICKPLE_REDIS_SENTINELS")]
    pub redis_sentinels: Option<String>,
    /// Name of the master the Sentinels monitor.
    #[arg(long, env = "PICKPLE_REDIS_MASTER", default_value = "pickple")]
    pub redis_master: String,
    /// Prefix of every key and channel (several deployments or tests on one Redis).
    #[arg(long, env = "PICKPLE_REDIS_PREFIX", default_value = "pickple:")]
    pub redis_prefix: String,
}

impl RedisConfig {
    /// Local defaults (or `PICKPLE_REDIS_URL`) with the given key prefix.
    pub fn local(prefix: impl Into<String>) -> RedisConfig {
        RedisConfig {
            redis_url: std::env::var("PICKPLE_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:16379".into()),
            redis_sentinels: None,
            redis_master: "pickple".into(),
            redis_prefix: prefix.into(),
        }
    }

    pub fn keys(&self) -> Keys {
        Keys::new(self.redis_prefix.clone())
    }

    /// Sentinel addresses as URLs, or `None` in plain URL mode.
    pub fn sentinel_urls(&self) -> Option<Vec<String>> {
        let list = self.redis_sentinels.as_deref()?.trim();
        if list.is_empty() {
            return None;
        }
        Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.contains("://") {
                        s.to_string()
                    } else {
                        format!("redis://{s}")
                    }
                })
                .collect(),
        )
    }

    /// A client for the current master: asks the Sentinels each time it is called, so calling it
    /// again after an error follows a failover.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match self.sentinel_urls() {
            Some(urls) => {
                let mut sentinel = redis::sentinel::SentinelClient::build(
                    urls,
                    self.redis_master.clone(),
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )?;
                sentinel.get_client()
            }
            None => redis::Client::open(self.redis_url.as_str()),
        }
    }

    pub fn describe(&self) -> String {
        match self.sentinel_urls() {
            Some(urls) => format!("sentinels {} master {}", urls.join(","), self.redis_master),
            None => self.redis_url.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_normalized() {
        let mut c = RedisConfig::local("x:");
        assert_eq!(c.sentinel_urls(), None);
        c.redis_sentinels = Some("a:26379, b:26379".into());
        assert_eq!(
            c.sentinel_urls().unwrap(),
            vec!["redis://a:26379", "redis://b:26379"]
        );
    }
}
