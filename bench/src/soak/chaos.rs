//! `--chaos`: every `--chaos-every` seconds, SIGKILL one process drawn (seeded RNG) from the
//! targets, and measure its recovery.
//!
//! Contract with the stack (scripts/up.sh): each process is supervised and `$WORK/pids/<name>.pid`
//! (`--work`, up.sh's run directory) holds the pid of the current one; the supervisor restarts a
//! killed process and rewrites the pidfile. Kafka (`kafka/pid`) and Redis (`redis/redis.pid`,
//! both in `--services-work`) and the cluster's brokers (`kafka-cluster/brokerN/pid`) are not
//! supervised: the driver restarts them with `kafka.sh start` / `kafka.sh cluster start N` /
//! `services.sh start` (PICKPLE_WORK=--services-work) after `--broker-down-secs`. A pid is killed only when its command line is the expected program's.
//!
//! Per kill: until the pidfile names a new live process; for a processor, until the new process
//! has committed a transaction (its `/metrics`, `pickple_commits_total{app=...} > 0`: the counter
//! starts at 0 in a new process); for the gateway, until `GET /health` answers. When the load's
//! requests and orders succeeded again is derived afterwards from the run's success times.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::cli::{Cli, Target};
use crate::ctx::Ctx;
use crate::stats::Stats;

#[derive(Debug, Clone, Serialize, Default)]
pub struct KillRecord {
    pub target: String,
    /// Seconds since the start of the load.
    pub at_s: f64,
    #[serde(skip)]
    pub at_ms: u64,
    pub pid: i32,
    pub new_pid: Option<i32>,
    /// Kill -> the pidfile names a new live process.
    pub restarted_s: Option<f64>,
    /// Kill -> the new process's first committed transaction (processors).
    pub first_commit_s: Option<f64>,
    /// Kill -> the API answered again: for the gateway `GET /health`, for the others the first
    /// 2xx of a load request after the kill.
    pub api_ok_s: Option<f64>,
    /// Kill -> the first order placed after the kill seen AWAITING_PAYMENT.
    pub pipeline_ok_s: Option<f64>,
    pub note: Option<String>,
}

/// Where the pid of a target is: `run/pids/NAME.pid` for the shop's processes, the servers'
/// `kafka/pid` and `redis/redis.pid`.
pub fn pidfile(run: &Path, services: &Path, t: Target) -> PathBuf {
    match t {
        Target::Kafka => services.join("kafka").join("pid"),
        Target::Redis => services.join("redis").join("redis.pid"),
        Target::ClusterBroker(n) => services
            .join("kafka-cluster")
            .join(format!("broker{n}"))
            .join("pid"),
        other => run.join("pids").join(format!("{}.pid", other.name())),
    }
}

fn pidfile_of(cli: &Cli, t: Target) -> PathBuf {
    pidfile(&cli.work, &cli.services_work(), t)
}

/// What the command line of the target's process must contain.
fn program(t: Target) -> &'static str {
    match t {
        Target::Processor(_) => "pickple-processor",
        Target::Gateway => "pickple-gateway",
        Target::Kafka | Target::ClusterBroker(_) => "kafka.Kafka",
        Target::Redis => "redis-server",
    }
}

pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 1)
}

pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// `pickple_commits_total` of `app` in a Prometheus text page (summed over its series).
pub fn commits(page: &str, app: &str) -> Option<f64> {
    let label = format!("app=\"{app}\"");
    let mut found = None;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("pickple_commits_total") else {
            continue;
        };
        if !rest.starts_with('{') || !rest.contains(&label) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.trim().parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// Before the run: every target has a live process of the right program in its pidfile, the
/// scripts to restart Kafka or Redis exist, and the processors' /metrics answer (a warning).
pub async fn preflight(cli: &Cli, targets: &[Target]) -> Result<(), String> {
    for t in targets {
        let path = pidfile_of(cli, *t);
        let pid = read_pid(&path).ok_or_else(|| {
            format!(
                "chaos target {}: no pid in {} (is the stack started with supervised processes, \
                 and --work right?)",
                t.name(),
                path.display()
            )
        })?;
        let cmd = cmdline(pid);
        if !alive(pid) || !cmd.contains(program(*t)) {
            return Err(format!(
                "chaos target {}: pid {pid} of {} is not a live {} ({cmd:?})",
                t.name(),
                path.display(),
                program(*t)
            ));
        }
        let script = match t {
            Target::Kafka | Target::ClusterBroker(_) => Some(cli.scripts.join("kafka.sh")),
            Target::Redis => Some(cli.scripts.join("services.sh")),
            _ => None,
        };
        if let Some(s) = script.filter(|s| !s.is_file()) {
            return Err(format!(
                "chaos target {}: no {} (--scripts)",
                t.name(),
                s.display()
            ));
        }
        if let Target::Processor(i) = t {
            let url = format!(
                "http://127.0.0.1:{}/metrics",
                cli.metrics_base_port as usize + i
            );
            let page = async { reqwest::get(&url).await?.text().await };
            match tokio::time::timeout(Duration::from_secs(3), page).await {
                Ok(Ok(p)) if p.contains("pickple_") => {}
                _ => eprintln!(
                    "chaos: warning: no pickple metrics at {url} (--metrics-base-port?): the first \
                     commit of {} after a kill will not be measured",
                    t.name()
                ),
            }
        }
    }
    Ok(())
}

/// Kill targets until the load stops; the kills with their recovery times.
pub async fn run(ctx: Arc<Ctx>, targets: Vec<Target>, load_start: Instant) -> Vec<KillRecord> {
    let kills: Arc<Mutex<Vec<KillRecord>>> = Arc::default();
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0xC4A0_5C4A_05C4_A05C);
    let mut monitors = JoinSet::new();
    let every = Duration::from_secs(ctx.cli.chaos_every.max(1));
    let mut next = Instant::now() + every;
    loop {
        while Instant::now() < next && !ctx.stopping() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if ctx.stopping() {
            break;
        }
        next += every;
        let target = *targets.choose(&mut rng).expect("at least one target");
        // Held until the kill is recorded: a grow starting meanwhile waits for its recovery.
        let mut recovering = ctx.recovering.lock().unwrap();
        if ctx.api.outage.active() {
            eprintln!("chaos: the shop is being grown; no kill");
            continue;
        }
        if recovering.contains(&target) {
            eprintln!("chaos: {} is still recovering; no kill", target.name());
            continue;
        }
        let path = pidfile_of(&ctx.cli, target);
        let Some(pid) = read_pid(&path) else {
            eprintln!("chaos: no pid in {}; no kill", path.display());
            continue;
        };
        let cmd = cmdline(pid);
        if !alive(pid) || !cmd.contains(program(target)) {
            eprintln!(
                "chaos: pid {pid} of {} is not a live {} ({cmd:?}); no kill",
                path.display(),
                program(target)
            );
            continue;
        }
        // SAFETY: kill(2) on a pid we just checked is the target's program.
        let r = unsafe { libc::kill(pid, libc::SIGKILL) };
        let at = Instant::now();
        if r != 0 {
            eprintln!(
                "chaos: kill {pid} ({}) failed: {}",
                target.name(),
                std::io::Error::last_os_error()
            );
            continue;
        }
        Stats::inc(&ctx.stats.kills);
        eprintln!("chaos: SIGKILL {} (pid {pid})", target.name());
        recovering.insert(target);
        drop(recovering);
        let (ctx, kills) = (ctx.clone(), kills.clone());
        monitors.spawn(async move {
            let rec = recover(&ctx, target, pid, at, load_start).await;
            eprintln!(
                "chaos: {} back: new pid {:?} after {}, first commit after {}, health after {}{}",
                rec.target,
                rec.new_pid,
                secs(rec.restarted_s),
                secs(rec.first_commit_s),
                secs(rec.api_ok_s),
                rec.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            kills.lock().unwrap().push(rec);
            ctx.recovering.lock().unwrap().remove(&target);
        });
    }
    while monitors.join_next().await.is_some() {}
    let mut out = kills.lock().unwrap().clone();
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out
}

fn secs(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2}s")).unwrap_or("-".into())
}

