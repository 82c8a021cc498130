#!/usr/bin/env bash
# Instructions per request of one or more hotplex-proxy builds (valgrind --tool=callgrind),
# for the request of scenario 1 of benches/load_bench.sh: HTTP/1.1 keep-alive GET /sessions/<id> with an
# API key and a signed session id, nginx backend on 3 ports. Counting instructions is
# deterministic, so builds can be compared on a busy machine where requests/s are noisy.
#
#   bash benches/instr_count.sh BIN [BIN...]        # prints "BIN  shape  Ir/request  top symbols"
#   env: SHAPES (proxy configs measured per build, default "bare full": full = the
#        production shape of benches/hotplex-full.yaml, bare = the feature-less shape of
#        s1_proxy_yaml; the table gives full/bare, the price of the features; variants
#        full-spans and full-nolog are described below),
#        N (requests measured, default 4000), TOP (symbols shown per build, default 15),
#        KEEP_DIR (where callgrind.<bin>.out is kept for callgrind_annotate, default /tmp),
#        LIMITS_EXTRA (a line added to the bare shape's `limits:` map), EXTRA_YAML
#        (top-level lines, both shapes; the full shape's access log goes to a file),
#        MALLOC_CONF (jemalloc options, e.g. prof_active:false)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load not installed (apt-get install nghttp2-client)" >&2; exit 1; }
N=${N:-4000}
TOP=${TOP:-15}
BASE=${BASE_PORT:-18400}
source benches/scenario1.sh
s1_scratch
s1_backend
KEY=$(s1_signed_key w2)
s1_proxy_yaml "${LIMITS_EXTRA:-}" "${EXTRA_YAML:-}" >"$DIR/bare.yaml"
s1_full_yaml "${EXTRA_YAML:-}" >"$DIR/full.yaml"
# Variants of the full shape, to split its price (SHAPES="bare full full-spans full-nolog"):
# full-spans: sampling_ratio 1e-9 (every request still creates its OpenTelemetry spans,
# the SDK samples them out: what a sampled-out request cost before the shortcut);
# full-nolog: log.level warn (no access log); floor: benches/src/bin/pingora-min (built in
# the same target directory as BIN) under the same request, the framework's own price.
sed 's/^  sampling_ratio: 0.0$/  sampling_ratio: 0.000000001/' "$DIR/full.yaml" >"$DIR/full-spans.yaml"
sed 's/^  level: info$/  level: warn/' "$DIR/full.yaml" >"$DIR/full-nolog.yaml"
SHAPES=${SHAPES:-bare full}
printf '| build | shape | Ir/request | vs bare | 2xx |\n|---|---|---:|---:|---:|\n' >"$DIR/table"
for bin in "$@"; do
for shape in $SHAPES; do
  out="$DIR/cg.$(basename "$bin").$shape.out"
  # The floor (pingora-min) forwards every path: it is ready when the backend answers.
  if [ "$shape" = floor ]; then ready="/sessions/$KEY"; else ready=/health/live; fi
  s1_callgrind "$shape" "$bin" "$out" "$ready"
  s1_load 500 >/dev/null                       # warm-up: pools, lazy statics
  callgrind_control --zero "$vp" >/dev/null
  ok=$(s1_load "$N")
  callgrind_control --dump=measured "$vp" >/dev/null
  kill "$vp"; wait "$vp" 2>/dev/null || true
  f=$(ls -t "$out".*.[0-9]* 2>/dev/null | head -1 || true)
  [ -n "$f" ] || f=$(ls -t "$out".* | head -1)
  ir=$(s1_ir "$f")
  per=$(awk -v a="$ir" -v n="$N" 'BEGIN { printf "%.0f", a / n }')
  eval "per_${shape//-/_}=$per"
  vs=$(awk -v a="$per" -v b="${per_bare:-}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "—" }')
  [ "$shape" != bare ] || vs=1.000
  echo "| $bin | $shape | $per | $vs | $ok/$N |" >>"$DIR/table"
  echo "== $bin ($shape): $per instructions per request ($ok/$N 2xx); top symbols (self, % of Ir):" >&2
  cp "$f" "${KEEP_DIR:-/tmp}/callgrind.$(basename "$bin").$shape.out"
  callgrind_annotate --inclusive=no --threshold=100 --auto=no "$f" 2>/dev/null | grep -E '^ *[0-9,]+ +\(' | grep -v 'PROGRAM TOTALS' |
    head -n "$TOP" | sed "s/^/   /" >&2 || true  # head may close the pipe early (SIGPIPE)
done
unset per_bare per_full
done
cat "$DIR/table"
