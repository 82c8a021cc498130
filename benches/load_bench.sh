#!/usr/bin/env bash
# Load benchmark: hotplex-proxy vs nginx vs HAProxy (and the backend directly, as the
# ceiling), same backend, equivalent configs (benches/nginx-proxy.conf, benches/haproxy.cfg),
# loopback only, bounded durations. Prints a Markdown table (stdout; progress on stderr).
#
#   bash benches/load_bench.sh            # full: 3 rounds x 10 s per target and scenario
#   bash benches/load_bench.sh --quick    # CI smoke: 1 round x 2 s, 1000 WebSockets
#   options: --rounds N --duration S --ws N --sse N --scenarios 1,2,3,4 --out FILE
#   env: PROFILE (cargo profile, default perf; --quick: dev), CARGO_TARGET_DIR, BASE_PORT,
#        PROXY_BIN (the hotplex-proxy binary to test, default: the one just built),
#        PROXY_BIN_B (optional second build, target "hotplex-b": before/after in one run),
#        SKIP_BUILD=1 (use the binaries already in the target dir),
#        PINGORA_MIN=0 (leave out the pingora-min target), BARE=0 (leave out hotplex-bare)
#
# Targets: hotplex (hotplex-proxy in the production shape of benches/hotplex-full.yaml:
# auth, limits, routes with the session pool and an http pool, tenant-bound ids, access
# log on, tracing sampled out; PROXY_BIN_B's "hotplex-b" too), hotplex-bare (the same
# binary, feature-less: API key + one per-key limit, warn log, no routes, no tracing:
# hotplex / hotplex-bare is the price of the features), pingora-min (benches/src/bin/pingora-min.rs: a minimal
# pingora proxy with the same build and allocator, API key + header hash only: the framework
# floor, so hotplex - pingora-min is what our hooks cost), nginx, HAProxy.
# Scenarios (each target alternately, the order rotated every round; fresh proxies per scenario):
#   1 http   HTTP/1.1 keep-alive, 18-byte responses, wrk -t1 -c50; requests carry an API key
#            (auth on everywhere) and one of 60 signed session ids (X-Hotplex-Session):
#            hotplex-proxy verifies and pins them, nginx/HAProxy hash the header.
#   2 tls    new TLS connections/s (wrk, Connection: close: one full handshake per request)
#            and HTTP/2 requests/s (h2load -c20 -m10).
#   3 sse    SSE: C concurrent streams (default 1000), one event per stream every 50 ms;
#            events/s delivered and delivery latency (backend stamp -> client).
#   4 ws     N idle WebSocket sessions (default 10000), each proven by an echo; proxy
#            memory per session = (RSS with N open - RSS before) / N.
#   5 direct the same load straight to the backend (rows "direct" of scenarios 1 and 3).
# Pinning (2+ cores): load generator and backends on core 0, the proxy under test on core 1.
# CPU s = user+sys of the proxy's processes during the run; peak RSS = VmHWM at the end of
# the scenario. Not a test: figures depend on the machine; compare ratios of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
ROUNDS=3
DURATION=10
WS_N=10000
SSE_N=1000
SSE_INTERVAL_MS=50
SCENARIOS=1,2,3,4
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=1; DURATION=2; WS_N=1000; SSE_N=200 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --ws) WS_N=$2; shift ;;
    --sse) SSE_N=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then PROFILE=${PROFILE:-dev}; else PROFILE=${PROFILE:-perf}; fi
case "$PROFILE" in dev) PDIR=debug ;; *) PDIR=$PROFILE ;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/$PDIR
BASE=${BASE_PORT:-18100}
CONNS=${CONNS:-50}
# API_KEY, SECRET and s1_signed_key (shared with profile.sh and instr_count.sh).
source benches/scenario1.sh
RATE=1000000
has() { case ",$SCENARIOS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
log() { echo "[load_bench] $*" >&2; }

# --- tools -------------------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need wrk || missing+=(wrk)
need h2load || missing+=(nghttp2-client)
need nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
need haproxy || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
need taskset || missing+=(util-linux)
need curl || missing+=(curl)
need openssl || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)..."
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building hotplex-proxy and the bench helpers (--profile $PROFILE, target $TARGET_DIR)..."
  cargo build -q --profile "$PROFILE" -p hotplex-proxy -p hotplex-bench >&2
