"""Issue 7: framing and abuse. Request smuggling and malformed requests, idle
connections up to --max-connections, slowloris, header injection through a
cached body, and an error body that quotes bytes a client sent.

The table below puts exact bytes on the wire. For every case the client must
see one 4xx answer with an OpenAI-shaped error body, then the end of the
connection (no second answer: bytes after a bad head must never be read as a
request), and the mock's call count must not move (nothing reached the
upstream). Each case's body is unique, so a request that slipped through
would be a miss that the mock counts, not a hit that hides it.

The table runs against one gateway and mock for the module (starting a pair
per case would triple the runtime); the pair is checked alive after every case
and stopped cleanly at the end.
"""

import asyncio
import json
import socket
import time

import pytest

from conftest import (Gateway, Mock, RawConn, assert_error_shape, async_open_many,
                      async_read_response, chat_body, http_request, nofile_limit, session,
                      wait_until)

CHAT = "/v1/chat/completions"


def body_for(name):
    return json.dumps(chat_body(f"framing case {name}")).encode()


def head(name, extra=b"", line=b"POST /v1/chat/completions HTTP/1.1"):
    return line + b"\r\nHost: localhost\r\nContent-Type: application/json\r\n" + extra


def cl(name):
    return b"Content-Length: " + str(len(body_for(name))).encode() + b"\r\n"


def chunked(data):
    return hex(len(data))[2:].encode() + b"\r\n" + data + b"\r\n0\r\n\r\n"


TE = b"Transfer-Encoding: chunked\r\n"


