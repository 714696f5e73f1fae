"""Review of the HTTP/1.1 server layer (src/http/): regressions for what a
client saw go wrong, each test named after it. The exact bytes and the
timing are the client's; every test runs the real binary.

Decisions a newcomer would otherwise get wrong:
- The slow-client tests shrink the client's receive buffer before connecting
  (SO_RCVBUF), so the server's writes wait on this client at once instead of
  after the kernel has absorbed megabytes.
- Timeouts are set in milliseconds on the command line ("500ms") to keep the
  tests short; the waits around them are bounded polls, never bare sleeps.
"""

import json
import socket
import time

import requests

from conftest import chat_body, wait_until

CHAT = "/v1/chat/completions"


def small_window_conn(port, rcvbuf=16384, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def post_bytes(body, extra=b""):
    data = json.dumps(body).encode()
    return (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: %d\r\n\r\n" % len(data) + data)


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the head: {buf[:200]!r}"
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split(" ")[1]), hdrs, rest


# ------------------------------------------------------------ send timeout

def test_a_slow_steady_reader_gets_a_big_answer_whole(mock, gateway_factory):
    """The send timeout bounds a stall, not a whole download: an 8 MB answer
    read steadily at a few MB/s takes seconds, far past a 300 ms timeout,
    and must arrive whole. It used to be cut once the one write carrying it
    had taken longer than the timeout."""
    g = gateway_factory(mock, args=["--idle-timeout", "300ms"], threads=1)
    size = 8 << 20
    s = small_window_conn(g.port)
    try:
        s.sendall(post_bytes(chat_body("slow steady reader", mock={"bytes": size})))
        status, hdrs, got = read_head(s)
        assert status == 200, hdrs
        want = int(hdrs["content-length"])
        assert want >= size
        t0 = time.monotonic()
        while len(got) < want:
            time.sleep(0.005)
            chunk = s.recv(32768)
            assert chunk, f"cut after {len(got)} of {want} bytes, {time.monotonic() - t0:.1f}s in"
            got += chunk
        assert json.loads(got)["object"] == "chat.completion"
    finally:
        s.close()


def test_a_client_that_stops_reading_a_stream_is_dropped(mock, gateway_factory):
    """A client that reads nothing of a stream its upstream keeps producing
    is dropped at the send timeout once the kernel holds all it will. It used
    to be kept, and sent an ever growing queue of copies, because every new
    event relayed pushed the deadline on."""
    g = gateway_factory(mock, args=["--idle-timeout", "500ms", "--complete-abandoned", "off"],
                        threads=1)
    body = chat_body("stalled stream reader", stream=True,
                     mock={"bytes": 3_000_000, "fault": "endless-stream"})
    s = small_window_conn(g.port)
    try:
        s.sendall(post_bytes(body))
        status, hdrs, _ = read_head(s)
        assert status == 200, hdrs
        # ~1.5 MB/s from the mock: a few MB fill the socket buffers in a few
        # seconds, then the timeout runs out 0.5 s later.
        # Each poll on a new connection: with a 500 ms idle timeout the server
        # may close a pooled one just as the next poll reuses it.
        wait_until(lambda: requests.get(g.url + "/stats", timeout=5).json()["aborted"] >= 1,
                   timeout=15, what="the stalled client to be dropped")
    finally:
        s.close()


# ------------------------------------------------------------ error bodies

def test_an_error_quoting_a_non_utf8_header_still_has_its_json_body(gateway, mock):
    """A bad X-Cache-TTL is quoted in the 400's message; a value with bytes
    from 0x80 up (which a header may hold) used to leave the 400 with an
    empty body, as jansson refuses a string that is not UTF-8. A cut in the
    middle of a character (the quote is 40 bytes at most) did the same.
    Such bytes are now quoted as '?'."""
    for value in (b"\xff", b"a" + "é".encode() * 30):
        s = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        try:
            s.sendall(post_bytes(chat_body("bad ttl"), b"Connection: close\r\nX-Cache-TTL: " + value
                                 + b"\r\n"))
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        head, body = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 400 "), head
        err = json.loads(body)["error"]
        assert err["code"] == "invalid_cache_control", err
        # Bytes from 0x80 up are quoted as '?'.
        quoted = "'?'" if value == b"\xff" else "'a" + "?" * 39 + "'"
        assert "X-Cache-TTL" in err["message"] and quoted in err["message"], err
    assert mock.calls() == 0
