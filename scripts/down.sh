#!/usr/bin/env bash
# Stop what scripts/up.sh started: each supervisor gets SIGTERM, passes it to its process (which
# commits and leaves its consumer group) and ends without restarting it; then the local servers,
# unless --keep-services. PICKPLE_RUN_DIR names the shop, as for up.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
work=$(shop_dir)
keep_services=0
[ "${1:-}" = "--keep-services" ] && keep_services=1
for supervisor in "$work"/pids/*.supervisor.pid; do
  stop_pid "$supervisor"
done
# Processes left without a supervisor (started by an older up.sh, or their supervisor killed).
for pidfile in "$work"/pids/*.pid; do
  stop_pid "$pidfile"
done
[ "$keep_services" -eq 1 ] || "$here/services.sh" stop
