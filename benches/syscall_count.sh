#!/usr/bin/env bash
# System calls per HTTP/1.1 request of hotplex-proxy shapes (strace -f -c), the kernel-side
# counterpart of benches/instr_count.sh (callgrind counts user-space instructions only, so a
# syscall or a wake-up more per request does not show there). Same request as scenario 1 of
# benches/load_bench.sh: HTTP/1.1 keep-alive GET /sessions/<id>, API key, signed session id,
# nginx backend on 3 ports, h2load --h1 -c 10.
#
#   bash benches/syscall_count.sh BIN        # prints a table: shape, syscalls/request, top calls
#   env: SHAPES (default "floor bare full full-nolog"; as in instr_count.sh: floor =
#        benches/src/bin/pingora-min beside BIN, bare = s1_proxy_yaml, full = the production
#        shape of benches/hotplex-full.yaml, full-nolog = full with log.level warn),
#        N (requests measured, default 20000), TOP (calls listed per shape, default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { sed -n '2,12p' "$0"; exit 2; }
command -v strace >/dev/null || { echo "strace not installed (apt-get install strace)" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load not installed (apt-get install nghttp2-client)" >&2; exit 1; }
BIN=$1
N=${N:-20000}
TOP=${TOP:-6}
BASE=${BASE_PORT:-18450}
source benches/scenario1.sh
s1_scratch
s1_backend
KEY=$(s1_signed_key w2)
s1_proxy_yaml >"$DIR/bare.yaml"
s1_full_yaml >"$DIR/full.yaml"
sed 's/^  level: info$/  level: warn/' "$DIR/full.yaml" >"$DIR/full-nolog.yaml"
printf '| shape | syscalls/request | 2xx | top calls per request |\n|---|---:|---:|---|\n'
for shape in ${SHAPES:-floor bare full full-nolog}; do
  # The floor (pingora-min) forwards every path: it is ready when the backend answers.
  if [ "$shape" = floor ]; then ready="/sessions/$KEY"; else ready=/health/live; fi
  s1_start "$shape" "$BIN" "$ready"
  proxy=$vp
  s1_load 2000 >/dev/null # warm-up: connection pools, lazy statics
  strace -f -c -p "$proxy" -o "$DIR/strace.$shape" 2>/dev/null &
  st=$!
  sleep 1 # strace attaches to every thread
  ok=$(s1_load "$N")
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  kill -INT "$proxy" 2>/dev/null || true; wait "$proxy" 2>/dev/null || true
  # strace -c columns: % time, seconds, usecs/call, calls, [errors], syscall.
  total=$(awk '$NF == "total" { print $4 }' "$DIR/strace.$shape")
  per=$(awk -v t="${total:-0}" -v n="$N" 'BEGIN { printf "%.2f", t / n }')
  top=$(awk -v n="$N" '$1 ~ /^[0-9.]+$/ && $NF != "total" { printf "%s %.2f\n", $NF, $4 / n }' \
    "$DIR/strace.$shape" | sort -k2 -nr | head -n "$TOP" | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
  echo "| $shape | $per | $ok/$N | $top |"
done
