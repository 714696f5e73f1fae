#!/bin/sh
# Installs the Debian packages llmcached needs to build, run and test.
# Quiet when everything is present; apt-get runs only for what is missing.
#   scripts/deps.sh          what `make run` needs (build, run, most tests)
#   scripts/deps.sh --test   that and what only the tests use (`make test`):
#                            chromium, the browser the dashboard test drives
set -e
TEST_PKGS="chromium"
PKGS="build-essential pkg-config libuv1-dev libhttp-parser-dev libcurl4-openssl-dev
libjansson-dev libssl-dev liblmdb-dev lmdb-utils libhiredis-dev redis-server libcmocka-dev
python3 python3-pytest python3-requests python3-prometheus-client nodejs npm curl wrk
clang libclang-rt-14-dev valgrind libutf8proc-dev libstemmer-dev zlib1g-dev libzstd-dev libbrotli-dev"
[ "${1:-}" = "--test" ] && PKGS="$PKGS $TEST_PKGS"
[ -n "$LLMC_DEPS_EXTRA" ] && PKGS="$PKGS $LLMC_DEPS_EXTRA"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# node/npm may come from elsewhere (nodesource, nvm): accept any working binary.
case "$missing" in *nodejs*|*npm*)
    if command -v node >/dev/null && command -v npm >/dev/null; then
        missing=$(echo "$missing" | sed 's/ nodejs//; s/ npm//')
    fi;;
esac
[ -z "$(echo $missing)" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages:$missing (run as root, or install them)" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
