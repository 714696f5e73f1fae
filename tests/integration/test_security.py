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
import re
import threading
import time

import pytest

from conftest import assert_error_shape, chat_body, free_port, read_stream, wait_until

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


# ------------------------------------------------------------ 2xx answers that are no answer

def completion_body(prompt, **extra):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 16}
    body.update(extra)
    return body


def embedding_body(text, **extra):
    body = {"model": "text-embedding-3-small", "input": text}
    body.update(extra)
    return body


ERROR_200 = json.dumps({"error": {"message": "quota exceeded", "type": "insufficient_quota",
                                  "code": "insufficient_quota"}})

NON_ANSWERS = {
    # name: (path, body maker, mock controls, status the client gets)
    "chat-200-error": (CHAT, chat_body, {"body": ERROR_200}, 200),
    "chat-200-no-choices": (CHAT, chat_body, {"body": '{"object":"chat.completion","id":"x"}'},
                            200),
    "chat-200-choices-not-array": (CHAT, chat_body, {"body": '{"choices":{"0":{}}}'}, 200),
    "chat-200-choices-and-error": (CHAT, chat_body,
                                   {"body": '{"choices":[],"error":{"message":"x"}}'}, 200),
    "completions-200-error": ("/v1/completions", completion_body, {"body": ERROR_200}, 200),
    "completions-200-no-choices": ("/v1/completions", completion_body,
                                   {"body": '{"object":"text_completion"}'}, 200),
    "embeddings-200-error": ("/v1/embeddings", embedding_body, {"body": ERROR_200}, 200),
    "embeddings-200-no-data": ("/v1/embeddings", embedding_body,
                               {"body": '{"object":"list","model":"m"}'}, 200),
    "embeddings-200-choices": ("/v1/embeddings", embedding_body,
                               {"body": '{"choices":[{"index":0}]}'}, 200),
    "chat-201": (CHAT, chat_body, {"status": 201}, 201),
    "chat-204": (CHAT, chat_body, {"status": 204}, 204),
}


@pytest.mark.parametrize("name", list(NON_ANSWERS))
def test_a_2xx_that_is_no_answer_is_passed_on_but_never_stored(shared_gateway, mock, name):
    """200 {"error": ...}, an object without the endpoint's fields, a 201 or a
    204 used to be stored and replayed as HITs (or, for the 204, answered
    502): the client gets what the upstream sent, the cache keeps nothing."""
    path, make, ctl, status = NON_ANSWERS[name]
    g = shared_gateway
    body = make(f"no answer {name}", mock=ctl)
    direct = g.http.post(mock.url + path[len("/v1"):], json=body, timeout=10)
    calls = mock.calls()
    for attempt in range(2):
        r = g.post(path, body)
        assert r.status_code == status, (attempt, r.status_code, r.text[:300])
        assert xcache(r) == "MISS", (attempt, r.headers)
        assert r.content == direct.content, (attempt, r.content[:300], direct.content[:300])
    assert mock.calls() == calls + 2, "the second request was answered from the cache"
    assert not_stored(g, body, path)
    assert g.stats()["not_stored_not_answer"] >= 2


def test_a_streaming_waiter_gets_a_plain_non_answer_as_it_came(shared_gateway, mock):
    """A stream asked for while the upstream answers 200 {"error"} to the
    plain call it joined is not given a replay of the error as a completion."""
    g = shared_gateway
    body = chat_body("stream joins a non-answer", mock={"body": ERROR_200, "latency_ms": 400})
    got = {}

    def plain():
        got["plain"] = g.post(CHAT, body)

    t = threading.Thread(target=plain)
    t.start()
    time.sleep(0.15)
    status, raw = read_stream(g.url + CHAT, dict(body, stream=True))
    t.join(10)
    assert got["plain"].status_code == 200 and got["plain"].json() == json.loads(ERROR_200)
    assert status == 200
    assert json.loads(raw) == json.loads(ERROR_200), raw[:300]


def test_models_is_not_counted_as_a_non_answer(shared_gateway, mock):
    r = shared_gateway.get("/v1/models")
    assert r.status_code == 200 and r.json()["object"] == "list"
    assert r.headers["Content-Type"].startswith("application/json")
    assert shared_gateway.stats()["not_stored_not_answer"] == 0


def test_a_real_answer_is_still_stored_on_every_route(shared_gateway, mock):
    for path, make in ((CHAT, chat_body), ("/v1/completions", completion_body),
                       ("/v1/embeddings", embedding_body)):
        body = make(f"a real answer on {path}")
        assert xcache(shared_gateway.post(path, body)) == "MISS"
        r = shared_gateway.post(path, body)
        assert r.status_code == 200 and xcache(r) == "HIT", (path, r.headers)


