"""Upstream retries (issue 7): --upstream-retries and --retry-unsafe.

A connect failure, 429 and 503 are retried within the budget (the request
never ran on the model); Retry-After is honoured; failures after which the
model may have seen the request are retried only with --retry-unsafe, and
never once something was relayed to the client."""
import email.utils
import socket
import time

import pytest

from conftest import assert_error_shape, chat_body, free_port, read_stream


def xcache(r):
    return r.headers.get("X-Cache")


def test_no_retries_by_default(gateway, mock):
    r = gateway.chat(chat_body("busy", mock={"status": 429}))
    assert r.status_code == 429
    assert mock.stats()["chat"] == 1
    assert gateway.stats()["upstream_retries"] == 0


def test_429_is_retried_after_retry_after_then_passed_on(gateway_factory, mock):
    g = gateway_factory(mock, args=["--upstream-retries", "2"])
    t0 = time.monotonic()
    r = g.chat(chat_body("busy", mock={"status": 429}))
    took = time.monotonic() - t0
    assert r.status_code == 429 and r.headers.get("Retry-After") == "1"
    assert mock.stats()["chat"] == 3, "the first try and two retries"
    assert took >= 1.9, f"Retry-After: 1 was not honoured between tries ({took:.2f}s)"
    st = g.stats()
    assert st["upstream_retries"] == 2 and st["upstream_calls"] == 3
    assert st["entries"] == 0


def test_retry_budget_stays_within_the_upstream_timeout(gateway_factory, mock):
    # Retry-After: 1 s would not fit a 1.5 s budget twice: one retry at most.
    g = gateway_factory(mock, args=["--upstream-retries", "5", "--upstream-timeout", "1.5"])
    t0 = time.monotonic()
    r = g.chat(chat_body("busy budget", mock={"status": 429}))
    assert r.status_code == 429
    assert time.monotonic() - t0 < 3.0
    assert mock.stats()["chat"] == 2


def test_connect_failure_is_retried_then_502(gateway_factory):
    g = gateway_factory(f"http://127.0.0.1:{free_port()}/v1",
                        args=["--upstream-retries", "2", "--connect-timeout", "1"])
    r = g.chat(chat_body("nobody home"))
    assert_error_shape(r, 502)
    st = g.stats()
    assert st["upstream_retries"] == 2 and st["upstream_calls"] == 3
    assert st["upstream_errors"]["connect"] == 1


def test_connect_retry_reaches_an_upstream_that_comes_back(gateway_factory, mock_factory):
    port = free_port()
    g = gateway_factory(f"http://127.0.0.1:{port}/v1",
                        args=["--upstream-retries", "4", "--connect-timeout", "1"])
    import threading
    started = {}

    def late_mock():
        time.sleep(0.25)
        started["mock"] = mock_factory(port=port)

    th = threading.Thread(target=late_mock)
    th.start()
    r = g.chat(chat_body("late upstream"))
    th.join()
    assert r.status_code == 200 and xcache(r) == "MISS"
    assert g.stats()["upstream_retries"] >= 1


def blackhole():
    """A listening socket whose accept queue is full: the kernel drops
    further SYNs, so a connect to it neither succeeds nor is refused (a
    firewalled or dead host). Returns (port, sockets to close)."""
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


def test_server_errors_are_not_retried_unless_unsafe_allowed(gateway_factory, mock):
    g = gateway_factory(mock, args=["--upstream-retries", "2"])
    assert g.chat(chat_body("boom", mock={"status": 500})).status_code == 500
    assert mock.stats()["chat"] == 1, "500 may have run on the model: not retried"
    g2 = gateway_factory(mock, args=["--upstream-retries", "2", "--retry-unsafe", "on"])
    assert g2.chat(chat_body("boom2", mock={"status": 500})).status_code == 500
    assert mock.stats()["chat"] == 1 + 3


def test_a_stream_already_relayed_is_never_retried(gateway_factory, mock):
    g = gateway_factory(mock, args=["--upstream-retries", "2", "--retry-unsafe", "on"])
    body = chat_body("cut me", stream=True, mock={"fault": "cut-stream"})
    status, got = read_stream(f"http://127.0.0.1:{g.port}/v1/chat/completions", body)
    assert status == 200
    assert b"data:" in got and b"[DONE]" not in got
    assert mock.stats()["chat"] == 1
    assert g.stats()["upstream_retries"] == 0


@pytest.mark.parametrize("value", ["-1", "18446744073709551616", "soon"])
def test_unreadable_or_huge_retry_after_never_hangs_the_request(gateway_factory, mock, value):
    """Retry-After: -1 (or a number past 64 bits) once wrapped the wait to
    centuries, which the budget check then wrapped back into "fits": the
    client waited forever. An unreadable value now means the default backoff,
    a huge one a wait that does not fit: either way the 429 comes back."""
    g = gateway_factory(mock, args=["--upstream-retries", "1", "--upstream-timeout", "5"])
    t0 = time.monotonic()
    r = g.chat(chat_body(f"odd retry-after {value}",
                         mock={"status": 429, "retry_after": value, "latency_ms": 1100}),
               timeout=10)
    assert r.status_code == 429
    assert time.monotonic() - t0 < 4.0
    huge = value.isdigit()
    assert mock.stats()["chat"] == (1 if huge else 2), "huge: no retry fits; else one retry"


def test_retry_after_as_an_http_date_is_honoured(gateway_factory, mock):
    g = gateway_factory(mock, args=["--upstream-retries", "1"])
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    t0 = time.monotonic()
    r = g.chat(chat_body("retry at a date", mock={"status": 429, "retry_after": when}))
    took = time.monotonic() - t0
    assert r.status_code == 429 and mock.stats()["chat"] == 2
    assert 1.5 <= took <= 4.5, f"Retry-After: {when} waited {took:.2f}s"