fi

# Descriptors: a proxy needs 2 per WebSocket session (client side + worker side; nginx a
# few more connection slots). Where the hard limit cannot be raised (no CAP_SYS_RESOURCE,
# e.g. some containers), the session count is capped to what fits and the table says so.
WANT_FD=$(( WS_N * 2 + 4096 > 65536 ? WS_N * 2 + 4096 : 65536 ))
ulimit -Hn "$WANT_FD" 2>/dev/null || true
ulimit -n "$WANT_FD" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
WS_REQ=$WS_N
if [ $(( WS_N * 2 + 2000 )) -gt "$NOFILE" ]; then
  WS_N=$(( (NOFILE - 2000) / 2 ))
  log "open-file limit $NOFILE (hard limit not raisable here): $WS_N WebSocket sessions instead of $WS_REQ"
fi
MAXCONN=$(( (NOFILE - 100) / 2 ))
if [ "$(nproc)" -ge 2 ]; then
  PIN_LOAD=(taskset -c 0); PIN_PROXY=(taskset -c 1); PINNING="load generator + backend on CPU 0, proxy under test on CPU 1"
else
  PIN_LOAD=(); PIN_PROXY=(); PINNING="not pinned (1 CPU)"
fi
CLK_TCK=$(getconf CLK_TCK)

DIR=$(mktemp -d)
mkdir -p "$DIR"/{body,proxy,fastcgi,uwsgi,scgi,backend-body,backend-proxy,backend-fastcgi,backend-uwsgi,backend-scgi,res}
declare -A PID=()
BACKEND_PIDS=()
cleanup() {
  for p in "${PID[@]}" "${BACKEND_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# --- ports, keys, certificate ------------------------------------------------------------
NB1=$((BASE + 1)); NB2=$((BASE + 2)); NB3=$((BASE + 3))      # nginx backend (18-byte answers)
SB1=$((BASE + 11)); SB2=$((BASE + 12)); SB3=$((BASE + 13))   # bench-backend (SSE, WebSocket)
declare -A HTTP_PORT=([hotplex]=$((BASE + 20)) [nginx]=$((BASE + 30)) [haproxy]=$((BASE + 40)) [hotplex-b]=$((BASE + 50)) [pingora-min]=$((BASE + 60)) [hotplex-bare]=$((BASE + 70)))
declare -A TLS_PORT=([hotplex]=$((BASE + 22)) [nginx]=$((BASE + 32)) [haproxy]=$((BASE + 42)) [hotplex-b]=$((BASE + 52)) [pingora-min]=$((BASE + 62)) [hotplex-bare]=$((BASE + 72)))
declare -A ADMIN=([hotplex]=$((BASE + 21)) [hotplex-b]=$((BASE + 51)) [hotplex-bare]=$((BASE + 71)))
declare -A PBIN=([hotplex]=${PROXY_BIN:-$BIN/hotplex-proxy})
PROXIES=(hotplex)
if [ "${BARE:-1}" = 1 ]; then PBIN[hotplex-bare]=${PBIN[hotplex]}; PROXIES+=(hotplex-bare); fi
if [ "${PINGORA_MIN:-1}" = 1 ]; then PROXIES+=(pingora-min); fi
PROXIES+=(nginx haproxy)
if [ -n "${PROXY_BIN_B:-}" ]; then PBIN[hotplex-b]=$PROXY_BIN_B; PROXIES+=(hotplex-b); fi
for p in $NB1 $NB2 $NB3 $SB1 $SB2 $SB3 "${HTTP_PORT[@]}" "${TLS_PORT[@]}" "${ADMIN[@]}"; do
  if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is busy: set BASE_PORT to a free range" >&2; exit 1
  fi
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
cat "$DIR/cert.pem" "$DIR/key.pem" >"$DIR/haproxy.pem"
API_HASH=$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)

