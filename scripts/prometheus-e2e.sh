#!/usr/bin/env bash
# `make obs-e2e`: the shipped dashboard and alerts against a real Prometheus.
#
# Starts the proxy (embedded default config: 127.0.0.1:8000, admin 127.0.0.1:9900, TLS
# 127.0.0.1:8443) and 3 workers on 127.0.0.1:8081-8083 as `make run` does (debug builds),
# and a real Prometheus (Debian package `prometheus`) scraping them every second: the
# workers on their own ports, the proxy on its admin listener, with the alert rules of
# conf/prometheus/alerts.yml. Sends real traffic with curl (sessions, SSE turns, failing
# requests, one TLS request), then:
#   - every target is up;
#   - every alert rule is loaded and evaluates without error;
#   - every panel expression of conf/grafana/hotplex-dashboard.json, queried through
#     Prometheus's HTTP API (/api/v1/query), returns data (at least one series with a
#     number, not only NaN).
# Exits non-zero naming the panel (or rule, or target) that failed. Loopback only; bounded:
# the run after the build is killed after DEADLINE seconds (default 170).
#
#   env: SKIP_BUILD=1 (use existing binaries), CARGO_TARGET_DIR, PROM_PORT (default 19090),
#        DEADLINE (seconds), KEEP=1 (keep the scratch directory: logs, Prometheus data)
set -euo pipefail
cd "$(dirname "$0")/.."

PROM_PORT=${PROM_PORT:-19090}
DEADLINE=${DEADLINE:-170}
BIN="${CARGO_TARGET_DIR:-target}/debug"
PROXY=http://127.0.0.1:8000
ADMIN=http://127.0.0.1:9900
PROM=http://127.0.0.1:$PROM_PORT

say() { echo "[obs-e2e] $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

command -v prometheus >/dev/null || die "prometheus not installed (apt-get install prometheus)"
command -v curl >/dev/null || die "curl not installed"
command -v python3 >/dev/null || die "python3 not installed"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  say "building debug binaries"
  cargo build -q -p hotplex-proxy -p hotplex-worker
fi
[ -x "$BIN/hotplex-proxy" ] && [ -x "$BIN/hotplex-worker" ] || die "no binaries in $BIN"

for port in 8000 8081 8082 8083 8443 9900 "$PROM_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is already in use (a \`make run\` still running?)"
  fi
done

DIR=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    for f in "$DIR"/*.log; do
      [ -f "$f" ] || continue
      say "--- tail of $(basename "$f")"
      tail -n 15 "$f" >&2 || true
    done
  fi
  if [ "${KEEP:-0}" = 1 ]; then say "kept $DIR"; else rm -rf "$DIR"; fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

# Bounded: a watchdog ends the run (and so this script, through the trap) after DEADLINE s.
main_pid=$$
# (The sleep's output goes to /dev/null: it must not hold a caller's pipe open.)
( sleep "$DEADLINE" </dev/null >/dev/null 2>&1; say "FAIL: deadline of ${DEADLINE}s passed"; kill -TERM "$main_pid" ) &
watchdog=$!
pids+=("$watchdog")

# -- HotPlex, as `make run` starts it ---------------------------------------------------
for i in 1 2 3; do
  RUST_LOG=warn "$BIN/hotplex-worker" --listen "127.0.0.1:808$i" --node-id "w$i" >"$DIR/worker$i.log" 2>&1 &
  pids+=($!)
done
RUST_LOG=warn "$BIN/hotplex-proxy" >"$DIR/proxy.log" 2>&1 &
pids+=($!)

wait_ok() { # URL what
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  die "$2 did not come up ($1)"
}
for i in 1 2 3; do wait_ok "http://127.0.0.1:808$i/health/live" "worker w$i"; done
wait_ok "$ADMIN/health/live" "the proxy's admin listener"

# -- Prometheus: 1 s scrapes, the shipped alert rules --------------------------------------
cp conf/prometheus/alerts.yml "$DIR/alerts.yml"
cat >"$DIR/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $DIR/alerts.yml
scrape_configs:
  - job_name: hotplex
    static_configs:
      - targets: ["127.0.0.1:9900"]
        labels: {service: hotplex-edge}
      - targets: ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
        labels: {service: hotplex-node}
YAML
promtool check config "$DIR/prometheus.yml" >/dev/null || die "promtool rejects the test's prometheus.yml"
prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$DIR/prometheus.log" 2>&1 &
pids+=($!)
wait_ok "$PROM/-/ready" "Prometheus"
say "Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') up on $PROM"
# Traffic only once every target has been scraped twice: counters that move before the
# first scrape would show no increase (rate() 0, latency quantiles NaN).
scraped=0
for _ in $(seq 1 60); do
  n=$(curl -fsS "$PROM/api/v1/query" --data-urlencode 'query=count(count_over_time(up[1m]) >= 2)' 2>/dev/null |
    sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)"\].*/\1/p')
  if [ "${n:-0}" -ge 4 ]; then scraped=1; break; fi
  sleep 0.5
done
[ "$scraped" = 1 ] || die "Prometheus did not scrape the 4 targets"
say "4 targets scraped; sending traffic"

# -- Real traffic through the proxy ----------------------------------------------------------
sid() { sed -n 's/.*"session_id":"\([^"]*\)".*/\1/p'; }
for round in 1 2 3; do
  SID=$(curl -fsS -X POST "$PROXY/sessions" | sid)
  [ -n "$SID" ] || die "POST /sessions returned no session_id"
  curl -fsS "$PROXY/sessions/$SID" >/dev/null || die "GET /sessions/$SID failed"
  for turn in 1 2; do
    out=$(curl -fsS -N -X POST "$PROXY/sessions/$SID/messages" \
      -H 'content-type: application/json' -H 'accept: text/event-stream' \
      --max-time 20 -d '{"prompt":"hello"}') || die "SSE turn $round.$turn failed"
    grep -q '^event: completed' <<<"$out" || die "SSE turn $round.$turn did not complete: $out"
  done
  [ "$round" = 3 ] || curl -fsS -X DELETE -o /dev/null "$PROXY/sessions/$SID" || die "DELETE failed"
  sleep 1   # spread over several scrapes
done
# Failing requests: a malformed session id, an unknown (well-formed) one, a bad body.
code=$(curl -s -o /dev/null -w '%{http_code}' "$PROXY/sessions/not%20a%20session")
say "GET malformed session id -> $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$PROXY/sessions/$SID/messages" \
  -H 'content-type: application/json' -d '{"prompt":')
