#!/usr/bin/env bash
# Instructions per request of one or more hotplex-proxy builds (valgrind --tool=callgrind),
# for the request of scenario 1 of benches/load_bench.sh: HTTP/1.1 keep-alive GET with an
# API key and a signed session id, nginx backend on 3 ports. Counting instructions is
# deterministic, so builds can be compared on a busy machine where requests/s are noisy.
#
#   bash benches/instr_count.sh BIN [BIN...]        # prints "BIN  Ir/request  top symbols"
#   env: N (requests measured, default 4000), TOP (symbols shown per build, default 15),
#        KEEP_DIR (where callgrind.<bin>.out is kept for callgrind_annotate, default /tmp),
#        LIMITS_EXTRA (a line added to the `limits:` map), EXTRA_YAML (top-level lines),
#        MALLOC_CONF (jemalloc options, e.g. prof_active:false)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load not installed (apt-get install nghttp2-client)" >&2; exit 1; }
N=${N:-4000}
TOP=${TOP:-15}
BASE=${BASE_PORT:-18400}
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
source benches/scenario1.sh
s1_backend
KEY=$(s1_signed_key w2)
s1_proxy_yaml "${LIMITS_EXTRA:-}" "${EXTRA_YAML:-}" >"$DIR/proxy.yaml"
load() { h2load --h1 -n "$1" -c 10 -H "x-api-key: $API_KEY" -H "x-hotplex-session: $KEY" \
  "http://127.0.0.1:$P/" 2>&1 | awk '/^status codes:/ { print $3 }'; }
printf '| build | Ir/request | 2xx |\n|---|---:|---:|\n' >"$DIR/table"
for bin in "$@"; do
  out="$DIR/cg.$(basename "$bin").out"
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$bin" --config "$DIR/proxy.yaml" \
    >"$DIR/proxy.log" 2>"$DIR/valgrind.log" &
  vp=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null "http://127.0.0.1:$P/health/live" && break; sleep 0.2; done
  load 500 >/dev/null                       # warm-up: pools, lazy statics
  callgrind_control --zero "$vp" >/dev/null
  ok=$(load "$N")
  callgrind_control --dump=measured "$vp" >/dev/null
  kill "$vp"; wait "$vp" 2>/dev/null || true
  f=$(ls -t "$out".*.[0-9]* 2>/dev/null | head -1 || true)
  [ -n "$f" ] || f=$(ls -t "$out".* | head -1)
  ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
  per=$(awk -v a="$ir" -v n="$N" 'BEGIN { printf "%.0f", a / n }')
  echo "| $bin | $per | $ok/$N |" >>"$DIR/table"
  echo "== $bin: $per instructions per request ($ok/$N 2xx); top symbols (self, % of Ir):" >&2
  cp "$f" "${KEEP_DIR:-/tmp}/callgrind.$(basename "$bin").out"
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$f" 2>/dev/null | grep -E '^ *[0-9,]+ +\(' | grep -v 'PROGRAM TOTALS' |
    head -n "$TOP" | sed "s/^/   /" >&2 || true  # head may close the pipe early (SIGPIPE)
done
cat "$DIR/table"
