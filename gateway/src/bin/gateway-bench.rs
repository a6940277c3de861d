//! `gateway-bench`: N concurrent clients place orders against a running gateway for a while,
//! then it prints the accepted order commands per second and the accept latency; with
//! `--until-visible` (processors running) also p50/p99 of place -> AWAITING_PAYMENT visible
//! through `GET /api/v1/orders/{id}?wait=`.
//!
//! Against the gateway alone (no processors, no views sink): start the gateway with
//! `PICKPLE_VIEWS_IGNORE_READINESS=true` and run the bench with `--seed`, which writes an ACTIVE
//! user view for the bench user into Redis (the users processor would do that on sign-up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pickple_schemas::Role;
use pickple_view_model::{apply_upsert, upsert_for, Kind, RedisConfig, UPSERT_LUA};
use serde_json::{json, Value};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(about = "Load generator for the Pickple gateway")]
struct Cli {
    /// Base URL of the gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// User to sign in as.
    #[arg(long, default_value = "bench1")]
    username: String,
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// Write an ACTIVE user view for the bench user into Redis first (gateway-alone mode).
    #[arg(long)]
    seed: bool,
    #[command(flatten)]
    redis: RedisConfig,
    /// Product to order (one unit per order); with processors running it must exist with stock.
    #[arg(long, default_value = "bench-product")]
    product: String,
    /// Also wait for each order to reach AWAITING_PAYMENT (needs the processors and the sink).
    #[arg(long)]
    until_visible: bool,
}

#[derive(Default)]
struct Stats {
    accepted: u64,
    failed: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    accept_ms: Vec<f64>,
    visible_ms: Vec<f64>,
    not_visible: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn seed(cli: &Cli) -> anyhow::Result<()> {
    let hash = pickple_gateway::auth::hash_password(cli.password.clone())
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let view = json!({
        "username": cli.username, "nickname": "bench", "email": format!("{}@example.com", cli.username),
        "password_hash": hash, "role": Role::User, "status": "ACTIVE", "rejection": null,
        "updated_at": 0,
        // High enough not to be overwritten by a stale view, low enough for a real one to win.
        "version": 1_000_000
    });
    let keys = cli.redis.keys();
    let upsert = upsert_for(
        &keys,
        Kind::User,
        &cli.username,
        view.to_string().as_bytes(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut con = cli.redis.client()?.get_connection()?;
    apply_upsert(&mut con, &redis::Script::new(UPSERT_LUA), &keys, &upsert)?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.seed {
        seed(&cli).await?;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.clients)
        .timeout(Duration::from_secs(60))
        .build()?;
    let res = http
        .post(format!("{}/api/v1/auth/sign-in", cli.url))
        .json(&json!({"username": cli.username, "password": cli.password}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let Some(token) = body["access_token"].as_str().map(str::to_string) else {
        anyhow::bail!("sign-in failed ({status}): {body}; try --seed");
    };
    let token = Arc::new(token);
    let deadline = Instant::now() + Duration::from_secs(cli.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cli.clients {
        let http = http.clone();
        let token = token.clone();
        let url = cli.url.clone();
        let product = cli.product.clone();
        let until_visible = cli.until_visible;
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let body = json!({"lines": [{"product_id": product, "quantity": 1}]});
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let res = http
                    .post(format!("{url}/api/v1/orders"))
                    .bearer_auth(token.as_str())
                    .json(&body)
                    .send()
                    .await;
                let res = match res {
                    Ok(r) => r,
                    Err(_) => {
                        stats.failed += 1;
                        continue;
                    }
                };
                let code = res.status().as_u16();
                *stats.statuses.entry(code).or_default() += 1;
                let answer: Value = res.json().await.unwrap_or(Value::Null);
                if code != 202 {
                    stats.failed += 1;
                    continue;
                }
                stats.accepted += 1;
                stats.accept_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                if until_visible {
                    let id = answer["id"].as_str().unwrap_or_default();
                    let res = http
                        .get(format!(
                            "{url}/api/v1/orders/{id}?wait=30&status=AWAITING_PAYMENT"
                        ))
                        .bearer_auth(token.as_str())
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if v["status"] == "AWAITING_PAYMENT" {
                                stats.visible_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                            } else {
                                stats.not_visible += 1;
                            }
                        }
                        _ => stats.not_visible += 1,
                    }
                }
            }
            stats
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let s = t.await?;
        all.accepted += s.accepted;
        all.failed += s.failed;
        all.not_visible += s.not_visible;
        for (k, v) in s.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.accept_ms.extend(s.accept_ms);
        all.visible_ms.extend(s.visible_ms);
    }
    let secs = started.elapsed().as_secs_f64();
    all.accept_ms.sort_by(f64::total_cmp);
    all.visible_ms.sort_by(f64::total_cmp);
    println!("gateway-bench: {} clients, {:.1} s", cli.clients, secs);
    println!(
        "accepted order commands: {} ({:.0}/s), failed: {}, statuses: {:?}",
        all.accepted,
        all.accepted as f64 / secs,
        all.failed,
        all.statuses
    );
    println!(
        "accept latency ms: p50 {:.2} p99 {:.2}",
        percentile(&all.accept_ms, 0.50),
        percentile(&all.accept_ms, 0.99)
    );
    if cli.until_visible {
        println!(
            "place -> AWAITING_PAYMENT visible ms: p50 {:.1} p99 {:.1} ({} visible, {} not)",
            percentile(&all.visible_ms, 0.50),
            percentile(&all.visible_ms, 0.99),
            all.visible_ms.len(),
            all.not_visible
        );
    }
    Ok(())
}
