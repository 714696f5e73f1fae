#!/usr/bin/env python3
"""What the shared Redis tier costs the gateway, and what it saves (issue 19).

Everything on 127.0.0.1, started here on free ports and stopped at the end:
redis-server(s), the mock model (`llmcached mock`) and gateways with one
event loop each (--threads 1, so one process's CPU is one loop's work).
CPU is the gateway process's own (utime + stime from /proc/PID/stat, read
before and after a load run), divided by the requests it served; wall time
and the load generator's CPU do not enter it.

  a. CPU per hit. Gateway A holds N answers in memory (256M); gateway B has
     --max-memory 64K (~120 entries of these) and asks the same N in a cycle,
     so every request misses its memory and is a Redis hit (then promoted,
     evicting an older one: the promotion is part of the Redis hit's cost).
     /stats confirms how many of B's answers came from Redis.
  b. Three gateways on a three-master Cluster (no replicas) over one trace:
     TRACE_N requests over DISTINCT questions, Zipf-like, sent round-robin to
     the three with CONC clients at once (mock latency 20 ms so stampedes
     overlap); then one gateway with no Redis serves the same trace (new
     salt, so new keys). Upstream calls from the mock's /mock/stats.
  c. Cost per miss: every request a new question (mock latency 0), through a
     gateway with and without --redis (the lease script, the fill's SET PX and
     its invalidation PUBLISH). CPU per miss and wrk's latency percentiles.

Load is wrk (one thread, CONNS connections, SECS seconds per run) with a Lua
script written here. Each CPU figure is measured ROUNDS times; the spread is
printed, because the machine may be shared.

With --syscalls, part a also attaches strace -c -f to each gateway for one
more run and prints the system calls per request (memory hit, Redis hit).

  python3 bench/redis_bench.py [--rounds R] [--secs S] [--quick] [--syscalls]
  (build/llmcached or $LLMC_BIN; redis-server, redis-cli and wrk on PATH)
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request

BIN = os.path.abspath(os.environ.get("LLMC_BIN", os.path.join(os.path.dirname(__file__), "..",
                                                              "build", "llmcached")))
TCK = os.sysconf("SC_CLK_TCK")
# Straight to 127.0.0.1, whatever http_proxy says.
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))

# Cycles through the bodies of BODIES_FILE (one JSON body a line), each wrk
# connection from its own offset; with UNIQUE_TAG set, every request is a new
# question instead. Prints the BENCH line main() reads.
LUA = r'''
local hdrs = { ["Content-Type"] = "application/json" }
local bodies = {}
local tag = os.getenv("UNIQUE_TAG")
local f = os.getenv("BODIES_FILE")
if f and f ~= "" then
   for line in io.lines(f) do table.insert(bodies, line) end
end
local i = 0
local salt = 0
function init(args) salt = math.random(1, 1000000000) end
function request()
   i = i + 1
   if tag and tag ~= "" then
      return wrk.format("POST", "/v1/chat/completions", hdrs, string.format(
         '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"%s %d %d"}]}', tag, salt, i))
   end
   return wrk.format("POST", "/v1/chat/completions", hdrs, bodies[(i % #bodies) + 1])
end
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.connect + e.read + e.write + e.status + e.timeout))
end
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
        return r.headers


def wait_until(pred, what, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")


def cpu_s(pid):
    """utime + stime of pid, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="redis_bench.")
        self.procs = []
        self.redises = []
        self.lua = os.path.join(self.tmp, "bench.lua")
        with open(self.lua, "w") as f:
            f.write(LUA)

    def spawn(self, argv, name):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(p)
        return p

    def stop(self, p):
        p.terminate()
        p.wait(10)
        self.procs.remove(p)

    def close(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def redis(self, *extra):
        port = free_port()
        d = os.path.join(self.tmp, f"r{port}")
        os.mkdir(d)
        p = self.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", d, *extra], f"redis{port}")
        p.port = port
        self.redises.append(p)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"],
                                          capture_output=True, text=True).stdout.strip() == "PONG",
                   f"redis on {port}")
        return port

    def stop_redises(self):
        for p in self.redises:
            self.stop(p)
        self.redises = []

    def mock(self, latency_ms):
        port = free_port()
        p = self.spawn([BIN, "mock", "--listen", f"127.0.0.1:{port}", "--latency-ms",
                        str(latency_ms)], f"mock{port}")
        p.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(p.url + "/mock/stats"), "mock")
        return p

    def gateway(self, mock, redis_url=None, *extra, connected=1):
        port = free_port()
        argv = [BIN, "--listen", f"127.0.0.1:{port}", "--upstream", mock.url + "/v1",
                "--threads", "1", "--access-log", "off", *extra]
        if redis_url:
            argv += ["--redis", redis_url]
        p = self.spawn(argv, f"gw{port}")
        p.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: get(p.url + "/stats"), "gateway")
        if redis_url:
            wait_until(lambda: get(p.url + "/stats")["tiers"]["redis"]["connected"] >= connected and
                       get(p.url + "/stats")["tiers"]["redis"]["invalidations"]["subscribed"],
                       "gateway's Redis connections")
        return p

    def wrk(self, gw, env):
        """One wrk run against gw; returns (requests, gateway CPU s, p50 us, p99 us)."""
        c0 = cpu_s(gw.pid)
        out = subprocess.run(["wrk", "-t1", f"-c{self.args.conns}", f"-d{self.args.secs}s",
                              "-s", self.lua, gw.url],
                             capture_output=True, text=True, timeout=self.args.secs + 30,
                             env={**os.environ, **env}).stdout
        cpu = cpu_s(gw.pid) - c0
        m = re.search(r"BENCH requests=(\d+) duration_us=\d+ p50_us=(\d+) p99_us=(\d+) errors=(\d+)",
                      out)
        if not m:
            raise SystemExit("wrk said:\n" + out)
        n, p50, p99, errs = map(int, m.groups())
        if errs:
            raise SystemExit(f"wrk counted {errs} errors:\n{out}")
        return n, cpu, p50, p99


