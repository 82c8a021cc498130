#!/usr/bin/env bash
# The shipped systemd units, run for real under systemd: boots a throwaway container
# (systemd-nspawn --volatile=yes: a tmpfs root with this machine's /usr read-only, so
# nothing on the host changes; its own network namespace with loopback only) with
# conf/systemd's units, users, upgrade helper and the built binaries (overlays on
# /usr/local/bin and /usr/local/libexec, writes going to a scratch directory) mounted in,
# then checks:
#   - both units start under their sandbox (users, capabilities, no_new_privs, seccomp);
#   - a session is served through the proxy;
#   - `systemctl reload hotplex-proxy` hands the listeners to a new process, systemd follows
#     it (MainPID changes, the unit stays active), the session is still served, twice;
#   - a new binary that dies at start fails the reload and changes nothing (same MainPID,
#     active, session served);
#   - ProtectProc=invisible: the worker's user does not see the proxy in its /proc;
#   - per-session uids: the agent runs as a uid of the shipped range without capabilities
#     or groups, invisible to the worker's user; a `setsid sleep` of that uid dies when the
#     session is deleted (the sweep helper);
#   - the units' exposure as systemd reports it for the running units.
# Needs root. Without systemd-nspawn, extracts it from the Debian package (not installed:
# it would upgrade systemd). Usage: scripts/systemd-nspawn-test.sh [BIN_DIR]
# (BIN_DIR: where hotplex-proxy and hotplex-worker are, default $CARGO_TARGET_DIR/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin=$(cd "${1:-${CARGO_TARGET_DIR:-target}/debug}" && pwd)
for b in hotplex-proxy hotplex-worker; do [ -x "$bin/$b" ] || { echo "no $bin/$b: cargo build first" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "systemd-nspawn-test: needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/hotplex-nspawn.XXXXXX)
nspawn=$(command -v systemd-nspawn || true)
if [ -z "$nspawn" ]; then
  (cd "$work" && apt-get download -q systemd-container >/dev/null 2>&1 && dpkg -x systemd-container_*.deb x)
  nspawn=$work/x/usr/bin/systemd-nspawn
fi

# The config the units read (/etc/hotplex): one worker on 8081 behind the proxy on 8000.
mkdir -p "$work/etc-hotplex"
key=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
printf 'HOTPLEX_WORKER_KEY=%s\nHOTPLEX_WORKER_PROXY_KEY=%s\n' "$key" "$key" >"$work/etc-hotplex/worker-key.env"
chmod 600 "$work/etc-hotplex/worker-key.env"
cat >"$work/etc-hotplex/hotplex.yaml" <<'EOF'
listen: 127.0.0.1:8000
admin:
  listen: 127.0.0.1:9900
workers:
  - id: w1
    address: 127.0.0.1:8081
routing:
  affinity_secrets: ["nspawn-test-secret-0123456789abcdef"]
worker_auth:
  key: "env:HOTPLEX_WORKER_KEY"
upgrade:
  sock: /run/hotplex-proxy/upgrade.sock
  grace_period: 1s
  shutdown_timeout: 1s
EOF
# The worker's id is its node id, which the proxy verifies (worker_auth): the unit's
# %H-%i, the container's host name being the machine name below.
sed -i "s/id: w1$/id: hotplex-test-$$-8081/" "$work/etc-hotplex/hotplex.yaml"
# The worker's config as shipped (per-session uids), plus the proxy key.
cp "$repo/conf/systemd/worker.yaml" "$work/etc-hotplex/worker.yaml"
echo 'proxy_keys: ["env:HOTPLEX_WORKER_PROXY_KEY"]' >>"$work/etc-hotplex/worker.yaml"
chmod 644 "$work/etc-hotplex/"*.yaml

# The binaries and the helper at the paths the units name, as read-only overlays.
mkdir -p "$work/bin" "$work/libexec" "$work/bin-upper"
cp "$bin/hotplex-proxy" "$bin/hotplex-worker" "$work/bin/"
cp "$repo/conf/systemd/hotplex-proxy-upgrade" "$work/libexec/"

machine=hotplex-test-$$
"$nspawn" -D / --volatile=yes --register=no --keep-unit --private-network --boot \
  --console=pipe -M "$machine" \
  --overlay="/usr/local/bin:$work/bin:$work/bin-upper:/usr/local/bin" \
  --overlay-ro="/usr/local/libexec:$work/libexec:/usr/local/libexec" \
  --bind-ro="$repo/conf/systemd/hotplex-proxy.service:/etc/systemd/system/hotplex-proxy.service" \
  --bind-ro="$repo/conf/systemd/hotplex-worker@.service:/etc/systemd/system/hotplex-worker@.service" \
  --bind-ro="$repo/conf/systemd/hotplex.sysusers:/etc/sysusers.d/hotplex.conf" \
  --bind-ro="$work/etc-hotplex:/etc/hotplex" \
  >"$work/boot.log" 2>&1 &
nspawn_pid=$!
cleanup() {
  kill -TERM "$nspawn_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$nspawn_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "systemd-nspawn-test: FAIL: $*" >&2
  if [ -n "${leader:-}" ]; then
    c journalctl --no-pager -n 60 -u hotplex-proxy -u 'hotplex-worker@*' >&2 || true
    # HOTPLEX_NSPAWN_HOLD=SECONDS: keep the container for a look (nsenter -t LEADER -a ...).
    [ -z "${HOTPLEX_NSPAWN_HOLD:-}" ] || { echo "container leader pid $leader" >&2; sleep "$HOTPLEX_NSPAWN_HOLD"; }
  fi
  exit 1
}
leader=
for _ in $(seq 100); do
  leader=$(pgrep -P "$nspawn_pid" | head -1 || true)
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { cat "$work/boot.log" >&2; fail "the container did not start"; }
c() { nsenter -t "$leader" -a "$@"; }
for _ in $(seq 150); do
  s=$(c systemctl is-system-running 2>/dev/null || true)
  case "$s" in running | degraded) break ;; esac
  sleep 0.2
