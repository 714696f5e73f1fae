"""POST /v1/messages: Anthropic Messages cached like chat completions.

The gateway fronts the mock as its OpenAI upstream and, through
--anthropic-upstream, as its Anthropic one (the mock speaks both). Each test
asserts what an Anthropic client sees: the Message, the event stream (parsed
here the way the SDK folds it), the cache headers and the mock's call count.
"""

import json

import pytest
import requests

from conftest import session

MSGS = "/v1/messages"
VERSION = "2023-06-01"


def anth_body(text="Say hello to Claude", **extra):
    b = {"model": "claude-mock", "max_tokens": 256,
         "messages": [{"role": "user", "content": text}]}
    b.update(extra)
    return b


TOOLS = [{"name": "lookup", "description": "looks things up",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
THINKING = {"type": "enabled", "budget_tokens": 1024}


def hdrs(key="sk-ant-client-1", version=VERSION, **extra):
    h = {"anthropic-version": version, "content-type": "application/json"}
    if key is not None:
        h["x-api-key"] = key
    h.update(extra)
    return h


@pytest.fixture
def anth(mock, gateway_factory):
    """A gateway with the mock as both upstreams; no Anthropic key: per-key scope."""
    return gateway_factory(mock, args=["--anthropic-upstream", mock.url])


def post(gw, body, headers=None):
    return gw.http.post(gw.url + MSGS, data=json.dumps(body), headers=headers or hdrs(),
                        timeout=30)


def parse_events(raw):
    """The (event, data) pairs of an SSE body."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        ev, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                ev = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        out.append((ev, json.loads("\n".join(data))))
    return out


def fold(events):
    """An Anthropic event stream folded into its Message, as the SDK's
    MessageStream does, checking the sequence is valid on the way."""
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    msg = None
    open_blocks = set()
    json_bufs = {}
    for ev, d in events:
        assert ev == d["type"], (ev, d)
        t = d["type"]
        if t == "message_start":
            msg = json.loads(json.dumps(d["message"]))
            assert msg["content"] == [] and msg["stop_reason"] is None
        elif t == "content_block_start":
            assert d["index"] == len(msg["content"])
            msg["content"].append(d["content_block"])
            open_blocks.add(d["index"])
        elif t == "content_block_delta":
            assert d["index"] in open_blocks
            b, dl = msg["content"][d["index"]], d["delta"]
            if dl["type"] == "text_delta":
                b["text"] += dl["text"]
            elif dl["type"] == "thinking_delta":
                b["thinking"] += dl["thinking"]
            elif dl["type"] == "signature_delta":
                b["signature"] = dl["signature"]
            elif dl["type"] == "input_json_delta":
                json_bufs[d["index"]] = json_bufs.get(d["index"], "") + dl["partial_json"]
            else:
                raise AssertionError(dl)
        elif t == "content_block_stop":
            open_blocks.remove(d["index"])
            if json_bufs.get(d["index"]):
                msg["content"][d["index"]]["input"] = json.loads(json_bufs[d["index"]])
        elif t == "message_delta":
            msg.update(d["delta"])
            msg["usage"].update({k: v for k, v in d["usage"].items() if v is not None})
        elif t in ("message_stop", "ping"):
            pass
        else:
            raise AssertionError(t)
    assert not open_blocks
    return msg


def stream(gw, body, headers=None):
    s = session()
    h = dict(headers or hdrs(), **{"Accept-Encoding": "identity"})  # the SSE bytes themselves
    with s.post(gw.url + MSGS, data=json.dumps(dict(body, stream=True)),
                headers=h, stream=True, timeout=30) as r:
        raw = b""
        try:
            for chunk in r.raw.stream(4096, decode_content=False):
                raw += chunk
        except Exception:
            pass
        return r, raw


# ------------------------------------------------------------------ plain

def test_plain_miss_then_hit(anth, mock):
    r1 = post(anth, anth_body())
    assert r1.status_code == 200, r1.text
    assert r1.headers["X-Cache"] == "MISS"
    m = r1.json()
    assert m["type"] == "message" and m["content"][0]["type"] == "text"
    r2 = post(anth, anth_body())
    assert r2.headers["X-Cache"] == "HIT"
    assert r2.json() == m
    u = m["usage"]
    assert r2.headers["X-Cache-Tokens-Saved"] == f"{u['input_tokens']}+{u['output_tokens']}"
    assert mock.calls("messages") == 1


def test_ignored_metadata_does_not_split_the_key(anth, mock):
    post(anth, anth_body(metadata={"user_id": "u-1"}))
    r = post(anth, anth_body(metadata={"user_id": "u-2"}))
    assert r.headers["X-Cache"] == "HIT"
    assert mock.calls("messages") == 1


def test_anthropic_version_and_beta_are_part_of_the_key(anth, mock):
    assert post(anth, anth_body()).headers["X-Cache"] == "MISS"
    r = post(anth, anth_body(), hdrs(version="2099-01-01"))
    assert r.headers["X-Cache"] == "MISS"
    r = post(anth, anth_body(), hdrs(**{"anthropic-beta": "some-beta-2025"}))
    assert r.headers["X-Cache"] == "MISS"
    r = post(anth, anth_body(), hdrs(**{"anthropic-beta": "some-beta-2025"}))
    assert r.headers["X-Cache"] == "HIT"
    assert mock.calls("messages") == 3


def test_x_api_key_scopes_the_cache_when_the_gateway_holds_no_key(anth, mock):
    post(anth, anth_body(), hdrs(key="sk-ant-a"))
    assert post(anth, anth_body(), hdrs(key="sk-ant-a")).headers["X-Cache"] == "HIT"
    assert post(anth, anth_body(), hdrs(key="sk-ant-b")).headers["X-Cache"] == "MISS"
    assert mock.calls("messages") == 2


def test_the_client_key_and_version_are_forwarded(anth, mock):
    # The mock, like Anthropic's API, refuses a call without x-api-key or
    # anthropic-version: these pass only because the gateway sent them on.
    assert post(anth, anth_body("forwarded")).status_code == 200
    r = post(anth, anth_body("no key"), hdrs(key=None))
    assert r.status_code == 401, r.text
    r = post(anth, anth_body("no version"), {"x-api-key": "k", "content-type": "application/json"})
    assert r.status_code == 400, r.text


def test_the_gateway_key_is_sent_as_x_api_key_and_shares_the_cache(mock, gateway_factory):
    gw = gateway_factory(mock, args=["--anthropic-upstream", mock.url],
                         env={"LLMC_ANTHROPIC_KEY": "sk-ant-gateway"})
    # No client key at all: the call succeeds on the gateway's own.
    assert post(gw, anth_body(), hdrs(key=None)).status_code == 200
    # Shared scope: another credential gets the same answer.
    assert post(gw, anth_body(), hdrs(key="sk-ant-b")).headers["X-Cache"] == "HIT"
    assert mock.calls("messages") == 1


def test_errors_have_anthropic_shape(anth):
    r = anth.http.post(anth.url + MSGS, data=b'{"model": ', headers=hdrs(), timeout=10)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]
    r = post(anth, anth_body(), dict(hdrs(), **{"Cache-Control": "only-if-cached"}))
    assert r.status_code == 504 and r.json()["type"] == "error"
    assert r.headers.get("X-Should-Retry") == "false"


# ------------------------------------------------------------------ streams

def test_stream_miss_is_relayed_and_recorded_then_replayed(anth, mock):
    body = anth_body("Stream a reply")
    r1, raw1 = stream(anth, body)
    assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS"
    live = fold(parse_events(raw1))
    r2, raw2 = stream(anth, body)
    assert r2.headers["X-Cache"] == "HIT"
    assert r2.headers["Content-Type"].startswith("text/event-stream")
    replayed = fold(parse_events(raw2))
    assert replayed == live
    assert mock.calls("messages") == 1


def test_cross_serving_plain_from_stream_and_stream_from_plain(anth, mock):
    b1 = anth_body("first streamed")
    _, raw = stream(anth, b1)
    live = fold(parse_events(raw))
    r = post(anth, b1)
    assert r.headers["X-Cache"] == "HIT" and r.json() == live
    b2 = anth_body("first plain")
    plain = post(anth, b2).json()
    r, raw = stream(anth, b2)
    assert r.headers["X-Cache"] == "HIT"
    assert fold(parse_events(raw)) == plain
    assert mock.calls("messages") == 2


def test_tool_use_and_thinking_survive_a_replay(anth, mock):
    body = anth_body("find the weather", tools=TOOLS, thinking=THINKING)
    _, raw = stream(anth, body)
    live = fold(parse_events(raw))
    types = [b["type"] for b in live["content"]]
    assert types == ["thinking", "text", "tool_use"], types
    assert live["stop_reason"] == "tool_use"
    assert live["content"][0]["signature"] and live["content"][0]["thinking"]
    tool = live["content"][2]
    assert tool["name"] == "lookup" and tool["input"]["count"] == 3
    # The stored form (a plain hit) and the replay both give it back whole.
    assert post(anth, body).json() == live
    r, raw = stream(anth, body)
    assert r.headers["X-Cache"] == "HIT"
    events = parse_events(raw)
    kinds = {d["delta"]["type"] for e, d in events if e == "content_block_delta"}
    assert {"thinking_delta", "signature_delta", "text_delta", "input_json_delta"} <= kinds
    assert fold(events) == live
    assert mock.calls("messages") == 1


def test_usage_saved_header_on_a_stream_hit(anth, mock):
    body = anth_body("count my tokens")
    _, raw = stream(anth, body)
    live = fold(parse_events(raw))
    r, _ = stream(anth, body)
    u = live["usage"]
    assert r.headers["X-Cache-Tokens-Saved"] == f"{u['input_tokens']}+{u['output_tokens']}"


def test_an_incomplete_stream_is_not_stored(anth, mock):
    body = anth_body("cut me off", mock={"fault": "cut-stream"})
    r, raw = stream(anth, body)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert b"message_stop" not in raw
    r, raw = stream(anth, body)
    assert r.headers["X-Cache"] == "MISS"
    r = post(anth, body, dict(hdrs(), **{"Cache-Control": "only-if-cached"}))
    assert r.status_code == 504
    assert mock.calls("messages") == 2


def test_chat_and_messages_on_one_gateway(anth, mock):
    # One gateway fronts both APIs: chat goes to --upstream, messages to
    # --anthropic-upstream, each cached in its own shape.
    c = anth.chat()
    assert c.status_code == 200 and c.json()["object"] == "chat.completion"
    m = post(anth, anth_body())
    assert m.status_code == 200 and m.json()["type"] == "message"
    assert mock.calls("chat") == 1 and mock.calls("messages") == 1


def test_other_messages_paths_pass_through_to_the_anthropic_upstream(mock, gateway_factory):
    # --upstream leads nowhere: /v1/messages and what lies below it
    # (count_tokens, batches) reach the Anthropic upstream all the same.
    from conftest import free_port
    gw = gateway_factory(f"http://127.0.0.1:{free_port()}/v1",
                         args=["--anthropic-upstream", mock.url])
    assert post(gw, anth_body()).status_code == 200
    r = gw.http.post(gw.url + "/v1/messages/count_tokens", data=json.dumps(anth_body()),
                     headers=hdrs(), timeout=10)
    # The mock has no such route: its own 404 proves the call reached it.
    assert r.status_code == 404 and "count_tokens" in r.text, r.text
    assert r.headers["X-Cache"] == "BYPASS"
    assert gw.chat().status_code == 502


def test_a_non_json_body_is_refused_in_anthropic_shape(anth):
    r = anth.http.post(anth.url + MSGS, data="hello", timeout=10,
                       headers=dict(hdrs(), **{"content-type": "text/plain"}))
    assert r.status_code == 415
    assert r.json()["type"] == "error" and r.json()["error"]["message"]
    assert r.headers.get("X-Should-Retry") == "false"
    r = anth.http.post(anth.url + MSGS, data=b"{", headers=hdrs(), timeout=10)
    assert r.status_code == 400
    assert r.raw.headers.getlist("X-Should-Retry") == ["false"]


def test_plain_and_streaming_followers_share_a_streamed_call(anth, mock):
    import threading
    import time
    body = anth_body("slow shared stream", mock={"chunk_delay_ms": 30})
    got = {}
    lead = threading.Thread(target=lambda: got.update(lead=stream(anth, body)))
    lead.start()
    time.sleep(0.15)   # the leader's call is in the air, events flowing
    plain = threading.Thread(target=lambda: got.update(plain=post(anth, body)))
    plain.start()
    follower_r, follower_raw = stream(anth, body)
    lead.join(30)
    plain.join(30)
    lead_r, lead_raw = got["lead"]
    assert lead_r.headers["X-Cache"] == "MISS"
    assert follower_r.headers["X-Cache"] == "COALESCED"
    assert got["plain"].headers["X-Cache"] == "COALESCED"
    live = fold(parse_events(lead_raw))
    assert fold(parse_events(follower_raw)) == live
    assert got["plain"].json() == live
    assert mock.calls("messages") == 1


def test_auto_with_upstream_mock_serves_messages_from_the_built_in_mock(gateway_factory):
    gw = gateway_factory("mock", args=["--mock-latency", "0"])
    r = post(gw, anth_body("built in"))
    assert r.status_code == 200 and r.json()["type"] == "message", r.text
    assert post(gw, anth_body("built in")).headers["X-Cache"] == "HIT"


def test_an_unreachable_anthropic_upstream_is_an_anthropic_502(mock, gateway_factory):
    from conftest import free_port
    gw = gateway_factory(mock, args=["--anthropic-upstream", f"http://127.0.0.1:{free_port()}/v1"])
    r = post(gw, anth_body())
    assert r.status_code == 502
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"
    assert gw.chat().status_code == 200   # the OpenAI side is unaffected


def test_a_bad_anthropic_upstream_stops_start_up(mock, tmp_path):
    import subprocess
    from conftest import llmc_bin, free_port
    p = subprocess.run([llmc_bin(), "--listen", f"127.0.0.1:{free_port()}", "--upstream", mock.url,
                        "--anthropic-upstream", "ftp://example.com/v1", "--threads", "1"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "--anthropic-upstream" in p.stderr, p.stderr


def test_a_request_naming_a_container_is_passed_through_uncached(anth, mock):
    body = anth_body("run code", container="container_011")
    for _ in range(2):
        r = post(anth, body)
        assert r.status_code == 200 and r.json()["type"] == "message"
        assert r.headers["X-Cache"] == "BYPASS"
        assert "detail=container" in r.headers["Cache-Status"]
    assert mock.calls("messages") == 2


@pytest.mark.parametrize("status,etype", [(429, "rate_limit_error"), (404, "not_found_error"),
                                          (500, "api_error")])
def test_an_upstream_error_reaches_the_client_in_anthropics_shape(anth, mock, status, etype):
    """The mock answers /v1/messages errors as Anthropic does, and the gateway
    passes them on as they came (status, shape) and stores none of them."""
    body = anth_body("fail please", mock={"status": status, "retry_after": "0"})
    for _ in range(2):
        r = post(anth, body)
        assert r.status_code == status
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == etype
        assert r.json()["error"]["message"]
        assert r.headers.get("X-Cache") != "HIT"


def test_anthropic_beta_on_several_lines_is_one_list(anth, mock):
    """A client may send anthropic-beta's list on several header lines (RFC
    9110 5.3): the lines mean their values joined with ", ", so that request
    shares the entry of the one-line form and the upstream gets every beta,
    not only the first line's."""
    import http.client
    from urllib.parse import urlparse
    body = json.dumps(anth_body("several beta lines"))
    one = post(anth, anth_body("several beta lines"),
               hdrs(**{"anthropic-beta": "tools-2024-04-04, pdfs-2024-09-25"}))
    assert one.status_code == 200 and one.headers["X-Cache"] == "MISS"
    u = urlparse(anth.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.putrequest("POST", MSGS)
    for k, v in hdrs().items():
        c.putheader(k, v)
    c.putheader("anthropic-beta", "tools-2024-04-04")
    c.putheader("anthropic-beta", "pdfs-2024-09-25")
    c.putheader("Content-Length", str(len(body)))
    c.endheaders(body.encode())
    r = c.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("X-Cache") == "HIT"
    assert r.getheader("X-Cache-Key") == one.headers["X-Cache-Key"]
    c.close()
    other = post(anth, anth_body("several beta lines"),
                 hdrs(**{"anthropic-beta": "tools-2024-04-04"}))
    assert other.headers["X-Cache"] == "MISS"


def test_vary_names_what_tells_anthropic_answers_apart(anth, mock):
    """A cache in front of the gateway must tell apart what the key does: per
    credential, the x-api-key a client sends (not only Authorization), and
    always the anthropic-version and anthropic-beta headers."""
    post(anth, anth_body("vary me"))
    hit = post(anth, anth_body("vary me"))
    assert hit.headers["X-Cache"] == "HIT"
    vary = [v.strip().lower() for v in hit.headers["Vary"].split(",")]
    for name in ("x-api-key", "authorization", "x-cache-namespace", "anthropic-version",
                 "anthropic-beta"):
        assert name in vary, (name, vary)