say "POST a truncated JSON body -> $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$PROXY/sessions/w9.0000000000000000.0000000000000000")
say "GET a session of an unknown worker -> $code"
# One TLS request (development certificate).
curl -fsSk -o /dev/null "https://127.0.0.1:8443/health/live" || say "note: no TLS answer on 8443"

# Let Prometheus take a few scrapes after the traffic (rate() needs two samples, the
# rules a few evaluations).
sleep 6

# -- Checks through Prometheus's HTTP API ----------------------------------------------------
PROM="$PROM" python3 - <<'PY'
import json, math, os, sys, time, urllib.parse, urllib.request

prom = os.environ["PROM"]
failures = []

def api(path, **params):
    url = f"{prom}{path}?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        v = json.load(r)
    if v.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {v}")
    return v["data"]

# Targets: all four up.
deadline = time.time() + 20
while True:
    ts = api("/api/v1/targets")["activeTargets"]
    down = [t["scrapeUrl"] for t in ts if t["health"] != "up"]
    if len(ts) == 4 and not down:
        break
    if time.time() > deadline:
        failures.append(f"targets not all up: {len(ts)} targets, down: {down}")
        break
    time.sleep(1)
print(f"targets: {len(ts)} up ({', '.join(sorted(t['labels']['instance'] for t in ts))})")

# Alert rules: every rule of alerts.yml loaded and evaluated without error.
import re
want = re.findall(r"^\s*- alert:\s*(\S+)", open("conf/prometheus/alerts.yml").read(), re.M)
rules = {r["name"]: r for g in api("/api/v1/rules")["groups"] for r in g["rules"]}
for name in want:
    r = rules.get(name)
    if r is None:
        failures.append(f"alert rule {name}: not loaded")
    elif r.get("health") != "ok" or r.get("lastError"):
        failures.append(f"alert rule {name}: health {r.get('health')} {r.get('lastError', '')}")
print(f"alert rules: {len(want)} loaded, all evaluating" if not failures else "alert rules: problems")
firing = [a["labels"]["alertname"] for a in api("/api/v1/alerts")["alerts"]]
print(f"alerts pending/firing on this idle setup: {firing or 'none'}")

# Every dashboard panel expression returns data.
dash = json.load(open("conf/grafana/hotplex-dashboard.json"))
def panels(v):
    if isinstance(v, dict):
        if "targets" in v and "title" in v:
            yield v
        for x in v.get("panels", []) or []:
            yield from panels(x)
    elif isinstance(v, list):
        for x in v:
            yield from panels(x)
n = 0
for p in panels(dash.get("panels", [])):
    for t in p.get("targets", []):
        expr = t.get("expr")
        if not expr:
            continue
        n += 1
        q = (expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
                 .replace("$__range", "5m"))
        try:
            res = api("/api/v1/query", query=q)["result"]
        except Exception as e:  # a PromQL error is a failure too
            failures.append(f"panel {p['title']!r}: {expr}: query error {e}")
            continue
        vals = []
        for s in res:
            v = s["value"][1] if "value" in s else None
            try:
                vals.append(float(v))
            except (TypeError, ValueError):
                pass
        numbers = [v for v in vals if not math.isnan(v)]
        if not res:
            failures.append(f"panel {p['title']!r}: no data for {expr}")
        elif not numbers:
            failures.append(f"panel {p['title']!r}: only NaN for {expr}")
        else:
            print(f"ok  {p['title']}: {expr}  ({len(res)} series)")
if n < 20:
    failures.append(f"only {n} panel expressions found in the dashboard")
if failures:
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1)
print(f"all {n} panel expressions of the dashboard return data")
PY
kill "$watchdog" 2>/dev/null || true
say "passed"
