#!/usr/bin/env bash
# The workload our users run (issue #21 item 3): HotPlex sessions doing turns against three
# real hotplex-worker processes whose agent is benches/src/bin/fake-agent.rs (a fast
# hotplex-jsonl agent: each turn streams --events answer events, one every --interval-ms,
# then `result`), driven by benches/src/bin/workload.rs, through each target in one run:
#   hotplex  hotplex-proxy in the production shape (benches/hotplex-full.yaml: auth, limits,
#            routes, access log, tracing sampled out); sessions created by POST /sessions
#            (signed, tenant-bound ids), turns on /sessions/{id}/messages (SSE) and
#            /ws/v1/agent?session_id={id} (WebSocket `execute` frames);
#   direct   straight to the workers (the driver picks the worker by a hash of a
#            client-chosen id, sent in X-Hotplex-Session): the baseline;
#   nginx    benches/nginx-proxy.conf (API-key check, per-key limit_req, consistent `hash`
#            of X-Hotplex-Session, buffering off), client-chosen ids as for direct.
# Half the sessions do SSE turns, half WebSocket turns; a session lives --turns turns (think
# time between them: 20 s by default, a person reading an answer and typing the next
# prompt), then is deleted and a new one arrives: concurrency stays at --sessions, new
# sessions arrive at a steady rate. The sessions start at --arrival-rate per second, by
# default sessions / lifetime (lifetime = turns x (think + a turn's events)): the ramp
# lasts one lifetime, so the sessions it started end, and are replaced, at the same steady
# rate inside the window. Bounded: every target runs ramp + --duration s + its last turns,
# then the script stops everything.
#
#   bash benches/workload.sh              # full: 2000 sessions, ~110 s ramp + 60 s window per target (make bench-workload)
#   bash benches/workload.sh --quick      # smoke: 200 sessions, 10 s per target, dev build (< ~1 min)
#   options: --sessions N --duration S --turns K --think-ms MS --events N --interval-ms MS
#            --arrival-rate R --targets hotplex,direct,nginx --out FILE
#   env: PROFILE (cargo profile, default release; --quick: dev), CARGO_TARGET_DIR, BASE_PORT
#        (default 18600), SKIP_BUILD=1 (use the binaries already built), KEEP=1 (keep logs),
#        PROXY_BIN (the hotplex-proxy binary, default the one just built)
#
# Figures per target (the window only): turns and new sessions per second; latency of the
# first event of a turn (request sent -> first event) and of every event (the agent's
# timestamp -> the client), p50/p99, and what the proxy adds to them over direct; the
# proxy's CPU per turn (utime+stime of /proc/PID/stat over the window / turns) and memory
# per session ((RSS mid-window - RSS before) / sessions); errors before the window ended (the
# sessions still open at its end are deleted together, failures then are counted apart:
# "(+N at teardown)"). Not a test: figures depend on the
# machine (load average printed); compare the targets of one run.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
SESSIONS=2000
DURATION=60
TURNS=5
THINK_MS=20000
EVENTS=48
INTERVAL_MS=50
ARRIVAL="" # default: sessions / lifetime (see above)
TARGETS=hotplex,direct,nginx
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; SESSIONS=200; DURATION=10; TURNS=3; THINK_MS=500; ARRIVAL=100 ;;
    --sessions) SESSIONS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --turns) TURNS=$2; shift ;;
    --think-ms) THINK_MS=$2; shift ;;
    --events) EVENTS=$2; shift ;;
    --interval-ms) INTERVAL_MS=$2; shift ;;
    --arrival-rate) ARRIVAL=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then PROFILE=${PROFILE:-dev}; else PROFILE=${PROFILE:-release}; fi
if [ -z "$ARRIVAL" ]; then
  ARRIVAL=$(awk -v s="$SESSIONS" -v k="$TURNS" -v t="$THINK_MS" -v e="$EVENTS" -v i="$INTERVAL_MS" \
    'BEGIN { printf "%.2f", s / (k * (t + e * i) / 1000) }')
fi
case "$PROFILE" in dev) PDIR=debug ;; *) PDIR=$PROFILE ;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
BIN=$TARGET_DIR/$PDIR
BASE=${BASE_PORT:-18600}
log() { echo "[workload] $*" >&2; }

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
need curl || missing+=(curl)
need openssl || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (apt-get)..."
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building hotplex-proxy, hotplex-worker and the bench helpers (--profile $PROFILE)..."
  cargo build -q --profile "$PROFILE" -p hotplex-proxy -p hotplex-worker -p hotplex-bench >&2
fi

# Descriptors: the driver holds 1-2 per session, a proxy 2, a worker 4 (connection + the
# agent's three pipes).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ $(( SESSIONS * 5 + 1000 )) -gt "$NOFILE" ]; then
  echo "open-file limit $NOFILE is too low for $SESSIONS sessions (needs $(( SESSIONS * 5 + 1000 )))" >&2; exit 1
fi
CLK_TCK=$(getconf CLK_TCK)

