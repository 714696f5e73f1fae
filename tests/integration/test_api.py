"""Issue 13: API coverage: errors a retry cannot fix say so, every other /v1
route is passed through, and usage on every hit.

Decisions a newcomer would otherwise get wrong:
- X-Should-Retry is not a standard header, but the official OpenAI SDKs obey
  it before their own rules (which retry every 5xx, 408, 409 and 429): a 504
  for only-if-cached without it costs the client two more requests and
  seconds of backoff.
"""

import hashlib
import json
import os
import socket
import time

import pytest

from conftest import (RawConn, assert_error_shape, cache_status, chat_body, free_port,
                      http_request, wait_until)

CHAT = "/v1/chat/completions"


def xcache(r):
    return r.headers.get("X-Cache")


# ------------------------------------------------------------ X-Should-Retry

def test_only_if_cached_miss_says_not_to_retry(gateway, mock):
    r = gateway.chat(chat_body("never asked"), headers={"Cache-Control": "only-if-cached"})
    assert_error_shape(r, 504)
    assert r.headers.get("X-Should-Retry") == "false", dict(r.headers)
    assert mock.stats()["calls"] == 0


@pytest.mark.parametrize("name,method,path,data,headers,status", [
    ("bad-json", "POST", CHAT, b"{not json", {"Content-Type": "application/json"}, 400),
    ("bad-ttl", "POST", CHAT, b'{"model":"m","messages":[]}',
     {"Content-Type": "application/json", "X-Cache-TTL": "banana"}, 400),
    ("not-found", "GET", "/nope", None, {}, 404),
    ("method", "POST", "/ask?q=hi", b"{}", {"Content-Type": "application/json"}, 405),
])
def test_gateway_errors_a_retry_cannot_fix_say_so(gateway, mock, name, method, path, data,
                                                  headers, status):
    r = gateway.http.request(method, gateway.url + path, data=data, headers=headers, timeout=10)
    assert_error_shape(r, status)
    assert r.headers.get("X-Should-Retry") == "false", dict(r.headers)


@pytest.mark.parametrize("name,raw,status", [
    ("413", f"POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: 99999999\r\n\r\n".encode(), 413),
    ("431", http_request("POST", CHAT, chat_body(), {"X-Pad": "a" * 40000}), 431),
    ("414", http_request("GET", "/ask?q=" + "x" * 40000), 414),
    ("400-framing", b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n"
                    b"Content-Length: 3\r\n\r\n{}", 400),
])
def test_server_refusals_a_retry_cannot_fix_say_so(gateway, mock, name, raw, status):
    with RawConn(gateway.port) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        st, hdrs, body = c.read_response()
    assert st == status, (st, body[:200])
    assert_error_shape(body)
    assert hdrs.get("x-should-retry") == "false", hdrs


def test_errors_a_retry_may_fix_leave_the_sdk_its_rules(gateway_factory):
    """An upstream that is down is 502: the SDK's retry is right there."""
    g = gateway_factory(f"http://127.0.0.1:{free_port()}/v1")
    r = g.chat(chat_body("upstream down"))
    assert_error_shape(r, 502)
    assert "X-Should-Retry" not in r.headers, dict(r.headers)


# ------------------------------------------------------------ every other /v1 route passed through

BIG = 8 * 1024 * 1024


def assert_passed_through(r):
    assert r.headers.get("X-Cache") == "BYPASS", dict(r.headers)
    assert cache_status(r.headers) == {"fwd": "bypass"}
    assert r.headers.get("Cache-Control") == "no-store"


