//! What every task of the run shares: the command line, the client, the counters, the ledger,
//! the sessions made at setup and the queues of the vendor managers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Semaphore};

use crate::api::{Api, Session};
use crate::cli::{Cli, Mix, Target};
use crate::ledger::Ledger;
use crate::stats::Stats;

/// A vendor manager and the vendor it owns.
pub struct Manager {
    pub session: Arc<Session>,
    pub vendor_id: String,
}

pub struct Ctx {
    pub cli: Cli,
    pub api: Arc<Api>,
    pub stats: Arc<Stats>,
    pub ledger: Ledger,
    pub mix: Mix,
    pub seed: u64,
    /// Random tag of this run, in every username and key (so runs never collide).
    pub run: String,
    pub password: String,
    pub master: Arc<Session>,
    pub managers: Vec<Manager>,
    /// Products the ordinary buyers order.
    pub products: Vec<String>,
    /// The flash-sale product, if any.
    pub flash_product: Option<String>,
    /// When the flash sale opens (ms since the epoch).
    pub flash_opens_at: Option<i64>,
    pub buyers: RwLock<Vec<Arc<Session>>>,
    pub flash_buyers: Vec<Arc<Session>>,
    /// Order flows in flight hold a permit (the drain takes them all back).
    pub inflight: Arc<Semaphore>,
    /// Paid orders to ship, per manager; dropped to end the managers' loops.
    pub ship_queues: Mutex<Option<Vec<mpsc::UnboundedSender<String>>>>,
    /// Set when the load stops (chaos and churn end).
    pub stopping: AtomicBool,
    /// Orders placed so far (for keys).
    pub seq: AtomicU64,
    /// Chaos targets killed and not back yet. Chaos kills under this lock only when no outage
    /// is planned (`api.outage`), so a grow that begins one and then finds this empty runs
    /// with no kill in progress.
    pub recovering: Mutex<HashSet<Target>>,
}

impl Ctx {
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// An RNG for a sub-task, derived from the seed (deterministic choices per task).
    pub fn rng(&self, stream: u64, n: u64) -> StdRng {
        let mut r = StdRng::seed_from_u64(
            self.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xA24B_AED4),
        );
        // Discard one value so adjacent seeds do not start alike.
        let _: u64 = r.random();
        r
    }

    /// Queue a paid order for the manager of its first vendor.
    pub fn ship(&self, order_id: &str, vendor_id: &str) {
        let Some(i) = self.managers.iter().position(|m| m.vendor_id == vendor_id) else {
            return;
        };
        if let Some(q) = self.ship_queues.lock().unwrap().as_ref() {
            let _ = q[i].send(order_id.to_string());
        }
    }

    pub fn manager_session(&self, i: usize) -> Arc<Session> {
        self.managers[i].session.clone()
    }
}
