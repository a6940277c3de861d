#!/usr/bin/env python3
"""Consistency checks between the operations files, used by scripts/check-ops.sh.

promtool/amtool/docker-compose validate each file on its own; these checks catch what falls
between the files, where mistakes are silent at runtime (an empty panel, an alert that can never
fire, a processor nobody scrapes):

  metrics [METRICS_FILE]  Grafana dashboards are valid JSON on the provisioned data source, and
                          every metric name used by a dashboard (its Prometheus queries; the
                          Loki ones are ops/check_logs.py's) or an alert rule exists: by
                          default in the list of metrics the Pickple processes export (below);
                          with METRICS_FILE, in that scraped /metrics text (concatenate the
                          scrapes of several processes into one file).
  alert-tests             every alert in alerts.yml has a firing and a quiet case in
                          alerts_test.yml.
  compose                 every processor/gateway service in docker-compose.yml is scraped by
                          ops/prometheus/prometheus.yml with the right `app` label, every scrape
                          target exists, and PICKPLE_INSTANCE_ID values are unique (a duplicate
                          transactional.id makes two instances fence each other).

Exit 0 when fine, 1 with one line per problem on stdout.
"""
import glob
import json
import os
import re
import sys

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OPS = os.path.join(ROOT, "ops")
ALERTS = os.path.join(OPS, "prometheus", "alerts.yml")
ALERT_TESTS = os.path.join(OPS, "prometheus", "alerts_test.yml")
PROMETHEUS = os.path.join(OPS, "prometheus", "prometheus.yml")
DASHBOARDS = os.path.join(OPS, "grafana", "dashboards")
DATASOURCES = os.path.join(OPS, "grafana", "provisioning", "datasources")
COMPOSE = os.path.join(ROOT, "docker-compose.yml")

