"""Regression tests from a review of the gateway's cache semantics.

Each test is named after what a client saw go wrong: a directive misread, a
header missing or wrong, an answer stored where the response said it was not.
Requests that need exact bytes on the wire (repeated header lines) go through
RawConn; everything else through the fixtures' requests session.
"""

import json

from conftest import RawConn, assert_error_shape, cache_status, chat_body, wait_until

CHAT = "/v1/chat/completions"


def xcache(r):
    return r.headers.get("X-Cache")


def raw_post(port, body, header_lines):
    """POSTs body with header_lines ("Name: value" strings, repeats allowed)
    and returns (status, headers, body)."""
    data = json.dumps(body).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + "".join(l + "\r\n" for l in header_lines) + "\r\n")
    with RawConn(port) as c:
        c.send(head.encode("latin-1") + data)
        return c.read_response()


# ------------------------------------------------------------ 405

def test_405_names_the_allowed_methods_in_allow(gateway):
    r = gateway.http.delete(gateway.url + CHAT, timeout=5)
    assert r.status_code == 405
    assert r.headers.get("Allow") == "POST", dict(r.headers)
    r = gateway.post("/ask?q=hi", {})
    assert r.status_code == 405
    assert r.headers.get("Allow") == "GET, HEAD", dict(r.headers)


# ------------------------------------------------------------ request Cache-Control

def test_cache_control_on_two_header_lines_is_one_list(gateway, mock):
    """RFC 9110 5.3: `Cache-Control: a` and `Cache-Control: b` mean `a, b`.
    A no-store on the second line was ignored and the cached answer served."""
    body = chat_body("two lines")
    gateway.chat(body)
    st, h, _ = raw_post(gateway.port, body, ["Cache-Control: max-age=600",
                                             "Cache-Control: no-store"])
    assert st == 200 and h["x-cache"] == "BYPASS", h
    st, h, _ = raw_post(gateway.port, body, ["Cache-Control: max-stale=5",
                                             "Cache-Control: no-cache"])
    assert st == 200 and h["x-cache"] == "MISS", h
    assert mock.stats()["chat"] == 3
    # Pragma is a list too, and counts only without Cache-Control.
    st, h, _ = raw_post(gateway.port, body, ["Pragma: x-foo", "Pragma: no-cache"])
    assert st == 200 and h["x-cache"] == "MISS", h
    assert mock.stats()["chat"] == 4


def test_if_none_match_on_two_header_lines_is_one_list(gateway, mock):
    body = chat_body("two inm lines")
    etag = gateway.chat(body).headers["ETag"]
    st, h, b = raw_post(gateway.port, body, ['If-None-Match: "nope"', f"If-None-Match: {etag}"])
    assert st == 304 and b == b"" and h["etag"] == etag, (st, h)


def test_delta_seconds_with_leading_zeros_is_its_value(gateway_factory, mock):
    """delta-seconds is 1*DIGIT: thirteen zeros are 0, not 'forever'. Any
    value over 12 characters used to count as huge, so max-age=000...0 served
    an old answer and min-fresh=000...0 refused every one."""
    g = gateway_factory(mock, args=["--ttl", "60"])
    body = chat_body("zeros")
    g.chat(body)
    wait_until(lambda: int(g.chat(body).headers.get("Age", 0)) >= 1, timeout=3,
               interval=0.05, what="Age >= 1")
    calls = mock.stats()["chat"]
    r = g.chat(body, headers={"Cache-Control": "max-age=0000000000000"})
    assert xcache(r) != "HIT", "max-age=0 (13 digits) must not accept an old answer"
    assert mock.stats()["chat"] == calls + 1
    r = g.chat(body, headers={"Cache-Control": "min-fresh=00000000000000"})
    assert xcache(r) == "HIT", "min-fresh=0 (14 digits) accepts any fresh answer"
    # Not digits at all: the directive is ignored, whatever its length.
    r = g.chat(body, headers={"Cache-Control": "min-fresh=abcdefghijklmnop"})
    assert xcache(r) == "HIT"


def test_min_fresh_with_max_stale_accepts_what_it_would_accept_stale(gateway_factory, mock):
    """min-fresh=10, max-stale=60 accepts an answer up to 50 s past expiry
    (Squid's reading: age + min-fresh may exceed the lifetime by max-stale).
    A fresh answer with 5 s left was refused while the same answer 5 s past
    expiry was served."""
    g = gateway_factory(mock, args=["--ttl", "5"])
    body = chat_body("fresh or stale")
    g.chat(body)
    r = g.chat(body, headers={"Cache-Control": "min-fresh=10, max-stale=60"})
    assert r.status_code == 200 and xcache(r) == "HIT", r.headers
    r = g.chat(body, headers={"Cache-Control": "min-fresh=10, max-stale=2"})
    assert xcache(r) != "HIT", "5 s left, 10 wanted: 5 s short, beyond max-stale=2"
    assert mock.stats()["chat"] == 2


# ------------------------------------------------------------ /ask

def test_ask_question_with_nul_is_not_the_question_cut_at_it(gateway, mock):
    """q=a%00b was cut at the NUL: keyed and asked as "a", so it was served
    the cached answer to q=a."""
    a = gateway.get("/ask?q=a")
    assert a.status_code == 200 and a.json()["source"] == "llm"
    r = gateway.get("/ask?q=a%00b")
    assert r.headers.get("X-Cache") != "HIT", r.text
    assert r.headers.get("X-Cache-Key") != a.headers["X-Cache-Key"]
    assert mock.stats()["chat"] == 2


