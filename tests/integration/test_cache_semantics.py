"""Issue 3: coalescing, HTTP Cache-Control both ways, the body `cache` extension,
ETag/304, the memory bound, background expiry, stale-if-error, and /stats.

Each test starts its own mock and gateway; /mock/stats proves what reached the
upstream and the gateway's /stats counters are asserted where the issue names them.
Also: directives and validators on repeated header lines, Vary, Cache-Status's
fwd reasons, and what /ask keys, stores and validates. Requests that need exact
bytes on the wire (repeated header lines) go through RawConn (raw_post);
everything else through the fixtures' requests session.
"""

import asyncio
import json
import time

import pytest

from conftest import (RawConn, assert_error_shape, async_open_many, async_read_response,
                      cache_control, cache_status, chat_body, http_request, next_second, session,
                      wait_until)

CHAT = "/v1/chat/completions"


def xcache(r):
    return r.headers.get("X-Cache")


def cc(value):
    return {"Cache-Control": value}


def run_concurrently(port, reqs, timeout=30, before_send=None):
    """Opens one connection per request, then sends all of them at once and
    returns [(status, headers, body)] in request order."""
    async def main():
        conns = await async_open_many(port, len(reqs))

        async def one(conn, req):
            reader, writer = conn
            writer.write(req)
            await writer.drain()
            try:
                return await async_read_response(reader)
            finally:
                writer.close()
        return await asyncio.wait_for(
            asyncio.gather(*(one(c, r) for c, r in zip(conns, reqs))), timeout)
    return asyncio.run(main())


def wait_expired(g, body, timeout=4.0):
    """Polls with only-if-cached (which never goes upstream) until the entry
    for body is no longer served fresh."""
    def gone():
        r = g.chat(body, headers=cc("only-if-cached"))
        return r.status_code == 504
    wait_until(gone, timeout=timeout, interval=0.05, what="the entry to expire")


def raw_post(port, body, header_lines):
    """POSTs body with header_lines ("Name: value" strings, repeats allowed)
    and returns (status, headers, body)."""
    data = json.dumps(body).encode()
    head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + "".join(l + "\r\n" for l in header_lines) + "\r\n")
    with RawConn(port) as c:
        c.send(head.encode("latin-1") + data)
        return c.read_response()


# ------------------------------------------------------------ coalescing

def test_stampede_of_100_identical_requests_makes_one_upstream_call(gateway, mock):
    body = chat_body("stampede", mock={"latency_ms": 1000})
    res = run_concurrently(gateway.port, [http_request("POST", CHAT, body)] * 100)
    statuses = [r[0] for r in res]
    assert statuses == [200] * 100, statuses
    assert len({r[2] for r in res}) == 1, "all 100 answers must be identical"
    caches = [r[1].get("x-cache") for r in res]
    assert caches.count("MISS") == 1 and caches.count("COALESCED") == 99, \
        {c: caches.count(c) for c in set(caches)}
    for r in res:
        if r[1]["x-cache"] == "COALESCED":
            cs = cache_status(r[1])
            assert cs.get("fwd") == "miss" and cs.get("collapsed") is True, r[1]["cache-status"]
    assert mock.stats()["chat"] == 1
    st = gateway.stats()
    assert st["coalesced"] == 99 and st["misses"] == 1 and st["upstream_calls"] == 1, st
    r = gateway.chat(body)
    assert xcache(r) == "HIT" and r.content == res[0][2]


@pytest.mark.parametrize("mockctl,status", [
    ({"status": 500}, 500),
    ({"fault": "reset"}, 502),
    ({"fault": "invalid-json"}, 502),
])
def test_leader_failure_releases_every_waiter_and_stores_nothing(gateway, mock, mockctl, status):
    body = chat_body(f"doomed {mockctl}", mock={"latency_ms": 500, **mockctl})
    t = time.monotonic()
    res = run_concurrently(gateway.port, [http_request("POST", CHAT, body)] * 20)
    elapsed = time.monotonic() - t
    assert [r[0] for r in res] == [status] * 20
    assert elapsed < 3, f"waiters were released after {elapsed:.2f}s"
    assert mock.stats()["chat"] == 1, "waiters must share the leader's failure, not retry"
    st = gateway.stats()
    assert st["stored"] == 0 and st["entries"] == 0, st
    # The next request tries again.
    gateway.chat(body)
    assert mock.stats()["chat"] == 2


