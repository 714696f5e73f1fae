"""Regression tests from a review of the streaming and coalescing paths.

Each test is named after what a client saw go wrong. Most use the built-in
mock; where the upstream must send bytes the mock never sends (a byte-order
mark, hand-made chunks), a scripted upstream on a raw socket plays them
(ScriptedUpstream below), so every byte and every pause is the test's own.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import ROOT, chat_body, completion_body
from test_streaming import CHAT, COMPLETIONS, PROMPT, body_for, open_stream, parse, stream, xcache


# ------------------------------------------------------- a scripted upstream

class ScriptedUpstream:
    """An HTTP/1.1 upstream that answers every request with one script:
    (status, content_type, pieces), pieces a list of (bytes, pause_before_s),
    sent as chunks of a chunked body. `calls` counts the requests and
    `bodies` keeps what each one sent."""

    def __init__(self, status, content_type, pieces):
        self.script = (status, content_type, pieces)
        self.calls = 0
        self.bodies = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = conn.recv(65536)
            if not got:
                return None
            buf += got
        head, body = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        return body

    def _serve(self, conn):
        with conn:
            try:
                body = self._read_request(conn)
                if body is None:
                    return
                self.calls += 1
                self.bodies.append(json.loads(body))
                status, ctype, pieces = self.script
                conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\n"
                             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode())
                for data, pause in pieces:
                    time.sleep(pause)
                    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def scripted():
    ups = []

    def make(status, content_type, pieces):
        u = ScriptedUpstream(status, content_type, pieces)
        ups.append(u)
        return u
    yield make
    for u in ups:
        u.close()


def chunk(delta, finish=None, **top):
    c = {"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 1735689600,
         "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": finish}]}
    c.update(top)
    return c


def sse(*chunks):
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + \
        b"data: [DONE]\n\n"


def lead_and_follow(g, path, lead_body, follow_body, lead_events):
    """Opens a leading stream, reads lead_events of it, then a follower of
    the same call; reads both to their end and returns them closed."""
    leader = open_stream(g, path, lead_body)
    leader.read_events(lead_events)
    follower = open_stream(g, path, follow_body)
    follower.read_all()
    leader.read_all()
    leader.close()
    follower.close()
    return leader, follower


# ----------------------------------------------- usage chunks of a shared stream

@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_follower_that_did_not_ask_for_usage_gets_no_usage_chunk(gateway, mock, path):
    """The leader asked stream_options.include_usage, the follower did not:
    "stream_options" is not part of the key, so both share one upstream
    stream. The follower used to get the leader's usage chunk ("choices": []),
    which OpenAI never sends unasked and which breaks the usual client loop
    `chunk.choices[0].delta`."""
    if path == CHAT:
        body = body_for(PROMPT + " usage shared", chunk_delay_ms=100)
    else:
        body = completion_body(PROMPT + " usage shared", stream=True,
                               mock={"chunk_delay_ms": 100})
    leader, follower = lead_and_follow(
        gateway, path, dict(body, stream_options={"include_usage": True}), body, 2)
    assert xcache(leader) == "MISS" and xcache(follower) == "COALESCED"
    assert follower.end == leader.end == "complete"
    lead, foll = parse(leader.data), parse(follower.data)
    assert lead["usage_chunks"] == 1
    assert foll["usage_chunks"] == 0, follower.data[-3:]
    assert all(json.loads(d)["choices"] for d in follower.data[:-1]), follower.data
    # Everything else is the leader's stream, event for event.
    assert follower.data == [d for d in leader.data if not d.startswith('{') or
                             json.loads(d)["choices"]]
    assert foll["content"] == lead["content"] and foll["finish_reason"] == "stop"
    assert mock.calls() == 1
    # The stored completion still has the usage, for those who ask.
    hit = stream(gateway, path, dict(body, stream_options={"include_usage": True}))
    assert xcache(hit) == "HIT" and parse(hit.data)["usage"] == lead["usage"]


def test_follower_that_asked_for_usage_keeps_it_with_odd_splits(gateway, mock):
    """Both asked: the follower's stream is the leader's byte for byte, also
    when the upstream splits its events anywhere (the filter must not touch a
    stream it has nothing to drop from)."""
    body = body_for(PROMPT + " usage both", split="bytes", chunk_delay_ms=5)
    body["stream_options"] = {"include_usage": True}
    leader, follower = lead_and_follow(gateway, CHAT, body, body, 1)
    assert xcache(follower) == "COALESCED"
    assert follower.body == leader.body
    assert parse(follower.data)["usage_chunks"] == 1


def test_follower_without_usage_gets_long_events_whole(gateway_factory, scripted):
    """An event far longer than any usage chunk is passed on as it arrives,
    without being held back for its end, and the filter finds its footing
    again after it: the follower still gets every event but the usage one."""
    big = "lorem ipsum " * 9000                            # ~108 KB in one event
    events = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": big}),
                 chunk({"content": " end"}), chunk({}, "stop"),
                 dict(chunk({}), choices=[], usage={"prompt_tokens": 1, "completion_tokens": 2,
                                                    "total_tokens": 3}))
    cut = events.index(b"lorem") + 1000
    pieces = [(events[:cut], 0)] + [(events[i:i + 20000], 0.1)
                                    for i in range(cut, len(events), 20000)]
    up = scripted(200, "text/event-stream", pieces)
    g = gateway_factory(up.url)
    body = chat_body("long events", stream=True)
    leader, follower = lead_and_follow(
        g, CHAT, dict(body, stream_options={"include_usage": True}), body, 1)
    assert xcache(follower) == "COALESCED" and follower.end == "complete"
    assert parse(leader.data)["usage_chunks"] == 1
    f = parse(follower.data)
    assert f["usage_chunks"] == 0 and f["content"] == big + " end"
    assert follower.data == leader.data[:-2] + leader.data[-1:]
    assert up.calls == 1


# ---------------------------------------------------- what the stream stores

def test_stream_opening_with_a_byte_order_mark_stores_its_first_event(gateway_factory, scripted):
    """SSE lets a stream open with a UTF-8 byte-order mark, which a client's
    decoder drops (WHATWG; TextDecoder in the Node SDK). The assembler took it
    for part of the first field's name, lost the first event and stored the
    answer without its first delta."""
    events = sse(chunk({"role": "assistant", "content": "Bonjour"}),
                 chunk({"content": " le monde"}), chunk({}, "stop"))
    up = scripted(200, "text/event-stream", [(b"\xef\xbb", 0), (b"\xbf" + events, 0.05)])
    g = gateway_factory(up.url)
    body = chat_body("bom", stream=True)
    s = stream(g, CHAT, body)
    assert s.status == 200 and xcache(s) == "MISS"
    assert s.body.startswith(b"\xef\xbb\xbfdata: ")   # relayed as it came
    plain = dict(body)
    del plain["stream"]
    r = g.chat(plain)
    assert r.status_code == 200 and xcache(r) == "HIT", r.text
    msg = r.json()["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "Bonjour le monde"}, r.text
    assert up.calls == 1


# ------------------------------------------------------------------ replay

LOGPROBS_ANSWER = {
    "id": "chatcmpl-lp", "object": "chat.completion", "created": 1735689600,
    "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
    "choices": [{"index": 0,
                 "message": {"role": "assistant", "content": "Yes, it is.", "refusal": None},
                 "logprobs": {"content": [
                     {"token": t, "logprob": -0.25 * i, "bytes": list(t.encode()),
                      "top_logprobs": []} for i, t in enumerate(["Yes", ",", " it", " is", "."])],
                     "refusal": None},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
}

NODE_SDK = ROOT / "tests" / "npm" / "node_modules" / "openai"
NODE_FINAL = """
import OpenAI from 'openai';
const openai = new OpenAI({ baseURL: process.env.GW + '/v1', apiKey: 'sk-test' });
const s = openai.chat.completions.stream(JSON.parse(process.env.BODY));
console.log(JSON.stringify(await s.finalChatCompletion()));
"""
SDK_AUTH = {"Authorization": "Bearer sk-test"}  # the SDK's: the same per-key cache


def sdk_final_completion(g, body):
    """What the official Node SDK's stream helper (chat.completions.stream(),
    finalChatCompletion()) makes of the stream g answers body with, or None
    where tests/npm has no SDK installed (`make client-test` installs it)."""
    if not (NODE_SDK.is_dir() and shutil.which("node")):
        return None
    script = NODE_SDK.parent.parent / f".review-final-{os.getpid()}.mjs"
    script.write_text(NODE_FINAL)
    try:
        r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, GW=g.url, BODY=json.dumps(dict(body, stream=True))))
    finally:
        script.unlink()
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_replayed_logprobs_are_counted_once_by_the_sdk_stream_helper(gateway_factory, scripted):
    """A stored answer with logprobs, replayed as a stream. The replay put the
    whole logprobs object on each choice's first chunk; the official Node
    SDK's stream helper keeps the first chunk's object as its own and then
    appends that chunk's tokens to it, so finalChatCompletion() listed every
    token twice. OpenAI's own first chunk carries no tokens."""
    up = scripted(200, "application/json", [(json.dumps(LOGPROBS_ANSWER).encode(), 0)])
    g = gateway_factory(up.url)
    body = chat_body("logprobs", logprobs=True)
    r = g.chat(body, headers=SDK_AUTH)
    assert r.json()["choices"][0]["logprobs"] == LOGPROBS_ANSWER["choices"][0]["logprobs"]
    s = stream(g, CHAT, dict(body, stream=True), headers=SDK_AUTH)
    assert xcache(s) == "HIT" and s.end == "complete"
    chunks = [json.loads(d) for d in s.data[:-1]]
    assert chunks[0]["choices"][0]["logprobs"] is None, chunks[0]
    carried = [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0]["logprobs"]]
    assert carried == [LOGPROBS_ANSWER["choices"][0]["logprobs"]]
    final = sdk_final_completion(g, body)
    if final is not None:
        assert final["choices"][0]["logprobs"]["content"] == \
            LOGPROBS_ANSWER["choices"][0]["logprobs"]["content"]
        assert final["choices"][0]["message"]["content"] == "Yes, it is."
    assert up.calls == 1


