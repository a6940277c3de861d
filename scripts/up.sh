#!/usr/bin/env bash
# Start the whole pipeline locally: Kafka, Redis, SMTP sink, topics, every processor and the
# gateway, each in the background with its log in .work/logs/. Stop with scripts/down.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

"$here/services.sh" start
eval "$("$here/services.sh" env)"
log "building (release)"
cargo build --release --quiet --bin pickple-processor --bin pickple-gateway --bin topics
target/release/topics apply

work=${PICKPLE_WORK:-$root/.work}
mkdir -p "$work/logs" "$work/pids"
export PICKPLE_STATE_DIR=$work/state RUST_LOG=${RUST_LOG:-info,rdkafka=warn}

start() { # start NAME COMMAND...: run in the background unless already running
  local name=$1; shift
  local pidfile=$work/pids/$name.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "$name already running"; return
  fi
  nohup "$@" > "$work/logs/$name.log" 2>&1 &
  echo $! > "$pidfile"
}

port=9101
for app in users catalog stock order payment delivery notification views; do
  PICKPLE_INSTANCE_ID=${app}-1 PICKPLE_METRICS_ADDR=127.0.0.1:$port \
    start "$app" target/release/pickple-processor --app "$app"
  port=$((port + 1))
done
gateway_addr=${PICKPLE_GATEWAY_ADDR:-127.0.0.1:8080}
PICKPLE_GATEWAY_ADDR=$gateway_addr start gateway target/release/pickple-gateway
wait_for "gateway on $gateway_addr" 60 "curl -fsS http://$gateway_addr/health >/dev/null 2>&1"
log "processors' /metrics on 127.0.0.1:9101-9108, logs in $work/logs"
log "gateway listening on http://$gateway_addr (API under /api/v1, docs at /docs)"
