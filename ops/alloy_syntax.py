"""A parser for Grafana Alloy's configuration syntax, for ops/check_logs.py.

No Alloy binary (nor its Go `syntax` module) can be had on the development machines, so this
reads a config.alloy the way Alloy's parser does, as far as the stack's file needs:

  body       = { attribute | block } ;                 one per line
  attribute  = IDENT "=" expr ;
  block      = IDENT { "." IDENT } [ STRING ] "{" body "}" ;
  expr       = binary/unary operators over: number, string ("…" with Go escapes, or `raw`),
               true, false, null, [ list ], { object: IDENT|STRING = expr, … },
               references (a.b.c), indexing a[0], calls f(x), parentheses.

Like Alloy, a newline ends an attribute or a block, and a list or object whose closing bracket
stands on its own line needs a comma after its last element. Comments: // and /* */.

parse(text) returns the body: a list of Attribute and Block; raises AlloyError (with the line
and column) on the first syntax error. Expressions are tuples: ("lit", value), ("list", [..]),
("object", [(key, expr)]), ("ref", "a.b.c"), ("index", expr, expr), ("call", expr, [args]),
("unary", op, expr), ("binary", op, left, right).
"""
import re
from dataclasses import dataclass, field


class AlloyError(Exception):
    pass


@dataclass
class Attribute:
    name: str
    value: tuple
    line: int


@dataclass
class Block:
    name: str  # dotted, e.g. "loki.process" or "stage.json"
    label: str | None
    body: list = field(default_factory=list)
    line: int = 0

    def attrs(self):
        return {a.name: a for a in self.body if isinstance(a, Attribute)}

    def blocks(self, name=None):
        return [b for b in self.body if isinstance(b, Block) and (name is None or b.name == name)]


@dataclass
class Token:
    kind: str  # ident, string, number, op, eof
    value: object
    line: int
    col: int
    nl_before: bool  # a newline between the previous token and this one
    raw: bool = False  # a `raw` string


_OPS = ["==", "!=", "<=", ">=", "&&", "||", "{", "}", "[", "]", "(", ")", ",", ".", "=", "<",
        ">", "+", "-", "*", "/", "%", "^", "!"]
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"', "'": "'"}


def tokenize(text):
    toks, i, line, col, nl = [], 0, 1, 1, False

    def err(msg):
        raise AlloyError(f"line {line} column {col}: {msg}")

    def advance(n):
        nonlocal i, line, col
        for ch in text[i:i + n]:
            if ch == "\n":
                line, col = line + 1, 1
            else:
                col += 1
        i += n

    while i < len(text):
        ch = text[i]
        if ch == "\n":
            nl = True
            advance(1)
        elif ch in " \t\r":
            advance(1)
        elif text.startswith("//", i):
            j = text.find("\n", i)
            advance((j if j >= 0 else len(text)) - i)
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                err("comment not terminated")
            if "\n" in text[i:j]:
                nl = True
            advance(j + 2 - i)
        elif ch == '"':
            start_line, start_col = line, col
            j, out = i + 1, []
            while True:
                if j >= len(text) or text[j] == "\n":
                    err("string literal not terminated")
                c = text[j]
                if c == '"':
                    break
                if c == "\\":
                    e = text[j + 1:j + 2]
                    if e in _ESCAPES:
                        out.append(_ESCAPES[e])
                        j += 2
                    elif e in ("x", "u", "U"):
                        n = {"x": 2, "u": 4, "U": 8}[e]
                        digits = text[j + 2:j + 2 + n]
                        if not re.fullmatch(r"[0-9a-fA-F]{%d}" % n, digits):
                            err(f"bad escape \\{e}{digits}")
                        out.append(chr(int(digits, 16)))
                        j += 2 + n
                    elif re.fullmatch(r"[0-7]{3}", text[j + 1:j + 4]):
                        out.append(chr(int(text[j + 1:j + 4], 8)))
                        j += 4
                    else:
                        # Alloy (like Go) refuses an unknown escape such as "\{" or "\d".
                        err(f"unknown escape sequence \\{e} (write \\\\{e})")
                else:
                    out.append(c)
                    j += 1
            toks.append(Token("string", "".join(out), start_line, start_col, nl))
            nl = False
            advance(j + 1 - i)
        elif ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                err("raw string literal not terminated")
            toks.append(Token("string", text[i + 1:j], line, col, nl, raw=True))
            nl = False
            advance(j + 1 - i)
        elif ch.isdigit():
            m = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?").match(text, i)
            s = m.group(0)
            toks.append(Token("number", float(s) if any(c in s for c in ".eE") else int(s), line, col, nl))
            nl = False
            advance(len(s))
        elif ch.isalpha() or ch == "_":
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(text, i)
            toks.append(Token("ident", m.group(0), line, col, nl))
            nl = False
            advance(len(m.group(0)))
        else:
            for op in _OPS:
                if text.startswith(op, i):
                    toks.append(Token("op", op, line, col, nl))
                    nl = False
                    advance(len(op))
                    break
            else:
                err(f"unexpected character {ch!r}")
    toks.append(Token("eof", None, line, col, True))
    return toks


_BINARY = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">="), ("+", "-"), ("*", "/", "%")]


