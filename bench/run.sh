#!/bin/bash
# bench/run.sh BIN [--smoke]: issue 6's side-by-side benchmark (make bench).
# Measures llmcached against nginx proxy_cache, Varnish (bodyaccess), nginx
# returning a fixed body and the FastAPI tutorial app, all on 127.0.0.1; prints
# one table and writes it to bench/RESULTS.md. A full run installs the peers
# from Debian first (as root); --smoke installs nothing, skips the peers that
# are missing, runs every step for about a second and writes no RESULTS.md.
# Settings are environment variables: see bench/side_by_side.py's docstring.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
smoke=0
for a in "$@"; do
    case "$a" in
        --smoke) smoke=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    esac
done

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

install_peers() {
    local need=() p
    command -v nginx >/dev/null || need+=(nginx-light)
    for p in varnish varnish-modules python3-fastapi uvicorn python3-uvloop python3-httptools wrk; do
        installed "$p" || need+=("$p")
    done
    [ ${#need[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "bench: not root (or no apt-get): cannot install ${need[*]}; those peers are skipped" >&2
        return 0
    fi
    echo "bench: installing ${need[*]}" >&2
    # Keep the packages' own services (nginx on :80, varnish on :6081) from
    # starting: invoke-rc.d asks policy-rc.d, and 101 means "not now".
    local policy=/usr/sbin/policy-rc.d made=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } ||
        echo "bench: apt-get failed; the missing peers are skipped" >&2
    [ "$made" = 1 ] && rm -f "$policy"
    return 0
}

[ "$smoke" = 1 ] || install_peers

# 10,000 concurrent connections: the client, llmcached (clients + upstream
# connections) and the mock each need more than the usual 1024 descriptors.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec /usr/bin/python3 "$here/side_by_side.py" "$@"