def test_leader_timeout_releases_waiters_within_the_upstream_timeout(gateway_factory, mock):
    g = gateway_factory(mock, args=["--upstream-timeout", "1"])
    body = chat_body("timeout stampede", mock={"latency_ms": 5000})
    t = time.monotonic()
    res = run_concurrently(g.port, [http_request("POST", CHAT, body)] * 20)
    assert [r[0] for r in res] == [504] * 20
    assert time.monotonic() - t < 3
    assert g.stats()["entries"] == 0


def test_a_waiter_that_hangs_up_does_not_disturb_the_others(gateway, mock):
    body = chat_body("some leave", mock={"latency_ms": 800})
    req = http_request("POST", CHAT, body)

    async def main():
        conns = await async_open_many(gateway.port, 10)
        for _, w in conns:
            w.write(req)
            await w.drain()
        # Wait (polling the counter) until the call is in flight, then 4 clients leave.
        while (await asyncio.to_thread(mock.stats))["in_flight"] < 1:
            await asyncio.sleep(0.01)
        for _, w in conns[:4]:
            w.transport.abort()
        return await asyncio.wait_for(asyncio.gather(
            *(async_read_response(r) for r, _ in conns[4:])), 10)
    res = asyncio.run(main())
    assert [r[0] for r in res] == [200] * 6
    assert len({r[2] for r in res}) == 1
    assert mock.stats()["chat"] == 1
    assert xcache(gateway.chat(body)) == "HIT"


def test_no_store_requests_do_not_coalesce(gateway, mock):
    body = chat_body("private each", mock={"latency_ms": 500})
    req = http_request("POST", CHAT, body, cc("no-store"))
    res = run_concurrently(gateway.port, [req] * 5)
    assert [r[0] for r in res] == [200] * 5
    assert [r[1].get("x-cache") for r in res] == ["BYPASS"] * 5
    assert mock.stats()["chat"] == 5
    assert gateway.stats()["entries"] == 0


# ------------------------------------------------------------ request Cache-Control

def test_no_cache_goes_upstream_and_stores_the_fresh_answer(gateway, mock):
    body = chat_body("revalidate me")
    first = gateway.chat(body)
    next_second()
    fresh = gateway.chat(body, headers=cc("no-cache"))
    assert fresh.status_code == 200 and xcache(fresh) != "HIT"
    assert fresh.content != first.content, "precondition: the mock stamps `created`"
    assert mock.stats()["chat"] == 2
    after = gateway.chat(body)
    assert xcache(after) == "HIT" and after.content == fresh.content, \
        "no-cache must store the fresh answer"


def test_pragma_no_cache_without_cache_control(gateway, mock):
    body = chat_body("pragma")
    gateway.chat(body)
    r = gateway.chat(body, headers={"Pragma": "no-cache"})
    assert xcache(r) != "HIT"
    assert mock.stats()["chat"] == 2
    # With a Cache-Control header present, Pragma is ignored.
    r = gateway.chat(body, headers={"Pragma": "no-cache", "Cache-Control": "max-age=600"})
    assert xcache(r) == "HIT"
    assert mock.stats()["chat"] == 2


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


def test_no_store_neither_reads_nor_writes(gateway, mock):
    cold = chat_body("never stored")
    r = gateway.chat(cold, headers=cc("no-store"))
    assert r.status_code == 200 and xcache(r) == "BYPASS"
    assert cache_status(r.headers).get("fwd") == "bypass"
    assert xcache(gateway.chat(cold)) == "MISS", "a no-store answer must not be stored"

    warm = chat_body("stored already")
    gateway.chat(warm)
    r = gateway.chat(warm, headers=cc("no-store"))
    assert xcache(r) == "BYPASS"
    assert mock.stats()["chat"] == 4
    assert gateway.stats()["bypasses"] == 2


def test_max_age(gateway, mock):
    body = chat_body("how old?")
    gateway.chat(body)
    # Poll with plain hits until the entry is at least a second old.
    wait_until(lambda: int(gateway.chat(body).headers.get("Age", 0)) >= 1, timeout=3,
               interval=0.05, what="Age >= 1")
    r = gateway.chat(body, headers=cc("max-age=60"))
    assert xcache(r) == "HIT"
    calls = mock.stats()["chat"]
    r = gateway.chat(body, headers=cc("max-age=0"))
    assert xcache(r) != "HIT", "an entry older than max-age must not be served"
    assert mock.stats()["chat"] == calls + 1
    r = gateway.chat(body)
    assert xcache(r) == "HIT" and int(r.headers["Age"]) <= 1, "the fresh answer replaced it"


