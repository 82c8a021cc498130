#!/usr/bin/env bash
# `make run`: three HotPlex workers on 127.0.0.1:8081-8083 and the edge proxy in front of
# them on 127.0.0.1:8000 (admin + /metrics on 127.0.0.1:9900). The proxy serves from an
# editable config file, `.local/hotplex.yaml` (git-ignored), written from the embedded
# default on first run (HOTPLEX_RUN_CONFIG=FILE picks another): edit it, check it with
# `hotplex-proxy check FILE`, apply it with `kill -HUP <proxy pid>` or POST /admin/reload.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-release}"
BIN="target/${PROFILE}"
[ "$PROFILE" = "dev" ] && BIN="target/debug"
cargo build --profile "$PROFILE" -p hotplex-worker -p hotplex-proxy

CONF="${HOTPLEX_RUN_CONFIG:-.local/hotplex.yaml}"
if [ ! -f "$CONF" ]; then
  mkdir -p "$(dirname "$CONF")"
  "$BIN/hotplex-proxy" default-config > "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  echo "wrote $CONF from the embedded default (edit it; reload with kill -HUP or POST /admin/reload)"
fi
"$BIN/hotplex-proxy" check "$CONF" >/dev/null

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

for i in 1 2 3; do
  "$BIN/hotplex-worker" --listen "127.0.0.1:808$i" --node-id "w$i" &
  pids+=($!)
done
"$BIN/hotplex-proxy" --config "$CONF" &
pids+=($!)
proxy_pid=$!

# Wait for the proxy's admin listener.
up=0
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null http://127.0.0.1:9900/health/live 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
if [ "$up" -ne 1 ]; then
  echo "the proxy did not come up on 127.0.0.1:9900 (see the log above)" >&2
  exit 1
fi

cat <<CONFIG

Config: $CONF (proxy pid $proxy_pid)
  edit it, then:  $BIN/hotplex-proxy check $CONF && kill -HUP $proxy_pid
  (or: curl -X POST http://127.0.0.1:9900/admin/reload); a bad file is refused and the old config keeps serving
CONFIG
cat <<'HOWTO'

HotPlex Edge is up:
  proxy        http://127.0.0.1:8000
  proxy TLS    https://127.0.0.1:8443  (HTTP/1.1 + h2, self-signed dev certificate: -k)
  admin        http://127.0.0.1:9900   (/metrics, /admin/workers)
  workers      http://127.0.0.1:8081 .. 8083   (each with /metrics)

Try it:
  # create a session (the proxy places it on the least-loaded worker)
  SID=$(curl -s -X POST http://127.0.0.1:8000/sessions | sed 's/.*"session_id":"\([^"]*\)".*/\1/')
  # one turn, streamed as Server-Sent Events (always the same worker: see X-Hotplex-Node)
  curl -N -i -X POST http://127.0.0.1:8000/sessions/$SID/messages \
       -H 'content-type: application/json' -d '{"prompt":"hello"}'
  # WebSocket (any client, e.g. `websocat`):
  #   websocat ws://127.0.0.1:8000/ws/v1/agent
  #   {"type":"execute","request_id":1,"session_id":"demo-1","prompt":"hello"}
  # the same over TLS + HTTP/2 (dev certificate, hence -k)
  curl -k --http2 -si https://127.0.0.1:8443/sessions/$SID
  curl -s http://127.0.0.1:9900/admin/workers
  curl -s http://127.0.0.1:9900/metrics | grep hotplex_

Ctrl-C stops all.
HOWTO

wait -n "${pids[@]}" || true
echo "a process exited; shutting down" >&2
