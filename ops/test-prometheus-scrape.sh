#!/usr/bin/env bash
# End-to-end check of the metrics pipeline: the real `prometheus` binary (apt) scrapes every
# Pickple process and finds the series the dashboards and alert rules read.
#
# Starts, on a fresh topic prefix and Redis key prefix (nothing shared with other tests):
#   - the eight applications (target/debug/pickple-processor --app ...), /metrics on
#     127.0.0.1:BASE+1..BASE+8, and the gateway (target/debug/pickple-gateway) on BASE+10;
#   - Prometheus on BASE+20 with scrape_interval 1s (jobs `processor`, one `app` label per
#     application, and `gateway`) and the real ops/prometheus/alerts.yml rules.
# and makes each kind of event happen once, so that every labelled series exists (a Prometheus
# client only exports a label set after its first use):
#   - stock: a product is created and committed, then stock is restarted on an empty state dir,
#     so it restores its store from the changelog (restore metrics); then a garbage record
#     (dead letter) and a valid command (records in/out, commits, commit latency, lag);
#   - notification: runs against an SMTP port nobody listens on (BASE+99) and receives a
#     DeliveryCompleted event: the send fails, the transaction aborts (transaction aborts);
#   - order: punctuates every second (orders by status, oldest waiting order);
#   - gateway: answers /health and GET /api/v1/products/<id> (HTTP requests, latency, in flight).
# Then, polling with a deadline (no fixed sleeps): every target is `up == 1` in Prometheus, the
# pipeline series are queryable, the DeadLetterRecords alert fires on the real data; and the
# /metrics text of all nine processes passes scripts/check-ops.sh METRICS_FILE (every metric a
# dashboard or alert rule uses exists).
#
# Needs: Kafka on PICKPLE_BROKERS (127.0.0.1:19092) and Redis on PICKPLE_REDIS_URL
# (redis://127.0.0.1:16379) — scripts/services.sh start —, the debug binaries (cargo build), kcat,
# curl, prometheus. Prints "ok: ..." lines; exits 1 with logs and Prometheus' targets on failure.
#
# Ports: PROM_SCRAPE_PORT_BASE (default 19500).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

brokers="${PICKPLE_BROKERS:-127.0.0.1:19092}"
redis_url="${PICKPLE_REDIS_URL:-redis://127.0.0.1:16379}"
base="${PROM_SCRAPE_PORT_BASE:-19500}"
gateway_port=$((base + 10))
prom_port=$((base + 20))
dead_smtp_port=$((base + 99))
started_at=$SECONDS

. "$here/test-lib.sh"
mapfile -t apps < <("$topics" apps)
require kcat curl prometheus

