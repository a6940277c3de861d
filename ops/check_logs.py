#!/usr/bin/env python3
"""Checks of the log pipeline's files (Loki, Alloy, Grafana's Loki queries), for check-ops.sh.

Neither Loki nor Alloy can be run on the development machines (no binary in the registries
they reach, and Loki's Go module is not to be used), so this reads their files the way they
would and checks what falls between the files, where a mistake is silent at runtime (a panel
that stays empty, a trace link that never matches):

  alloy                 ops/alloy/config.alloy parses (ops/alloy_syntax.py: Alloy's grammar),
                        every component is one Alloy has, with known arguments and the required
                        ones, every reference names a declared component's export, regexes
                        compile, stage.match selectors use labels that exist at that point.
  loki                  ops/loki/loki.yml: known top-level sections, single binary on the
                        filesystem, a TSDB v13 schema (structured metadata needs it), structured
                        metadata allowed, retention set and enforced by the compactor.
  queries               every label a LogQL query names (dashboards, Grafana data sources) in a
                        stream selector {...}, in by (...)/without (...) or in a label filter
                        (| name="...") is a label the Alloy config sets or structured metadata
                        it keeps (stream selectors: labels only); `level` values are ones the
                        pipeline writes; each selector has a non-empty matcher (Loki refuses
                        others); Loki panels and variables use the provisioned Loki uid; a line
                        filter on a "message" names a message the Rust code logs; the Loki
                        data source's derived field finds the trace id in log lines built the
                        way pickple-telemetry writes them, and Alloy's pipeline, run over those
                        lines, yields the labels and structured metadata the queries expect;
                        Grafana's $-expansion of the data sources file leaves its macros alone.
  compose RENDERED      RENDERED is `docker-compose config` output: loki and alloy are services,
                        their volumes declared; each reads the config file this repo has at the
                        path its command names; Loki's data paths are on a volume; the Docker
                        socket is mounted read-only where Alloy looks for it; Alloy pushes to
                        the loki service's port; Grafana's Loki URL is that port; and the `app`
                        label Alloy derives for each Pickple service is its `--app` (`gateway`
                        for the gateway), the `app` Prometheus gives its metrics.

Exit 0 when fine, 1 with one line per problem on stdout.
"""
import glob
import json
import os
import re
import sys

import yaml

sys.dont_write_bytecode = True  # no ops/__pycache__ left in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alloy_syntax  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OPS = os.path.join(ROOT, "ops")
ALLOY = os.path.join(OPS, "alloy", "config.alloy")
LOKI = os.path.join(OPS, "loki", "loki.yml")
DASHBOARDS = os.path.join(OPS, "grafana", "dashboards")
DATASOURCES = os.path.join(OPS, "grafana", "provisioning", "datasources")
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
RUST_DIRS = ["processors", "gateway", "telemetry", "topics"]


def rel(path):
    return os.path.relpath(path, ROOT)


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


# --- Alloy ------------------------------------------------------------------------------------

# The components (and blocks) this stack uses, with their arguments: name -> (required, optional,
# blocks, exports). From Alloy's reference documentation (v1.5); a component not listed here is
# refused, so adding one means describing it here first.
_HTTP_CLIENT = {"bearer_token", "bearer_token_file", "proxy_url", "no_proxy", "follow_redirects",
                "enable_http2", "proxy_from_environment", "proxy_connect_header"}
_HTTP_BLOCKS = {"basic_auth", "authorization", "oauth2", "tls_config"}
COMPONENTS = {
    "discovery.docker": ({"host"}, {"port", "host_networking_host", "refresh_interval",
                                    "match_first_network"} | _HTTP_CLIENT,
                         {"filter"} | _HTTP_BLOCKS, {"targets"}),
    "discovery.relabel": ({"targets"}, set(), {"rule"}, {"output", "rules"}),
    "loki.source.docker": ({"host", "targets", "forward_to"}, {"labels", "relabel_rules",
                                                               "refresh_interval"},
                           {"client"}, set()),
    "loki.process": ({"forward_to"}, set(), set(), {"receiver"}),  # stage.* blocks: STAGES
    "loki.relabel": ({"forward_to"}, {"max_cache_size"}, {"rule"}, {"receiver", "rules"}),
    "loki.write": (set(), {"external_labels", "max_streams"}, {"endpoint", "wal"}, {"receiver"}),
}
# Configuration blocks (no label), not components.
CONFIG_BLOCKS = {
    "logging": (set(), {"level", "format", "write_to"}, set()),
    "livedebugging": (set(), {"enabled"}, set()),
}
# Nested blocks: name -> (required, optional, blocks).
NESTED = {
    "rule": (set(), {"source_labels", "separator", "regex", "modulus", "target_label",
                     "replacement", "action"}, set()),
    "filter": ({"name", "values"}, set(), set()),
    "endpoint": ({"url"}, {"name", "headers", "batch_wait", "batch_size", "remote_timeout",
                           "tenant_id", "min_backoff_period", "max_backoff_period",
                           "max_backoff_retries", "retry_on_http_429"} | _HTTP_CLIENT,
                 _HTTP_BLOCKS | {"queue_config"}),
}
STAGES = {
    "stage.match": ({"selector"}, {"pipeline_name", "action", "drop_counter_reason"}),
    "stage.json": ({"expressions"}, {"source", "drop_malformed"}),
    "stage.logfmt": ({"mapping"}, {"source"}),
    "stage.regex": ({"expression"}, {"source"}),
    "stage.template": ({"source", "template"}, set()),
    "stage.labels": ({"values"}, set()),
    "stage.static_labels": ({"values"}, set()),
    "stage.structured_metadata": ({"values"}, set()),
    "stage.label_drop": ({"values"}, set()),
    "stage.label_keep": ({"values"}, set()),
    "stage.timestamp": ({"source", "format"}, {"fallback_formats", "location", "action_on_failure"}),
    "stage.output": ({"source"}, set()),
    "stage.drop": (set(), {"source", "separator", "expression", "value", "older_than",
                           "longer_than", "drop_counter_reason"}),
}
ALLOY_STDLIB = {"constants", "sys", "env", "coalesce", "concat", "format", "join", "json_decode",
                "json_path", "nonsensitive", "split", "to_lower", "to_upper", "trim", "trim_prefix",
                "trim_space", "trim_suffix", "encoding", "string", "array", "convert", "file"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                   "lowercase", "uppercase", "keepequal", "dropequal"}