# Signed session ids as hotplex-proxy mints them for the bench tenant (s1_signed_key in
# benches/scenario1.sh); 20 per worker.
KEYS=()
for w in w1 w2 w3; do
  for _ in $(seq 1 20); do KEYS+=("$(s1_signed_key "$w")"); done
done
BENCH_KEYS=$(IFS=,; echo "${KEYS[*]}")

# --- processes ---------------------------------------------------------------------------
ticks() { # pids... -> utime+stime clock ticks of each process (all its threads)
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$t"
}
kib() { # field pids... -> sum of a /proc/PID/status field (kB)
  local f=$1 t=0 p v; shift
  for p in "$@"; do
    v=$(awk -v f="$f:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
tree() { # pid -> the pid and its children (nginx master + worker)
  echo "$1"; pgrep -P "$1" || true
}
wait_http() { # url name [header]
  for _ in $(seq 1 150); do
    if curl -ksf -o /dev/null -H "X-API-Key: $API_KEY" -H "X-Hotplex-Session: ${KEYS[0]}" "$1"; then return 0; fi
    sleep 0.1
  done
  log "nothing answers $1 ($2); logs in $DIR:"; tail -n 20 "$DIR"/*.log >&2; exit 1
}

start_backends() {
  sed -e "s|__W1__|$NB1|; s|__W2__|$NB2|; s|__W3__|$NB3|; s|__DIR__|$DIR|g; s|__NOFILE__|$NOFILE|" \
    benches/nginx-backend.conf >"$DIR/nginx-backend.conf"
  "${PIN_LOAD[@]}" "$NGINX" -c "$DIR/nginx-backend.conf" -e "$DIR/nginx-backend-error.log" \
    >"$DIR/nginx-backend.log" 2>&1 &
  BACKEND_PIDS+=($!)
  "${PIN_LOAD[@]}" "$BIN/bench-backend" --listen "127.0.0.1:$SB1" --listen "127.0.0.1:$SB2" \
    --listen "127.0.0.1:$SB3" >"$DIR/bench-backend.log" 2>&1 &
  BACKEND_PIDS+=($!)
  wait_http "http://127.0.0.1:$NB1/" nginx-backend
  wait_http "http://127.0.0.1:$SB1/health/live" bench-backend
}

start_hotplex() { # name w1 w2 w3
  local t=$1 w1=$2 w2=$3 w3=$4
  local tls_yaml="upgrade:
  sock: $DIR/$t-upgrade.sock
tls:
  listen: 127.0.0.1:${TLS_PORT[$t]}
  certificates:
    - server_names: [localhost]
      cert: $DIR/cert.pem
      key: $DIR/key.pem"
  if [ "$t" = hotplex-bare ]; then
    cat >"$DIR/$t.yaml" <<YAML
listen: 127.0.0.1:${HTTP_PORT[$t]}
threads: 1
admin:
  listen: 127.0.0.1:${ADMIN[$t]}
workers:
  - {id: w1, address: "127.0.0.1:$w1", capacity: 1000000}
  - {id: w2, address: "127.0.0.1:$w2", capacity: 1000000}
  - {id: w3, address: "127.0.0.1:$w3", capacity: 1000000}
routing:
  affinity_secrets: ["$SECRET"]
log:
  level: warn
auth:
  enabled: true
  keys:
    - {name: bench, hash: "sha256:$API_HASH"}
limits:
  per_key: {rate: $RATE, burst: $RATE}
$tls_yaml
YAML
    RUST_LOG=warn "${PIN_PROXY[@]}" "${PBIN[$t]}" --config "$DIR/$t.yaml" >>"$DIR/$t.log" 2>&1 &
  else
    # The production shape (benches/hotplex-full.yaml): access log on, into $t.access.log.
    P=${HTTP_PORT[$t]} A=${ADMIN[$t]} W1=$w1 W2=$w2 W3=$w3 STATIC=$w1 MAXCONN=$MAXCONN \
      s1_full_yaml "$tls_yaml" >"$DIR/$t.yaml"
    (unset RUST_LOG; exec "${PIN_PROXY[@]}" "${PBIN[$t]}" --config "$DIR/$t.yaml" \
      >>"$DIR/$t.log" 2>>"$DIR/$t.access.log") &
  fi
  PID[$t]=$!
}

# start_proxies W1 W2 W3: the proxies under test, in front of those backend ports.
start_proxies() {
  local w1=$1 w2=$2 w3=$3 t
  start_hotplex hotplex "$w1" "$w2" "$w3"
  [ -z "${PBIN[hotplex-bare]:-}" ] || start_hotplex hotplex-bare "$w1" "$w2" "$w3"
  [ -z "${PBIN[hotplex-b]:-}" ] || start_hotplex hotplex-b "$w1" "$w2" "$w3"
  if [ "${PINGORA_MIN:-1}" = 1 ]; then
    # Same allocator options as hotplex-proxy's built-in malloc_conf (thread cache up to 128 KiB).
    MALLOC_CONF=tcache_max:131072 "${PIN_PROXY[@]}" "$BIN/pingora-min" \
      --listen "127.0.0.1:${HTTP_PORT[pingora-min]}" --tls-listen "127.0.0.1:${TLS_PORT[pingora-min]}" \
      --cert "$DIR/cert.pem" --key "$DIR/key.pem" --api-key "$API_KEY" \
      --upstream "127.0.0.1:$w1" --upstream "127.0.0.1:$w2" --upstream "127.0.0.1:$w3" \
      >>"$DIR/pingora-min.log" 2>&1 &
    PID[pingora-min]=$!
  fi
  sed -e "s|__HTTP_PORT__|${HTTP_PORT[nginx]}|; s|__TLS_PORT__|${TLS_PORT[nginx]}|" \
    -e "s|__W1__|$w1|; s|__W2__|$w2|; s|__W3__|$w3|; s|__CERT__|$DIR/cert.pem|; s|__KEY__|$DIR/key.pem|" \
    -e "s|__API_KEY__|$API_KEY|; s|__RATE__|$RATE|; s|__DIR__|$DIR|g" \
    -e "s|__NOFILE__|$NOFILE|; s|__WCONN__|$((NOFILE - 100))|" \
    benches/nginx-proxy.conf >"$DIR/nginx-proxy.conf"
  "${PIN_PROXY[@]}" "$NGINX" -c "$DIR/nginx-proxy.conf" -e "$DIR/nginx-proxy-error.log" >>"$DIR/nginx.log" 2>&1 &
  PID[nginx]=$!
  sed -e "s|__HTTP_PORT__|${HTTP_PORT[haproxy]}|; s|__TLS_PORT__|${TLS_PORT[haproxy]}|" \
    -e "s|__W1__|$w1|; s|__W2__|$w2|; s|__W3__|$w3|; s|__PEM__|$DIR/haproxy.pem|" \
    -e "s|__API_KEY__|$API_KEY|; s|__RATE__|$RATE|; s|__MAXCONN__|$MAXCONN|g" \
    benches/haproxy.cfg >"$DIR/haproxy.cfg"
  "${PIN_PROXY[@]}" "$HAPROXY" -db -f "$DIR/haproxy.cfg" >>"$DIR/haproxy.log" 2>&1 &
  PID[haproxy]=$!
  for t in "${PROXIES[@]}"; do
    wait_http "http://127.0.0.1:${HTTP_PORT[$t]}/health/live" "$t"
    # Auth is on for every proxy: no key -> 401 (on a route hotplex-proxy declares).
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${HTTP_PORT[$t]}/sessions/probe")
    [ "$code" = 401 ] || { log "$t answered $code without an API key (expected 401)"; exit 1; }
  done
}

stop_proxies() {
  local t
  for t in "${PROXIES[@]}"; do
    [ -n "${PID[$t]:-}" ] || continue
    kill "${PID[$t]}" 2>/dev/null || true
    wait "${PID[$t]}" 2>/dev/null || true
    unset "PID[$t]"
  done
  sleep 0.5
}

peak_rss() { # scenario -> records the proxies' peak RSS (kB)
  local t
  for t in "${PROXIES[@]}"; do
    kib VmHWM $(tree "${PID[$t]}") >"$DIR/res/$1.$t.hwm"
  done
}

# --- load generators: each prints "throughput p50_ms p99_ms errors ops" -------------------
to_ms() { # 1.23ms / 456.00us / 1.2s -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
parse_wrk() {
  local f=$1 rps p50 p99 err ops
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$f")
  ops=$(awk '/requests in/ { print $1 }' "$f")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
  err=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$f")
  echo "${rps:-0} $p50 $p99 $err ${ops:-0}"
}
load_http() { # url [close] -> wrk result
  local url=$1 close=${2:-0} f="$DIR/wrk.out"
  BENCH_KEYS=$BENCH_KEYS BENCH_API_KEY=$API_KEY BENCH_CLOSE=$close \
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s benches/wrk-session.lua "$url" >"$f" 2>&1 || true
  parse_wrk "$f"
}
load_h2() { # port -> h2load result (no percentiles: mean in p50, max in p99)
  local f="$DIR/h2load.out"
  "${PIN_LOAD[@]}" h2load -D "$DURATION" -c 20 -m 10 -t 1 -H "x-api-key: $API_KEY" \
    -H "x-hotplex-session: ${KEYS[0]}" "https://127.0.0.1:$1/sessions/${KEYS[0]}" >"$f" 2>&1 || true
  awk '/^finished in/ { gsub(",", "", $4); rps = int($4) }
       /^requests:/ { done = $6 }
       /^status codes:/ { s2 = $3 + 0 }
       /^time for request:/ { mean = $6; max = $5 }
       END { printf "%d %s %s %d %d\n", rps, mean, max, done - s2, done }' "$f" |
    while read -r rps mean max err ops; do echo "$rps $(to_ms "$mean") $(to_ms "$max") $err $ops"; done
}
load_sse() { # port -> sse-load result
  local out
  out=$("${PIN_LOAD[@]}" "$BIN/sse-load" --url "http://127.0.0.1:$1/sessions/sse-%i?interval_ms=$SSE_INTERVAL_MS" \
    --connections "$SSE_N" --duration "$DURATION" -H "X-API-Key: $API_KEY" \
    -H "X-Hotplex-Session: sse-%i" 2>>"$DIR/sse-load.log" || true)
  echo "$out" | tr ' ' '\n' | awk -F= '{ v[$1] = $2 } END {
    printf "%d %s %s %d %d\n", v["events_per_s"], v["p50_ms"], v["p99_ms"], v["errors"] + (v["connections"] - v["opened"]), v["events"] }'
}

# run SCENARIO TARGET ROUND CMD...: runs the load, records throughput, latency, errors and
# the proxy's CPU time to $DIR/res/SCENARIO.TARGET.ROUND.
run() {
  local sc=$1 t=$2 r=$3; shift 3
  local pids=() c0 c1 res
  [ "$t" = direct ] || mapfile -t pids < <(tree "${PID[$t]}")
  c0=$(ticks "${pids[@]}")
  res=$("$@")
  c1=$(ticks "${pids[@]}")
  echo "$res $(awk -v a="$c0" -v b="$c1" -v k="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / k }')" \
    >"$DIR/res/$sc.$t.$r"
  log "  $sc $t round $r: $res cpu=$(( (c1 - c0) ))ticks"
}
rotate() { # round targets... -> targets rotated by round
  local r=$1; shift
  local a=("$@") n=$# i
  for i in $(seq 0 $((n - 1))); do echo "${a[$(( (i + r) % n ))]}"; done
}

# --- scenarios ---------------------------------------------------------------------------
UPTIME_BEFORE=$(uptime)
start_backends
ROWS=()

if has 1; then
  log "scenario 1: HTTP/1.1 keep-alive, -c$CONNS, ${DURATION}s x $ROUNDS rounds"
  start_proxies $NB1 $NB2 $NB3
  for t in "${PROXIES[@]}"; do # warm-up (pools, caches)
    BENCH_KEYS=$BENCH_KEYS BENCH_API_KEY=$API_KEY "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d1s \
      -s benches/wrk-session.lua "http://127.0.0.1:${HTTP_PORT[$t]}/" >/dev/null 2>&1 || true
  done
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(rotate "$r" "${PROXIES[@]}" direct); do
      if [ "$t" = direct ]; then url="http://127.0.0.1:$NB1/"; else url="http://127.0.0.1:${HTTP_PORT[$t]}/"; fi
      run http "$t" "$r" load_http "$url"
    done
  done
  pinned=$(curl -s "http://127.0.0.1:${ADMIN[hotplex]}/metrics" |
    awk '/^hotplex_proxy_routing_decisions_total/ && /outcome="pinned"/ { n += $NF } END { printf "%d", n }')
  log "hotplex-proxy pinned routing decisions: $pinned"
  [ "${pinned:-0}" -gt 0 ] || { log "no pinned decision: the signed ids did not verify"; exit 1; }
  peak_rss http
  stop_proxies
  ROWS+=(http)
fi

if has 2; then
  log "scenario 2: TLS new connections and h2, ${DURATION}s x $ROUNDS rounds"
  start_proxies $NB1 $NB2 $NB3
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(rotate "$r" "${PROXIES[@]}"); do
      run tls_new "$t" "$r" load_http "https://127.0.0.1:${TLS_PORT[$t]}/" 1
      run h2 "$t" "$r" load_h2 "${TLS_PORT[$t]}"
    done
  done
  peak_rss tls_new
  for t in "${PROXIES[@]}"; do cp "$DIR/res/tls_new.$t.hwm" "$DIR/res/h2.$t.hwm"; done
  stop_proxies
  ROWS+=(tls_new h2)
fi

if has 3; then
  log "scenario 3: SSE, $SSE_N streams x 1 event / ${SSE_INTERVAL_MS} ms, ${DURATION}s x $ROUNDS rounds"
  start_proxies $SB1 $SB2 $SB3
  for r in $(seq 1 "$ROUNDS"); do
    for t in $(rotate "$r" "${PROXIES[@]}" direct); do
      if [ "$t" = direct ]; then port=$SB1; else port=${HTTP_PORT[$t]}; fi
      run sse "$t" "$r" load_sse "$port"
    done
  done
  peak_rss sse
  stop_proxies
  ROWS+=(sse)
fi

if has 4; then
  log "scenario 4: $WS_N idle WebSocket sessions"
  start_proxies $SB1 $SB2 $SB3
  for t in "${PROXIES[@]}"; do
    mapfile -t pids < <(tree "${PID[$t]}")
    rss0=$(kib VmRSS "${pids[@]}")
    c0=$(ticks "${pids[@]}")
    rm -f "$DIR/ready"
    "${PIN_LOAD[@]}" "$BIN/ws-idle" --url "ws://127.0.0.1:${HTTP_PORT[$t]}/ws/v1/agent" \
      --connections "$WS_N" --hold 2 --ready-file "$DIR/ready" -H "X-API-Key: $API_KEY" \
      -H "X-Hotplex-Session: ws-%i" >"$DIR/ws.out" 2>>"$DIR/ws-idle.log" &
    wpid=$!
    for _ in $(seq 1 1200); do [ -s "$DIR/ready" ] && break; kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
    sleep 0.5
    rss1=$(kib VmRSS "${pids[@]}")
    c1=$(ticks "${pids[@]}")
    wait $wpid || true
    opened=$(tr ' ' '\n' <"$DIR/ws.out" | awk -F= '$1 == "opened" { print $2 }')
    alive=$(tr ' ' '\n' <"$DIR/ws.out" | awk -F= '$1 == "alive_after_hold" { print $2 }')
    log "  ws $t: $(cat "$DIR/ws.out") rss ${rss0}->${rss1} kB"
    # throughput column = KiB per session (lower is better); p50 = RSS before, p99 = RSS with N open (MiB)
    echo "$(awk -v a="$rss0" -v b="$rss1" -v n="${opened:-0}" 'BEGIN { if (n > 0) printf "%.1f", (b - a) / n; else print 0 }') \
$(awk -v a="$rss0" 'BEGIN { printf "%.1f", a / 1024 }') $(awk -v a="$rss1" 'BEGIN { printf "%.1f", a / 1024 }') \
$(( WS_N - ${alive:-0} )) ${opened:-0} \
$(awk -v a="$c0" -v b="$c1" -v k="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / k }')" >"$DIR/res/ws.$t.1"
  done
  peak_rss ws
  stop_proxies
  ROWS+=(ws)
fi
UPTIME_AFTER=$(uptime)

# --- table -------------------------------------------------------------------------------
median() { # scenario target -> the round with the median throughput
  local sc=$1 t=$2 files
  files=$(find "$DIR/res" -name "$sc.$t.[0-9]*" | sort)
  [ -n "$files" ] || return 0
  # shellcheck disable=SC2086
  cat $files | sort -n -k1,1 | awk '{ a[NR] = $0 } END { if (NR) print a[int((NR + 1) / 2)] }'
}
label() {
  case "$1" in
    http) echo "1 HTTP/1.1 keep-alive (req/s)" ;;
    tls_new) echo "2a new TLS conns/s (full handshake + 1 GET)" ;;
    h2) echo "2b h2 req/s (h2load -c20 -m10; latency = mean / max)" ;;
    sse) echo "3 SSE events/s ($SSE_N streams)" ;;
    ws) echo "4 idle WebSockets: KiB/session ($WS_N)" ;;
  esac
}
{
  echo "Load benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), profile $PROFILE;"
  echo "$("$NGINX" -v 2>&1 | sed 's/.*: //'), $("$HAPROXY" -v | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(h2load --version 2>&1 | head -1);"
  echo "hotplex = production shape (benches/hotplex-full.yaml), hotplex-bare = feature-less shape, same binary;"
  echo "$PINNING; proxies: hotplex and pingora-min threads 1, nginx worker_processes 1, HAProxy nbthread 1;"
  echo "${DURATION}s per run, $ROUNDS round(s), median round shown; wrk -t1 -c$CONNS."
  [ "$WS_N" = "$WS_REQ" ] || echo "WebSocket sessions capped at $WS_N (of $WS_REQ): open-file hard limit $NOFILE cannot be raised here (2 descriptors per proxied session)."
  echo "load before: $UPTIME_BEFORE"
  echo "load after:  $UPTIME_AFTER"
  echo
  echo "| scenario | target | throughput | p50 ms | p99 ms | errors | proxy CPU s | CPU µs/op | peak RSS MiB | vs nginx |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for sc in "${ROWS[@]}"; do
    nthr=$(median "$sc" nginx | awk '{ print $1 }')
    for t in "${PROXIES[@]}" direct; do
      row=$(median "$sc" "$t")
      [ -n "$row" ] || continue
      read -r thr p50 p99 err ops cpu <<<"$row"
      if [ "$t" = direct ]; then cpu_s="—"; per="—"; hwm="—"
      else
        cpu_s=$cpu
        per=$(awk -v c="$cpu" -v n="$ops" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n; else print "—" }')
        hwm=$(awk -v k="$(cat "$DIR/res/$sc.$t.hwm" 2>/dev/null || echo 0)" 'BEGIN { printf "%.1f", k / 1024 }')
      fi
      ratio=$(awk -v a="$thr" -v b="$nthr" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "—" }')
      if [ "$sc" = ws ]; then
        echo "| $(label "$sc") | $t | $thr KiB ($ops open) | — | — | $err | $cpu_s | $per | $hwm | $ratio |"
      else
        echo "| $(label "$sc") | $t | $thr | $p50 | $p99 | $err | $cpu_s | $per | $hwm | $ratio |"
      fi
    done
  done
} | tee ${OUT:+"$OUT"}
