#!/usr/bin/env bash
# Grow every topic of the shop that scripts/up.sh started to N partitions, its state kept exact
# (docs/scaling.md, "Growing the partitions"):
#   scripts/grow.sh --partitions N [--drain-secs 120] [--attempts 3]
# 1. stop the gateway, so that no new command lands on a partition its entity is leaving;
# 2. drain: wait until `pickple-grow --pending` finds nothing left to process, the processors
#    still running;
# 3. stop every processor (SIGTERM through its supervisor: it commits and leaves);
# 4. `pickple-grow --partitions N`: grow every topic, move each store's entries to their
#    entity's new partition. A punctuator (a payment deadline, a sweep) may have written records
#    between the drain and the stop: then it refuses before changing anything, and the
#    processors start again for another drain (--attempts in all);
# 5. start everything with up.sh, which returns once the gateway is ready. From then on `topics`
#    (and so up.sh) finds N partitions on the broker and keeps to them.
# The same run dir, prefixes and profile as up.sh (PICKPLE_RUN_DIR, PICKPLE_TOPIC_PREFIX,
# PICKPLE_PROFILE), so it grows a private shop (soak.sh's) as well. Prints each phase's seconds,
# last as one line on stdout:
#   timings gateway_s=.. drain_s=.. stop_s=.. grow_s=.. start_s=.. down_s=.. attempts=..
# If pickple-grow fails otherwise (a broker error midway), the shop is left stopped: run this
# again. On a stopped shop it goes straight to pickple-grow, which finishes what it started (or
# refuses, unless drained: then the processors start for a drain).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

partitions="" drain_secs=120 attempts=3
usage() { die "usage: $0 --partitions N [--drain-secs SECS] [--attempts N]"; }
while [ $# -gt 0 ]; do
  case $1 in
    --partitions) partitions=${2:-}; shift 2 || usage ;;
    --drain-secs) drain_secs=${2:-}; shift 2 || usage ;;
    --attempts) attempts=${2:-}; shift 2 || usage ;;
    *) usage ;;
  esac
done
[[ $partitions =~ ^[1-9][0-9]*$ && $drain_secs =~ ^[0-9]+$ && $attempts =~ ^[1-9][0-9]*$ ]] || usage

eval "$("$here/services.sh" env)"
work=$(shop_dir)
piddir=$work/pids

profile=${PICKPLE_PROFILE:-release}
log "building pickple-grow ($profile)"
cargo_build "$profile" --bin pickple-grow
grow=target/$profile/pickple-grow

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
gateway_s=0 drain_s=0 stop_s=0 grow_s=0 start_s=0

# The processors' supervisors: every one up.sh started but the gateway's.
processors() {
  local f
  for f in "$piddir"/*.supervisor.pid; do
    [ "$(basename "$f")" = gateway.supervisor.pid ] || echo "$f"
  done
}

# Whether any process of the shop runs.
running() {
  local f
  for f in "$piddir"/*.pid; do
    if [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then return 0; fi
  done
  return 1
}

# Wait until nothing is left to process (the processors running); then stop them.
drain_and_stop() {
  local t deadline left f supervisors
  t=$(now)
  log "grow: draining (attempt $attempt of $attempts, at most ${drain_secs}s)"
  deadline=$((SECONDS + drain_secs))
  until left=$("$grow" --pending 2>&1); do
    if [ $SECONDS -ge "$deadline" ]; then
      log "grow: still left to process after ${drain_secs}s: $(echo "$left" | head -5 | tr '\n' ' ')"
      die "the shop does not drain; the processors run, the gateway is stopped: start it with scripts/up.sh"
    fi
    sleep 1
  done
  drain_s=$(add "$drain_s" "$(since "$t")")

  t=$(now)
  log "grow: stopping the processors"
  mapfile -t supervisors < <(processors)
  stop_pids ${supervisors[@]+"${supervisors[@]}"}
  # Processes left without a supervisor, as down.sh does.
  for f in "$piddir"/*.pid; do
    if [ -e "$f" ]; then stop_pid "$f"; fi
  done
  stop_s=$(add "$stop_s" "$(since "$t")")
}

down_at=$(now)
t=$(now)
log "grow: stopping the gateway"
stop_pids "$piddir/gateway.supervisor.pid" "$piddir/gateway.pid"
gateway_s=$(since "$t")

attempt=1
if running; then
  drain_and_stop
else
  log "grow: the shop is stopped: pickple-grow at once (it refuses unless drained)"
fi
while :; do
  t=$(now)
  log "grow: pickple-grow --partitions $partitions"
  set +e
  out=$("$grow" --partitions "$partitions" 2> "$work/grow.err")
  rc=$?
  set -e
  grow_s=$(add "$grow_s" "$(since "$t")")
  [ -z "$out" ] || echo "$out"
  [ $rc -ne 0 ] || break
  err=$(cat "$work/grow.err")
  log "grow: pickple-grow refused or failed: $err"
  # Refused before changing anything: records appeared after the drain (a punctuator), or an
  # instance was still in its group. Start the processors and drain again.
  if [ "$attempt" -lt "$attempts" ] &&
    grep -qE 'records left to process|still has members' <<< "$err"; then
    attempt=$((attempt + 1))
    t=$(now)
    log "grow: starting the processors again to drain"
    "$here/up.sh" --no-gateway
    drain_s=$(add "$drain_s" "$(since "$t")")
    drain_and_stop
    continue
  fi
  die "pickple-grow failed (attempt $attempt); the shop is stopped: see above, then run this again"
done

t=$(now)
log "grow: starting the shop on $partitions partitions"
"$here/up.sh"
start_s=$(since "$t")
down_s=$(since "$down_at")
log "grow: gateway stop ${gateway_s}s, drain ${drain_s}s, stop ${stop_s}s, grow ${grow_s}s, start ${start_s}s; gateway down ${down_s}s in all ($attempt attempt(s))"
echo "timings gateway_s=$gateway_s drain_s=$drain_s stop_s=$stop_s grow_s=$grow_s start_s=$start_s down_s=$down_s attempts=$attempt"
