#!/usr/bin/env bash
# End-to-end check of Slack delivery: runs the real ops/alertmanager/alertmanager.yml (routes,
# inhibit rules, message templates, api_url_file) in the apt `prometheus-alertmanager` binary,
# with a local python3 HTTP server standing in for Slack, fires one alert and waits until the fake
# Slack has received it. No network, nothing outside 127.0.0.1; exits 0 on delivery, 1 otherwise.
#
# Only two things differ from production, both rewritten into a temp copy of the config:
#   - api_url_file points at a temp file holding the fake webhook URL (instead of the file the
#     compose service writes from SLACK_WEBHOOK_URL);
#   - group_wait/group_interval are 1s, so the test takes seconds instead of 30s.
#
# Ports (override with env): AM_PORT (default 19793), SLACK_PORT (default 19794).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
config="$here/alertmanager.yml"
am_port="${AM_PORT:-19793}"
slack_port="${SLACK_PORT:-19794}"
alert_name="PickpleSlackDeliveryTest"
am_bin="$(command -v prometheus-alertmanager || true)"
amtool_bin="$(command -v amtool || true)"

fail() { echo "FAIL: $*" >&2; exit 1; }
[[ -n "$am_bin" && -n "$amtool_bin" ]] ||
  fail "prometheus-alertmanager/amtool not found (apt-get install prometheus-alertmanager)"
command -v curl >/dev/null || fail "curl not found"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A leftover server on our ports would make the test pass or fail for the wrong reason.
for port in "$am_port" "$slack_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port on 127.0.0.1 is already in use (set AM_PORT / SLACK_PORT)"
  fi
done

# --- fake Slack: stores each POST body as its own file (written, then renamed, so the poller
# never reads half a body) and answers like Slack does ("ok").
mkdir -p "$tmp/posts"
cat >"$tmp/fake_slack.py" <<'PY'
import http.server, os, sys

port, out = int(sys.argv[1]), sys.argv[2]

class Handler(http.server.BaseHTTPRequestHandler):
    count = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Handler.count += 1
        path = os.path.join(out, "%04d.json" % Handler.count)
        with open(path + ".tmp", "wb") as f:
            f.write(body)
        os.rename(path + ".tmp", path)
        self._reply(b"ok")

    def do_GET(self):  # readiness probe of this script
        self._reply(b"ready")

    def _reply(self, text):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
python3 "$tmp/fake_slack.py" "$slack_port" "$tmp/posts" 2>"$tmp/fake_slack.log" &
pids+=($!)

# --- temp config: the real one with the two substitutions described at the top.
printf 'http://127.0.0.1:%s/services/T000/B000/test' "$slack_port" >"$tmp/slack_url"
sed -e "s#api_url_file: .*#api_url_file: $tmp/slack_url#" \
    -e "s#group_wait: .*#group_wait: 1s#" \
    -e "s#group_interval: .*#group_interval: 1s#" \
    "$config" >"$tmp/alertmanager.yml"
grep -q "api_url_file: $tmp/slack_url" "$tmp/alertmanager.yml" ||
  fail "$config has no slack api_url_file to redirect"
"$amtool_bin" check-config "$tmp/alertmanager.yml" >"$tmp/check.log" 2>&1 ||
  { cat "$tmp/check.log" >&2; fail "rewritten config does not validate"; }

# Empty --cluster.listen-address: no gossip port, so nothing listens outside the two test ports.
"$am_bin" \
  --config.file="$tmp/alertmanager.yml" \
  --storage.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$am_port" \
  --cluster.listen-address= \
  >"$tmp/alertmanager.log" 2>&1 &
pids+=($!)

# wait_until <seconds> <what> <command...>: poll, bounded; the deadline is the only timing assumption.
wait_until() {
  local limit="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "--- alertmanager log:" >&2
      tail -n 20 "$tmp/alertmanager.log" >&2 || true
      echo "--- fake slack log:" >&2
      tail -n 20 "$tmp/fake_slack.log" >&2 || true
      fail "$what within ${limit}s"
    fi
    sleep 0.2
  done
}
wait_until 15 "fake Slack did not answer" curl -fs -o /dev/null "http://127.0.0.1:$slack_port/"
wait_until 15 "alertmanager was not ready" curl -fs -o /dev/null "http://127.0.0.1:$am_port/-/ready"

"$amtool_bin" --alertmanager.url="http://127.0.0.1:$am_port" alert add \
  "alertname=$alert_name" severity=critical app=ops-test \
  --annotation=summary="Slack delivery test" \
  --annotation=description="Sent by ops/alertmanager/test-slack.sh" ||
  fail "amtool could not post the alert"

# A POST counts only if it is JSON (what Slack requires) and mentions the alert name.
received() {
  python3 - "$tmp/posts" "$alert_name" <<'PY'
import glob, json, sys
folder, name = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(folder + "/*.json")):
    try:
        payload = json.load(open(path))
    except ValueError:
        continue
    if name in json.dumps(payload):
        print(path)
        sys.exit(0)
sys.exit(1)
PY
}
wait_until 30 "fake Slack received no message about $alert_name" received >/dev/null

echo "ok: Slack webhook received $alert_name from alertmanager ($(received | xargs cat | head -c 160)...)"
