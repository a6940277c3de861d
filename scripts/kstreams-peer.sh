#!/usr/bin/env bash
# Builds bench/kstreams-peer (the runtime's reference counter on Kafka Streams, the peer of
# runtime-bench --peer kstreams and latency-bench) with Maven, and prints the classpath to run
# it with on stdout:
#   java -cp "$(scripts/kstreams-peer.sh)" pickple.bench.KStreamsPeer counter|chain ...
# Idempotent: skips Maven when target/ is newer than the sources and every listed jar is still
# in ~/.m2. Maven's output (bench/kstreams-peer/target) is git-ignored.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"

peer=$root/bench/kstreams-peer
jar=$peer/target/kstreams-peer.jar
classpath=$peer/target/classpath.txt

up_to_date() {
  [ -f "$jar" ] && [ -f "$classpath" ] || return 1
  [ -z "$(find "$peer/pom.xml" "$peer/src" -newer "$jar" -print -quit)" ] || return 1
  local dep
  while IFS= read -r -d: dep; do [ -f "$dep" ] || return 1; done < <(tr -d '\n' <"$classpath"; printf :)
}

if ! up_to_date; then
  command -v java >/dev/null || die "Java 17 is needed (apt-get install openjdk-17-jdk-headless)"
  command -v mvn >/dev/null || apt_install maven
  log "building bench/kstreams-peer (Maven; the first build downloads kafka-streams)"
  # Maven's output would land in the caller's $(...): to stderr, without the colour resets
  # Maven 3.8 prints even when quiet.
  mvn -q -B -f "$peer/pom.xml" package 2>&1 | sed 's/\x1b\[0m//g' >&2 ||
    die "Maven build of bench/kstreams-peer failed"
  # A rebuild that changed nothing leaves the jar's time alone; touch it so the check above holds.
  touch "$jar"
fi
printf '%s:%s\n' "$jar" "$(cat "$classpath")"
