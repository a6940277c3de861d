//! `stock-state-bench`: what a Reserve + Release costs the stock app on a product with few and
//! with many past reservations (issue #18). In-process on the runtime's `TestDriver` (one task,
//! in-memory sled, each command its own committed step; no broker): for each of `--points`, a
//! driver of its own holds a product with a sale and 1,000 buyers, driven through that many
//! past reservations (Reserve, then Release or Commit, alternately; the clock stands still, so
//! nothing is pruned). Then `--samples` Reserve + Release pairs are timed on every product,
//! taking turns, so that the load of a shared machine falls on all points alike. Prints the
//! median and p90 per pair, the ratio of the medians (last point over first), and the size of
//! the product's stored value.
//!
//! For comparison it also prints, per point, the value the layout before issue #18 would have
//! stored (every reservation inline) and the time to decode and encode it once, which that
//! layout paid on every command on top of writing it to sled and to the changelog.
//!
//! `cargo run --release -p pickple-processors --bin stock-state-bench [-- --points 1000,100000 --samples 2000]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use pickple_domain::stock::{ProductState, Reservation, ReservationStatus};
use pickple_processors::state::Versioned;
use pickple_processors::stock::{StockProcessor, STORE};
use pickple_runtime::TestDriver;
use pickple_schemas::topic::STOCK_COMMANDS;
use pickple_schemas::{SaleTerms, StockCommand};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PRODUCT: &str = "bench-product";
const START: i64 = 1_700_000_000_000;

#[derive(Parser)]
struct Cli {
    /// Past reservations at which to measure, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    points: Vec<usize>,
    /// Reserve + Release pairs timed at each point.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Distinct buyers of the sale.
    #[arg(long, default_value_t = 1_000)]
    buyers: usize,
}

struct Bench {
    d: TestDriver<StockProcessor>,
    buyers: usize,
    next: usize,
}

impl Bench {
    fn cmd(&mut self, cmd: StockCommand) {
        self.d
            .pipe(STOCK_COMMANDS, PRODUCT, &cmd)
            .expect("processed");
    }

    fn reserve(&mut self, order_id: &str, i: usize) {
        self.cmd(StockCommand::Reserve {
            product_id: PRODUCT.into(),
            order_id: order_id.into(),
            username: format!("buyer{:04}", i % self.buyers),
            quantity: 1,
            placed_at: START,
        });
    }

    /// One more past reservation: Reserve, then Release (even) or Commit (odd).
    fn past(&mut self) {
        let i = self.next;
        self.next += 1;
        let order_id = format!("order-{i:07}");
        self.reserve(&order_id, i);
        self.cmd(if i.is_multiple_of(2) {
            StockCommand::Release {
                product_id: PRODUCT.into(),
                order_id,
            }
        } else {
            StockCommand::Commit {
                product_id: PRODUCT.into(),
                order_id,
            }
        });
    }

    /// Time one Reserve + Release pair.
    fn pair(&mut self, sample: usize) -> Duration {
        let order_id = format!("sample-{}-{sample:05}", self.next);
        let started = Instant::now();
        self.reserve(&order_id, sample);
        self.cmd(StockCommand::Release {
            product_id: PRODUCT.into(),
            order_id,
        });
        started.elapsed()
    }

    fn value_bytes(&self) -> usize {
        let v: serde_json::Value = self.d.get(STORE, PRODUCT).expect("the product");
        serde_json::to_vec(&v).expect("encodes").len()
    }

    fn value(&self) -> Versioned<ProductState> {
        self.d.get(STORE, PRODUCT).expect("the product")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The value the layout before issue #18 stored at `past` reservations: the same product with
/// every reservation inline, and the sale's counters.
fn old_value(now: &Versioned<ProductState>, past: usize, buyers: usize) -> Versioned<ProductState> {
    let mut old = now.clone();
    let epoch = old.state.sale.as_ref().map(|s| s.epoch);
    for i in 0..past {
        old.state.legacy_reservations.insert(
            format!("order-{i:07}"),
            Reservation {
                quantity: 1,
                username: format!("buyer{:04}", i % buyers),
                unit_price: old.state.price,
                status: if i.is_multiple_of(2) {
                    ReservationStatus::Released
                } else {
                    ReservationStatus::Committed
                },
                sale: epoch,
            },
        );
    }
    let mut per_user = BTreeMap::new();
    for i in (1..past).step_by(2) {
        *per_user
            .entry(format!("buyer{:04}", i % buyers))
            .or_insert(0) += 1;
    }
    if let Some(s) = old.state.sale.as_mut() {
        s.legacy_per_user = per_user;
    }
    old
}

/// Median time to decode and re-encode a value, what every command did with the old layout.
fn round_trip(value: &Versioned<ProductState>) -> (usize, Duration) {
    let bytes = serde_json::to_vec(value).expect("encodes");
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let v: Versioned<ProductState> = serde_json::from_slice(&bytes).expect("decodes");
            let again = serde_json::to_vec(&v).expect("encodes");
            std::hint::black_box(again);
            started.elapsed()
        })
        .collect();
    times.sort();
    (bytes.len(), times[times.len() / 2])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn setup(buyers: usize, total: usize) -> Bench {
    let mut b = Bench {
        d: TestDriver::new(StockProcessor::default(), START),
        buyers,
        next: 0,
    };
    b.cmd(StockCommand::CreateProduct {
        product_id: PRODUCT.into(),
        vendor_id: "v1".into(),
        name: "Best seller".into(),
        description: "sells well".into(),
        price: 1000,
        image_url: None,
        public: true,
    });
    b.cmd(StockCommand::SetStock {
        product_id: PRODUCT.into(),
        quantity: total as u64,
    });
    b.cmd(StockCommand::OpenSale {
        product_id: PRODUCT.into(),
        sale: SaleTerms {
            opens_at: 0,
            closes_at: START + 86_400_000,
            quantity: total as u64,
            per_user_limit: total as u64,
        },
    });
    b
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::ensure!(!cli.points.is_empty(), "no --points");
    let mut benches = Vec::new();
    for &point in &cli.points {
        let mut b = setup(cli.buyers, point + cli.samples);
        let fill = Instant::now();
        while b.next < point {
            b.past();
        }
        println!(
            "{point:>7} past reservations made in {:.1}s",
            fill.elapsed().as_secs_f64()
        );
        benches.push(b);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(cli.samples); benches.len()];
    for sample in 0..cli.samples {
        for (b, t) in benches.iter_mut().zip(times.iter_mut()) {
            t.push(b.pair(sample));
        }
    }

    let mut medians = Vec::new();
    for ((&point, b), times) in cli.points.iter().zip(&benches).zip(&mut times) {
        times.sort();
        let (median, p90) = (percentile(times, 0.5), percentile(times, 0.9));
        let size = b.value_bytes();
        let (old_size, old_trip) = round_trip(&old_value(&b.value(), point, cli.buyers));
        println!(
            "{point:>7} past reservations: Reserve+Release median {:.1} µs (p90 {:.1} µs), {:.1} µs per command; \
             product value {size} bytes | old layout: value {old_size} bytes, decode+encode {:.0} µs per command",
            micros(median),
            micros(p90),
            micros(median) / 2.0,
            micros(old_trip),
        );
        medians.push((point, median, size));
    }
    if let (Some(first), Some(last)) = (medians.first(), medians.last()) {
        println!(
            "ratio of the medians, {} over {} past reservations: {:.2}; product value {} -> {} bytes",
            last.0,
            first.0,
            last.1.as_secs_f64() / first.1.as_secs_f64(),
            first.2,
            last.2
        );
    }
    Ok(())
}
