//! Long-poll: `GET ...?wait=<seconds>` answers when the view changes (or reaches a status).
//!
//! A wait is never an error: it answers 200 with the view as soon as the condition holds, or
//! with the current view when the wait ends first, and says which in the header
//! [`Pickple-Wait`](WAIT_HEADER): `met` or `timeout` ([`WaitOutcome`], set by [`layer`] on the
//! 200 of a read that waited; absent on a read without a wait). A view that still does not
//! exist when the wait ends is the caller's 404, as without a wait.
//!
//! One Redis connection per gateway PSUBSCRIBEs to every change channel; a notice is forwarded
//! to the waiters of its key through a broadcast channel, so any number of waiters share one
//! subscription and keys nobody waits on cost a map lookup. Waiters also re-read the view every
//! second, so a notice lost during a Redis reconnect delays an answer by at most that.
//!
//! The notifier publishes its state as it changes: the subscription connected, the number of
//! registered waiters (also the gauge `pickple_longpoll_waiters`) and [`Waiting`], which view
//! version each blocked waiter has read. Whoever must know that a waiter has seen a view and
//! is waiting for the next one (a test, before it writes that next one) awaits the change
//! rather than guessing with a delay.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use pickple_view_model::{RedisConfig, View};
use tokio::sync::{broadcast, watch};

use crate::error::{ApiError, ApiResult};
use crate::metrics::ViewMetrics;
use crate::views::Views;

/// Fallback re-read interval of a waiter.
const RECHECK: Duration = Duration::from_secs(1);

/// Response header of a view read that waited (`?wait=` > 0) and answers 200: `met` (the view
/// served fulfils the condition) or `timeout` (the wait ended first; the view served is the
/// current one). Absent on a read without a wait.
pub const WAIT_HEADER: &str = "pickple-wait";
/// [`WAIT_HEADER`] as documented.
pub const WAIT_HEADER_NAME: &str = "Pickple-Wait";

/// How a long-poll ended, answered in [`WAIT_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The condition held, when the request arrived or during the wait.
    Met,
    /// The wait ended without the condition: the view served is the current one.
    Timeout,
}

impl WaitOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitOutcome::Met => "met",
            WaitOutcome::Timeout => "timeout",
        }
    }
}

tokio::task_local! {
    /// How the long-poll of the request [`layer`] is serving ended, as [`read_view`] saw it.
    static OUTCOME: Cell<Option<WaitOutcome>>;
}

/// Note how this request's wait ended (no-op outside [`layer`]).
fn record(outcome: WaitOutcome) {
    let _ = OUTCOME.try_with(|o| o.set(Some(outcome)));
}

/// Middleware: the 200 of a request whose [`read_view`] waited carries [`WAIT_HEADER`]. Any
/// other answer (a 404 after the wait, someone else's view, an error) says nothing of the wait.
pub async fn layer(req: Request, next: Next) -> Response {
    let (mut res, outcome) = OUTCOME
        .scope(Cell::new(None), async {
            let res = next.run(req).await;
            (res, OUTCOME.with(Cell::get))
        })
        .await;
    if let Some(outcome) = outcome {
        if res.status() == StatusCode::OK {
            res.headers_mut()
                .insert(WAIT_HEADER, HeaderValue::from_static(outcome.as_str()));
        }
    }
    res
}

pub struct Notifier {
    waiters: Mutex<HashMap<String, broadcast::Sender<u64>>>,
    /// The change-notice subscription is up.
    connected: watch::Sender<bool>,
    /// Waiters registered now (one per long-poll in progress).
    registered: watch::Sender<usize>,
    waiting: watch::Sender<Waiting>,
}

/// The waiters blocked on a notice now: per change channel, how many last read each version
/// of the view (`None`: there was no view yet).
pub type Waiting = HashMap<String, BTreeMap<Option<u64>, usize>>;

/// A waiter's registration; leaving the last one removes the key from the map.
pub struct Subscription {
    rx: Option<broadcast::Receiver<u64>>,
    channel: String,
    notifier: Arc<Notifier>,
}

impl Subscription {
    /// Wait for a notice (true) or until `timeout` (false), having read version `read` of the
    /// view (`None`: none yet); counted in [`Waiting`] meanwhile.
    pub async fn changed(&mut self, read: Option<u64>, timeout: Duration) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            tokio::time::sleep(timeout).await;
            return false;
        };
        // A guard, so a waiter dropped mid-wait (its client went away) is uncounted too.
        let _blocked = Blocked::new(&self.notifier, &self.channel, read);
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => true,
            Ok(Err(broadcast::error::RecvError::Closed)) => false,
            Err(_) => false,
        }
    }
}

/// One waiter's entry in [`Waiting`] while it is blocked.
struct Blocked<'a> {
    notifier: &'a Notifier,
    channel: &'a str,
    read: Option<u64>,
}

impl<'a> Blocked<'a> {
    fn new(notifier: &'a Notifier, channel: &'a str, read: Option<u64>) -> Self {
        notifier.waiting.send_modify(|w| {
            *w.entry(channel.to_string())
                .or_default()
                .entry(read)
                .or_default() += 1;
        });
        Blocked {
            notifier,
            channel,
            read,
        }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.notifier.waiting.send_modify(|w| {
            let Some(versions) = w.get_mut(self.channel) else {
                return;
            };
            if let Some(n) = versions.get_mut(&self.read) {
                *n -= 1;
                if *n == 0 {
                    versions.remove(&self.read);
                }
            }
            if versions.is_empty() {
                w.remove(self.channel);
            }
        });
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.rx.take();
        {
            let mut map = self.notifier.waiters.lock().expect("waiters lock");
            if map
                .get(&self.channel)
                .is_some_and(|tx| tx.receiver_count() == 0)
            {
                map.remove(&self.channel);
            }
        }
        // After the map is cleaned: whoever sees the count drop sees the keys left too.
        self.notifier.registered.send_modify(|n| *n -= 1);
        ViewMetrics::global().waiters.dec();
    }
}

