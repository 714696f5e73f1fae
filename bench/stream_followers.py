#!/usr/bin/python3
"""Bench driver: the gateway's memory while N clients that never read follow
one big streaming miss (issue 14). Starts its own mock upstream and gateway
on 127.0.0.1, opens one reading stream and N identical ones that send their
request and then read nothing, and prints one JSON line: the gateway's RSS
before, at its peak, once the reader has the whole stream, and after the
followers hung up; whether the reader got it all; whether the answer was
stored (a second request is a HIT); /stats stream_waiters_dropped.
Bounded in time (--timeout); measures only, asserts nothing.

  bench/stream_followers.py --bin build/llmcached [--n 50] [--bytes 11600000]
                            [-- extra gateway options, e.g. --stream-max-lag 4M]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_ready(url, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{url} not ready within {timeout}s")


def request_bytes(port, body):
    b = json.dumps(body).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b


def read_chunked(sock, deadline):
    """Reads one chunked answer; returns (head, body bytes, complete)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return buf, b"", False
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    body = bytearray()
    while time.monotonic() < deadline:
        while b"\r\n" not in buf:
            d = sock.recv(1 << 20)
            if not d:
                return head, bytes(body), False
            buf += d
        line, _, buf = buf.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        while len(buf) < n + 2:
            d = sock.recv(1 << 20)
            if not d:
                return head, bytes(body), False
            buf += d
        if n == 0:
            return head, bytes(body), True
        body += buf[:n]
        buf = buf[n + 2:]
    return head, bytes(body), False


def main(a, extra):
    tmp = tempfile.mkdtemp(prefix="llmc-followers-")
    mport, gport = free_port(), free_port()
    mock = subprocess.Popen([a.bin, "mock", "--listen", f"127.0.0.1:{mport}", "--latency-ms", "0"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/mock.err", "wb"))
    gw = subprocess.Popen([a.bin, "--listen", f"127.0.0.1:{gport}", "--upstream",
                           f"http://127.0.0.1:{mport}/v1", "--threads", str(a.threads),
                           "--max-memory", "1G", "--max-response-bytes", "64M", *extra],
                          stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/gateway.err", "wb"))
    out = {"n": a.n, "bytes": a.bytes, "rcvbuf": a.rcvbuf, "gateway_args": extra}
    socks = []
    try:
        wait_ready(f"http://127.0.0.1:{mport}/mock/stats", mock)
        wait_ready(f"http://127.0.0.1:{gport}/healthz", gw)
        out["rss_before_kb"] = rss_kb(gw.pid)
        peak = [out["rss_before_kb"]]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak[0] = max(peak[0], rss_kb(gw.pid))
                except OSError:
                    return
                time.sleep(0.02)
        threading.Thread(target=sample, daemon=True).start()
        # The upstream's head comes after latency_ms, so every follower
        # joins the call before its first byte; then 200 pieces, paced.
        body = {"model": "gpt-4o-mini", "stream": True,
                "messages": [{"role": "user", "content": f"followers {time.time()}"}],
                "mock": {"bytes": a.bytes, "latency_ms": 1000, "chunk_delay_ms": a.chunk_delay_ms}}
        req = request_bytes(gport, body)
        deadline = time.monotonic() + a.timeout
        reader = socket.create_connection(("127.0.0.1", gport))
        reader.settimeout(a.timeout)
        reader.sendall(req)
        for _ in range(a.n):
            s = socket.socket()
            if a.rcvbuf:  # before connect, so the kernel does not grow it
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
            s.connect(("127.0.0.1", gport))
            s.sendall(req)
            socks.append(s)
        head, got, complete = read_chunked(reader, deadline)
        reader.close()
        time.sleep(a.settle)
        out["reader_complete"] = complete
        out["reader_bytes"] = len(got)
        out["reader_status"] = head.split(b"\r\n", 1)[0].decode("latin-1")
        out["rss_after_stream_kb"] = rss_kb(gw.pid)
        r = urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{gport}/v1/chat/completions", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}), timeout=30)
        out["second_request_x_cache"] = r.headers.get("X-Cache")
        r.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{gport}/stats", timeout=5) as r:
            st = json.load(r)
        out["stream_waiters_dropped"] = st.get("stream_waiters_dropped")
        for s in socks:
            s.close()
        socks = []
        time.sleep(a.settle)
        out["rss_after_close_kb"] = rss_kb(gw.pid)
        stop.set()
        out["rss_peak_kb"] = peak[0]
    finally:
        for s in socks:
            s.close()
        for p in (gw, mock):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    print(json.dumps(out))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                 "llmcached"))
    p.add_argument("--n", type=int, default=50, help="followers that never read")
    p.add_argument("--bytes", type=int, default=11_600_000, help="size of the streamed answer")
    p.add_argument("--chunk-delay-ms", type=int, default=5, help="pause between the 200 pieces")
    p.add_argument("--rcvbuf", type=int, default=0,
                   help="followers' SO_RCVBUF (0: the kernel's own, which on loopback grows "
                        "to megabytes and so holds much of the stream for them)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--settle", type=float, default=2.0, help="seconds before each later sample")
    p.add_argument("--timeout", type=float, default=60.0)
    main(p.parse_args(argv), extra)
