#!/usr/bin/python3
"""bench/side_by_side.py BIN [--smoke]: issue 6's side-by-side benchmark.

Run through bench/run.sh (which installs the peers and raises the open-file
limit first). Everything listens on 127.0.0.1 on free ports, as the current
user, with its own temporary directories, and is stopped at the end. It
measures; it never passes or fails (the exit status is 0 whenever it could
run; a peer that is not installed is skipped).

Workloads:
  1. cache hits: wrk -t1 pinned to CLIENT_CPU, the server pinned to SERVER_CPU,
     64 and 512 connections, 1 KB and 16 KB answers, the cache warmed first,
     the median of RUNS runs (the peers' runs interleaved); requests/s, p50/p99/p99.9 and the server's CPU
     time per request (utime+stime over the run, every process of the
     server); against llmcached, nginx proxy_cache, Varnish and nginx
     returning a fixed body; then GET /ask against the FastAPI tutorial app.
  2. the stampede: 100 identical cold requests at once against a MOCK_MS mock;
     upstream calls (the mock's /mock/stats) and wall time.
  3. MISSES (10,000) concurrent distinct misses against the MOCK_MS mock: wall
     time, errors, llmcached's peak resident memory (VmHWM).
  4. FILL_N (1,000,000) distinct small answers: resident memory per entry
     beyond its body.
Prints one Markdown table; a full run also writes bench/RESULTS.md (the
sections other scripts own, such as bench/scale.sh's, are kept).

Environment: RUNS (3), DURATION (wrk seconds per run, 8), WARMUP (1), THREADS
(llmcached's --threads for the pinned hit runs, 1: one core, like one nginx
worker), SIZES (1024,16384), CONNS (64,512), MOCK_MS (2000), MISSES (10000),
FILL_N (1000000), PEERS (comma list to run only some: llmcached, llmcached-nolog, nginx-cache,
varnish, nginx-fixed, fastapi), WORKLOADS (hits,ask,stampede,misses,fill: run
only some), PERF (1: perf record llmcached's 64-connection
1 KB run), SERVER_CPU (1), CLIENT_CPU (0), RESULTS (bench/RESULTS.md).
"""
import functools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The Python that runs helpers (misses.py, the FastAPI peer): Debian's, where the
# FastAPI packages are; elsewhere (a borrowed machine) whichever runs this script.
PY = os.environ.get("BENCH_PY") or ("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
HZ = os.sysconf("SC_CLK_TCK")

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SMOKE = "--smoke" in sys.argv[1:]
BIN = str(Path(ARGS[0] if ARGS else os.environ.get("LLMC_BIN", ROOT / "build/bench/llmcached")).resolve())


def env_int(name, full, smoke):
    return int(os.environ.get(name, smoke if SMOKE else full))


def env_list(name, full, smoke):
    return [int(x) for x in os.environ.get(name, smoke if SMOKE else full).split(",") if x]


RUNS = env_int("RUNS", 3, 1)
DURATION = env_int("DURATION", 8, 1)
WARMUP = env_int("WARMUP", 1, 0)
THREADS = env_int("THREADS", 1, 1)
SIZES = env_list("SIZES", "1024,16384", "1024")
CONNS = env_list("CONNS", "64,512", "64")
ASK_CONNS = env_list("ASK_CONNS", "64", "64")
MOCK_MS = env_int("MOCK_MS", 2000, 300)
MISSES = env_int("MISSES", 10000, 200)
FILL_N = env_int("FILL_N", 1000000, 5000)
STAMPEDE_N = env_int("STAMPEDE_N", 100, 100)
PERF = env_int("PERF", 1, 0) and shutil.which("perf") is not None
NCPU = os.cpu_count() or 1
SERVER_CPU = os.environ.get("SERVER_CPU", "1" if NCPU > 1 else "")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "0" if NCPU > 1 else "")
ONLY = set(os.environ["PEERS"].split(",")) if os.environ.get("PEERS") else None
RESULTS = Path(os.environ.get("RESULTS", HERE / "RESULTS.md"))
WORKLOADS = os.environ.get("WORKLOADS", "hits,ask,stampede,misses,fill").split(",")

TMP = Path(tempfile.mkdtemp(prefix="llmc-bench-"))
os.chmod(TMP, 0o755)  # nginx workers started by root run as nobody
PROCS = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

class Proc:
    """A server started in its own session, so that stop() reaches every
    process it forked."""

    def __init__(self, name, argv, env=None, cpu=None, cwd=None):
        self.name = name
        if cpu not in (None, "") and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu)] + argv
        self.errpath = TMP / f"{name}.log"
        self.err = open(self.errpath, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                  start_new_session=True, env=env, cwd=cwd)
        self.pid = self.p.pid
        PROCS.append(self)

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Whatever is left in its process group (a forked child) goes too.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.err.close()
        if self in PROCS:
            PROCS.remove(self)

    def tail(self):
        try:
            return self.errpath.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def stop_all():
    for p in list(PROCS):
        p.stop()