def spread(v, fmt="{:.1f}"):
    return (f"median {fmt.format(statistics.median(v))} (min {fmt.format(min(v))}, "
            f"max {fmt.format(max(v))}, n={len(v)})")


def chat(content):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}


def check_hits(s0, s1, n, who):
    """The hits the gateway counted over a run (wrk's count leaves out the
    requests in the air when it stopped); every request must be a hit."""
    hits = s1["hits"] - s0["hits"]
    other = sum(s1[k] - s0[k] for k in ("misses", "coalesced", "bypasses", "stale"))
    if other or abs(hits - n) > 64:
        raise SystemExit(f"{who}: {hits} hits and {other} other requests, wrk counted {n}")
    return hits


def syscalls_per_request(b, gw, env):
    """System calls of gw's threads per request served, over one wrk run
    under strace -c -f (attached first, detached after)."""
    if not shutil.which("strace"):
        raise SystemExit("--syscalls: strace not on PATH")
    out = os.path.join(b.tmp, f"strace.{gw.pid}")
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(gw.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached to every thread before the load starts
    n, _, _, _ = b.wrk(gw, env)
    st.terminate()
    st.wait(10)
    with open(out) as f:
        m = re.search(r"^\S+\s+\S+\s+\S+\s+(\d+)\s+(?:\d+\s+)?total$", f.read(), re.M)
    if not m:
        raise SystemExit(f"--syscalls: no total in {out}")
    return int(m.group(1)) / n


def part_a(b, report):
    args = b.args
    rport = b.redis()
    mock = b.mock(0)
    url = f"redis://127.0.0.1:{rport}"
    # A lookup slower than --redis-timeout is a miss (an upstream call) and
    # would be counted in; on a loaded machine 50 ms is passed now and then.
    ga = b.gateway(mock, url, "--redis-timeout", "2s")
    gb = b.gateway(mock, url, "--max-memory", "64K", "--redis-timeout", "2s")
    salt = random.getrandbits(48)
    bodies = [chat(f"hit {salt} {i}") for i in range(args.hit_n)]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda body: post(ga.url + "/v1/chat/completions", body), bodies))
    wait_until(lambda: get(ga.url + "/stats")["tiers"]["redis"]["stored"] >= args.hit_n,
               "the fills stored in Redis")
    bf = os.path.join(b.tmp, "bodies")
    with open(bf, "w") as f:
        for body in bodies:
            f.write(json.dumps(body, separators=(",", ":")) + "\n")
    # One pass of B first: its memory then holds the ~120 most recent, as in
    # every later run.
    b.wrk(gb, {"BODIES_FILE": bf})
    mem, red, ratios, from_redis, mem_rps, red_rps = [], [], [], [], [], []
    for _ in range(args.rounds):
        s0 = get(ga.url + "/stats")
        n, cpu, _, _ = b.wrk(ga, {"BODIES_FILE": bf})
        s1 = get(ga.url + "/stats")
        n = check_hits(s0, s1, n, "A")
        m_us = cpu / n * 1e6
        mem_rps.append(n / args.secs)
        s0 = get(gb.url + "/stats")
        n, cpu, _, _ = b.wrk(gb, {"BODIES_FILE": bf})
        s1 = get(gb.url + "/stats")
        n = check_hits(s0, s1, n, "B")
        from_redis.append((s1["tiers"]["redis"]["hits"] - s0["tiers"]["redis"]["hits"]) / n)
        r_us = cpu / n * 1e6
        red_rps.append(n / args.secs)
        mem.append(m_us)
        red.append(r_us)
        ratios.append(r_us / m_us)
    report("a. gateway CPU per hit (one loop; %d answers cycled; wrk -t1 -c%d, %ds a run)"
           % (args.hit_n, args.conns, args.secs))
    report(f"   memory hit:            {spread(mem)} us")
    report(f"   Redis hit (mem cold):  {spread(red)} us   "
           f"(share from Redis: min {min(from_redis):.3f})")
    report(f"   hits/s, one loop:      memory {spread(mem_rps, '{:.0f}')}; "
           f"Redis {spread(red_rps, '{:.0f}')}")
    report(f"   ratio Redis/memory:    {spread(ratios, '{:.2f}')}   target <= 2")
    if args.syscalls:
        per = [syscalls_per_request(b, g, {"BODIES_FILE": bf}) for g in (ga, gb)]
        report(f"   syscalls per request:  memory {per[0]:.2f}; Redis {per[1]:.2f} "
               f"(strace -c -f, one run each)")
    for p in (gb, ga, mock):
        b.stop(p)
    b.stop_redises()
    report(f"   target: Redis hit <= 2x memory hit -> "
           f"{'met' if statistics.median(ratios) <= 2 else 'NOT met'} (median)")
    return ratios