REASONING_ANSWER = {
    "id": "0b9c6e7a-55", "object": "chat.completion", "created": 1735689650,
    "model": "deepseek-reasoner",
    "choices": [{"index": 0,
                 "message": {"role": "assistant",
                             "content": "Two plus two is four, as anyone can count.",
                             "reasoning_content": "The user asks for 2+2, which is a small sum."},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
}


def test_replayed_reasoning_content_survives_the_sdk_stream_helper(gateway_factory, scripted):
    """The replay cut reasoning_content into pieces like content. The official
    Node SDK's stream helper appends content and refusal, but takes any other
    delta field as the whole value: finalChatCompletion() gave the last piece
    of the reasoning ("small sum.") instead of all of it."""
    up = scripted(200, "application/json", [(json.dumps(REASONING_ANSWER).encode(), 0)])
    g = gateway_factory(up.url)
    body = chat_body("reasoning", model="deepseek-reasoner")
    want = REASONING_ANSWER["choices"][0]["message"]
    assert g.chat(body, headers=SDK_AUTH).json()["choices"][0]["message"] == want
    s = stream(g, CHAT, dict(body, stream=True), headers=SDK_AUTH)
    assert xcache(s) == "HIT" and s.end == "complete"
    deltas = [json.loads(d)["choices"][0]["delta"] for d in s.data[:-1]]
    reasoning = [d["reasoning_content"] for d in deltas if d.get("reasoning_content")]
    assert reasoning == [want["reasoning_content"]], reasoning
    assert len([d for d in deltas if d.get("content")]) > 1  # content still typed out
    assert "".join(d.get("content") or "" for d in deltas) == want["content"]
    final = sdk_final_completion(g, body)
    if final is not None:
        assert final["choices"][0]["message"]["reasoning_content"] == want["reasoning_content"]
        assert final["choices"][0]["message"]["content"] == want["content"]
    assert up.calls == 1
