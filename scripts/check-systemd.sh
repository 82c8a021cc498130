#!/usr/bin/env bash
# make systemd-check: the systemd units of conf/systemd, offline (no running systemd needed).
#  1. `systemd-analyze verify` in a scratch root (the distribution's units, the shipped units,
#     stub executables at the units' command paths): any message is an error (verify exits 0
#     on unknown keys and bad values, it only prints them).
#  2. `systemd-analyze security --offline=true --threshold=N`: each unit's exposure must not
#     exceed the score measured when it was hardened (docs/deployment.md, "Hardening"):
#     lower a threshold when a unit gets stricter, never raise it.
#  3. the service users exist after systemd-sysusers reads conf/systemd/hotplex.sysusers,
#     and are two different users;
#  4. the upgrade contract of the proxy unit (private runtime directory kept across
#     restarts, PID file inside it, ExecReload helper, Restart=on-failure) and the helper's
#     shell syntax.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=conf/systemd

# Exposure x10 (systemd-analyze prints 0.0-10.0, --threshold takes 0-100). The worker's
# 2.3 (was 1.3) is the price of per-session agent uids: five ambient capabilities and no
# PrivateUsers (docs/deployment.md, "Hardening"); everything else is unchanged.
declare -A MAX_EXPOSURE=(
  [hotplex-proxy.service]=14
  [hotplex-worker@.service]=23
)

fail() { echo "systemd-check: $*" >&2; exit 1; }
command -v systemd-analyze >/dev/null || fail "systemd-analyze not found (Debian package systemd)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$dir"/*.service "$root/etc/systemd/system/"
# Every absolute command of an Exec*= line (after systemd's prefixes -@:+!), as a stub.
grep -hoE '^Exec[A-Za-z]*=[-@:+!]*/[^ ]+' "$dir"/*.service | sed -E 's/^[^=]*=[-@:+!]*//' | sort -u |
  while read -r exe; do
    mkdir -p "$root$(dirname "$exe")"
    [ -e "$root$exe" ] || { printf '#!/bin/sh\n' >"$root$exe"; chmod 755 "$root$exe"; }
  done

# 1. verify
out=$(systemd-analyze verify --root="$root" --man=no hotplex-proxy.service hotplex-worker@8081.service 2>&1) ||
  { echo "$out" >&2; fail "systemd-analyze verify failed"; }
[ -z "$out" ] || { echo "$out" >&2; fail "systemd-analyze verify printed the messages above"; }
echo "systemd-check: verify ok"

# 2. exposure
for unit in "${!MAX_EXPOSURE[@]}"; do
  max=${MAX_EXPOSURE[$unit]}
  if ! out=$(systemd-analyze security --offline=true --threshold="$max" "$dir/$unit" 2>&1); then
    echo "$out" | grep -E '✗|Overall' >&2 || echo "$out" >&2
    fail "$unit: exposure above $((max / 10)).$((max % 10))"
  fi
  echo "systemd-check: $(echo "$out" | grep -o 'Overall exposure level.*') (max $((max / 10)).$((max % 10)))"
done

# 3. users
systemd-sysusers --root="$root" "$PWD/$dir/hotplex.sysusers" >/dev/null 2>&1 ||
  fail "systemd-sysusers rejects $dir/hotplex.sysusers"
users=()
for unit in hotplex-proxy.service hotplex-worker@.service; do
  u=$(sed -n 's/^User=//p' "$dir/$unit")
  [ -n "$u" ] || fail "$unit: no User="
  grep -q "^$u:" "$root/etc/passwd" || fail "$unit: User=$u is not created by $dir/hotplex.sysusers"
  users+=("$u")
done
[ "${users[0]}" != "${users[1]}" ] || fail "proxy and workers share the user ${users[0]}"
echo "systemd-check: users ${users[*]} ok"

# 4. the proxy's upgrade contract
proxy=$dir/hotplex-proxy.service
for line in 'RuntimeDirectory=hotplex-proxy' 'RuntimeDirectoryMode=0700' 'RuntimeDirectoryPreserve=yes' \
  'PIDFile=/run/hotplex-proxy/hotplex-proxy.pid' 'Restart=on-failure' \
  'ExecReload=/usr/local/libexec/hotplex-proxy-upgrade /etc/hotplex/hotplex.yaml'; do
  grep -qxF "$line" "$proxy" || fail "$proxy: missing '$line'"
done
grep -q '^MemoryDenyWriteExecute=yes' "$dir/hotplex-worker@.service" &&
  fail "hotplex-worker@.service: MemoryDenyWriteExecute breaks JIT agents (Node.js)"
# 5. the worker's per-session uid contract: exactly the five capabilities, ambient and
#    bounding; no_new_privs; other uids' /proc invisible; no PrivateUsers (it would map
#    the session uids away); the shared lock directory; a shipped config with a uid range.
worker=$dir/hotplex-worker@.service
caps='CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL CAP_DAC_OVERRIDE'
for line in "CapabilityBoundingSet=$caps" "AmbientCapabilities=$caps" 'NoNewPrivileges=yes' \
  'ProtectProc=invisible' 'RuntimeDirectory=hotplex-agent-uids' 'RuntimeDirectoryPreserve=yes'; do
  grep -qxF "$line" "$worker" || fail "$worker: missing '$line'"
done
[ "$(grep -c '^CapabilityBoundingSet=\|^AmbientCapabilities=' "$worker")" = 2 ] ||
  fail "$worker: CapabilityBoundingSet=/AmbientCapabilities= set more than once"
grep -q '^PrivateUsers=yes' "$worker" && fail "$worker: PrivateUsers=yes breaks per-session uids"
grep -q '^ *uid_range: *{start: *[0-9]\+, *count: *[0-9]\+}' "$dir/worker.yaml" ||
  fail "$dir/worker.yaml: no agent.isolation.uid_range"
echo "systemd-check: worker capability contract ok"
[ -x "$dir/hotplex-proxy-upgrade" ] || fail "$dir/hotplex-proxy-upgrade is not executable"
sh -n "$dir/hotplex-proxy-upgrade" || fail "$dir/hotplex-proxy-upgrade: shell syntax"
echo "systemd-check: upgrade contract ok"
