# Shared setup of the scenario-1 tools (benches/profile.sh, instr_count.sh, sse_instr.sh): the
# request of scenario 1 of benches/load_bench.sh (HTTP/1.1, API key, signed session id) to
# hotplex-proxy in front of an nginx backend on 3 ports. Sourced, not run; expects BASE
# (first port), and for s1_backend DIR (a scratch directory) and PIDS (an array the
# caller's cleanup kills). load_bench.sh uses its API_KEY, SECRET and s1_signed_key.
API_KEY=bench-api-key-0123456789
SECRET=bench-affinity-secret-0123456789
W1=$((BASE + 1)); W2=$((BASE + 2)); W3=$((BASE + 3)); P=$((BASE + 20)); A=$((BASE + 21))

# s1_scratch: a scratch directory DIR, the array PIDS, and an EXIT trap that kills PIDS and
# removes DIR (the common start of the scenario-1 tools).
s1_scratch() {
  DIR=$(mktemp -d)
  PIDS=()
  trap s1_cleanup EXIT
}
s1_cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }

# s1_backend [PIN...]: starts the nginx backend (18-byte answers) on W1..W3.
s1_backend() {
  mkdir -p "$DIR"/{backend-body,backend-proxy,backend-fastcgi,backend-uwsgi,backend-scgi}
  sed -e "s|__W1__|$W1|; s|__W2__|$W2|; s|__W3__|$W3|; s|__DIR__|$DIR|g; s|__NOFILE__|4096|" \
    benches/nginx-backend.conf >"$DIR/backend.conf"
  "$@" nginx -c "$DIR/backend.conf" -e "$DIR/backend-error.log" >/dev/null 2>&1 &
  PIDS+=($!)
}

# s1_full_yaml [TOP_LEVEL_LINES]: the production shape (benches/hotplex-full.yaml: auth,
# limits, routes with the session pool and an http pool, access log, tracing sampled out)
# listening on P (admin A) in front of W1..W3; the http pool's upstream is STATIC (default
# W1), the OTLP endpoint port OTLP (default BASE + 99, nothing listens there), the
# connection caps MAXCONN (default 100000). The access log goes where the proxy's stdout goes.
s1_full_yaml() {
  sed -e "s|__LISTEN__|$P|g; s|__ADMIN__|$A|; s|__W1__|$W1|; s|__W2__|$W2|; s|__W3__|$W3|" \
    -e "s|__STATIC__|${STATIC:-$W1}|; s|__SECRET__|$SECRET|; s|__OTLP__|${OTLP:-$((BASE + 99))}|" \
    -e "s|__API_HASH__|$(printf %s "$API_KEY" | sha256sum | cut -d' ' -f1)|; s|__MAXCONN__|${MAXCONN:-100000}|g" \
    benches/hotplex-full.yaml
  [ -z "${1:-}" ] || printf '%s\n' "$1"
}

# s1_proxy_yaml [LIMITS_LINE] [TOP_LEVEL_LINES]: the feature-less shape ("hotplex-bare":
# API key, one per-key limit, no routes, warn log, no tracing), on stdout.
s1_proxy_yaml() {
  cat <<YAML
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
  ${1:-}
health_check: {interval: 60s}
${2:-}
YAML
}

# s1_signed_key WORKER: a session id as hotplex-proxy mints it for WORKER and the tenant
# "bench" (the API key's name): <worker>.<16 base62>.v2-<kid>.<mac22>, kid = 6 hex of
# SHA-256("hotplex-kid" || secret), mac = base64url of the first 16 bytes of
# HMAC-SHA256(secret, "bench\n<worker>.<random>.v2-<kid>").
s1_signed_key() {
  local rnd kid signed mac
  rnd=$(openssl rand -hex 32 | tr -dc 'A-Za-z0-9' | cut -c1-16)
  kid=$(printf 'hotplex-kid%s' "$SECRET" | sha256sum | cut -c1-6)
  signed="$1.$rnd.v2-$kid"
  mac=$(printf 'bench\n%s' "$signed" | openssl dgst -sha256 -hmac "$SECRET" -binary | head -c 16 | base64 | tr '+/' '-_' | tr -d '=\n')
  echo "$signed.$mac"
}

# s1_start SHAPE BIN READY_PATH [WRAPPER...]: starts SHAPE (under WRAPPER, e.g. valgrind)
# listening on P, its output in $DIR/proxy.SHAPE.log and $DIR/stderr.SHAPE.log (the full
# shapes' access log), sets `vp` to its pid and waits until READY_PATH answers (with the API
# key). SHAPE floor is pingora-min built beside BIN (the framework floor of load_bench.sh,
# with the allocator options load_bench.sh gives it; hotplex-proxy has them built in); any
# other shape is BIN --config "$DIR/SHAPE.yaml" (bare with RUST_LOG=warn, the others with
# RUST_LOG unset: it would override log.level and the access log).
s1_start() {
  local shape=$1 bin=$2 ready=$3 cmd envs=()
  shift 3
  if [ "$shape" = bare ]; then export RUST_LOG=warn; else unset RUST_LOG; fi
  if [ "$shape" = floor ]; then
    cmd=("$(dirname "$bin")/pingora-min" --listen "127.0.0.1:$P" --api-key "$API_KEY"
      --upstream "127.0.0.1:$W1" --upstream "127.0.0.1:$W2" --upstream "127.0.0.1:$W3")
    envs=(MALLOC_CONF="${MALLOC_CONF:-tcache_max:131072}")
  else
    cmd=("$bin" --config "$DIR/$shape.yaml")
  fi
  env "${envs[@]}" "$@" "${cmd[@]}" >"$DIR/proxy.$shape.log" 2>"$DIR/stderr.$shape.log" &
  vp=$!
  PIDS+=("$vp")
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null -H "x-api-key: $API_KEY" "http://127.0.0.1:$P$ready" && break
    sleep 0.2
  done
}

# s1_callgrind SHAPE BIN OUT READY_PATH: s1_start under valgrind's callgrind (dumps to
# OUT.<pid>[.<n>]).
s1_callgrind() { s1_start "$1" "$2" "$4" valgrind --tool=callgrind --callgrind-out-file="$3.%p"; }

# s1_load N: N scenario-1 requests (h2load --h1 -c 10, the signed session KEY); prints the
# number of 2xx answers.
s1_load() {
  h2load --h1 -n "$1" -c 10 -H "x-api-key: $API_KEY" -H "x-hotplex-session: $KEY" \
    "http://127.0.0.1:$P/sessions/$KEY" 2>&1 | awk '/^status codes:/ { print $3 }'
}

# s1_ir FILE: the instructions (Ir) of one callgrind dump.
s1_ir() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'; }
