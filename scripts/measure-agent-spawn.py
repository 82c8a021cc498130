#!/usr/bin/env python3
"""Session start/close cost of a worker with and without the agent sandbox
(docs/reliability.md, "Agent sandbox (bubblewrap)").

Usage (as root, after `cargo build`): scripts/measure-agent-spawn.py MODE SANDBOX N
  MODE: nobody (worker as uid 65534 via setpriv, agents as its uid) or root (per-session uids)
  SANDBOX: none | bubblewrap | auto;  N: sequential create + delete cycles (demo agent)
Prints the p50/p90 of POST /sessions and DELETE /sessions/{id}, in ms.
"""
import subprocess, sys, time, json, os, statistics, urllib.request

WORKER = os.environ.get("WORKER", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "debug", "hotplex-worker"))
mode, sandbox, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = os.path.abspath(os.path.join(os.environ.get("OUT", "target/tmp/measure"), f"run-{mode}-{sandbox}"))
os.makedirs(d, exist_ok=True)
for x in [d] + [os.path.dirname(d)]:
    os.chmod(x, 0o777 if x == d else 0o755)
cfg = os.path.join(d, "worker.yaml")
iso = f"  isolation:\n    sandbox: {sandbox}\n"
open(cfg, "w").write(f"max_sessions: 50\nlog_level: warn\nagent:\n{iso}")
os.chmod(cfg, 0o644)
addr = os.path.join(d, "addr")
if os.path.exists(addr): os.remove(addr)
cmd = [os.path.abspath(WORKER), "--config", cfg, "--listen", "127.0.0.1:0", "--addr-file", addr]
if mode == "nobody":
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
p = subprocess.Popen(cmd, stderr=open(os.path.join(d, "log"), "w"))
for _ in range(200):
    if os.path.exists(addr) and os.path.getsize(addr) > 0: break
    time.sleep(0.05)
a = open(addr).read().strip()
try:
    base = "http://" + json.loads(a)["listen"]
except Exception:
    base = "http://" + a
time.sleep(0.3)
def req(method, url):
    r = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(r) as resp: return resp.read()
cr, de = [], []
for i in range(n):
    t = time.perf_counter(); sid = json.loads(req("POST", base + "/sessions"))["session_id"]; cr.append(time.perf_counter() - t)
    t = time.perf_counter(); req("DELETE", base + f"/sessions/{sid}"); de.append(time.perf_counter() - t)
p.terminate(); p.wait()
q = lambda v, x: sorted(v)[int(x * (len(v) - 1))] * 1000
print(f"{mode:7} {sandbox:10} n={n} create p50 {statistics.median(cr)*1000:.1f} ms p90 {q(cr,0.9):.1f} | delete p50 {statistics.median(de)*1000:.1f} ms p90 {q(de,0.9):.1f}")
