#!/usr/bin/env bash
# Local Apache Kafka 4.x (KRaft, combined broker+controller) from Maven Central jars.
#   scripts/kafka.sh start    fetch jars once (cached), format storage once, start, wait until ready
#   scripts/kafka.sh stop     stop the broker started from this checkout
#   scripts/kafka.sh status   exit 0 when the broker answers
# Idempotent: start does nothing when a broker already answers on the port.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"

port=${PICKPLE_KAFKA_PORT:-19092}
controller_port=${PICKPLE_KAFKA_CONTROLLER_PORT:-19093}
work=${PICKPLE_WORK:-$root/.work}/kafka
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
jars=${PICKPLE_CACHE:-$HOME/.cache/pickple}/kafka-$version

fetch_jars() {
  [ -f "$jars/.complete" ] && return
  log "fetching Kafka $version jars from Maven Central into $jars"
  mkdir -p "$jars"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$jars"
  touch "$jars/.complete"
}

classpath() { printf '%s:' "$jars"/*.jar; }

java_opts() {
  echo "-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true" \
       "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties"
}

start() {
  if port_open "$port"; then log "kafka already listening on 127.0.0.1:$port"; return; fi
  command -v java >/dev/null || die "java not found (Java 17+ is needed)"
  fetch_jars
  mkdir -p "$work/data"
  sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@DATA_DIR@|$work/data|g" \
    "$here/kafka/server.properties" > "$work/server.properties"
  if [ ! -f "$work/data/meta.properties" ]; then
    local id
    id=$(java -cp "$(classpath)" $(java_opts) kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    log "formatting KRaft storage (cluster $id)"
    java -cp "$(classpath)" $(java_opts) kafka.tools.StorageTool format --standalone \
      -t "$id" -c "$work/server.properties" > "$work/format.log" 2>&1 \
      || { cat "$work/format.log"; die "storage format failed"; }
  fi
  log "starting kafka on 127.0.0.1:$port (logs: $work/server.log)"
  # 9>&-: the broker must not inherit the start lock, or it would hold it for its whole life.
  nohup java -cp "$(classpath)" $(java_opts) kafka.Kafka "$work/server.properties" \
    > "$work/server.log" 2>&1 9>&- &
  echo $! > "$work/pid"
  wait_for "kafka" 120 kafka_ready
}

kafka_ready() {
  port_open "$port" && grep -q "Kafka Server started\|KafkaRaftServer.*started\|Transitioning from RECOVERY to RUNNING" "$work/server.log" 2>/dev/null
}

stop() {
  if [ -f "$work/pid" ] && kill -0 "$(cat "$work/pid")" 2>/dev/null; then
    kill "$(cat "$work/pid")"
    wait_for "kafka to stop" 60 "! kill -0 $(cat "$work/pid") 2>/dev/null"
  fi
  rm -f "$work/pid"
}

case "${1:-start}" in
  start)
    # Two callers starting at once (parallel test shells) would format the storage twice with
    # different cluster ids; the second waits here and then finds the broker up.
    mkdir -p "$work"
    exec 9> "$work/start.lock"
    flock -w 300 9 || die "another kafka.sh start has held $work/start.lock for 5 minutes"
    start
    ;;
  stop) stop ;;
  status) port_open "$port" ;;
  reset) stop; rm -rf "$work" ;;
  *) die "usage: $0 start|stop|status|reset" ;;
esac
