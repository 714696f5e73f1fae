#!/bin/bash
# bench/scale.sh [BIN] [--smoke]: llmcached's cache-hit throughput with
# --threads 1, 2, 4, 8 and 16 (issue 6's scaling run, meant for a 16-core
# machine; thread counts above the core count are left out, so a 2-core
# machine runs 1 and 2). wrk uses half the cores' worth of threads. From 4
# cores up the server is pinned to cores 0..N-1 and wrk to the upper half while
# N fits in the lower half; larger N share every core with wrk. Below 4 cores
# wrk keeps CPU 0 (CLIENT_CPU) as in make bench and the server floats
# (SCALE_PIN=0: nothing pinned). Prints a table and (unless --smoke) writes the "Thread
# scaling" section of bench/RESULTS.md. Environment: SCALE_THREADS (1,2,4,8,16),
# SCALE_ALL=1 (run every count anyway), SCALE_WRK_THREADS, SCALE_CONNS (256),
# SCALE_PIN, RUNS (3), DURATION (8), SIZES (first one used: 1024),
# BENCH_COMMIT (the commit to name where the tree has no .git).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for a in "$@"; do
    case "$a" in -h|--help) sed -n '2,13p' "$0"; exit 0 ;; esac
done
command -v wrk >/dev/null || { echo "scale: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
args=()
for a in "$@"; do args+=("$a"); done
[ ${#args[@]} -gt 0 ] && [[ "${args[0]}" != --* ]] || args=("$here/../build/bench/llmcached" "${args[@]}")
exec /usr/bin/python3 "$here/side_by_side.py" --scale "${args[@]}"
