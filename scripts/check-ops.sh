#!/usr/bin/env bash
# Static checks of the operations files (Docker stack, Prometheus, Alertmanager, Grafana, Redis,
# Loki and Alloy). Needs no Docker engine, no network and no Rust build: every check reads files
# or runs a local tool (apt: prometheus, prometheus-alertmanager, docker-compose, redis-server;
# python3 + PyYAML). Loki and Alloy have no binary here: ops/check_logs.py reads their configs
# (Alloy's with its own parser, ops/alloy_syntax.py) and checks the LogQL queries against them.
#
#   scripts/check-ops.sh [METRICS_FILE]
#
# METRICS_FILE (optional): /metrics text scraped from running processes (concatenate processors
# and gateway). Dashboard and alert metric names must then appear in it, instead of in the
# built-in list of Pickple metrics. Scrape processes that have done some work: label sets are
# created on first use, so an idle process may not show e.g. pickple_dlq_records_total yet.
#
# Runs every check even after a failure, prints "ok: ..." or "FAIL: ..." (with the tool's output
# indented below) per check, and exits 1 if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."

metrics_file="${1:-}"
if [[ -n "$metrics_file" && ! -r "$metrics_file" ]]; then
  echo "FAIL: metrics file $metrics_file is not readable" >&2
  exit 2
fi

tmp="$(mktemp -d)"
started=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
# Debian's Python: docker-compose (apt) brings PyYAML to it, whatever python3 is first on PATH.
PY=/usr/bin/python3
# check DESCRIPTION COMMAND...: run, report one line, keep going.
check() {
  local what="$1"
  shift
  if "$@" >"$tmp/out" 2>&1; then
    echo "ok: $what"
  else
    echo "FAIL: $what"
    sed -e 's/^/    /' "$tmp/out" | tail -n 40
    failures=$((failures + 1))
  fi
}

# tool NAME: the command must exist (a missing tool is a failed check, not a skipped one).
tool() {
  command -v "$1" >/dev/null 2>&1 || { echo "$1 not found (apt-get install $2)"; return 1; }
}

promtool_config() { tool promtool prometheus && promtool check config ops/prometheus/prometheus.yml; }
promtool_rules() { tool promtool prometheus && promtool check rules ops/prometheus/alerts.yml; }
promtool_tests() { tool promtool prometheus && promtool test rules ops/prometheus/alerts_test.yml; }
amtool_config() { tool amtool prometheus-alertmanager && amtool check-config ops/alertmanager/alertmanager.yml; }
compose_config() { tool docker-compose docker-compose && docker-compose -f docker-compose.yml config -q; }
# The stack as Compose resolves it (anchors merged, paths absolute), for check_logs.py compose.
compose_logs() {
  tool docker-compose docker-compose || return 1
  docker-compose -f docker-compose.yml config >"$tmp/compose.yml" || return 1
  "$PY" ops/check_logs.py compose "$tmp/compose.yml"
}

# YAML files no tool above reads (Grafana provisioning, Redpanda, Console): at least they parse.
yaml_parses() {
  "$PY" - ops/grafana/provisioning/*/*.yml redpanda/*.yaml ops/loki/*.yml <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    with open(path) as f:
        yaml.safe_load(f)
print(f"{len(sys.argv) - 1} files parse")
PY
}

# Every Redis config must load in a real redis-server: a bad directive makes the container exit
# at start. Each server runs on 127.0.0.1 (ports 19871-19873) with the compose host names
# replaced by 127.0.0.1, and is shut down as soon as it answers PING.
redis_configs_load() {
  tool redis-server redis-server || return 1
  local port=19870 conf name pid deadline mode
  for conf in ops/redis/master.conf ops/redis/replica.conf ops/redis/sentinel.conf; do
    port=$((port + 1))
    name="$(basename "$conf" .conf)"
    mkdir -p "$tmp/redis-$name"
    # Sentinel rewrites its file and resolves the master's name at load time: use a copy.
    sed -e 's/redis-master/127.0.0.1/g; s/redis-replica/127.0.0.1/g' "$conf" >"$tmp/redis-$name/$name.conf"
    mode=()
    [[ "$name" == sentinel ]] && mode=(--sentinel)
    redis-server "$tmp/redis-$name/$name.conf" "${mode[@]}" --port "$port" --bind 127.0.0.1 \
      --dir "$tmp/redis-$name" --daemonize no --logfile "$tmp/redis-$name/log" &
    pid=$!
    started+=("$pid")
    deadline=$((SECONDS + 10))
    until redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; do
      if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
        echo "$conf does not load:"
        cat "$tmp/redis-$name/log" 2>/dev/null | tail -n 5
        return 1
      fi
      sleep 0.1
    done
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  echo "master, replica and sentinel configs load"
}

bash_syntax() {
  local f
  for f in ops/alertmanager/test-slack.sh ops/test-prometheus-scrape.sh ops/test-sentinel-failover.sh \
    scripts/check-ops.sh; do
    bash -n "$f" || return 1
  done
}

check "promtool check config ops/prometheus/prometheus.yml" promtool_config
check "promtool check rules ops/prometheus/alerts.yml" promtool_rules
check "promtool test rules ops/prometheus/alerts_test.yml" promtool_tests
check "every alert has a firing and a quiet unit test" "$PY" ops/check_ops.py alert-tests
check "amtool check-config ops/alertmanager/alertmanager.yml" amtool_config
check "docker-compose -f docker-compose.yml config -q" compose_config
check "compose services scraped by prometheus.yml, unique PICKPLE_INSTANCE_ID" "$PY" ops/check_ops.py compose
check "Dockerfile builds and copies only workspace bin targets" "$PY" ops/check_dockerfile.py
if [[ -n "$metrics_file" ]]; then
  check "Grafana dashboards valid, metric names in $metrics_file" "$PY" ops/check_ops.py metrics "$metrics_file"
else
  check "Grafana dashboards valid, metric names are Pickple metrics" "$PY" ops/check_ops.py metrics
fi
check "Grafana/Redpanda/Loki YAML files parse" yaml_parses
check "Alloy config parses, components and references valid (ops/alloy/config.alloy)" "$PY" ops/check_logs.py alloy
check "Loki config: filesystem, tsdb v13, structured metadata, retention (ops/loki/loki.yml)" "$PY" ops/check_logs.py loki
check "LogQL labels set by Alloy, Loki uid provisioned, trace links match real log lines" "$PY" ops/check_logs.py queries
check "loki and alloy in docker-compose config: volumes, mounts, ports, app labels" compose_logs
check "Redis configs load in redis-server" redis_configs_load
check "shell scripts parse (bash -n)" bash_syntax

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
