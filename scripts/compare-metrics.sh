#!/usr/bin/env bash
# Compares the /metrics exposition of two hotplex-proxy binaries: same config, fresh
# process each, no traffic. Families (# TYPE), HELP/TYPE lines and series (name and labels,
# values dropped) must be identical; prints the counts and any difference.
#
#   scripts/compare-metrics.sh OLD_BINARY NEW_BINARY [CONFIG]
#
# CONFIG defaults to conf/examples/nginx-replacement.yaml with every listener on port 0 and
# a TLS listener (dev certificate) added, so the TLS, pool, discovery and identity families
# are all present. Needs curl and python3. Exit status 0: identical, 1: different.
set -euo pipefail
old=$1
new=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
root=$(cd "$(dirname "$0")/.." && pwd)
cfg=${3:-}
if [ -z "$cfg" ]; then
    cfg=$dir/config.yaml
    sed -e 's/127.0.0.1:8000/127.0.0.1:0/; s/127.0.0.1:9900/127.0.0.1:0/' \
        "$root/conf/examples/nginx-replacement.yaml" >"$cfg"
    printf 'tls:\n  listen: 127.0.0.1:0\n' >>"$cfg"
fi

scrape() { # binary name
    local addr="$dir/$2.addr"
    "$1" --config "$cfg" --addr-file "$addr" >"$dir/$2.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 150); do [ -s "$addr" ] && break; sleep 0.2; done
    local admin
    admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$addr")
    sleep 3 # one health-check round: per-worker and per-upstream series exist
    curl -sf "http://$admin/metrics" >"$dir/$2.txt"
    kill "$pid"
    wait "$pid" || true
    grep '^# TYPE' "$dir/$2.txt" | awk '{print $3}' | sort >"$dir/$2.families"
    grep -E '^# (HELP|TYPE)' "$dir/$2.txt" | sort >"$dir/$2.meta"
    grep -v '^#' "$dir/$2.txt" | sed -E 's/ [^ ]+$//' | sort >"$dir/$2.series"
}

scrape "$old" old
scrape "$new" new
status=0
for part in families meta series; do
    n=$(wc -l <"$dir/old.$part")
    if diff "$dir/old.$part" "$dir/new.$part"; then
        echo "$part: identical ($n lines)"
    else
        echo "$part: DIFFERENT"
        status=1
    fi
done
exit $status
