#!/usr/bin/env bash
# Instructions per SSE event (valgrind callgrind) of hotplex-proxy's shapes and of
# pingora-min, for scenario 3 of benches/load_bench.sh: HTTP/1.1 SSE streams through the
# proxy to bench-backend. Counting instructions is deterministic, so the SSE target of
# issue #21 (CPU per event within 5% of pingora-min) can be checked on a machine where the
# load benchmark's CPU µs per event moves by ±15% between runs.
#
#   bash benches/sse_instr.sh BIN     # prints "| shape | Ir/event | vs floor |"
#   env: SHAPES (default "floor bare full": floor = pingora-min built beside BIN, bare and
#        full as in benches/instr_count.sh), C (streams, default 20), N1 and N2 (events per
#        stream of the two measured runs, default 20 and 120), INTERVAL_MS (default 50),
#        KEEP_DIR (where the callgrind files are kept, default /tmp)
#
# Per event = (Ir of the N2 run - Ir of the N1 run) / (C x (N2 - N1)), both runs in one
# proxy process after a warm-up and both as long (sse-load holds its window for the same
# number of seconds): the requests, the streams' set-up and teardown and the proxy's
# background work (health checks) cancel out; what is left is its work per event.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { sed -n '2,12p' "$0"; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 1; }
bin=$1
BIN_DIR=$(dirname "$bin")
for b in bench-backend sse-load pingora-min; do
  [ -x "$BIN_DIR/$b" ] || { echo "no $BIN_DIR/$b (cargo build -p hotplex-bench, same profile as BIN)" >&2; exit 1; }
done
C=${C:-20}
N1=${N1:-20}
N2=${N2:-120}
INTERVAL_MS=${INTERVAL_MS:-50}
SHAPES=${SHAPES:-floor bare full}
BASE=${BASE_PORT:-18500}
source benches/scenario1.sh
s1_scratch
"$BIN_DIR/bench-backend" --listen "127.0.0.1:$W1" --listen "127.0.0.1:$W2" \
  --listen "127.0.0.1:$W3" >"$DIR/bench-backend.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$W1/health/live" && break; sleep 0.1; done
s1_proxy_yaml >"$DIR/bare.yaml"
s1_full_yaml >"$DIR/full.yaml"

# streams N: C streams of N events each, through the proxy; prints sse-load's line. Every
# run lasts SECS (twice the longest run's stream time, so a slowed proxy still delivers
# every event before the client leaves).
SECS=$(( 2 * N2 * INTERVAL_MS / 1000 + 5 ))
streams() {
  "$BIN_DIR/sse-load" --url "http://127.0.0.1:$P/sessions/sse-%i?interval_ms=$INTERVAL_MS&events=$1" \
    --connections "$C" --duration "$SECS" -H "X-API-Key: $API_KEY" -H "X-Hotplex-Session: sse-%i" \
    2>>"$DIR/sse-load.log"
}

printf '| build | shape | Ir/event | vs floor | streams x events (two runs) |\n|---|---|---:|---:|---|\n' >"$DIR/table"
for shape in $SHAPES; do
  out="$DIR/cg.$shape.out"
  s1_callgrind "$shape" "$bin" "$out" /health/live   # bench-backend answers it behind any shape
  SECS_RUN=$SECS; SECS=3; streams 5 >/dev/null; SECS=$SECS_RUN   # warm-up: pools, lazy statics
  callgrind_control --zero "$vp" >/dev/null
  r1=$(streams "$N1")
  callgrind_control --dump=n1 "$vp" >/dev/null
  callgrind_control --zero "$vp" >/dev/null
  r2=$(streams "$N2")
  callgrind_control --dump=n2 "$vp" >/dev/null
  kill "$vp"; wait "$vp" 2>/dev/null || true
  # The two dumps, in order (callgrind numbers them: <out>.<pid>.<n>).
  mapfile -t parts < <(ls "$out".*.[0-9]* 2>/dev/null | awk -F. '{ print $NF, $0 }' | sort -n | cut -d' ' -f2-)
  [ "${#parts[@]}" -ge 2 ] || { echo "no callgrind dumps for $shape" >&2; exit 1; }
  a=$(s1_ir "${parts[0]}"); b=$(s1_ir "${parts[1]}")
  per=$(awk -v a="$a" -v b="$b" -v c="$C" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%.0f", (b - a) / (c * (n2 - n1)) }')
  eval "per_$shape=$per"
  vs=$(awk -v a="$per" -v f="${per_floor:-}" 'BEGIN { if (f > 0) printf "%.3f", a / f; else print "—" }')
  echo "| $bin | $shape | $per | $vs | $C x $N1: ${r1%% p50*}; $C x $N2: ${r2%% p50*} |" >>"$DIR/table"
  echo "== $shape: $per instructions per event" >&2
  cp "${parts[1]}" "${KEEP_DIR:-/tmp}/callgrind.sse.$shape.out"
done
cat "$DIR/table"
