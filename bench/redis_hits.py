#!/usr/bin/env python3
"""What a hit through the shared Redis tier costs beside a memory hit.

Starts a redis-server, the mock model and two gateways (one loop each) on free
ports. Gateway A answers N questions (the fills); gateway B then asks each of
them twice, one after another: the first is a Redis hit (B's memory is cold),
the second a memory hit. Prints the client-side median and p99 of each, and
the gateway's own Redis lookup latency from /stats (tiers.redis.latency).
Sequential, one client: it measures latency, not throughput.

  python3 bench/redis_hits.py [N]      (build/llmcached, redis-server on PATH)
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ.get("LLMC_BIN", os.path.join(os.path.dirname(__file__), "..", "build", "llmcached"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
# Straight to 127.0.0.1, whatever http_proxy says.
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url):
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} not up")


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
        return time.perf_counter() - t0, r.headers


def main():
    tmp = tempfile.mkdtemp()
    procs = []
    try:
        rp, mp, ap, bp = (free_port() for _ in range(4))
        procs.append(subprocess.Popen(["redis-server", "--port", str(rp), "--bind", "127.0.0.1",
                                       "--save", "", "--dir", tmp], stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([BIN, "mock", "--listen", f"127.0.0.1:{mp}", "--latency-ms", "0"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait(f"http://127.0.0.1:{mp}/mock/stats")
        for port in (ap, bp):
            procs.append(subprocess.Popen(
                [BIN, "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{mp}/v1",
                 "--threads", "1", "--redis", f"redis://127.0.0.1:{rp}", "--access-log", "off"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"gw{port}.log"), "w")))
            wait(f"http://127.0.0.1:{port}/stats")
        time.sleep(0.3)
        bodies = [{"model": "gpt-4o-mini",
                   "messages": [{"role": "user", "content": f"bench {i} {time.time()}"}]}
                  for i in range(N)]
        for b in bodies:
            post(f"http://127.0.0.1:{ap}/v1/chat/completions", b)
        time.sleep(0.5)
        redis_t, mem_t = [], []
        for b in bodies:
            t, h = post(f"http://127.0.0.1:{bp}/v1/chat/completions", b)
            assert "detail=redis" in h.get("Cache-Status", ""), h.get("Cache-Status")
            redis_t.append(t)
            t, h = post(f"http://127.0.0.1:{bp}/v1/chat/completions", b)
            assert h["X-Cache"] == "HIT" and "detail" not in h.get("Cache-Status", "")
            mem_t.append(t)
        st = json.load(urllib.request.urlopen(f"http://127.0.0.1:{bp}/stats"))["tiers"]["redis"]
        lat = st["latency"]

        def q(v, p):
            return sorted(v)[min(len(v) - 1, int(p * len(v)))] * 1e6
        print(f"{N} questions, one client, sequential (client-side, microseconds)")
        print(f"  memory hit: median {statistics.median(mem_t) * 1e6:7.0f}  p99 {q(mem_t, .99):7.0f}")
        print(f"  Redis hit:  median {statistics.median(redis_t) * 1e6:7.0f}  p99 {q(redis_t, .99):7.0f}")
        print(f"  gateway's Redis lookup (GET sent -> answer): mean "
              f"{lat['sum_us'] / max(1, lat['lookups']):.0f} us over {lat['lookups']}, "
              f"max {lat['max_us']} us")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    main()
