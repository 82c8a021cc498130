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
API_KEY=bench-api-key-0123456789
SECRET=bench-affinity-secret-0123456789
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
mkdir -p "$DIR"/{backend-body,backend-proxy,backend-fastcgi,backend-uwsgi,backend-scgi}
W1=$((BASE + 1)); W2=$((BASE + 2)); W3=$((BASE + 3)); P=$((BASE + 20)); A=$((BASE + 21))
sed -e "s|__W1__|$W1|; s|__W2__|$W2|; s|__W3__|$W3|; s|__DIR__|$DIR|g; s|__NOFILE__|4096|" \
  benches/nginx-backend.conf >"$DIR/backend.conf"
nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" >/dev/null 2>&1 &
PIDS+=($!)
rnd=$(openssl rand -hex 32 | tr -dc 'A-Za-z0-9' | cut -c1-16)
KEY="w2.$rnd.$(printf %s "w2.$rnd" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-16)"
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
  ${LIMITS_EXTRA:-}
health_check: {interval: 60s}
${EXTRA_YAML:-}
YAML
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
    head -n "$TOP" | sed 's/^/   /' >&2
done
cat "$DIR/table"
