//! `pickple-soak`: a load and fault driver for a running Pickple shop, which checks the shop's
//! invariants once the load is over and the shop is quiet.
//!
//! It drives the stack `./scripts/up.sh` starts (or any gateway URL) through the HTTP API only:
//!
//! * **Setup**: signs in as the MASTER (`--master-user`, password from `--master-password` or
//!   `$WORK/master.password`); vendor managers sign up and the MASTER makes them
//!   VENDOR_MANAGERs; each creates a vendor and products with stock; one product gets a flash
//!   sale opening `--flash-open-delay` s after setup; buyers sign up. Each sign-up is confirmed
//!   with the code mailed to its address, read from the maildir (`--maildir`). Each step is
//!   waited for (long-poll) before it is used.
//! * **Load**: buyers place orders of 1-3 lines, each with its own `Idempotency-Key` (the same
//!   key on every retry after a timeout, 5xx or connection error), wait until AWAITING_PAYMENT,
//!   then act by `--mix`: pay (approved), pay declined then cancel, declined then approved, pay
//!   after `--late-secs`, cancel, pay then cancel, or abandon. Open loop at `--rate` orders/s
//!   (latency from each order's intended start: no coordinated omission), or closed loop ramping
//!   to `--max` buyers (reports the sustainable rate). Vendor managers ship paid orders (start,
//!   detail, end; some ended right after the start). Flash buyers hammer the sale product.
//!   A churn of sign-ups, vendor renames and restocks keeps every processor busy.
//! * **Chaos** (`--chaos`): SIGKILLs a random target (`--chaos-targets`) every `--chaos-every`
//!   s, seeded by `--seed` (printed at start), and measures the time to a new process, to its
//!   first commit (`/metrics` from `--metrics-base-port`), and until the API and the pipeline
//!   answer again. See `chaos.rs` for the contract with up.sh (pidfiles under `$WORK/pids`;
//!   Kafka's and Redis's under `--services-work` when the shop has its own run directory).
//!   The same seed replays the same choices (targets, actions, lines); timing differs.
//! * **Grow** (`--grow-at SECS --grow-to N`): at that time into the load, `scripts/grow.sh
//!   --partitions N` grows the shop's partitions (gateway stopped, drained, processors stopped,
//!   `pickple-grow`, everything started again) while the load goes on; requests retry through the
//!   gateway's absence, chaos pauses, and the report has each phase's time and the entries moved
//!   per store. See `grow.rs`.
//! * **Invariants** once quiet, from the views (Redis `--redis-url`/`--redis-prefix`, or the API
//!   as MASTER) and the SMTP maildir (`--maildir`): stock conservation, reserved and sold units
//!   against the orders, the sale's quantity and per-user limit, one order per
//!   (user, Idempotency-Key), every order final, a mail per confirmed order and delivery step,
//!   duplicates at most the SIGKILLs of `notification`; a confirmation mail per sign-up, and no
//!   account ACTIVE before the driver sent its mailed code back. Exit status 1 on a violation, 2 when the
//!   run could not be made (no gateway, no MASTER).
//!
//! Prints a progress line every `--progress-every` s and a report at the end (`--json PATH`
//! writes it as JSON). Every loop is bounded in time; only the given URL, `--redis-url` and
//! 127.0.0.1 (metrics) are contacted.
//!
//! ```text
//! ./scripts/up.sh                  # or scripts/soak.sh [flags]: a private shop, then this
//! cargo run --release -p pickple-bench --bin pickple-soak -- --duration 60 --rate 20
//! cargo run --release -p pickple-bench --bin pickple-soak -- --duration 120 --rate 20 \
//!     --chaos --chaos-every 15 --seed 42 --json /tmp/soak.json
//! cargo run --release -p pickple-bench --bin pickple-soak -- --duration 120 --max 64
//! ```

mod api;
mod buyer;
mod chaos;
mod cli;
mod ctx;
mod flash_sale;
mod grow;
mod invariants;
mod ledger;
mod load;
mod maildir;
mod report;
mod run;
mod setup;
mod stats;
mod vendor;
mod views;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pickple-soak: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pickple-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}
