"""Fixtures for the integration suite: the real llmcached binary on free ports.

Every test gets its own processes (a stand-alone `llmcached mock` and one or
more gateways), so no test sees another's cache or counters. The binary comes
from $LLMC_BIN (the Makefile sets it), else build/llmcached in this repo.

Decisions a newcomer would otherwise get wrong:
- Waits are bounded polls (START_TIMEOUT seconds) that fail with the process's
  stderr, never open-ended sleeps.
- A gateway that died during a test fails that test at teardown: every
  malformed-input test therefore also proves "no crash".
- requests' Session is created with trust_env=False so a proxy variable in
  the environment can never route loopback traffic elsewhere.
- The gateway is started with a scrubbed environment (no LLMC_* and no
  OPENAI_API_KEY from the caller) so a developer's shell cannot change the
  cache scope or other options under a test.
- $LLMC_WRAP, when set, prefixes every gateway command (not the mock's), e.g.
  "valgrind --leak-check=full --error-exitcode=99" (tools/valgrind-suite.sh);
  $LLMC_START_TIMEOUT then gives such a slow process longer to start and to
  stop. Under a wrapper, memory figures are the wrapper's, so sanitized() says
  True and the RSS bounds are skipped as under ASan.
"""

import json
import os
import resource
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("LLMC_START_TIMEOUT") or 10.0)
WRAP = shlex.split(os.environ.get("LLMC_WRAP", ""))
MODEL = "gpt-4o-mini"

# The concurrency tests hold ~1,000 sockets in this process and make the
# gateway and the mock hold as many; children inherit this limit.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_want = 8192 if _hard == resource.RLIM_INFINITY else min(8192, _hard)
if _soft != resource.RLIM_INFINITY and _soft < _want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))


def nofile_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def llmc_bin():
    b = os.environ.get("LLMC_BIN") or str(ROOT / "build" / "llmcached")
    if not os.path.isabs(b):
        b = str((Path.cwd() / b).resolve())
    if not os.access(b, os.X_OK):
        pytest.fail(f"llmcached binary not found at {b}: run `make` or set LLMC_BIN", pytrace=False)
    return b


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session():
    s = requests.Session()
    s.trust_env = False
    return s


def chat_body(content="Say hello", model=MODEL, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return body


def completion_body(prompt="Once upon a time", model="gpt-3.5-turbo-instruct", **extra):
    body = {"model": model, "prompt": prompt, "max_tokens": 16}
    body.update(extra)
    return body


def embedding_body(text="The food was delicious", model="text-embedding-3-small", **extra):
    body = {"model": model, "input": text}
    body.update(extra)
    return body


def read_stream(url, body, timeout=10):
    """POSTs body asking for a stream; returns the status and the raw body
    bytes read until the server ends or cuts it (a cut shows as a broken
    chunked body, which is not an error here)."""
    got = b""
    # identity: the SSE bytes themselves (a client asking gzip gets the stream compressed)
    with requests.post(url, json=body, stream=True, timeout=timeout,
                       headers={"Accept-Encoding": "identity"}) as r:
        try:
            for chunk in r.raw.stream(4096, decode_content=False):
                got += chunk
        except Exception:
            pass
        return r.status_code, got


def tail(path, n=4000):
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "<none>"
    return data[-n:].decode("utf-8", "replace")


def assert_error_shape(resp_or_body, status=None):
    """Every error the gateway makes is {"error": {"message": str, "type": str, "code": str|null}}."""
    if isinstance(resp_or_body, (bytes, str)):
        body = json.loads(resp_or_body)
    else:
        if status is not None:
            assert resp_or_body.status_code == status, resp_or_body.text[:500]
        assert resp_or_body.headers.get("Content-Type", "").startswith("application/json")
        body = resp_or_body.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert "code" in err and (err["code"] is None or isinstance(err["code"], str)), body
    return err


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)
        time.sleep(interval)


def next_second():
    """Waits (polling the clock) until the wall-clock second has changed, so the
    mock's `created` stamp of the next answer differs from the last one. 50 ms
    of margin: time(2), which the mock uses, follows a coarse clock that may
    lag gettimeofday by a tick."""
    s = int(time.time())
    wait_until(lambda: int(time.time() - 0.05) > s, timeout=2.5, interval=0.01,
               what="the next second")


class PortTaken(Exception):
    """The free port we picked was taken by another process before we bound it."""


