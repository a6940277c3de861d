#!/usr/bin/env bash
# The whole test suite: starts the local servers it needs (Kafka, Redis, SMTP sink), checks the
# operations files (Prometheus rules with promtool, Alertmanager to a stand-in Slack, Grafana,
# compose, Dockerfile), builds, deletes the topics that killed test runs left behind, applies the
# topic catalogue, runs the two end-to-end operations tests on the built binaries (a real
# Prometheus scraping every process; a Redis Sentinel failover under the views sink and the
# gateway), then runs every Rust test, then soaks a private copy of the whole shop for 90 s of
# traffic while a random process is SIGKILLed every 8 s and checks every invariant
# (scripts/soak.sh), and fuzzes the API contract with schemathesis against another private shop
# (scripts/schemathesis.sh, about 4 minutes). Extra arguments go to `cargo test`.
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

# Test fixtures delete their topics when they end; a run killed midway leaves them behind, and
# thousands of them make the broker's restart slow. Only names in a test fixture's own format
# are deleted (never a catalogue name): rt = runtime tests, gw = gateway, vs/vl = views sink,
# saga|stockstate|flash|otel|bin|e2e|bench = Pipeline::start tags (apps tests, benches), bench =
# runtime-bench, t/del/txn-check- = topics tests, obs/sentinel = ops/test-*.sh. And only topics
# older than any test run (PICKPLE_SWEEP_MIN_AGE_MIN, 60 minutes), so a test running meanwhile
# against the same broker keeps its own. The age is that of the topic's partition.metadata in
# the local broker's data dir (written once, at creation); with no such dir nothing is swept.
sweep_test_topics() {
  local data=${PICKPLE_WORK:-$root/.work}/kafka/data min_age=${PICKPLE_SWEEP_MIN_AGE_MIN:-60}
  local tests='^((rt|gw|vs|vl|del)[0-9a-f]{12}|(saga|stockstate|flash|otel|bin|e2e|bench)[0-9a-f]{10}|t[0-9a-f]{32}|(obs|sentinel)[0-9]+-[0-9]+)[.]|^txn-check-[0-9a-f]{32}$'
  if [ ! -d "$data" ]; then log "topic sweep: no broker data in $data, nothing swept"; return; fi
  local deleted
  deleted=$(find "$data" -mindepth 2 -maxdepth 2 -path '*-0/partition.metadata' -mmin "+$min_age" -printf '%h\n' \
    | sed -e 's|.*/||' -e 's|-0$||' | { grep -E "$tests" || true; } \
    | xargs -r -n 500 cargo run --quiet -p pickple-topics --bin topics -- delete \
    | { grep -c '^deleted ' || true; })
  log "topic sweep: deleted ${deleted:-0} topics of earlier test runs (older than $min_age minutes)"
}
sweep_test_topics
cargo run --quiet -p pickple-topics --bin topics -- apply
log "observability: Prometheus scrapes every process; Redis Sentinel failover"
"$root/ops/test-prometheus-scrape.sh"
"$root/ops/test-sentinel-failover.sh"
log "running tests"
cargo test --workspace --no-fail-fast "$@"
log "soak: the whole shop under traffic while its processes are SIGKILLed"
# 3 orders/s: a check of the invariants under crashes, not a load test. The debug shop, the broker
# and the soak share 2 cores; on a slow day here the debug shop saturated between 2 and 8/s
# (docs/soak.md, "CI rate").
"$here/soak.sh" --duration 90 --rate 3 --chaos --chaos-every 8
log "API contract: schemathesis against /openapi.json of a private shop"
"$here/schemathesis.sh"