metrics_port() { # metrics_port APP
  local i
  for i in "${!apps[@]}"; do [[ "${apps[$i]}" == "$1" ]] && { echo $((base + 1 + i)); return; }; done
  return 1
}
ports_free PROM_SCRAPE_PORT_BASE $(seq $((base + 1)) $((base + ${#apps[@]}))) "$gateway_port" "$prom_port" "$dead_smtp_port"

tmp="$(mktemp -d)"
mkdir -p "$tmp/logs" "$tmp/state" "$tmp/state-restarted" "$tmp/prometheus-data"
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    echo "--- Prometheus targets (http://127.0.0.1:$prom_port/api/v1/targets):" >&2
    local targets
    if targets=$(curl -fsS -m 5 "http://127.0.0.1:$prom_port/api/v1/targets" 2>/dev/null); then
      "$PY" -c '
import json, sys
active = json.loads(sys.argv[1])["data"]["activeTargets"]
if not active:
    print("  (no active targets: the config was not loaded yet)")
for t in active:
    l = t["labels"]
    print("  %s app=%s %s health=%s lastError=%r" % (l.get("job"), l.get("app"), t["scrapeUrl"], t["health"], t["lastError"]))
' "$targets" >&2 2>/dev/null || echo "$targets" >&2
    else
      echo "  (prometheus not answering)" >&2
    fi
    local f
    for f in "$tmp"/logs/*.log; do
      [[ -s "$f" ]] || continue
      echo "--- $(basename "$f") (last 15 lines):" >&2
      tail -n 15 "$f" >&2
    done
  fi
  if ((${#pid_of[@]})); then stop_pids "${pid_of[@]}"; fi
  # The views this run wrote to the shared Redis (best effort).
  if [[ -n "${run_id:-}" ]]; then
    redis-cli -u "$redis_url" --scan --pattern "$run_id:*" 2>/dev/null |
      xargs -r redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
  fi
  if [[ -n "${prefix:-}" ]]; then
    "$topics" delete --brokers "$brokers" --name-prefix "$prefix" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_id="obs$$-$(date +%s)"
prefix="$run_id."
export PICKPLE_BROKERS="$brokers" RUST_LOG="${RUST_LOG:-info,rdkafka=warn}"
unset PICKPLE_REDIS_SENTINELS # this test uses the plain Redis on PICKPLE_REDIS_URL

"$topics" apply --brokers "$brokers" --prefix "$prefix" >"$tmp/logs/topics.log" 2>&1 ||
  fail "topics apply --prefix $prefix failed: $(cat "$tmp/logs/topics.log")"
echo "ok: topics created with prefix $prefix"

# start_app APP STATE_DIR [ENV=VALUE...]
start_app() {
  local app="$1" state="$2"
  shift 2
  env "$@" PICKPLE_REDIS_URL="$redis_url" PICKPLE_REDIS_PREFIX="$run_id:" \
    "$processor" --app "$app" --topic-prefix "$prefix" --instance-id "$app-1" \
    --state-dir "$state" --metrics-addr "127.0.0.1:$(metrics_port "$app")" \
    >>"$tmp/logs/$app.log" 2>&1 &
  pid_of[$app]=$!
}
for app in "${apps[@]}"; do
  if [[ "$app" == notification ]]; then
    # The mail server is down: every send fails and is retried, each retry aborts a transaction.
    start_app "$app" "$tmp/state" PICKPLE_SMTP="127.0.0.1:$dead_smtp_port"
  else
    start_app "$app" "$tmp/state"
  fi
done
PICKPLE_GATEWAY_ADDR="127.0.0.1:$gateway_port" PICKPLE_TOPIC_PREFIX="$prefix" \
  PICKPLE_REDIS_URL="$redis_url" PICKPLE_REDIS_PREFIX="$run_id:" PICKPLE_VIEWS_IGNORE_READINESS=true \
  "$gateway" >"$tmp/logs/gateway.log" 2>&1 &
pid_of[gateway]=$!

metrics_of() { curl -fsS -m 5 "http://127.0.0.1:$1/metrics" 2>/dev/null; }
# has_series PORT REGEX: the /metrics text on PORT has a sample line matching REGEX.
# (Captured first: `curl | grep -q` can fail under pipefail when grep exits before curl is done.)
has_series() { local text; text=$(metrics_of "$1") && grep -Eq "$2" <<<"$text"; }
produce() { # produce TOPIC KEY VALUE
  printf '%s\n' "$3" | kcat -b "$brokers" -P -t "$prefix$1" -k "$2" 2>>"$tmp/logs/kcat.log" ||
    fail "kcat could not produce to $prefix$1"
}

stock_port=$(metrics_port stock)
product="p-$run_id"
produce stock-commands "$product" \
  '{"type":"CreateProduct","product_id":"'"$product"'","vendor_id":"v-obs","name":"Scrape test","description":"","price":100,"image_url":null,"public":true}'
wait_until 60 "stock committed the CreateProduct" has_series "$stock_port" '^pickple_commits_total\{app="stock"\} [1-9]'

# Restart stock on an empty state dir (same instance id: static membership gives it the same
# partitions back); it restores the product's store partition from the changelog.
stop_pids "${pid_of[stock]}"
unset 'pid_of[stock]'
start_app stock "$tmp/state-restarted"
wait_until 60 "restarted stock restored its store from the changelog" \
  has_series "$stock_port" '^pickple_restore_records_total\{app="stock",store="[^"]+"\} [1-9]'
echo "ok: stock restarted on an empty state dir and restored its store from the changelog"

produce stock-commands "$product" 'this is not a stock command'
produce stock-commands "$product" '{"type":"SetStock","product_id":"'"$product"'","quantity":5}'
produce delivery-events "o-$run_id" \
  '{"type":"DeliveryCompleted","order_id":"o-'"$run_id"'","username":"obs","email":"obs@example.com"}'
wait_until 60 "stock dead-lettered the garbage record" \
  has_series "$stock_port" '^pickple_dlq_records_total\{app="stock",topic="stock-commands"\} [1-9]'
echo "ok: a garbage record on stock-commands went to the dead-letter topic"
wait_until 60 "notification retried a mail (SMTP down)" \
  has_series "$(metrics_port notification)" '^pickple_task_retries_total\{app="notification",topic="delivery-events"\} [1-9]'
echo "ok: notification backs off and retries while its mail server is down"

# The gateway serves the product the views sink wrote to Redis (HTTP metrics with a route label).
# Anonymous readers see an availability state, not levels: 5 units left of 5 is LOW (the
# domain's rule: at most 5 units), SOLD_OUT before the SetStock.
product_served() {
  local body
  body=$(curl -fsS -m 5 "http://127.0.0.1:$gateway_port/api/v1/products/$product" 2>/dev/null) &&
    grep -q '"availability":"LOW"' <<<"$body"
}
wait_until 60 "gateway serves the product with its stock" product_served
curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$gateway_port/health" || fail "gateway /health"
echo "ok: gateway serves the product written by the pipeline"

# --- Prometheus: the scrape config of ops/prometheus/prometheus.yml (jobs, app labels,
# honor_labels) with local targets and 1 s intervals, and the real alert rules.
cp "$root/ops/prometheus/alerts.yml" "$tmp/alerts.yml"
{
  echo "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}"
  echo "rule_files: [alerts.yml]"
  echo "scrape_configs:"
  echo "  - job_name: gateway"
  echo "    static_configs:"
  echo "      - {targets: ['127.0.0.1:$gateway_port'], labels: {app: gateway}}"
  echo "  - job_name: processor"
  echo "    honor_labels: true"
  echo "    static_configs:"
  for app in "${apps[@]}"; do
    echo "      - {targets: ['127.0.0.1:$(metrics_port "$app")'], labels: {app: $app}}"
  done
} >"$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml" >"$tmp/logs/promtool.log" 2>&1 ||
  fail "generated prometheus.yml does not validate: $(cat "$tmp/logs/promtool.log")"
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus-data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/logs/prometheus.log" 2>&1 &
pid_of[prometheus]=$!
prom_ready() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$prom_port/-/ready" 2>/dev/null; }
wait_until 30 "prometheus ready" prom_ready

# One round of checks against the Prometheus HTTP API; prints the state of each, exit 0 if all hold.
cat >"$tmp/promcheck.py" <<'PY'
import json, sys, urllib.parse, urllib.request

url, apps = sys.argv[1], sys.argv[2].split()
targets = len(apps) + 1

def query(q):
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{q}: {body}")
    return [(s["metric"], float(s["value"][1])) for s in body["data"]["result"]]

def labels(m, *names):
    return ",".join(f"{n}={m.get(n, '')}" for n in names)

checks = []
def check(name, ok, detail):
    checks.append((name, ok, detail))

up = query("up")
down = [labels(m, "job", "app", "instance") for m, v in up if v != 1]
check(f"all {targets} targets up == 1", len(up) == targets and not down,
      f"{len(up)} targets, not up: {down}")
for metric, q in [
    ("pickple_records_in_total", 'pickple_records_in_total{job="processor",app="stock",topic="stock-commands"}'),
    ("pickple_commits_total", 'pickple_commits_total{job="processor",app="stock"}'),
    ("pickple_dlq_records_total", 'pickple_dlq_records_total{job="processor",app="stock",topic="stock-commands"} >= 1'),
    ("pickple_http_requests_total", 'pickple_http_requests_total{job="gateway",route="/api/v1/products/{product_id}",method="GET",status="200"}'),
]:
    r = query(q)
    check(f"{metric} scraped ({q})", bool(r), f"{len(r)} series")
assigned = {m.get("app"): v for m, v in query('sum by (app) (pickple_assigned_partitions{job="processor"})')}
missing = [a for a in apps if assigned.get(a) != 6]
check(f"pickple_assigned_partitions: each of the {len(apps)} apps owns all 6 partitions",
      not missing, f"per app: {assigned}")
rate = query("pickple:gateway_requests:rate1m")
check("recording rule pickple:gateway_requests:rate1m evaluates on scraped data", bool(rate), f"{rate}")
alerts = query('ALERTS{alertname="DeadLetterRecords",alertstate="firing",app="stock",topic="stock-commands"}')
check("alert DeadLetterRecords fires for stock/stock-commands", bool(alerts), f"{len(alerts)} series")

for name, ok, detail in checks:
    print(f"{'ok' if ok else 'waiting'}: {name}" + ("" if ok else f" ({detail})"))
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY
prom_ok() { "$PY" "$tmp/promcheck.py" "http://127.0.0.1:$prom_port" "${apps[*]}" >"$tmp/promcheck.out" 2>&1; }
deadline=$((SECONDS + 60))
until prom_ok; do
  if ((SECONDS >= deadline)); then
    cat "$tmp/promcheck.out" >&2
    fail "Prometheus did not see every target up and every pipeline series within 60s"
  fi
  sleep 0.5
done
cat "$tmp/promcheck.out"

# --- The /metrics text of all nine processes against the dashboards and alert rules. Some
# series appear a few seconds after the events (consumer lag: librdkafka statistics every 5 s),
# so poll the metric-name check first, then run the whole of check-ops once on that text.
scrape_all() {
  local app
  : >"$tmp/scraped.metrics"
  for app in "${apps[@]}"; do metrics_of "$(metrics_port "$app")" >>"$tmp/scraped.metrics" || return 1; done
  metrics_of "$gateway_port" >>"$tmp/scraped.metrics"
}
names_ok() { scrape_all && "$PY" ops/check_ops.py metrics "$tmp/scraped.metrics" >"$tmp/names.out" 2>&1; }
deadline=$((SECONDS + 30))
until names_ok; do
  if ((SECONDS >= deadline)); then
    cat "$tmp/names.out" >&2
    fail "dashboard/alert metric names missing from the scraped /metrics text"
  fi
  sleep 0.5
done
if ! "$root/scripts/check-ops.sh" "$tmp/scraped.metrics" >"$tmp/check-ops.out" 2>&1; then
  cat "$tmp/check-ops.out" >&2
  fail "scripts/check-ops.sh on the scraped /metrics text"
fi
grep '^ok: Grafana dashboards' "$tmp/check-ops.out" || true
echo "ok: scripts/check-ops.sh passes on the /metrics text of all ${#apps[@]} processors and the gateway ($((SECONDS - started_at))s)"
