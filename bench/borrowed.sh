#!/bin/bash
# bench/borrowed.sh: issue 6's many-core measurements on a borrowed machine that
# has no Debian packages (no wrk, no libuv): the thread-scaling run
# (bench/scale.sh's table) and the stampede and 10,000-miss workloads, with an
# open-file limit high enough for 10,000 client plus 10,000 upstream sockets.
# It runs the binaries that bench/bundle.sh put in .devbench/ (built here,
# carried with the libraries they link, loader included). Results go to
# $OUT (or /tmp/llmc-borrowed): RESULTS.md with the sections, and the logs.
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/llmc-borrowed}
mkdir -p "$out"
export PATH=$PWD/.devbench/bin:$PATH PYTHONUNBUFFERED=1 PERF=0
export BENCH_COMMIT=${BENCH_COMMIT:-$(cat .devbench/COMMIT 2>/dev/null || echo '?')}
export RESULTS=$out/RESULTS.md
echo "borrowed: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo), Linux $(uname -r), commit $BENCH_COMMIT"
ulimit -n 65536 || echo "borrowed: open-file limit stays at $(ulimit -n)"
cp bench/RESULTS.md "$RESULTS"
bin=$PWD/.devbench/bin/llmcached
python3 bench/side_by_side.py "$bin" --scale 2>&1 | tee "$out/scale.log"
WORKLOADS=${WORKLOADS:-stampede,misses} python3 bench/side_by_side.py "$bin" 2>&1 | tee "$out/workloads.log"