def cases():
    """name -> (bytes, expected status). Built per name so each body is unique."""
    c = {}

    def add(name, status, build):
        c[name] = (build(name, body_for(name)), status)

    # Conflicting or malformed lengths.
    add("cl-twice-differing", 400, lambda n, b: head(n, cl(n) + b"Content-Length: 5\r\n\r\n") + b)
    add("cl-twice-same", 400, lambda n, b: head(n, cl(n) + cl(n) + b"\r\n") + b)
    add("cl-list", 400, lambda n, b: head(n, b"Content-Length: %d, %d\r\n\r\n" % (len(b), len(b))) + b)
    add("cl-plus-sign", 400, lambda n, b: head(n, b"Content-Length: +%d\r\n\r\n" % len(b)) + b)
    add("cl-negative", 400, lambda n, b: head(n, b"Content-Length: -1\r\n\r\n") + b)
    add("cl-hex", 400, lambda n, b: head(n, b"Content-Length: 0x%x\r\n\r\n" % len(b)) + b)
    add("cl-trailing-garbage", 400, lambda n, b: head(n, b"Content-Length: %dabc\r\n\r\n" % len(b)) + b)
    add("cl-empty", 400, lambda n, b: head(n, b"Content-Length:\r\n\r\n") + b)
    add("cl-overflow", 400, lambda n, b: head(n, b"Content-Length: 99999999999999999999999\r\n\r\n") + b)
    # Content-Length together with Transfer-Encoding (the classic CL.TE / TE.CL desync).
    add("cl-then-te", 400, lambda n, b: head(n, cl(n) + TE + b"\r\n") + chunked(b))
    add("te-then-cl", 400, lambda n, b: head(n, TE + cl(n) + b"\r\n") + chunked(b))
    add("te-with-cl-zero", 400, lambda n, b: head(n, TE + b"Content-Length: 0\r\n\r\n") + chunked(b))
    add("cl-te-smuggled-request", 400, lambda n, b: head(n, b"Content-Length: 5\r\n" + TE + b"\r\n")
        + b"0\r\n\r\n" + http_request("POST", CHAT, b))
    # Transfer-Encoding oddities.
    add("te-chunked-twice", 400, lambda n, b: head(n, TE + TE + b"\r\n") + chunked(b))
    add("te-chunked-chunked-list", 400,
        lambda n, b: head(n, b"Transfer-Encoding: chunked, chunked\r\n\r\n") + chunked(b))
    add("te-identity-chunked", 400,
        lambda n, b: head(n, b"Transfer-Encoding: identity, chunked\r\n\r\n") + chunked(b))
    add("te-unknown-coding", 400, lambda n, b: head(n, b"Transfer-Encoding: gzip\r\n\r\n") + b)
    add("te-xchunked", 400, lambda n, b: head(n, b"Transfer-Encoding: xchunked\r\n\r\n") + chunked(b))
    add("te-space-before-colon", 400,
        lambda n, b: head(n, b"Transfer-Encoding : chunked\r\n\r\n") + chunked(b))
    add("te-in-http10", 400, lambda n, b: head(n, TE + b"\r\n", line=b"POST /v1/chat/completions HTTP/1.0")
        + chunked(b))
    # Obsolete line folding.
    add("obs-fold-space", 400, lambda n, b: head(n, b"X-Folded: a\r\n b\r\n" + cl(n) + b"\r\n") + b)
    add("obs-fold-tab", 400, lambda n, b: head(n, b"X-Folded: a\r\n\tb\r\n" + cl(n) + b"\r\n") + b)
    add("obs-fold-first-header", 400,
        lambda n, b: b"POST /v1/chat/completions HTTP/1.1\r\n Host: localhost\r\n" + cl(n) + b"\r\n" + b)
    add("obs-fold-of-content-length", 400,
        lambda n, b: head(n, b"Content-Length:\r\n %d\r\n\r\n" % len(b)) + b)
    # Bad chunk sizes and chunk-size overflow.
    add("chunk-size-not-hex", 400, lambda n, b: head(n, TE + b"\r\n") + b"zz\r\n" + b + b"\r\n0\r\n\r\n")
    add("chunk-size-negative", 400, lambda n, b: head(n, TE + b"\r\n") + b"-5\r\n" + b + b"\r\n0\r\n\r\n")
    add("chunk-size-0x-prefix", 400,
        lambda n, b: head(n, TE + b"\r\n") + b"0x%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n")
    add("chunk-size-empty", 400, lambda n, b: head(n, TE + b"\r\n") + b"\r\n" + b + b"\r\n0\r\n\r\n")
    add("chunk-size-leading-space", 400,
        lambda n, b: head(n, TE + b"\r\n") + b" %x\r\n" % len(b) + b + b"\r\n0\r\n\r\n")
    add("chunk-shorter-than-data", 400, lambda n, b: head(n, TE + b"\r\n") + b"3\r\n" + b + b"\r\n0\r\n\r\n")
    add("chunk-size-2^64", 400,
        lambda n, b: head(n, TE + b"\r\n") + b"1" + b"0" * 16 + b"\r\n" + b + b"\r\n0\r\n\r\n")
    add("chunk-size-2^64-1", 400, lambda n, b: head(n, TE + b"\r\n") + b"f" * 16 + b"\r\n" + b)
    add("chunk-size-40-digits", 400, lambda n, b: head(n, TE + b"\r\n") + b"f" * 40 + b"\r\n" + b)
    # NUL and control bytes.
    add("nul-in-header-value", 400, lambda n, b: head(n, b"X-A: a\x00b\r\n" + cl(n) + b"\r\n") + b)
    add("nul-in-header-name", 400, lambda n, b: head(n, b"X-\x00A: a\r\n" + cl(n) + b"\r\n") + b)
    add("ctl-in-header-name", 400, lambda n, b: head(n, b"X-\x01A: a\r\n" + cl(n) + b"\r\n") + b)
    add("ctl-in-header-value", 400, lambda n, b: head(n, b"X-A: a\x01b\r\n" + cl(n) + b"\r\n") + b)
    add("del-in-header-value", 400, lambda n, b: head(n, b"X-A: a\x7fb\r\n" + cl(n) + b"\r\n") + b)
    add("cr-alone-in-header-value", 400, lambda n, b: head(n, b"X-A: a\rb\r\n" + cl(n) + b"\r\n") + b)
    add("nul-in-target", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                  line=b"POST /v1/chat/completions\x00 HTTP/1.1") + b)
    add("esc-in-request-line", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                        line=b"POST /v1/chat/\x1bcompletions HTTP/1.1") + b)
    add("nul-in-trailer", 400, lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b"\r\n"
        + b + b"\r\n0\r\nX-T: a\x00b\r\n\r\n")
    # Bare LF and stray CR.
    add("bare-lf-everywhere", 400,
        lambda n, b: b"POST /v1/chat/completions HTTP/1.1\nHost: localhost\nContent-Length: %d\n\n" % len(b) + b)
    add("bare-lf-one-header", 400, lambda n, b: head(n, b"X-A: b\n" + cl(n) + b"\r\n") + b)
    add("bare-lf-request-line", 400,
        lambda n, b: b"POST /v1/chat/completions HTTP/1.1\nHost: localhost\r\n" + cl(n) + b"\r\n" + b)
    add("cr-cr-lf", 400, lambda n, b: head(n, b"X-A: b\r\r\n" + cl(n) + b"\r\n") + b)
    add("bare-lf-after-chunk-size", 400,
        lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b"\n" + b + b"\r\n0\r\n\r\n")
    add("bare-lf-after-chunk-data", 400,
        lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b"\r\n" + b + b"\n0\r\n\r\n")
    add("bare-lf-last-chunk", 400,
        lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b"\r\n" + b + b"\r\n0\n\n")
    # Chunk framing libhttp-parser (non-strict, as Debian builds it) lets
    # through; refused by the strict chunk scan (src/http/chunk_scan.c).
    # It takes any two bytes after chunk data as their CRLF.
    add("chunk-data-not-followed-by-crlf", 400,
        lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b"\r\n" + b + b"XX0\r\n\r\n")
    # A front end that ends the chunk line at the LF sees different chunks.
    add("bare-lf-in-chunk-extension", 400,
        lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b";a\nb\r\n" + b + b"\r\n0\r\n\r\n")
    # chunk-ext is ;token[=token|quoted-string] (RFC 9112 7.1.1).
    add("nul-in-chunk-extension", 400,
        lambda n, b: head(n, TE + b"\r\n") + hex(len(b))[2:].encode() + b";\x00\r\n" + b + b"\r\n0\r\n\r\n")
    add("bare-lf-in-trailer", 400, lambda n, b: head(n, TE + b"\r\n") + chunked(b)[:-2] + b"X-T: a\nb\r\n\r\n")
    # Huge header counts (the default --max-headers is 100).
    add("101-headers", 431, lambda n, b: head(n, b"".join(b"X-%d: v\r\n" % i for i in range(101))
                                              + cl(n) + b"\r\n") + b)
    add("5000-headers", 431, lambda n, b: head(n, b"".join(b"X-%d: v\r\n" % i for i in range(5000))
                                               + cl(n) + b"\r\n") + b)
    # Request targets: this is not a proxy.
    add("absolute-form", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                  line=b"POST http://evil.example/v1/chat/completions HTTP/1.1") + b)
    add("absolute-form-https", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                        line=b"POST https://127.0.0.1/v1/chat/completions HTTP/1.1") + b)
    add("authority-form", 400, lambda n, b: b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
    add("asterisk-form-get", 400, lambda n, b: b"GET * HTTP/1.1\r\nHost: localhost\r\n\r\n")
    add("fragment-in-target", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                       line=b"POST /v1/chat/completions#x HTTP/1.1") + b)
    add("space-in-target", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                    line=b"POST /v1/chat/ completions HTTP/1.1") + b)
    add("missing-target", 400, lambda n, b: head(n, cl(n) + b"\r\n", line=b"POST HTTP/1.1") + b)
    # Host.
    add("http11-without-host", 400,
        lambda n, b: b"POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
        + cl(n) + b"\r\n" + b)
    add("http10-without-host", 400,
        lambda n, b: b"POST /v1/chat/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
        + cl(n) + b"\r\n" + b)  # issue 7 refuses it too, though RFC 9112 only requires Host of 1.1
    add("two-hosts", 400, lambda n, b: head(n, b"Host: y\r\n" + cl(n) + b"\r\n") + b)
    # Methods.
    add("method-with-at-sign", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                        line=b"P@ST /v1/chat/completions HTTP/1.1") + b)
    add("method-unknown", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                   line=b"FROB /v1/chat/completions HTTP/1.1") + b)
    add("method-lowercase", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                     line=b"post /v1/chat/completions HTTP/1.1") + b)
    add("method-tab-separator", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                         line=b"POST\t/v1/chat/completions HTTP/1.1") + b)
    # Versions.
    add("version-2.0", 505, lambda n, b: head(n, cl(n) + b"\r\n", line=b"POST /v1/chat/completions HTTP/2.0") + b)
    add("version-0.9-none", 505, lambda n, b: head(n, cl(n) + b"\r\n", line=b"POST /v1/chat/completions") + b)
    add("version-garbage", 400, lambda n, b: head(n, cl(n) + b"\r\n", line=b"POST /v1/chat/completions HTTP/1.x") + b)
    add("version-lowercase", 400, lambda n, b: head(n, cl(n) + b"\r\n", line=b"POST /v1/chat/completions http/1.1") + b)
    add("version-trailing-space", 400, lambda n, b: head(n, cl(n) + b"\r\n",
                                                           line=b"POST /v1/chat/completions HTTP/1.1 ") + b)
    add("version-not-http", 400, lambda n, b: head(n, cl(n) + b"\r\n", line=b"POST /v1/chat/completions FTP/1.1") + b)
    # Whitespace between a header name and the colon (RFC 9112 5.1: 400).
    add("space-before-colon", 400, lambda n, b: head(n, b"Content-Length : %d\r\n\r\n" % len(b)) + b)
    add("tab-before-colon", 400, lambda n, b: head(n, b"Content-Length\t: %d\r\n\r\n" % len(b)) + b)
    add("empty-header-name", 400, lambda n, b: head(n, b": v\r\n" + cl(n) + b"\r\n") + b)
    add("header-without-colon", 400, lambda n, b: head(n, b"X-No-Colon\r\n" + cl(n) + b"\r\n") + b)
    # Expect we cannot meet.
    add("expect-unknown", 417, lambda n, b: head(n, b"Expect: 200-ok\r\n" + cl(n) + b"\r\n") + b)
    return c