class _Parser:
    def __init__(self, text):
        self.toks = tokenize(text)
        self.pos = 0

    @property
    def tok(self):
        return self.toks[self.pos]

    def err(self, msg, tok=None):
        t = tok or self.tok
        raise AlloyError(f"line {t.line} column {t.col}: {msg}")

    def take(self):
        t = self.tok
        self.pos += 1
        return t

    def is_op(self, *ops):
        return self.tok.kind == "op" and self.tok.value in ops

    def expect_op(self, op):
        if not self.is_op(op):
            self.err(f"expected {op!r}, found {self.describe(self.tok)}")
        return self.take()

    @staticmethod
    def describe(t):
        return "end of file" if t.kind == "eof" else f"{t.kind} {t.value!r}"

    def body(self, closing):
        stmts = []
        while not (self.tok.kind == "eof" or self.is_op("}")):
            if self.tok.kind != "ident":
                self.err(f"expected an attribute or a block, found {self.describe(self.tok)}")
            first = self.take()
            if self.is_op("="):
                self.take()
                stmts.append(Attribute(first.value, self.expr(), first.line))
            else:
                name = [first.value]
                while self.is_op("."):
                    self.take()
                    if self.tok.kind != "ident":
                        self.err(f"expected a name after '.', found {self.describe(self.tok)}")
                    name.append(self.take().value)
                label = None
                if self.tok.kind == "string":
                    if self.tok.raw:
                        self.err("a block label must be a double-quoted string")
                    label = self.take().value
                    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
                        self.err(f"block label {label!r} must be an identifier")
                if not self.is_op("{"):
                    self.err(f"expected '=' or '{{' after {'.'.join(name)!r}, found {self.describe(self.tok)}")
                self.take()
                b = Block(".".join(name), label, self.body("}"), first.line)
                self.expect_op("}")
                stmts.append(b)
            # One statement per line.
            if not (self.tok.nl_before or self.is_op("}") or self.tok.kind == "eof"):
                self.err(f"expected a newline after the statement, found {self.describe(self.tok)}")
        if closing is None and self.tok.kind != "eof":
            self.err("unexpected '}'")
        if closing is not None and self.tok.kind == "eof":
            self.err("block not closed: missing '}'")
        return stmts

    def expr(self, level=0):
        if level == len(_BINARY):
            return self.power()
        left = self.expr(level + 1)
        while self.tok.kind == "op" and self.tok.value in _BINARY[level] and not self.tok.nl_before:
            op = self.take().value
            left = ("binary", op, left, self.expr(level + 1))
        return left

    def power(self):
        left = self.unary()
        if self.is_op("^"):
            self.take()
            return ("binary", "^", left, self.power())
        return left

    def unary(self):
        if self.is_op("!", "-"):
            op = self.take().value
            return ("unary", op, self.unary())
        return self.postfix(self.primary())

    def postfix(self, e):
        while not self.tok.nl_before:
            if self.is_op("."):
                self.take()
                if self.tok.kind != "ident":
                    self.err(f"expected a name after '.', found {self.describe(self.tok)}")
                name = self.take().value
                e = ("ref", e[1] + "." + name) if e[0] == "ref" else ("field", e, name)
            elif self.is_op("["):
                self.take()
                idx = self.expr()
                self.expect_op("]")
                e = ("index", e, idx)
            elif self.is_op("("):
                self.take()
                e = ("call", e, self.elements(")", self.expr))
            else:
                break
        return e

    def elements(self, closing, element):
        """Comma-separated elements up to `closing`; a newline before `closing` needs a comma."""
        items = []
        while not self.is_op(closing):
            if self.tok.kind == "eof":
                self.err(f"missing {closing!r}")
            items.append(element())
            if self.is_op(","):
                self.take()
                continue
            if self.is_op(closing):
                if self.tok.nl_before:
                    self.err(f"missing ',' before newline (before {closing!r})")
                break
            self.err(f"expected ',' or {closing!r}, found {self.describe(self.tok)}")
        self.take()
        return items

    def field(self):
        if self.tok.kind not in ("ident", "string"):
            self.err(f"expected an object key, found {self.describe(self.tok)}")
        key = self.take().value
        self.expect_op("=")
        return (key, self.expr())

    def primary(self):
        t = self.tok
        if t.kind in ("string", "number"):
            self.take()
            return ("lit", t.value)
        if t.kind == "ident":
            self.take()
            if t.value in ("true", "false"):
                return ("lit", t.value == "true")
            if t.value == "null":
                return ("lit", None)
            return ("ref", t.value)
        if self.is_op("["):
            self.take()
            return ("list", self.elements("]", self.expr))
        if self.is_op("{"):
            self.take()
            fields = self.elements("}", self.field)
            keys = [k for k, _ in fields]
            for k in keys:
                if keys.count(k) > 1:
                    self.err(f"key {k!r} appears twice in an object", t)
            return ("object", fields)
        if self.is_op("("):
            self.take()
            e = self.expr()
            self.expect_op(")")
            return e
        self.err(f"expected an expression, found {self.describe(t)}")


def parse(text):
    return _Parser(text).body(None)


def literal(expr):
    """The Python value of a constant expression (strings, numbers, bools, lists, objects);
    raises ValueError for references and calls."""
    kind = expr[0]
    if kind == "lit":
        return expr[1]
    if kind == "list":
        return [literal(e) for e in expr[1]]
    if kind == "object":
        return {k: literal(v) for k, v in expr[1]}
    raise ValueError(f"not a constant: {expr[0]}")


def refs(expr):
    """Every reference (a.b.c) an expression contains."""
    kind = expr[0]
    if kind == "ref":
        return [expr[1]]
    if kind == "list":
        return [r for e in expr[1] for r in refs(e)]
    if kind == "object":
        return [r for _, e in expr[1] for r in refs(e)]
    if kind in ("index", "field"):
        return refs(expr[1]) + (refs(expr[2]) if kind == "index" else [])
    if kind == "call":
        return [r for e in expr[2] for r in refs(e)]  # the function's own name is no component
    if kind == "unary":
        return refs(expr[2])
    if kind == "binary":
        return refs(expr[2]) + refs(expr[3])
    return []
