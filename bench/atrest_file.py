#!/usr/bin/env python3
"""
atrest_file.py: answers per GB of the disk tier's LMDB data FILE, end to
end (issue 18), and the memory tier's bytes per answer beside it: a gateway in front of its own mock is filled through HTTP
with the answers of bench/corpus.py's corpus (train, then measure: 5,000
answers, each under a request of its own), once with --compress-at-rest
off and once on (the dictionary then trained in the background after
--compress-dict-samples answers, as in production); the data file's size
and allocated blocks after a clean stop are divided by the answers stored.

  python3 bench/corpus.py /tmp/corpus
  python3 bench/atrest_file.py build/llmcached /tmp/corpus

127.0.0.1 only; about a minute on a busy 2-core machine.
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def answers(corpus):
    out = []
    for part in ("train", "measure"):
        d = os.path.join(corpus, part)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                out.append(f.read())
    return out


def wait_up(p):
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", p, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {p}")


def stats(p):
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
    c.request("GET", "/stats")
    return json.loads(c.getresponse().read())


def fill(gp, bodies):
    def send(chunk):
        c = http.client.HTTPConnection("127.0.0.1", gp, timeout=60)
        for i, a in chunk:
            emb = '"embedding"' in a
            path = "/v1/embeddings" if emb else "/v1/chat/completions"
            req = ({"model": "text-embedding-3-small", "input": f"file bench {i}"} if emb else
                   {"model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"file bench {i}"}]})
            req["mock"] = {"body": a}
            c.request("POST", path, json.dumps(req), {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            assert r.status == 200, r.status
    items = list(enumerate(bodies))
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(send, [items[k::4] for k in range(4)]))


def run(binary, bodies, mode):
    d = tempfile.mkdtemp(prefix="llmc-atrest-file-")
    mp, gp = port(), port()
    mock = subprocess.Popen([binary, "mock", "--listen", f"127.0.0.1:{mp}", "--latency-ms", "0"],
                            stderr=subprocess.DEVNULL)
    gw = subprocess.Popen([binary, "--listen", f"127.0.0.1:{gp}", "--threads", "1",
                           "--upstream", f"http://127.0.0.1:{mp}/v1", "--data-dir", d,
                           "--access-log", "off", "--compress-at-rest", mode],
                          stderr=subprocess.DEVNULL)
    try:
        wait_up(gp)
        fill(gp, bodies)
        for _ in range(600):
            tiers = stats(gp)["tiers"]
            disk, mem = tiers["disk"], tiers["memory"]
            if disk["stored"] >= len(bodies):
                break
            time.sleep(0.1)
        gw.terminate()
        gw.wait(60)
        st = os.stat(os.path.join(d, "data.mdb"))
        dicts = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
                    if f.startswith("zdict-"))
        n = disk["stored"]
        raw = sum(len(b.encode()) for b in bodies)
        print(f"--compress-at-rest {mode:3}: {n} answers ({raw / n:.0f} body bytes each): data.mdb "
              f"{st.st_size / 1048576:.1f} MiB ({st.st_size / n:.0f} B/answer, "
              f"{n / st.st_size * 1e9:.0f} answers/GB), allocated {st.st_blocks * 512 / n:.0f} "
              f"B/answer; dictionaries {dicts} B; raw {disk['stored_raw_bytes']} -> packed "
              f"{disk['stored_packed_bytes']} ({disk['stored_raw_bytes'] / disk['stored_packed_bytes']:.2f}x)")
        print(f"{'':24}memory tier: {mem['entries']} answers, {mem['bytes'] / mem['entries']:.0f} B "
              f"charged each ({mem['entries'] / mem['bytes'] * 1e9:.0f} answers/GB)")
        return st.st_size / n
    finally:
        if gw.poll() is None:
            gw.kill()
        mock.kill()
        mock.wait()
        subprocess.run(["rm", "-rf", d])


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    bodies = answers(sys.argv[2])
    off = run(sys.argv[1], bodies, "off")
    on = run(sys.argv[1], bodies, "on")
    print(f"answers per GB of data file: {off / on:.2f}x with compression at rest")


if __name__ == "__main__":
    main()
