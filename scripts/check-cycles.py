#!/usr/bin/env python3
"""Import cycles between the top-level modules of proxy/src (crate hotplex-proxy).

A top-level module is `proxy/src/X.rs` together with `proxy/src/X/**.rs`. Module X depends on
module Y when a file of X names `crate::Y` (in a `use` line, a `pub use` re-export, or in a
path such as `crate::Y::f()`; `super::` paths stay inside X's tree and are not followed).
Comment lines (`//`, `///`, `//!`) are ignored, so doc links do not count. Unit tests inside a
module count as its imports.

Fails (exit 1) on:
  1. any cycle: a strongly connected component of more than one module (two modules that
     import each other, or a longer loop), unless that exact set of modules is in
     ALLOWED_CYCLES with its reason (empty since issue #19: keep it so);
  2. `config` importing a module outside CONFIG_MAY_IMPORT: config is the layer every
     other module reads (file types -> validation -> runtime types, including the route
     table and the http pools' live state), so only leaves may sit below it.

The layering this enforces (bottom to top; a module imports only modules of lower layers),
as of issue #19 (also at the top of proxy/src/lib.rs):
  0. leaves: affinity, audit, head_map, hostile, policy, sd_notify, signals, surface,
     upgrade_sock
  1. config (-> policy, upgrade_sock), handover, upgrade
  2. jwt, limits, metrics, upgrade_cmd
  3. errors, limit_store, tls
  4. body, security, upstream
  5. conn_guard, reload, routing
  6. admin, pools, telemetry, trust
  7. routes
  8. proxy
  9. server
 10. cli

Pure python, no dependencies: `python3 scripts/check-cycles.py [proxy/src]` (`make lint`).
"""
import os
import re
import sys
from collections import deque

# Cycles that may stay, each as the sorted tuple of ALL the modules of the strongly connected
# component, with the reason. Empty: a new entry needs a reason a reviewer accepts (a cycle
# that truly cannot be broken by moving a type down or an impl up).
ALLOWED_CYCLES = {}

# What `config` may import, each with the reason (anything else fails). Both are leaves.
CONFIG_MAY_IMPORT = {
    "policy": "the route policies' runtime types (IP rules, header rules, redirects, "
    "compression, route timeouts, error pages) held by the route table; policy imports "
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


def cycle_in(comp, graph):
    """A shortest loop through the component's first module, as a list of modules (the first
    repeated at the end)."""
    start = comp[0]
    inside = set(comp)
    prev = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & inside):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start] + list(reversed(path))[1:] + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return [start, start]


def check(src, allowed=None, config_may_import=None):
    """(problems, notes, module count) for the tree at `src`; problems fail the check.
    `allowed`: {modules of a component (any order): reason}, default ALLOWED_CYCLES."""
    allowed = ALLOWED_CYCLES if allowed is None else allowed
    allowed = {tuple(sorted(k)): v for k, v in allowed.items()}
    config_may_import = CONFIG_MAY_IMPORT if config_may_import is None else config_may_import
    mods = top_modules(src)
    graph, where = {}, {}
    for m in mods:
        d = deps_of(src, m, mods)
        graph[m] = set(d)
        for n, path in d.items():
            where[(m, n)] = path
    bad, notes = [], []
    comps = [c for c in sccs(graph) if len(c) > 1]
    for comp in sorted(comps):
        reason = allowed.get(tuple(comp))
        if reason:
            notes.append(f"allowed: cycle {', '.join(comp)}: {reason}")
            continue
        if len(comp) == 2:
            a, b = comp
            bad.append(
                f"cycle: {a} <-> {b} ({where[(a, b)]} imports crate::{b}, "
                f"{where[(b, a)]} imports crate::{a})"
            )
            continue
        loop = cycle_in(comp, graph)
        edges = "; ".join(
            f"{where[(x, y)]} imports crate::{y}" for x, y in zip(loop, loop[1:])
        )
        bad.append(
            f"cycle: {len(comp)} modules reach each other ({', '.join(comp)}), e.g. "
            f"{' -> '.join(loop)} ({edges})"
        )
    for n in sorted(graph.get("config", ())):
        if n not in config_may_import:
            bad.append(
                f"layering: {where[('config', n)]} imports crate::{n}; config must not "
                f"depend on {n} (move the type it needs into config, or list it in "
                "CONFIG_MAY_IMPORT with a reason)"
            )
    live = {tuple(c) for c in comps}
    for k in sorted(allowed):
        if k not in live:
            notes.append(
                f"note: {', '.join(k)} no longer a cycle: remove it from ALLOWED_CYCLES"
            )
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