CASES = cases()

# ------------------------------------------------------------ one pair for the table

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("framing")
    m = Mock(tmp)
    g = None
    try:
        g = Gateway(tmp, m.url)
        yield m, g
    finally:
        problems = []
        for p in (g, m):
            if p is None:
                continue
            if not p.alive():
                problems.append(f"{p.name} died with {p.proc.returncode}:\n{p.stderr()}")
            else:
                problem = p.stop()
                if problem:
                    problems.append(f"{p.name} {problem}:\n{p.stderr()}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def exchange(port, data):
    """Sends data, reads one answer, then reports whether the server closed
    the connection without sending anything more."""
    with RawConn(port) as c:
        try:
            c.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        st, hdrs, body = c.read_response()
        extra = c.buf
        closed = c.closed_by_peer(timeout=3)
        return st, hdrs, body, extra, closed


def check_refused(m, g, name, data, status):
    calls = m.calls()
    st, hdrs, body, extra, closed = exchange(g.port, data)
    assert st == status, (name, st, body[:300])
    assert_error_shape(body)
    assert not extra, f"{name}: more bytes after the error answer: {extra[:200]!r}"
    assert closed, f"{name}: the connection must be closed after the error"
    assert hdrs.get("connection", "").lower() == "close", hdrs
    assert m.calls() == calls, f"{name} reached the upstream"
    assert g.alive()
    assert session().get(g.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_request_is_refused_closed_and_never_forwarded(pair, name):
    m, g = pair
    data, status = CASES[name]
    check_refused(m, g, name, data, status)


def test_the_table_can_fail_well_framed_twins_reach_the_upstream(pair):
    """The assertions above can fail: the same kind of bytes, framed
    correctly, are answered 200 and counted by the mock."""
    m, g = pair
    for name, data in [
        ("twin-cl", head("twin-cl", cl("twin-cl") + b"\r\n") + body_for("twin-cl")),
        ("twin-chunked", head("twin-chunked", TE + b"\r\n") + chunked(body_for("twin-chunked"))),
        ("twin-chunk-ext", head("twin-chunk-ext", TE + b"\r\n") + hex(len(body_for("twin-chunk-ext")))[2:].encode()
         + b";name=value\r\n" + body_for("twin-chunk-ext") + b"\r\n0\r\n\r\n"),
        ("twin-chunk-ext-quoted-trailer", head("twin-chunk-ext-quoted-trailer", TE + b"\r\n")
         + hex(len(body_for("twin-chunk-ext-quoted-trailer")))[2:].encode() + b' ; a = "q\\"; x" ;b\r\n'
         + body_for("twin-chunk-ext-quoted-trailer") + b"\r\n0\r\nX-Trailer: t\r\n\r\n"),
        ("twin-http10-host", head("twin-http10-host", cl("twin-http10-host") + b"\r\n",
                                  line=b"POST /v1/chat/completions HTTP/1.0") + body_for("twin-http10-host")),
    ]:
        calls = m.calls()
        st, hdrs, body, extra, closed = exchange(g.port, data)
        assert st == 200, (name, body[:300])
        assert m.calls() == calls + 1, name


# ------------------------------------------------------------ idle connections

N_IDLE = 2000


def test_idle_connections_up_to_the_limit_then_503(mock, gateway_factory):
    if nofile_limit() < 2 * N_IDLE + 200:
        pytest.skip(f"needs ~{2 * N_IDLE + 200} file descriptors, limit is {nofile_limit()}")
    spare = 5
    # One thread so that --max-connections is exact (it is split across threads).
    g = gateway_factory(mock, threads=1,
                        args=["--max-connections", N_IDLE + 1 + spare, "--idle-timeout", 60,
                              "--header-timeout", 60])
    hot = chat_body("hot while idle connections pile up")
    assert g.chat(hot).headers.get("X-Cache") == "MISS"
    g.http.close()  # its keep-alive connection would take a slot
    sanitized = g.sanitized()
    rss0 = g.rss_kb()
    hot_req = http_request("POST", CHAT, hot)
    calls = mock.calls()

    async def main():
        idle = await async_open_many(g.port, N_IDLE)
        try:
            await asyncio.sleep(0.3)  # let the gateway accept the last of them
            rss1 = g.rss_kb()
            # Hits are still answered, fast, on a connection of their own.
            r, w = await asyncio.open_connection("127.0.0.1", g.port)
            times = []
            for _ in range(20):
                t = time.monotonic()
                w.write(hot_req)
                st, hdrs, body = await asyncio.wait_for(async_read_response(r), 5)
                times.append(time.monotonic() - t)
                assert st == 200 and hdrs.get("x-cache") == "HIT", (st, hdrs)
            # Fill the spare slots; they are served.
            extra = await async_open_many(g.port, spare)
            for er, ew in extra:
                ew.write(http_request("GET", "/healthz"))
                st, _, _ = await asyncio.wait_for(async_read_response(er), 5)
                assert st == 200
            # One more: over --max-connections, 503 and closed.
            over_r, over_w = await asyncio.open_connection("127.0.0.1", g.port)
            over_w.write(http_request("GET", "/healthz"))
            st, hdrs, body = await asyncio.wait_for(async_read_response(over_r), 5)
            assert st == 503, (st, body)
            assert_error_shape(body)
            assert await asyncio.wait_for(over_r.read(1), 5) == b"", "503 must close the connection"
            # The idle ones are still open (a request on one of them is served).
            r0, w0 = idle[0]
            w0.write(http_request("GET", "/healthz"))
            st, _, _ = await asyncio.wait_for(async_read_response(r0), 5)
            assert st == 200
            for _, ew in extra:
                ew.close()
            over_w.close()
            w.close()
            return times, rss1
        finally:
            for _, iw in idle:
                iw.close()

    times, rss1 = asyncio.run(main())
    print(f"{N_IDLE} idle connections: RSS {rss0} -> {rss1} kB; hits "
          f"p50 {sorted(times)[len(times) // 2] * 1000:.2f} ms, max {max(times) * 1000:.2f} ms")
    assert max(times) < 0.25, times
    assert mock.calls() == calls, "the hits must not reach the upstream"
    if not sanitized:
        # Each idle connection costs its buffers, not more: well under 32 kB.
        assert rss1 - rss0 < N_IDLE * 32, f"RSS grew {rss1 - rss0} kB for {N_IDLE} idle connections"

    # Once they are closed, new connections are accepted again.
    def accepted():
        try:
            return session().get(g.url + "/healthz", timeout=2).status_code == 200
        except OSError:
            return False
    wait_until(accepted, timeout=5, what="a connection slot to free up")


# ------------------------------------------------------------ slowloris

def test_slowloris_clients_are_cut_off_with_408_while_others_are_served(mock, gateway_factory):
    n_slow, timeout_s = 20, 3
    g = gateway_factory(mock, args=["--header-timeout", timeout_s])
    hot = chat_body("served during slowloris")
    assert g.chat(hot).status_code == 200
    head_bytes = http_request("POST", CHAT, hot)

    async def slowloris():
        r, w = await asyncio.open_connection("127.0.0.1", g.port)
        t0 = time.monotonic()
        sent = 0
        answer = b""
        while time.monotonic() - t0 < timeout_s + 5:
            try:
                w.write(head_bytes[sent:sent + 1])  # one byte a second, never the whole head
                await w.drain()
                sent += 1
            except (ConnectionError, OSError):
                break
            try:
                answer += await asyncio.wait_for(r.read(65536), 1.0)
                break
            except asyncio.TimeoutError:
                continue
        # Read the rest of the answer up to EOF.
        try:
            while True:
                chunk = await asyncio.wait_for(r.read(65536), 3)
                if not chunk:
                    eof = True
                    break
                answer += chunk
        except asyncio.TimeoutError:
            eof = False
        except ConnectionError:
            eof = True
        w.close()
        return answer, time.monotonic() - t0, sent, eof

    async def normal():
        """Normal clients meanwhile: every second a hit, answered at once."""
        times = []
        for _ in range(timeout_s + 1):
            await asyncio.sleep(0.7)
            r, w = await asyncio.open_connection("127.0.0.1", g.port)
            t = time.monotonic()
            w.write(head_bytes)
            st, hdrs, _ = await asyncio.wait_for(async_read_response(r), 5)
            times.append(time.monotonic() - t)
            assert st == 200 and hdrs.get("x-cache") == "HIT"
            w.close()
        return times

    async def main():
        return await asyncio.gather(normal(), *(slowloris() for _ in range(n_slow)))

    calls = mock.calls()
    times, *slow = asyncio.run(main())
    for answer, elapsed, sent, eof in slow:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert eof, "the slowloris connection must be closed after the 408"
        assert timeout_s - 0.5 <= elapsed <= timeout_s + 2.5, elapsed
        assert sent < len(head_bytes)
        body = answer.split(b"\r\n\r\n", 1)[1]
        assert_error_shape(body)
    assert max(times) < 0.25, times
    assert mock.calls() == calls
    assert g.stats()["hits"] >= timeout_s + 1


# ------------------------------------------------------------ header injection

INJECT = ("ignore\r\n\r\nHTTP/1.1 200 OK\r\nX-Injected: yes\r\nSet-Cookie: a=b\r\n"
          "Content-Length: 0\r\n\r\n\n\r\u2028\u0085 end")


def header_names(hdrs):
    return sorted(k for k in hdrs)


def test_header_injection_through_a_cached_body_is_impossible(gateway, mock):
    evil = chat_body(INJECT)
    plain = chat_body("plain question")
    with RawConn(gateway.port) as c:
        seen = {}
        for label, body in (("evil-miss", evil), ("evil-hit", evil),
                            ("plain-miss", plain), ("plain-hit", plain)):
            c.send(http_request("POST", CHAT, body))
            seen[label] = c.read_response()
        # The connection is still in step: another request gets its own answer.
        c.send(http_request("GET", "/healthz"))
        st, _, hb = c.read_response()
        assert st == 200 and json.loads(hb) == {"status": "ok"}
        assert not c.buf
    for label, (st, hdrs, body) in seen.items():
        assert st == 200, label
        assert "x-injected" not in hdrs and "set-cookie" not in hdrs, (label, hdrs)
        assert int(hdrs["content-length"]) == len(body)
        json.loads(body)  # the body is one JSON document, exactly Content-Length long
    # The evil answer really carries the sequences (escaped, as JSON must).
    content = json.loads(seen["evil-hit"][2])["choices"][0]["message"]["content"]
    assert "\r\n\r\nHTTP/1.1 200 OK\r\nX-Injected: yes" in content
    # Byte-identical hit, and the same header names as any other hit.
    assert seen["evil-hit"][2] == seen["evil-miss"][2]
    assert seen["evil-hit"][1]["x-cache"] == "HIT"
    assert header_names(seen["evil-hit"][1]) == header_names(seen["plain-hit"][1])
    assert header_names(seen["evil-miss"][1]) == header_names(seen["plain-miss"][1])
    # /ask renders the same cached text inside its own JSON: still no header.
    r = gateway.get("/ask", params={"q": INJECT})
    r2 = gateway.get("/ask", params={"q": INJECT})
    assert r.status_code == r2.status_code == 200
    assert "X-Injected" not in r2.headers and "Set-Cookie" not in r2.headers
    assert r2.json()["source"] == "cache"
    assert "X-Injected: yes" in r2.json()["answer"]


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
            # http_request writes header values as latin-1: these exact bytes.
            s.sendall(http_request("POST", CHAT, chat_body("bad ttl"),
                                   {"Connection": "close", "X-Cache-TTL": value.decode("latin-1")}))
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
