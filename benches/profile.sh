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
# SHAPE=full (default: the production shape of benches/hotplex-full.yaml, access log into
# $OUT_DIR/access.log) or SHAPE=bare (the feature-less shape).
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY_BIN=${1:-${CARGO_TARGET_DIR:-target}/perf/hotplex-proxy}
SECS=${2:-10}
OUT_DIR=${OUT_DIR:-/tmp/hotplex-profile}
BASE=${BASE_PORT:-18300}
command -v perf >/dev/null || { echo "perf not installed (apt-get install linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$PROXY_BIN" ] || { echo "no proxy binary at $PROXY_BIN" >&2; exit 1; }
mkdir -p "$OUT_DIR"
source benches/scenario1.sh
s1_scratch
s1_backend taskset -c 0
if [ "${SHAPE:-full}" = bare ]; then
  s1_proxy_yaml >"$DIR/proxy.yaml"
  RUST_LOG=warn taskset -c 1 "$PROXY_BIN" --config "$DIR/proxy.yaml" >"$DIR/proxy.log" 2>&1 &
else
  s1_full_yaml >"$DIR/proxy.yaml"
  (unset RUST_LOG; exec taskset -c 1 "$PROXY_BIN" --config "$DIR/proxy.yaml" >"$DIR/proxy.log" 2>"$OUT_DIR/access.log") &
fi
PROXY=$!
PIDS+=($PROXY)
KEYS=()
for w in w1 w2 w3; do
  for _ in 1 2 3 4 5; do KEYS+=("$(s1_signed_key "$w")"); done
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