def start_retrying(make, port):
    """Runs make(port) and, when the port we picked ourselves turned out to be
    taken in the meantime (other test runs share the machine), tries again
    with a fresh one."""
    for attempt in range(3):
        try:
            return make(port or free_port())
        except PortTaken:
            if port or attempt == 2:
                raise


class _Proc:
    """A child process with its stdout/stderr in files under tmp."""

    def __init__(self, name, argv, env, tmp):
        self.name = name
        self.argv = argv
        self.stdout_path = tmp / f"{name}.stdout"
        self.stderr_path = tmp / f"{name}.stderr"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        return tail(self.stderr_path)

    def wait_ready(self, url):
        s = session()
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                if "address already in use" in self.stderr().lower():
                    self.stop()
                    raise PortTaken(self.stderr())
                pytest.fail(f"{self.name} exited with {self.proc.returncode} during start-up\n"
                            f"argv: {' '.join(self.argv)}\nstderr:\n{self.stderr()}", pytrace=False)
            try:
                r = s.get(url, timeout=1)
                if r.status_code == 200:
                    return
                last = f"status {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"{self.name} not ready at {url} within {START_TIMEOUT}s ({last})\n"
                    f"argv: {' '.join(self.argv)}\nstderr:\n{self.stderr()}", pytrace=False)

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)

    def stop(self, timeout=max(10.0, START_TIMEOUT)):
        """SIGTERM, then wait. Returns None when the exit was clean (status 0,
        or death by the SIGTERM itself for a process that does not catch it),
        else a description: a sanitizer's leak report or a crash at shutdown
        shows up here."""
        problem = None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
                if rc not in (0, -signal.SIGTERM):
                    problem = f"exited with {rc} after SIGTERM"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                problem = f"still running {timeout:.0f}s after SIGTERM (killed)"
        if not self._out.closed:
            self._out.close()
            self._err.close()
        return problem

    def sanitized(self):
        """True when the binary runs under AddressSanitizer (make SAN=1), or
        under a $LLMC_WRAP wrapper such as valgrind."""
        if WRAP and getattr(self, "wrapped", False):
            return True
        try:
            return "libasan" in Path(f"/proc/{self.pid}/maps").read_text()
        except OSError:
            return False

    def rss_kb(self, field="VmRSS"):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field} missing from /proc/{self.pid}/status")


class Mock(_Proc):
    """`llmcached mock`: the scriptable upstream. url is the /v1 base URL."""

    def __init__(self, tmp, latency_ms=0, extra=(), name="mock", port=None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        argv = [llmc_bin(), "mock", "--listen", f"127.0.0.1:{self.port}",
                "--latency-ms", str(latency_ms), *extra]
        super().__init__(name, argv, _clean_env(), tmp)
        self.http = session()
        self.wait_ready(self.base + "/mock/stats")

    def stats(self):
        r = self.http.get(self.base + "/mock/stats", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def calls(self, kind="calls"):
        return self.stats()[kind]

    def reset(self):
        r = self.http.post(self.base + "/mock/reset", timeout=5)
        assert r.status_code in (200, 204), r.text


# ------------------------------------------------------------------- Redis

def resp_encode(*args):
    """A RESP command array of args (str or bytes)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RespReader:
    """Reads RESP replies from a socket: +/- as str (an error as RespError),
    : as int, $ as bytes or None, * as a list."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _n(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self._n(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError(f"not RESP: {line!r}")


class RespError(str):
    pass


class Redis(_Proc):
    """A redis-server of the test's own on 127.0.0.1 (never a system
    service): no persistence, its files under tmp. url is its redis:// URL;
    call() sends one command and returns the reply."""

    def __init__(self, tmp, name="redis", port=None, password=None, extra=()):
        self.port = port or free_port()
        self.password = password
        self.url = (f"redis://:{password}@127.0.0.1:{self.port}" if password
                    else f"redis://127.0.0.1:{self.port}")
        d = tmp / f"{name}.dir"
        d.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(d),
                *(["--requirepass", password] if password else []), *extra]
        super().__init__(name, argv, _clean_env(), tmp)
        self.wait_pong()

    def call(self, *args, timeout=5):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            r = RespReader(s)
            if self.password:
                s.sendall(resp_encode("AUTH", self.password))
                assert r.reply() == "OK"
            s.sendall(resp_encode(*args))
            return r.reply()

    def wait_pong(self):
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                if "address already in use" in self.stderr().lower() + tail(self.stdout_path).lower():
                    self.stop()
                    raise PortTaken(self.stderr())
                pytest.fail(f"{self.name} exited with {self.proc.returncode} during start-up\n"
                            f"stdout:\n{tail(self.stdout_path)}", pytrace=False)
            try:
                if self.call("PING", timeout=1) == "PONG":
                    return
            except (OSError, ConnectionError, ValueError) as e:
                last = repr(e)
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"{self.name} not answering PING within {START_TIMEOUT}s ({last})", pytrace=False)

    def kill9(self):
        """Kills it on purpose (the procs fixture then does not call it a crash)."""
        self.must_survive = False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def redis_factory(procs, tmp_path):
    """Starts redis-servers: make(port=None, password=None, extra=()). A port
    given (a restart on the same one) is used as it is."""
    n = [0]

    def make(port=None, password=None, extra=()):
        n[0] += 1
        r = start_retrying(lambda p: Redis(tmp_path, name="redis" if n[0] == 1 else f"redis{n[0]}",
                                           port=p, password=password, extra=extra), port)
        procs.insert(0, r)  # stopped last, after the gateways that talk to it
        return r
    return make


