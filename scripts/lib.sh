# Shared helpers for the scripts in this folder (sourced, not run).
log() { printf '\033[1m[pickple]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for WHAT SECONDS CHECK...: poll CHECK (a command or shell snippet) every 0.2 s.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until eval "$*"; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

# stop_pid PIDFILE: SIGTERM the pid in it and wait (60 s at most) until it is gone. For a
# supervisor (scripts/supervise.sh) that means its process has stopped too: it passes SIGTERM on
# and waits.
stop_pid() { stop_pids "$1"; }

# stop_pids PIDFILE...: the same for several processes at once: SIGTERM to each, then wait for
# each, so they stop in parallel (each commits and leaves its group meanwhile).
stop_pids() {
  local pidfile pid pids=() names=() i
  for pidfile in "$@"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      pids+=("$pid")
      names+=("$(basename "$pidfile" .pid)")
    fi
  done
  for i in ${pids[@]+"${!pids[@]}"}; do
    wait_for "${names[$i]} to stop" 60 "! kill -0 ${pids[$i]} 2>/dev/null"
  done
  rm -f "$@"
}

# cargo_build PROFILE CARGO-ARGS...: build quietly, with the release profile for `release` and
# the debug one otherwise; the binaries land in target/PROFILE.
cargo_build() {
  local profile=$1
  shift
  if [ "$profile" = release ]; then
    cargo build --release --quiet "$@"
  else
    cargo build --quiet "$@"
  fi
}

# shop_dir: the run dir of the shop (pids, logs, state): PICKPLE_RUN_DIR, by default the
# servers' .work. A second shop on the same servers (soak.sh, schemathesis.sh) has its own.
shop_dir() { echo "${PICKPLE_RUN_DIR:-${PICKPLE_WORK:-$root/.work}}"; }

# apt_install PKG...: install missing Debian packages (root, or sudo when available).
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# private_shop NAME RUN_DIR GATEWAY_PORT METRICS_BASE_PORT: prepare a shop of its own on the
# shared local servers, for scripts/up.sh to start (soak.sh, schemathesis.sh): an empty run dir
# for its pids, logs and state, topic and Redis prefixes NAME-<random>, its own ports. Every
# client of such a shop connects from 127.0.0.1, so the per-address limits, made for one client
# each, are raised (a caller may set any of them first). On exit the shop stops and its topics
# are deleted (its run dir stays): a broker that keeps every run's topics restarts ever slower.
# PICKPLE_KEEP_TOPICS=1 keeps them (and their groups' offsets) to look at after the run; then
# `topics delete --name-prefix PREFIX` removes them.
private_shop() {
  local name=$1 tag
  export PICKPLE_PROFILE=${PICKPLE_PROFILE:-debug}
  export PICKPLE_RUN_DIR=$2
  rm -rf "$PICKPLE_RUN_DIR"
  mkdir -p "$PICKPLE_RUN_DIR"
  tag=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export PICKPLE_TOPIC_PREFIX=$name-$tag.
  export PICKPLE_REDIS_PREFIX=$name-$tag:
  export PICKPLE_GATEWAY_ADDR=127.0.0.1:$3
  export PICKPLE_METRICS_BASE_PORT=$4
  export PICKPLE_LIMIT_SIGN_IN_CLIENT=${PICKPLE_LIMIT_SIGN_IN_CLIENT:-60000/10000}
  export PICKPLE_LIMIT_SIGN_UP_CLIENT=${PICKPLE_LIMIT_SIGN_UP_CLIENT:-60000/10000}
  export PICKPLE_LIMIT_SIGN_UP_STATUS_CLIENT=${PICKPLE_LIMIT_SIGN_UP_STATUS_CLIENT:-60000/10000}
  export PICKPLE_LIMIT_CONFIRM_CLIENT=${PICKPLE_LIMIT_CONFIRM_CLIENT:-60000/10000}
  trap stop_private_shop EXIT
}

stop_private_shop() {
  "$root/scripts/down.sh" --keep-services || true
  if [ "${PICKPLE_KEEP_TOPICS:-0}" = 1 ]; then
    log "topics kept: delete them with topics delete --name-prefix $PICKPLE_TOPIC_PREFIX"
    return
  fi
  "$root/target/$PICKPLE_PROFILE/topics" delete --name-prefix "$PICKPLE_TOPIC_PREFIX" >/dev/null 2>&1 ||
    log "could not delete the topics under $PICKPLE_TOPIC_PREFIX"
}
