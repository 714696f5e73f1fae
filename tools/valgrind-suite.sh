#!/bin/sh
# tools/valgrind-suite.sh: the integration suite with every gateway under
# valgrind memcheck. A gateway with an invalid access, a use of uninitialised
# memory or a definite leak exits with status 99, which the suite's `procs`
# fixture reports as "did not shut down cleanly" with valgrind's report (the
# gateway's stderr) attached to the failing test.
#
#   tools/valgrind-suite.sh                    the default subset (below)
#   tools/valgrind-suite.sh tests/integration/test_gateway.py -k ttl
#   make valgrind [VALGRIND_TESTS="..."]
#
# Decisions a newcomer would otherwise get wrong:
# - Only the gateway is wrapped (conftest.py's $LLMC_WRAP); the mock runs
#   natively, so faults and latencies stay what the tests expect.
# - The binary must be the plain build (build/llmcached): an ASan binary does
#   not run under valgrind.
# - Under valgrind the gateway is 20-50x slower. The default run is the whole
#   integration suite but its scale-bound tests ($VALGRIND_DESELECT), about
#   7 minutes on 2 cores; timing assertions there have held under valgrind.
set -eu
cd "$(dirname "$0")/.."
BIN=${LLMC_BIN:-$PWD/build/llmcached}
case "$BIN" in /*) ;; *) BIN=$PWD/$BIN ;; esac
if [ ! -x "$BIN" ]; then echo "valgrind-suite: no binary at $BIN (run make)" >&2; exit 2; fi
if grep -q libasan "$BIN" 2>/dev/null || ldd "$BIN" 2>/dev/null | grep -q libasan; then
    echo "valgrind-suite: $BIN is an ASan build; use the plain build/llmcached" >&2; exit 2
fi
command -v valgrind >/dev/null || { echo "valgrind-suite: apt-get install valgrind" >&2; exit 2; }

VG="valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
    --error-exitcode=99 --num-callers=30 --fair-sched=yes --suppressions=$PWD/tools/valgrind.supp"

# Scale-bound tests (a thousand slow misses, 2,000 idle connections, a 50 MB
# answer, a memory flood, the bench): minutes under valgrind and nothing a
# smaller test does not already run through the same code. Timing-bound
# tests (first streamed event within a millisecond, relay and pacing
# intervals, start-up under a second, a retry racing an upstream that comes
# back, a reader kept at a few MB/s against a 300 ms send timeout) measure
# speed, which valgrind's slowdown makes meaningless; their code paths run in
# the other streaming, disk and retry tests, and in the unit tests.
DESELECT=${VALGRIND_DESELECT:-"thousand or memory_bound or huge or idle_connections or bench_smoke
or relayed_live or within_a_millisecond or pacing or start_with_20000 or comes_back
or slow_steady_reader or stops_reading_a_stream"}

# pytest's -k takes one line: the list above is folded for reading.
DESELECT=$(printf '%s' "$DESELECT" | tr -s ' \n' '  ')
if [ $# -eq 0 ]; then
    set -- tests/integration -k "not ($DESELECT)"
fi

export LLMC_BIN="$BIN" LLMC_WRAP="$VG" LLMC_START_TIMEOUT=${LLMC_START_TIMEOUT:-60}
echo "valgrind-suite: $BIN under: $VG" | tr -s ' \n' ' '; echo
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