def test_ask_bad_model_parameter_is_a_400_not_the_default_model(gateway, mock):
    """A model= that could not be decoded was silently replaced by
    --ask-model (another model's answer), or, when not UTF-8, gave a 503
    with an empty message."""
    for query, what in (("q=hi&model=%zz", "percent-encoding"), ("q=hi&model=%ff", "UTF-8")):
        with RawConn(gateway.port) as c:  # requests would re-quote %zz
            c.send(f"GET /ask?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            st, _, b = c.read_response()
        assert st == 400, (query, st, b)
        err = assert_error_shape(b)
        assert what in err["message"] and "model" in err["message"], b
    assert mock.stats()["calls"] == 0
    r = gateway.get("/ask?q=hi&model=" + "m" * 300)
    assert r.status_code == 200
    assert r.headers["X-Cache-Key"] != gateway.get("/ask?q=hi").headers["X-Cache-Key"], \
        "a long model name must be asked, not replaced by the default"


def test_ask_miss_does_not_carry_the_chat_answers_etag(gateway, mock):
    """An /ask miss sent the ETag of the stored chat completion with the
    /ask body: two different bodies under one strong ETag, and a validator
    the /ask hits (which carry the ETag of their own form) never matched."""
    miss = gateway.get("/ask?q=tagged")
    assert miss.status_code == 200 and miss.json()["source"] == "llm"
    assert "max-age=" in miss.headers["Cache-Control"]
    chat = gateway.chat(chat_body("tagged"))
    assert chat.headers["X-Cache"] == "HIT", "precondition: /ask and chat share the entry"
    etag = miss.headers.get("ETag")
    if etag is not None:
        assert etag != chat.headers["ETag"]
        r = gateway.get("/ask?q=tagged", headers={"If-None-Match": etag})
        assert r.status_code == 304, "an /ask ETag must validate against /ask"
    hit = gateway.get("/ask?q=tagged")
    r = gateway.get("/ask?q=tagged", headers={"If-None-Match": hit.headers["ETag"]})
    assert r.status_code == 304 and r.content == b""
    assert mock.stats()["chat"] == 1


# ------------------------------------------------------------ the entry bound and the disk tier

def test_answer_too_big_to_store_is_not_stored_on_disk_either(gateway_factory, mock, tmp_path):
    """With --data-dir, an answer over --max-entry-percent went out marked
    Cache-Control: no-store and counted not stored, but was written to the
    disk tier anyway, and the next request was a HIT from disk."""
    g = gateway_factory(mock, args=["--data-dir", tmp_path / "data", "--max-memory", "1M",
                                    "--max-entry-percent", "10"])
    big = chat_body("too big for any tier", mock={"bytes": 300 * 1024})
    r = g.chat(big)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    # A small answer after it: once the disk writer has committed this one,
    # it has committed (or dropped) everything queued before it.
    small = chat_body("small after big")
    g.chat(small)
    wait_until(lambda: g.stats()["tiers"]["disk"]["stored"] >= 1, timeout=10,
               what="the disk writer to commit the small answer")
    st = g.stats()
    assert st["tiers"]["disk"]["stored"] == 1 and st["tiers"]["disk"]["entries"] == 1, st["tiers"]
    r = g.chat(big)
    assert r.status_code == 200 and xcache(r) == "MISS", r.headers
    assert mock.stats()["chat"] == 3


# ------------------------------------------------------------ Vary

def vary(headers):
    return {v.strip().lower() for v in headers.get("Vary", "").split(",") if v.strip()}


def test_vary_names_the_headers_that_choose_the_answer(gateway, shared_gateway, mock):
    """A cache in front of the gateway was not told that the answer depends
    on X-Cache-Namespace (and, under per-key scope, on Authorization), so it
    could hand one namespace's or one key's answer to another."""
    for g, want in ((gateway, {"authorization", "x-cache-namespace"}),
                    (shared_gateway, {"x-cache-namespace"})):
        path = f"/ask?q=vary+{g.port}"
        miss = g.get(path, headers={"Authorization": "Bearer sk-a"})
        hit = g.get(path, headers={"Authorization": "Bearer sk-a"})
        assert xcache(miss) == "MISS" and xcache(hit) == "HIT"
        nm = g.get(path, headers={"Authorization": "Bearer sk-a", "If-None-Match": hit.headers["ETag"]})
        assert nm.status_code == 304
        for r in (miss, hit, nm):
            assert vary(r.headers) == want, (g.name, dict(r.headers))
        other = g.get(path, headers={"Authorization": "Bearer sk-b"})
        assert xcache(other) == ("MISS" if "authorization" in want else "HIT")


# ------------------------------------------------------------ Cache-Status

def test_cache_status_says_why_a_stored_answer_was_not_used(gateway_factory, mock):
    """RFC 9211: fwd=uri-miss means nothing was stored. A refetch of an
    expired answer said uri-miss (should be stale), and one whose fresh
    answer the request's max-age or min-fresh refused said uri-miss
    (should be request)."""
    g = gateway_factory(mock, args=["--ttl", "1"])
    body = chat_body("why forwarded")
    cs = cache_status(g.chat(body).headers)
    assert cs.get("fwd") == "uri-miss" and cs.get("stored") is True, cs
    cs = cache_status(g.chat(body, headers={"Cache-Control": "min-fresh=30"}).headers)
    assert cs.get("fwd") == "request" and cs.get("stored") is True, cs
    wait_until(lambda: g.chat(body, headers={"Cache-Control": "only-if-cached"}).status_code == 504,
               timeout=4, interval=0.05, what="the entry to expire")
    cs = cache_status(g.chat(body).headers)
    assert cs.get("fwd") == "stale" and cs.get("stored") is True, cs
    cs = cache_status(g.chat(body, headers={"Cache-Control": "no-cache"}).headers)
    assert cs.get("fwd") == "request", cs
