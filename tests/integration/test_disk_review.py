"""Review of the disk tier (--data-dir) and the upstream client: regressions
for what broke, each asserted on what a client receives and on /stats.

Decisions a newcomer would otherwise get wrong:
- tiers.disk.stored counts committed entries, so waiting for it is how a
  test knows an answer is on disk (see test_disk.py).
- Entries are read back with `Cache-Control: only-if-cached`: a miss is a
  504, never an upstream call.
- A gateway stopped on purpose is marked must_survive = False; one that dies
  on its own fails the test at teardown (the procs fixture).
"""

from conftest import chat_body, wait_until

OIC = {"Cache-Control": "only-if-cached"}


def disk_gateway(gateway_factory, mock, data_dir, *extra, **kw):
    return gateway_factory(mock, args=["--data-dir", str(data_dir), *extra], **kw)


def dstats(g):
    return g.stats()["tiers"]["disk"]


def stop(g):
    g.must_survive = False
    problem = g.stop()
    assert problem is None, f"{g.name} {problem}:\n{g.stderr()}"


def wait_committed(g, n, timeout=10.0):
    wait_until(lambda: dstats(g)["stored"] + dstats(g)["errors"] >= n, timeout=timeout,
               interval=0.02, what=f"{n} disk writes done")


# ------------------------------------------------------------ disk: --disk-max

def test_big_answers_crossing_disk_max_do_not_empty_the_disk_tier(gateway_factory, mock, tmp_path):
    # 200 KB answers in a 4 MB file: about a dozen fit below the low mark.
    # Eviction used to remove 64 entries per size check, so each time the
    # file filled, every answer on disk went at once.
    g = disk_gateway(gateway_factory, mock, tmp_path / "data", "--disk-max", "4M")
    most = 0
    for i in range(40):
        r = g.chat(chat_body(f"big answer {i}", mock={"bytes": 200000}))
        assert r.status_code == 200 and len(r.content) >= 200000
        wait_committed(g, i + 1)
        d = dstats(g)
        assert d["errors"] == 0 and d["dropped"] == 0, d
        assert d["entries"] + d["evicted_size"] == i + 1, d
        most = max(most, d["entries"])
        if d["evicted_size"]:
            assert d["entries"] >= most * 2 // 3, f"answer {i}: the disk tier emptied itself: {d}"
    assert most >= 10 and dstats(g)["evicted_size"] > 0


# ------------------------------------------------------------ disk: a damaged file

def test_data_file_cut_short_is_misses_not_a_crash(gateway_factory, mock, tmp_path):
    # A data.mdb shorter than its meta page says (a power loss between
    # syncs, a partial copy) used to kill the gateway with SIGBUS on the
    # first lookup that reached a lost page, and again after every restart.
    data = tmp_path / "data"
    g = disk_gateway(gateway_factory, mock, data)
    bodies = [chat_body(f"kept or lost {i}", mock={"bytes": 6000}) for i in range(300)]
    before = [g.chat(b).content for b in bodies]
    wait_committed(g, len(bodies))
    assert dstats(g)["errors"] == 0
    stop(g)
    f = data / "data.mdb"
    size = f.stat().st_size
    assert size > 1 << 20
    with open(f, "r+b") as fh:
        fh.truncate(size // 2)

    g2 = disk_gateway(gateway_factory, mock, data)
    calls = mock.stats()["chat"]
    hits = 0
    for b, want in zip(bodies, before):
        r = g2.chat(b, headers=OIC)
        assert r.status_code in (200, 504), r.text
        if r.status_code == 200:
            assert r.content == want, "a damaged file must never give a wrong body"
            hits += 1
    assert g2.alive()
    assert hits < len(bodies) and dstats(g2)["errors"] > 0
    assert mock.stats()["chat"] == calls
    # Still serving, and misses still go upstream.
    assert g2.chat(chat_body("after the damage")).status_code == 200


# ------------------------------------------------------------ upstream: connect timeout

def blackhole():
    """A listening socket whose accept queue is full: the kernel drops
    further SYNs, so a connect to it neither succeeds nor is refused (a
    firewalled or dead host). Returns (port, sockets to close)."""
    import socket
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    keep = [lst]
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(lst.getsockname())
        except BlockingIOError:
            pass
        keep.append(c)
    return lst.getsockname()[1], keep


def test_connect_timeout_is_retried_as_a_connect_failure(gateway_factory, mock):
    # A connect that timed out (nothing reached the upstream) used to be a
    # 504 "upstream timed out" that --upstream-retries never retried.
    port, keep = blackhole()
    try:
        g = gateway_factory(f"http://127.0.0.1:{port}/v1",
                            args=["--upstream-retries", "2", "--connect-timeout", "0.2"])
        r = g.chat(chat_body("nobody answers the SYN"))
        assert r.status_code == 502, r.text
        assert "connect" in r.json()["error"]["message"]
        st = g.stats()
        assert st["upstream_calls"] == 3 and st["upstream_retries"] == 2, st
        assert st["upstream_errors"]["connect"] == 1 and st["upstream_errors"]["timeout"] == 0
    finally:
        for s in keep:
            s.close()
    # A call whose request went out and then timed out is not retried.
    g2 = gateway_factory(mock, args=["--upstream-retries", "2", "--upstream-timeout", "0.5"])
    r = g2.chat(chat_body("sent, then silence", mock={"fault": "stall"}))
    assert r.status_code == 504
    assert mock.stats()["chat"] == 1 and g2.stats()["upstream_retries"] == 0