def test_an_unknown_v1_route_passes_a_large_body_both_ways_intact(gateway_factory, mock):
    g = gateway_factory(mock, args=["--max-body-bytes", "16M"])
    data = os.urandom(BIG)
    for n in (1, 2):  # never cached: the second goes upstream too
        r = g.http.put(g.url + "/v1/echo/uploads/u1?part=3&x=%2F", data=data, timeout=60,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text[:300]
        assert len(r.content) == BIG and hashlib.sha256(r.content).digest() == \
            hashlib.sha256(data).digest()
        assert r.headers["Content-Type"] == "application/octet-stream"
        # The method and target reached the upstream as the client sent them.
        assert r.headers["X-Request-Id"] == "echo PUT /v1/echo/uploads/u1?part=3&x=%2F"
        assert_passed_through(r)
        assert mock.stats()["echo"] == n
    st = g.stats()
    assert st["forwarded"] == 2 and st["misses"] == 0 and st["hits"] == 0 and st["stored"] == 0


def test_the_client_content_type_goes_upstream_unchanged(gateway, mock):
    """Multipart uploads (files, audio) keep their boundary."""
    ct = "multipart/form-data; boundary=----llmc123"
    body = b"------llmc123\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n" \
           b"------llmc123--\r\n"
    r = gateway.http.post(gateway.url + "/v1/echo/files", data=body, headers={"Content-Type": ct},
                          timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == ct
    assert r.content == body


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH", "POST"])
def test_any_method_passes_through(gateway, mock, method):
    r = gateway.http.request(method, gateway.url + "/v1/echo/batches/b1/cancel?limit=2",
                             timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["X-Request-Id"] == f"echo {method} /v1/echo/batches/b1/cancel?limit=2"
    assert r.content == b""
    assert_passed_through(r)


def test_head_passes_through_without_a_body(gateway, mock):
    with RawConn(gateway.port) as c:
        c.send(http_request("HEAD", "/v1/models/gpt-4o"))
        st, hdrs, body = c.read_response(method="HEAD")
        assert st == 200 and body == b""
        assert hdrs["x-cache"] == "BYPASS"
        # The connection stays usable: nothing of a body was sent.
        c.send(http_request("GET", "/healthz"))
        assert c.read_response()[0] == 200


def test_models_retrieve_passes_through(gateway, mock):
    r = gateway.get("/v1/models/gpt-4o")
    assert r.status_code == 200
    assert r.json() == {"id": "gpt-4o", "object": "model", "created": 1700000000,
                        "owned_by": "llmcached-mock"}
    assert_passed_through(r)
    r = gateway.get("/v1/models/no-such-model")
    err = assert_error_shape(r, 404)  # the upstream's answer, unchanged
    assert err["code"] == "model_not_found"
    assert r.headers.get("X-Cache") == "BYPASS"
    assert mock.stats()["model"] == 2


@pytest.mark.parametrize("path", ["/v1/../admin", "/v1/models/../../admin", "/v1/%2e%2E/admin",
                                  "/v1/./models", "/v1/models/%2E"])
def test_dot_segments_are_refused_not_resolved_upstream(gateway, mock, path):
    with RawConn(gateway.port) as c:
        c.send(http_request("GET", path))
        st, hdrs, body = c.read_response()
    assert st == 400, (st, body)
    assert assert_error_shape(body)["code"] == "invalid_path"
    assert mock.stats()["calls"] == 0


def test_dots_inside_a_segment_are_fine(gateway, mock):
    r = gateway.get("/v1/echo/files/report.v2..final")
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == "echo GET /v1/echo/files/report.v2..final"


def test_pass_through_upstream_down_is_502(gateway_factory):
    g = gateway_factory(f"http://127.0.0.1:{free_port()}/v1")
    r = g.get("/v1/models/gpt-4o")
    assert_error_shape(r, 502)
    assert r.headers.get("X-Cache") == "BYPASS"
    assert g.stats()["upstream_errors"]["connect"] == 1


def slow_reader(port, rcvbuf=16384):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.settimeout(30)
    return s


def test_a_slow_client_holds_the_upstream_back_and_gets_every_byte(gateway_factory, mock):
    """The answer is relayed, not collected: while the client reads nothing,
    the gateway stops reading the upstream (forward_pauses), then resumes as
    the client takes the bytes, and the body arrives whole."""
    g = gateway_factory(mock, args=["--max-body-bytes", "16M"])
    data = os.urandom(BIG)
    s = slow_reader(g.port)
    try:
        s.sendall(http_request("POST", "/v1/echo/slow", data,
                               {"Content-Type": "application/octet-stream"}))
        wait_until(lambda: g.stats()["forward_pauses"] >= 1, timeout=10,
                   what="the relay to pause for the slow client")
        got = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            if got.endswith(b"\r\n0\r\n\r\n"):
                break
    finally:
        s.close()
    head, _, chunked = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    body, rest = b"", chunked
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2:]
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_a_client_that_leaves_mid_relay_stops_it(gateway_factory, mock):
    g = gateway_factory(mock, args=["--max-body-bytes", "16M"])
    s = slow_reader(g.port)
    s.sendall(http_request("POST", "/v1/echo/leave", os.urandom(BIG),
                           {"Content-Type": "application/octet-stream"}))
    wait_until(lambda: g.stats()["forward_pauses"] >= 1, timeout=10, what="the relay to pause")
    s.close()
    wait_until(lambda: g.stats()["aborted"] == 1, timeout=5, what="the abort to be counted")
    r = g.get("/v1/models/gpt-4o")  # and the gateway goes on serving
    assert r.status_code == 200


# ------------------------------------------------------------ X-Cache-Tokens-Saved

def tokens_saved(r):
    return r.headers.get("X-Cache-Tokens-Saved")


def test_every_hit_says_what_it_saved(gateway, mock):
    body = chat_body("count what I saved")
    miss = gateway.chat(body)
    assert miss.headers["X-Cache"] == "MISS" and tokens_saved(miss) is None
    u = miss.json()["usage"]
    want = f"{u['prompt_tokens']}+{u['completion_tokens']}"
    for _ in range(2):
        hit = gateway.chat(body)
        assert hit.headers["X-Cache"] == "HIT" and tokens_saved(hit) == want
    # A revalidation is answered from the cache too.
    nm = gateway.chat(body, headers={"If-None-Match": hit.headers["ETag"]})
    assert nm.status_code == 304 and tokens_saved(nm) == want
    # The streamed form of the same entry says the same.
    s = gateway.http.post(gateway.url + CHAT, json=dict(body, stream=True), timeout=10)
    assert s.headers["X-Cache"] == "HIT" and tokens_saved(s) == want


def test_an_embedding_saved_its_prompt(gateway, mock):
    body = {"model": "text-embedding-3-small", "input": "saved tokens of an embedding"}
    miss = gateway.post("/v1/embeddings", body)
    hit = gateway.post("/v1/embeddings", body)
    assert hit.headers["X-Cache"] == "HIT"
    assert tokens_saved(hit) == f"{miss.json()['usage']['prompt_tokens']}+0"


def test_a_stream_recorded_without_usage_still_says_what_it_saved(gateway, mock):
    body = chat_body("streamed, then saved", stream=True)
    with gateway.http.post(gateway.url + CHAT, json=body, stream=True, timeout=10) as r:
        assert r.headers["X-Cache"] == "MISS"
        r.content
    plain = {k: v for k, v in body.items() if k != "stream"}
    hit = gateway.chat(plain)
    u = hit.json()["usage"]
    assert tokens_saved(hit) == f"{u['prompt_tokens']}+{u['completion_tokens']}"


def test_a_hit_from_the_disk_tier_says_what_it_saved(gateway_factory, mock, tmp_path):
    data = tmp_path / "data"
    g = gateway_factory(mock, args=["--data-dir", str(data)])
    body = chat_body("saved on disk")
    u = g.chat(body).json()["usage"]
    wait_until(lambda: g.stats()["tiers"]["disk"]["stored"] >= 1, timeout=10,
               what="the entry committed to disk")
    g.must_survive = False
    assert g.stop() is None
    g2 = gateway_factory(mock, args=["--data-dir", str(data)])
    hit = g2.chat(body)
    assert cache_status(hit.headers).get("detail") == "disk", hit.headers
    assert tokens_saved(hit) == f"{u['prompt_tokens']}+{u['completion_tokens']}"


def test_a_big_answer_checked_off_the_loop_says_what_it_saved(gateway, mock):
    """Answers over 256 KiB are checked on the thread pool; their counts are
    read there."""
    body = chat_body("a long answer", mock={"bytes": 400000})
    miss = gateway.chat(body)
    assert len(miss.content) > 300000
    u = miss.json()["usage"]
    hit = gateway.chat(body)
    assert hit.headers["X-Cache"] == "HIT"
    assert tokens_saved(hit) == f"{u['prompt_tokens']}+{u['completion_tokens']}"


# ------------------------------------------------------------ the Responses API

RESPONSES = "/v1/responses"


def responses_body(text="What is a cache?", **extra):
    body = {"model": "gpt-4o-mini", "instructions": "Be brief.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]}
    body.update(extra)
    return body


def test_responses_are_cached_like_chat_completions(gateway, mock):
    body = responses_body("cache my response")
    miss = gateway.post(RESPONSES, body)
    assert miss.status_code == 200, miss.text
    assert miss.headers["X-Cache"] == "MISS"
    assert cache_status(miss.headers) == {"fwd": "uri-miss", "stored": True}
    r = miss.json()
    assert r["object"] == "response" and r["status"] == "completed"
    # Fields that cannot change the answer do not split the entry.
    same = dict(body, store=False, metadata={"run": "2"}, safety_identifier="u-9",
                prompt_cache_key="p", user="someone", service_tier="flex")
    hit = gateway.post(RESPONSES, same)
    assert hit.headers["X-Cache"] == "HIT" and hit.content == miss.content
    assert hit.headers["X-Cache-Key"] == miss.headers["X-Cache-Key"]
    u = r["usage"]
    assert hit.headers["X-Cache-Tokens-Saved"] == f"{u['input_tokens']}+{u['output_tokens']}"
    # Anything else does, and a chat completion never shares its entries.
    assert gateway.post(RESPONSES, dict(body, temperature=0.2)).headers["X-Cache"] == "MISS"
    assert mock.stats()["responses"] == 2
    # Cache-Control, TTL and namespaces work as for chat.
    nc = gateway.post(RESPONSES, body, headers={"Cache-Control": "no-cache"})
    assert nc.headers["X-Cache"] == "MISS" and mock.stats()["responses"] == 3
    ns = gateway.post(RESPONSES, body, headers={"X-Cache-Namespace": "other"})
    assert ns.headers["X-Cache"] == "MISS" and mock.stats()["responses"] == 4


@pytest.mark.parametrize("field,value", [
    ("previous_response_id", "resp_abc123"),
    ("conversation", "conv_abc123"),
    ("conversation", {"id": "conv_abc123"}),
    ("background", True),
])
def test_responses_that_depend_on_provider_state_pass_through(gateway, mock, field, value):
    body = responses_body("stateful", **{field: value})
    for n in (1, 2):
        r = gateway.post(RESPONSES, body)
        assert r.status_code == 200, r.text
        assert r.headers["X-Cache"] == "BYPASS"
        assert cache_status(r.headers) == {"fwd": "bypass", "detail": field}
        assert "X-Cache-Key" not in r.headers and "X-Cache-Tokens-Saved" not in r.headers
        assert mock.stats()["responses"] == n
    # Neither read nor stored: the same body without the field is a miss.
    assert gateway.post(RESPONSES, responses_body("stateful")).headers["X-Cache"] == "MISS"


def test_responses_fields_set_to_nothing_are_cached(gateway, mock):
    body = responses_body("stateless", previous_response_id=None, background=False)
    assert gateway.post(RESPONSES, body).headers["X-Cache"] == "MISS"
    assert gateway.post(RESPONSES, body).headers["X-Cache"] == "HIT"


def test_other_responses_routes_pass_through(gateway, mock):
    r = gateway.get("/v1/responses/resp_abc123/input_items")
    assert r.headers.get("X-Cache") == "BYPASS"
    assert r.status_code == 404  # the mock keeps no responses


# ------------------------------------------------- chat tool calls and json_schema

def chat_stream_final(gateway, body):
    """The chat.completion a streamed answer adds up to, by the client's rules."""
    r = gateway.post(CHAT, dict(body, stream=True))
    assert r.status_code == 200, r.text
    msg, finish, calls = {"role": "assistant", "content": None}, None, {}
    for block in r.text.split("\n\n"):
        if not block.startswith("data: ") or block == "data: [DONE]":
            continue
        for ch in json.loads(block[6:])["choices"]:
            d = ch["delta"]
            if d.get("content"):
                msg["content"] = (msg["content"] or "") + d["content"]
            for tc in d.get("tool_calls", []):
                c = calls.setdefault(tc["index"], {"function": {"arguments": ""}})
                c.update({k: v for k, v in tc.items() if k not in ("index", "function")})
                fn = tc.get("function", {})
                c["function"]["name"] = fn.get("name", c["function"].get("name"))
                c["function"]["arguments"] += fn.get("arguments", "")
            finish = ch["finish_reason"] or finish
    if calls:
        msg["tool_calls"] = [calls[i] for i in sorted(calls)]
    return r, msg, finish


def test_chat_tool_calls_are_recorded_and_replayed(gateway, mock):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    body = chat_body("weather in Oslo?", tools=tools)
    miss, live, finish = chat_stream_final(gateway, body)
    assert miss.headers["X-Cache"] == "MISS" and finish == "tool_calls"
    [call] = live["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city"}
    plain = gateway.chat(body)
    assert plain.headers["X-Cache"] == "HIT"
    choice = plain.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [call]
    hit, replayed, finish = chat_stream_final(gateway, body)
    assert hit.headers["X-Cache"] == "HIT" and finish == "tool_calls"
    assert replayed["tool_calls"] == [call]
    # The tool's result sent back gets a text answer about it.
    step2 = dict(body, messages=body["messages"] + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "rainy"}])
    text = gateway.chat(step2).json()["choices"][0]["message"]["content"]
    assert "tool result: rainy" in text
    assert mock.stats()["chat"] == 2


def test_chat_json_schema_answers_are_recorded_and_replayed(gateway, mock):
    rf = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
        "type": "object", "properties": {"name": {"type": "string"},
                                         "size": {"type": "string", "enum": ["big", "small"]}},
        "required": ["name", "size"], "additionalProperties": False}}}
    body = chat_body("describe Oslo", response_format=rf)
    _, live, finish = chat_stream_final(gateway, body)
    doc = json.loads(live["content"])
    assert set(doc) == {"name", "size"} and doc["size"] == "big" and finish == "stop"
    plain = gateway.chat(body)
    assert plain.headers["X-Cache"] == "HIT"
    assert plain.json()["choices"][0]["message"]["content"] == live["content"]
