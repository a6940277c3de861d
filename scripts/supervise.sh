#!/usr/bin/env bash
# Keep one process running, as compose's `restart: unless-stopped` does:
#   scripts/supervise.sh NAME PIDFILE LOGFILE -- COMMAND...
# Starts COMMAND with its output appended to LOGFILE and its pid in PIDFILE; when it exits for
# any reason (a crash, a SIGKILL) it is started again, at once the first time and with a
# back-off that doubles up to 10 s while it keeps exiting within 30 s of its start. SIGTERM to
# the supervisor passes SIGTERM to the process, waits for it, and ends supervision: that is how
# scripts/down.sh stops it.
set -uo pipefail
name=$1 pidfile=$2 logfile=$3
shift 3
[ "${1:-}" = "--" ] && shift

child=""
stopping=0
on_term() {
  stopping=1
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap on_term TERM INT

delay_ms=0
while [ "$stopping" -eq 0 ]; do
  started=$SECONDS
  "$@" >> "$logfile" 2>&1 &
  child=$!
  echo "$child" > "$pidfile"
  # `wait` returns early when a trapped signal arrives: wait again until the child is gone.
  rc=0
  while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
  [ "$stopping" -eq 1 ] && break
  if [ $((SECONDS - started)) -ge 30 ]; then delay_ms=0; fi
  printf '{"supervisor":"%s","exit":%d,"restart_in_ms":%d}\n' "$name" "$rc" "$delay_ms" >> "$logfile"
  [ "$delay_ms" -gt 0 ] && sleep "$(awk "BEGIN { print $delay_ms / 1000 }")"
  if [ "$delay_ms" -eq 0 ]; then delay_ms=100; else delay_ms=$((delay_ms * 2)); fi
  [ "$delay_ms" -gt 10000 ] && delay_ms=10000
done
rm -f "$pidfile"
