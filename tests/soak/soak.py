#!/usr/bin/python3
"""Soak: mixed traffic against llmcached for a set time; memory, file
descriptors and errors must stay flat.

    make soak DURATION=120                       # build/llmcached
    LLMC_BIN=build/san/llmcached make soak       # the ASan/UBSan build (what CI runs)
    /usr/bin/python3 tests/soak/soak.py --duration 1800 --clients 6

It starts `llmcached mock` and a gateway on free loopback ports and drives them
from a few client threads: hits, misses, no-store, short TTLs (entries expire
and the cache evicts under a small --max-memory), /ask, completions,
embeddings, streams, coalesced bursts, clients that hang up, malformed
requests, issue 14's worst bodies (at and one past --max-json-values),
and injected faults (reset, truncate, invalid JSON, empty, 429/500/
503, a stall past --upstream-timeout, a cut stream). Every ~20 s the mock is
killed and restarted on the same port. Now and then (issue 14) a big streaming miss is joined by
clients that never read (they must be dropped, --stream-max-lag, while a
reading client gets the whole stream); a probe asks for a cached hit every
0.2 s throughout, and its slowest answer must stay under --stall-bound-ms. A sampler reads the gateway's VmRSS and
its open descriptors (/proc/PID/fd) every few seconds.

At the end it asserts:
- every answer was the one expected for its kind (an injected fault's status
  for a fault; 502/504 only while the mock was restarting); none unexpected;
- the gateway never died, and exits cleanly on SIGTERM (so an ASan build's
  leak report fails the soak), with no sanitizer report in its stderr;
- RSS grew less than --rss-bound-mb from the second third of the run to the
  last (the first third is warm-up: the cache fills to --max-memory,
  allocator arenas settle). Each third is judged by its median sample: the
  traffic holds big transients on purpose (4 MB streams with their silent
  followers, the worst bodies), and one sample taken amid them says nothing
  about a leak, which raises the whole last third. Checked on a plain build
  only: ASan's allocator keeps freed memory per size class and thread and
  swings RSS by ~100 MB within seconds here whatever the gateway keeps (a
  plain build of the same code stays within a few MB); a sanitized run
  prints the figure, and its LeakSanitizer report at exit stands for it;
- the descriptor count after the traffic stops is back to the baseline taken
  before it started, plus at most --fd-slack (the upstream connection pool);
- the hit probe never waited longer than --stall-bound-ms (3x that for a
  sanitized gateway, several times slower at everything; the gateway stayed
  responsive while the worst bodies and the silent followers came).

Decisions a newcomer would otherwise get wrong:
- Traffic goes only to 127.0.0.1 and is bounded in time; each client thread
  has its own requests.Session (keep-alive, like a real client) with
  trust_env=False so no proxy variable can route it elsewhere.
- Under ASan, freed memory sits in a quarantine before reuse; it is capped
  (ASAN_OPTIONS quarantine_size_mb) so that RSS can be flat at all.
- A 502/504 is excused only when the request overlapped a restart window
  (from the kill to one second after the mock is back), never otherwise.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
SANITIZED_SLOWDOWN = 3  # the hit probe's bound under ASan/UBSan: --stall-bound-ms times this
WORST_VALUES = 50000  # the soak gateway's --max-json-values (issue 14's worst body)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session():
    s = requests.Session()
    s.trust_env = False
    return s


class Proc:
    def __init__(self, name, argv, tmp, env):
        self.name, self.argv = name, argv
        self.err_path = tmp / f"{name}.stderr"
        self.err = open(self.err_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=self.err, env=env)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def wait_ready(self, url, timeout):
        s = session()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise SystemExit(f"{self.name} exited with {self.p.returncode} at start:\n{self.tail()}")
            try:
                if s.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise SystemExit(f"{self.name} not ready at {url} within {timeout}s:\n{self.tail()}")

    def stop(self, timeout=20):
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
                return None
        self.err.flush()
        return self.p.returncode

    def tail(self, n=3000):
        self.err.flush()
        try:
            return self.err_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


def proc_rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Restarts:
    """The mock's restart windows, for excusing 502/504s that overlap them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.windows = []  # [start, end]; end None while down

    def begin(self):
        with self.lock:
            self.windows.append([time.monotonic(), None])

    def end(self):
        with self.lock:
            self.windows[-1][1] = time.monotonic() + 1.0

    def overlaps(self, t0, t1):
        with self.lock:
            for a, b in self.windows:
                if t1 >= a and (b is None or t0 <= b):
                    return True
        return False


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="llmc-soak-"))
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("LLMC_") and k != "OPENAI_API_KEY"}
        # Cap ASan's quarantine even when the caller set other ASAN_OPTIONS
        # (CI sets detect_leaks=1:abort_on_error=1): with the default 256 MB
        # quarantine, freed memory alone makes RSS climb for minutes.
        asan = self.env.get("ASAN_OPTIONS", "")
        if "quarantine_size_mb" not in asan:
            asan = (asan + ":" if asan else "") + "quarantine_size_mb=16"
        if "malloc_context_size" not in asan:
            asan += ":malloc_context_size=10"
        # ASan's allocator keeps freed memory per size class and thread; the
        # soak's big transients (4 MB streams, worst bodies) then swing RSS
        # by ~100 MB within seconds. Returning free pages to the system
        # every 500 ms lets RSS follow what is in use, as glibc's does.
        if "allocator_release_to_os_interval_ms" not in asan:
            asan += ":allocator_release_to_os_interval_ms=500"
        self.env["ASAN_OPTIONS"] = asan
        self.mock_port = free_port()
        self.gw_port = free_port()
        self.base = f"http://127.0.0.1:{self.gw_port}"
        self.restarts = Restarts()
        self.stop_evt = threading.Event()
        self.results = collections.defaultdict(collections.Counter)  # kind -> outcome -> n
        self.latency = collections.defaultdict(list)
        self.unexpected = []
        self.samples = []  # (t, rss_kb, fds, entries, bytes)
        self.probe_ms = []
        self.lock = threading.Lock()
        self.seq = 0
        self.mock = None
        self.gw = None
        self.died = None

    # ---- processes

    def start_mock(self):
        self.mock = Proc("mock", [self.args.bin, "mock", "--listen", f"127.0.0.1:{self.mock_port}",
                                  "--latency-ms", "0"], self.tmp, self.env)
        self.mock.wait_ready(f"http://127.0.0.1:{self.mock_port}/mock/stats", self.args.start_timeout)

    def start_gateway(self):
        self.gw = Proc("gateway", [
            self.args.bin, "--listen", f"127.0.0.1:{self.gw_port}",
            "--upstream", f"http://127.0.0.1:{self.mock_port}/v1",
            "--threads", "2", "--access-log", "off",
            "--ttl", "4", "--max-memory", self.args.max_memory, "--max-entry-percent", "10",
            "--upstream-timeout", "4", "--connect-timeout", "1",
            "--header-timeout", "5", "--idle-timeout", "30",
            "--max-json-values", str(WORST_VALUES),
            "--stream-max-lag", "256K", "--max-response-bytes", "64M",
        ], self.tmp, self.env)
        self.gw.wait_ready(self.base + "/healthz", self.args.start_timeout)

    def restarter(self):
        interval = self.args.restart_every
        while not self.stop_evt.wait(interval + self.rng.uniform(-2, 2)):
            self.restarts.begin()
            self.mock.stop(10)
            time.sleep(0.3)
            self.start_mock()
            self.restarts.end()
            with self.lock:
                self.results["mock-restart"]["ok"] += 1

    def sampler(self, t0):
        while not self.stop_evt.wait(self.args.sample):
            self.sample(t0)

    def sample(self, t0):
        if not self.gw.alive():
            self.died = f"gateway died with {self.gw.p.returncode}:\n{self.gw.tail()}"
            self.stop_evt.set()
            return
        try:
            st = session().get(self.base + "/stats", timeout=5).json()
        except (requests.RequestException, ValueError):
            st = {}
        self.samples.append((time.monotonic() - t0, proc_rss_kb(self.gw.pid), proc_fds(self.gw.pid),
                             st.get("entries", -1), st.get("bytes", -1)))

    # ---- traffic

    def body(self, text, **extra):
        b = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
        b.update(extra)
        return b

    def next_id(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def record(self, kind, outcome, t0, t1, detail=""):
        with self.lock:
            if outcome == "unexpected" and self.restarts.overlaps(t0, t1) and detail.startswith(("50", "conn")):
                outcome = "restart"
            self.results[kind][outcome] += 1
            self.latency[kind].append(t1 - t0)
            if outcome == "unexpected" and len(self.unexpected) < 50:
                self.unexpected.append((round(t0, 2), kind, detail[:300]))

    def post(self, s, kind, body, expect=(200,), headers=None, check=None, timeout=15):
        t0 = time.monotonic()
        try:
            r = s.post(self.base + CHAT if not kind.startswith("/") else self.base + kind,
                       json=body, headers=headers or {}, timeout=timeout)
        except requests.RequestException as e:
            self.record(kind, "unexpected", t0, time.monotonic(), f"conn: {e!r}")
            return None
        t1 = time.monotonic()
        ok = r.status_code in expect and (check is None or check(r))
        self.record(kind, "ok" if ok else "unexpected", t0, t1,
                    f"{r.status_code} {r.headers.get('X-Cache')} {r.text[:200]}")
        return r

    def op_hit(self, s):
        self.post(s, "hit", self.body(f"hot question {self.rng.randrange(self.args.hot)}"))

    def op_miss(self, s):
        self.post(s, "miss", self.body(f"fresh question {self.next_id()}"),
                  check=lambda r: r.headers.get("X-Cache") == "MISS")

    def op_no_store(self, s):
        self.post(s, "no-store", self.body(f"hot question {self.rng.randrange(self.args.hot)}"),
                  headers={"Cache-Control": "no-store"},
                  check=lambda r: r.headers.get("X-Cache") == "BYPASS")

    def op_short_ttl(self, s):
        self.post(s, "short-ttl", self.body(f"short-lived {self.rng.randrange(20)}"),
                  headers={"X-Cache-TTL": str(self.rng.choice([1, 2]))})

    def op_big(self, s):
        self.post(s, "big-answer", self.body(f"big {self.next_id()}",
                                             mock={"bytes": self.rng.choice([50_000, 200_000, 1_000_000])}))

    def op_ask(self, s):
        t0 = time.monotonic()
        try:
            r = s.get(self.base + "/ask", params={"q": f"ask {self.rng.randrange(30)}"}, timeout=15)
            ok = r.status_code == 200 and r.json().get("source") in ("llm", "cache")
            self.record("ask", "ok" if ok else "unexpected", t0, time.monotonic(), f"{r.status_code} {r.text[:200]}")
        except (requests.RequestException, ValueError) as e:
            self.record("ask", "unexpected", t0, time.monotonic(), f"conn: {e!r}")

    def op_completions(self, s):
        self.post(s, "/v1/completions", {"model": "gpt-3.5-turbo-instruct",
                                         "prompt": f"once {self.rng.randrange(40)}", "max_tokens": 8})

    def op_embeddings(self, s):
        self.post(s, "/v1/embeddings", {"model": "text-embedding-3-small",
                                        "input": f"text {self.rng.randrange(40)}"})

    def op_fault(self, s):
        name, ctl, expect = self.rng.choice([
            ("fault-reset", {"fault": "reset"}, (502,)),
            ("fault-truncate", {"fault": "truncate"}, (502,)),
            ("fault-invalid-json", {"fault": "invalid-json"}, (502,)),
            ("fault-empty", {"fault": "empty"}, (502,)),
            ("fault-429", {"status": 429}, (429,)),
            ("fault-500", {"status": 500}, (500,)),
            ("fault-503", {"status": 503}, (503,)),
        ])
        self.post(s, name, self.body(f"{name} {self.rng.randrange(5)}", mock=ctl), expect=expect,
                  check=lambda r: r.headers.get("X-Cache") != "HIT")

    def op_stall(self, s):
        self.post(s, "fault-stall", self.body(f"stall {self.next_id()}", mock={"fault": "stall"}),
                  expect=(504,))

    def stream(self, s, kind, body, want_done):
        t0 = time.monotonic()
        try:
            with s.post(self.base + CHAT, json=body, stream=True, timeout=15) as r:
                data = b""
                try:
                    for chunk in r.iter_content(8192):
                        data += chunk
                except requests.RequestException:
                    pass  # a cut stream ends without its last chunk
            done = b"data: [DONE]" in data
            ok = r.status_code == 200 and done == want_done and b"data: " in data
            self.record(kind, "ok" if ok else "unexpected", t0, time.monotonic(),
                        f"{r.status_code} done={done} {data[-120:]!r}")
        except requests.RequestException as e:
            self.record(kind, "unexpected", t0, time.monotonic(), f"conn: {e!r}")

    def op_stream(self, s):
        self.stream(s, "stream", self.body(f"stream {self.rng.randrange(50)}", stream=True), True)

    def op_cut_stream(self, s):
        self.stream(s, "fault-cut-stream",
                    self.body(f"cut {self.rng.randrange(5)}", stream=True, mock={"fault": "cut-stream"}),
                    False)

    def op_hang_up(self, s):
        """A client that sends a slow request and leaves before the answer."""
        t0 = time.monotonic()
        body = json.dumps(self.body(f"impatient {self.next_id()}", mock={"latency_ms": 300})).encode()
        try:
            with socket.create_connection(("127.0.0.1", self.gw_port), timeout=5) as c:
                c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                          b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                time.sleep(self.rng.uniform(0.01, 0.1))
            self.record("hang-up", "ok", t0, time.monotonic())
        except OSError as e:
            self.record("hang-up", "unexpected", t0, time.monotonic(), f"conn: {e!r}")

    def op_malformed(self, s):
        t0 = time.monotonic()
        try:
            r = s.post(self.base + CHAT, data=b'{"model": "x", "messages": [', timeout=10,
                       headers={"Content-Type": "application/json"})
            ok = r.status_code == 400 and "error" in r.json()
            self.record("malformed", "ok" if ok else "unexpected", t0, time.monotonic(), f"{r.status_code}")
        except (requests.RequestException, ValueError) as e:
            self.record("malformed", "unexpected", t0, time.monotonic(), f"conn: {e!r}")

    def op_worst_body(self, s):
        """Issue 14's worst body: {"model": .., "x": [{}, {}, ...]} with as many
        values as --max-json-values allows (parsed on the thread pool;
        only-if-cached, so 504), or one more (413, before any parse)."""
        over = self.rng.random() < 0.5
        n = WORST_VALUES + (1 if over else 0)
        head = '{"model":"worst-%d","x":[' % self.next_id()
        body = (head + ",".join(["{}"] * (n - 3)) + "]}").encode()
        t0 = time.monotonic()
        try:
            r = s.post(self.base + CHAT, data=body, timeout=30,
                       headers={"Content-Type": "application/json",
                                "Cache-Control": "only-if-cached"})
            ok = r.status_code == (413 if over else 504) and "error" in r.json()
            self.record("worst-body", "ok" if ok else "unexpected", t0, time.monotonic(),
                        f"{r.status_code} {r.text[:200]}")
        except (requests.RequestException, ValueError) as e:
            self.record("worst-body", "unexpected", t0, time.monotonic(), f"conn: {e!r}")

    def op_burst(self, s):
        """Identical cold requests at once: coalesced into one upstream call."""
        body = self.body(f"burst {self.next_id()}", mock={"latency_ms": 50})

        def one():
            self.post(session(), "coalesced-burst", body)
        ts = [threading.Thread(target=one) for _ in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)

    # ---- issue 14: silent stream followers, a hit probe

    def silent_followers(self):
        """Every --followers-every s, a 4 MB streaming miss that --followers
        clients join and never read (a tiny receive buffer, so the kernel
        does not hold the stream for them), and one client that reads it:
        the reader gets it all, each silent one is disconnected (or, when its
        kernel buffers took the whole answer before it fell behind, ended)."""
        n = self.args.followers
        while not self.stop_evt.wait(self.args.followers_every):
            t0 = time.monotonic()
            body = json.dumps(self.body(f"silent followers {self.next_id()}", stream=True,
                                        mock={"bytes": 4_000_000, "latency_ms": 300,
                                              "chunk_delay_ms": 3})).encode()
            req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                   b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            silent = []
            try:
                for _ in range(n):
                    c = socket.socket()
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    c.connect(("127.0.0.1", self.gw_port))
                    c.sendall(req)
                    silent.append(c)
                data = bytearray()  # appends in place: a reader that keeps up
                with socket.create_connection(("127.0.0.1", self.gw_port), timeout=30) as r:
                    r.sendall(req)
                    while not data.endswith(b"\r\n0\r\n\r\n"):
                        d = r.recv(1 << 20)
                        if not d:
                            break
                        data += d
                done = b"data: [DONE]" in data and data.endswith(b"\r\n0\r\n\r\n")
                dropped = whole = 0
                for c in silent:  # each must be ended by the gateway, not left hanging
                    c.settimeout(10)
                    got = bytearray()
                    try:
                        while d := c.recv(1 << 16):
                            got += d
                            if got.endswith(b"\r\n0\r\n\r\n"):
                                break
                        else:
                            dropped += 1
                    except ConnectionResetError:
                        dropped += 1
                    except OSError:
                        pass
                    # Its kernel buffers (the gateway's send buffer grows on
                    # loopback) took the whole answer before it fell
                    # --stream-max-lag behind: the gateway is done with it.
                    if got.endswith(b"\r\n0\r\n\r\n"):
                        whole += 1
                ok = done and dropped + whole == n
                t1 = time.monotonic()
                self.record("silent-followers",
                            "ok" if ok else "restart" if self.restarts.overlaps(t0, t1)
                            else "unexpected", t0, t1,
                            f"reader done={done} ({len(data)} bytes), {dropped}/{n} dropped, "
                            f"{whole} took the whole answer")
            except OSError as e:
                self.record("silent-followers", "unexpected", t0, time.monotonic(), f"conn: {e!r}")
            finally:
                for c in silent:
                    c.close()

    def hit_probe(self):
        """A cached hit every 0.2 s; its slowest answer is the soak's stall."""
        s = session()
        body = self.body("the probe's question")
        s.post(self.base + CHAT, json=body, timeout=15)
        while not self.stop_evt.wait(0.2):
            t0 = time.monotonic()
            try:
                r = s.post(self.base + CHAT, json=body, timeout=30)
                ok = r.status_code == 200
            except requests.RequestException:
                ok = False
            t1 = time.monotonic()
            with self.lock:
                self.probe_ms.append((t1 - t0) * 1000)
            if not ok and not self.restarts.overlaps(t0, t1):
                self.record("hit-probe", "unexpected", t0, t1, "the probe's hit failed")

    OPS = [  # (weight, op)
        (30, "op_hit"), (15, "op_miss"), (5, "op_no_store"), (8, "op_short_ttl"), (3, "op_big"),
        (4, "op_ask"), (3, "op_completions"), (3, "op_embeddings"), (6, "op_stream"),
        (7, "op_fault"), (1, "op_stall"), (2, "op_cut_stream"), (2, "op_hang_up"), (2, "op_malformed"),
        (1, "op_burst"), (1, "op_worst_body"),
    ]

    def client(self, idx):
        rng = random.Random(self.args.seed * 100 + idx)
        s = session()
        weights = [w for w, _ in self.OPS]
        names = [n for _, n in self.OPS]
        while not self.stop_evt.is_set():
            getattr(self, rng.choices(names, weights)[0])(s)
        s.close()

    # ---- run

    def run(self):
        a = self.args
        print(f"soak: {a.bin}, {a.duration:.0f} s, {a.clients} clients, seed {a.seed}, files in {self.tmp}")
        self.start_mock()
        self.start_gateway()
        sanitized = "libasan" in Path(f"/proc/{self.gw.pid}/maps").read_text()
        time.sleep(0.5)
        fd_base = proc_fds(self.gw.pid)
        rss_base = proc_rss_kb(self.gw.pid)
        t0 = time.monotonic()
        threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(a.clients)]
        threads.append(threading.Thread(target=self.restarter, daemon=True))
        for extra in (self.silent_followers, self.hit_probe):
            threads.append(threading.Thread(target=extra, daemon=True))
        threads.append(threading.Thread(target=self.sampler, args=(t0,), daemon=True))
        for t in threads:
            t.start()
        self.stop_evt.wait(a.duration)
        self.stop_evt.set()
        for t in threads:
            t.join(30)
        # Let what is in flight finish, then the last sample.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.gw.alive():
            try:
                if session().get(self.base + "/stats", timeout=5).json().get("in_flight", 0) == 0:
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        time.sleep(2.5)  # lingering closes (2 s) end
        self.sample(t0)
        fd_end = proc_fds(self.gw.pid) if self.gw.alive() else -1
        stats = {}
        try:
            stats = session().get(self.base + "/stats", timeout=5).json()
        except (requests.RequestException, ValueError):
            pass
        status = self.gw.stop(30)
        self.mock.stop(10)
        return self.report(sanitized, fd_base, fd_end, rss_base, stats, status)

    def report(self, sanitized, fd_base, fd_end, rss_base, stats, status):
        a = self.args
        print("\n%-20s %8s %8s %8s %10s %9s %9s" % ("kind", "count", "ok", "restart", "unexpected",
                                                   "p50 ms", "p99 ms"))
        total = collections.Counter()
        for kind in sorted(self.results):
            c = self.results[kind]
            lat = sorted(self.latency.get(kind, [])) or [0]
            n = sum(c.values())
            total.update(c)
            print("%-20s %8d %8d %8d %10d %9.1f %9.1f" % (
                kind, n, c["ok"], c["restart"], c["unexpected"], lat[len(lat) // 2] * 1000,
                lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000))
        print("%-20s %8d %8d %8d %10d" % ("total", sum(total.values()), total["ok"], total["restart"],
                                         total["unexpected"]))

        print("\n%8s %10s %6s %8s %10s" % ("t s", "RSS MB", "fds", "entries", "bytes"))
        for t, rss, fds, ent, byt in self.samples:
            print("%8.1f %10.1f %6d %8d %10d" % (t, rss / 1024, fds, ent, byt))

        failures = []
        if self.died:
            failures.append(self.died)
        if total["unexpected"]:
            failures.append(f"{total['unexpected']} unexpected answers, first ones:\n  " +
                            "\n  ".join(map(str, self.unexpected[:10])))
        if status not in (0, -signal.SIGTERM):
            failures.append(f"gateway exit status {status} after SIGTERM:\n{self.gw.tail()}")
        err = self.gw.tail(200000)
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in err:
                failures.append(f"sanitizer report in the gateway's stderr ({marker}):\n{self.gw.tail()}")
                break
        growth_mb = None
        middle = [s[1] for s in self.samples if a.duration / 3 <= s[0] < 2 * a.duration / 3]
        last = [s[1] for s in self.samples if s[0] >= 2 * a.duration / 3]
        if len(middle) >= 2 and len(last) >= 2:
            growth_mb = (statistics.median(last) - statistics.median(middle)) / 1024
            if growth_mb >= a.rss_bound_mb and not sanitized:
                failures.append(f"RSS grew {growth_mb:.1f} MB from the second third of the run "
                                f"to the last, by their medians (bound {a.rss_bound_mb} MB)")
        else:
            failures.append("too few samples for the RSS check (run longer)")
        if fd_end < 0 or fd_end > fd_base + a.fd_slack:
            failures.append(f"open descriptors {fd_base} before, {fd_end} after the traffic "
                            f"(slack {a.fd_slack})")
        probe = sorted(self.probe_ms) or [0]
        print("hit probe: %d hits, p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
            len(self.probe_ms), probe[len(probe) // 2],
            probe[min(len(probe) - 1, int(len(probe) * 0.99))], probe[-1]))
        # A sanitized gateway does everything several times slower (a 4 MB
        # answer's checks, a worst body's parse), as the timing tests that
        # make test skips under ASan say; a stall is seconds either way.
        bound = a.stall_bound_ms * (SANITIZED_SLOWDOWN if sanitized else 1)
        if probe[-1] > bound:
            failures.append(f"a cached hit waited {probe[-1]:.0f} ms (bound {bound:.0f} ms): "
                            "the gateway stalled")
        if total["ok"] < 100:
            failures.append(f"only {total['ok']} good answers: the soak did not really run")

        print("\nsummary: %d requests (%.0f/s), %d restarts of the mock, RSS %.1f MB at start, "
              "%.1f MB at the end, growth from the second third to the last (medians): %s MB; fds %d -> %d; %s; "
              "hits %s misses %s stored %s evicted %s/%s upstream_errors %s" % (
                  sum(total.values()) - self.results["mock-restart"]["ok"],
                  sum(total.values()) / max(a.duration, 1), self.results["mock-restart"]["ok"],
                  rss_base / 1024, (self.samples[-1][1] if self.samples else 0) / 1024,
                  f"{growth_mb:.1f}" if growth_mb is not None else "?", fd_base, fd_end,
                  "ASan/UBSan build" if sanitized else "plain build",
                  stats.get("hits"), stats.get("misses"), stats.get("stored"),
                  stats.get("evicted_size"), stats.get("evicted_ttl"), stats.get("upstream_errors")))
        if failures:
            print("\nSOAK FAILED:\n- " + "\n- ".join(failures) + f"\n(process logs in {self.tmp})")
            return 1
        shutil.rmtree(self.tmp, ignore_errors=True)
        print("\nsoak passed")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=120, help="seconds of traffic (default 120)")
    ap.add_argument("--bin", default=os.environ.get("LLMC_BIN") or str(ROOT / "build" / "llmcached"))
    ap.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--sample", type=float, default=3, help="seconds between samples (default 3)")
    ap.add_argument("--restart-every", type=float, default=20, help="seconds between mock restarts")
    ap.add_argument("--rss-bound-mb", type=float, default=20)
    ap.add_argument("--fd-slack", type=int, default=8,
                    help="descriptors above the baseline allowed at the end (upstream pool)")
    ap.add_argument("--max-memory", default="16M", help="the gateway's --max-memory")
    ap.add_argument("--hot", type=int, default=50, help="distinct hot questions")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("LLMC_TEST_SEED", "7")))
    ap.add_argument("--start-timeout", type=float, default=20)
    ap.add_argument("--followers-every", type=float, default=15,
                    help="seconds between big streams joined by silent followers")
    ap.add_argument("--followers", type=int, default=10, help="silent followers of each")
    ap.add_argument("--stall-bound-ms", type=float, default=1000,
                    help="the slowest the hit probe may answer")
    args = ap.parse_args()
    args.bin = str(Path(args.bin).resolve())
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"soak: no llmcached binary at {args.bin} (run make, or set LLMC_BIN)")
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
