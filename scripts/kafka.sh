#!/usr/bin/env bash
# Local Apache Kafka 4.x (KRaft, combined broker+controller) from Maven Central jars.
#   scripts/kafka.sh start    fetch jars once (cached), format storage once, start, wait until ready
#   scripts/kafka.sh stop     stop the broker started from this checkout
#   scripts/kafka.sh status   exit 0 when the broker answers
# Idempotent: start does nothing when a broker already answers on the port.
# A three-broker cluster, next to the single node (its own ports, data and logs under
# .work/kafka-cluster): one dedicated KRaft controller and brokers 1-3 on
# PICKPLE_KAFKA_CLUSTER_PORT (29092), +1 and +2. Topics for it: `topics apply` with
# PICKPLE_REPLICATION_FACTOR=3 PICKPLE_MIN_INSYNC_REPLICAS=2.
#   scripts/kafka.sh cluster start|stop|status|reset
#   scripts/kafka.sh cluster kill N     SIGKILL broker N (1-3), as a crash would
#   scripts/kafka.sh cluster start N    (re)start broker N alone
#   scripts/kafka.sh cluster env        PICKPLE_BROKERS=... for the cluster
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

cluster_port=${PICKPLE_KAFKA_CLUSTER_PORT:-29092}
cluster_controller_port=${PICKPLE_KAFKA_CLUSTER_CONTROLLER_PORT:-29190}
cluster_work=${PICKPLE_WORK:-$root/.work}/kafka-cluster

cluster_brokers() {
  echo "127.0.0.1:$cluster_port,127.0.0.1:$((cluster_port + 1)),127.0.0.1:$((cluster_port + 2))"
}

# cluster_node NAME: write NAME's properties (controller, broker1..3) and format its storage
# with the cluster's id, once.
cluster_node() {
  local name=$1 dir=$cluster_work/$1 role id listeners
  if [ "$name" = controller ]; then
    role=controller id=100
    listeners="listeners=CONTROLLER://127.0.0.1:$cluster_controller_port"
  else
    local n=${name#broker} port=$((cluster_port + ${name#broker} - 1))
    role=broker id=$n
    listeners="listeners=PLAINTEXT://127.0.0.1:$port
advertised.listeners=PLAINTEXT://127.0.0.1:$port"
  fi
  mkdir -p "$dir/data"
  awk -v l="$listeners" '{ if ($0 == "@LISTENERS@") print l; else print }' "$here/kafka/cluster.properties" |
    sed -e "s|@ROLE@|$role|" -e "s|@NODE_ID@|$id|" -e "s|@CONTROLLER_PORT@|$cluster_controller_port|"       -e "s|@DATA_DIR@|$dir/data|" > "$dir/server.properties"
  [ -f "$dir/data/meta.properties" ] && return
  local standalone=()
  [ "$role" = controller ] && standalone=(--standalone)
  java -cp "$(classpath)" $(java_opts) kafka.tools.StorageTool format "${standalone[@]}" \
    -t "$(cat "$cluster_work/cluster.id")" -c "$dir/server.properties" > "$dir/format.log" 2>&1 ||
    { cat "$dir/format.log"; die "storage format of $name failed"; }
}

cluster_up() { # NAME
  local dir=$cluster_work/$1
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then return; fi
  nohup java -cp "$(classpath)" $(java_opts) kafka.Kafka "$dir/server.properties" \
    > "$dir/server.log" 2>&1 9>&- &
  echo $! > "$dir/pid"
}

cluster_ready() { # broker N
  local port=$((cluster_port + $1 - 1))
  port_open "$port" && grep -q "Kafka Server started\|KafkaRaftServer.*started\|Transitioning from RECOVERY to RUNNING" \
    "$cluster_work/broker$1/server.log" 2>/dev/null
}

cluster_start() { # [N]
  command -v java >/dev/null || die "java not found (Java 17+ is needed)"
  fetch_jars
  mkdir -p "$cluster_work"
  if [ ! -s "$cluster_work/cluster.id" ]; then
    java -cp "$(classpath)" $(java_opts) kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 \
      > "$cluster_work/cluster.id"
  fi
  local nodes=(controller broker1 broker2 broker3)
  [ -n "${1:-}" ] && nodes=("broker$1")
  for n in "${nodes[@]}"; do cluster_node "$n"; cluster_up "$n"; done
  for n in "${nodes[@]}"; do
    [ "$n" = controller ] && continue
    wait_for "kafka $n" 180 "cluster_ready ${n#broker}"
  done
  log "kafka cluster: brokers $(cluster_brokers) (logs in $cluster_work)"
}

cluster_stop() {
  for n in broker3 broker2 broker1 controller; do
    local pidf=$cluster_work/$n/pid
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
      kill "$(cat "$pidf")"
      wait_for "kafka $n to stop" 60 "! kill -0 $(cat "$pidf") 2>/dev/null"
    fi
    rm -f "$pidf"
  done
}

cluster() {
  case "${1:-}" in
    start) cluster_start "${2:-}" ;;
    stop) cluster_stop ;;
    status) port_open "$cluster_port" && port_open "$((cluster_port + 1))" && port_open "$((cluster_port + 2))" ;;
    reset) cluster_stop; rm -rf "$cluster_work" ;;
    kill)
      local pidf=$cluster_work/broker${2:?which broker (1-3)}/pid
      [ -f "$pidf" ] || die "broker $2 is not running"
      kill -9 "$(cat "$pidf")"; rm -f "$pidf"
      log "SIGKILLed kafka broker $2"
      ;;
    env) echo "export PICKPLE_BROKERS=$(cluster_brokers) PICKPLE_REPLICATION_FACTOR=3 PICKPLE_MIN_INSYNC_REPLICAS=2" ;;
    *) die "usage: $0 cluster start [N]|stop|status|reset|kill N|env" ;;
  esac
}

case "${1:-start}" in
  cluster) shift; cluster "$@" ;;
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
  *) die "usage: $0 start|stop|status|reset|cluster ..." ;;
esac