done
echo "systemd-nspawn-test: container up ($s), systemd $(c systemctl --version | head -1 | cut -d' ' -f2)"

c systemd-sysusers >/dev/null
c systemctl start hotplex-worker@8081.service hotplex-proxy.service || fail "the units do not start"
for u in hotplex-worker@8081 hotplex-proxy; do
  [ "$(c systemctl is-active $u)" = active ] || fail "$u is not active"
done
ppid=$(c systemctl show -p MainPID --value hotplex-proxy)
wpid=$(c systemctl show -p MainPID --value hotplex-worker@8081)
echo "systemd-nspawn-test: active: proxy pid $ppid, worker pid $wpid"

# The sandbox as the kernel sees it.
status() { c cat "/proc/$1/status" | awk -v k="$2:" '$1 == k {print $2}'; }
user_of() { c getent passwd "$(status "$1" Uid)" | cut -d: -f1; }
[ "$(user_of "$ppid")" = hotplex-proxy ] || fail "proxy runs as '$(user_of "$ppid")' (uid $(status "$ppid" Uid))"
[ "$(user_of "$wpid")" = hotplex-worker ] || fail "worker runs as '$(user_of "$wpid")' (uid $(status "$wpid" Uid))"
[ "$(status "$ppid" CapEff)" = 0000000000000400 ] || fail "proxy CapEff $(status "$ppid" CapEff) (want CAP_NET_BIND_SERVICE only)"
# The worker: the five capabilities (CAP_CHOWN, DAC_OVERRIDE, KILL, SETGID, SETUID) effective,
# not ambient nor inheritable (its agents inherit none), no supplementary group.
[ "$(status "$wpid" CapEff)" = 00000000000000e3 ] || fail "worker CapEff $(status "$wpid" CapEff)"
[ "$(status "$wpid" CapAmb)" = 0000000000000000 ] || fail "worker CapAmb $(status "$wpid" CapAmb)"
[ "$(status "$wpid" CapInh)" = 0000000000000000 ] || fail "worker CapInh $(status "$wpid" CapInh)"
[ -z "$(status "$wpid" Groups)" ] || fail "worker Groups $(status "$wpid" Groups)"
for p in "$ppid" "$wpid"; do
  [ "$(status "$p" NoNewPrivs)" = 1 ] || fail "pid $p: NoNewPrivs"
  [ "$(status "$p" Seccomp)" = 2 ] || fail "pid $p: no seccomp filter"
