#!/usr/bin/env bash
# The whole test suite: starts the local servers it needs (Kafka, Redis, SMTP sink), checks the
# operations files (Prometheus rules with promtool, Alertmanager to a stand-in Slack, Grafana,
# compose, Dockerfile), builds, applies the topic catalogue, runs the two end-to-end operations
# tests on the built binaries (a real Prometheus scraping every process; a Redis Sentinel
# failover under the views sink and the gateway), then runs every Rust test, then soaks a private
# copy of the whole shop for 90 s of traffic while a random process is SIGKILLed every 8 s and
# checks every invariant (scripts/soak.sh). Extra arguments go to `cargo test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

"$here/services.sh" start
eval "$("$here/services.sh" env)"
log "checking the operations files"
"$here/check-ops.sh"
"$root/ops/alertmanager/test-slack.sh"
cargo build --workspace --all-targets --quiet
cargo run --quiet -p pickple-topics --bin topics -- apply
log "observability: Prometheus scrapes every process; Redis Sentinel failover"
"$root/ops/test-prometheus-scrape.sh"
"$root/ops/test-sentinel-failover.sh"
log "running tests"
cargo test --workspace --no-fail-fast "$@"
log "soak: the whole shop under traffic while its processes are SIGKILLed"
"$here/soak.sh" --duration 90 --rate 15 --chaos --chaos-every 8
