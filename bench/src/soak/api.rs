//! A typed client of the gateway's `/api/v1` with retries: a request is retried (bounded, with
//! exponential back-off and jitter) after a connection error, a timeout or a 5xx; a placement
//! is retried with the SAME `Idempotency-Key`. A 401 signs the session in again once (tokens
//! expire after an hour). Long-polls (`?wait=`) follow a view until a status or a predicate; a
//! wait that ends without the change is a 200 with the current view and `Pickple-Wait: timeout`
//! ([`Reply::wait_timed_out`]), polled again.
//!
//! A sign-up is confirmed the way a person would: the code mailed to its address is read from
//! the SMTP sink's maildir and sent back.
//!
//! Every attempt's answer is counted in [`HttpStats`](crate::stats::HttpStats).

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::ledger::Ledger;
use crate::maildir::Watch;
use crate::setup::epoch_ms;
use crate::stats::Stats;

const API: &str = "/api/v1";

/// A signed-in user.
pub struct Session {
    pub username: String,
    password: String,
    token: RwLock<String>,
}

impl Session {
    pub fn token(&self) -> String {
        self.token.read().unwrap().clone()
    }
}

/// An HTTP answer (after retries).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// Attempts it took (1: no retry).
    pub attempts: u32,
    /// A long-poll whose wait ended without the awaited change (`Pickple-Wait: timeout`): the
    /// body is the current view, which does not fulfil the condition.
    pub wait_timed_out: bool,
}

/// One HTTP answer: status, body, and whether it is a timed-out long-poll.
type Answer = (u16, Value, bool);

impl Reply {
    pub fn describe(&self) -> String {
        let mut body = self.body.to_string();
        body.truncate(300);
        format!("{} {body}", self.status)
    }
}

/// A planned outage of the gateway (`--grow-at`: the shop is drained, stopped, grown and started
/// again). A client of a shop under maintenance keeps trying: while it lasts, an attempt that got
/// no answer or a 5xx does not use up the request's attempts, and the waits for a view are
/// extended by its length. Outside one, retries are bounded as always.
#[derive(Default)]
pub struct Outage {
    state: Mutex<OutageState>,
}

#[derive(Default)]
struct OutageState {
    since: Option<Instant>,
    last_end: Option<Instant>,
    /// Length of the outages that ended.
    past: Duration,
}

impl Outage {
    pub fn begin(&self) {
        let mut s = self.state.lock().unwrap();
        s.since.get_or_insert_with(Instant::now);
    }

    pub fn end(&self) {
        let mut s = self.state.lock().unwrap();
        if let Some(since) = s.since.take() {
            let now = Instant::now();
            s.past += now - since;
            s.last_end = Some(now);
        }
    }

    pub fn active(&self) -> bool {
        self.state.lock().unwrap().since.is_some()
    }

