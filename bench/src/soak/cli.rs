//! Command line of `pickple-soak`, and the parsing of its lists (action mix, chaos targets).

use pickple_topics::APPS;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pickple-soak",
    about = "Load and fault driver for a running Pickple shop; checks invariants at the end"
)]
pub struct Cli {
    /// Base URL of the gateway (only this host is ever contacted, besides 127.0.0.1 metrics).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The shop's run directory (up.sh's PICKPLE_RUN_DIR): pidfiles (`pids/NAME.pid`) and
    /// `master.password`.
    #[arg(long, default_value = ".work")]
    pub work: PathBuf,
    /// The local servers' directory (PICKPLE_WORK): `kafka/pid`, `redis/redis.pid`, `mail/`
    /// (default: --work).
    #[arg(long)]
    pub services_work: Option<PathBuf>,
    /// Username of the MASTER account.
    #[arg(long, default_value = "master")]
    pub master_user: String,
    /// Password of the MASTER (default: the contents of `$WORK/master.password`).
    #[arg(long)]
    pub master_password: Option<String>,
    /// Seconds of load.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Open loop: orders offered per second (ignored with --max).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Closed loop: ramp up to this many concurrent buyers, each as fast as it can, and report
    /// the sustainable rate.
    #[arg(long)]
    pub max: Option<usize>,
    /// Closed loop: number of ramp steps (each lasts duration/steps).
    #[arg(long, default_value_t = 4)]
    pub ramp_steps: usize,
    /// Closed loop: a step is sustainable while p99 of place -> AWAITING_PAYMENT stays under
    /// this (ms) and at most 1% of its orders fail.
    #[arg(long, default_value_t = 3000)]
    pub slo_ms: u64,
    /// Seed of every random choice (printed at start; give it again to replay the choices).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual buyers signed up at setup.
    #[arg(long, default_value_t = 40)]
    pub buyers: usize,
    /// Vendor managers (one vendor each).
    #[arg(long, default_value_t = 3)]
    pub vendors: usize,
    /// Products per vendor (besides the flash-sale product).
    #[arg(long, default_value_t = 3)]
    pub products_per_vendor: usize,
    /// Stock each product starts with.
    #[arg(long, default_value_t = 5000)]
    pub initial_stock: u64,
    /// A vendor adds this much stock when a product's available stock falls below it.
    #[arg(long, default_value_t = 500)]
    pub restock: u64,
    /// What a buyer does once the order awaits payment, as NAME=WEIGHT pairs. Names: approve,
    /// decline (declined, then cancels), retry (declined, then approved), late (pays after
    /// --late-secs), cancel, cancel-paid (pays, then cancels), abandon (never pays).
    #[arg(
        long,
        default_value = "approve=55,decline=8,retry=7,late=5,cancel=10,cancel-paid=5,abandon=10"
    )]
    pub mix: String,
    /// "late" buyers pay this many seconds after the order awaits payment (the shop's payment
    /// timeout is PICKPLE_PAYMENT_TIMEOUT_MS, 5 minutes by default).
    #[arg(long, default_value_t = 10)]
    pub late_secs: u64,
    /// Share of paid orders the vendor managers ship (start ... end); the rest stay PAID.
    #[arg(long, default_value_t = 0.8)]
    pub ship_share: f64,
    /// Share of shipped orders whose delivery is ended right after its start (no wait between).
    #[arg(long, default_value_t = 0.3)]
    pub immediate_end_share: f64,
    /// Share of shipped orders only started (they stay SHIPPING).
    #[arg(long, default_value_t = 0.1)]
    pub start_only_share: f64,
    /// Flash sale: units on sale.
    #[arg(long, default_value_t = 20)]
    pub flash_quantity: u64,
    /// Flash sale: units one user may buy.
    #[arg(long, default_value_t = 2)]
    pub flash_limit: u64,
    /// Flash sale: buyers hammering the sale product (0: no flash sale).
    #[arg(long, default_value_t = 15)]
    pub flash_buyers: usize,
    /// Flash sale: orders each flash buyer places.
    #[arg(long, default_value_t = 12)]
    pub flash_orders: usize,
    /// Flash sale: seconds between the end of setup and the opening (flash buyers start half a
    /// second before it).
    #[arg(long, default_value_t = 5)]
    pub flash_open_delay: u64,
    /// A new buyer signs up and a vendor is renamed this often (seconds; 0: never), so the
    /// users and catalog processors have work (and commits) during the load.
    #[arg(long, default_value_t = 3)]
    pub churn_every: u64,
    /// Kill processes while the load runs.
    #[arg(long)]
    pub chaos: bool,
    /// What chaos may kill: users,catalog,stock,order,payment,delivery,notification,views,
    /// gateway,kafka,redis, and broker1,broker2,broker3 of the local cluster (the shop running
    /// on it: `eval "$(scripts/kafka.sh cluster env)"`).
    #[arg(
        long,
        default_value = "users,catalog,stock,order,payment,delivery,notification,views,gateway"
    )]
    pub chaos_targets: String,
    /// Seconds between kills.
    #[arg(long, default_value_t = 15)]
    pub chaos_every: u64,
    /// Grow the shop's partitions this many seconds into the load (with --grow-to): runs
    /// `scripts/grow.sh` (from --scripts) in the soak's environment while the load goes on. The
    /// gateway is down meanwhile: requests keep retrying, chaos kills nothing.
    #[arg(long, requires = "grow_to")]
    pub grow_at: Option<u64>,
    /// The partition count to grow to: a multiple of the current one.
    #[arg(long, requires = "grow_at")]
    pub grow_to: Option<i32>,
    /// Longest run of scripts/grow.sh (seconds).
    #[arg(long, default_value_t = 900)]
    pub grow_timeout: u64,
    /// Bootstrap servers of the shop's broker (to check the topics' partition counts).
    #[arg(long, env = "PICKPLE_BROKERS", default_value = "127.0.0.1:19092")]
    pub brokers: String,
    /// Prefix of the shop's topic names.
    #[arg(long, env = "PICKPLE_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,
    /// Port of the first processor's /metrics (users; the others follow in the order users,
    /// catalog, stock, order, payment, delivery, notification, views).
    #[arg(long, default_value_t = 9101)]
    pub metrics_base_port: u16,
    /// Where kafka.sh and services.sh are (to restart a killed broker or Redis).
    #[arg(long, default_value = "scripts")]
    pub scripts: PathBuf,
    /// Seconds a killed broker or Redis stays down before it is restarted.
    #[arg(long, default_value_t = 3)]
    pub broker_down_secs: u64,
    /// Longest wait for a killed process to be back (new pid, first commit, API answering).
    #[arg(long, default_value_t = 120)]
    pub recovery_timeout: u64,
    /// Redis of the views (read directly at the end; falls back to the API as MASTER).
    #[arg(
        long,
        env = "PICKPLE_REDIS_URL",
        default_value = "redis://127.0.0.1:16379"
    )]
    pub redis_url: String,
    /// Key prefix of the views in Redis.
    #[arg(long, env = "PICKPLE_REDIS_PREFIX", default_value = "pickple:")]
    pub redis_prefix: String,
    /// Read the views at the end through the API only (never Redis).
    #[arg(long)]
    pub views_via_api: bool,
    /// The SMTP sink's maildir (default: `mail/` in --services-work).
    #[arg(long)]
    pub maildir: Option<PathBuf>,
    /// Longest wait for a sign-up's confirmation mail in the maildir (seconds): the account is
    /// ACTIVE only once the mailed code is sent back.
    #[arg(long, default_value_t = 60)]
    pub confirm_mail_timeout: u64,
    /// HTTP attempts per request (retries after timeouts, 5xx and connection errors).
    #[arg(long, default_value_t = 8)]
    pub retries: u32,
    /// Timeout of one HTTP request (seconds; long-polls get their wait on top).
    #[arg(long, default_value_t = 10)]
    pub http_timeout: u64,
    /// `?wait=` of the long-polls (seconds; the gateway caps it at 30).
    #[arg(long, default_value_t = 20)]
    pub poll_wait: u64,
    /// Longest wait for one thing to become visible (an order, a status) before giving up.
    #[arg(long, default_value_t = 120)]
    pub visible_timeout: u64,
    /// Open loop: orders in flight at most (more are counted as not offered).
    #[arg(long, default_value_t = 5000)]
    pub max_inflight: usize,
    /// After the load: longest wait for the flows in flight to finish.
    #[arg(long, default_value_t = 120)]
    pub drain_timeout: u64,
    /// The shop is quiet when no order or product view changed for this long (seconds).
    #[arg(long, default_value_t = 6)]
    pub quiet_secs: u64,
    /// Longest wait for the shop to be quiet (and for abandoned orders about to expire).
    #[arg(long, default_value_t = 180)]
    pub quiet_timeout: u64,
    /// After quiet, wait for the expected mails until none arrived for this long (seconds; ten
    /// times this at most in all).
    #[arg(long, default_value_t = 30)]
    pub mail_timeout: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    pub progress_every: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Cli {
    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout.max(1))
    }

    pub fn services_work(&self) -> PathBuf {
        self.services_work
            .clone()
            .unwrap_or_else(|| self.work.clone())
    }

    pub fn maildir(&self) -> PathBuf {
        self.maildir
            .clone()
            .unwrap_or_else(|| self.services_work().join("mail"))
    }

    pub fn master_password(&self) -> anyhow::Result<String> {
        if let Some(p) = &self.master_password {
            return Ok(p.clone());
        }
        let file = self.work.join("master.password");
        match std::fs::read_to_string(&file) {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Ok(_) => anyhow::bail!("{} is empty: give --master-password", file.display()),
            Err(e) => anyhow::bail!(
                "no MASTER password: --master-password not given and {} unreadable ({e}); \
                 the stack must be started with a MASTER account (scripts/up.sh writes that file)",
                file.display()
            ),
        }
    }
}

