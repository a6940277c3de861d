#!/usr/bin/env bash
# The whole shop under traffic and crashes, on the local servers, isolated from any shop already
# running there: its own topic and Redis prefixes, ports, pids, logs and state (.work/soak).
#   scripts/soak.sh [pickple-soak flags...]     e.g. --duration 90 --rate 15 --chaos
# Builds the debug binaries (PICKPLE_PROFILE=release for release), starts the shop with up.sh,
# runs pickple-soak against it (which exits non-zero on a violated invariant), then stops the
# shop's processes and leaves the servers running. The report is .work/soak/report.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

export PICKPLE_PROFILE=${PICKPLE_PROFILE:-debug}
run=${PICKPLE_SOAK_DIR:-$root/.work/soak}
rm -rf "$run"
mkdir -p "$run"
tag=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PICKPLE_RUN_DIR=$run
export PICKPLE_TOPIC_PREFIX=soak-$tag.
export PICKPLE_REDIS_PREFIX=soak-$tag:
export PICKPLE_GATEWAY_ADDR=127.0.0.1:${PICKPLE_SOAK_GATEWAY_PORT:-18080}
export PICKPLE_METRICS_BASE_PORT=${PICKPLE_SOAK_METRICS_BASE_PORT:-19101}
# Unpaid orders expire within the run (the shop's default is 5 minutes), so the end state is
# final and the expiry path is exercised.
export PICKPLE_PAYMENT_TIMEOUT_MS=${PICKPLE_PAYMENT_TIMEOUT_MS:-30000}
# Every simulated client connects from 127.0.0.1: the per-address limits, made for one client
# each, are raised so that dozens of buyers can sign up, confirm their addresses and sign in
# from it. The per-account and
# per-user limits stay as they are.
export PICKPLE_LIMIT_SIGN_IN_CLIENT=${PICKPLE_LIMIT_SIGN_IN_CLIENT:-6000/1000}
export PICKPLE_LIMIT_SIGN_UP_CLIENT=${PICKPLE_LIMIT_SIGN_UP_CLIENT:-6000/1000}
export PICKPLE_LIMIT_SIGN_UP_STATUS_CLIENT=${PICKPLE_LIMIT_SIGN_UP_STATUS_CLIENT:-60000/10000}
export PICKPLE_LIMIT_CONFIRM_CLIENT=${PICKPLE_LIMIT_CONFIRM_CLIENT:-60000/10000}

stop_shop() {
  PICKPLE_RUN_DIR=$run "$here/down.sh" --keep-services || true
  # The run's topics go with it (the report and the logs in $run stay): a broker that keeps
  # every soak's 33 topics restarts ever more slowly.
  "$root/target/$PICKPLE_PROFILE/topics" delete --name-prefix "$PICKPLE_TOPIC_PREFIX" >/dev/null 2>&1 ||
    log "could not delete the topics under $PICKPLE_TOPIC_PREFIX"
}
trap stop_shop EXIT
"$here/up.sh"
if [ "$PICKPLE_PROFILE" = release ]; then
  cargo build --release --quiet -p pickple-bench --bin pickple-soak
else
  cargo build --quiet -p pickple-bench --bin pickple-soak
fi
eval "$("$here/services.sh" env)"
log "soak: shop $tag on http://$PICKPLE_GATEWAY_ADDR"
"target/$PICKPLE_PROFILE/pickple-soak" \
  --url "http://$PICKPLE_GATEWAY_ADDR" \
  --work "$run" \
  --services-work "${PICKPLE_WORK:-$root/.work}" \
  --metrics-base-port "$PICKPLE_METRICS_BASE_PORT" \
  --redis-prefix "$PICKPLE_REDIS_PREFIX" \
  --maildir "$PICKPLE_MAILDIR" \
  --json "$run/report.json" \
  "$@"
