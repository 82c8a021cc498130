#!/usr/bin/env python3
"""Test-quality check of the end-to-end suites (part of `make lint`).

Fails on:
- a `/proc/<pid>` existence check (`Path::new(&format!("/proc/{pid}")).exists()`): a crashed,
  unreaped child is a zombie whose /proc entry still exists, so such a check cannot fail;
  use `ChildGuard::assert_alive` (try_wait) or `assert_serving`;
- `#[path = ...]` in tests/: the suites are modules of one binary (tests/tests/e2e/main.rs)
  and use `crate::support` normally;
- `thread::sleep` / `time::sleep` / `sleep_until` longer than 100 ms (or of a duration that is
  not a literal) in tests/, unless the call, or one of the 3 lines above it, carries
  `allow-sleep: <reason>`: a condition that can be polled is awaited with
  `hotplex_e2e::eventually` (with a deadline) instead; what remains are deliberate windows
  (load running during a fault, a client holding a connection idle, a timer under test).

Usage: scripts/check-tests.py [DIR...]   (default: tests/)
"""
import pathlib
import re
import sys

LIMIT_MS = 100
SLEEP = re.compile(r"(?:thread|time)::sleep(?:_until)?\(")
PROC_EXISTS = re.compile(r'"/proc/\{[^"]*\}"\)\)?\s*\.exists\(\)', re.S)
PATH_ATTR = re.compile(r"#\[path\s*=")
ALLOW = re.compile(r"allow-sleep:\s*\S")


def call_arg(text, start):
    """The argument text of the call whose '(' is at text[start - 1]."""
    depth, i = 1, start
    while i < len(text) and depth:
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        i += 1
    return text[start : i - 1]


def millis(arg):
    """The duration of a literal `Duration::from_*` argument in ms, or None."""
    arg = re.sub(r"\s+", "", arg)
    m = re.fullmatch(r"(?:std::time::)?Duration::from_(secs|millis|micros|secs_f64|secs_f32)\(([\d_.]+)\)", arg)
    if not m:
        return None
    v = float(m.group(2).replace("_", ""))
    return v * {"secs": 1000, "secs_f64": 1000, "secs_f32": 1000, "millis": 1, "micros": 0.001}[m.group(1)]


def check(path):
    text = path.read_text()
    lines = text.splitlines()
    problems = []
    lineno = lambda pos: text.count("\n", 0, pos) + 1
    for m in PROC_EXISTS.finditer(text):
        problems.append((lineno(m.start()), "/proc/<pid> existence check (use ChildGuard::assert_alive)"))
    for m in PATH_ATTR.finditer(text):
        problems.append((lineno(m.start()), "#[path] in tests/ (use the support module)"))
    for m in SLEEP.finditer(text):
        arg = call_arg(text, m.end())
        ms = millis(arg)
        if ms is not None and ms <= LIMIT_MS:
            continue
        n = lineno(m.start())
        context = lines[max(0, n - 4) : n]
        if any(ALLOW.search(l) for l in context):
            continue
        what = f"{ms:.0f} ms" if ms is not None else f"non-literal duration `{' '.join(arg.split())}`"
        problems.append((n, f"sleep of {what} without `allow-sleep: <reason>` (poll with eventually)"))
    return [(path, n, msg) for n, msg in sorted(problems)]


def main():
    roots = [pathlib.Path(a) for a in sys.argv[1:]] or [pathlib.Path("tests")]
    problems = []
    for root in roots:
        for path in sorted(root.rglob("*.rs")):
            problems += check(path)
    for path, n, msg in problems:
        print(f"{path}:{n}: {msg}")
    if problems:
        print(f"check-tests: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
