//! `flash-sale-bench`: the flash sale of the integration tests against the local broker —
//! 2,000 PlaceOrder commands from 500 users for a sale of 100 units, limit 2 per user — run
//! three times on one in-process pipeline (stock, order and payment apps), printing how long each
//! sale takes to settle (every order AWAITING_PAYMENT or CANCELLED) and the median.
//!
//! `cargo run --release -p pickple-processors --features harness --bin flash-sale-bench [-- --orders N --runs N]`

use std::time::Duration;

use clap::Parser;
use pickple_processors::harness::{FlashSale, Pipeline};
use pickple_processors::{App, AppConfig};

/// jemalloc for Rust and for librdkafka's C alike; see docs/runtime.md, "Allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 2_000)]
    orders: usize,
    #[arg(long, default_value_t = 500)]
    users: usize,
    #[arg(long, default_value_t = 100)]
    sale: u64,
    #[arg(long, default_value_t = 2)]
    limit: u64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let p = Pipeline::start(
        "bench",
        &AppConfig::default(),
        &[App::Stock, App::Order, App::Payment],
    )?;
    let mut times: Vec<Duration> = Vec::new();
    for run in 0..cli.runs {
        let sale = FlashSale {
            product_id: format!("sneaker{run}"),
            orders: cli.orders,
            users: cli.users,
            sale: cli.sale,
            limit: cli.limit,
        };
        sale.prepare(&p);
        let out = sale.run(&p, 300);
        println!(
            "run {}: {} orders settled in {:.3}s ({:.0} orders/s): {} units to {} orders, {} cancelled",
            run + 1,
            cli.orders,
            out.settle.as_secs_f64(),
            cli.orders as f64 / out.settle.as_secs_f64(),
            out.reserved_units,
            out.reserved_orders,
            out.cancelled
        );
        anyhow::ensure!(
            out.reserved_units == cli.sale,
            "oversold or undersold: {out:?}"
        );
        times.push(out.settle);
    }
    p.stop();
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "flash sale ({} orders, {} users, {} units, limit {}): median settle {:.3}s over {} runs",
        cli.orders,
        cli.users,
        cli.sale,
        cli.limit,
        median.as_secs_f64(),
        times.len()
    );
    Ok(())
}