async fn recover(
    ctx: &Ctx,
    target: Target,
    pid: i32,
    at: Instant,
    load_start: Instant,
) -> KillRecord {
    let stats = &ctx.stats;
    let timeout = Duration::from_secs(ctx.cli.recovery_timeout);
    let deadline = at + timeout;
    let mut rec = KillRecord {
        target: target.name().into(),
        at_s: at.saturating_duration_since(load_start).as_secs_f64(),
        at_ms: stats.ms(at),
        pid,
        ..Default::default()
    };
    let mut notes = Vec::new();
    if matches!(
        target,
        Target::Kafka | Target::Redis | Target::ClusterBroker(_)
    ) {
        tokio::time::sleep(Duration::from_secs(ctx.cli.broker_down_secs)).await;
        let (script, args) = match target {
            Target::Kafka => (ctx.cli.scripts.join("kafka.sh"), vec!["start".to_string()]),
            Target::ClusterBroker(n) => (
                ctx.cli.scripts.join("kafka.sh"),
                vec!["cluster".into(), "start".into(), n.to_string()],
            ),
            _ => (ctx.cli.scripts.join("services.sh"), vec!["start".into()]),
        };
        let arg = args.join(" ");
        let services = ctx.cli.services_work();
        let work = std::fs::canonicalize(&services).unwrap_or(services);
        let run = tokio::process::Command::new(&script)
            .args(&args)
            .env("PICKPLE_WORK", &work)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => notes.push(format!("{} {arg} exited {s}", script.display())),
            Ok(Err(e)) => notes.push(format!("{} {arg}: {e}", script.display())),
            Err(_) => notes.push(format!("{} {arg} timed out", script.display())),
        }
    }
    // The supervisor (or the script) writes the new pid.
    let path = pidfile_of(&ctx.cli, target);
    loop {
        if let Some(p) = read_pid(&path).filter(|p| *p != pid && alive(*p)) {
            rec.new_pid = Some(p);
            rec.restarted_s = Some(at.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() >= deadline {
            notes.push(format!(
                "no new pid in {} within {timeout:?}",
                path.display()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    match target {
        Target::Processor(i) if rec.new_pid.is_some() => {
            let url = format!(
                "http://127.0.0.1:{}/metrics",
                ctx.cli.metrics_base_port as usize + i
            );
            let app = target.name();
            loop {
                if let Ok(r) = probe.get(&url).send().await {
                    if let Ok(page) = r.text().await {
                        if commits(&page, app).is_some_and(|c| c > 0.0) {
                            rec.first_commit_s = Some(at.elapsed().as_secs_f64());
                            break;
                        }
                    }
                }
                if Instant::now() >= deadline {
                    notes.push(format!("no commit on {url} within {timeout:?}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Target::Gateway => {
            let url = format!("{}/health", ctx.api.base());
            loop {
                if let Ok(r) = probe.get(&url).send().await {
                    if r.status().is_success() {
                        rec.api_ok_s = Some(at.elapsed().as_secs_f64());
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    notes.push(format!("{url} not answering within {timeout:?}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => {}
    }
    if !notes.is_empty() {
        rec.note = Some(notes.join("; "));
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_read_for_the_app_only() {
        let page = "# HELP pickple_commits_total Transactions committed\n\
                    # TYPE pickple_commits_total counter\n\
                    pickple_commits_total{app=\"order\"} 17\n\
                    pickple_commits_total{app=\"orderx\"} 5\n\
                    pickple_commit_latency_seconds_count{app=\"order\"} 99\n\
                    pickple_commits_total_other{app=\"order\"} 4\n";
        assert_eq!(commits(page, "order"), Some(17.0));
        assert_eq!(commits(page, "orderx"), Some(5.0));
        assert_eq!(commits(page, "stock"), None);
        assert_eq!(
            commits("pickple_commits_total{app=\"views\"} 0", "views"),
            Some(0.0)
        );
    }

    #[test]
    fn pidfiles_follow_the_contract() {
        let (w, s) = (Path::new("/w"), Path::new("/s"));
        assert_eq!(
            pidfile(w, s, Target::Gateway),
            Path::new("/w/pids/gateway.pid")
        );
        assert_eq!(
            pidfile(w, s, Target::Processor(3)),
            Path::new("/w/pids/order.pid")
        );
        assert_eq!(pidfile(w, s, Target::Kafka), Path::new("/s/kafka/pid"));
        assert_eq!(
            pidfile(w, s, Target::ClusterBroker(2)),
            Path::new("/s/kafka-cluster/broker2/pid")
        );
        assert_eq!(
            pidfile(w, s, Target::Redis),
            Path::new("/s/redis/redis.pid")
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.pid");
        std::fs::write(&f, "1234\n").unwrap();
        assert_eq!(read_pid(&f), Some(1234));
        std::fs::write(&f, "garbage").unwrap();
        assert_eq!(read_pid(&f), None);
        assert!(alive(std::process::id() as i32));
    }
}
