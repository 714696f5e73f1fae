"""Issue 14: what a request body may cost the gateway.

A body's parse and canonical form cost per JSON value (jansson allocates one
per value), so 4 MB of "{}," held an event loop for seconds. The bounds:
--max-json-values (values counted before the parse, 413 over it),
--parse-offload-bytes (bigger bodies are parsed on the thread pool, not on
the loop that serves hits) and --max-body-memory (what all bodies being
received or handled hold together; 503 with Retry-After past it).

Decisions a newcomer would otherwise get wrong:
- The value count of a body is exact (objects, arrays, strings that are not
  member names, numbers, literals), so "just under" and "just over" are one
  value apart; body_with_values builds a body of an exact count.
- The off-loop parse must key a body exactly as the loop's parse does: the
  same request padded with white space past the threshold hits the entry the
  compact form stored.
- Nothing here is timed: bench/worst_body.py measures the hit latency while
  the worst bodies are sent.
"""

import json
import threading
import time

import pytest

from conftest import (RawConn, assert_error_shape, chat_body, http_request, session,
                      wait_until)

CHAT = "/v1/chat/completions"


def body_with_values(n, pad=0):
    """A chat request of exactly n JSON values (n >= 7), padded with pad spaces."""
    body = chat_body("count me")  # {model, messages: [{role, content}]}: 6 values
    body["x"] = []                 # 1 more
    head = json.dumps(body)[:-3]   # up to the '[' of "x"
    items = ",".join(["{}"] * (n - 7))
    return (head + "[" + items + "]" + " " * pad + "}").encode()


def test_body_with_values_counts_right():
    """The helper's count, checked against the tree json builds."""
    def tree(v):
        if isinstance(v, dict):
            return 1 + sum(tree(x) for x in v.values())
        if isinstance(v, list):
            return 1 + sum(tree(x) for x in v)
        return 1
    assert tree(json.loads(body_with_values(1000))) == 1000


@pytest.mark.parametrize("offload", ["1M", "0"], ids=["on-loop", "off-loop"])
def test_too_many_values_is_413_and_nothing_goes_upstream(gateway_factory, mock, offload):
    g = gateway_factory(mock, args=["--max-json-values", "1000",
                                    "--parse-offload-bytes", offload])
    r = g.post(CHAT, data=body_with_values(1001), headers={"Content-Type": "application/json"})
    assert_error_shape(r, 413)
    err = r.json()["error"]
    assert err["code"] == "too_many_json_values"
    assert "--max-json-values" in err["message"] and "1000" in err["message"]
    assert r.headers.get("X-Should-Retry") == "false"
    assert mock.stats()["calls"] == 0
    # Exactly at the limit is a request like any other.
    r = g.post(CHAT, data=body_with_values(1000), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Cache"] == "MISS"
    assert mock.stats()["calls"] == 1
    st = g.stats()
    assert st["json_values_refused"] == 1
    assert st["parses_off_loop"] == (2 if offload == "0" else 0)


def test_the_default_limit_takes_a_long_conversation(gateway, mock):
    """200,000 values by default: a 300-turn conversation with tool calls
    and images is far below it, and is answered."""
    msgs = []
    for i in range(300):
        msgs.append({"role": "user", "content": [
            {"type": "text", "text": f"turn {i}"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]})
        msgs.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps({"q": i})}}]})
        msgs.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "ok"})
    r = gateway.chat(body={"model": "gpt-4o-mini", "messages": msgs})
    assert r.status_code == 200, r.text[:300]


def test_a_big_body_parsed_off_the_loop_keys_like_the_compact_form(shared_gateway, mock):
    g = shared_gateway
    body = chat_body("the same question, in two spellings")
    compact = json.dumps(body, separators=(",", ":")).encode()
    assert len(compact) < 4096
    r1 = g.post(CHAT, data=compact, headers={"Content-Type": "application/json"})
    assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS"
    assert g.stats()["parses_off_loop"] == 0
    # Past the 4 KiB default: white space between every token.
    padded = json.dumps(body, indent=600).encode()
    assert len(padded) > 4096
    r2 = g.post(CHAT, data=padded, headers={"Content-Type": "application/json"})
    assert r2.status_code == 200, r2.text
    assert r2.headers["X-Cache"] == "HIT"
    assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    assert r2.json() == r1.json()
    assert g.stats()["parses_off_loop"] == 1
    assert mock.stats()["calls"] == 1


def test_a_big_miss_parsed_off_the_loop_gets_its_answer(shared_gateway, mock):
    """A body over the threshold that is a miss: parsed on the pool, sent
    upstream as the client's bytes, answered and stored; streamed too."""
    g = shared_gateway
    long_q = "why " * 3000
    r = g.chat(content=long_q)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert r.json()["choices"][0]["message"]["content"]
    r2 = g.chat(content=long_q)
    assert r2.headers["X-Cache"] == "HIT" and r2.json() == r.json()
    s = session().post(g.url + CHAT, json=chat_body("how " * 3000, stream=True), stream=True,
                       timeout=30)
    assert s.status_code == 200
    text = s.content.decode()
    assert "data: [DONE]" in text
    assert g.stats()["parses_off_loop"] >= 2