GO_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")
# The levels tracing writes (upper case; the pipeline lowers them).
TRACING_LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]


def go_regex_ok(pattern):
    """Compiles as RE2 would, as far as Python can tell (lookarounds and backreferences, which
    RE2 lacks, are refused)."""
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern.replace("(?P<", "(?:")):
        return False
    try:
        re.compile(pattern)
        return True
    except re.error:
        return False


class AlloyConfig:
    """The parsed config and what it implies: labels set, structured metadata kept."""

    def __init__(self, path=ALLOY):
        with open(path) as f:
            self.body = alloy_syntax.parse(f.read())
        self.components = {}  # "loki.process.containers" -> Block
        for b in self.body:
            if b.label is not None:
                self.components[f"{b.name}.{b.label}"] = b

    def blocks(self, name):
        return [b for b in self.body if b.name == name]

    def relabel_rules(self):
        """The rules loki.source.docker applies (via relabel_rules), as dicts, in order."""
        out = []
        for src in self.blocks("loki.source.docker"):
            a = src.attrs().get("relabel_rules")
            if not a:
                continue
            for r in alloy_syntax.refs(a.value):
                comp = self.components.get(r.rsplit(".", 1)[0])
                if comp is not None:
                    out += [{k: alloy_syntax.literal(v.value) for k, v in rule.attrs().items()}
                            for rule in comp.blocks("rule")]
        return out

    def stages(self):
        """Every stage block of every loki.process, in order, nested match stages flattened,
        each with the stage.match selectors it sits under."""
        out = []

        def walk(blocks, selectors):
            for b in blocks:
                if not b.name.startswith("stage."):
                    continue
                out.append((b, selectors))
                if b.name == "stage.match":
                    sel = alloy_syntax.literal(b.attrs()["selector"].value)
                    walk(b.blocks(), selectors + [sel])

        for p in self.blocks("loki.process"):
            walk(p.blocks(), [])
        return out

    def labels(self):
        """Labels a line can carry in Loki: relabel targets, stage.labels/static_labels, the
        source's `labels`, loki.write's external_labels."""
        out = set()
        for r in self.relabel_rules():
            act = r.get("action", "replace")
            if act in ("replace", "lowercase", "uppercase", "hashmod") and r.get("target_label"):
                if not r["target_label"].startswith("__") and "$" not in r["target_label"]:
                    out.add(r["target_label"])
        for b, _ in self.stages():
            if b.name in ("stage.labels", "stage.static_labels"):
                out |= set(alloy_syntax.literal(b.attrs()["values"].value))
        for src in self.blocks("loki.source.docker"):
            if "labels" in src.attrs():
                out |= set(alloy_syntax.literal(src.attrs()["labels"].value))
        for w in self.blocks("loki.write"):
            if "external_labels" in w.attrs():
                out |= set(alloy_syntax.literal(w.attrs()["external_labels"].value))
        return out

    def structured_metadata(self):
        out = set()
        for b, _ in self.stages():
            if b.name == "stage.structured_metadata":
                out |= set(alloy_syntax.literal(b.attrs()["values"].value))
        return out

    def write_urls(self):
        return [alloy_syntax.literal(e.attrs()["url"].value)
                for w in self.blocks("loki.write") for e in w.blocks("endpoint")]

    def docker_hosts(self):
        return [alloy_syntax.literal(b.attrs()["host"].value)
                for b in self.blocks("discovery.docker") + self.blocks("loki.source.docker")]


def relabel(meta, rules):
    """Prometheus relabelling (the actions a log pipeline uses) of one target's labels."""
    labels = dict(meta)
    for r in rules:
        action = r.get("action", "replace")
        try:
            regex = re.compile(r.get("regex", "(.*)"))
        except re.error as e:
            raise ValueError(f"relabel rule regex {r.get('regex')!r}: {e}") from None
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        if action == "replace":
            m = regex.fullmatch(value)
            if m:
                repl = re.sub(r"\$\{?(\w+)\}?", lambda g: m.group(int(g.group(1))) or ""
                              if g.group(1).isdigit() else m.groupdict().get(g.group(1)) or "",
                              r.get("replacement", "$1"))
                target = r["target_label"]
                if repl:
                    labels[target] = repl
                else:
                    labels.pop(target, None)
        elif action == "keep" and not regex.fullmatch(value):
            return None
        elif action == "drop" and regex.fullmatch(value):
            return None
        elif action == "lowercase":
            labels[r["target_label"]] = value.lower()
        elif action == "labeldrop":
            labels = {k: v for k, v in labels.items() if not regex.fullmatch(k)}
        elif action == "labelkeep":
            labels = {k: v for k, v in labels.items() if regex.fullmatch(k)}
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def check_alloy(_argv):
    problems = []
    try:
        cfg = AlloyConfig()
    except alloy_syntax.AlloyError as e:
        return [f"{rel(ALLOY)}: {e}"], ""
    exports = {}
    for b in cfg.body:
        where = f"{rel(ALLOY)}:{b.line}"
        if not isinstance(b, alloy_syntax.Block):
            problems.append(f"{where}: attribute {b.name} outside any block")
            continue
        if b.label is None:
            if b.name not in CONFIG_BLOCKS:
                problems.append(f"{where}: {b.name} is no configuration block (a component needs a label)")
                continue
            required, optional, blocks = CONFIG_BLOCKS[b.name]
        else:
            if b.name not in COMPONENTS:
                problems.append(f"{where}: unknown component {b.name} (ops/check_logs.py COMPONENTS lists those this stack may use)")
                continue
            required, optional, blocks, exp = COMPONENTS[b.name]
            if b.name == "loki.process":
                blocks = set(STAGES)
            key = f"{b.name}.{b.label}"
            if key in exports:
                problems.append(f"{where}: {b.name} \"{b.label}\" declared twice")
            exports[key] = exp
        problems += check_block(b, required, optional, blocks, where)
    # References: <component>.<label>.<export>, the export one the component has (the standard
    # library's values, e.g. constants.hostname, are no components).
    for b in cfg.body:
        for stmt in walk_attrs(b):
            for r in alloy_syntax.refs(stmt.value):
                if r.split(".")[0] in ALLOY_STDLIB:
                    continue
                comp, _, export = r.rpartition(".")
                if comp not in exports:
                    problems.append(f"{rel(ALLOY)}:{stmt.line}: {stmt.name} refers to {r}, no such component")
                elif export not in exports[comp]:
                    problems.append(f"{rel(ALLOY)}:{stmt.line}: {comp} exports {sorted(exports[comp])}, not {export}")
    # What each kind of argument must be.
    for b in cfg.body:
        for stmt in walk_attrs(b):
            problems += check_value(stmt)
    # stage.match selectors: labels that exist when the stage runs (set by the source's rules).
    source_labels = {r["target_label"] for r in cfg.relabel_rules() if r.get("target_label")}
    for b, selectors in cfg.stages():
        if b.name == "stage.match":
            sel = alloy_syntax.literal(b.attrs()["selector"].value)
            try:
                q = LogQL(sel)
            except ValueError as e:
                problems.append(f"{rel(ALLOY)}:{b.line}: stage.match selector {sel!r}: {e}")
                continue
            for name in q.selector_labels():
                if name not in source_labels:
                    problems.append(f"{rel(ALLOY)}:{b.line}: stage.match selects on {name!r}, which the source's relabel rules do not set ({sorted(source_labels)})")
            problems += [f"{rel(ALLOY)}:{b.line}: stage.match selector: {p}" for p in q.problems()]
            if q.filters or q.grouping:
                problems.append(f"{rel(ALLOY)}:{b.line}: stage.match selector {sel!r}: only a stream selector and line filters (|= |~ != !~) are allowed, no label filters or aggregations")
    if not cfg.blocks("loki.source.docker"):
        problems.append(f"{rel(ALLOY)}: no loki.source.docker: container logs are not read")
    return problems, (f"{len(cfg.components)} components parse, references resolve; labels "
                      f"{sorted(cfg.labels())}, structured metadata {sorted(cfg.structured_metadata())}")