/// What a buyer does with an order awaiting payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Pays with a token the fake provider approves.
    Approve,
    /// Pays with `tok_decline`, then cancels.
    Decline,
    /// Pays with `tok_decline`, then again with an approving token.
    Retry,
    /// Pays (approving token) after `--late-secs`.
    Late,
    /// Cancels without paying.
    Cancel,
    /// Pays, then cancels the paid order (the delivery processor decides).
    CancelPaid,
    /// Never pays: the order processor expires it after its payment timeout.
    Abandon,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Approve,
        Action::Decline,
        Action::Retry,
        Action::Late,
        Action::Cancel,
        Action::CancelPaid,
        Action::Abandon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Decline => "decline",
            Action::Retry => "retry",
            Action::Late => "late",
            Action::Cancel => "cancel",
            Action::CancelPaid => "cancel-paid",
            Action::Abandon => "abandon",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// A weighted choice of actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    weights: Vec<(Action, u32)>,
    total: u32,
}

impl Mix {
    /// `approve=60,decline=10,...`; missing actions weigh 0; at least one weight must be > 0.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not NAME=WEIGHT"))?;
            let action = Action::parse(name.trim())
                .ok_or_else(|| format!("unknown action '{}'", name.trim()))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("weight of '{}' is not a number", name.trim()))?;
            if weights.iter().any(|(a, _)| *a == action) {
                return Err(format!("'{}' given twice", action.name()));
            }
            weights.push((action, w));
        }
        let total: u32 = weights.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        Ok(Mix { weights, total })
    }

    /// The action for a uniform draw `r` in [0, 1).
    pub fn pick(&self, r: f64) -> Action {
        let mut x = (r.clamp(0.0, 0.999_999_999) * self.total as f64) as u32;
        for (a, w) in &self.weights {
            if x < *w {
                return *a;
            }
            x -= w;
        }
        self.weights
            .iter()
            .rev()
            .find(|(_, w)| *w > 0)
            .map(|(a, _)| *a)
            .unwrap_or(Action::Approve)
    }
}

