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
  "$root/target/$PICKPLE_PROFILE/topics" delete --name-prefix "$PICKPLE_TOPIC_PREFIX" >/dev/null 2>&1 ||
    log "could not delete the topics under $PICKPLE_TOPIC_PREFIX"
}
