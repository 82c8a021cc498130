#!/usr/bin/env bash
# TLS benchmark: hotplex-proxy (release build, OpenSSL, threads: 1) vs nginx (1 worker
# process, benches/nginx-tls.conf) in front of the same HotPlex worker, same certificate
# (ECDSA P-256), loopback only. Prints a Markdown table:
#   - new TLS handshakes/s: `openssl s_time -new` (a full handshake + one GET per
#     connection, no resumption, no keep-alive), DURATION seconds each;
#   - h2 requests/s: `h2load` (ALPN h2, C connections x M streams), DURATION seconds each.
# Not a test: numbers depend on the machine. Usage: benches/tls_bench.sh [DURATION_SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
C=${C:-20}
M=${M:-10}
WORKER_PORT=${WORKER_PORT:-18081}
PROXY_PORT=${PROXY_PORT:-18000}
ADMIN_PORT=${ADMIN_PORT:-19900}
PROXY_TLS_PORT=${PROXY_TLS_PORT:-18443}
NGINX_TLS_PORT=${NGINX_TLS_PORT:-18444}
PATH_Q=${PATH_Q:-/health/live}
PROFILE=${PROFILE:-release}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need h2load; then
  echo "installing nginx and nghttp2-client (h2load)..." >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light nghttp2-client >&2 \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx nghttp2-client >&2
fi
need openssl || { echo "openssl CLI required" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "building hotplex-proxy and hotplex-worker (--profile $PROFILE)..." >&2
cargo build -q --profile "$PROFILE" -p hotplex-proxy -p hotplex-worker >&2
BIN=target/$PROFILE

DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# Certificate for localhost (ECDSA P-256, self-signed).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null

# Worker.
"$BIN/hotplex-worker" --listen "127.0.0.1:$WORKER_PORT" --node-id bench-w1 >"$DIR/worker.log" 2>&1 &
PIDS+=($!)

# Proxy.
cat >"$DIR/proxy.yaml" <<YAML
listen: 127.0.0.1:$PROXY_PORT
threads: 1
admin:
  listen: 127.0.0.1:$ADMIN_PORT
workers:
  - id: w1
    address: 127.0.0.1:$WORKER_PORT
routing:
  affinity_secrets: ["bench-secret-0123456789abcdef"]
log:
  level: warn
tls:
  listen: 127.0.0.1:$PROXY_TLS_PORT
  certificates:
    - server_names: [localhost]
      cert: $DIR/cert.pem
      key: $DIR/key.pem
YAML
RUST_LOG=warn "$BIN/hotplex-proxy" --config "$DIR/proxy.yaml" >"$DIR/proxy.log" 2>&1 &
PIDS+=($!)

# nginx.
mkdir -p "$DIR"/{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s|__CERT__|$DIR/cert.pem|; s|__KEY__|$DIR/key.pem|; s|__TLS_PORT__|$NGINX_TLS_PORT|" \
    -e "s|__WORKER__|127.0.0.1:$WORKER_PORT|; s|__DIR__|$DIR|g" \
    benches/nginx-tls.conf >"$DIR/nginx.conf"
"$NGINX" -c "$DIR/nginx.conf" -e "$DIR/nginx-error.log" >"$DIR/nginx.log" 2>&1 &
PIDS+=($!)

wait_up() {
  for _ in $(seq 1 100); do
    curl -ksf -o /dev/null "https://127.0.0.1:$1$PATH_Q" && return 0
    sleep 0.1
  done
  echo "nothing answers on $1 ($2); logs in $DIR" >&2
  tail -n 20 "$DIR"/*.log >&2
  exit 1
}
wait_up "$PROXY_TLS_PORT" hotplex-proxy
wait_up "$NGINX_TLS_PORT" nginx

handshakes() { # port -> handshakes/s
  openssl s_time -connect "127.0.0.1:$1" -new -time "$DURATION" -www "$PATH_Q" 2>/dev/null |
    awk '/connections in [0-9.]+ real seconds/ { for (i=1;i<=NF;i++) if ($i=="connections" && $(i+1)=="in") { n=$(i-1); t=$(i+2) } }
         END { if (t>0) printf "%.0f", n/t; else print "n/a" }'
}
h2rps() { # port -> requests/s
  h2load -D "$DURATION" -c "$C" -m "$M" -t 1 "https://127.0.0.1:$1$PATH_Q" 2>/dev/null |
    awk '/^finished in/ { gsub(",", "", $4); print int($4) }'
}
h2ok() { # port -> succeeded/total of a short h2 check
  h2load -n 200 -c 2 -m 2 "https://127.0.0.1:$1$PATH_Q" 2>/dev/null |
    awk '/^requests:/ { print $8 "/" $2 }'
}

echo "warming up..." >&2
h2load -n 2000 -c 10 -m 10 "https://127.0.0.1:$PROXY_TLS_PORT$PATH_Q" >/dev/null 2>&1 || true
h2load -n 2000 -c 10 -m 10 "https://127.0.0.1:$NGINX_TLS_PORT$PATH_Q" >/dev/null 2>&1 || true

echo "measuring (${DURATION}s per run, 4 runs)..." >&2
PH=$(handshakes "$PROXY_TLS_PORT"); NH=$(handshakes "$NGINX_TLS_PORT")
PR=$(h2rps "$PROXY_TLS_PORT");      NR=$(h2rps "$NGINX_TLS_PORT")
PO=$(h2ok "$PROXY_TLS_PORT");       NO=$(h2ok "$NGINX_TLS_PORT")

cat <<TABLE
TLS benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),
$("$NGINX" -v 2>&1), $(openssl version), $(h2load --version 2>&1 | head -1); path $PATH_Q on one HotPlex worker;
proxy threads: 1, nginx worker_processes 1; ${DURATION}s per run; h2load -c $C -m $M.

| | hotplex-proxy (pingora, OpenSSL) | nginx | proxy / nginx |
|---|---:|---:|---:|
| new TLS handshakes/s (openssl s_time -new, 1 GET each) | $PH | $NH | $(awk -v a="$PH" -v b="$NH" 'BEGIN { if (b>0) printf "%.2f", a/b; else print "n/a" }') |
| h2 requests/s (h2load, ALPN h2) | $PR | $NR | $(awk -v a="$PR" -v b="$NR" 'BEGIN { if (b>0) printf "%.2f", a/b; else print "n/a" }') |
| h2 check (2xx/total) | $PO | $NO | |
TABLE