# What the Pickple processes export (the contract with the Rust code), plus Prometheus' own `up`.
KNOWN_METRICS = {
    "pickple_records_in_total", "pickple_records_out_total", "pickple_commits_total",
    "pickple_transaction_aborts_total", "pickple_restore_records_total",
    "pickple_restore_remaining_records", "pickple_dlq_records_total", "pickple_consumer_lag",
    "pickple_assigned_partitions", "pickple_orders_in_status",
    "pickple_order_oldest_waiting_seconds", "pickple_http_requests_total",
    "pickple_http_in_flight", "pickple_store_largest_value_bytes",
    "pickple_store_value_limit_bytes", "pickple_store_entries", "pickple_store_bytes",
    "pickple_state_disk_bytes", "pickple_views_unreadable_total", "pickple_task_retries_total", "pickple_longpoll_waiters", "pickple_views_sink_live", "up",
}
KNOWN_HISTOGRAMS = {"pickple_commit_latency_seconds", "pickple_http_request_duration_seconds"}
# Series Prometheus itself adds to every scrape: never in a /metrics text.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                "and", "or", "unless", "inf", "nan"}


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def metric_names(expr):
    """Metric names referenced by a PromQL expression (a small scanner, not a full parser)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\$\{[^}]*\}|\$\w+", "1", s)  # Grafana variables
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges, subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    found = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok, before = m.group(0), s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":  # 1e9, 10m, 0.5e3
            continue
        if s[m.end():].lstrip().startswith("("):  # function or aggregation
            continue
        if tok.lower() in PROMQL_WORDS:
            continue
        found.add(tok)
    return found


def template_query_expr(query):
    """The PromQL inside a Grafana template variable query, if any."""
    if isinstance(query, dict):
        query = query.get("query", "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*", query or "", re.S)
    if m:
        return m.group(1)
    if re.fullmatch(r"\s*label_values\(\s*[A-Za-z_]\w*\s*\)\s*", query or ""):
        return ""
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query or "", re.S)
    return m.group(1) if m else query or ""


def scraped_names(path):
    names = set()
    with open(path) as f:
        for line in f:
            if line.startswith("# TYPE ") or line.startswith("# HELP "):
                names.add(line.split()[2])
            elif line.strip() and not line.startswith("#"):
                names.add(re.split(r"[{\s]", line.strip(), maxsplit=1)[0])
    return names


def recorded_names():
    out = set()
    for g in load_yaml(ALERTS).get("groups", []):
        for r in g.get("rules", []):
            if "record" in r:
                out.add(r["record"])
    return out


def check_metrics(argv):
    problems = []
    recorded = recorded_names()
    if argv:
        exported = scraped_names(argv[0])
        allowed = exported | SYNTHETIC | recorded
        source = f"scraped metrics in {argv[0]}"
    else:
        allowed = set(KNOWN_METRICS) | recorded
        for h in KNOWN_HISTOGRAMS:
            allowed |= {h + "_bucket", h + "_sum", h + "_count"}
        source = "the Pickple metric list"

    uids, types = set(), {}
    for path in glob.glob(os.path.join(DATASOURCES, "*.y*ml")):
        for ds in load_yaml(path).get("datasources", []):
            uids.add(ds.get("uid"))
            types[ds.get("uid")] = ds.get("type")

    def is_loki(*objs):
        """LogQL, not PromQL: the first object that names a data source names a Loki one
        (LogQL queries are checked by ops/check_logs.py)."""
        for o in objs:
            ds = o.get("datasource")
            if isinstance(ds, dict):
                return ds.get("type") == "loki" or types.get(ds.get("uid")) == "loki"
        return False

    exprs = []  # (where, expr)
    dash_files = sorted(glob.glob(os.path.join(DASHBOARDS, "*.json")))
    if not dash_files:
        problems.append(f"no dashboards in {DASHBOARDS}")
    seen_dash_uids = {}
    for path in dash_files:
        name = os.path.basename(path)
        try:
            with open(path) as f:
                dash = json.load(f)
        except ValueError as e:
            problems.append(f"{name}: invalid JSON: {e}")
            continue
        if dash.get("uid") in seen_dash_uids:
            problems.append(f"{name}: uid {dash.get('uid')} also used by {seen_dash_uids[dash['uid']]}")
        seen_dash_uids[dash.get("uid")] = name
        panels, stack, ids = [], list(dash.get("panels", [])), set()
        while stack:
            p = stack.pop(0)
            panels.append(p)
            stack += p.get("panels", [])
        for p in panels:
            title = p.get("title", "?")
            if p.get("id") in ids:
                problems.append(f"{name}: panel id {p.get('id')} used twice")
            ids.add(p.get("id"))
            if p.get("type") == "row":
                continue
            targets = p.get("targets", [])
            if not targets:
                problems.append(f"{name}: panel '{title}' has no query")
            for t in [p] + targets:
                ds = t.get("datasource")
                if isinstance(ds, dict) and ds.get("uid") not in uids and not str(ds.get("uid", "")).startswith("$"):
                    problems.append(f"{name}: panel '{title}' uses data source uid {ds.get('uid')!r}, provisioned: {sorted(uids)}")
            for t in targets:
                if not t.get("expr", "").strip():
                    problems.append(f"{name}: panel '{title}' query {t.get('refId')} is empty")
                if not is_loki(t, p):
                    exprs.append((f"{name} panel '{title}'", t.get("expr", "")))
        for v in dash.get("templating", {}).get("list", []):
            if v.get("type") == "query" and not is_loki(v):
                exprs.append((f"{name} variable '{v.get('name')}'", template_query_expr(v.get("query"))))

    for g in load_yaml(ALERTS).get("groups", []):
        for r in g.get("rules", []):
            exprs.append((f"alerts.yml rule {r.get('alert') or r.get('record')}", str(r.get("expr", ""))))

    used = 0
    for where, expr in exprs:
        for n in sorted(metric_names(expr)):
            used += 1
            if n not in allowed:
                problems.append(f"{where}: metric '{n}' not in {source}")
    return problems, f"{len(dash_files)} dashboards, {len(exprs)} expressions, {used} metric references checked against {source}"


def check_alert_tests(_argv):
    alerts = [r["alert"] for g in load_yaml(ALERTS).get("groups", []) for r in g.get("rules", []) if "alert" in r]
    firing, quiet = set(), set()
    for t in load_yaml(ALERT_TESTS).get("tests", []):
        for a in t.get("alert_rule_test", []) or []:
            (firing if a.get("exp_alerts") else quiet).add(a.get("alertname"))
    problems = []
    for a in alerts:
        if a not in firing:
            problems.append(f"alert {a} has no test case where it fires")
        if a not in quiet:
            problems.append(f"alert {a} has no test case where it stays quiet")
    for a in sorted((firing | quiet) - set(alerts)):
        problems.append(f"alerts_test.yml tests unknown alert {a}")
    return problems, f"{len(alerts)} alerts, each with a firing and a quiet case"


def check_compose(_argv):
    compose = load_yaml(COMPOSE)
    prom = load_yaml(PROMETHEUS)
    targets = {}  # (job, target) -> labels
    for sc in prom.get("scrape_configs", []):
        for st in sc.get("static_configs", []):
            for tgt in st.get("targets", []):
                targets[(sc["job_name"], tgt)] = st.get("labels", {}) or {}
    problems, expected, instance_ids = [], set(), {}
    for name, svc in (compose.get("services") or {}).items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = cmd.split()
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env if "=" in e)
        if not cmd or cmd[0] not in ("pickple-processor", "pickple-gateway"):
            continue
        iid = env.get("PICKPLE_INSTANCE_ID")
        if not iid:
            problems.append(f"compose service {name} has no PICKPLE_INSTANCE_ID")
        elif iid in instance_ids:
            problems.append(f"compose services {instance_ids[iid]} and {name} share PICKPLE_INSTANCE_ID {iid}")
        else:
            instance_ids[iid] = name
        if cmd[0] == "pickple-processor":
            app = cmd[cmd.index("--app") + 1] if "--app" in cmd else None
            port = str(env.get("PICKPLE_METRICS_ADDR", "")).rpartition(":")[2]
            key = ("processor", f"{name}:{port}")
            want = app
        else:
            port = str(env.get("PICKPLE_GATEWAY_ADDR", "0.0.0.0:8080")).rpartition(":")[2]
            key = ("gateway", f"{name}:{port}")
            want = None
        expected.add(key)
        if key not in targets:
            problems.append(f"compose service {name} is not scraped: no target {key[1]} in job {key[0]}")
        elif want and targets[key].get("app") != want:
            problems.append(f"target {key[1]} has app={targets[key].get('app')!r}, service runs --app {want}")
    for key in sorted(targets):
        if key[0] in ("processor", "gateway") and key not in expected:
            problems.append(f"prometheus target {key[1]} (job {key[0]}) is no Pickple service in docker-compose.yml: it would be permanently down")
    return problems, f"{len(expected)} Pickple services scraped with matching app labels, instance ids unique"


CHECKS = {"metrics": check_metrics, "alert-tests": check_alert_tests, "compose": check_compose}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(CHECKS)} [args]")
    problems, summary = CHECKS[sys.argv[1]](sys.argv[2:])
    for p in problems:
        print(p)
    if not problems:
        print(summary)
    sys.exit(1 if problems else 0)