def tree(root):
    """root and its descendants, from /proc."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(root):
    """utime+stime of root and every descendant (each process's own threads
    included), in clock ticks."""
    total = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def vm_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(url, body=None, method=None, headers=None, timeout=30):
    """(status, headers, body) of one request; never raises for an HTTP status."""
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=body.encode() if isinstance(body, str) else body,
                                 headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_ready(proc, url, timeout=30):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if http(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url} in {timeout} s:\n{proc.tail()}")


def render(template, name, **subs):
    text = (HERE / "peers" / template).read_text()
    for k, v in subs.items():
        text = text.replace(f"@{k}@", str(v))
    out = TMP / name
    out.write_text(text)
    return out


# ---------------------------------------------------------------- peers

class Mock:
    def __init__(self, latency_ms):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc("mock", [BIN, "mock", "--listen", f"127.0.0.1:{self.port}",
                                  "--latency-ms", str(latency_ms)])
        wait_ready(self.proc, self.url + "/mock/stats")

    def calls(self):
        return json.loads(http(self.url + "/mock/stats")[2])["calls"]


def start_llmcached(mock, threads=THREADS, cpu=SERVER_CPU, extra=(), access_log=None):
    """access_log: a file to log to, as users run it; None: --access-log off."""
    port = free_port()
    p = Proc("llmcached", [BIN, "--listen", f"127.0.0.1:{port}",
                           "--upstream", f"http://127.0.0.1:{mock.port}/v1",
                           "--access-log", str(access_log) if access_log else "off",
                           "--threads", str(threads), *extra], cpu=cpu)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz")
    return p, port


def nginx_dir(tag):
    d = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=TMP))
    os.chmod(d, 0o755)
    return d


def start_nginx(tag, template, **subs):
    d = nginx_dir(tag)
    port = free_port()
    conf = render(template, f"{d.name}/nginx.conf", TMP=d, PORT=port, **subs)
    p = Proc(tag, [shutil.which("nginx"), "-p", f"{d}/", "-c", str(conf), "-e", f"{d}/error.log"],
             cpu=SERVER_CPU)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz")
    return p, port


def start_nginx_cache(mock):
    return start_nginx("nginx-cache", "nginx-cache.conf", MOCK_PORT=mock.port)


def start_nginx_fixed(body):
    """nginx returning `body`, cut into `map` variables of under 4 KB (nginx's
    limit on one configuration token)."""
    text = body.decode()
    if "$" in text:
        raise RuntimeError("the fixed body holds a '$', which nginx would read as a variable")
    d_vars, maps = [], []
    for i in range(0, len(text), 3000):
        part = text[i:i + 3000].replace("\\", "\\\\").replace("'", "\\'")
        d_vars.append(f"$fixed_{len(d_vars)}")
        maps.append(f"map $host {d_vars[-1]} {{\n    default '{part}';\n}}\n")
    p, port = None, None
    d = nginx_dir("nginx-fixed")
    (d / "fixed-body.conf").write_text("".join(maps))
    port = free_port()
    conf = render("nginx-fixed.conf", f"{d.name}/nginx.conf", TMP=d, PORT=port,
                  FIXED_VARS="".join(d_vars))
    p = Proc("nginx-fixed", [shutil.which("nginx"), "-p", f"{d}/", "-c", str(conf),
                             "-e", f"{d}/error.log"], cpu=SERVER_CPU)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz")
    st, _, got = http(f"http://127.0.0.1:{port}/v1/chat/completions", "{}")
    if got != body:
        log(f"bench: warning: nginx-fixed answers {len(got)} bytes, not the {len(body)} asked for")
    return p, port


def start_varnish(mock):
    d = Path(tempfile.mkdtemp(prefix="varnish-", dir=TMP))
    port = free_port()
    vcl = render("varnish.vcl", f"{d.name}/bench.vcl", MOCK_PORT=mock.port)
    p = Proc("varnish", [shutil.which("varnishd"), "-F", "-j", "none", "-n", str(d / "work"),
                         "-a", f"127.0.0.1:{port}", "-T", "none", "-f", str(vcl),
                         "-s", "malloc,256m",
                         # A worker thread per connection: start enough for 512
                         # connections at once (one pool, as there is one core), or
                         # connections queue while threads are added one by one.
                         "-p", "thread_pools=1", "-p", "thread_pool_min=600",
                         "-p", "thread_pool_max=5000"],
             cpu=SERVER_CPU)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz", timeout=60)
    return p, port


def start_fastapi(loop):
    port = free_port()
    http_impl = "httptools" if loop == "uvloop" else "h11"
    env = dict(os.environ, ASK_LLM_SECONDS=str(MOCK_MS / 1000))
    p = Proc(f"fastapi-{loop}", [PY, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(HERE / "peers"),
                                 "--host", "127.0.0.1", "--port", str(port), "--loop", loop,
                                 "--http", http_impl, "--no-access-log", "--log-level", "warning"],
             env=env, cpu=SERVER_CPU)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz")
    return p, port


def have(peer):
    if ONLY is not None and peer not in ONLY:
        return False
    need = {"nginx-cache": ["nginx"], "nginx-fixed": ["nginx"], "varnish": ["varnishd"],
            "fastapi": []}.get(peer, [])
    if not all(shutil.which(x) for x in need):
        return False
    if peer == "varnish":
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "varnish-modules"],
                           capture_output=True, text=True)
        return "ok installed" in r.stdout
    if peer == "fastapi":
        r = subprocess.run([PY, "-c", "import fastapi, uvicorn"], capture_output=True)
        return r.returncode == 0
    return True


def have_module(mod):
    return subprocess.run([PY, "-c", f"import {mod}"], capture_output=True).returncode == 0


# ---------------------------------------------------------------- measuring

def wrk(port, conns, duration, method="POST", path="/v1/chat/completions", body_file=None,
        threads=1, cpu=CLIENT_CPU):
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s",
            "-s", str(HERE / "wrk-bench.lua"), f"http://127.0.0.1:{port}"]
    if cpu not in (None, "") and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu)] + argv
    env = dict(os.environ, BENCH_METHOD=method, BENCH_PATH=path, BENCH_BODY_FILE=str(body_file or ""))
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    m = re.search(r"^BENCH (.*)$", r.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no BENCH line:\n{r.stdout}\n{r.stderr}")
    d = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    d["errors"] = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    return d


def measure(proc, port, conns, mock=None, **kw):
    """One measured wrk run: its figures plus the server's CPU time per request
    and the upstream calls made meanwhile (0 when every request was a hit)."""
    calls0 = mock.calls() if mock else 0
    t0 = cpu_ticks(proc.pid)
    d = wrk(port, conns, DURATION, **kw)
    t1 = cpu_ticks(proc.pid)
    d["cpu_us"] = (t1 - t0) / HZ * 1e6 / max(d["requests"], 1)
    d["upstream"] = (mock.calls() - calls0) if mock else 0
    if not proc.alive():
        raise RuntimeError(f"{proc.name} died during the run:\n{proc.tail()}")
    return d


def summarise(runs):
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("rps", "cpu_us", "p50_us", "p99_us", "p999_us", "requests")}
    med["errors"] = sum(r["errors"] for r in runs)
    med["upstream"] = sum(r["upstream"] for r in runs)
    med["runs"] = [round(r["rps"]) for r in runs]
    return med


def median_runs(proc, port, conns, mock=None, **kw):
    if WARMUP:
        wrk(port, conns, WARMUP, **kw)
    return summarise([measure(proc, port, conns, mock, **kw) for _ in range(RUNS)])


def interleaved(servers, conns, mock, what, **kw):
    """servers: [(key, proc, port)], all started. Run 1 of every server, then
    run 2 of every server, and so on, so that anything else the machine does
    meanwhile falls on all of them alike; returns {key: median figures}."""
    for key, proc, port in servers:
        if WARMUP:
            wrk(port, conns, WARMUP, **kw)
    runs = {key: [] for key, _, _ in servers}
    for i in range(RUNS):
        for key, proc, port in servers:
            r = measure(proc, port, conns, mock, **kw)
            runs[key].append(r)
            log(f"bench: {what}, {conns} conns, run {i + 1}/{RUNS}, {key}: {r['rps']:,.0f} req/s, "
                f"{r['cpu_us']:.1f} µs CPU/req, p99 {fmt_us(r['p99_us'])}, {r['errors']} errors, "
                f"{r['upstream']} upstream calls")
    return {key: summarise(v) for key, v in runs.items()}


def chat_body(size, content):
    return json.dumps({"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": content}],
                       "mock": {"bytes": size, "latency_ms": 0}}, separators=(",", ":"))


def warm(port, body, path="/v1/chat/completions", method="POST"):
    """Asks twice; returns the second answer's cache header and its size."""
    url = f"http://127.0.0.1:{port}{path}"
    for _ in range(2):
        st, h, b = http(url, body if method == "POST" else None, timeout=60)
    return st, h.get("x-cache", h.get("x-cache-status", "-")), len(b)


