# Shared by the end-to-end ops tests (ops/test-*.sh): sourced once `root` is set.
. "$root/scripts/lib.sh" # port_open

processor="$root/target/debug/pickple-processor"
gateway="$root/target/debug/pickple-gateway"
topics="$root/target/debug/topics"
PY=/usr/bin/python3
declare -A pid_of=() # name -> PID, only processes the test started

fail() { echo "FAIL: $*" >&2; exit 1; }

# require TOOL...: the debug binaries are built and every TOOL is on PATH.
require() {
  local bin tool
  for bin in "$processor" "$gateway" "$topics"; do
    [[ -x "$bin" ]] || fail "$bin not built (cargo build --workspace)"
  done
  for tool in "$@"; do
    command -v "$tool" >/dev/null || fail "$tool not found (scripts/services.sh start installs it)"
  done
}

# ports_free HINT PORT...: no PORT on 127.0.0.1 is taken (HINT names the variable that moves them).
ports_free() {
  local hint="$1" port
  shift
  for port in "$@"; do
    port_open "$port" && fail "port $port on 127.0.0.1 is already in use (set $hint)"
  done
  return 0
}

# stop_pids PID...: SIGTERM (the processors commit and leave cleanly), SIGKILL after 15 s.
stop_pids() {
  local pid deadline=$((SECONDS + 15))
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    { kill -KILL "$pid"; wait "$pid"; } 2>/dev/null || true
  done
}

# wait_until SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s until it succeeds, bounded; fails
# early if a process in pid_of has died (it would never make the condition true).
wait_until() {
  local limit="$1" what="$2" name
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || fail "$what within ${limit}s"
    for name in "${!pid_of[@]}"; do
      kill -0 "${pid_of[$name]}" 2>/dev/null || fail "$name (pid ${pid_of[$name]}) exited while waiting: $what"
    done
    sleep 0.2
  done
}
