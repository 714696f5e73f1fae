#!/bin/sh
# tools/ci-fuzz.sh: what CI runs for fuzzing. Builds every libFuzzer driver in
# fuzz/ (clang, -fsanitize=fuzzer,address,undefined) and runs each for
# FUZZ_SECONDS (default 60), starting from its seed corpus (fuzz/corpus/NAME)
# and whatever earlier runs found (fuzz/build/corpus-NAME). Exits non-zero
# when any driver crashed, leaked, timed out or failed one of its checks; the
# failing input is in fuzz/build/fuzz_NAME-crash-* (replay: fuzz/build/fuzz_NAME FILE)
# and the log in fuzz/build/NAME.log.
set -eu
cd "$(dirname "$0")/.."
if ! command -v clang >/dev/null 2>&1; then
    echo "ci-fuzz: clang is needed (apt-get install clang)" >&2
    exit 2
fi
make -C fuzz -j"$(nproc 2>/dev/null || echo 2)" all
exec make -C fuzz run FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
