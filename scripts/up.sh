#!/usr/bin/env bash
# Start the whole pipeline locally: Kafka, Redis, SMTP sink, topics, every processor and the
# gateway, each in the background under scripts/supervise.sh (restarted when it exits) with its
# log in .work/logs/ and its current pid in .work/pids/NAME.pid; returns once the gateway's
# /ready answers 200. Stop with scripts/down.sh.
#   scripts/up.sh [--no-gateway]   the processors only (scripts/grow.sh, draining again)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"
gateway=1
for arg in "$@"; do
  case $arg in
    --no-gateway) gateway=0 ;;
    *) die "usage: $0 [--no-gateway]" ;;
  esac
done

"$here/services.sh" start
eval "$("$here/services.sh" env)"
# PICKPLE_PROFILE=debug runs the debug binaries that `cargo build` (and the test suite) make,
# instead of building the release ones.
profile=${PICKPLE_PROFILE:-release}
log "building ($profile)"
cargo_build "$profile" --bin pickple-processor --bin pickple-gateway --bin topics --bin hash-password
bin=target/$profile

# The processes' own files (pids, logs, state, the MASTER's password) go under PICKPLE_RUN_DIR,
# by default the servers' .work: a second shop on the same servers (scripts/soak.sh) gives its
# own run dir, topic and Redis prefixes and ports.
work=$(shop_dir)
mkdir -p "$work/logs" "$work/pids"
# The topics keep their partition count: 6 for a new shop, or what scripts/grow.sh grew it to.
"$bin/topics" apply
partitions=$("$bin/topics" partitions)
export PICKPLE_STATE_DIR=$work/state RUST_LOG=${RUST_LOG:-info,rdkafka=warn}

# The local MASTER account, created by the users app at start: a password of this machine's own
# in $work/master.password (never a default in the source), sign in as `master` with it.
if [ ! -s "$work/master.password" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' > "$work/master.password")
fi
export PICKPLE_MASTER_USERNAME=${PICKPLE_MASTER_USERNAME:-master}
export PICKPLE_MASTER_EMAIL=${PICKPLE_MASTER_EMAIL:-master@pickple.local}
PICKPLE_MASTER_PASSWORD_HASH=$("$bin/hash-password" < "$work/master.password")
export PICKPLE_MASTER_PASSWORD_HASH

start() { # start NAME COMMAND...: run under scripts/supervise.sh (restarted when it exits)
  local name=$1; shift
  local supervisor=$work/pids/$name.supervisor.pid
  if [ -f "$supervisor" ] && kill -0 "$(cat "$supervisor")" 2>/dev/null; then
    log "$name already running"; return
  fi
  rm -f "$work/pids/$name.pid"
  setsid nohup "$here/supervise.sh" "$name" "$work/pids/$name.pid" "$work/logs/$name.log" -- "$@" \
    >> "$work/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$supervisor"
}

# Metrics (and /health) of the processors on consecutive ports from this one: the first
# instance of each app in this order, then the extra instances.
apps=$("$bin/topics" apps)
port=${PICKPLE_METRICS_BASE_PORT:-9101}
for app in $apps; do
  PICKPLE_INSTANCE_ID=${app}-1 PICKPLE_METRICS_ADDR=127.0.0.1:$port \
    start "$app" "$bin/pickple-processor" --app "$app"
  port=$((port + 1))
done
# Extra instances: "APP=N ..." (N instances in all, at most the partition count: an instance
# beyond it would own no task). notification runs three by default: it commits after every mail
# (so a crash repeats at most the mail in flight), so one instance sends only as many mails a
# second as it can commit transactions.
for scale in ${PICKPLE_SCALE:-notification=3}; do
  app=${scale%=*} count=${scale#*=}
  if [ "$count" -gt "$partitions" ]; then
    log "$app: $count instances asked for, $partitions partitions: starting $partitions"
    count=$partitions
  fi
  for i in $(seq 2 "$count"); do
    PICKPLE_INSTANCE_ID=${app}-$i PICKPLE_METRICS_ADDR=127.0.0.1:$port \
      start "$app-$i" "$bin/pickple-processor" --app "$app"
    port=$((port + 1))
  done
done
if [ "$gateway" -eq 0 ]; then
  log "processors started (no gateway), logs in $work/logs"
  exit 0
fi
gateway_addr=${PICKPLE_GATEWAY_ADDR:-127.0.0.1:8080}
PICKPLE_GATEWAY_ADDR=$gateway_addr start gateway "$bin/pickple-gateway"
# Ready means the views sink reports and every dependency answers: the first call works.
wait_for "the gateway to be ready on $gateway_addr" 120 \
  "curl -fsS http://$gateway_addr/ready >/dev/null 2>&1"
log "processors' /metrics and /health on 127.0.0.1:${PICKPLE_METRICS_BASE_PORT:-9101}-$((port - 1)), logs in $work/logs"
log "gateway ready on http://$gateway_addr (API under /api/v1, docs at /docs)"
log "MASTER account: $PICKPLE_MASTER_USERNAME, password in $work/master.password"
