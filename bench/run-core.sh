#!/bin/bash
# bench/run-core.sh BIN [--smoke]: issue 2's measurements, never pass/fail.
#   1. hit throughput and p50/p99 latency at 64 connections for a ~1 KB cached
#      chat completion (wrk -t1 -c64, bench/hit.lua), and the gateway's CPU time
#      per request (utime+stime from /proc/PID/stat, before and after);
#   2. the wall time of 1,000 distinct concurrent misses against a 2 s upstream
#      (bench/misses.py).
# Everything runs on 127.0.0.1 with free ports: a stand-alone `llmcached mock`
# and a gateway in front of it. --smoke runs each step for about a second
# (a test checks the bench still runs). Environment: THREADS (gateway
# threads, default 2), DURATION (wrk seconds, default 10), MISSES (default 1000),
# MOCK_MS (upstream delay for the misses, default 2000).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=""
SMOKE=0
for a in "$@"; do
    case "$a" in
        --smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) BIN=$a ;;
    esac
done
BIN=${BIN:-${LLMC_BIN:-$here/../build/llmcached}}
[ -x "$BIN" ] || { echo "run-core: no llmcached binary at '$BIN'" >&2; exit 2; }
command -v wrk >/dev/null || { echo "run-core: wrk not installed (apt-get install wrk)" >&2; exit 2; }
PY=/usr/bin/python3
THREADS=${THREADS:-2}
if [ "$SMOKE" = 1 ]; then
    DURATION=1; MISSES=${MISSES:-100}; MOCK_MS=${MOCK_MS:-500}
else
    DURATION=${DURATION:-10}; MISSES=${MISSES:-1000}; MOCK_MS=${MOCK_MS:-2000}
fi
ulimit -n 8192 2>/dev/null || true

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_ok() {  # URL PID NAME: poll until 200, at most 10 s
    for _ in $(seq 200); do
        kill -0 "$2" 2>/dev/null || { echo "run-core: $3 exited:" >&2; cat "$tmp/$3.err" >&2; exit 1; }
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0
        sleep 0.05
    done
    echo "run-core: $3 not ready at $1 within 10 s" >&2; cat "$tmp/$3.err" >&2; exit 1
}
cpu_ticks() {  # utime + stime of PID, in clock ticks (fields 14 and 15 after the comm field)
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
stat_field() {  # /stats field
    curl -s "$1/stats" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['$2'])"
}

mport=$(free_port)
"$BIN" mock --listen "127.0.0.1:$mport" --latency-ms "$MOCK_MS" >/dev/null 2>"$tmp/mock.err" &
pids+=($!); mpid=$!
wait_ok "http://127.0.0.1:$mport/mock/stats" "$mpid" mock

gport=$(free_port)
gw="http://127.0.0.1:$gport"
"$BIN" --listen "127.0.0.1:$gport" --upstream "http://127.0.0.1:$mport/v1" --threads "$THREADS" \
    --access-log off >/dev/null 2>"$tmp/gateway.err" &
pids+=($!); gpid=$!
wait_ok "$gw/healthz" "$gpid" gateway

# Warm the entry that hit.lua asks for, and check that it is a hit.
body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$here/hit.lua")
curl -s -o /dev/null -H 'Content-Type: application/json' -d "$body" "$gw/v1/chat/completions"
xc=$(curl -s -D - -o "$tmp/hit.body" -H 'Content-Type: application/json' -d "$body" \
      "$gw/v1/chat/completions" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
size=$(wc -c <"$tmp/hit.body")
[ "$xc" = HIT ] || echo "run-core: warning: warm-up request answered X-Cache: '$xc', not HIT" >&2

hits0=$(stat_field "$gw" hits)
cpu0=$(cpu_ticks "$gpid")
wrk -t1 -c64 -d"${DURATION}s" --latency -s "$here/hit.lua" "$gw" >"$tmp/wrk.out" 2>&1 || {
    cat "$tmp/wrk.out" >&2; exit 1; }
cpu1=$(cpu_ticks "$gpid")
hits1=$(stat_field "$gw" hits)
hz=$(getconf CLK_TCK)

rps=$(awk '/^Requests\/sec:/{print $2}' "$tmp/wrk.out")
reqs=$(awk '/requests in/{print $1}' "$tmp/wrk.out")
p50=$(awk '$1=="50%"{print $2}' "$tmp/wrk.out")
p99=$(awk '$1=="99%"{print $2}' "$tmp/wrk.out")
errs=$(awk '/Non-2xx|Socket errors/{printf "%s ", $0}' "$tmp/wrk.out")
cpu_us=$(awk -v t=$((cpu1 - cpu0)) -v hz="$hz" -v n="$reqs" 'BEGIN{ printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
echo "hit: $rps req/s, p50 $p50, p99 $p99, cpu $cpu_us us/req" \
     "(wrk -t1 -c64 -d${DURATION}s, $size-byte answer, $THREADS gateway threads, $reqs requests," \
     "$((hits1 - hits0)) counted as hits by /stats)${errs:+ [$errs]}"

"$PY" "$here/misses.py" --gateway "$gw" --n "$MISSES" --upstream-ms "$MOCK_MS"
kill -0 "$gpid" 2>/dev/null || { echo "run-core: the gateway died" >&2; cat "$tmp/gateway.err" >&2; exit 1; }
