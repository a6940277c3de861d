//! `--grow-at SECS --grow-to N`: at that time into the load, grow the shop's partitions with
//! `scripts/grow.sh` (stop the gateway, drain, stop the processors, `pickple-grow`, start
//! everything again) while the load goes on, and record how long each phase took.
//!
//! The soak's own environment (run dir, prefixes, ports, profile, as `scripts/soak.sh` exports
//! them) is grow.sh's, so it grows the shop under test. While it runs the gateway is down on
//! purpose: the client keeps retrying ([`Outage`](crate::api::Outage)) and chaos kills nothing.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::ctx::Ctx;
use crate::invariants::Row;

/// What one store's entries did in the grow (pickple-grow's report).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoreMoved {
    pub app: String,
    pub store: String,
    pub entries: u64,
    pub moved: u64,
    pub copied: u64,
}

/// Seconds of each phase of scripts/grow.sh.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Phases {
    /// Stopping the gateway.
    pub gateway_s: f64,
    /// Until nothing is left to process (with another start of the processors after a refusal).
    pub drain_s: f64,
    /// Stopping the processors.
    pub stop_s: f64,
    /// pickple-grow: the groups empty, the topics grown, the changelogs rekeyed.
    pub grow_s: f64,
    /// up.sh until the gateway is ready.
    pub start_s: f64,
    /// The gateway's stop to its readiness.
    pub down_s: f64,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct GrowRecord {
    pub to: i32,
    /// Seconds since the start of the load.
    pub at_s: f64,
    /// Waiting for the recoveries of chaos kills in progress before starting.
    pub waited_for_chaos_s: f64,
    /// grow.sh from its start to its end.
    pub total_s: f64,
    pub ok: bool,
    pub phases: Option<Phases>,
    pub moved: Vec<StoreMoved>,
    /// Orders offered while grow.sh ran (they waited for the gateway).
    pub orders_during: u64,
    /// The longest of those orders' waits, from their intended start to AWAITING_PAYMENT seen.
    pub longest_order_wait_s: Option<f64>,
    /// grow.sh's end (the gateway ready) -> the first order seen AWAITING_PAYMENT after it.
    pub first_visible_after_s: Option<f64>,
    #[serde(skip)]
    pub at_ms: u64,
    #[serde(skip)]
    pub end_ms: u64,
    pub note: Option<String>,
}

/// Parse `timings k=v ...`, grow.sh's last line.
pub fn parse_timings(line: &str) -> Option<Phases> {
    let rest = line.strip_prefix("timings ")?;
    let mut p = Phases::default();
    for kv in rest.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        match k {
            "attempts" => p.attempts = v.parse().ok()?,
            _ => {
                let v: f64 = v.parse().ok()?;
                match k {
                    "gateway_s" => p.gateway_s = v,
                    "drain_s" => p.drain_s = v,
                    "stop_s" => p.stop_s = v,
                    "grow_s" => p.grow_s = v,
                    "start_s" => p.start_s = v,
                    "down_s" => p.down_s = v,
                    _ => {}
                }
            }
        }
    }
    Some(p)
}

/// Parse pickple-grow's `APP/STORE: N entries, M moved, K copied`.
pub fn parse_moved(line: &str) -> Option<StoreMoved> {
    let (name, counts) = line.split_once(": ")?;
    let (app, store) = name.split_once('/')?;
    let mut n = counts.split(", ").map(|part| {
        let (num, what) = part.split_once(' ')?;
        Some((num.parse::<u64>().ok()?, what))
    });
    match (n.next()??, n.next()??, n.next()??) {
        ((entries, "entries"), (moved, "moved"), (copied, "copied")) => Some(StoreMoved {
            app: app.to_string(),
            store: store.to_string(),
            entries,
            moved,
            copied,
        }),
        _ => None,
    }
}