def zipf_trace(n, distinct, seed):
    rng = random.Random(seed)
    w = [1.0 / (k + 1) for k in range(distinct)]
    return rng.choices(range(distinct), weights=w, k=n)


def run_trace(gws, trace, salt, conc):
    """Request i goes to gws[i % len(gws)], conc at a time; returns the X-Cache counts."""
    def one(i):
        h = post(gws[i % len(gws)].url + "/v1/chat/completions",
                 chat(f"trace {salt} q{trace[i]}"))
        return h["X-Cache"]
    with concurrent.futures.ThreadPoolExecutor(conc) as ex:
        seen = list(ex.map(one, range(len(trace))))
    return {k: seen.count(k) for k in sorted(set(seen))}


def part_b(b, report):
    args = b.args
    ports = [b.redis("--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                     "--cluster-port", str(free_port())) for _ in range(3)]
    p = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{x}" for x in ports],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise SystemExit(p.stdout + p.stderr)
    for x in ports:
        wait_until(lambda x=x: "cluster_state:ok" in subprocess.run(
            ["redis-cli", "-p", str(x), "CLUSTER", "INFO"], capture_output=True, text=True).stdout,
            f"cluster ok on {x}")
    url = "redis://" + ",".join(f"127.0.0.1:{x}" for x in ports)
    mock = b.mock(20)
    gws = [b.gateway(mock, url, connected=3) for _ in range(3)]
    trace = zipf_trace(args.trace_n, args.distinct, 19)
    distinct = len(set(trace))

    def calls():
        return get(mock.url + "/mock/stats")["chat"]
    c0 = calls()
    three = run_trace(gws, trace, random.getrandbits(48), args.conc)
    calls3 = calls() - c0
    leases = [get(g.url + "/stats")["tiers"]["redis"]["leases"] for g in gws]
    for g in gws:
        b.stop(g)
    one_gw = b.gateway(mock)
    c0 = calls()
    one = run_trace([one_gw], trace, random.getrandbits(48), args.conc)
    calls1 = calls() - c0
    b.stop(one_gw)
    b.stop(mock)
    b.stop_redises()

    def hit_rate(x):
        return (x.get("HIT", 0) + x.get("COALESCED", 0)) / len(trace)
    report(f"b. {len(trace)} requests over {distinct} distinct questions (Zipf s=1, "
           f"{args.conc} clients, mock 20 ms)")
    report(f"   three gateways, 3-master Cluster: upstream calls {calls3}, "
           f"hit rate {hit_rate(three):.3f} {three}")
    report(f"     leases won {sum(x['won'] for x in leases)}, waited "
           f"{sum(x['waited'] for x in leases)}, filled {sum(x['filled'] for x in leases)}, "
           f"none {sum(x['none'] for x in leases)}")
    report(f"   one gateway, no Redis:            upstream calls {calls1}, "
           f"hit rate {hit_rate(one):.3f} {one}")
    report(f"   target: equal calls -> {'met' if calls3 == calls1 else 'NOT met'}")
    return calls3, calls1


def check_misses(s0, s1, n, who):
    """The misses the gateway counted over a run; every request must be one."""
    misses = s1["misses"] - s0["misses"]
    other = sum(s1[k] - s0[k] for k in ("hits", "coalesced", "bypasses", "stale"))
    if other or abs(misses - n) > 64:
        raise SystemExit(f"{who}: {misses} misses and {other} other requests, wrk counted {n}")
    return misses


def part_c(b, report):
    args = b.args
    rport = b.redis()
    mock = b.mock(0)
    plain = b.gateway(mock)
    shared = b.gateway(mock, f"redis://127.0.0.1:{rport}")
    res = {"no Redis": ([], [], []), "--redis": ([], [], [])}
    rproc = next(p for p in b.redises if p.port == rport)
    rcpu = []
    for r in range(args.rounds):
        for name, gw in (("no Redis", plain), ("--redis", shared)):
            s0 = get(gw.url + "/stats")
            rc0 = cpu_s(rproc.pid)
            n, cpu, p50, p99 = b.wrk(gw, {"UNIQUE_TAG": f"miss{r}{name[0]}"})
            s1 = get(gw.url + "/stats")
            n = check_misses(s0, s1, n, name)
            res[name][0].append(cpu / n * 1e6)
            res[name][1].append(p50)
            res[name][2].append(p99)
            if name == "--redis":
                rcpu.append((cpu_s(rproc.pid) - rc0) / n * 1e6)
    report(f"c. cost per miss (every request a new question, mock 0 ms, wrk -t1 -c{args.conns})")
    for name, (cpu, p50, p99) in res.items():
        report(f"   {name:9s} gateway CPU/miss {spread(cpu)} us; latency p50 "
               f"{spread(p50, '{:.0f}')} us, p99 median {statistics.median(p99):.0f} us")
    report(f"   redis-server CPU per miss: {spread(rcpu)} us")
    d = [r - p for r, p in zip(res["--redis"][0], res["no Redis"][0])]
    report(f"   added by --redis: {spread(d)} us CPU per miss on the gateway")
    for p in (shared, plain, mock):
        b.stop(p)
    b.stop_redises()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--hit-n", type=int, default=2000)
    ap.add_argument("--trace-n", type=int, default=2000)
    ap.add_argument("--distinct", type=int, default=300)
    ap.add_argument("--conc", type=int, default=12)
    ap.add_argument("--parts", default="abc")
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke run)")
    ap.add_argument("--syscalls", action="store_true",
                    help="part a also counts the gateway's system calls per hit (strace -c -f "
                         "over one more run of each; strace slows it, so no CPU is taken then)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.secs, args.hit_n, args.trace_n, args.distinct = 1, 1, 400, 300, 60
    for tool in ("redis-server", "redis-cli", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not on PATH")
    b = Bench(args)

    def report(line):
        print(line, flush=True)
    report(f"redis_bench: {BIN}, {os.cpu_count()} CPUs, load average "
           f"{os.getloadavg()[0]:.1f} at start")
    # A target missed is printed ("NOT met"), not an exit status: the
    # figures are the point, and they move with the machine's load.
    try:
        if "a" in args.parts:
            part_a(b, report)
        if "b" in args.parts:
            part_b(b, report)
        if "c" in args.parts:
            part_c(b, report)
    finally:
        b.close()


if __name__ == "__main__":
    main()