def walk_attrs(block):
    for s in block.body:
        if isinstance(s, alloy_syntax.Attribute):
            yield s
        else:
            yield from walk_attrs(s)


def check_block(b, required, optional, blocks, where):
    problems = []
    attrs = b.attrs()
    for name in sorted(required - set(attrs)):
        problems.append(f"{where}: {b.name} needs {name}")
    for name, a in attrs.items():
        if name not in required | optional:
            problems.append(f"{rel(ALLOY)}:{a.line}: {b.name} has no argument {name}")
    names = [a.name for a in b.body if isinstance(a, alloy_syntax.Attribute)]
    for n in set(names):
        if names.count(n) > 1:
            problems.append(f"{where}: {b.name} sets {n} twice")
    for inner in b.blocks():
        iw = f"{rel(ALLOY)}:{inner.line}"
        if inner.name not in blocks:
            problems.append(f"{iw}: {b.name} has no block {inner.name}")
            continue
        if inner.label is not None:
            problems.append(f"{iw}: block {inner.name} takes no label")
        if inner.name in STAGES:
            req, opt = STAGES[inner.name]
            nested = set(STAGES) if inner.name == "stage.match" else set()
            problems += check_block(inner, req, opt, nested, iw)
        elif inner.name in NESTED:
            problems += check_block(inner, *NESTED[inner.name], iw)
    return problems


# Argument name -> what its value must be ("refs": a list of component exports).
KINDS = {
    "host": "string", "url": "string", "refresh_interval": "duration", "batch_wait": "duration",
    "remote_timeout": "duration", "forward_to": "refs", "targets": "targets",
    "relabel_rules": "ref", "source_labels": "list(string)", "target_label": "string",
    "regex": "regex", "replacement": "string", "separator": "string", "action": "action",
    "selector": "string", "expressions": "object(string)", "values": "object(string)",
    "template": "string", "source": "string", "level": "level", "format": "format",
    "labels": "object(string)", "external_labels": "object(string)", "expression": "regex",
}


