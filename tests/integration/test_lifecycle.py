"""Lifecycle (issue 17): SIGTERM drains, a second SIGTERM stops at once,
--drain-timeout bounds the drain, the disk writer is flushed, and SIGHUP
reopens the access log for logrotate.

What a client sees: every request the gateway took before the signal gets
its whole answer (streams included), and nothing new is taken after it.
"""

import json
import os
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import chat_body, read_stream, session, wait_until


def in_flight(mock, n, timeout=5):
    wait_until(lambda: mock.calls() >= n, timeout=timeout, what=f"{n} calls at the model")


def connect_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_answers_every_request_in_flight(mock_factory, gateway_factory):
    slow = mock_factory(latency_ms=1500)
    g = gateway_factory(slow, threads=2)
    g.must_survive = False
    results = {}

    def plain(i):
        r = session().post(g.url + "/v1/chat/completions", json=chat_body(f"plain {i}"), timeout=30)
        results[f"plain{i}"] = (r.status_code, r.json())

    def joined():  # waits on the flight "plain 0" leads, maybe on another thread
        r = session().post(g.url + "/v1/chat/completions", json=chat_body("plain 0"), timeout=30)
        results["joined"] = (r.status_code, r.headers["X-Cache"], r.json())

    def stream():
        results["stream"] = read_stream(g.url + "/v1/chat/completions",
                                        chat_body("a stream", stream=True), timeout=30)

    threads = [threading.Thread(target=plain, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=stream))
    for t in threads:
        t.start()
    in_flight(slow, 5)
    threads.append(threading.Thread(target=joined))
    threads[-1].start()
    wait_until(lambda: g.stats()["coalesced"] == 1, what="the joined request")
    g.proc.send_signal(signal.SIGTERM)
    # Nothing new is taken once the signal is handled.
    wait_until(lambda: connect_refused(g.port), timeout=5, what="the listener to close")
    for t in threads:
        t.join(30)
    for i in range(4):
        status, body = results[f"plain{i}"]
        assert status == 200 and body["choices"][0]["message"]["content"], body
    status, xcache, body = results["joined"]
    assert status == 200 and xcache == "COALESCED" and body == results["plain0"][1]
    status, raw = results["stream"]
    assert status == 200
    assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
    assert g.proc.wait(10) == 0
    err = g.stderr()
    assert "draining" in err and "drained" in err, err
    assert [l["status"] for l in g.access_lines()].count(200) >= 6


def test_idle_connections_do_not_hold_the_drain(mock, gateway_factory):
    g = gateway_factory(mock)
    g.must_survive = False
    s = session()
    assert s.post(g.url + "/v1/chat/completions", json=chat_body("keep-alive"), timeout=10).ok
    # s keeps its connection open; a half-sent request does not count either.
    half = socket.create_connection(("127.0.0.1", g.port))
    half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(10) == 0
    assert time.monotonic() - t0 < 3
    half.close()


def test_second_sigterm_stops_at_once(mock_factory, gateway_factory):
    slow = mock_factory(latency_ms=20000)
    g = gateway_factory(slow)
    g.must_survive = False
    got = {}

    def client():
        try:
            got["r"] = session().post(g.url + "/v1/chat/completions", json=chat_body("slow"),
                                      timeout=30)
        except requests.RequestException as e:
            got["e"] = e

    t = threading.Thread(target=client)
    t.start()
    in_flight(slow, 1)
    g.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "draining" in g.stderr(), what="the drain to start")
    time.sleep(0.3)
    assert g.proc.poll() is None  # still draining: the call takes 20 s
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(10) == 0
    assert time.monotonic() - t0 < 3
    t.join(10)
    assert "e" in got or got["r"].status_code >= 500  # cut off, never a made-up answer


def test_drain_timeout_cuts_off_the_rest(mock_factory, gateway_factory):
    slow = mock_factory(latency_ms=20000)
    g = gateway_factory(slow, args=["--drain-timeout", "1"])
    g.must_survive = False
    t = threading.Thread(target=lambda: pytest.raises(requests.RequestException, session().post,
                                                      g.url + "/v1/chat/completions",
                                                      json=chat_body("too slow"), timeout=30))
    t.start()
    in_flight(slow, 1)
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(10) == 0
    assert 0.8 < time.monotonic() - t0 < 5
    assert "--drain-timeout passed" in g.stderr()
    t.join(10)


def test_answers_finished_during_the_drain_reach_the_disk(mock_factory, gateway_factory, tmp_path):
    slow = mock_factory(latency_ms=1000)
    data = str(tmp_path / "data")
    g = gateway_factory(slow, args=["--data-dir", data])
    g.must_survive = False
    got = {}
    t = threading.Thread(target=lambda: got.setdefault(
        "r", session().post(g.url + "/v1/chat/completions", json=chat_body("keep on disk"),
                            timeout=30)))
    t.start()
    in_flight(slow, 1)
    g.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert got["r"].status_code == 200 and got["r"].headers["X-Cache"] == "MISS"
    assert g.proc.wait(10) == 0
    g2 = gateway_factory(slow, args=["--data-dir", data])
    r = g2.chat(content="keep on disk")
    assert r.headers["X-Cache"] == "HIT" and r.json() == got["r"].json()


def test_sighup_reopens_the_access_log(mock, gateway_factory):
    g = gateway_factory(mock)

    def chats():
        return [l for l in g.access_lines() if l["path"] == "/v1/chat/completions"]

    assert g.chat(content="before rotation").status_code == 200
    wait_until(lambda: len(chats()) == 1, what="the first log line")
    rotated = str(g.access_log) + ".1"
    os.rename(g.access_log, rotated)  # what logrotate does, before postrotate
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reopened the access log" in g.stderr(), what="the reopen")
    assert g.chat(content="after rotation").status_code == 200
    wait_until(lambda: len(chats()) == 1, what="a line in the new file")
    assert len(g.access_lines()) == 1  # only the request after the reopen
    with open(rotated) as f:
        old = [json.loads(l) for l in f if l.strip()]
    assert [l["path"] for l in old].count("/v1/chat/completions") == 1
    assert g.proc.poll() is None  # SIGHUP does not stop the gateway


def test_sighup_writes_every_threads_buffered_lines_to_the_old_file(mock, gateway_factory):
    # The flush timer never fires in this test: only the reopen's own
    # flush (each worker on its own thread) can put these lines anywhere.
    g = gateway_factory(mock, threads=2, args=["--access-log-flush", "60"])
    body = chat_body("buffered across a rotation")
    n = 30
    for _ in range(n):  # fresh connections: both threads hold lines
        assert session().post(g.url + "/v1/chat/completions", json=body, timeout=10).ok
    assert g.access_lines() == []  # all still buffered
    rotated = str(g.access_log) + ".1"
    os.rename(g.access_log, rotated)
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reopened the access log" in g.stderr(), what="the reopen")
    with open(rotated) as f:
        old = [json.loads(l) for l in f if l.strip()]
    chats = [l for l in old if l["path"] == "/v1/chat/completions"]
    assert len(chats) == n and {l["thread"] for l in chats} == {0, 1}
    assert g.chat(content="after rotation").status_code == 200
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(15) == 0
    g.must_survive = False
    assert [l["path"] for l in g.access_lines()] == ["/v1/chat/completions"]