def perf_profile(proc, port, conns, body_file):
    """perf record -g of the server during one extra wrk run (not measured);
    returns the top 15 symbols by self time."""
    data = TMP / "perf.data"
    pr = subprocess.Popen(["perf", "record", "-g", "-F", "2999", "-o", str(data), "-p", str(proc.pid),
                           "--", "sleep", str(DURATION)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    try:
        wrk(port, conns, DURATION, body_file=body_file)
    finally:
        pr.wait(DURATION + 60)
    def report(sort, n):
        r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                            "--sort", sort, "-g", "none", "--percent-limit", "0.01"],
                           capture_output=True, text=True, timeout=300)
        return [l.strip() for l in r.stdout.splitlines() if l.strip() and not l.startswith("#")][:n]
    return report("dso,sym", 15) + ["", "By object:"] + report("dso", 8)


# ---------------------------------------------------------------- formatting

def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def met(ok):
    return "met" if ok else "**not met**"


ROWS = []
NOTES = []


def row(workload, peer, result="", ratio="", cpu="", p50="", p99="", p999="", errors="", target=""):
    ROWS.append([workload, peer, result, ratio, cpu, p50, p99, p999, errors, target])


def hit_rows(workload, results, ref="llmcached"):
    """results: [(peer key, label, figures)]; ratios against the ref row."""
    base = next((r for k, _, r in results if k == ref), None)
    for key, label, r in results:
        ratio = f"{r['rps'] / base['rps']:.2f}×" if base else ""
        cpu = f"{r['cpu_us']:.1f}" + (f" ({r['cpu_us'] / base['cpu_us']:.2f}×)" if base and key != ref else "")
        errs = str(r["errors"]) + (f", {r['upstream']} upstream calls" if r["upstream"] else "")
        target = ""
        if base and key == ref and workload.startswith("hit"):
            target = f"≤ 10 µs CPU/hit: {met(r['cpu_us'] <= 10)}"
        elif base and key == "llmcached-nolog":
            x = base["rps"] / r["rps"]
            target = f"logging within 5 % of log off: {met(x >= 0.95)} ({x:.2f}×)"
        elif base and key == "nginx-cache":
            x = base["rps"] / r["rps"]
            target = (f"llmcached ≥ 1.5×: {met(x >= 1.5)} ({x:.2f}×); "
                      f"p99 ≤ nginx: {met(base['p99_us'] <= r['p99_us'])}")
        elif base and key == "nginx-fixed":
            x = base["rps"] / r["rps"]
            target = f"llmcached ≥ 0.8× ceiling: {met(x >= 0.8)} ({x:.2f}×)"
        elif base and key == "fastapi-uvloop":
            x = base["rps"] / r["rps"]
            target = f"llmcached ≥ 5×: {met(x >= 5)} ({x:.1f}×)"
        row(workload, label, f"{r['rps']:,.0f} req/s", ratio, cpu, fmt_us(r["p50_us"]),
            fmt_us(r["p99_us"]), fmt_us(r["p999_us"]), errs, target)


