#!/usr/bin/env bash
# The whole shop under traffic and crashes, on the local servers, isolated from any shop already
# running there: its own topic and Redis prefixes, ports, pids, logs and state (.work/soak).
#   scripts/soak.sh [pickple-soak flags...]     e.g. --duration 90 --rate 15 --chaos
# Builds the debug binaries (PICKPLE_PROFILE=release for release), starts the shop with up.sh,
# runs pickple-soak against it (which exits non-zero on a violated invariant), then stops the
# shop's processes and leaves the servers running. The report is .work/soak/report.json.
# `--grow-at SECS --grow-to N` grows this shop's partitions with scripts/grow.sh meanwhile: it
# inherits the private shop's environment (run dir, prefixes, ports) from here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

run=${PICKPLE_SOAK_DIR:-$root/.work/soak}
private_shop soak "$run" "${PICKPLE_SOAK_GATEWAY_PORT:-18080}" "${PICKPLE_SOAK_METRICS_BASE_PORT:-19101}"
# Unpaid orders expire within the run (the shop's default is 5 minutes), so the end state is
# final and the expiry path is exercised.
export PICKPLE_PAYMENT_TIMEOUT_MS=${PICKPLE_PAYMENT_TIMEOUT_MS:-30000}
"$here/up.sh"
# --grow-at runs scripts/grow.sh, which builds pickple-grow: built now, not under load.
bins=(--bin pickple-soak)
case " $* " in *" --grow-at"*) bins+=(--bin pickple-grow) ;; esac
cargo_build "$PICKPLE_PROFILE" -p pickple-bench -p pickple-processors "${bins[@]}"
eval "$("$here/services.sh" env)"
log "soak: shop ${PICKPLE_TOPIC_PREFIX%.} on http://$PICKPLE_GATEWAY_ADDR"
"target/$PICKPLE_PROFILE/pickple-soak" \
  --url "http://$PICKPLE_GATEWAY_ADDR" \
  --work "$run" \
  --services-work "${PICKPLE_WORK:-$root/.work}" \
  --metrics-base-port "$PICKPLE_METRICS_BASE_PORT" \
  --redis-prefix "$PICKPLE_REDIS_PREFIX" \
  --maildir "$PICKPLE_MAILDIR" \
  --json "$run/report.json" \
  "$@"
