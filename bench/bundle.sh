#!/bin/bash
# bench/bundle.sh [BIN]: puts llmcached (default: build/bench/llmcached), wrk and
# taskset in .devbench/ with every library they link, the loader included, and
# wrappers in .devbench/bin that run them through that loader, so that
# bench/borrowed.sh can run on a machine that has none of Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/bench/llmcached}
rm -rf .devbench
mkdir -p .devbench/lib .devbench/libexec .devbench/bin
cp "$bin" "$(command -v wrk)" "$(command -v taskset)" .devbench/libexec/
# The stampede client, when make bench built it, runs beside llmcached.
[ -x "$(dirname "$bin")/burst" ] && cp "$(dirname "$bin")/burst" .devbench/bin/
for f in $(ldd .devbench/libexec/* | awk '/=>/ {print $3} /ld-linux/ {print $1}' | sort -u); do
    cp -L "$f" .devbench/lib/
done
for b in llmcached wrk taskset; do
    printf '#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")/..\nexec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" "$d/libexec/%s" "$@"\n' "$b" >.devbench/bin/$b
    chmod +x .devbench/bin/$b
done
git rev-parse --short HEAD >.devbench/COMMIT
du -sh .devbench