/// What chaos may kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A processor: an index into the catalogue's [`APPS`], the order in which scripts/up.sh
    /// gives them metrics ports.
    Processor(usize),
    Gateway,
    Kafka,
    Redis,
    /// Broker N (1-3) of the local three-broker cluster (`scripts/kafka.sh cluster`).
    ClusterBroker(u8),
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Processor(i) => APPS[i].name,
            Target::Gateway => "gateway",
            Target::Kafka => "kafka",
            Target::Redis => "redis",
            Target::ClusterBroker(1) => "broker1",
            Target::ClusterBroker(2) => "broker2",
            Target::ClusterBroker(_) => "broker3",
        }
    }

    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "gateway" => Some(Target::Gateway),
            "kafka" => Some(Target::Kafka),
            "redis" => Some(Target::Redis),
            "broker1" => Some(Target::ClusterBroker(1)),
            "broker2" => Some(Target::ClusterBroker(2)),
            "broker3" => Some(Target::ClusterBroker(3)),
            _ => APPS.iter().position(|p| p.name == s).map(Target::Processor),
        }
    }

    pub fn parse_list(s: &str) -> Result<Vec<Target>, String> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let t = Target::parse(name).ok_or_else(|| format!("unknown chaos target '{name}'"))?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err("no chaos target".into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let m = Mix::parse("approve=3, cancel=1").unwrap();
        assert_eq!(m.pick(0.0), Action::Approve);
        assert_eq!(m.pick(0.74), Action::Approve);
        assert_eq!(m.pick(0.75), Action::Cancel);
        assert_eq!(m.pick(0.9999), Action::Cancel);
        // The draws land in proportion to the weights.
        let n = 10_000;
        let cancels = (0..n)
            .filter(|i| m.pick(*i as f64 / n as f64) == Action::Cancel)
            .count();
        assert_eq!(cancels, 2_500);
        assert!(Mix::parse("approve=0").is_err());
        assert!(Mix::parse("pay=1").is_err());
        assert!(Mix::parse("approve=1,approve=2").is_err());
        assert!(Mix::parse("approve").is_err());
        let zero_first = Mix::parse("approve=0,abandon=5").unwrap();
        assert_eq!(zero_first.pick(0.0), Action::Abandon);
    }

    #[test]
    fn default_mix_and_targets_parse() {
        let cli = Cli::parse_from(["pickple-soak"]);
        Mix::parse(&cli.mix).unwrap();
        let t = Target::parse_list(&cli.chaos_targets).unwrap();
        assert_eq!(t.len(), 9);
        assert!(!t.contains(&Target::Kafka) && !t.contains(&Target::Redis));
        assert_eq!(Target::parse("views"), Some(Target::Processor(7)));
        assert!(Target::parse_list("order,bogus").is_err());
        let brokers = Target::parse_list("broker1,broker3").unwrap();
        assert_eq!(
            brokers,
            vec![Target::ClusterBroker(1), Target::ClusterBroker(3)]
        );
        assert_eq!(brokers[1].name(), "broker3");
        assert!(Target::parse("broker4").is_none());
    }
}
