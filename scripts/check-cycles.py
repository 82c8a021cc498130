#!/usr/bin/env python3
"""Import cycles between the top-level modules of proxy/src (crate hotplex-proxy).

A top-level module is `proxy/src/X.rs` together with `proxy/src/X/**.rs`. Module X depends on
module Y when a file of X names `crate::Y` (in a `use` line or in a path such as
`crate::Y::f()`; `super::` paths stay inside X's tree and are not followed). Comment lines
(`//`, `///`, `//!`) are ignored, so doc links do not count.

Fails (exit 1) on:
  1. two modules that import each other (X -> Y and Y -> X) unless the pair is in
     ALLOWED_PAIRS with its reason;
  2. `config` importing a module outside CONFIG_MAY_IMPORT: config is the layer every
     other module reads (file types -> validation -> runtime types), so it must sit below
     them (`config` <-> `tls` and `config` <-> `jwt` were the cycles fixed for issue #19).
Longer cycles (strongly connected components) are printed for information.

Pure python, no dependencies: `python3 scripts/check-cycles.py [proxy/src]` (`make lint`).
"""
import os
import re
import sys

# Pairs of modules that still import each other, each with the reason. Keep it short: a new
# entry needs a reason a reviewer accepts.
ALLOWED_PAIRS = {}

# What `config` may import, each with the reason (anything else fails).
CONFIG_MAY_IMPORT = {
    "policy": "the route policies' runtime types held by the route table; policy imports "
    "nothing of the crate (their validation, with the key paths, is in config)",
    "upgrade_sock": "the default upgrade socket path (upgrade_sock imports nothing)",
}

CRATE_PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse\s+crate::\{([^;]*)\}", re.S)


def top_modules(src):
    mods = set()
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs"):
            mods.add(name[:-3])
        elif os.path.isdir(path):
            mods.add(name)
    return mods


def files_of(src, mod):
    single = os.path.join(src, mod + ".rs")
    if os.path.isfile(single):
        yield single
    tree = os.path.join(src, mod)
    if os.path.isdir(tree):
        for root, _dirs, names in os.walk(tree):
            for n in sorted(names):
                if n.endswith(".rs"):
                    yield os.path.join(root, n)


def strip_comments(text):
    out = []
    for line in text.splitlines():
        s = line.lstrip()
        if s.startswith("//"):
            continue
        out.append(line)
    return "\n".join(out)


def deps_of(src, mod, mods):
    deps = {}
    for path in files_of(src, mod):
        with open(path, encoding="utf-8") as f:
            text = strip_comments(f.read())
        names = set(CRATE_PATH.findall(text))
        for group in USE_GROUP.findall(text):
            for item in re.split(r"[,\s]+", group):
                head = item.split("::")[0].strip("{} ")
                if head:
                    names.add(head)
        for n in names:
            if n in mods and n != mod:
                deps.setdefault(n, path)
    return deps


def sccs(graph):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src, allowed=None, config_may_import=None):
    """(problems, notes) for the tree at `src`; problems fail the check."""
    allowed = ALLOWED_PAIRS if allowed is None else allowed
    config_may_import = CONFIG_MAY_IMPORT if config_may_import is None else config_may_import
    mods = top_modules(src)
    graph, where = {}, {}
    for m in mods:
        d = deps_of(src, m, mods)
        graph[m] = set(d)
        for n, path in d.items():
            where[(m, n)] = path
    bad, notes = [], []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a < b and a in graph[b]:
                reason = allowed.get((a, b)) or allowed.get((b, a))
                if reason:
                    notes.append(f"allowed: {a} <-> {b}: {reason}")
                else:
                    bad.append(
                        f"cycle: {a} <-> {b} ({where[(a, b)]} imports crate::{b}, "
                        f"{where[(b, a)]} imports crate::{a})"
                    )
    for n in sorted(graph.get("config", ())):
        if n not in config_may_import:
            bad.append(
                f"layering: {where[('config', n)]} imports crate::{n}; config must not "
                f"depend on {n} (move the type it needs into config, or list it in "
                "CONFIG_MAY_IMPORT with a reason)"
            )
    for a, b in allowed:
        if not (b in graph.get(a, ()) and a in graph.get(b, ())):
            notes.append(f"note: {a} <-> {b} no longer a cycle: remove it from ALLOWED_PAIRS")
    for comp in sccs(graph):
        if len(comp) > 1:
            notes.append(f"info: {len(comp)} modules reach each other: {', '.join(comp)}")
    return bad, notes, len(mods)


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "proxy/src"
    bad, notes, n = check(src)
    for line in notes + bad:
        print(line)
    if bad:
        print(f"check-cycles: {len(bad)} problem(s) in {src}")
        return 1
    print(f"check-cycles: ok ({n} top-level modules of {src})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