@pytest.fixture
def redis(redis_factory):
    return redis_factory()


def _clean_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLMC_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if extra:
        env.update(extra)
    return env


class Gateway(_Proc):
    def __init__(self, tmp, upstream, args=(), env=None, threads=2, name="gateway",
                 listen=True, wait=True, port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = tmp / f"{name}.access.log"
        self.wrapped = bool(WRAP)
        argv = WRAP + [llmc_bin()]
        if listen:
            argv += ["--listen", f"127.0.0.1:{self.port}"]
        if upstream is not None:
            argv += ["--upstream", upstream]
        argv += ["--threads", str(threads), "--access-log", str(self.access_log), *args]
        super().__init__(name, argv, _clean_env(env), tmp)
        self.http = session()
        if wait:
            self.wait_ready(self.url + "/healthz")

    def stats(self, headers=None):
        r = self.http.get(self.url + "/stats", headers=headers or {}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, path, body=None, headers=None, data=None, timeout=30):
        return self.http.post(self.url + path, json=body if data is None else None, data=data,
                              headers=headers or {}, timeout=timeout)

    def chat(self, body=None, headers=None, timeout=30, **kw):
        return self.post("/v1/chat/completions", body if body is not None else chat_body(**kw),
                         headers=headers, timeout=timeout)

    def get(self, path, headers=None, timeout=30, **kw):
        return self.http.get(self.url + path, headers=headers or {}, timeout=timeout, **kw)

    def access_lines(self):
        try:
            text = self.access_log.read_text()
        except OSError:
            return []
        # Only whole lines: the gateway may be writing the last one right now.
        return [json.loads(l) for l in text.split("\n")[:-1] if l.strip()]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the stderr of every process the test started."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for p in getattr(item, "_llmc_procs", []):
            rep.sections.append((f"{p.name} stderr (pid {p.pid}, "
                                 f"{'alive' if p.alive() else 'exit %s' % p.proc.returncode})",
                                 p.stderr()))


@pytest.fixture
def procs(request, tmp_path):
    """Tracks processes of one test; at teardown asserts none crashed, then stops them."""
    started = []
    request.node._llmc_procs = started
    yield started
    dead = [p for p in started if getattr(p, "must_survive", True) and not p.alive()]
    unclean = []
    for p in reversed(started):  # gateways first, then the mocks they talk to
        problem = p.stop()
        if problem and p not in dead:
            unclean.append((p, problem))
    if dead:
        msg = "\n".join(f"{p.name} (pid {p.pid}) died with {p.proc.returncode}:\n{p.stderr()}"
                        for p in dead)
        pytest.fail("process died during the test (crash?)\n" + msg, pytrace=False)
    if unclean:
        msg = "\n".join(f"{p.name} (pid {p.pid}) {problem}:\n{p.stderr()}" for p, problem in unclean)
        pytest.fail("process did not shut down cleanly\n" + msg, pytrace=False)


@pytest.fixture
def mock_factory(procs, tmp_path):
    n = [0]

    def make(latency_ms=0, extra=(), port=None):
        n[0] += 1
        m = start_retrying(lambda p: Mock(tmp_path, latency_ms=latency_ms, extra=extra,
                                          name="mock" if n[0] == 1 else f"mock{n[0]}", port=p),
                           port)
        procs.append(m)
        return m
    return make


@pytest.fixture
def mock(mock_factory):
    """A mock that answers at once (per-request latency via the body's mock field)."""
    return mock_factory(latency_ms=0)


@pytest.fixture
def gateway_factory(procs, tmp_path):
    n = [0]

    def make(upstream, args=(), env=None, threads=2, listen=True, wait=True, port=None):
        """upstream: a Mock, a URL, or None (then --upstream is not passed)."""
        n[0] += 1
        up = upstream.url if isinstance(upstream, Mock) else upstream
        g = start_retrying(lambda p: Gateway(tmp_path, up, args=[str(a) for a in args], env=env,
                                             threads=threads, listen=listen, wait=wait, port=p,
                                             name="gateway" if n[0] == 1 else f"gateway{n[0]}"),
                           port)
        procs.append(g)
        return g
    return make


@pytest.fixture
def gateway(mock, gateway_factory):
    """A gateway in front of `mock` with default options (no upstream key: per-key scope)."""
    return gateway_factory(mock)


@pytest.fixture
def shared_gateway(mock, gateway_factory):
    """A gateway that holds the upstream key, so its cache is shared by all clients."""
    return gateway_factory(mock, env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})