def test_a_bad_big_body_is_400_from_the_pool(gateway, mock):
    bad = b'{"model":"m","messages":[' + b" " * 10000 + b"}"
    r = gateway.post(CHAT, data=bad, headers={"Content-Type": "application/json"})
    assert_error_shape(r, 400)
    assert r.json()["error"]["code"] == "invalid_json"
    assert mock.stats()["calls"] == 0


def hold_body(port, declared):
    """A connection that declared a body of `declared` bytes and sent part of it."""
    c = RawConn(port)
    c.send(http_request("POST", CHAT, b"", {"Content-Length": str(declared)}) + b'{"model":')
    return c


def test_body_memory_bound_refuses_503_and_others_go_on(gateway_factory, mock):
    g = gateway_factory(mock, threads=2, args=["--max-body-memory", "1M"])
    held = [hold_body(g.port, 300000) for _ in range(3)]  # 900 KB of 1 MB
    try:
        wait_until(lambda: g.stats()["http_body_bytes"] >= 900003, timeout=5)
        with RawConn(g.port) as c:
            c.send(http_request("POST", CHAT, b"", {"Content-Length": "300000"}))
            st, hdrs, body = c.read_response()
        assert st == 503, (st, body[:300])
        assert_error_shape(body)
        assert json.loads(body)["error"]["code"] == "body_memory_full"
        assert "--max-body-memory" in json.loads(body)["error"]["message"]
        assert hdrs.get("retry-after") == "1"
        # A request that fits is served meanwhile.
        r = g.chat()
        assert r.status_code == 200, r.text
        st = g.stats()
        assert st["http_body_memory_refused"] == 1
        assert mock.stats()["calls"] == 1
    finally:
        for c in held:
            c.close()
    # The held bodies' memory goes back, and a big body fits again.
    wait_until(lambda: g.stats()["http_body_bytes"] < 300000, timeout=5)
    r = g.chat(content="x" * 290000)
    assert r.status_code == 200


def test_hits_are_served_while_the_worst_bodies_parse(shared_gateway, mock):
    """Four connections send the worst bodies the default limits allow (a
    200,000-value body, only-if-cached so that nothing goes upstream) while
    hits go on: every hit is a HIT with its answer. bench/worst_body.py
    times the same."""
    g = shared_gateway
    assert g.chat(content="a cached question").status_code == 200
    worst = body_with_values(200000)
    stop = threading.Event()
    answers = []

    def attacker():
        s = session()
        while not stop.is_set():
            r = s.post(g.url + CHAT, data=worst, timeout=60,
                       headers={"Content-Type": "application/json",
                                "Cache-Control": "only-if-cached"})
            answers.append(r.status_code)

    threads = [threading.Thread(target=attacker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: g.stats()["parses_off_loop"] >= 2, timeout=30)
        for _ in range(30):
            r = g.chat(content="a cached question")
            assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert answers and set(answers) == {504}
    assert mock.stats()["calls"] == 1


def test_clients_that_leave_while_their_body_parses(gateway_factory, mock):
    """The body being parsed on the pool belongs to a connection that is
    gone: the parse goes on with the buffer it took, and its memory goes back
    to --max-body-memory once it is done (AddressSanitizer builds catch a
    use after free here)."""
    g = gateway_factory(mock, args=["--max-body-memory", "4M"])
    worst = body_with_values(200000)  # 600 KB
    for _ in range(4):
        c = RawConn(g.port)
        c.send(http_request("POST", CHAT, worst))
        c.close()
    wait_until(lambda: g.stats()["parses_off_loop"] >= 1, timeout=30)
    assert g.chat().status_code == 200
    # 3 MB fits only once the bodies the parses took are freed.
    big = chat_body("y" * (3 << 20))
    wait_until(lambda: g.chat(body=big).status_code == 200, timeout=60, interval=0.2)


@pytest.mark.parametrize("offload", ["1M", "0"], ids=["on-loop", "off-loop"])
def test_nesting_deeper_than_jansson_takes_is_400(gateway_factory, mock, offload):
    """The depth bound is jansson's own (2048 levels): deeper is a 400, on
    either side of the offload threshold, and nothing goes upstream."""
    g = gateway_factory(mock, args=["--parse-offload-bytes", offload])
    deep = b'{"model":"m","x":' + b"[" * 3000 + b"]" * 3000 + b"}"
    r = g.post(CHAT, data=deep, headers={"Content-Type": "application/json"})
    assert_error_shape(r, 400)
    assert r.json()["error"]["code"] == "invalid_json"
    assert "depth" in r.json()["error"]["message"]
    assert mock.stats()["calls"] == 0
