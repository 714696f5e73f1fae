#!/bin/bash
# bench/hit_instructions.sh BIN [BIN2 ...]: user-space instructions per cache
# hit, counted by callgrind, for each binary. Unlike req/s or CPU time it does
# not move with whatever else runs on the machine, so two builds can be
# compared on a busy machine (the kernel's share, most of a hit's cost, is
# not counted: see bench/RESULTS.md for wall-clock figures).
#
# Each binary runs as `--threads 1 --data-dir none` plus $GW_ARGS (default
# `--access-log off`; GW_ARGS="--access-log FILE" measures hits as users
# run them, logging to a file) under callgrind in front of its own mock; one miss, then N identical hits (a 1 KB
# chat answer) on one keep-alive connection; the count for N=0 is taken away,
# so start-up and the miss cancel out. Build without -march=native (valgrind
# does not know every instruction): make BUILD=build/cg OPT="-O3 -g -DNDEBUG" all
# Environment: N (hits, default 2000), GW_ARGS (more gateway flags, word-split),
# AE (the hits' Accept-Encoding; default: http.client's "identity").
set -euo pipefail
N=${N:-2000}
GW_ARGS=${GW_ARGS---access-log off}
command -v valgrind >/dev/null || { echo "hit_instructions: apt-get install valgrind" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# total instructions of BIN serving one miss and $1 hits
count() {
    local bin=$1 hits=$2 mp gp mpid gpid out=$tmp/cg.$RANDOM
    mp=$(port); gp=$(port)
    "$bin" mock --listen 127.0.0.1:"$mp" --latency-ms 0 2>/dev/null & mpid=$!
    valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --listen 127.0.0.1:"$gp" \
        --threads 1 --upstream "http://127.0.0.1:$mp/v1" --data-dir none $GW_ARGS \
        2>/dev/null & gpid=$!
    for _ in $(seq 600); do curl -s -o /dev/null "127.0.0.1:$gp/healthz" && break; sleep 0.1; done
    python3 - "$gp" "$hits" "${AE:-identity}" <<'PY'
import http.client, json, sys
port, n, ae = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bench " * 100}]})
for i in range(n + 1):
    c.request("POST", "/v1/chat/completions", body,
              {"Content-Type": "application/json", "Accept-Encoding": ae})
    r = c.getresponse()
    r.read()
    assert r.status == 200 and (i == 0 or r.getheader("X-Cache") == "HIT"), r.status
PY
    kill -TERM "$gpid"; wait "$gpid" || true
    kill "$mpid"; wait "$mpid" 2>/dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

for bin in "$@"; do
    base=$(count "$bin" 0)
    total=$(count "$bin" "$N")
    echo "$bin [$GW_ARGS${AE:+; Accept-Encoding: $AE}]: $(( (total - base) / N )) instructions per hit (N=$N; $base for start, one miss and stop)"
done