/// Wait until `at` into the load, then grow (unless the load ended first).
pub async fn run(ctx: Arc<Ctx>, load_start: Instant, at: Duration, to: i32) -> Option<GrowRecord> {
    let when = load_start + at;
    while Instant::now() < when {
        if ctx.stopping() {
            eprintln!("grow: the load ended before --grow-at; no grow");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let begun = Instant::now();
    let mut rec = GrowRecord {
        to,
        at_s: begun.saturating_duration_since(load_start).as_secs_f64(),
        at_ms: ctx.stats.ms(begun),
        ..Default::default()
    };
    // From here on chaos kills nothing (it checks under the same lock), and the client treats
    // the gateway's absence as planned.
    ctx.api.outage.begin();
    let recovery = Duration::from_secs(ctx.cli.recovery_timeout);
    loop {
        let pending: HashSet<_> = ctx.recovering.lock().unwrap().clone();
        if pending.is_empty() {
            break;
        }
        if begun.elapsed() >= recovery {
            eprintln!("grow: chaos recoveries still running after {recovery:?}; growing anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rec.waited_for_chaos_s = begun.elapsed().as_secs_f64();
    eprintln!(
        "grow: scripts/grow.sh --partitions {to} at {:.1} s",
        rec.at_s
    );
    let started = Instant::now();
    let script = ctx.cli.scripts.join("grow.sh");
    let child = tokio::process::Command::new(&script)
        .args(["--partitions", &to.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut notes = Vec::new();
    match child {
        Err(e) => notes.push(format!("{}: {e}", script.display())),
        Ok(mut child) => {
            let stdout = child.stdout.take().expect("piped stdout");
            let mut lines = BufReader::new(stdout).lines();
            let timeout = Duration::from_secs(ctx.cli.grow_timeout);
            let read = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("grow.sh: {line}");
                    if let Some(p) = parse_timings(&line) {
                        rec.phases = Some(p);
                    } else if let Some(m) = parse_moved(&line) {
                        rec.moved.push(m);
                    }
                }
                child.wait().await
            };
            match tokio::time::timeout(timeout, read).await {
                Ok(Ok(status)) if status.success() => rec.ok = true,
                Ok(Ok(status)) => notes.push(format!("grow.sh exited {status}")),
                Ok(Err(e)) => notes.push(format!("grow.sh: {e}")),
                Err(_) => notes.push(format!("grow.sh still running after {timeout:?}")),
            }
        }
    }
    rec.total_s = started.elapsed().as_secs_f64();
    rec.end_ms = ctx.stats.ms(Instant::now());
    ctx.api.outage.end();
    if rec.ok && rec.phases.is_none() {
        notes.push("grow.sh printed no timings".into());
    }
    if !notes.is_empty() {
        rec.note = Some(notes.join("; "));
    }
    eprintln!("grow: {}", rec.outcome());
    Some(rec)
}

impl GrowRecord {
    /// `done in 20.1 s`, or `FAILED in 20.1 s (why)`: as the log, the report and the invariant
    /// row say it.
    pub fn outcome(&self) -> String {
        format!(
            "{} in {:.1} s{}",
            if self.ok { "done" } else { "FAILED" },
            self.total_s,
            self.note
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        )
    }

    /// The order figures, from `visible` (`(intended start, seen)` ms of every order seen
    /// AWAITING_PAYMENT).
    pub fn orders(&mut self, visible: &[(u64, u64)]) {
        let during: Vec<&(u64, u64)> = visible
            .iter()
            .filter(|(placed, _)| (self.at_ms..self.end_ms).contains(placed))
            .collect();
        self.orders_during = during.len() as u64;
        self.longest_order_wait_s = during
            .iter()
            .map(|(placed, seen)| seen - placed)
            .max()
            .map(|ms| ms as f64 / 1000.0);
        self.first_visible_after_s = visible
            .iter()
            .filter(|(_, seen)| *seen >= self.end_ms)
            .map(|(_, seen)| seen - self.end_ms)
            .min()
            .map(|ms| ms as f64 / 1000.0);
    }
}

/// The invariant rows of a grow: it ran and succeeded, and every topic of the shop's catalogue
/// has the new count (read from the broker).
pub fn rows(ctx: &Ctx, rec: Option<&GrowRecord>) -> Vec<Row> {
    let Some(to) = ctx.cli.grow_to else {
        return Vec::new();
    };
    let mut rows = vec![Row {
        name: format!("grown to {to} partitions under load"),
        expected: format!(
            "scripts/grow.sh at {} s succeeded",
            ctx.cli.grow_at.unwrap_or(0)
        ),
        actual: rec.map_or_else(
            || "not run (the load ended first)".into(),
            GrowRecord::outcome,
        ),
        ok: rec.is_some_and(|r| r.ok),
    }];
    let topics = pickple_topics::catalogue(&ctx.cli.topic_prefix);
    let actual = match pickple_topics::partition_counts(&ctx.cli.brokers) {
        Err(e) => Err(format!("metadata from {}: {e}", ctx.cli.brokers)),
        Ok(counts) => {
            // 0 for a topic the broker does not have.
            let off: Vec<String> = topics
                .iter()
                .map(|t| (t, counts.get(&t.name).copied().unwrap_or(0)))
                .filter(|(_, n)| *n != to)
                .map(|(t, n)| format!("{} has {n}", t.name))
                .collect();
            Ok((topics.len(), off))
        }
    };
    rows.push(Row {
        name: "every topic has the grown count".into(),
        expected: format!("{} topics with {to} partitions", topics.len()),
        ok: matches!(&actual, Ok((_, off)) if off.is_empty()),
        actual: match actual {
            Err(e) => e,
            Ok((n, off)) if off.is_empty() => format!("{n} topics with {to}"),
            Ok((_, off)) => off.join(", "),
        },
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_sh_and_pickple_grow_output_is_read() {
        let p = parse_timings(
            "timings gateway_s=0.41 drain_s=3.02 stop_s=1.50 grow_s=9.80 start_s=25.10 down_s=39.83 attempts=2",
        )
        .unwrap();
        assert_eq!(p.attempts, 2);
        assert_eq!((p.drain_s, p.grow_s, p.down_s), (3.02, 9.8, 39.83));
        assert!(parse_timings("grow: stopping the gateway").is_none());
        assert_eq!(
            parse_moved("stock/products: 120 entries, 57 moved, 0 copied"),
            Some(StoreMoved {
                app: "stock".into(),
                store: "products".into(),
                entries: 120,
                moved: 57,
                copied: 0
            })
        );
        assert!(parse_moved("37 topics grown from 6 to 12 partitions").is_none());
        assert!(parse_moved(
            "start the applications again: every process reads the partition count at start"
        )
        .is_none());
    }
}
