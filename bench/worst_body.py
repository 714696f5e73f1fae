#!/usr/bin/python3
"""Bench driver (issue 14): cached-hit latency on a gateway while four
connections send the worst request bodies its limits allow.

Starts the gateway (--bin) in front of its built-in mock model, stores one
answer, then runs --attackers processes that each send, one after another,
bodies of the form {"model":"mNNNNNNN","x":[{},{},...]} padded with white
space to --max-body bytes (each body's model differs, so none is a known
fingerprint and each is parsed in full; Cache-Control: only-if-cached, so
nothing goes upstream). Meanwhile one client sends the stored request again
and again on each of --hit-conns keep-alive connections (own processes, so
that they spread over the gateway's threads) and times each answer. Prints one
JSON line: the hits' count, p50, p99 and max in ms, and what the attackers
got (statuses, bodies sent).

  --values N   values per attacker body: the gateway's --max-json-values
               (200000 by default); 0 fills the body with {} to --max-body,
               which is the worst body for a gateway without the limit.

    bench/worst_body.py --bin build/llmcached                    # after
    bench/worst_body.py --bin /tmp/base/build/llmcached --values 0   # before
"""
import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time

PATH = "/v1/chat/completions"
HIT = json.dumps({"model": "gpt-4o-mini",
                  "messages": [{"role": "user", "content": "a cached question"}]}).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(body, extra=""):
    return (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def read_answer(sock, buf):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    n = int(hdrs.get("content-length", "0"))
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return int(lines[0].split(" ", 2)[1]), hdrs, buf[:n], buf[n:]


def worst_body(values, max_body):
    """A body of exactly `values` values (0: as many {} as fit), max_body bytes."""
    head = b'{"model":"m0000000","x":['
    room = max_body - len(head) - 2
    k = room // 3 if values == 0 else values - 3
    items = b",".join([b"{}"] * k)
    body = head + items + b"]" + b" " * max(0, room - len(items) - 1) + b"}"
    assert len(body) <= max_body, len(body)
    return bytearray(body)


def attacker(port, values, max_body, stop, out, ident):
    body = worst_body(values, max_body)
    statuses, sent, n = {}, 0, 0
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                buf = b""
                while not stop.is_set():
                    n += 1
                    body[11:18] = b"%07d" % ((ident * 1000000 + n) % 10000000)
                    s.sendall(request(bytes(body), "Cache-Control: only-if-cached\r\n"))
                    st, hdrs, _, buf = read_answer(s, buf)
                    statuses[st] = statuses.get(st, 0) + 1
                    sent += 1
                    if hdrs.get("connection", "").lower() == "close":
                        break
        except OSError as e:
            statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
            time.sleep(0.05)
    out.put((statuses, sent))


def hitter(port, seconds, out):
    """Sends the stored request again and again on one connection; each
    answer's time, and what the answers were."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf, lat, kinds = b"", [], {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        s.sendall(request(HIT))
        st, hdrs, _, buf = read_answer(s, buf)
        lat.append((time.perf_counter() - t0) * 1000)
        k = f"{st} {hdrs.get('x-cache', '-')}"
        kinds[k] = kinds.get(k, 0) + 1
        time.sleep(0.002)
    s.close()
    out.put((lat, kinds))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--attackers", type=int, default=4)
    p.add_argument("--hit-conns", type=int, default=4, help="connections timing hits")
    p.add_argument("--values", type=int, default=200000)
    p.add_argument("--max-body", type=int, default=4 << 20)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--gateway-args", default="", help="more options for the gateway")
    a = p.parse_args()

    port = free_port()
    argv = [a.bin, "--upstream", "mock", "--listen", f"127.0.0.1:{port}", "--threads", str(a.threads),
            "--access-log", "off", *a.gateway_args.split()]
    env = dict(os.environ, LLMC_UPSTREAM_KEY="sk-bench")
    gw = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline or gw.poll() is not None:
                    sys.exit("gateway did not start: " + gw.stderr.read().decode()[-500:])
                time.sleep(0.05)
        s.sendall(request(HIT))
        st, hdrs, _, buf = read_answer(s, b"")
        s.close()
        assert st == 200, st

        stop, out, hits = mp.Event(), mp.Queue(), mp.Queue()
        procs = [mp.Process(target=attacker, args=(port, a.values, a.max_body, stop, out, i))
                 for i in range(a.attackers)]
        for pr in procs:
            pr.start()
        time.sleep(1.0)  # the attackers' first bodies are in flight
        hitters = [mp.Process(target=hitter, args=(port, a.seconds, hits))
                   for _ in range(a.hit_conns)]
        for pr in hitters:
            pr.start()
        lat, kinds = [], {}
        for _ in hitters:
            l_, k_ = hits.get(timeout=a.seconds + 120)
            lat += l_
            for k, v in k_.items():
                kinds[k] = kinds.get(k, 0) + v
        for pr in hitters:
            pr.join()
        stop.set()
        statuses, sent = {}, 0
        for _ in procs:
            st_, n_ = out.get(timeout=120)
            sent += n_
            for k, v in st_.items():
                statuses[str(k)] = statuses.get(str(k), 0) + v
        for pr in procs:
            pr.join()
        lat.sort()
        pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)
        print(json.dumps({"hits": len(lat), "answers": kinds, "p50_ms": pick(0.5),
                          "p99_ms": pick(0.99), "max_ms": round(lat[-1], 2),
                          "attacker_bodies": sent, "attacker_statuses": statuses,
                          "body_bytes": len(worst_body(a.values, a.max_body)),
                          "values": a.values or "fill"}))
    finally:
        gw.terminate()
        gw.wait(timeout=10)


if __name__ == "__main__":
    main()
