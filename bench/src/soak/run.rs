//! One run: setup, the load with its companions (vendor managers, flash sale, churn, chaos,
//! progress), the drain, the wait for quiet, the invariants and the report.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::api::{Api, Session};
use crate::chaos::{self, KillRecord};
use crate::cli::{Cli, Mix, Target};
use crate::ctx::Ctx;
use crate::grow::{self, GrowRecord};
use crate::invariants::{self, OrderFacts, ProductFacts, Row};
use crate::ledger::Ledger;
use crate::load;
use crate::maildir::Maildir;
use crate::report::{Anomaly, Http, Latencies, MaxMode, QuietReport, Report};
use crate::setup::{epoch_ms, setup};
use crate::stats::{first_after, summary, Stats};
use crate::views::{wait_quiet, Reader};
use crate::{flash_sale, vendor};

/// Anomalies that are refusals of a valid delivery sequence (an invariant, not just a note).
const DELIVERY_REFUSALS: &[&str] = &[
    "start of a PENDING delivery refused",
    "end right after an accepted start refused",
    "end of an IN_TRANSIT delivery refused",
    "detail on an IN_TRANSIT delivery refused",
];

/// Ok(true) when every invariant holds.
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    let mix = Mix::parse(&cli.mix).map_err(|e| anyhow!("--mix: {e}"))?;
    let targets = if cli.chaos {
        Target::parse_list(&cli.chaos_targets).map_err(|e| anyhow!("--chaos-targets: {e}"))?
    } else {
        Vec::new()
    };
    if cli.max.is_none() && (cli.rate.is_nan() || cli.rate <= 0.0) {
        anyhow::bail!("--rate must be positive (or give --max)");
    }
    if cli.duration == 0 {
        anyhow::bail!("--duration must be at least 1 second");
    }
    if !targets.is_empty() {
        chaos::preflight(&cli, &targets)
            .await
            .map_err(|e| anyhow!(e))?;
    }
    let seed = cli.seed.unwrap_or_else(|| rand::rng().random());
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..4].to_string();
    eprintln!(
        "pickple-soak: seed {seed} (replay the random choices with --seed {seed}); run {run_tag}; gateway {}",
        cli.url
    );
    let t0 = Instant::now();
    let stats = Arc::new(Stats::new(t0));
    let api = Arc::new(
        Api::new(
            &cli.url,
            stats.clone(),
            cli.retries,
            cli.http_timeout(),
            cli.poll_wait,
            Duration::from_secs(cli.visible_timeout),
        )?
        .with_mail(
            &cli.maildir(),
            Duration::from_secs(cli.confirm_mail_timeout),
        ),
    );
    let ledger = Ledger::default();
    let password = format!("soak-{run_tag}-password");
    let mut rng = StdRng::seed_from_u64(seed);
    let world = setup(&cli, &api, &ledger, &run_tag, &password, &mut rng).await?;
    let setup_s = t0.elapsed().as_secs_f64();
    eprintln!("setup done in {setup_s:.1} s");

    let (senders, receivers): (Vec<_>, Vec<_>) = world
        .managers
        .iter()
        .map(|_| mpsc::unbounded_channel::<String>())
        .unzip();
    let duration = Duration::from_secs(cli.duration);
    let ctx = Arc::new(Ctx {
        inflight: Arc::new(Semaphore::new(cli.max_inflight.max(1))),
        cli: cli.clone(),
        api: api.clone(),
        stats: stats.clone(),
        ledger,
        mix,
        seed,
        run: run_tag.clone(),
        password,
        master: world.master,
        managers: world.managers,
        products: world.products,
        flash_product: world.flash_product,
        flash_opens_at: world.flash_opens_at,
        buyers: RwLock::new(world.buyers),
        flash_buyers: world.flash_buyers,
        ship_queues: Mutex::new(Some(senders)),
        stopping: AtomicBool::new(false),
        seq: AtomicU64::new(0),
        recovering: Mutex::new(HashSet::new()),
    });

    let mut managers = JoinSet::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        managers.spawn(vendor::manager_loop(ctx.clone(), i, rx));
    }
    let start = Instant::now();
    let end = start + duration;
    let done = Arc::new(AtomicBool::new(false));
    let progress = tokio::spawn(load::progress(ctx.clone(), start, done.clone()));
    let churn = tokio::spawn(load::churn(ctx.clone()));
    let chaos =
        (!targets.is_empty()).then(|| tokio::spawn(chaos::run(ctx.clone(), targets, start)));
    let flash = tokio::spawn(flash_sale::run(ctx.clone(), end));
    let grow = match (cli.grow_at, cli.grow_to) {
        (Some(at), Some(to)) => Some(tokio::spawn(grow::run(
            ctx.clone(),
            start,
            Duration::from_secs(at),
            to,
        ))),
        _ => None,
    };
    let steps = match cli.max {
        Some(_) => Some(load::closed_loop(ctx.clone(), start, duration).await),
        None => {
            load::open_loop(ctx.clone(), start, duration).await;
            None
        }
    };
    tokio::time::sleep_until(end.into()).await;
    ctx.stopping.store(true, Ordering::Relaxed);
    eprintln!(
        "load over after {:.1} s: draining",
        start.elapsed().as_secs_f64()
    );

    let mut kills: Vec<KillRecord> = match chaos {
        Some(h) => h.await.unwrap_or_default(),
        None => Vec::new(),
    };
    // A grow under way goes on to its end (the flows in flight wait for the gateway meanwhile).
    let mut grown: Option<GrowRecord> = match grow {
        Some(h) => h.await.ok().flatten(),
        None => None,
    };
    let drain = Duration::from_secs(cli.drain_timeout);
    let _ = tokio::time::timeout(drain, churn).await;
    let _ = tokio::time::timeout(drain, flash).await;
    if tokio::time::timeout(
        drain,
        ctx.inflight.acquire_many(cli.max_inflight.max(1) as u32),
    )
    .await
    .is_err()
    {
        eprintln!(
            "drain: {} order flows still running after {drain:?}",
            cli.max_inflight - ctx.inflight.available_permits()
        );
    }
    ctx.ship_queues.lock().unwrap().take();
    let managers_done = tokio::time::timeout(drain, async {
        while managers.join_next().await.is_some() {}
    })
    .await;
    if managers_done.is_err() {
        eprintln!("drain: deliveries still running after {drain:?}");
    }
    done.store(true, Ordering::Relaxed);
    progress.abort();
    let load_s = duration.as_secs_f64();
    eprintln!(
        "drained after {:.1} s; waiting for the shop to be quiet",
        start.elapsed().as_secs_f64()
    );

    // Per kill: when the load's requests and orders succeeded again.
    {
        let mut ok = stats.http.ok_at_ms.lock().unwrap().clone();
        ok.sort_unstable();
        let visible = stats.visible_at_ms.lock().unwrap().clone();
        if let Some(g) = &mut grown {
            g.orders(&visible);
        }
        for k in &mut kills {
            if k.target != "gateway" {
                k.api_ok_s = first_after(&ok, k.at_ms).map(|ms| ms as f64 / 1000.0);
            }
            k.pipeline_ok_s = visible
                .iter()
                .filter(|(placed, _)| *placed >= k.at_ms)
                .map(|(_, seen)| seen - k.at_ms)
                .min()
                .map(|ms| ms as f64 / 1000.0);
        }
    }

    let reader = Reader::connect(&ctx).await;
    let quiet = wait_quiet(&ctx, &reader).await;
    eprintln!(
        "quiet: {} after {:.1} s ({})",
        quiet.quiet, quiet.waited_s, quiet.note
    );
    let mut rows = check(&ctx, &reader, &quiet, &kills).await;
    rows.extend(grow::rows(&ctx, grown.as_ref()));
    let ok = rows.iter().all(|r| r.ok);

    let (answers, good) = stats.http.non_5xx();
    let anomalies = stats
        .anomalies
        .lock()
        .unwrap()
        .iter()
        .map(|(k, (n, e))| {
            (
                k.clone(),
                Anomaly {
                    count: *n,
                    examples: e.clone(),
                },
            )
        })
        .collect();
    let offered = Stats::get(&stats.offered);
    let accepted = Stats::get(&stats.accepted);
    let visible = Stats::get(&stats.visible);
    let report = Report {
        seed,
        run: run_tag,
        url: cli.url.clone(),
        mode: match cli.max {
            Some(n) => format!("closed loop up to {n} buyers"),
            None => format!("open loop at {} orders/s", cli.rate),
        },
        duration_s: cli.duration,
        setup_s,
        offered,
        offered_per_s: offered as f64 / load_s,
        accepted,
        accepted_per_s: accepted as f64 / load_s,
        visible,
        visible_per_s: visible as f64 / load_s,
        paid: Stats::get(&stats.paid),
        rejected: Stats::get(&stats.rejected),
        place_failed: Stats::get(&stats.place_failed),
        not_offered: Stats::get(&stats.not_offered),
        latency_ms: Latencies {
            accept: summary(&stats.accept.lock().unwrap()),
            awaiting_payment_visible: summary(&stats.visible_lat.lock().unwrap()),
            paid_visible: summary(&stats.paid_lat.lock().unwrap()),
        },
        http: Http {
            answers,
            non_5xx_share: if answers == 0 {
                1.0
            } else {
                good as f64 / answers as f64
            },
            status_counts: stats.http.counts.lock().unwrap().clone(),
            long_poll_timeouts: stats.http.long_poll_timeouts.load(Ordering::Relaxed),
        },
        max: steps.map(|steps| MaxMode {
            sustainable_per_s: load::sustainable(&steps, cli.slo_ms as f64, 0.01),
            steps,
            slo_p99_ms: cli.slo_ms,
        }),
        kills,
        grow: grown,
        outcomes: stats.outcomes.lock().unwrap().clone(),
        anomalies,
        quiet: QuietReport {
            quiet: quiet.quiet,
            waited_s: quiet.waited_s,
            note: quiet.note.clone(),
            views_read_from: reader.describe(),
        },
        invariants: rows,
        ok,
    };
    report.print();
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    Ok(ok)
}

