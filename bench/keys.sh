#!/bin/bash
# bench/keys.sh [BIN]: hit cost with one hot key against the same load spread
# over many keys, for each --threads count: where the one-key CPU per hit grows
# with threads and the many-key one does not, threads contend on the hot
# entry (its cache shard's lock, its fingerprint stripe, its reference count).
# From 4 cores up the server runs on cores 0..N-1 and wrk on the upper half.
# Environment: KEYS_THREADS (1,8), KEYS_MANY (256), DURATION (8), CONNS (256).
# Prints one line per run; a measurement, never pass/fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(readlink -f "${1:-build/bench/llmcached}")
ncpu=$(nproc); half=$((ncpu / 2))
dur=${DURATION:-8}; conns=${CONNS:-256}; many=${KEYS_MANY:-256}
wrk_t=$(( half > 0 ? half : 1 ))
port=$((20000 + RANDOM % 20000)); mport=$((port + 1))
"$bin" mock --listen 127.0.0.1:$mport --latency-ms 0 >/dev/null 2>&1 &
mock=$!
trap 'kill $mock 2>/dev/null' EXIT
ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
for t in $(echo "${KEYS_THREADS:-1,8}" | tr , ' '); do
    spin=""; wpin=""
    if [ "$ncpu" -ge 4 ] && [ "$t" -le "$half" ]; then
        spin="taskset -c 0-$((t - 1))"; wpin="taskset -c $half-$((ncpu - 1))"
    fi
    $spin "$bin" --listen 127.0.0.1:$port --upstream http://127.0.0.1:$mport/v1 --access-log off \
        --threads "$t" >/dev/null 2>&1 &
    gw=$!
    sleep 1
    for k in 1 "$many"; do
        # The first pass stores every key; the measured pass only hits.
        BENCH_KEYS=$k $wpin wrk -t"$wrk_t" -c"$conns" -d1s -s bench/wrk-keys.lua http://127.0.0.1:$port >/dev/null
        t0=$(ticks $gw)
        out=$(BENCH_KEYS=$k $wpin wrk -t"$wrk_t" -c"$conns" -d"${dur}s" -s bench/wrk-keys.lua \
              http://127.0.0.1:$port | grep '^KEYS')
        t1=$(ticks $gw)
        req=$(echo "$out" | sed 's/.*requests=\([0-9]*\).*/\1/')
        us=$(echo "$out" | sed 's/.*duration_us=\([0-9]*\).*/\1/')
        hz=$(getconf CLK_TCK)
        awk -v t="$t" -v k="$k" -v r="$req" -v us="$us" -v c0="$t0" -v c1="$t1" -v hz="$hz" -v o="$out" \
            'BEGIN { printf "keys: --threads %d, %d key(s): %.0f hits/s, %.1f us CPU/hit (%s)\n", t, k, r / (us / 1e6), (c1 - c0) / hz * 1e6 / r, o }'
    done
    kill $gw; wait $gw 2>/dev/null || true
done
