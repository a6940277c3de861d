#!/usr/bin/env bash
# Start the whole pipeline locally: Kafka, Redis, SMTP sink, topics, every processor and the
# gateway. Logs and state go to .work/. Stop with scripts/down.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"
. "$here/lib.sh"

"$here/services.sh" start
eval "$("$here/services.sh" env)"
cargo build --release --quiet --workspace --bins
target/release/topics apply
log "topics applied on $PICKPLE_BROKERS; inspect them with: kcat -b $PICKPLE_BROKERS -L"
