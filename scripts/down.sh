#!/usr/bin/env bash
# Stop what scripts/up.sh started (processors and gateway get SIGTERM: they commit and leave
# their consumer group), then the local servers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
work=${PICKPLE_WORK:-$root/.work}
for pidfile in "$work"/pids/*.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait_for "$(basename "$pidfile" .pid) to stop" 30 "! kill -0 $pid 2>/dev/null"
  fi
  rm -f "$pidfile"
done
"$here/services.sh" stop