def test_min_fresh(gateway_factory, mock):
    g = gateway_factory(mock, args=["--ttl", "100"])
    body = chat_body("fresh enough?")
    g.chat(body)
    assert xcache(g.chat(body, headers=cc("min-fresh=50"))) == "HIT"
    r = g.chat(body, headers=cc("min-fresh=200"))
    assert xcache(r) != "HIT", "an entry fresh for < min-fresh seconds must not be served"
    assert mock.stats()["chat"] == 2


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


def test_max_stale_serves_an_expired_entry_marked_stale(gateway_factory, mock):
    g = gateway_factory(mock, args=["--ttl", "1"])
    body = chat_body("stale ok")
    first = g.chat(body)
    wait_expired(g, body)
    for directive in ("max-stale=60", "max-stale"):
        r = g.chat(body, headers=cc(directive))
        assert r.status_code == 200
        assert xcache(r) == "STALE", directive
        assert r.content == first.content
        assert int(r.headers["Age"]) >= 1
    assert mock.stats()["chat"] == 1
    # Without max-stale the expired entry is never served.
    assert xcache(g.chat(body)) == "MISS"
    assert mock.stats()["chat"] == 2


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


def test_only_if_cached(gateway, mock):
    body = chat_body("only cached")
    r = gateway.chat(body, headers=cc("only-if-cached"))
    assert_error_shape(r, 504)
    assert mock.stats()["calls"] == 0, "only-if-cached must never call upstream"
    first = gateway.chat(body)
    r = gateway.chat(body, headers=cc("only-if-cached"))
    assert r.status_code == 200 and xcache(r) == "HIT" and r.content == first.content
    assert mock.stats()["calls"] == 1


def test_only_if_cached_with_expired_entry_is_504(gateway_factory, mock):
    g = gateway_factory(mock, args=["--ttl", "1"])
    body = chat_body("expired only")
    g.chat(body)
    wait_expired(g, body)  # this itself asserts the 504
    assert mock.stats()["chat"] == 1


# ------------------------------------------------------------ response Cache-Control, ETag

def test_response_freshness_headers(shared_gateway, mock):
    g = shared_gateway
    body = chat_body("headers")
    miss = g.chat(body)
    ccm = cache_control(miss.headers)
    assert ccm.get("public") is True and 295 <= ccm["max-age"] <= 300, miss.headers["Cache-Control"]
    wait_until(lambda: int((h := g.chat(body)).headers["Age"]) >= 1 and h, timeout=3,
               interval=0.05, what="Age >= 1")
    hit = g.chat(body)
    age, ma = int(hit.headers["Age"]), cache_control(hit.headers)["max-age"]
    # As an origin says it: max-age is the whole lifetime and Age how much of
    # it is gone, so a cache in front takes max-age - Age as what is left
    # (RFC 9111 4.2.3). max-age = what is left would count the age twice.
    assert age >= 1 and ma == 300, (age, ma)
    assert int(cache_status(hit.headers)["ttl"]) == ma - age, hit.headers


