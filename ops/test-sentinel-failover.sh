#!/usr/bin/env bash
# Redis Sentinel failover, end to end: views keep being written by the sink and served by the
# gateway after the Redis master dies and Sentinel promotes the replica.
#
# Starts on 127.0.0.1 (temp dirs, nothing shared with other tests):
#   - a Redis master and a replica from the real ops/redis/master.conf and replica.conf, and three
#     Sentinels from ops/redis/sentinel.conf (compose host names replaced by 127.0.0.1,
#     down-after-milliseconds 1000, failover-timeout 5000 instead of 5000/30000 so the test is quick);
#   - the views sink (target/debug/pickple-processor --app views) and the gateway
#     (target/debug/pickple-gateway), both with PICKPLE_REDIS_SENTINELS / PICKPLE_REDIS_MASTER
#     (PICKPLE_REDIS_URL points at a closed port: only the Sentinels can lead them to Redis), on a
#     fresh topic prefix. The gateway checks the sink's readiness as in production.
# Then:
#   1. a ProductView with version 1 produced to <prefix>view-products is served by
#      GET /api/v1/products/<id>, and has reached the replica;
#   2. kill -9 of the master; the gateway is read continuously until it serves the product again
#      (reads during the failover may fail; a read after it must work);
#   3. all three Sentinels name the former replica as master, and it has role master;
#   4. version 2 produced to the view topic is written by the sink into the new master and
#      served by the gateway.
# Every wait polls an observable state with a deadline. Exits 1 with logs on failure.
#
# Needs: Kafka on PICKPLE_BROKERS (127.0.0.1:19092), the debug binaries (cargo build), kcat,
# curl, redis-server/redis-cli (apt redis-server, redis-sentinel).
# Ports: SENTINEL_TEST_PORT_BASE (default 19600): master +1, replica +2, Sentinels +11..+13,
# gateway +20, dead Redis URL +99.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

brokers="${PICKPLE_BROKERS:-127.0.0.1:19092}"
base="${SENTINEL_TEST_PORT_BASE:-19600}"
master_port=$((base + 1))
replica_port=$((base + 2))
sentinel_ports=($((base + 11)) $((base + 12)) $((base + 13)))
gateway_port=$((base + 20))
dead_redis_port=$((base + 99))
t0=$SECONDS

. "$here/test-lib.sh"
require kcat curl redis-server redis-cli
ports_free SENTINEL_TEST_PORT_BASE "$master_port" "$replica_port" "${sentinel_ports[@]}" "$gateway_port" "$dead_redis_port"