    /// Time spent in outages so far, the current one included.
    pub fn total(&self) -> Duration {
        let s = self.state.lock().unwrap();
        s.past + s.since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Whether an attempt started at `started` overlapped an outage.
    fn covers(&self, started: Instant) -> bool {
        let s = self.state.lock().unwrap();
        s.since.is_some() || s.last_end.is_some_and(|end| end >= started)
    }
}

/// A deadline that moves by the outage time spent after it was set.
struct Deadline {
    at: Instant,
    paused: Duration,
}

pub struct Api {
    base: String,
    http: reqwest::Client,
    pub stats: Arc<Stats>,
    attempts: u32,
    timeout: Duration,
    pub poll_wait: u64,
    pub visible_timeout: Duration,
    /// Where sign-ups find their confirmation mails, and how long they wait for one.
    mail: Option<(Watch, Duration)>,
    pub outage: Outage,
}

pub fn status_of(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

pub fn version_of(v: &Value) -> u64 {
    v["version"].as_u64().unwrap_or(0)
}

/// Back-off before attempt `attempt` (2, 3, ...): 100 ms doubling, at most 3 s, jittered.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << (attempt.saturating_sub(2)).min(5));
    let ms = base.min(3000) as f64 * rand::rng().random_range(0.5..1.5);
    Duration::from_millis(ms as u64)
}

impl Api {
    pub fn new(
        base: &str,
        stats: Arc<Stats>,
        attempts: u32,
        timeout: Duration,
        poll_wait: u64,
        visible_timeout: Duration,
    ) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            http,
            stats,
            attempts: attempts.max(1),
            timeout,
            poll_wait: poll_wait.clamp(1, 30),
            visible_timeout,
            mail: None,
            outage: Outage::default(),
        })
    }

    /// A deadline `after` from now, extended by the outages to come.
    fn deadline(&self, after: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + after,
            paused: self.outage.total(),
        }
    }

    fn passed(&self, d: &Deadline) -> bool {
        Instant::now() >= d.at + self.outage.total().saturating_sub(d.paused)
    }

    /// Sign-ups read their confirmation codes from the maildir `dir`, waiting up to `timeout`
    /// for each mail.
    pub fn with_mail(mut self, dir: &Path, timeout: Duration) -> Api {
        self.mail = Some((Watch::new(dir), timeout));
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// One attempt. `Err` when no HTTP answer came (connection error, timeout).
    async fn once(
        &self,
        method: &Method,
        url: &str,
        token: Option<&str>,
        body: Option<&Value>,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut req = self.http.request(method.clone(), url).timeout(timeout);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.http.count("transport");
                return Err(format!("{e}"));
            }
        };
        let status = res.status().as_u16();
        if status == 429 {
            // A rate limit: wait as long as the gateway says (bounded), as a client should.
            let secs = res
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(secs.min(10))).await;
        }
        let wait_timed_out = res
            .headers()
            .get("pickple-wait")
            .is_some_and(|v| v == "timeout");
        let body = match res.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => {
                self.stats.http.count("transport");
                return Err(format!("reading the body: {e}"));
            }
        };
        // A wait that ended without the change: counted apart (as before it was a 200), neither
        // an answer by status nor a success of the load.
        if wait_timed_out {
            self.stats
                .http
                .long_poll_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.stats.http.count(&status.to_string());
            if (200..300).contains(&status) {
                let now = self.stats.now_ms();
                self.stats.http.ok_at_ms.lock().unwrap().push(now);
            }
        }
        Ok((status, body, wait_timed_out))
    }

    /// A request with retries. `path` is under `/api/v1` unless it starts with `http` or `/health`.
    /// `Err` only when every attempt failed without an answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        session: Option<&Session>,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> Result<Reply, String> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else if path.starts_with("/health") || path.starts_with("/ready") {
            format!("{}{path}", self.base)
        } else {
            format!("{}{API}{path}", self.base)
        };
        let poll = path.contains("wait=");
        let timeout = if poll {
            self.timeout + Duration::from_secs(self.poll_wait)
        } else {
            self.timeout
        };
        let mut last_err = String::new();
        let mut relogged = false;
        // Attempts counted against the budget, and attempts sent (what a caller reads: more than
        // one means an earlier attempt may have reached the gateway).
        let mut attempt = 0;
        let mut sent = 0;
        while attempt < self.attempts {
            attempt += 1;
            if sent > 0 {
                tokio::time::sleep(backoff(sent + 1)).await;
            }
            sent += 1;
            let started = Instant::now();
            let token = session.map(Session::token);
            let answer = self
                .once(&method, &url, token.as_deref(), body, key, timeout)
                .await;
            // The gateway is down on purpose: this attempt does not count, the next one waits
            // its back-off (at most 3 s) and tries again.
            let failed = match &answer {
                Err(_) => true,
                Ok((status, _, _)) => *status >= 500,
            };
            if failed && self.outage.covers(started) {
                attempt -= 1;
            }
            match answer {
                Err(e) => last_err = e,
                Ok((401, _, _)) if session.is_some() && !relogged => {
                    relogged = true;
                    attempt -= 1;
                    if let Some(s) = session {
                        if let Ok(t) = Box::pin(self.token_for(&s.username, &s.password)).await {
                            *s.token.write().unwrap() = t;
                        }
                    }
                }
                Ok((status, body, _))
                    if (status >= 500 || status == 429) && attempt < self.attempts =>
                {
                    last_err = format!("{status} {body}");
                }
                Ok((status, body, wait_timed_out)) => {
                    return Ok(Reply {
                        status,
                        body,
                        attempts: sent,
                        wait_timed_out,
                    })
                }
            }
        }
        Err(format!(
            "{method} {path}: no answer after {sent} attempts: {last_err}"
        ))
    }

    pub async fn get(&self, path: &str, s: Option<&Session>) -> Result<Reply, String> {
        self.call(Method::GET, path, s, None, None).await
    }

    pub async fn post(&self, path: &str, s: &Session, body: Value) -> Result<Reply, String> {
        self.call(Method::POST, path, Some(s), Some(&body), None)
            .await
    }

    /// A plain read: `Some(view)` on 200, `None` on 404.
    pub async fn view(&self, path: &str, s: Option<&Session>) -> Result<Option<Value>, String> {
        let r = self.get(path, s).await?;
        match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            _ => Err(format!("GET {path}: {}", r.describe())),
        }
    }

    /// Long-poll until the view has `status` (or a terminal one); the view. Bounded by
    /// `visible_timeout`.
    pub async fn wait_status(
        &self,
        path: &str,
        s: Option<&Session>,
        status: &str,
    ) -> Result<Value, String> {
        let deadline = self.deadline(self.visible_timeout);
        let wait = self.poll_wait;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let r = self
                .get(&format!("{path}{sep}wait={wait}&status={status}"), s)
                .await?;
            match r.status {
                200 if !r.wait_timed_out => return Ok(r.body),
                // Not there yet (or no view yet): wait again.
                200 | 404 => {}
                _ => {
                    return Err(format!(
                        "GET {path} (waiting for {status}): {}",
                        r.describe()
                    ))
                }
            }
            if self.passed(&deadline) {
                return Err(format!(
                    "{path}: not {status} after {:?}",
                    self.visible_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Follow the view's versions until `pred` holds (starting with the current view); the
    /// view. Bounded by `visible_timeout`.
    pub async fn follow(
        &self,
        path: &str,
        s: Option<&Session>,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = self.deadline(self.visible_timeout);
        let wait = self.poll_wait;
        let mut current = self.view(path, s).await?;
        loop {
            if let Some(v) = &current {
                if pred(v) {
                    return Ok(current.unwrap());
                }
            }
            if self.passed(&deadline) {
                return Err(format!(
                    "{path}: condition not met after {:?}; last view: {}",
                    self.visible_timeout,
                    current.map(|v| v.to_string()).unwrap_or("none".into())
                ));
            }
            let q = match &current {
                Some(v) => format!("{path}?wait={wait}&after_version={}", version_of(v)),
                // A bare ?wait= waits for a change of a view that exists already; any version
                // (> 0) is what "exists" means here.
                None => format!("{path}?wait={wait}&after_version=0"),
            };
            let r = self.get(&q, s).await?;
            match r.status {
                // A newer version, or (`Pickple-Wait: timeout`) none within the wait: then the
                // body is the current view, tested again and waited on after its version.
                200 => current = Some(r.body),
                404 => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => return Err(format!("GET {q}: {}", r.describe())),
            }
        }
    }

    /// The view once it exists.
    pub async fn wait_exists(&self, path: &str, s: Option<&Session>) -> Result<Value, String> {
        self.follow(path, s, |_| true).await
    }

    async fn token_for(&self, username: &str, password: &str) -> Result<String, String> {
        let body = json!({"username": username, "password": password});
        let r = self
            .call(Method::POST, "/auth/sign-in", None, Some(&body), None)
            .await?;
        if r.status != 200 {
            return Err(format!("sign-in of {username}: {}", r.describe()));
        }
        r.body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("sign-in of {username}: no token in {}", r.body))
    }

    pub async fn sign_in(&self, username: &str, password: &str) -> Result<Arc<Session>, String> {
        let token = self.token_for(username, password).await?;
        Ok(Arc::new(Session {
            username: username.to_string(),
            password: password.to_string(),
            token: RwLock::new(token),
        }))
    }

    /// Sign up (as USER), confirm the address with the code mailed to it, wait until ACTIVE,
    /// sign in. The ledger records the sign-up and how its confirmation went.
    pub async fn sign_up_and_in(
        &self,
        username: &str,
        password: &str,
        ledger: &Ledger,
    ) -> Result<Arc<Session>, String> {
        let Some((mail, mail_timeout)) = &self.mail else {
            return Err(format!(
                "sign-up of {username}: no maildir to read its code from"
            ));
        };
        let email = format!("{username}@soak.example.com");
        let body = json!({
            "username": username, "nickname": username, "email": email, "password": password,
        });
        let sent_at = epoch_ms();
        let idx = ledger.sign_up(username, &email, sent_at);
        let r = self
            .call(Method::POST, "/auth/sign-up", None, Some(&body), None)
            .await?;
        // A 409 after a retry: the first attempt got through, but its answer (with the status
        // link) was lost. A 202 after a retry has a link of its own, but of a sign-up the users
        // processor may refuse for the earlier attempt's (same name): only the first attempt's
        // link is followed. Either way the mail has the code.
        let own_link = match r.status {
            202 => {
                let location = r.body["location"]
                    .as_str()
                    .ok_or_else(|| format!("sign-up of {username}: no location in {}", r.body))?;
                (r.attempts == 1)
                    .then(|| location.strip_prefix(API).unwrap_or(location).to_string())
            }
            409 if r.attempts > 1 => None,
            _ => return Err(format!("sign-up of {username}: {}", r.describe())),
        };
        ledger.update_sign_up(idx, |s| s.accepted = true);
        let found = mail
            .confirmation(&email, sent_at, *mail_timeout)
            .await
            .map_err(|e| format!("sign-up of {username}: {e}"))?;
        if let Some(link) = &own_link {
            // Not ACTIVE yet, whatever the mail says: only the code makes it so.
            let status = self
                .view(link, None)
                .await?
                .map(|v| status_of(&v).to_string());
            ledger.update_sign_up(idx, |s| s.status_before_confirm = status);
        }
        ledger.update_sign_up(idx, |s| s.code_sent = true);
        self.confirm(username, &found.code).await?;
        match own_link {
            Some(link) => {
                let v = self.wait_status(&link, None, "ACTIVE").await?;
                if status_of(&v) != "ACTIVE" {
                    return Err(format!("sign-up of {username} ended {v}"));
                }
                self.sign_in(username, password).await
            }
            None => self.sign_in_once_active(username, password).await,
        }
    }

    /// Send back a sign-up's code. The mail can come before the users' view is in Redis (404:
    /// tried again); a rate limit (429) is waited out as `Retry-After` says. Bounded by
    /// `visible_timeout`.
    async fn confirm(&self, username: &str, code: &str) -> Result<(), String> {
        let body = json!({"username": username, "code": code});
        let deadline = self.deadline(self.visible_timeout);
        loop {
            let r = self
                .call(Method::POST, "/auth/confirm-email", None, Some(&body), None)
                .await?;
            match r.status {
                202 => return Ok(()),
                404 | 429 if !self.passed(&deadline) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                _ => return Err(format!("confirmation of {username}: {}", r.describe())),
            }
        }
    }

    /// Sign in as soon as the account is ACTIVE (a sign-up without its status link). Bounded by
    /// `visible_timeout`.
    async fn sign_in_once_active(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Arc<Session>, String> {
        let deadline = self.deadline(self.visible_timeout);
        loop {
            match self.sign_in(username, password).await {
                Ok(s) => return Ok(s),
                Err(e) if self.passed(&deadline) => {
                    return Err(format!(
                        "{e} (not ACTIVE {:?} after its confirmation)",
                        self.visible_timeout
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_forgives_the_attempts_it_overlaps_and_extends_deadlines() {
        let o = Outage::default();
        let before = Instant::now();
        assert!(!o.active() && !o.covers(before));
        o.begin();
        std::thread::sleep(Duration::from_millis(20));
        assert!(o.active() && o.covers(before));
        o.end();
        assert!(!o.active());
        // An attempt started before the end overlapped it; one started after did not.
        assert!(o.covers(before));
        assert!(!o.covers(Instant::now()));
        let total = o.total();
        assert!(total >= Duration::from_millis(20), "{total:?}");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(o.total(), total, "only outages count");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let b2 = backoff(2).as_millis();
            assert!((50..=150).contains(&b2), "{b2}");
            let b20 = backoff(20).as_millis();
            assert!((1500..=4500).contains(&b20), "{b20}");
        }
    }
}