# ------------------------------------------------------------ less disclosure

def test_upstream_credentials_are_never_printed(gateway_factory, mock):
    """The start-up line printed the upstream URL with user:password@."""
    port = mock.url.split(":")[2].split("/")[0]
    url = f"http://llm-user:s3cr3t-pw@127.0.0.1:{port}/v1"
    g = gateway_factory(url)
    assert g.chat(chat_body("through a URL with credentials")).status_code == 200
    err = g.stderr()
    assert "listening on" in err, err
    assert "s3cr3t-pw" not in err and "llm-user" not in err, err
    assert f"http://***@127.0.0.1:{port}/v1" in err, err
    assert "s3cr3t-pw" not in json.dumps(g.access_lines())


def test_a_bad_upstream_url_is_refused_without_its_credentials(gateway_factory):
    g = gateway_factory("ftp://llm-user:s3cr3t-pw@example.invalid/v1", wait=False)
    g.must_survive = False
    deadline = time.monotonic() + 10
    while g.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not g.alive()
    err = g.stderr()
    assert "--upstream" in err and "s3cr3t-pw" not in err and "llm-user" not in err, err


def test_502_tells_the_client_a_request_id_not_libcurls_text(gateway_factory, mock_factory):
    """502 messages quoted libcurl ("Failed to connect to 127.0.0.1 port N"):
    host names and ports of the operator's network. The client gets a
    generic message and a request id; the detail is in the gateway's log
    under that id."""
    port = free_port()                     # nothing listens there
    g = gateway_factory(f"http://llm-user:s3cr3t-pw@127.0.0.1:{port}/v1")
    r = g.chat(chat_body("is anyone there?"))
    err = assert_error_shape(r, 502)
    msg = err["message"]
    assert "127.0.0.1" not in msg and str(port) not in msg and "s3cr3t" not in msg, msg
    assert "connect" in msg, msg
    m = re.search(r"request (\d+-\d+)", msg)
    assert m, msg
    rid = m.group(1)
    lines = [l for l in g.stderr().splitlines() if f"request {rid}" in l]
    assert lines, g.stderr()
    assert "127.0.0.1" in lines[0] and str(port) in lines[0], lines
    assert "s3cr3t-pw" not in g.stderr()
    # The id is the access log's: thread and id of the request that made the call.
    thread, n = (int(x) for x in rid.split("-"))
    wait_until(lambda: any(l["thread"] == thread and l["id"] == n and l["status"] == 502
                           for l in g.access_lines()),
               what=f"the access log line of request {rid}")  # written once the answer is out


# ------------------------------------------------------------ Content-Type on JSON routes

JSON_ROUTES = [(CHAT, chat_body), ("/v1/completions", completion_body),
               ("/v1/embeddings", embedding_body)]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "text/json",
                                   "application/jsonx", "application/json-patch+json"])
def test_a_json_route_refuses_other_content_types_with_415(gateway, mock, ctype):
    """A POST with Content-Type: text/plain (or a form type) needs no CORS
    preflight, so any web page could make a browser send one: it used to be
    served, and make a paid call. The gateway now wants application/json (or
    no content type) on the routes that take JSON."""
    calls = mock.calls()
    for path, make in JSON_ROUTES:
        r = gateway.post(path, data=json.dumps(make(f"sent as {ctype}")).encode(),
                         headers={"Content-Type": ctype})
        err = assert_error_shape(r, 415)
        assert err["code"] == "unsupported_media_type", err
        assert "application/json" in err["message"], err
    assert mock.calls() == calls, "a refused request reached the model"


@pytest.mark.parametrize("ctype", [None, "application/json", "application/json; charset=utf-8",
                                   "Application/JSON", "application/json ;charset=UTF-8"])
def test_a_json_route_takes_json_or_no_content_type(gateway, mock, ctype):
    for path, make in JSON_ROUTES:
        h = {} if ctype is None else {"Content-Type": ctype}
        r = gateway.post(path, data=json.dumps(make(f"sent as {ctype}")).encode(), headers=h)
        assert r.status_code == 200, (path, ctype, r.text[:300])


def test_admin_purge_refuses_a_form_post(gateway_factory, mock):
    g = gateway_factory(mock, env={"LLMC_ADMIN_TOKEN": "t0ken"})
    auth = {"Authorization": "Bearer t0ken"}
    r = g.post("/admin/purge", data=b'{"all": true}',
               headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert_error_shape(r, 415)
    r = g.post("/admin/purge", {"all": True}, headers=auth)
    assert r.status_code == 200, r.text
