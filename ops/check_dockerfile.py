#!/usr/bin/env python3
"""Check that the Dockerfile builds and copies binaries that the Cargo workspace really defines.

Why: a renamed or not-yet-added binary only shows up as a failed `docker build` minutes into the
Rust compile, on a machine with Docker. This check reads the files instead and fails in
milliseconds, anywhere:

  * every `cargo build --bin X` and every binary copied out of target/ is a bin target of a
    workspace member (explicit `[[bin]] name = ...`, or Cargo's auto-discovered src/main.rs /
    src/bin/*.rs);
  * every copied binary is one the build step builds, from the profile it builds;
  * every command the compose services run from the Pickple image, and the image's CMD, is a
    binary the image contains.

Usage: ops/check_dockerfile.py [repo-root]   (exit 0 ok, 1 problems found, details on stdout)
"""
import glob
import os
import re
import shlex
import sys
import tomllib

try:
    import yaml
except ImportError:  # compose cross-check is skipped, the Dockerfile/Cargo check still runs
    yaml = None


def instructions(dockerfile):
    """(INSTRUCTION, rest) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    with open(dockerfile) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not buf and line.lstrip().startswith("#"):
                continue
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            buf += line
            if buf.strip():
                word, _, rest = buf.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def words(rest):
    """Arguments of RUN/COPY/CMD in shell or JSON (exec) form."""
    rest = rest.strip()
    if rest.startswith("["):
        import json

        try:
            return json.loads(rest)
        except ValueError:
            pass
    return shlex.split(rest, comments=False)


def parse_dockerfile(path):
    built, build_all, profiles, copied, cmd = set(), False, set(), {}, None
    for ins, rest in instructions(path):
        if ins == "RUN":
            # One RUN may chain several commands; look at each `cargo build` segment.
            for seg in re.split(r"&&|;|\|\|", rest):
                w = shlex.split(seg) if seg.strip() else []
                if len(w) >= 2 and w[0] == "cargo" and "build" in w[1:3]:
                    profiles.add("release" if "--release" in w or "-r" in w else "debug")
                    names = [w[i + 1] for i, a in enumerate(w[:-1]) if a == "--bin"]
                    names += [a.split("=", 1)[1] for a in w if a.startswith("--bin=")]
                    built.update(names)
                    if not names or "--bins" in w:
                        build_all = True
        elif ins == "COPY":
            w = words(rest)
            if not any(a.startswith("--from=") for a in w):
                continue
            args = [a for a in w if not a.startswith("--")]
            for src in args[:-1]:
                m = re.search(r"/target/(?:[^/]+/)?(release|debug)/([^/]+)$", src)
                if m:
                    copied[m.group(2)] = m.group(1)
        elif ins == "CMD" or ins == "ENTRYPOINT":
            w = words(rest)
            if w:
                cmd = os.path.basename(w[0])
    return built, build_all, profiles, copied, cmd


def workspace_bins(root):
    """bin name -> where it is defined; plus notes about missing/unlisted Cargo files."""
    notes, bins = [], {}
    root_toml = os.path.join(root, "Cargo.toml")
    if not os.path.exists(root_toml):
        return bins, ["missing: Cargo.toml (workspace root)"], []
    with open(root_toml, "rb") as f:
        top = tomllib.load(f)
    member_dirs = []
    if "package" in top:
        member_dirs.append(root)
    for pattern in top.get("workspace", {}).get("members", []):
        hits = [d for d in glob.glob(os.path.join(root, pattern)) if os.path.isdir(d)]
        if not hits:
            notes.append(f"missing: workspace member '{pattern}' (no such directory)")
        member_dirs += hits
    for d in member_dirs:
        rel = os.path.relpath(d, root)
        toml_path = os.path.join(d, "Cargo.toml")
        if not os.path.exists(toml_path):
            notes.append(f"missing: {os.path.join(rel, 'Cargo.toml')} (listed as workspace member)")
            continue
        with open(toml_path, "rb") as f:
            data = tomllib.load(f)
        pkg = data.get("package", {})
        pkg_name = pkg.get("name")
        claimed = set()
        for b in data.get("bin", []):
            name = b.get("name")
            if not name:
                continue
            default = "src/main.rs" if name == pkg_name else f"src/bin/{name}.rs"
            claimed.add(os.path.normpath(b.get("path", default)))
            bins[name] = f"{rel}/Cargo.toml [[bin]]"
        if pkg_name and pkg.get("autobins", True):
            if os.path.exists(os.path.join(d, "src/main.rs")) and "src/main.rs" not in claimed:
                bins.setdefault(pkg_name, f"{rel}/src/main.rs (package {pkg_name})")
            auto = glob.glob(os.path.join(d, "src/bin/*.rs")) + glob.glob(os.path.join(d, "src/bin/*/main.rs"))
            for p in auto:
                relp = os.path.normpath(os.path.relpath(p, d))
                if relp in claimed:
                    continue
                name = os.path.basename(os.path.dirname(p)) if p.endswith("/main.rs") else os.path.splitext(os.path.basename(p))[0]
                bins.setdefault(name, f"{rel}/{relp} (auto-discovered)")
    # Cargo.toml files that exist but are not members: the usual reason a new binary "is missing".
    members = {os.path.normpath(d) for d in member_dirs}
    unlisted = []
    for p in glob.glob(os.path.join(root, "**/Cargo.toml"), recursive=True):
        d = os.path.normpath(os.path.dirname(p))
        rel = os.path.relpath(d, root)
        if rel == "." or rel.split(os.sep)[0] in ("target", ".work", ".git") or d in members:
            continue
        unlisted.append(os.path.join(rel, "Cargo.toml"))
    return bins, notes, sorted(unlisted)


def compose_commands(root):
    """(service, program) for every compose service built from this repository's Dockerfile."""
    path = os.path.join(root, "docker-compose.yml")
    if yaml is None or not os.path.exists(path):
        return []
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = []
    for name, svc in (doc.get("services") or {}).items():
        build = svc.get("build")
        ctx = build if isinstance(build, str) else (build or {}).get("context")
        if ctx not in (".", "./"):
            continue
        prog = svc.get("entrypoint") or svc.get("command")
        if isinstance(prog, str):
            prog = shlex.split(prog)
        if prog:
            out.append((name, os.path.basename(prog[0])))
    return out


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    dockerfile = os.path.join(root, "Dockerfile")
    if not os.path.exists(dockerfile):
        print("missing: Dockerfile")
        return 1
    built, build_all, profiles, copied, cmd = parse_dockerfile(dockerfile)
    bins, notes, unlisted = workspace_bins(root)
    problems = list(notes)
    if not copied:
        problems.append("Dockerfile copies no binary out of target/")
    for name in sorted(built | set(copied)):
        if name not in bins:
            problems.append(f"bin '{name}' (used by Dockerfile) is not a bin target of any workspace member")
    for name, profile in sorted(copied.items()):
        if not build_all and name not in built:
            problems.append(f"Dockerfile copies '{name}' but `cargo build` does not build it (--bin {name})")
        if profiles and profile not in profiles:
            problems.append(f"Dockerfile copies '{name}' from target/{profile} but builds {', '.join(sorted(profiles))}")
    if cmd and cmd not in copied:
        problems.append(f"CMD/ENTRYPOINT runs '{cmd}', which the image does not contain")
    for svc, prog in compose_commands(root):
        if prog not in copied:
            problems.append(f"compose service '{svc}' runs '{prog}', which the image does not contain")
    if problems:
        for p in problems:
            print(p)
        print("bins defined by workspace members: " + (", ".join(f"{n} ({w})" for n, w in sorted(bins.items())) or "none"))
        if unlisted:
            print("Cargo.toml files not in [workspace] members: " + ", ".join(unlisted))
        return 1
    print(f"Dockerfile bins {', '.join(sorted(copied))} all defined by the workspace")
    return 0


if __name__ == "__main__":
    sys.exit(main())
