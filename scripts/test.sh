#!/usr/bin/env bash
# The whole test suite: starts the local servers it needs (Kafka, Redis, SMTP sink), applies the
# topic catalogue, then runs every Rust test. Extra arguments go to `cargo test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
. "$here/lib.sh"

"$here/services.sh" start
eval "$("$here/services.sh" env)"
cargo build --workspace --all-targets --quiet
cargo run --quiet -p pickple-topics --bin topics -- apply
log "running tests"
cargo test --workspace "$@"