def test_etag_and_if_none_match(gateway, mock):
    body = chat_body("etag")
    first = gateway.chat(body)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and len(etag) > 2, etag
    hit = gateway.chat(body)
    assert hit.headers["ETag"] == etag

    r = gateway.chat(body, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["ETag"] == etag
    r = gateway.chat(body, headers={"If-None-Match": f'"nope", {etag}'})
    assert r.status_code == 304
    r = gateway.chat(body, headers={"If-None-Match": '"something-else"'})
    assert r.status_code == 200 and r.content == first.content
    assert mock.stats()["chat"] == 1

    other = gateway.chat(chat_body("another etag"))
    assert other.headers["ETag"] != etag, "the ETag derives from the body"


def test_if_none_match_on_two_header_lines_is_one_list(gateway, mock):
    body = chat_body("two inm lines")
    etag = gateway.chat(body).headers["ETag"]
    st, h, b = raw_post(gateway.port, body, ['If-None-Match: "nope"', f"If-None-Match: {etag}"])
    assert st == 304 and b == b"" and h["etag"] == etag, (st, h)


# ------------------------------------------------------------ Vary

def vary(headers):
    return {v.strip().lower() for v in headers.get("Vary", "").split(",") if v.strip()}


def test_vary_names_the_headers_that_choose_the_answer(gateway, shared_gateway, mock):
    """A cache in front of the gateway was not told that the answer depends
    on X-Cache-Namespace (and, under per-key scope, on Authorization), so it
    could hand one namespace's or one key's answer to another."""
    # Under per-key scope the client's OpenAI-* headers go upstream and are keyed too.
    for g, want in ((gateway, {"authorization", "x-cache-namespace", "openai-organization",
                               "openai-project", "openai-beta"}),
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


# ------------------------------------------------------------ body extension

def test_cache_extension_is_not_part_of_the_key(gateway, mock):
    plain = chat_body("extension")
    ext = dict(plain, cache={"ttl": 60})
    r1 = gateway.chat(plain)
    r2 = gateway.chat(ext)
    assert xcache(r2) == "HIT" and r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    assert mock.stats()["chat"] == 1


def test_cache_extension_is_removed_before_forwarding(gateway, mock):
    """The mock's answer derives from the body it receives: a forwarded body
    with the extension cut out gets the answer of the plain body. Bodies go
    out compact, so the gateway's re-serialised body is byte-equal to `plain`."""
    def compact(o):
        return json.dumps(o, separators=(",", ":")).encode()

    def content(data, headers=None):
        h = {"Content-Type": "application/json", **(headers or {})}
        r = gateway.post(CHAT, data=data, headers=h)
        assert r.status_code == 200, r.text[:200]
        return r.json()["choices"][0]["message"]["content"]
    plain = chat_body("strip me")
    a = content(compact(plain), cc("no-store"))
    b = content(compact(dict(plain, cache={"no-store": True})))
    c = content(compact(dict(plain, extra_field=True)), cc("no-store"))
    assert a != c, "precondition: the mock's answer reflects the body it receives"
    assert a == b, "the `cache` field reached the upstream"


def test_cache_extension_no_cache_and_no_store(gateway, mock):
    body = chat_body("ext controls")
    gateway.chat(body)
    r = gateway.chat(dict(body, cache={"no-cache": True}))
    assert xcache(r) != "HIT"
    assert mock.stats()["chat"] == 2
    cold = chat_body("ext no-store")
    r = gateway.chat(dict(cold, cache={"no-store": True}))
    assert xcache(r) == "BYPASS"
    assert xcache(gateway.chat(cold)) == "MISS"


def test_cache_extension_ttl(gateway, mock):
    body = chat_body("ext ttl")
    t = time.monotonic()
    gateway.chat(dict(body, cache={"ttl": 1}))
    r = gateway.chat(body)
    assert xcache(r) == "HIT" and cache_control(r.headers)["max-age"] <= 1
    wait_expired(gateway, body)
    assert time.monotonic() - t >= 0.9


def test_cache_extension_s_maxage(gateway, mock):
    body = chat_body("ext s-maxage")
    gateway.chat(body)
    wait_until(lambda: int(gateway.chat(body).headers.get("Age", 0)) >= 1, timeout=3,
               interval=0.05, what="Age >= 1")
    assert xcache(gateway.chat(dict(body, cache={"s-maxage": 60}))) == "HIT"
    assert xcache(gateway.chat(dict(body, cache={"s-maxage": 0}))) != "HIT"


def test_cache_extension_namespace(gateway, mock):
    body = chat_body("ext namespace")
    gateway.chat(body)
    r = gateway.chat(dict(body, cache={"namespace": "team-x"}))
    assert xcache(r) == "MISS", "a namespace partitions the cache"
    r2 = gateway.chat(body, headers={"X-Cache-Namespace": "team-x"})
    assert xcache(r2) == "HIT" and r2.headers["X-Cache-Key"] == r.headers["X-Cache-Key"], \
        "the extension's namespace is the header's namespace"


# ------------------------------------------------------------ memory bound and expiry

BUDGET_MB = 16
OVERHEAD_MB = 64   # the fixed allowance for code, threads, libcurl, malloc slack
ANSWER_KB = 100
N_LARGE = 1500     # 150 MB of distinct answers: far beyond budget + overhead


def test_memory_bound_under_a_flood_of_large_answers(gateway_factory, mock):
    from concurrent.futures import ThreadPoolExecutor
    # The mock's padded answers compress about 100x at rest: off, so that
    # they take the memory their size says and the flood evicts.
    g = gateway_factory(mock, args=["--max-memory", f"{BUDGET_MB}M", "--compress-at-rest", "off"])
    base_kb = g.rss_kb()

    def fetch(i):
        s = session()
        r = s.post(g.url + CHAT, json=chat_body(f"big {i}", mock={"bytes": ANSWER_KB * 1024}),
                   timeout=30)
        assert r.status_code == 200, r.text[:200]
        assert len(r.content) >= ANSWER_KB * 1024 * 0.9
        return len(r.content)

    peak_kb = 0
    with ThreadPoolExecutor(8) as ex:
        for n, _ in enumerate(ex.map(fetch, range(N_LARGE))):
            if n % 100 == 0:
                peak_kb = max(peak_kb, g.rss_kb())
                st = g.stats()
                assert st["bytes"] <= st["max_bytes"], st
    rss_kb = g.rss_kb()
    hwm_kb = g.rss_kb("VmHWM")
    st = g.stats()
    limit_kb = (BUDGET_MB + OVERHEAD_MB) * 1024
    print(f"RSS start {base_kb} kB, end {rss_kb} kB, peak {hwm_kb} kB; stats {st}")
    assert st["max_bytes"] == BUDGET_MB * 1024 * 1024
    assert st["bytes"] <= st["max_bytes"]
    assert st["evicted_size"] > 0 and st["entries"] < N_LARGE
    assert st["stored"] >= N_LARGE * 0.9
    if g.sanitized():
        print("AddressSanitizer build: its shadow memory and quarantine make RSS "
              "meaningless; the byte bound is checked through /stats only")
    else:
        assert max(rss_kb, peak_kb, hwm_kb) <= limit_kb, \
            f"RSS {max(rss_kb, peak_kb, hwm_kb)} kB exceeds budget + overhead {limit_kb} kB"
    # The cache still works: the latest answer is a hit.
    last = chat_body(f"big {N_LARGE - 1}", mock={"bytes": ANSWER_KB * 1024})
    assert xcache(g.chat(last)) == "HIT"


def test_entries_evicted_while_being_sent_stay_intact(gateway_factory, mock):
    """Large hits are written to clients while a flood of new answers evicts
    them: every hit must still carry the whole stored body. (Under the
    sanitizer run this is the use-after-free check for entry reference counts.)"""
    from concurrent.futures import ThreadPoolExecutor
    # Uncompressed at rest (the padding would shrink 100x): entries as big as they look.
    g = gateway_factory(mock, args=["--max-memory", "2M", "--max-entry-percent", "25",
                                    "--compress-at-rest", "off"])
    hot = [chat_body(f"hot {i}", mock={"bytes": 300 * 1024}) for i in range(3)]

    def norm(raw):
        """The answer without `created`, the one field the mock varies per call
        (an evicted entry is fetched again, and may be stamped a second later)."""
        j = json.loads(raw)
        j.pop("created", None)
        return j
    want = [norm(g.chat(b).content) for b in hot]

    def reader(n):
        s, bad, hits = session(), 0, 0
        for k in range(25):
            i = (n + k) % len(hot)
            r = s.post(g.url + CHAT, json=hot[i], timeout=30)
            assert r.status_code == 200
            hits += r.headers.get("X-Cache") == "HIT"
            if norm(r.content) != want[i]:
                bad += 1
        return bad, hits

    def flooder(n):
        s = session()
        for k in range(25):
            r = s.post(g.url + CHAT, json=chat_body(f"evictor {n} {k}", mock={"bytes": 200 * 1024}),
                       timeout=30)
            assert r.status_code == 200
        return 0, 0

    with ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(reader, n) for n in range(4)] + [ex.submit(flooder, n) for n in range(4)]
        res = [f.result() for f in futs]
    assert sum(b for b, _ in res) == 0, "an answer carried a damaged body"
    assert sum(h for _, h in res) > 0, "no hit was served during the flood: nothing tested"
    st = g.stats()
    assert st["evicted_size"] > 0 and st["bytes"] <= st["max_bytes"], st


def test_answer_larger_than_the_entry_share_is_served_not_stored(gateway_factory, mock):
    g = gateway_factory(mock, args=["--max-memory", "1M", "--max-entry-percent", "10"])
    body = chat_body("too big to keep", mock={"bytes": 300 * 1024})
    r1 = g.chat(body)
    assert r1.status_code == 200 and len(r1.content) >= 250 * 1024
    r2 = g.chat(body)
    assert r2.status_code == 200 and xcache(r2) != "HIT"
    assert mock.stats()["chat"] == 2
    assert g.stats()["entries"] == 0
    small = chat_body("small enough", mock={"bytes": 20 * 1024})
    g.chat(small)
    assert xcache(g.chat(small)) == "HIT"


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


def test_expired_entries_are_removed_in_the_background(gateway_factory, mock):
    g = gateway_factory(mock, args=["--ttl", "1", "--max-stale", "0"])
    for i in range(5):
        g.chat(chat_body(f"sweep {i}"))
    assert g.stats()["entries"] == 5
    st = wait_until(lambda: (s := g.stats())["entries"] == 0 and s, timeout=6, interval=0.1,
                    what="the expiry sweep to remove 5 unread entries")
    assert st["evicted_ttl"] >= 5 and st["bytes"] == 0, st


# ------------------------------------------------------------ stale-if-error

def test_stale_if_error_serves_expired_entry_when_upstream_is_down(mock_factory,
                                                                   gateway_factory):
    m = mock_factory()
    g = gateway_factory(m, args=["--ttl", "1", "--stale-if-error", "60",
                                 "--connect-timeout", "1"])
    body = chat_body("keep me around")
    first = g.chat(body)
    assert xcache(first) == "MISS"
    wait_expired(g, body)
    m.must_survive = False
    m.kill()
    r = g.chat(body)
    assert r.status_code == 200, r.text[:300]
    assert xcache(r) == "STALE"
    assert cache_status(r.headers).get("fwd") == "stale", r.headers["Cache-Status"]
    assert "Warning" not in r.headers
    assert r.content == first.content
    st = g.stats()
    assert st["stale"] == 1, st
    # A key that was never cached still fails.
    assert_error_shape(g.chat(chat_body("never seen")), 502)


def test_stale_if_error_on_upstream_timeout(mock_factory, gateway_factory):
    """The same key, but the upstream has turned slow: a mock restarted on the
    same port with a delay past --upstream-timeout."""
    m = mock_factory()
    g = gateway_factory(m, args=["--ttl", "1", "--stale-if-error", "60",
                                 "--upstream-timeout", "1"])
    body = chat_body("slow later")
    first = g.chat(body)
    wait_expired(g, body)
    m.must_survive = False
    m.kill()
    mock_factory(latency_ms=5000, port=m.port)
    t = time.monotonic()
    r = g.chat(body)
    assert r.status_code == 200 and xcache(r) == "STALE", (r.status_code, r.text[:200])
    assert time.monotonic() - t < 2.5
    assert r.content == first.content
    assert g.stats()["stale"] == 1


def test_without_stale_if_error_an_expired_entry_is_not_served(mock_factory, gateway_factory):
    m = mock_factory()
    g = gateway_factory(m, args=["--ttl", "1", "--connect-timeout", "1"])
    body = chat_body("gone for good")
    g.chat(body)
    wait_expired(g, body)
    m.must_survive = False
    m.kill()
    assert_error_shape(g.chat(body), 502)
    assert g.stats()["stale"] == 0


# ------------------------------------------------------------ counters

def test_stats_counters(shared_gateway, mock):
    g = shared_gateway
    before = g.stats()
    for k in ("entries", "bytes", "max_bytes", "hits", "misses", "coalesced", "bypasses", "stale",
              "stored", "evicted_size", "evicted_ttl", "upstream_calls"):
        assert isinstance(before[k], int) and before[k] >= 0, (k, before)
    assert isinstance(before["upstream_errors"], dict)
    assert before["max_bytes"] == 256 * 1024 * 1024  # the default --max-memory

    body = chat_body("count me")
    g.chat(body)                                   # miss, stored
    g.chat(body)                                   # hit
    g.chat(body, headers=cc("no-store"))           # bypass
    g.chat(chat_body("boom", mock={"status": 500}))  # miss, upstream answered 500
    st = g.stats()
    assert st["hits"] - before["hits"] == 1
    assert st["misses"] - before["misses"] == 2
    assert st["bypasses"] - before["bypasses"] == 1
    assert st["stored"] - before["stored"] == 1
    assert st["entries"] == 1 and st["bytes"] > 0
    assert st["upstream_calls"] - before["upstream_calls"] == 3
    assert mock.stats()["chat"] == 3
