#!/bin/bash
# bench/hit_syscalls.sh BIN [BIN2 ...]: write system calls and CPU time per
# cache hit, read from /proc/PID/io (syscw) and /proc/PID/stat (utime,
# stime) of the gateway around N hits. callgrind (hit_instructions.sh)
# counts user-space instructions only; what a blocking write per request
# costs is mostly in the kernel, and shows here: syscw counts every write,
# writev and send, so a hit that writes its answer and an access-log line
# makes two, and a buffered log about one. CPU times move with the
# machine's load (clock ticks, 10 ms each): take them as indications.
#
# Each binary runs as `--threads 1 --data-dir none` plus $GW_ARGS (default
# `--access-log off`) in front of its own mock; one miss, then N identical
# hits (a 1 KB chat answer) on one keep-alive connection.
# Environment: N (hits, default 20000), GW_ARGS (more gateway flags).
set -euo pipefail
N=${N:-20000}
GW_ARGS=${GW_ARGS---access-log off}
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
snap() { # syscw utime+stime(ticks) of pid $1
    echo "$(awk '/^syscw:/ {print $2}' /proc/"$1"/io) $(awk '{print $14 + $15}' /proc/"$1"/stat)"
}
for bin in "$@"; do
    mp=$(port); gp=$(port)
    "$bin" mock --listen 127.0.0.1:"$mp" --latency-ms 0 2>/dev/null & mpid=$!
    "$bin" --listen 127.0.0.1:"$gp" --threads 1 --upstream "http://127.0.0.1:$mp/v1" \
        --data-dir none $GW_ARGS >/dev/null 2>&1 & gpid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$gp/healthz" && break; sleep 0.1; done
    read -r w0 t0 w1 t1 < <(python3 - "$gp" "$N" "$gpid" <<'PY'
import http.client, json, sys
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def snap():
    io = dict(l.split(": ") for l in open(f"/proc/{pid}/io").read().splitlines())
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(io["syscw"]), int(st[11]) + int(st[12])
c = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bench " * 100}]})
def req():
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    return r
req()
w0, t0 = snap()
for _ in range(n):
    assert req().getheader("X-Cache") == "HIT"
w1, t1 = snap()
print(w0, t0, w1, t1)
PY
)
    kill -TERM "$gpid"; wait "$gpid" || true
    kill "$mpid"; wait "$mpid" 2>/dev/null || true
    hz=$(getconf CLK_TCK)
    awk -v b="$bin" -v a="$GW_ARGS" -v n="$N" -v w="$((w1 - w0))" -v t="$((t1 - t0))" -v hz="$hz" \
        'BEGIN { printf "%s [%s]: %.3f writes per hit, %.1f us CPU per hit (N=%d)\n",
                 b, a, w / n, t * 1e6 / hz / n, n }'
done