DIR=$(mktemp -d)
chmod 0711 "$DIR" # agents run as per-session uids: they must reach the fake agent
mkdir -p "$DIR"/{body,proxy,fastcgi,uwsgi,scgi,res}
mkdir -m 0755 "$DIR/agent"
mkdir -m 0700 "$DIR/uids"
cp "$BIN/fake-agent" "$DIR/agent/fake-agent"
chmod 0755 "$DIR/agent/fake-agent"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then log "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

W=($((BASE + 1)) $((BASE + 2)) $((BASE + 3)))
declare -A PORT=([hotplex]=$((BASE + 20)) [nginx]=$((BASE + 30)))
ADMIN=$((BASE + 21))
for p in "${W[@]}" "${PORT[@]}" $ADMIN; do
  if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is busy: set BASE_PORT to a free range" >&2; exit 1
  fi
done
API_KEY=bench-api-key-0123456789
SECRET=bench-affinity-secret-0123456789

# --- processes ----------------------------------------------------------------------------
ticks() { # pids... -> utime+stime clock ticks
  local t=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
  done
  echo "$t"
}
rss() { # pids... -> VmRSS kB
  local t=0 p v
  for p in "$@"; do
    v=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
wait_ok() { # url name
  for _ in $(seq 1 150); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  log "nothing answers $1 ($2); logs in $DIR:"; tail -n 20 "$DIR"/*.log >&2; exit 1
}

cat >"$DIR/worker.yaml" <<YAML
max_sessions: $SESSIONS
idle_timeout: 10m
execution_timeout: 60s
retry_after_secs: 1
shutdown_grace: 1s
log_level: warn
tenant_quotas:
  max_sessions: $SESSIONS
  new_sessions_per_minute: 1000000
  new_sessions_burst: 100000
  turns_per_minute: 10000000
  turns_burst: 1000000
agent:
  command: ["$DIR/agent/fake-agent", "--events", "$EVENTS", "--interval-ms", "$INTERVAL_MS"]
  isolation:
    sandbox: none
    lock_dir: $DIR/uids
YAML
WPIDS=()
for i in 0 1 2; do
  RUST_LOG=warn "$BIN/hotplex-worker" --listen "127.0.0.1:${W[$i]}" --node-id "w$((i + 1))" \
    --config "$DIR/worker.yaml" >"$DIR/worker$((i + 1)).log" 2>&1 &
  WPIDS+=($!); PIDS+=($!)
done
for p in "${W[@]}"; do wait_ok "http://127.0.0.1:$p/health/ready" worker; done

# hotplex-proxy, production shape (access log into hotplex.access.log).
source benches/scenario1.sh # s1_full_yaml
P=${PORT[hotplex]} A=$ADMIN W1=${W[0]} W2=${W[1]} W3=${W[2]} STATIC=${W[0]} MAXCONN=$(( SESSIONS * 4 + 1000 )) \
  s1_full_yaml >"$DIR/hotplex.yaml"
(unset RUST_LOG; exec "${PROXY_BIN:-$BIN/hotplex-proxy}" --config "$DIR/hotplex.yaml" >"$DIR/hotplex.log" 2>"$DIR/hotplex.access.log") &
HPID=$!; PIDS+=($!)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
sed -e "s|__HTTP_PORT__|${PORT[nginx]}|; s|__TLS_PORT__|$((BASE + 32))|" \
  -e "s|__W1__|${W[0]}|; s|__W2__|${W[1]}|; s|__W3__|${W[2]}|; s|__CERT__|$DIR/cert.pem|; s|__KEY__|$DIR/key.pem|" \
  -e "s|__API_KEY__|$API_KEY|; s|__RATE__|1000000|; s|__DIR__|$DIR|g" \
  -e "s|__NOFILE__|$NOFILE|; s|__WCONN__|$(( (NOFILE - 100) / 2 ))|" \
  benches/nginx-proxy.conf >"$DIR/nginx.conf"
"$NGINX" -c "$DIR/nginx.conf" -e "$DIR/nginx-error.log" >"$DIR/nginx.log" 2>&1 &
NPID=$!; PIDS+=($!)
wait_ok "http://127.0.0.1:${PORT[hotplex]}/health/live" hotplex
wait_ok "http://127.0.0.1:${PORT[nginx]}/health/live" nginx
sleep 2.5 # allow-sleep: hotplex-proxy's first worker health probes (interval 2s) mark the workers placeable

sessions_on_workers() {
  local n=0 p v
  for p in "${W[@]}"; do
    v=$(curl -s "http://127.0.0.1:$p/health/ready" | sed -n 's/.*"sessions_active":\([0-9]*\).*/\1/p')
    n=$((n + ${v:-0}))
  done
  echo "$n"
}

UPTIME_BEFORE=$(uptime)
IFS=, read -r -a TLIST <<<"$TARGETS"
for t in "${TLIST[@]}"; do
  case "$t" in
    hotplex) pids=("$HPID"); args=(--base "http://127.0.0.1:${PORT[hotplex]}" --ids minted) ;;
    nginx) mapfile -t pids < <(echo "$NPID"; pgrep -P "$NPID" || true)
      args=(--base "http://127.0.0.1:${PORT[nginx]}" --ids client) ;;
    direct) pids=(); args=(--ids client); for p in "${W[@]}"; do args+=(--base "http://127.0.0.1:$p"); done ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
  log "$t: $SESSIONS sessions, ${DURATION}s window"
  rss0=$(rss "${pids[@]}")
  rm -f "$DIR/ready"
  "$BIN/workload" --name "$t" "${args[@]}" --api-key "$API_KEY" --sessions "$SESSIONS" \
    --arrival-rate "$ARRIVAL" --duration "$DURATION" --turns "$TURNS" --think-ms "$THINK_MS" \
    --prefix "wl-$t-$$" --ready-file "$DIR/ready" >"$DIR/res/$t.out" 2>"$DIR/$t.driver.log" &
  dpid=$!; PIDS+=($dpid)
  while [ ! -s "$DIR/ready" ] && kill -0 "$dpid" 2>/dev/null; do sleep 0.1; done
  c0=$(ticks "${pids[@]}"); w0=$(ticks "${WPIDS[@]}")
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')" # allow-sleep: mid-window memory sample
  rss1=$(rss "${pids[@]}")
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')" # allow-sleep: rest of the window
  c1=$(ticks "${pids[@]}"); w1=$(ticks "${WPIDS[@]}")
  wait "$dpid" || true
  log "  $(cat "$DIR/res/$t.out")"
  echo "$(( c1 - c0 )) $(( w1 - w0 )) $rss0 $rss1" >"$DIR/res/$t.proc"
  for _ in $(seq 1 100); do [ "$(sessions_on_workers)" = 0 ] && break; sleep 0.2; done