impl Notifier {
    pub fn new() -> Arc<Notifier> {
        Arc::new(Notifier {
            waiters: Mutex::new(HashMap::new()),
            connected: watch::Sender::new(false),
            registered: watch::Sender::new(0),
            waiting: watch::Sender::new(Waiting::new()),
        })
    }

    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Follows [`Notifier::is_connected`] as it changes.
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    /// Waiters registered now (one per long-poll in progress).
    pub fn waiters(&self) -> usize {
        *self.registered.borrow()
    }

    /// Follows [`Notifier::waiters`] as it changes.
    pub fn watch_waiters(&self) -> watch::Receiver<usize> {
        self.registered.subscribe()
    }

    /// Follows [`Waiting`] as it changes.
    pub fn watch_waiting(&self) -> watch::Receiver<Waiting> {
        self.waiting.subscribe()
    }

    /// Number of keys with at least one waiter.
    pub fn watched_keys(&self) -> usize {
        self.waiters.lock().expect("waiters lock").len()
    }

    pub fn subscribe(self: &Arc<Self>, channel: String) -> Subscription {
        let rx = {
            let mut map = self.waiters.lock().expect("waiters lock");
            map.entry(channel.clone())
                .or_insert_with(|| broadcast::channel(16).0)
                .subscribe()
        };
        // After the map holds the key: whoever sees the count sees the key too.
        self.registered.send_modify(|n| *n += 1);
        ViewMetrics::global().waiters.inc();
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
                        n.connected.send_replace(true);
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
                    n.connected.send_replace(false);
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
    fn satisfied<V: View>(&self, current: &Option<V>, initial: Option<u64>) -> bool {
        let Some(view) = current else { return false };
        let newer = initial.is_none_or(|v| view.version() > v);
        if let Some(status) = &self.status {
            // A command refused since the wait began: the status it aimed at will not come;
            // nor will any after a final one.
            let refused = newer && view.rejection().is_some();
            return view.status().as_ref() == Some(status) || view.is_final() || refused;
        }
        if let Some(v) = self.after_version {
            return view.version() > v;
        }
        newer
    }
}

/// Read a view, waiting as `wait_for` says. `visible` says whether the caller may see a view;
/// an invisible view is answered at once (as not found by the caller). Without `wait` (or with
/// 0), this is a plain read. A wait that ends without the condition answers the current view
/// (`None`: there is none), never an error; how the wait ended is recorded for [`layer`].
pub async fn read_view<V: View>(
    views: &Views,
    notifier: &Arc<Notifier>,
    id: &str,
    wait_for: &WaitFor,
    visible: impl Fn(&V) -> bool,
) -> ApiResult<Option<V>> {
    views.ensure_servable()?;
    let Some(wait) = wait_for.wait.filter(|w| !w.is_zero()) else {
        return views.get(id).await;
    };
    let deadline = Instant::now() + wait;
    // Subscribe before the first read: a change between the read and the wait is not missed.
    let mut sub = notifier.subscribe(views.keys.channel(V::KIND, id));
    let first = views.get(id).await?;
    let initial = first.as_ref().map(View::version);
    let mut current = first;
    loop {
        if let Some(view) = &current {
            if !visible(view) {
                return Ok(current);
            }
        }
        if wait_for.satisfied(&current, initial) {
            record(WaitOutcome::Met);
            return Ok(current);
        }
        let now = Instant::now();
        if now >= deadline {
            record(WaitOutcome::Timeout);
            return Ok(current);
        }
        let read = current.as_ref().map(View::version);
        sub.changed(read, RECHECK.min(deadline - now)).await;
        // A sink gone for good since the wait began (its heartbeat expired, Redis wiped):
        // nothing left worth serving.
        views.ensure_servable()?;
        current = views.get(id).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;

    /// [`layer`] answers what the handler's wait recorded, on a 200 only.
    #[tokio::test]
    async fn the_layer_reports_how_the_wait_ended_on_a_200() {
        let app = Router::new()
            .route("/plain", get(|| async { "view" }))
            .route(
                "/met",
                get(|| async {
                    record(WaitOutcome::Met);
                    "view"
                }),
            )
            .route(
                "/timeout",
                get(|| async {
                    // Recorded across an await, as read_view does.
                    tokio::task::yield_now().await;
                    record(WaitOutcome::Timeout);
                    "view"
                }),
            )
            .route(
                "/missing",
                get(|| async {
                    record(WaitOutcome::Timeout);
                    StatusCode::NOT_FOUND
                }),
            )
            .layer(axum::middleware::from_fn(layer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let http = reqwest::Client::new();
        for (path, status, wait) in [
            ("/plain", 200, None),
            ("/met", 200, Some("met")),
            ("/timeout", 200, Some("timeout")),
            ("/missing", 404, None),
        ] {
            let res = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status().as_u16(), status, "{path}");
            let header = res.headers().get(WAIT_HEADER).map(|v| v.to_str().unwrap());
            assert_eq!(header, wait, "{path}");
        }
        server.abort();
        // Outside the layer, recording is a no-op.
        record(WaitOutcome::Met);
    }
}