done
echo "systemd-nspawn-test: users, capabilities, no_new_privs, seccomp ok"

# A session through the proxy (the demo agent).
curl_c() { c curl -sS --max-time 10 "$@"; }
for _ in $(seq 50); do
  body=$(curl_c -X POST http://127.0.0.1:8000/sessions 2>/dev/null || true)
  id=$(printf '%s' "$body" | sed -n 's/.*"session_id" *: *"\([^"]*\)".*/\1/p')
  [ -n "$id" ] && break
  sleep 0.2
done
[ -n "$id" ] || fail "no session: $body"
[ "$(curl_c -o /dev/null -w '%{http_code}' "http://127.0.0.1:8000/sessions/$id")" = 200 ] || fail "session $id not served"
echo "systemd-nspawn-test: session $id served"

# ProtectProc=invisible: in the worker's namespaces, as its user, the proxy is not visible.
wuid=$(c id -u hotplex-worker)
wgid=$(c id -g hotplex-worker)
# (The control is the checking process itself: the worker holds capabilities it gained at
# exec, which makes it non-dumpable, so under hidepid its own user does not see it either.)
c nsenter -t "$wpid" -a -S "$wuid" -G "$wgid" test -e /proc/self/status || fail "the worker's user sees not even itself"
if c nsenter -t "$wpid" -a -S "$wuid" -G "$wgid" test -e "/proc/$ppid"; then fail "the worker sees the proxy's /proc entry"; fi
echo "systemd-nspawn-test: ProtectProc=invisible ok (the worker's user sees no /proc/$ppid)"

# Per-session uids: the session's agent runs as a uid of the shipped range, without
# capabilities or groups, invisible to the worker's user; a `setsid sleep` of that uid
# (started from outside the agent's process group) dies when the session is deleted.
apid=$(c pgrep -P "$wpid" | head -1)
[ -n "$apid" ] || fail "no agent process under the worker"
auid=$(status "$apid" Uid)
[ "$auid" -ge 1900000000 ] && [ "$auid" -lt 1900065536 ] || fail "agent uid $auid not in the range"
[ "$(status "$apid" CapEff)$(status "$apid" CapPrm)$(status "$apid" CapAmb)" = 000000000000000000000000000000000000000000000000 ] ||
  fail "the agent holds capabilities: $(c grep Cap "/proc/$apid/status" | tr '\n' ' ')"
[ "$(status "$apid" Groups)" = "$auid" ] || [ -z "$(status "$apid" Groups)" ] || fail "agent Groups $(status "$apid" Groups)"
if c nsenter -t "$wpid" -a -S "$wuid" -G "$wgid" test -e "/proc/$apid"; then fail "the worker's user sees its agent's /proc entry"; fi
c nsenter -t "$wpid" -a setpriv --reuid="$auid" --regid="$auid" --clear-groups setsid sleep 600 </dev/null >/dev/null 2>&1 &
esc=
for _ in $(seq 50); do
  esc=$(c pgrep -u "$auid" -x sleep || true)
  [ -n "$esc" ] && break
  sleep 0.1
done
[ -n "$esc" ] || fail "no escapee of uid $auid"
code=$(curl_c -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:8000/sessions/$id")
case "$code" in 2??) ;; *) fail "DELETE $id: $code" ;; esac
for _ in $(seq 50); do
  c pgrep -u "$auid" >/dev/null || break
  sleep 0.1
done
if c pgrep -u "$auid" >/dev/null; then fail "processes of uid $auid survived DELETE: $(c pgrep -a -u "$auid")"; fi
if c journalctl --no-pager -u hotplex-worker@8081 | grep -q 'sweep helper failed\|quarantined'; then fail "sweep not confirmed"; fi
# ProtectProc=invisible blinds the worker's /proc check of a uid's leftovers: it sweeps before use.
c journalctl --no-pager -u hotplex-worker@8081 | grep -q 'swept before use' || fail "no sweep before use under ProtectProc"
echo "systemd-nspawn-test: agent uid $auid (no capability, invisible to the worker); escapee $esc killed by DELETE"
id=$(curl_c -X POST http://127.0.0.1:8000/sessions | sed -n 's/.*"session_id" *: *"\([^"]*\)".*/\1/p')
[ -n "$id" ] || fail "no second session"

# Zero-downtime upgrade: systemctl reload.
c systemctl reload hotplex-proxy || fail "systemctl reload failed"
new=
for _ in $(seq 100); do
  new=$(c systemctl show -p MainPID --value hotplex-proxy)
  [ "$new" != "$ppid" ] && [ "$new" != 0 ] && ! c test -e "/proc/$ppid" && break
  sleep 0.2
done
[ "$new" != "$ppid" ] && [ "$new" != 0 ] || fail "systemd still has MainPID $new (old $ppid)"
c test -e "/proc/$ppid" && fail "the old proxy $ppid did not exit"
[ "$(c systemctl is-active hotplex-proxy)" = active ] || fail "not active after the upgrade"
c cat "/proc/$new/cmdline" | tr '\0' ' ' | grep -q -- '--upgrade' || fail "MainPID $new is not the upgraded process"
[ "$(curl_c -o /dev/null -w '%{http_code}' "http://127.0.0.1:8000/sessions/$id")" = 200 ] || fail "session not served after the upgrade"
[ "$(status "$new" CapEff)" = 0000000000000400 ] || fail "the new proxy's CapEff"
echo "systemd-nspawn-test: reload: MainPID $ppid -> $new, unit active, session $id still served"

# A second reload follows the new process again (the PID file, ExecReload's $MAINPID).
c systemctl reload hotplex-proxy || fail "second reload failed"
for _ in $(seq 100); do
  third=$(c systemctl show -p MainPID --value hotplex-proxy)
  [ "$third" != "$new" ] && [ "$third" != 0 ] && ! c test -e "/proc/$new" && break
  sleep 0.2
done
[ "$third" != "$new" ] || fail "second reload: MainPID stayed $new"
[ "$(curl_c -o /dev/null -w '%{http_code}' "http://127.0.0.1:8000/sessions/$id")" = 200 ] || fail "session not served after the second upgrade"
echo "systemd-nspawn-test: second reload: MainPID $new -> $third"

# A broken new binary (passes `check`, dies at start): the reload fails, nothing changes.
c cp /usr/local/bin/hotplex-proxy /root/hotplex-proxy.good
# (Installed as a package manager does: a new file renamed over the running one.)
c sh -c 'printf "#!/bin/sh\n[ \"\$1\" = check ] && exit 0\nexit 3\n" >/usr/local/bin/.new && chmod 755 /usr/local/bin/.new && mv -f /usr/local/bin/.new /usr/local/bin/hotplex-proxy'
if c systemctl reload hotplex-proxy 2>/dev/null; then fail "a reload with a binary that dies at start succeeded"; fi
c sh -c 'cp /root/hotplex-proxy.good /usr/local/bin/.new && mv -f /usr/local/bin/.new /usr/local/bin/hotplex-proxy'
[ "$(c systemctl is-active hotplex-proxy)" = active ] || fail "not active after the failed reload"
[ "$(c systemctl show -p MainPID --value hotplex-proxy)" = "$third" ] || fail "MainPID changed on a failed reload"
[ "$(curl_c -o /dev/null -w '%{http_code}' "http://127.0.0.1:8000/sessions/$id")" = 200 ] || fail "session not served after the failed reload"
c journalctl --no-pager -u hotplex-proxy | grep -q 'exited at start: the running proxy' || fail "no helper message in the journal"
echo "systemd-nspawn-test: failed reload (new binary dies at start): MainPID still $third, session served"

for u in hotplex-proxy.service hotplex-worker@8081.service; do
  echo "systemd-nspawn-test: $(c systemd-analyze security "$u" 2>/dev/null | grep -o 'Overall exposure level.*')"
done
c systemctl stop hotplex-proxy hotplex-worker@8081 || fail "stop"
echo "systemd-nspawn-test: ok"