done
UPTIME_AFTER=$(uptime)

# --- table --------------------------------------------------------------------------------
field() { tr ' ' '\n' <"$DIR/res/$1.out" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
{
  echo "Workload benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), profile $PROFILE, commit $(git rev-parse --short HEAD 2>/dev/null || echo ?);"
  echo "$SESSIONS sessions (half SSE, half WebSocket) started at $ARRIVAL/s, $TURNS turns each then replaced, think ${THINK_MS} ms, $((EVENTS + 1)) events per turn ($EVENTS x ${INTERVAL_MS} ms + result), ${DURATION}s window per target;"
  echo "3 hotplex-worker (fake-agent), hotplex-proxy threads 1 (production shape), nginx worker_processes 1; not pinned."
  echo "load before: $UPTIME_BEFORE"
  echo "load after:  $UPTIME_AFTER"
  echo
  echo "| target | sessions held | turns/s (SSE+WS) | new sessions/s | first event p50 / p99 ms | event p50 / p99 ms | added vs direct p50 / p99 ms | proxy CPU µs/turn | worker CPU µs/turn | proxy RSS MiB | KiB/session | errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${TLIST[@]}"; do
    [ -s "$DIR/res/$t.out" ] || continue
    read -r pc wc r0 r1 <"$DIR/res/$t.proc"
    turns=$(field "$t" turns)
    ep50=$(field "$t" event_p50_ms); ep99=$(field "$t" event_p99_ms)
    if [ -s "$DIR/res/direct.out" ] && [ "$t" != direct ]; then
      added=$(awk -v a="$ep50" -v b="$(field direct event_p50_ms)" -v c="$ep99" -v d="$(field direct event_p99_ms)" \
        'BEGIN { printf "%+.2f / %+.2f", a - b, c - d }')
    else added="—"; fi
    if [ "$t" = direct ]; then pcpu="—"; mem="—"; kib="—"
    else
      pcpu=$(awk -v c="$pc" -v k="$CLK_TCK" -v n="$turns" 'BEGIN { if (n > 0) printf "%.0f", c / k * 1e6 / n; else print "—" }')
      mem=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.1f -> %.1f", a / 1024, b / 1024 }')
      kib=$(awk -v a="$r0" -v b="$r1" -v n="$SESSIONS" 'BEGIN { printf "%.1f", (b - a) / n }')
    fi
    wcpu=$(awk -v c="$wc" -v k="$CLK_TCK" -v n="$turns" 'BEGIN { if (n > 0) printf "%.0f", c / k * 1e6 / n; else print "—" }')
    echo "| $t | $(field "$t" holding) | $(field "$t" turns_per_s) ($(field "$t" sse_turns)+$(field "$t" ws_turns)) | $(field "$t" arrivals_per_s) | $(field "$t" first_p50_ms) / $(field "$t" first_p99_ms) | $ep50 / $ep99 | $added | $pcpu | $wcpu | $mem | $kib | $(field "$t" errors)$(td=$(field "$t" teardown_errors); [ "${td:-0}" = 0 ] || echo " (+$td at teardown)") |"
  done
} | tee ${OUT:+"$OUT"}
