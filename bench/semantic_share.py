#!/usr/bin/env python3
"""What sharing semantic entries through Redis costs a gateway that starts
late (issue 19 with issue 15): how long it takes, and how much of its CPU,
to catch up with N questions from the stream <prefix>semantic.

Everything on 127.0.0.1, started here on free ports and stopped at the end:
a redis-server, the mock model and gateways with --semantic on --redis
--threads 1. Gateway A answers N distinct questions (CONC clients at once),
which it publishes; once the stream holds N, gateway C starts and the clock
runs until its /stats says semantic peer/indexed == N. CPU is C's own
(utime + stime from /proc/PID/stat) over the same span, start-up included.
Then one near-duplicate asked on C must be a SEMANTIC-HIT.

  python3 bench/semantic_share.py [--n N] [--conc C]
  (build/llmcached or $LLMC_BIN; redis-server on PATH)
"""
import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

BIN = os.path.abspath(os.environ.get("LLMC_BIN", os.path.join(os.path.dirname(__file__), "..",
                                                              "build", "llmcached")))
TCK = os.sysconf("SC_CLK_TCK")
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))
TOKEN = "bench-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def http(url, body=None, headers=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--perf", help="record gateway C with perf record -g into this file")
    a = ap.parse_args()
    procs = []
    tmp = tempfile.mkdtemp(prefix="llmc-semshare-")
    env = {"PATH": os.environ["PATH"], "LLMC_UPSTREAM_KEY": "sk-bench",
           "LLMC_ADMIN_TOKEN": TOKEN, "NO_PROXY": "127.0.0.1"}
    try:
        rport, mport = free_port(), free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind",
                                       "127.0.0.1", "--save", "", "--dir", tmp],
                                      stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen([BIN, "mock", "--listen", f"127.0.0.1:{mport}", "--latency-ms", "0"],
                                      stderr=subprocess.DEVNULL))
        wait(lambda: redis_cli(rport, "PING") == "PONG", 5, "redis")

        def gateway(wrap=()):
            port = free_port()
            p = subprocess.Popen([*wrap, BIN, "--listen", f"127.0.0.1:{port}", "--upstream",
                                  f"http://127.0.0.1:{mport}/v1", "--threads", "1",
                                  "--semantic", "on", "--redis", f"redis://127.0.0.1:{rport}",
                                  "--redis-semantic-poll-ms", "50", "--max-memory", "1G"],
                                 env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            base = f"http://127.0.0.1:{port}"
            wait(lambda: http(base + "/stats", headers={"Authorization": "Bearer " + TOKEN})[0]
                 == 200, 10, "a gateway")
            return p, base

        def sem(base):
            return json.loads(http(base + "/stats",
                                   headers={"Authorization": "Bearer " + TOKEN})[2])[
                "tiers"]["semantic"]

        def ask(base, q):
            return http(base + "/v1/chat/completions",
                        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]})

        _, abase = gateway()
        qs = [f"What is the population of city number {i} in region {i * 7 % 97}?"
              for i in range(a.n)]
        f0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(a.conc) as ex:
            list(ex.map(lambda q: ask(abase, q), qs))
        fill = time.time() - f0
        # XADDs are dropped, like SETs, while A's connection is down (its
        # breaker trips when this machine is loaded): count what arrived.
        def settled():
            before = int(redis_cli(rport, "XLEN", "llmc:semantic"))
            time.sleep(0.5)
            return before == int(redis_cli(rport, "XLEN", "llmc:semantic"))
        wait(settled, 60, "the stream")
        n = int(redis_cli(rport, "XLEN", "llmc:semantic"))
        rs = json.loads(http(abase + "/stats", headers={"Authorization": "Bearer " + TOKEN})[2])[
            "tiers"]["redis"]
        if n != a.n:
            print(f"the stream holds {n} of {a.n} (A's Redis: {rs.get('breaker_trips')} breaker "
                  f"trips, {rs.get('timeouts')} timeouts)")
        t0 = time.time()
        cp, cbase = gateway(("perf", "record", "-g", "-o", a.perf) if a.perf else ())
        try:
            wait(lambda: sem(cbase)["peer"]["indexed"] >= n, 120, "C caught up")
        except SystemExit:
            print(json.dumps(sem(cbase)))
            raise
        dt, cpu = time.time() - t0, cpu_s(cp.pid)
        st = sem(cbase)
        _, h, _ = ask(cbase, "what is the population of city number 17 in region 22")
        print(f"N={n}: C indexed {st['peer']['indexed']} peers' questions in {dt:.2f} s wall "
              f"({dt / n * 1e6:.0f} us each), {cpu:.2f} s CPU ({cpu / n * 1e6:.0f} us each, "
              f"start-up included); refused {st['peer']['refused']}; near-duplicate: "
              f"{h.get('X-Cache')}; (A's fill took {fill:.1f} s); load average {os.getloadavg()[0]:.2f}")
    finally:
        for p in reversed(procs):
            p.send_signal(2 if a.perf else 15)
            p.wait(10)


if __name__ == "__main__":
    main()