def check_value(a):
    kind = KINDS.get(a.name)
    where = f"{rel(ALLOY)}:{a.line}: {a.name}"
    if kind is None:
        return []
    if kind in ("refs", "ref", "targets"):
        e = a.value
        if kind == "refs" and (e[0] != "list" or any(x[0] != "ref" for x in e[1])):
            return [f"{where} must be a list of component exports, e.g. [loki.write.x.receiver]"]
        if kind == "ref" and e[0] != "ref":
            return [f"{where} must be a component's export"]
        return []
    try:
        v = alloy_syntax.literal(a.value)
    except ValueError:
        return []  # computed (env(), concatenation): not checked
    if kind in ("string", "regex", "duration", "action", "level", "format") and not isinstance(v, str):
        return [f"{where} must be a string"]
    if kind == "duration" and not GO_DURATION.fullmatch(v):
        return [f"{where}: {v!r} is not a duration (e.g. \"5s\")"]
    if kind == "regex" and not go_regex_ok(v):
        return [f"{where}: {v!r} does not compile as a regular expression (RE2)"]
    if kind == "action" and v not in RELABEL_ACTIONS:
        return [f"{where}: {v!r} is not a relabel action"]
    if kind == "level" and v not in ("debug", "info", "warn", "error"):
        return [f"{where}: {v!r} is not a log level"]
    if kind == "format" and v not in ("logfmt", "json"):
        return [f"{where}: {v!r} is not logfmt or json"]
    if kind == "list(string)" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        return [f"{where} must be a list of strings"]
    if kind == "object(string)":
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            return [f"{where} must be an object of strings"]
        if a.name in ("values", "labels", "external_labels"):
            return [f"{where}: {k!r} is not a valid label name" for k in v
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    return []


# --- LogQL (a scanner for what the checks need, not a full parser) ------------------------------

_LOGQL_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|\|>|!>|[{}()\[\],|=<>!+\-*/%^])
  | (?P<number>[0-9][0-9.]*[a-zA-Z]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
""", re.X)
PARSERS = {"json", "logfmt", "regexp", "pattern", "unpack"}
FORMATTERS = {"line_format", "label_format", "keep", "drop", "decolorize", "unwrap", "distinct"}
COMPARISONS = {"=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="}


def unquote(s):
    if s.startswith("`"):
        return s[1:-1]
    return json.loads(s) if "\\" in s else s[1:-1]


class LogQL:
    def __init__(self, expr):
        self.expr = expr
        toks, pos = [], 0
        while pos < len(expr):
            m = _LOGQL_TOKEN.match(expr, pos)
            if not m:
                raise ValueError(f"unexpected {expr[pos:pos + 10]!r}")
            pos = m.end()
            if m.lastgroup != "ws":
                toks.append((m.lastgroup, m.group(0)))
        self.selectors = []  # [[(name, op, value)]]
        self.grouping = []  # labels in by (...) / without (...)
        self.filters = []  # (label, op, value, after_parser)
        self.line_filters = []  # (op, value)
        i, parsed = 0, False
        while i < len(toks):
            kind, tok = toks[i]
            if tok == "{" and kind == "op":
                i, sel = self._selector(toks, i + 1)
                self.selectors.append(sel)
                parsed = False
                continue
            if kind == "ident" and tok in ("by", "without") and i + 1 < len(toks) and toks[i + 1][1] == "(":
                j = i + 2
                while j < len(toks) and toks[j][1] != ")":
                    if toks[j][0] == "ident":
                        self.grouping.append(toks[j][1])
                    j += 1
                i = j + 1
                continue
            if tok in ("|=", "|~", "!=", "!~", "|>", "!>") and i + 1 < len(toks) and toks[i + 1][0] == "string":
                self.line_filters.append((tok, unquote(toks[i + 1][1])))
                i += 2
                continue
            if tok == "|" and i + 1 < len(toks) and toks[i + 1][0] == "ident":
                name = toks[i + 1][1]
                if name in PARSERS:
                    parsed = True
                    i += 2
                    continue
                if name in FORMATTERS:
                    i += 2
                    continue
                # Label filter expression: name op value {and|or|, name op value}.
                j = i + 1
                while j + 2 < len(toks) + 0 and toks[j][0] == "ident" and toks[j + 1][1] in COMPARISONS:
                    value = toks[j + 2]
                    self.filters.append((toks[j][1], toks[j + 1][1],
                                         unquote(value[1]) if value[0] == "string" else value[1], parsed))
                    j += 3
                    if j < len(toks) and toks[j][1] in ("and", "or", ","):
                        j += 1
                    else:
                        break
                if j == i + 1:
                    raise ValueError(f"cannot read the pipeline stage after | at {name!r}")
                i = j
                continue
            i += 1

    def _selector(self, toks, i):
        sel = []
        while True:
            if i < len(toks) and toks[i][1] == "}":
                return i + 1, sel
            if i + 2 >= len(toks) or toks[i][0] != "ident" or toks[i + 1][1] not in ("=", "!=", "=~", "!~") \
                    or toks[i + 2][0] != "string":
                raise ValueError("a stream selector must be {name op \"value\", ...}")
            sel.append((toks[i][1], toks[i + 1][1], unquote(toks[i + 2][1])))
            i += 3
            if i < len(toks) and toks[i][1] == ",":
                i += 1

    def selector_labels(self):
        return {n for sel in self.selectors for n, _, _ in sel}

    def problems(self):
        out = []
        if not self.selectors:
            out.append("no stream selector {...}")
        for sel in self.selectors:
            def nonempty(op, value):
                v = re.sub(r"\$\{[^}]*\}|\$\w+", "x", value)  # a variable: some value
                if op == "=":
                    return v != ""
                if op == "=~":
                    try:
                        return not re.fullmatch(v, "")
                    except re.error:
                        return False
                return False
            if not any(nonempty(op, v) for _, op, v in sel):
                out.append(f"selector {{{', '.join(n + op + json.dumps(v) for n, op, v in sel)}}} has no matcher "
                           "that excludes the empty value: Loki refuses the query")
        return out


# --- Sample log lines, as pickple-telemetry writes them -----------------------------------------

SAMPLE_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def rust_sources():
    for d in RUST_DIRS:
        yield from glob.glob(os.path.join(ROOT, d, "**", "*.rs"), recursive=True)


def logged_messages():
    """message -> {levels} of every tracing::<level>!(…, "message") in the Rust code."""
    out = {}
    macro = re.compile(r"(?:tracing::)?\b(trace|debug|info|warn|error)!\s*\(((?:[^()]|\([^()]*\))*)\)", re.S)
    for path in rust_sources():
        with open(path) as f:
            text = f.read()
        for m in macro.finditer(text):
            lits = re.findall(r'"((?:[^"\\]|\\.)*)"\s*,?\s*$', m.group(2).strip())
            if lits:
                out.setdefault(lits[-1], set()).add(m.group(1))
    return out


def sample_lines():
    """(description, line, trace id or None) built the way the JSON log layer writes them:
    tracing-subscriber's JSON formatter (compact serde_json: timestamp, level in upper case,
    fields with message, target, then the current span's fields, its name last), with the
    record span of processors/runtime/src/trace.rs and the dead-letter event of the runtime.
    Raises ValueError when the code no longer has what a line is built from."""
    lib = open(os.path.join(ROOT, "telemetry", "src", "lib.rs")).read()
    for needed in (".json()", ".with_current_span(true)", "JsonSpanFields"):
        if needed not in lib:
            raise ValueError(f"telemetry/src/lib.rs no longer configures the JSON log layer with {needed}: rebuild the sample lines")
    def span(path, name, values):
        """The span's JSON object: its declared fields in order (values from `values`), then
        its name, as tracing-subscriber writes the current span."""
        text = open(os.path.join(ROOT, path)).read()
        m = re.search(r'info_span!\(\s*"%s",\s*((?:[^()]|\([^()]*\))*)\)' % name, text)
        if not m:
            raise ValueError(f"{path} has no \"{name}\" span any more: rebuild the sample lines")
        decls = [f for f in m.group(1).split(",") if f.strip()]
        # A field declared Empty is written when it is recorded (continue_trace), after the
        # others: JsonSpanFields appends in the order fields were declared or recorded.
        fields = [re.match(r"\s*([a-z_]+)", f).group(1) for f in decls if "field::Empty" not in f] + \
                 [re.match(r"\s*([a-z_]+)", f).group(1) for f in decls if "field::Empty" in f]
        if "trace_id" not in fields:
            raise ValueError(f"the {name} span of {path} has the fields {fields}: no trace_id")
        obj = {f: values.get(f, "x") for f in fields}
        obj["name"] = name
        return obj

    record = span("processors/runtime/src/trace.rs", "record",
                  {"trace_id": SAMPLE_TRACE_ID, "app": "order", "topic": "order-commands",
                   "partition": 3, "offset": 42})
    request = span("gateway/src/trace.rs", "request",
                   {"trace_id": "00f067aa0ba902b70af7651916cd43dd", "method": "POST", "path": "/orders"})
    messages = logged_messages()
    if "dead letter" not in messages:
        raise ValueError("no tracing macro logs \"dead letter\" any more (processors/runtime/src/collector.rs)")
    level = sorted(messages["dead letter"])[0].upper()

    def line(level, fields, target, span=None):
        obj = {"timestamp": "2026-12-02T09:00:00.123456Z", "level": level, "fields": fields,
               "target": target}
        if span is not None:
            obj["span"] = span
        return json.dumps(obj, separators=(",", ":"))

    dead = line(level, {"message": "dead letter", "topic": "order-commands", "partition": 3,
                        "offset": 42, "reason": "unreadable value: expected value at line 1 column 1"},
                "pickple_runtime::collector", record)
    untraced = line("INFO", {"message": "starting", "app": "order"}, "pickple_processor")
    # The gateway's request span writes its trace id when the trace is continued.
    answered = line("INFO", {"message": "answered", "status": 202, "elapsed_ms": 1.25},
                    "pickple_gateway::trace", request)
    return [("a traced dead-letter line", dead, SAMPLE_TRACE_ID),
            ("an untraced line", untraced, None),
            ("the gateway's answered line (a trace id with leading zeros)", answered,
             "00f067aa0ba902b70af7651916cd43dd")]


def run_pipeline(cfg, labels, line):
    """Alloy's loki.process stages over one line: (labels, structured metadata). Supports the
    stages this stack uses; another raises ValueError."""
    labels, sm, extracted = dict(labels), {}, {}

    def matches(selector):
        q = LogQL(selector)
        for sel in q.selectors:
            for name, op, value in sel:
                v = labels.get(name, "")
                ok = {"=": v == value, "!=": v != value, "=~": bool(re.fullmatch(value, v)),
                      "!~": not re.fullmatch(value, v)}[op]
                if not ok:
                    return False
        for op, value in q.line_filters:
            ok = {"|=": value in line, "!=": value not in line, "|~": bool(re.search(value, line)),
                  "!~": not re.search(value, line)}.get(op)
            if ok is None:
                raise ValueError(f"line filter {op} not simulated")
            if not ok:
                return False
        return True

    for b, selectors in cfg.stages():
        if not all(matches(s) for s in selectors):
            continue
        a = {k: alloy_syntax.literal(v.value) for k, v in b.attrs().items()}
        if b.name == "stage.match":
            if a.get("action", "keep") != "keep":
                raise ValueError("stage.match with action drop is not simulated")
        elif b.name == "stage.json":
            try:
                obj = json.loads(extracted[a["source"]] if "source" in a else line)
            except (ValueError, KeyError):
                continue
            for key, path in a["expressions"].items():
                path = path or key
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", path):
                    raise ValueError(f"JMESPath {path!r} is not simulated (dotted names only)")
                v = obj
                for part in path.split("."):
                    v = v.get(part) if isinstance(v, dict) else None
                if v is not None:
                    extracted[key] = v if isinstance(v, str) else json.dumps(v)
        elif b.name == "stage.template":
            if a["source"] not in extracted:
                continue
            m = re.fullmatch(r"\{\{\s*(ToLower|ToUpper)\s+\.Value\s*\}\}", a["template"])
            if not m:
                raise ValueError(f"template {a['template']!r} is not simulated")
            v = extracted[a["source"]]
            extracted[a["source"]] = v.lower() if m.group(1) == "ToLower" else v.upper()
        elif b.name in ("stage.labels", "stage.structured_metadata"):
            for key, src in a["values"].items():
                if (src or key) in extracted:
                    (labels if b.name == "stage.labels" else sm)[key] = extracted[src or key]
        elif b.name == "stage.static_labels":
            labels.update(a["values"])
        else:
            raise ValueError(f"{b.name} is not simulated")
    return labels, sm


# --- Grafana ------------------------------------------------------------------------------------

def grafana_expand(value, env):
    """What Grafana's provisioning makes of a string: `$$` is a literal `$`, `$NAME` and
    `${NAME}` the environment variable (empty if unset). Returns (result, names expanded)."""
    names = []

    def expand(part):
        def sub(m):
            names.append(m.group(1) or m.group(2))
            return env.get(names[-1], "")
        return re.sub(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)", sub, part)

    return "$".join(expand(p) for p in value.split("$$")), names


def datasources():
    out = []
    for path in sorted(glob.glob(os.path.join(DATASOURCES, "*.y*ml"))):
        for ds in load_yaml(path).get("datasources", []) or []:
            out.append((rel(path), ds))
    return out


def strings_in(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings_in(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from strings_in(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        yield where, obj


def dashboard_loki_queries(loki_uids, types, problems):
    """(where, expr) of every Loki query in the dashboards; wrong uids reported in problems."""
    out = []
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        name = os.path.basename(path)
        try:
            with open(path) as f:
                dash = json.load(f)
        except ValueError:
            continue  # check_ops.py metrics reports it
        panels, stack = [], list(dash.get("panels", []))
        while stack:
            p = stack.pop(0)
            panels.append(p)
            stack += p.get("panels", [])
        for p in panels:
            for t in p.get("targets", []):
                ds = t.get("datasource") if isinstance(t.get("datasource"), dict) else p.get("datasource")
                if not isinstance(ds, dict):
                    continue
                uid, typ = ds.get("uid"), ds.get("type")
                if typ == "loki" or types.get(uid) == "loki":
                    where = f"{name} panel '{p.get('title', '?')}'"
                    if uid not in loki_uids:
                        problems.append(f"{where}: Loki query on data source uid {uid!r}, provisioned Loki uids: {sorted(loki_uids)}")
                    elif typ not in (None, "loki"):
                        problems.append(f"{where}: data source {uid!r} is a Loki one, the panel says type {typ!r}")
                    out.append((where, t.get("expr", "")))
        for v in dash.get("templating", {}).get("list", []):
            ds = v.get("datasource")
            if v.get("type") == "query" and isinstance(ds, dict) and (ds.get("type") == "loki" or types.get(ds.get("uid")) == "loki"):
                where = f"{name} variable '{v.get('name')}'"
                if ds.get("uid") not in loki_uids:
                    problems.append(f"{where}: data source uid {ds.get('uid')!r}, provisioned Loki uids: {sorted(loki_uids)}")
                q = v.get("query")
                if isinstance(q, dict):
                    if q.get("label"):
                        out.append((where, "{%s=~\".+\"}" % q["label"]))
                    if q.get("stream"):
                        out.append((where, q["stream"]))
                elif isinstance(q, str):
                    m = re.fullmatch(r"\s*label_values\((?:(.*),\s*)?(\w+)\s*\)\s*", q)
                    if m:
                        out.append((where, "{%s=~\".+\"}" % m.group(2)))
                        if m.group(1):
                            out.append((where, m.group(1)))
    return out


def check_queries(_argv):
    problems = []
    try:
        cfg = AlloyConfig()
    except alloy_syntax.AlloyError as e:
        return [f"{rel(ALLOY)}: {e} (see the alloy check)"], ""
    labels = cfg.labels() | {"service_name"}  # Loki 3 adds service_name (from `service`)
    metadata = cfg.structured_metadata()
    special = {"__error__", "__error_details__", "__line__", "__stream_shard__"}
    compose = load_yaml(COMPOSE)
    grafana_env = (compose.get("services", {}).get("grafana", {}) or {}).get("environment") or {}

    sources = datasources()
    types = {ds.get("uid"): ds.get("type") for _, ds in sources}
    loki_uids = {u for u, t in types.items() if t == "loki"}
    if not loki_uids:
        problems.append("no Loki data source is provisioned")

    # Sample lines through Alloy's pipeline.
    try:
        samples = sample_lines()
    except ValueError as e:
        return problems + [str(e)], ""
    levels_written = {lvl.lower() for lvl in TRACING_LEVELS}
    try:
        stream = relabel({"__meta_docker_container_label_com_docker_compose_service": "order",
                          "__meta_docker_container_name": "/pickple-order-1"}, cfg.relabel_rules()) or {}
    except ValueError as e:
        return problems + [f"{rel(ALLOY)}: {e} (see the alloy check)"], ""
    for what, line, trace in samples:
        try:
            got_labels, got_sm = run_pipeline(cfg, stream, line)
        except ValueError as e:
            problems.append(f"cannot run Alloy's pipeline over {what}: {e}")
            continue
        lvl = json.loads(line)["level"]
        if got_labels.get("level") not in levels_written:
            problems.append(f"Alloy's pipeline gives {what} (level {lvl}) level={got_labels.get('level')!r}, queries expect one of {sorted(levels_written)}")
        if got_sm.get("trace_id") != trace and trace is not None:
            problems.append(f"Alloy's pipeline keeps trace_id={got_sm.get('trace_id')!r} for {what}, the line's trace id is {trace}")
        if trace is None and "trace_id" in got_sm:
            problems.append(f"Alloy's pipeline gives {what} a trace_id {got_sm['trace_id']!r}")
        leaked = {"trace_id"} & set(got_labels)
        if leaked:
            problems.append(f"Alloy makes {sorted(leaked)} a label (one stream per trace): keep it as structured metadata")

    queries = dashboard_loki_queries(loki_uids, types, problems)
    trace_links = 0
    for path, ds in sources:
        where = f"{path} data source {ds.get('name')}"
        for key, value in strings_in(ds):
            expanded, names = grafana_expand(value, grafana_env)
            for n in names:
                if n not in grafana_env:
                    problems.append(f"{where} {key}: Grafana replaces ${{{n}}} with an environment variable (unset, so empty): write $${{{n}}} for Grafana's own variable")
        jd = ds.get("jsonData") or {}
        ttl = jd.get("tracesToLogsV2")
        if ttl:
            if ttl.get("datasourceUid") not in loki_uids:
                problems.append(f"{where}: tracesToLogsV2.datasourceUid {ttl.get('datasourceUid')!r} is no provisioned Loki data source {sorted(loki_uids)}")
            if ttl.get("customQuery"):
                q, _ = grafana_expand(ttl.get("query", ""), grafana_env)
                queries.append((f"{where} tracesToLogsV2.query", q))
                if not re.search(r"\$\{__(span|trace)\.traceId\}", q):
                    problems.append(f"{where}: tracesToLogsV2.query does not use the trace's id (${{__trace.traceId}})")
                if "trace_id" not in {f[0] for f in LogQL(q).filters} and "trace_id" in metadata:
                    problems.append(f"{where}: tracesToLogsV2.query does not filter on trace_id")
                trace_links += 1
        for df in jd.get("derivedFields") or []:
            dwhere = f"{where} derived field {df.get('name')}"
            target = df.get("datasourceUid")
            if target and target not in types:
                problems.append(f"{dwhere}: datasourceUid {target!r} is not provisioned")
            if df.get("matcherType", "regex") != "regex":
                if df.get("matcherRegex") not in labels | metadata:
                    problems.append(f"{dwhere}: matches label {df.get('matcherRegex')!r}, which Alloy does not set")
                continue
            regex, _ = grafana_expand(df.get("matcherRegex", ""), grafana_env)
            try:
                rx = re.compile(regex)
            except re.error as e:
                problems.append(f"{dwhere}: matcherRegex {regex!r} does not compile: {e}")
                continue
            if rx.groups < 1:
                problems.append(f"{dwhere}: matcherRegex {regex!r} has no group: the link would carry the whole match")
            for what, line, trace in samples:
                m = rx.search(line)
                got = m.group(1) if m and rx.groups else None
                if got != trace:
                    problems.append(f"{dwhere}: matcherRegex {regex!r} finds {got!r} in {what}, expected {trace!r}: {line}")
            url, _ = grafana_expand(df.get("url", ""), grafana_env)
            if target and "${__value.raw}" not in url:
                problems.append(f"{dwhere}: url {url!r} is not the matched value (${{__value.raw}})")
            trace_links += 1

    messages = logged_messages()
    checked = 0
    for where, expr in queries:
        if not expr.strip():
            problems.append(f"{where}: empty query")
            continue
        try:
            q = LogQL(expr)
        except ValueError as e:
            problems.append(f"{where}: {e}: {expr}")
            continue
        problems += [f"{where}: {p}" for p in q.problems()]
        for sel in q.selectors:
            for name, op, value in sel:
                checked += 1
                if name not in labels:
                    hint = " (structured metadata: filter with | name=\"…\" after the selector)" if name in metadata else ""
                    problems.append(f"{where}: stream selector label {name!r} is not a label Alloy sets {sorted(labels)}{hint}")
                problems += [f"{where}: {p}" for p in level_problems(name, op, value, levels_written)]
        for name in q.grouping:
            checked += 1
            if name not in labels | metadata:
                problems.append(f"{where}: by/without label {name!r} is neither a label Alloy sets {sorted(labels)} nor structured metadata {sorted(metadata)}")
        for name, op, value, parsed in q.filters:
            checked += 1
            if not parsed and name not in labels | metadata | special:
                problems.append(f"{where}: label filter on {name!r}: not a label Alloy sets {sorted(labels)}, nor structured metadata {sorted(metadata)}, and no parser (| json, | logfmt) before it")
            if not parsed:
                problems += [f"{where}: {p}" for p in level_problems(name, op, value, levels_written)]
        selected_levels = {v for sel in q.selectors for n, op, v in sel if n == "level" and op == "="}
        for op, value in q.line_filters:
            m = re.fullmatch(r'"message":"((?:[^"\\]|\\.)*)"', value)
            if m and op == "|=":
                msg = m.group(1)
                if msg not in messages:
                    problems.append(f"{where}: filters on message {msg!r}, which no tracing macro in {', '.join(RUST_DIRS)} logs")
                elif selected_levels and not selected_levels & messages[msg]:
                    problems.append(f"{where}: selects level {sorted(selected_levels)} for {msg!r}, logged at {sorted(messages[msg])}")
    return problems, (f"{len(queries)} LogQL queries, {checked} label references checked against Alloy's labels "
                      f"{sorted(labels)} and structured metadata {sorted(metadata)}; {trace_links} trace links "
                      f"checked on {len(samples)} sample log lines")


def level_problems(name, op, value, written):
    if name != "level" or "$" in value:
        return []
    if op in ("=", "!="):
        vals = [value]
    elif op in ("=~", "!~") and re.fullmatch(r"[a-z|]+", value):
        vals = value.split("|")
    else:
        return []
    return [f"level value {v!r} is never written: Alloy writes {sorted(written)}" for v in vals if v not in written]


# --- Loki ---------------------------------------------------------------------------------------

LOKI_SECTIONS = {
    "target", "auth_enabled", "ballast_bytes", "server", "distributor", "querier",
    "query_scheduler", "frontend", "query_range", "ruler", "ruler_storage", "ingester_client",
    "ingester", "block_builder", "pattern_ingester", "index_gateway", "bloom_build",
    "bloom_gateway", "storage_config", "chunk_store_config", "schema_config", "compactor",
    "compactor_grpc_client", "limits_config", "frontend_worker", "table_manager", "memberlist",
    "kafka_config", "runtime_config", "operational_config", "tracing", "analytics", "common",
    "shutdown_delay", "metrics_namespace", "profiling_config", "ui",
}


def duration_hours(s):
    """A Loki (Prometheus model) duration in hours: 168h, 7d, 1w, 30m."""
    m = re.fullmatch(r"((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?", str(s))
    if not m or not str(s):
        raise ValueError(f"{s!r} is not a duration")
    g = [int(x) if x else 0 for x in m.groups()[1::2]]
    return g[0] * 8760 + g[1] * 168 + g[2] * 24 + g[3] + g[4] / 60 + g[5] / 3600


def check_loki(_argv):
    try:
        cfg = load_yaml(LOKI)
    except yaml.YAMLError as e:
        return [f"{rel(LOKI)}: not YAML: {e}"], ""
    if not isinstance(cfg, dict):
        return [f"{rel(LOKI)}: not a mapping"], ""
    problems, where = [], rel(LOKI)
    for key in sorted(set(cfg) - LOKI_SECTIONS):
        problems.append(f"{where}: unknown section {key!r}: Loki refuses to start")
    if cfg.get("target", "all") != "all":
        problems.append(f"{where}: target {cfg['target']!r}: the compose stack runs one single-binary Loki (all)")
    common = cfg.get("common") or {}
    fs = ((common.get("storage") or {}).get("filesystem")
          or ((cfg.get("storage_config") or {}).get("filesystem")))
    if not fs:
        problems.append(f"{where}: no filesystem storage (common.storage.filesystem)")
    if common.get("replication_factor", 3) != 1:
        problems.append(f"{where}: common.replication_factor must be 1 for a single instance")
    if ((common.get("ring") or {}).get("kvstore") or {}).get("store") not in ("inmemory",):
        problems.append(f"{where}: common.ring.kvstore.store should be inmemory for a single instance")
    schemas = (cfg.get("schema_config") or {}).get("configs") or []
    if not schemas:
        problems.append(f"{where}: no schema_config.configs")
    else:
        last = schemas[-1]
        if last.get("store") != "tsdb" or not re.fullmatch(r"v1[3-9]|v[2-9]\d", str(last.get("schema"))):
            problems.append(f"{where}: the current schema is {last.get('store')} {last.get('schema')}: structured metadata needs tsdb and v13 or later")
        if last.get("object_store") != "filesystem":
            problems.append(f"{where}: object_store {last.get('object_store')!r}: only filesystem is configured")
        if (last.get("index") or {}).get("period") != "24h":
            problems.append(f"{where}: tsdb needs index.period 24h")
    limits = cfg.get("limits_config") or {}
    if limits.get("allow_structured_metadata") is False:
        problems.append(f"{where}: allow_structured_metadata is false: Alloy's trace_id would be refused")
    retention = None
    try:
        retention = duration_hours(limits.get("retention_period", "0s"))
    except ValueError as e:
        problems.append(f"{where}: limits_config.retention_period: {e}")
    if not retention:
        problems.append(f"{where}: limits_config.retention_period is not set: logs are kept forever")
    comp = cfg.get("compactor") or {}
    if retention and not comp.get("retention_enabled"):
        problems.append(f"{where}: compactor.retention_enabled is not true: retention_period is never applied")
    if comp.get("retention_enabled") and not comp.get("delete_request_store"):
        problems.append(f"{where}: compactor.delete_request_store is required with retention_enabled")
    if limits.get("reject_old_samples_max_age") and retention:
        try:
            if duration_hours(limits["reject_old_samples_max_age"]) > retention:
                problems.append(f"{where}: reject_old_samples_max_age is longer than the retention")
        except ValueError as e:
            problems.append(f"{where}: reject_old_samples_max_age: {e}")
    if cfg.get("auth_enabled", True):
        problems.append(f"{where}: auth_enabled is not false: Alloy and Grafana send no tenant (X-Scope-OrgID)")
    return problems, (f"Loki config: single binary, filesystem, schema {schemas[-1].get('store') if schemas else '?'} "
                      f"{schemas[-1].get('schema') if schemas else '?'}, retention {retention:g}h, structured metadata allowed"
                      if retention else "")


def loki_paths(cfg):
    common = cfg.get("common") or {}
    fs = (common.get("storage") or {}).get("filesystem") or {}
    paths = [common.get("path_prefix"), fs.get("chunks_directory"), fs.get("rules_directory"),
             (cfg.get("compactor") or {}).get("working_directory")]
    return [p for p in paths if p]


# --- compose ------------------------------------------------------------------------------------

def mounts(svc):
    """(source, target, read_only) of a rendered service's volumes."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            out.append((parts[0], parts[1], "ro" in mode.split(",")))
        else:
            out.append((v.get("source"), v.get("target"), bool(v.get("read_only"))))
    return out


def under(path, target):
    return path == target or path.startswith(target.rstrip("/") + "/")


def check_compose(argv):
    if not argv:
        return ["usage: check_logs.py compose RENDERED (docker-compose config output)"], ""
    rendered = load_yaml(argv[0]) or {}
    services, volumes = rendered.get("services") or {}, set(rendered.get("volumes") or {})
    problems = []
    for name in ("loki", "alloy"):
        if name not in services:
            problems.append(f"docker-compose config has no service {name}")
    if problems:
        return problems, ""
    loki, alloy = services["loki"], services["alloy"]
    for name, svc in (("loki", loki), ("alloy", alloy)):
        image = svc.get("image", "")
        if not re.search(r":v?\d+\.\d+\.\d+$", image):
            problems.append(f"service {name}: image {image!r} is not pinned to a version")
        for src, _, _ in mounts(svc):
            if src and not src.startswith("/") and src not in volumes:
                problems.append(f"service {name}: volume {src!r} is not declared under volumes:")

    def config_mount(svc, name, repo_file, flag):
        cmd = svc.get("command") or []
        cmd = cmd.split() if isinstance(cmd, str) else cmd
        paths = [c.split("=", 1)[1] for c in cmd if flag and c.startswith(flag + "=")] or \
                [c for c in cmd if not c.startswith("-") and c.startswith("/")]
        if not paths:
            problems.append(f"service {name}: command {cmd} names no config file")
            return cmd
        for src, target, ro in mounts(svc):
            if target == paths[0]:
                if os.path.realpath(src) != os.path.realpath(repo_file):
                    problems.append(f"service {name}: {paths[0]} is {src}, not {rel(repo_file)}")
                if not ro:
                    problems.append(f"service {name}: mount the config {paths[0]} read-only")
                return cmd
        problems.append(f"service {name}: reads {paths[0]}, which no volume mounts (expected {rel(repo_file)})")
        return cmd

    config_mount(loki, "loki", LOKI, "-config.file")
    acmd = config_mount(alloy, "alloy", ALLOY, None)

    # Loki's data where a named volume keeps it.
    cfg = load_yaml(LOKI) or {}
    data_mounts = [t for s, t, ro in mounts(loki) if s in volumes and not ro]
    for p in loki_paths(cfg):
        if not any(under(p, t) for t in data_mounts):
            problems.append(f"service loki: {p} ({rel(LOKI)}) is on no named volume {data_mounts}: lost with the container")
    storage = [c.split("=", 1)[1] for c in acmd if c.startswith("--storage.path=")]
    if not storage or not any(under(storage[0], t) for s, t, ro in mounts(alloy) if s in volumes):
        problems.append("service alloy: --storage.path is on no named volume: positions are lost, logs re-sent after a restart")

    # The Docker socket, read-only, where the config looks for it.
    try:
        acfg = AlloyConfig()
    except alloy_syntax.AlloyError as e:
        return problems + [f"{rel(ALLOY)}: {e}"], ""
    for host in sorted(set(acfg.docker_hosts())):
        path = host.removeprefix("unix://")
        m = [(s, ro) for s, t, ro in mounts(alloy) if t == path]
        if not m:
            problems.append(f"service alloy: {rel(ALLOY)} reads Docker at {host}, which no volume mounts")
        elif not m[0][1]:
            problems.append(f"service alloy: mount the Docker socket {path} read-only (:ro)")
        elif not m[0][0].endswith("docker.sock"):
            problems.append(f"service alloy: {path} is {m[0][0]}, not the Docker socket")

    # Alloy -> Loki -> Grafana on Loki's port.
    port = ((cfg.get("server") or {}).get("http_listen_port")) or 3100
    for url in acfg.write_urls():
        if not re.fullmatch(rf"http://loki:{port}/loki/api/v1/push", url):
            problems.append(f"{rel(ALLOY)}: loki.write url {url!r}, expected http://loki:{port}/loki/api/v1/push")
    for path, ds in datasources():
        if ds.get("type") == "loki" and ds.get("url") != f"http://loki:{port}":
            problems.append(f"{path}: Loki data source url {ds.get('url')!r}, expected http://loki:{port}")
    if "loki" not in (services.get("grafana", {}).get("depends_on") or {}):
        problems.append("service grafana does not depend on loki")

    # The app label of each Pickple service, as Alloy derives it, is Prometheus' app.
    rules = acfg.relabel_rules()
    apps = 0
    for name, svc in services.items():
        cmd = svc.get("command") or []
        cmd = cmd.split() if isinstance(cmd, str) else cmd
        if cmd[:1] == ["pickple-processor"] and "--app" in cmd:
            want = cmd[cmd.index("--app") + 1]
        elif cmd[:1] == ["pickple-gateway"]:
            want = "gateway"
        else:
            continue
        try:
            got = relabel({"__meta_docker_container_label_com_docker_compose_service": name,
                           "__meta_docker_container_name": f"/pickple-{name}-1"}, rules) or {}
        except ValueError as e:
            return problems + [f"{rel(ALLOY)}: {e} (see the alloy check)"], ""
        apps += 1
        if got.get("app") != want:
            problems.append(f"service {name} runs app {want}, Alloy labels its logs app={got.get('app')!r}")
        if got.get("service") != name:
            problems.append(f"service {name}: Alloy labels its logs service={got.get('service')!r}")
    return problems, (f"loki and alloy in docker-compose config, volumes declared, configs mounted read-only, "
                      f"Docker socket read-only, Loki on port {port}; {apps} Pickple services get their app label")


CHECKS = {"alloy": check_alloy, "loki": check_loki, "queries": check_queries, "compose": check_compose}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(CHECKS)} [args]")
    problems, summary = CHECKS[sys.argv[1]](sys.argv[2:])
    for p in problems:
        print(p)
    if not problems:
        print(summary)
    sys.exit(1 if problems else 0)