/// The invariant table.
async fn check(
    ctx: &Ctx,
    reader: &Reader,
    quiet: &crate::views::Quiet,
    kills: &[KillRecord],
) -> Vec<Row> {
    let mut rows = vec![Row {
        name: "shop quiet at the end".into(),
        expected: format!("within {} s", ctx.cli.quiet_timeout),
        actual: format!(
            "{} after {:.1} s: {}",
            quiet.quiet, quiet.waited_s, quiet.note
        ),
        ok: quiet.quiet,
    }];
    let records = ctx.ledger.orders.lock().unwrap().clone();
    let mut facts = Vec::new();
    let mut missing = Vec::new();
    for (id, rec) in &records {
        match quiet.orders.get(id) {
            Some(v) => facts.push(OrderFacts::from_view(
                v,
                rec.action,
                rec.start_sent,
                rec.end_sent,
            )),
            None => missing.push(id.clone()),
        }
    }
    let products: Vec<ProductFacts> = ctx
        .ledger
        .products
        .lock()
        .unwrap()
        .iter()
        .map(|p| {
            let view = quiet.products.get(&p.product_id);
            ProductFacts {
                product_id: p.product_id.clone(),
                stock: view.and_then(ProductFacts::stock_from_view),
                driver_initial: p.initial,
                driver_added: p.added,
                driver_added_unsure: p.added_unsure,
                sale: p.sale,
                sale_taken: view.and_then(|v| v["sale"]["taken"].as_u64()),
            }
        })
        .collect();
    rows.extend(invariants::orders(&facts, &missing, epoch_ms()));
    let placed: Vec<invariants::Placement> = records
        .values()
        .map(|r| (r.order_id.clone(), r.username.clone(), r.lines.clone()))
        .collect();
    rows.push(invariants::as_placed(&placed, &facts));
    rows.extend(invariants::stock(&products, &facts));
    rows.extend(invariants::sale(&products, &facts));

    let users = ctx.ledger.users.lock().unwrap().clone();
    let sessions: HashMap<String, Arc<Session>> = ctx
        .buyers
        .read()
        .unwrap()
        .iter()
        .chain(ctx.flash_buyers.iter())
        .map(|s| (s.username.clone(), s.clone()))
        .collect();
    let keys = ctx.ledger.keys.lock().unwrap().clone();
    match reader.orders_per_user(&users, &sessions).await {
        Ok(per_user) => rows.extend(invariants::idempotency(&keys, &per_user)),
        Err(e) => rows.push(Row {
            name: "orders per user = keys used".into(),
            expected: "readable".into(),
            actual: e,
            ok: false,
        }),
    }

    // Mails: wait for the expected ones while they keep arriving (bounded: no new one for
    // --mail-timeout s, or ten times that in all).
    let mut maildir = Maildir::new(&ctx.cli.maildir());
    let expected: Vec<String> = facts.iter().flat_map(invariants::expected_mails).collect();
    // ... and the sign-ups' confirmation mails (found by address: their ids hold the user id).
    let sign_ups = ctx.ledger.sign_ups.lock().unwrap().clone();
    let confirmations: Vec<&crate::ledger::SignUpRec> =
        sign_ups.iter().filter(|s| s.accepted).collect();
    let expected_total = expected.len() + confirmations.len();
    let patience = Duration::from_secs(ctx.cli.mail_timeout);
    let started = Instant::now();
    let hard = started + patience * 10;
    let mut scan_error = None;
    let (mut first_present, mut last_present) = (None, 0);
    let mut progress = Instant::now();
    let mut printed = Instant::now();
    let mut missing;
    loop {
        if let Err(e) = maildir.scan() {
            scan_error = Some(e.to_string());
        }
        let counts = maildir.counts();
        let found = maildir.confirmations();
        missing = expected
            .iter()
            .filter(|id| !counts.contains_key(*id))
            .count()
            + confirmations
                .iter()
                .filter(|s| invariants::confirmations_of(&s.email, s.sent_at_ms, &found).is_empty())
                .count();
        let present = expected_total - missing;
        first_present.get_or_insert(present);
        if present > last_present {
            last_present = present;
            progress = Instant::now();
        }
        let now = Instant::now();
        if missing == 0 || now - progress >= patience || now >= hard {
            break;
        }
        if now - printed >= Duration::from_secs(10) {
            printed = now;
            eprintln!("mail: {present} of {expected_total} expected mails in the maildir");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let waited = started.elapsed().as_secs_f64();
    let arrived = last_present - first_present.unwrap_or(0);
    let mail_note = format!(
        "waited {waited:.0} s for mails, {arrived} arrived meanwhile ({:.1}/s)",
        arrived as f64 / waited.max(1.0)
    );
    if missing > 0 {
        eprintln!("mail: {missing} of {expected_total} mails not in the maildir; {mail_note}");
    }
    rows.push(Row {
        name: "maildir readable".into(),
        expected: ctx.cli.maildir().display().to_string(),
        actual: match (&scan_error, maildir.exists()) {
            (Some(e), _) => e.clone(),
            (None, false) => "no new/ nor cur/".into(),
            (None, true) => format!("ok; {mail_note}"),
        },
        ok: scan_error.is_none() && maildir.exists(),
    });
    let notification_kills = kills.iter().filter(|k| k.target == "notification").count() as u64;
    // A notification process that ended for another reason (a producer made fatal by a broker
    // outage longer than the transaction timeout) is a crash too: its supervisor says so.
    let notification_restarts =
        invariants::supervised_restarts(&ctx.cli.work.join("logs"), "notification");
    rows.extend(invariants::mails(
        &facts,
        &maildir.counts(),
        notification_kills.max(notification_restarts),
        notification_kills,
    ));
    let usernames: Vec<String> = sign_ups.iter().map(|s| s.username.clone()).collect();
    match reader.views("user", &usernames).await {
        Ok(views) => {
            let statuses: HashMap<String, String> = views
                .iter()
                .map(|(u, v)| (u.clone(), crate::api::status_of(v).to_string()))
                .collect();
            rows.extend(invariants::sign_ups(
                &sign_ups,
                &statuses,
                &maildir.confirmations(),
            ));
        }
        Err(e) => rows.push(Row {
            name: "ACTIVE only once confirmed".into(),
            expected: "user views readable".into(),
            actual: e,
            ok: false,
        }),
    }

    let anomalies = ctx.stats.anomalies.lock().unwrap();
    let refused: Vec<String> = DELIVERY_REFUSALS
        .iter()
        .filter_map(|name| anomalies.get(*name).map(|(n, _)| format!("{name}: {n}")))
        .collect();
    rows.push(Row {
        name: "valid delivery sequences accepted".into(),
        expected: "start, detail, end (also end right after start) answered 202".into(),
        actual: if refused.is_empty() {
            "all accepted".into()
        } else {
            refused.join("; ")
        },
        ok: refused.is_empty(),
    });
    rows
}
