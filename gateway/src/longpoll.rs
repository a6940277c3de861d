//! Long-poll: `GET ...?wait=<seconds>` answers when the view changes (or reaches a status).
//!
//! One Redis connection per gateway PSUBSCRIBEs to every change channel; a notice is forwarded
//! to the waiters of its key through a broadcast channel, so any number of waiters share one
//! subscription and keys nobody waits on cost a map lookup. Waiters also re-read the view every
//! second, so a notice lost during a Redis reconnect delays an answer by at most that.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pickple_views::{Kind, RedisConfig};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::views::{Stored, Views};

/// Fallback re-read interval of a waiter.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Notifier {
    waiters: Mutex<HashMap<String, broadcast::Sender<u64>>>,
    connected: AtomicBool,
}

/// A waiter's registration; leaving the last one removes the key from the map.
pub struct Subscription {
    rx: Option<broadcast::Receiver<u64>>,
    channel: String,
    notifier: Arc<Notifier>,
}

impl Subscription {
    /// Wait for a notice (true) or until `timeout` (false).
    pub async fn changed(&mut self, timeout: Duration) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            tokio::time::sleep(timeout).await;
            return false;
        };
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => true,
            Ok(Err(broadcast::error::RecvError::Closed)) => false,
            Err(_) => false,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.rx.take();
        let mut map = self.notifier.waiters.lock().expect("waiters lock");
        if map
            .get(&self.channel)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            map.remove(&self.channel);
        }
    }
}

impl Notifier {
    pub fn new() -> Arc<Notifier> {
        Arc::new(Notifier::default())
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Number of keys with at least one waiter.
    pub fn watched_keys(&self) -> usize {
        self.waiters.lock().expect("waiters lock").len()
    }

    pub fn subscribe(self: &Arc<Self>, channel: String) -> Subscription {
        let mut map = self.waiters.lock().expect("waiters lock");
        let rx = map
            .entry(channel.clone())
            .or_insert_with(|| broadcast::channel(16).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            channel,
            notifier: self.clone(),
        }
    }

    fn dispatch(&self, channel: &str, version: u64) {
        if let Some(tx) = self.waiters.lock().expect("waiters lock").get(channel) {
            let _ = tx.send(version);
        }
    }

    /// Keep one pattern subscription alive (reconnecting, following Sentinel) until the
    /// notifier is dropped.
    pub fn spawn(self: &Arc<Self>, cfg: RedisConfig) {
        let me: Weak<Notifier> = Arc::downgrade(self);
        let pattern = cfg.keys().channel_pattern();
        tokio::spawn(async move {
            loop {
                if me.strong_count() == 0 {
                    return;
                }
                let result: redis::RedisResult<()> = async {
                    let client = crate::views::async_client(&cfg).await?;
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.psubscribe(&pattern).await?;
                    if let Some(n) = me.upgrade() {
                        n.connected.store(true, Ordering::Relaxed);
                    }
                    let mut stream = pubsub.into_on_message();
                    while let Some(msg) = stream.next().await {
                        let Some(n) = me.upgrade() else { return Ok(()) };
                        let version = msg
                            .get_payload::<String>()
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        n.dispatch(msg.get_channel_name(), version);
                    }
                    Ok(())
                }
                .await;
                if let Some(n) = me.upgrade() {
                    n.connected.store(false, Ordering::Relaxed);
                }
                if let Err(e) = result {
                    tracing::warn!(error = %e, "change-notice subscription lost; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

/// What a long-poll waits for, from `?wait=&status=&after_version=`.
#[derive(Debug, Clone, Default)]
pub struct WaitFor {
    pub wait: Option<Duration>,
    pub status: Option<String>,
    pub after_version: Option<u64>,
}

/// Statuses after which a view never changes status again: waiting for another one is pointless.
const TERMINAL: &[&str] = &["COMPLETED", "CANCELLED", "DELIVERED", "REJECTED", "DELETED"];

impl WaitFor {
    pub fn new(
        wait_secs: Option<f64>,
        status: Option<String>,
        after_version: Option<u64>,
        max_secs: u64,
    ) -> ApiResult<WaitFor> {
        let wait = match wait_secs {
            None => None,
            Some(s) if !s.is_finite() || s < 0.0 => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "wait must be a non-negative number of seconds",
                ))
            }
            Some(s) => Some(Duration::from_secs_f64(s.min(max_secs as f64))),
        };
        Ok(WaitFor {
            wait,
            status: status.map(|s| s.to_ascii_uppercase()),
            after_version,
        })
    }

    /// Is `current` an answer, given the version seen when the request arrived (`None`: there
    /// was no view yet)?
    fn satisfied(&self, current: &Option<Stored>, initial: Option<u64>) -> bool {
        let Some(view) = current else { return false };
        let newer = initial.is_none_or(|v| view.version > v);
        if let Some(status) = &self.status {
            let now = view.status().unwrap_or("");
            // A command refused since the wait began: the status it aimed at will not come.
            let refused = newer && view.rejection().is_some();
            return now == status || TERMINAL.contains(&now) || refused;
        }
        if let Some(v) = self.after_version {
            return view.version > v;
        }
        newer
    }
}

/// Read a view, waiting as `wait_for` says. `visible` says whether the caller may see a view;
/// an invisible view is answered at once (as not found by the caller). Without `wait`, this is
/// a plain read.
pub async fn read_view(
    views: &Views,
    notifier: &Arc<Notifier>,
    kind: Kind,
    id: &str,
    wait_for: &WaitFor,
    visible: impl Fn(&Stored) -> bool,
) -> ApiResult<Option<Stored>> {
    views.ensure_live()?;
    let Some(wait) = wait_for.wait.filter(|w| !w.is_zero()) else {
        return views.get(kind, id).await;
    };
    let deadline = Instant::now() + wait;
    // Subscribe before the first read: a change between the read and the wait is not missed.
    let mut sub = notifier.subscribe(views.keys.channel(kind, id));
    let first = views.get(kind, id).await?;
    let initial = first.as_ref().map(|s| s.version);
    let mut current = first;
    loop {
        if let Some(view) = &current {
            if !visible(view) {
                return Ok(current);
            }
        }
        if wait_for.satisfied(&current, initial) {
            return Ok(current);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "wait_timeout",
                "the view did not change before the wait ended",
            ));
        }
        sub.changed(RECHECK.min(deadline - now)).await;
        // A sink that died during the wait: what Redis holds can no longer be trusted.
        views.ensure_live()?;
        current = views.get(kind, id).await?;
    }
}