tmp="$(mktemp -d)"
mkdir -p "$tmp/logs"
cleanup() {
  local rc=$? f
  if ((rc != 0)); then
    echo "--- Sentinel :${sentinel_ports[0]}, sentinel master pickple:" >&2
    redis-cli -p "${sentinel_ports[0]}" sentinel master pickple 2>&1 | paste - - | head -n 20 >&2 || true
    for f in "$tmp"/logs/*.log "$tmp"/*/redis.log; do
      [[ -s "$f" ]] || continue
      echo "--- ${f#"$tmp"/} (last 15 lines):" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if ((${#pid_of[@]})); then stop_pids "${pid_of[@]}"; fi
  if [[ -n "${prefix:-}" ]]; then
    "$topics" delete --brokers "$brokers" --name-prefix "$prefix" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Redis: the shipped configs, with the compose host names and ports replaced.
start_redis() { # start_redis NAME CONF PORT [ARGS...]
  local name="$1" conf="$2" port="$3"
  shift 3
  mkdir -p "$tmp/$name"
  sed -e "s/redis-master 6379/127.0.0.1 $master_port/g" \
      -e "s/redis-master/127.0.0.1/g; s/redis-replica/127.0.0.1/g" \
      -e "s/^port 26379/port $port/" \
      -e "s/down-after-milliseconds pickple [0-9]*/down-after-milliseconds pickple 1000/" \
      -e "s/failover-timeout pickple [0-9]*/failover-timeout pickple 5000/" \
      "$conf" >"$tmp/$name/redis.conf"
  redis-server "$tmp/$name/redis.conf" "$@" --port "$port" --bind 127.0.0.1 --dir "$tmp/$name" \
    --daemonize no --logfile "$tmp/$name/redis.log" &
  pid_of[$name]=$!
}
pong() { [[ "$(redis-cli -p "$1" ping 2>/dev/null)" == PONG ]]; }

start_redis master ops/redis/master.conf "$master_port"
wait_until 10 "redis master answers PING" pong "$master_port"
start_redis replica ops/redis/replica.conf "$replica_port"
for i in 0 1 2; do
  start_redis "sentinel$((i + 1))" ops/redis/sentinel.conf "${sentinel_ports[$i]}" --sentinel
done
grep -q "^sentinel monitor pickple 127.0.0.1 $master_port 2$" "$tmp/sentinel1/redis.conf" ||
  fail "ops/redis/sentinel.conf has no 'sentinel monitor pickple redis-master 6379 2' to rewrite"
grep -q "^replicaof 127.0.0.1 $master_port$" "$tmp/replica/redis.conf" ||
  fail "ops/redis/replica.conf has no 'replicaof redis-master 6379' to rewrite"

replica_synced() {
  redis-cli -p "$replica_port" info replication 2>/dev/null | tr -d '\r' | grep -qx 'master_link_status:up'
}
# Each Sentinel must see the replica and the two other Sentinels, or no failover can be agreed on.
sentinels_ready() {
  local p
  for p in "${sentinel_ports[@]}"; do
    redis-cli -p "$p" sentinel ckquorum pickple 2>/dev/null | grep -q '^OK 3 usable' || return 1
    [[ "$(redis-cli -p "$p" sentinel replicas pickple 2>/dev/null | grep -cx "$replica_port")" -ge 1 ]] || return 1
  done
}
wait_until 20 "replica in sync with the master" replica_synced
wait_until 30 "three Sentinels that know each other and the replica" sentinels_ready
echo "ok: redis master :$master_port, replica :$replica_port, Sentinels :${sentinel_ports[*]} (quorum 2) ($((SECONDS - t0))s)"

# --- Pipeline side: topics, the views sink and the gateway, led to Redis by the Sentinels only.
run_id="sentinel$$-$(date +%s)"
prefix="$run_id."
"$topics" apply --brokers "$brokers" --prefix "$prefix" >"$tmp/logs/topics.log" 2>&1 ||
  fail "topics apply --prefix $prefix failed: $(cat "$tmp/logs/topics.log")"

sentinels="127.0.0.1:${sentinel_ports[0]},127.0.0.1:${sentinel_ports[1]},127.0.0.1:${sentinel_ports[2]}"
redis_env=(PICKPLE_BROKERS="$brokers" PICKPLE_TOPIC_PREFIX="$prefix" PICKPLE_REDIS_SENTINELS="$sentinels"
  PICKPLE_REDIS_MASTER=pickple PICKPLE_REDIS_PREFIX="$run_id:"
  PICKPLE_REDIS_URL="redis://127.0.0.1:$dead_redis_port" RUST_LOG="${RUST_LOG:-info,rdkafka=warn}")
env "${redis_env[@]}" "$processor" --app views --instance-id views-1 --state-dir "$tmp/state" \
  >"$tmp/logs/views.log" 2>&1 &
pid_of[views]=$!
env "${redis_env[@]}" PICKPLE_GATEWAY_ADDR="127.0.0.1:$gateway_port" "$gateway" \
  >"$tmp/logs/gateway.log" 2>&1 &
pid_of[gateway]=$!

product="p-$run_id"
view_key="$run_id:view:product:$product"
produce_view() { # produce_view VERSION NAME
  local value
  value=$(printf '{"product_id":"%s","vendor_id":"v-sentinel","name":"%s","description":"","price":100,"image_url":null,"public":true,"deleted":false,"stock":{"initial":0,"added":0,"available":0,"reserved":0,"sold":0},"sale":null,"rejection":null,"updated_at":%s,"version":%s}' \
    "$product" "$2" "$(date +%s%3N)" "$1")
  printf '%s\n' "$value" | kcat -b "$brokers" -P -t "${prefix}view-products" -k "$product" \
    2>>"$tmp/logs/kcat.log" || fail "kcat could not produce to ${prefix}view-products"
}
reads=0 failed_reads=0
declare -A failed_codes=() # HTTP status (000: no answer) -> failed reads
# serves VERSION NAME: the gateway answers 200 with that version and name (counts every read).
serves() {
  local out
  reads=$((reads + 1))
  out=$(curl -sS -m 5 -w '\n%{http_code}' "http://127.0.0.1:$gateway_port/api/v1/products/$product" 2>&1) || true
  if "$PY" -c '
import json, sys
body, _, code = sys.argv[1].rpartition("\n")
v = json.loads(body) if code == "200" else {}
sys.exit(0 if v.get("version") == int(sys.argv[2]) and v.get("name") == sys.argv[3] else 1)
' "$out" "$1" "$2" 2>/dev/null; then
    return 0
  fi
  failed_reads=$((failed_reads + 1))
  local code="${out##*$'\n'}"
  [[ "$code" =~ ^[0-9]{3}$ ]] || code=000
  failed_codes[$code]=$((${failed_codes[$code]:-0} + 1))
  echo "$(date +%T.%3N) read $reads: ${out//$'\n'/ }" >>"$tmp/logs/reads.log"
  return 1
}

produce_view 1 "Failover test v1"
wait_until 60 "gateway serves version 1 of the product (through the Sentinels)" serves 1 "Failover test v1"
replica_has_v1() { [[ "$(redis-cli -p "$replica_port" hget "$view_key" version 2>/dev/null)" == 1 ]]; }
wait_until 10 "version 1 replicated to the replica" replica_has_v1
echo "ok: gateway serves version 1 written by the sink via Sentinel; the replica has it ($((SECONDS - t0))s)"

# --- Failover.
# (Grouped so that bash's "Killed" job notice goes to /dev/null too.)
{ kill -KILL "${pid_of[master]}"; wait "${pid_of[master]}"; } 2>/dev/null || true
unset 'pid_of[master]'
killed_at=$SECONDS
reads=0 failed_reads=0
failed_codes=()
echo "ok: redis master (:$master_port) killed with SIGKILL"

# Reads go on during the failover; the first one that succeeds again proves the gateway found
# the new master through the Sentinels.
wait_until 45 "gateway serves version 1 again after the master died" serves 1 "Failover test v1"
statuses=""
for code in "${!failed_codes[@]}"; do statuses+=" HTTP $code x${failed_codes[$code]}"; done
echo "ok: a read after the failover is served (back after $((SECONDS - killed_at))s; $reads reads since the kill, $failed_reads failed while there was no master:${statuses:- none})"

promoted() {
  local p
  for p in "${sentinel_ports[@]}"; do
    [[ "$(redis-cli -p "$p" sentinel get-master-addr-by-name pickple 2>/dev/null | tr '\n' ' ')" == "127.0.0.1 $replica_port " ]] || return 1
  done
  redis-cli -p "$replica_port" role 2>/dev/null | head -n 1 | grep -qx master
}
wait_until 30 "all Sentinels name the replica (:$replica_port) as the master" promoted
echo "ok: Sentinels promoted the replica: get-master-addr-by-name pickple = 127.0.0.1 $replica_port on all three, role master"

produce_view 2 "Failover test v2"
wait_until 45 "gateway serves version 2 written after the failover" serves 2 "Failover test v2"
[[ "$(redis-cli -p "$replica_port" hget "$view_key" version)" == 2 ]] ||
  fail "version 2 is served but not in the new master"
echo "ok: version 2 produced after the failover was written by the sink into the new master and is served by the gateway"
echo "ok: Sentinel failover test passed ($((SECONDS - t0))s)"