def table():
    head = ["Workload", "Peer", "Result", "× llmcached", "CPU µs/req", "p50", "p99", "p99.9",
            "Errors", "Target (issue 6, informative)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in ROWS]
    return "\n".join(out)


def git_out(*args):
    """git's output in the repository, "" where there is no git or no .git
    (a copy of the tree run on a borrowed machine; BENCH_COMMIT names it)."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    rev = os.environ.get("BENCH_COMMIT") or git_out("rev-parse", "--short", "HEAD") or "?"
    dirty = not os.environ.get("BENCH_COMMIT") and git_out(
        "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md")
    return (f"{NCPU} CPUs ({model}), Linux {os.uname().release}, "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}, commit {rev}{' (with local changes)' if dirty else ''}")


def replace_section(text, name, body):
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    if begin in text and end in text:
        return text[:text.index(begin)] + block + text[text.index(end) + len(end) + 1:]
    return text.rstrip() + "\n\n" + block if text.strip() else block


# ---------------------------------------------------------------- workloads

# The hit workloads run llmcached as users run it (its access log to a file,
# the default being stdout) beside the same build with --access-log off (issue 18).
LABEL = {"llmcached": "llmcached (access log to a file)",
         "llmcached-nolog": "llmcached --access-log off", "nginx-cache": "nginx proxy_cache",
         "varnish": "Varnish + bodyaccess", "nginx-fixed": "nginx fixed string (ceiling)"}


def workload_hits(mock):
    for size in SIZES:
        body = chat_body(size, f"bench: a {size}-byte cached answer")
        body_file = TMP / f"body-{size}.json"
        body_file.write_text(body)
        answer = http(f"{mock.url}/v1/chat/completions", body)[2]
        servers = []
        try:
            for key in ("llmcached", "llmcached-nolog", "nginx-cache", "varnish", "nginx-fixed"):
                if not have(key):
                    log(f"bench: skipping {key} (not installed or not selected)")
                    continue
                if key == "llmcached":
                    proc, port = start_llmcached(mock, access_log=TMP / f"access-{size}.log")
                elif key == "llmcached-nolog":
                    proc, port = start_llmcached(mock)
                elif key == "nginx-cache":
                    proc, port = start_nginx_cache(mock)
                elif key == "varnish":
                    proc, port = start_varnish(mock)
                else:
                    proc, port = start_nginx_fixed(answer)
                servers.append((key, proc, port))
                st, xc, n = warm(port, body)
                if key != "nginx-fixed" and (st != 200 or xc != "HIT"):
                    log(f"bench: warning: {key}'s warm-up answered {st} {xc}, not a 200 HIT")
            for conns in CONNS:
                res = interleaved(servers, conns, mock, f"hits, {len(answer)}-byte answer",
                                  body_file=body_file)
                hit_rows(f"hit {size // 1024} KB ({len(answer)} B), {conns} conns",
                         [(k, LABEL[k], res[k]) for k, _, _ in servers])
                if PERF and servers and servers[0][0] == "llmcached" and size == SIZES[0] \
                        and conns == CONNS[0]:
                    log("bench: perf record of llmcached during one more run ...")
                    try:
                        PROFILE.extend(perf_profile(servers[0][1], servers[0][2], conns, body_file))
                    except (OSError, subprocess.SubprocessError) as e:
                        log(f"bench: perf failed: {e}")
        finally:
            for _, proc, _ in servers:
                proc.stop()


PROFILE = []


def workload_ask(mock):
    peers = [("llmcached", "llmcached GET /ask")]
    if have("fastapi"):
        peers.append(("fastapi-asyncio", "FastAPI, uvicorn plain (asyncio, h11)"))
        if have_module("uvloop"):
            best = "uvloop, httptools" if have_module("httptools") else "uvloop"
            peers.append(("fastapi-uvloop", f"FastAPI, uvicorn best ({best})"))
    else:
        log("bench: skipping the FastAPI app (python3-fastapi or uvicorn not installed)")
    servers, path = [], "/ask?q=What+is+a+cache%3F"
    try:
        for key, label in peers:
            if key == "llmcached":
                proc, port = start_llmcached(mock)
            else:
                proc, port = start_fastapi(key.split("-")[1])
            servers.append((key, proc, port))
            warm(port, None, path=path, method="GET")
        for conns in ASK_CONNS:
            res = interleaved(servers, conns, None, "/ask", method="GET", path=path)
            hit_rows(f"/ask hit, {conns} conns", [(k, label, res[k]) for k, label in peers])
    finally:
        for _, proc, _ in servers:
            proc.stop()


@functools.lru_cache(maxsize=None)
def stampede_client():
    """The stampede's client: bench/burst.c (built beside llmcached by make
    bench, else compiled here), whose own cost is a fraction of a millisecond;
    bench/stampede.py, which adds about 10 ms on 2 cores, only where no C
    compiler is at hand."""
    exe = Path(BIN).parent / "burst"
    if os.access(exe, os.X_OK):
        return (str(exe),)
    exe = TMP / "burst"
    if shutil.which("cc") and subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "burst.c")],
                                             capture_output=True).returncode == 0:
        return (str(exe),)
    NOTES.append("stampede: no C compiler, so the Python client (bench/stampede.py) ran; it adds "
                 "about 10 ms of its own to the wall times")
    return (PY, str(HERE / "stampede.py"))


def workload_stampede(mock):
    peers = [("mock", "no cache: the mock itself (reference)", "/v1/chat/completions"),
             ("llmcached", "llmcached", "/v1/chat/completions")]
    if have("nginx-cache"):
        peers += [("nginx-cache", "nginx proxy_cache", "/v1/chat/completions"),
                  ("nginx-cache", "nginx proxy_cache_lock on", "/lock/v1/chat/completions")]
    if have("varnish"):
        peers.append(("varnish", "Varnish + bodyaccess", "/v1/chat/completions"))
    ref_s = None
    for key, label, path in peers:
        if key == "mock":
            proc, port = None, mock.port
        elif key == "llmcached":
            proc, port = start_llmcached(mock, threads=0, cpu=None)
        elif key == "nginx-cache":
            proc, port = start_nginx_cache(mock)
        else:
            proc, port = start_varnish(mock)
        try:
            body = json.dumps({"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": f"stampede {label} {time.time_ns()}"}]})
            calls0 = mock.calls()
            r = subprocess.run(list(stampede_client()) + ["--port", str(port), "--path", path,
                                                     "--body", body, "--n", str(STAMPEDE_N)],
                               capture_output=True, text=True, timeout=120)
            time.sleep(0.2)
            calls = mock.calls() - calls0
            d = json.loads(r.stdout.strip().splitlines()[-1])
            if "error" in d:
                row("stampede", label, f"could not run: {d['error']}")
                continue
            errors = STAMPEDE_N - d["statuses"].get("200", 0)
            over_ms = (d["wall_s"] - MOCK_MS / 1000) * 1000
            target, vs_ref = "", ""
            if key == "mock":
                ref_s = d["wall_s"]
            elif ref_s is not None:
                vs_ref = f"; {(d['wall_s'] - ref_s) * 1000:+.0f} ms against the mock alone"
            if key == "llmcached":
                target = (f"1 upstream call: {met(calls == 1)}; wall ≤ upstream + 10 ms: "
                          f"{met(over_ms <= 10)}")
            row(f"stampede: {STAMPEDE_N} identical cold, {MOCK_MS} ms upstream", label,
                f"{calls} upstream call{'s' if calls != 1 else ''}, {d['wall_s']:.3f} s "
                f"(+{over_ms:.0f} ms{vs_ref})",
                "", "", "", "", "", str(errors), target)
            log(f"bench: stampede, {label}: {calls} upstream calls, {d['wall_s']:.3f} s, {d['cache']}")
        finally:
            if proc:
                proc.stop()


def workload_misses(mock):
    proc, port = start_llmcached(mock, threads=0, cpu=None,
                                 extra=("--max-connections", str(MISSES + 1000)))
    try:
        rss0 = vm_kb(proc.pid, "VmRSS")
        t0 = cpu_ticks(proc.pid)
        log(f"bench: {MISSES} concurrent distinct misses ...")
        r = subprocess.run([PY, str(HERE / "misses.py"), "--gateway", f"http://127.0.0.1:{port}",
                            "--n", str(MISSES), "--upstream-ms", str(MOCK_MS), "--timeout", "120"],
                           capture_output=True, text=True, timeout=300)
        cpu_us = (cpu_ticks(proc.pid) - t0) / HZ * 1e6 / MISSES
        hwm = vm_kb(proc.pid, "VmHWM")
        uerr = json.loads(http(f"http://127.0.0.1:{port}/stats")[2]).get("upstream_errors", {})
        uerr = ", ".join(f"{k} {v}" for k, v in uerr.items() if v)
        import resource
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile != resource.RLIM_INFINITY and nofile < 2 * MISSES + 100:
            NOTES.append(f"misses: the open-file limit here is {nofile} and could not be raised to 65536 "
                         f"(ulimit -n needs CAP_SYS_RESOURCE); llmcached needs a client and an upstream "
                         f"socket per miss, about {2 * MISSES + 50} descriptors for {MISSES} misses, so it "
                         f"caps upstream connections at what the limit leaves after --max-connections "
                         f"(--upstream-max-connections 0) and the calls past the cap wait for a "
                         f"connection: no errors, but a second round of upstream latency in the wall time")
        out = (r.stdout + r.stderr).strip()
        log("bench:   " + out)
        m = re.search(r"in ([\d.]+) s \[(.*)\]", out)
        if not m:
            row(f"{MISSES} distinct misses", "llmcached", f"could not run: {out[-200:]}")
            return
        wall = float(m.group(1))
        ok = sum(int(v) for k, v in re.findall(r"(\S+ \S+): (\d+)", m.group(2)) if k.startswith("200 "))
        errors = MISSES - ok
        row(f"{MISSES} concurrent distinct misses, {MOCK_MS} ms upstream", "llmcached",
            f"{wall:.2f} s wall; peak RSS {hwm / 1024:.0f} MB (from {rss0 / 1024:.0f} MB)", "",
            f"{cpu_us:.0f}", "", "", "", f"{errors} [{m.group(2)}]" + (f"; upstream {uerr}" if uerr else ""),
            f"no error: {met(errors == 0)}; < 300 MB: {met(hwm < 300 * 1024)}")
    finally:
        proc.stop()


def workload_fill(mock):
    proc, port = start_llmcached(mock, threads=0, cpu=None, extra=("--max-memory", "16G"))
    gw = f"http://127.0.0.1:{port}"
    try:
        # One answer first, so that start-up allocations (libcurl, the first
        # upstream connection) are in the baseline.
        http(gw + "/v1/chat/completions", chat_body(0, "fill warm-up"))
        stats0 = json.loads(http(gw + "/stats")[2])
        rss0 = vm_kb(proc.pid, "VmRSS")
        t0 = cpu_ticks(proc.pid)
        log(f"bench: filling llmcached with {FILL_N:,} distinct answers ...")
        argv = ["wrk", "-t1", "-c128", "-d600s", "--timeout", "30s", "-s", str(HERE / "wrk-fill.lua"), gw]
        env = dict(os.environ, FILL_N=str(FILL_N), FILL_TAG=f"fill {time.time_ns()}")
        w = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        start, entries, last, still = time.monotonic(), 0, -1, 0
        while w.poll() is None and time.monotonic() - start < 600:
            time.sleep(0.25)
            entries = json.loads(http(gw + "/stats")[2])["entries"] - stats0["entries"]
            still = still + 1 if entries == last else 0
            last = entries
            if entries >= FILL_N or still >= 20:  # done, or nothing new for 5 s
                break
        fill_s = time.monotonic() - start
        cpu_us = (cpu_ticks(proc.pid) - t0) / HZ * 1e6 / max(entries, 1)
        time.sleep(0.3)  # the last answers reach wrk
        if w.poll() is None:
            w.send_signal(signal.SIGINT)
        out = w.communicate(timeout=60)[0]
        rss1 = vm_kb(proc.pid, "VmRSS")
        stats1 = json.loads(http(gw + "/stats")[2])
        m = re.search(r"^FILL misses=(\d+) body_bytes=(\d+) other=(\d+) errors=(\d+)", out, re.M)
        if not m:
            row(f"{FILL_N:,} entries", "llmcached", f"could not run: {out[-300:]}")
            return
        misses, body_bytes = int(m.group(1)), int(m.group(2))
        n = stats1["entries"] - stats0["entries"]
        if n != misses:
            NOTES.append(f"fill: /stats counts {n} new entries, wrk saw {misses} misses; "
                         "the per-entry figure divides by /stats' count")
        per = (rss1 - rss0) * 1024 - body_bytes
        per_entry = per / max(n, 1)
        acct = (stats1["bytes"] - stats0["bytes"] - body_bytes) / max(n, 1)
        log(f"bench:   {n:,} entries in {fill_s:.1f} s, RSS {rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MB, "
            f"bodies {body_bytes / 1e6:.1f} MB, {per_entry:.0f} B/entry beyond the body")
        slab = stats1.get("entry_slab")
        if slab and slab["page_bytes"]:
            log(f"bench:   entry slab: {slab['pages']:,} pages, {slab['page_bytes'] / 2**20:.0f} MB, "
                f"{slab['used_bytes'] / slab['page_bytes']:.1%} in blocks; "
                f"{slab['big_blocks']:,} entries from malloc")
        row(f"memory: {n:,} cached entries (avg body {body_bytes / max(misses, 1):.0f} B)", "llmcached",
            f"{per_entry:.0f} B/entry beyond its body (RSS +{(rss1 - rss0) / 1024:.0f} MB, bodies "
            f"{body_bytes / 2**20:.0f} MB; /stats bytes {stats1['bytes'] / 2**20:.0f} MB = body + "
            f"{acct:.0f} B/entry); filled at {n / fill_s:,.0f} misses/s",
            "", f"{cpu_us:.0f} per miss", "", "", "", m.group(4) if m.group(4) != "0" else "0",
            f"< 200 B/entry: {met(per_entry < 200)}")
    finally:
        proc.stop()


# ---------------------------------------------------------------- scaling

def scale_placement(t, ncpu):
    """Where --threads t and wrk run in the scaling table. On a machine with
    cores to spare (SCALE_PIN=1, the default from 4 cores up) the server gets
    cores 0..t-1 and wrk the upper half, so that the client never takes the
    server's cores; a thread count above half the cores runs unpinned,
    sharing every core with wrk. Below 4 cores wrk keeps CLIENT_CPU, as in
    the side-by-side run, and the server may use every core (SCALE_PIN=0:
    nothing pinned anywhere). Returns (server cpus, wrk cpus), None for
    unpinned."""
    pin = os.environ.get("SCALE_PIN", "1")
    if pin == "0" or not shutil.which("taskset"):
        return None, None
    if ncpu < 4:
        return None, (CLIENT_CPU or None)
    half = ncpu // 2
    if t > half:
        return None, None
    return f"0-{t - 1}", f"{half}-{ncpu - 1}"


def scale():
    """bench/scale.sh: llmcached's hit throughput over --threads (SCALE_THREADS,
    default 1,2,4,8,16, those above the core count left out unless
    SCALE_ALL=1), wrk with SCALE_WRK_THREADS threads (half the cores) and
    SCALE_CONNS connections (256); placement as scale_placement says."""
    want = [int(x) for x in os.environ.get("SCALE_THREADS", "1,2,4,8,16").split(",") if x]
    threads = [t for t in want if t <= NCPU or os.environ.get("SCALE_ALL") == "1"] or [1]
    wrk_t = int(os.environ.get("SCALE_WRK_THREADS", max(1, NCPU // 2)))
    conns = int(os.environ.get("SCALE_CONNS", 256 if not SMOKE else 64))
    size = SIZES[0]
    load0 = os.getloadavg()[0]
    mock = Mock(MOCK_MS)
    body = chat_body(size, f"bench: a {size}-byte cached answer")
    body_file = TMP / "scale-body.json"
    body_file.write_text(body)
    res = []
    for t in threads:
        scpu, wcpu = scale_placement(t, NCPU)
        proc, port = start_llmcached(mock, threads=t, cpu=scpu)
        try:
            st, xc, n = warm(port, body)
            where = (f"server on CPUs {scpu}, wrk on {wcpu}" if scpu else
                     f"server unpinned, wrk on CPU {wcpu}" if wcpu else "unpinned")
            log(f"bench: scale, --threads {t}, wrk -t{wrk_t} -c{conns}, {where} ...")
            r = median_runs(proc, port, conns, mock, body_file=body_file, threads=wrk_t, cpu=wcpu)
            log(f"bench:   {r['rps']:,.0f} req/s (runs {r['runs']}), {r['cpu_us']:.1f} µs CPU/req")
            res.append((t, n, r, where))
        finally:
            proc.stop()
    mock.proc.stop()
    base = res[0][2]["rps"]
    lines = ["| --threads | placement | req/s | × --threads " + str(res[0][0]) +
             " | CPU µs/req | p50 | p99 | p99.9 | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t, n, r, where in res:
        lines.append(f"| {t} | {where} | {r['rps']:,.0f} | {r['rps'] / base:.2f}× | {r['cpu_us']:.1f} | "
                     f"{fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} | {fmt_us(r['p999_us'])} | {r['errors']} |")
    skipped = [t for t in want if t not in threads]
    text = (f"Machine: {machine()}; load average {load0:.1f} at the start.  \n"
            f"llmcached hits ({res[0][1]}-byte answer), wrk -t{wrk_t} -c{conns}, median of {RUNS} run(s) "
            f"of {DURATION} s. CPU µs/req is the server's utime+stime over the run per request."
            + (f" Not run here (more threads than the {NCPU} cores): {', '.join(map(str, skipped))}."
               if skipped else "") + "\n\n" + "\n".join(lines) + "\n")
    print(text)
    if not SMOKE:
        old = RESULTS.read_text() if RESULTS.exists() else "# llmcached benchmark results\n"
        RESULTS.write_text(replace_section(old, "scale", "## Thread scaling (bench/scale.sh)\n\n" + text))
        log(f"bench: written to {RESULTS}")
    return 0


# ---------------------------------------------------------------- main

def main():
    if not os.access(BIN, os.X_OK):
        log(f"bench: no llmcached binary at {BIN}")
        return 2
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    log(f"bench: {BIN}, {'smoke' if SMOKE else 'full'} run: RUNS={RUNS} DURATION={DURATION}s "
        f"THREADS={THREADS} server cpu {SERVER_CPU or '-'} client cpu {CLIENT_CPU or '-'}; tmp {TMP}")
    mock = Mock(MOCK_MS)
    for name, fn, needs_wrk in (("hits", workload_hits, True), ("ask", workload_ask, True),
                                ("stampede", workload_stampede, False),
                                ("misses", workload_misses, False), ("fill", workload_fill, True)):
        if name not in WORKLOADS:
            continue
        if needs_wrk and not shutil.which("wrk"):
            log(f"bench: skipping {name} (wrk is not installed)")
            continue
        fn(mock)
    mock.proc.stop()

    head = (f"Machine: {machine()}.  \n"
            f"Hits: wrk -t1 on CPU {CLIENT_CPU or 'any'}, the server alone on CPU {SERVER_CPU or 'any'} "
            f"(llmcached --threads {THREADS}, one nginx worker); median of {RUNS} run(s) of {DURATION} s "
            f"after a {WARMUP} s warm-up; CPU µs/req is the server's utime+stime (all its processes) "
            f"over the run divided by the requests. Workloads 2-4: llmcached --threads {NCPU}, unpinned. "
            f"Took {time.monotonic() - started:.0f} s; load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (anything else running on the machine shows in the "
            f"req/s figures more than in CPU µs/req).")
    text = head + "\n\n" + table() + "\n"
    if NOTES:
        text += "\n" + "\n".join(f"- {n}" for n in NOTES) + "\n"
    prof = ""
    if PROFILE:
        prof = ("Top 15 symbols by self time in llmcached (`perf record -g`, 64 connections, 1 KB hits; "
                "user and kernel), then the same by object:\n\n```\n" + "\n".join(PROFILE) + "\n```\n")
    print(text)
    if prof:
        print(prof)
    if not SMOKE:
        old = RESULTS.read_text() if RESULTS.exists() else (
            "# llmcached benchmark results\n\nWritten by `make bench` (bench/run.sh); "
            "bench/scale.sh writes the thread-scaling section. Measurements, never pass/fail.\n")
        new = replace_section(old, "side-by-side", "## Side by side (bench/run.sh)\n\n" + text)
        if prof:
            new = replace_section(new, "profile", "## Where llmcached's CPU goes on a hit\n\n" + prof)
        RESULTS.write_text(new)
        log(f"bench: written to {RESULTS}")
    return 0


if __name__ == "__main__":
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(143))
    try:
        rc = scale() if "--scale" in sys.argv[1:] else main()
    except KeyboardInterrupt:
        rc = 130
    finally:
        stop_all()
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