# ---------------------------------------------------------------- raw HTTP/1.1

class RawConn:
    """One client connection for tests that need exact bytes on the wire."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _read_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_n(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, method="GET"):
        """Reads one response: (status, headers with lowercase names, body bytes)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        assert parts[0].startswith("HTTP/1."), lines[0]
        status = int(parts[1])
        headers = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, headers, b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line():
                        pass
                    return status, headers, body
                body += self._read_n(size)
                assert self._read_n(2) == b"\r\n"
        if "content-length" in headers:
            return status, headers, self._read_n(int(headers["content-length"]))
        # No length: the body runs to the end of the connection.
        try:
            while True:
                self._fill()
        except ConnectionError:
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def closed_by_peer(self, timeout=3.0):
        """True when the server closes the connection (EOF or reset) within timeout."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def http_request(method, path, body=b"", headers=None, host="127.0.0.1"):
    """Builds a request's bytes with Host and Content-Length (unless given)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    h = {"Host": host}
    if body or method == "POST":
        h["Content-Type"] = "application/json"
        h["Content-Length"] = str(len(body))
    if headers:
        h.update(headers)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    return head.encode("latin-1") + body


# ------------------------------------------------------------ asyncio clients

async def async_read_response(reader):
    """Reads one Content-Length or chunked response from an asyncio StreamReader."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for l in lines[1:]:
        if l:
            k, _, v = l.partition(":")
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            body += await reader.readexactly(size + 2)
            body = body[:-2]
        return status, headers, body
    n = int(headers.get("content-length", "0"))
    return status, headers, (await reader.readexactly(n)) if n else b""


async def async_open_many(port, n, parallel=64):
    """Opens n connections to 127.0.0.1:port, at most `parallel` connects at a time
    (so the listen backlog never overflows and no SYN is retried)."""
    import asyncio
    sem = asyncio.Semaphore(parallel)

    async def one():
        async with sem:
            return await asyncio.open_connection("127.0.0.1", port)
    return await asyncio.gather(*(one() for _ in range(n)))


def cache_status(resp_headers):
    """Parses `Cache-Status: llmcached; hit; ttl=42` into {"hit": True, "ttl": "42"}."""
    v = resp_headers.get("Cache-Status") if hasattr(resp_headers, "get") else None
    if v is None:
        v = resp_headers.get("cache-status")
    assert v, f"no Cache-Status header in {dict(resp_headers)}"
    parts = [p.strip() for p in v.split(";")]
    assert parts[0] == "llmcached", v
    out = {}
    for p in parts[1:]:
        k, eq, val = p.partition("=")
        out[k.strip()] = val.strip().strip('"') if eq else True
    return out


def cache_control(resp_headers):
    """Parses Cache-Control into {"public": True, "max-age": 42, ...}."""
    v = resp_headers.get("Cache-Control") or resp_headers.get("cache-control") or ""
    out = {}
    for p in v.split(","):
        p = p.strip()
        if not p:
            continue
        k, eq, val = p.partition("=")
        out[k.strip().lower()] = int(val) if eq and val.strip().isdigit() else (val if eq else True)
    return out
