#!/usr/bin/python3
"""Bench driver: N identical requests sent at once (issue 6's stampede), all
cold. Opens the N connections first, then sends the same request on each and
prints one JSON line: wall time from the first send to the last answer, the
statuses and the cache headers seen (X-Cache or X-Cache-Status). Measures only.
"""
import argparse
import asyncio
import json
import sys
import time


async def main(a):
    conns = await asyncio.gather(*(asyncio.open_connection(a.host, a.port) for _ in range(a.n)))
    body = a.body.encode()
    req = (f"POST {a.path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def one(reader, writer):
        writer.write(req)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            hdrs = {k.strip().lower(): v.strip()
                    for k, _, v in (l.partition(":") for l in lines[1:] if l)}
            await reader.readexactly(int(hdrs.get("content-length", "0")))
            return lines[0].split(" ", 2)[1], hdrs.get("x-cache", hdrs.get("x-cache-status", "-"))
        except (OSError, asyncio.IncompleteReadError) as e:
            return type(e).__name__, "-"
        finally:
            writer.close()
    t0 = time.monotonic()
    res = await asyncio.wait_for(asyncio.gather(*(one(r, w) for r, w in conns)), a.timeout)
    return time.monotonic() - t0, res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--body", required=True, help="the JSON body, the same for every request")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    try:
        wall, res = asyncio.run(main(a))
    except (OSError, asyncio.TimeoutError) as e:
        print(json.dumps({"error": repr(e)}))
        sys.exit(1)
    statuses, cache = {}, {}
    for st, xc in res:
        statuses[st] = statuses.get(st, 0) + 1
        cache[xc] = cache.get(xc, 0) + 1
    print(json.dumps({"n": a.n, "wall_s": wall, "statuses": statuses, "cache": cache}))
