"""Issue 14: security and robustness, round 2.

What a client, an upstream or the disk can do to the gateway, asserted from
the outside: answers that must be served (and cached, or not), what must
never be stored, and what the gateway must not tell a client.

Decisions a newcomer would otherwise get wrong:
- The mock echoes the user's text into its answer, so a prompt containing
  "\\u0000" is how a test gets an upstream answer with a NUL character in it
  (the mock parses requests with JSON_ALLOW_NUL for that reason).
- "Not stored" is checked with `Cache-Control: only-if-cached`, which never
  goes upstream: 504 means the cache has nothing usable.
"""

import json

import pytest

from conftest import assert_error_shape, chat_body, read_stream

CHAT = "/v1/chat/completions"


def xcache(r):
    return r.headers.get("X-Cache")


def not_stored(g, body, path=CHAT):
    return g.post(path, body, headers={"Cache-Control": "only-if-cached"}).status_code == 504


# ------------------------------------------------------------ NUL characters in answers

def test_a_plain_answer_with_a_nul_character_is_served_and_cached(gateway, mock):
    """An upstream 200 whose JSON holds \\u0000 used to be answered 502 (the
    validity check parsed without JSON_ALLOW_NUL) while its streaming form
    worked."""
    body = chat_body("before\u0000after")
    r = gateway.chat(body)
    assert r.status_code == 200, r.text[:300]
    assert xcache(r) == "MISS"
    assert "before\x00after" in r.json()["choices"][0]["message"]["content"]
    r2 = gateway.chat(body)
    assert r2.status_code == 200 and xcache(r2) == "HIT", (r2.status_code, r2.headers)
    assert r2.content == r.content


def test_a_streamed_answer_with_a_nul_character_is_served_and_cached(gateway, mock):
    body = chat_body("streamed\u0000nul", stream=True)
    status, got = read_stream(gateway.url + CHAT, body)
    assert status == 200
    assert got.rstrip().endswith(b"data: [DONE]"), got[-200:]
    assert b"\\u0000" in got
    # The assembled answer was stored: the plain form is a hit and keeps the NUL.
    plain = dict(body)
    del plain["stream"]
    r = gateway.chat(plain, headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 200 and xcache(r) == "HIT", (r.status_code, r.text[:300])
    assert "streamed\x00nul" in r.json()["choices"][0]["message"]["content"]
    # And a streaming hit replays it.
    status, again = read_stream(gateway.url + CHAT, body)
    assert status == 200 and b"\\u0000" in again and b"[DONE]" in again


def test_ask_answer_keeps_a_nul_character(shared_gateway, mock):
    """/ask's answer text is read out of the completion: with the NUL it
    used to be null."""
    for source in ("llm", "cache"):
        r = shared_gateway.get("/ask?q=zero%00byte")
        assert r.status_code == 200, r.text[:300]
        got = r.json()
        assert got["source"] == source, got
        assert isinstance(got["answer"], str) and "zero\x00byte" in got["answer"], got
