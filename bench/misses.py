#!/usr/bin/python3
"""Bench driver: N distinct chat completions sent at once through the gateway,
all misses against a slow upstream; prints the wall time from the first send
to the last answer. Measures only: the exit status is 0 whenever it could run.

Connections are opened first (64 connects at a time, so the listen backlog
never overflows and no SYN is retried), then all requests are sent together.
"""
import argparse
import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit


def request(path, body):
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
    await reader.readexactly(int(hdrs.get("content-length", "0")))
    return status, hdrs.get("x-cache", "-")


async def main(a):
    u = urlsplit(a.gateway)
    host, port = u.hostname, u.port or 80
    sem = asyncio.Semaphore(64)

    async def connect():
        async with sem:
            return await asyncio.open_connection(host, port)
    conns = await asyncio.gather(*(connect() for _ in range(a.n)))
    nonce = f"{time.time_ns()}"
    reqs = [request("/v1/chat/completions",
                    {"model": "gpt-4o-mini",
                     "messages": [{"role": "user", "content": f"bench miss {nonce} {i}"}]})
            for i in range(a.n)]

    async def one(conn, req):
        reader, writer = conn
        writer.write(req)
        try:
            return await read_response(reader)
        except (OSError, asyncio.IncompleteReadError) as e:
            return type(e).__name__, "-"
        finally:
            writer.close()
    t0 = time.monotonic()
    res = await asyncio.wait_for(asyncio.gather(*(one(c, r) for c, r in zip(conns, reqs))),
                                 a.timeout)
    return time.monotonic() - t0, res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gateway", required=True, help="gateway base URL, http://127.0.0.1:PORT")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--upstream-ms", type=int, default=2000, help="the mock's delay, for the report")
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    try:
        wall, res = asyncio.run(main(a))
    except (OSError, asyncio.TimeoutError) as e:
        print(f"misses: could not run: {e!r}", file=sys.stderr)
        sys.exit(1)
    counts = {}
    for st, xc in res:
        counts[f"{st} {xc}"] = counts.get(f"{st} {xc}", 0) + 1
    print(f"misses: {a.n} distinct slow misses ({a.upstream_ms} ms upstream) in {wall:.2f} s "
          f"[{', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}]")
