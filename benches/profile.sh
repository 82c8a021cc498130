#!/usr/bin/env bash
# CPU profile of hotplex-proxy under scenario 1 of benches/load_bench.sh (HTTP/1.1
# keep-alive, wrk -c50, API key + signed session ids, nginx backend on 3 ports), with
# `perf record` (cpu-clock sampling: works in VMs without hardware counters). Prints the
# top symbols by self time and writes perf.data to $OUT_DIR (default /tmp/hotplex-profile).
#
#   bash benches/profile.sh [PROXY_BIN] [SECONDS]
#
# Same pinning as the load bench: wrk + backend on CPU 0, the proxy on CPU 1.
# CALLGRAPH=dwarf FREQ=499 for callers through Rust code (release builds have no frame pointers).
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY_BIN=${1:-${CARGO_TARGET_DIR:-target}/perf/hotplex-proxy}
SECS=${2:-10}
OUT_DIR=${OUT_DIR:-/tmp/hotplex-profile}
BASE=${BASE_PORT:-18300}
API_KEY=bench-api-key-0123456789
SECRET=bench-affinity-secret-0123456789
command -v perf >/dev/null || { echo "perf not installed (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$PROXY_BIN" ] || { echo "no proxy binary at $PROXY_BIN" >&2; exit 1; }
mkdir -p "$OUT_DIR"
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
mkdir -p "$DIR"/{backend-body,backend-proxy,backend-fastcgi,backend-uwsgi,backend-scgi}
W1=$((BASE + 1)); W2=$((BASE + 2)); W3=$((BASE + 3)); P=$((BASE + 20)); A=$((BASE + 21))
sed -e "s|__W1__|$W1|; s|__W2__|$W2|; s|__W3__|$W3|; s|__DIR__|$DIR|g" benches/nginx-backend.conf >"$DIR/backend.conf"
taskset -c 0 nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" >/dev/null 2>&1 &
PIDS+=($!)
cat >"$DIR/proxy.yaml" <<YAML
listen: 127.0.0.1:$P
threads: 1
admin: {listen: "127.0.0.1:$A"}
workers:
  - {id: w1, address: "127.0.0.1:$W1", capacity: 1000000}
  - {id: w2, address: "127.0.0.1:$W2", capacity: 1000000}
  - {id: w3, address: "127.0.0.1:$W3", capacity: 1000000}
routing: {affinity_secrets: ["$SECRET"]}
log: {level: warn}
auth:
  enabled: true
  keys: [{name: bench, hash: "sha256:$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)"}]
limits:
  per_key: {rate: 1000000, burst: 1000000}
YAML
RUST_LOG=warn taskset -c 1 "$PROXY_BIN" --config "$DIR/proxy.yaml" >"$DIR/proxy.log" 2>&1 &
PROXY=$!
PIDS+=($PROXY)
KEYS=()
for w in w1 w2 w3; do
  for _ in 1 2 3 4 5; do
    rnd=$(openssl rand -hex 32 | tr -dc 'A-Za-z0-9' | cut -c1-16)
    mac=$(printf %s "$w.$rnd" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-16)
    KEYS+=("$w.$rnd.$mac")
  done
done
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$P/health/live" && break; sleep 0.1; done
export BENCH_KEYS=$(IFS=,; echo "${KEYS[*]}") BENCH_API_KEY=$API_KEY
taskset -c 0 wrk -t1 -c50 -d"$((SECS + 3))s" -s benches/wrk-session.lua "http://127.0.0.1:$P/" >"$OUT_DIR/wrk.txt" 2>&1 &
WRK=$!
sleep 1
perf record -F "${FREQ:-1999}" -e cpu-clock --call-graph "${CALLGRAPH:-fp}" -p "$PROXY" -o "$OUT_DIR/perf.data" -- sleep "$SECS" 2>"$OUT_DIR/perf-record.log" >&2 || true
wait $WRK || true
grep -E "Requests/sec|Non-2xx" "$OUT_DIR/wrk.txt" || true
perf report -i "$OUT_DIR/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | head -n "${TOP:-45}" | tee "$OUT_DIR/top.txt"
