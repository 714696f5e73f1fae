"""Issue 2: the core gateway, seen from a client, against the real mock upstream.

Each test starts its own mock and gateway. The mock's call counters
(/mock/stats) prove whether an answer came from the cache; the gateway's
headers (X-Cache, Cache-Status, Age, X-Cache-Key, Cache-Control, ETag) and
bodies are what a client sees.
"""

import asyncio
import json
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (ROOT, RawConn, assert_error_shape, async_open_many, async_read_response,
                      cache_control, cache_status, chat_body, completion_body, embedding_body,
                      free_port, http_request, llmc_bin, next_second, nofile_limit, session,
                      wait_until)

CHAT = "/v1/chat/completions"
HEX64 = re.compile(r"^[0-9a-f]{64}$")

ROUTES = [
    ("/v1/chat/completions", chat_body, "chat"),
    ("/v1/completions", completion_body, "completions"),
    ("/v1/embeddings", embedding_body, "embeddings"),
]


def xcache(r):
    return r.headers.get("X-Cache")


# ------------------------------------------------------------ miss then hit

@pytest.mark.parametrize("path,make_body,kind", ROUTES, ids=[r[2] for r in ROUTES])
def test_miss_then_hit_on_each_cached_route(gateway, mock, path, make_body, kind):
    body = make_body()
    r1 = gateway.post(path, body)
    assert r1.status_code == 200, r1.text
    assert r1.headers["Content-Type"].startswith("application/json")
    assert xcache(r1) == "MISS"
    cs1 = cache_status(r1.headers)
    assert cs1.get("fwd") == "uri-miss" and cs1.get("stored") is True, r1.headers["Cache-Status"]
    key = r1.headers["X-Cache-Key"]
    assert HEX64.match(key), key
    assert mock.stats()[kind] == 1

    r2 = gateway.post(path, body)
    assert r2.status_code == 200, r2.text
    assert xcache(r2) == "HIT"
    cs2 = cache_status(r2.headers)
    assert cs2.get("hit") is True, r2.headers["Cache-Status"]
    assert 0 < int(cs2["ttl"]) <= 300
    assert int(r2.headers["Age"]) >= 0
    assert r2.headers["X-Cache-Key"] == key
    assert r2.content == r1.content, "a hit must return the stored upstream body byte for byte"
    assert r2.headers["Content-Type"] == r1.headers["Content-Type"]
    cc = cache_control(r2.headers)
    assert 0 < cc["max-age"] <= 300, r2.headers.get("Cache-Control")
    etag = r2.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), f"strong ETag expected, got {etag}"
    assert r1.headers.get("ETag") == etag

    st = mock.stats()
    assert st[kind] == 1 and st["calls"] == 1, st


def test_answers_look_like_openai(gateway):
    chat = gateway.chat().json()
    assert chat["choices"][0]["message"]["content"]
    emb = gateway.post("/v1/embeddings", embedding_body()).json()
    assert isinstance(emb["data"][0]["embedding"], list) and emb["data"][0]["embedding"]
    comp = gateway.post("/v1/completions", completion_body()).json()
    assert comp["choices"][0]["text"]


def test_hit_is_the_stored_body_even_after_the_clock_moves(gateway, mock):
    """The mock stamps `created` with the current second: a hit one second later
    must still carry the first answer's bytes, while the upstream now says otherwise."""
    body = chat_body("What time is it?")
    r1 = gateway.chat(body)
    assert xcache(r1) == "MISS"
    next_second()
    r2 = gateway.chat(body)
    assert xcache(r2) == "HIT"
    assert r2.content == r1.content
    direct = session().post(mock.url + "/chat/completions", json=body, timeout=10)
    assert direct.json()["created"] > r1.json()["created"], "precondition: mock stamps the time"
    assert mock.stats()["chat"] == 2  # the gateway's one call, plus ours


def test_the_key_is_the_same_across_threads_and_connections(gateway, mock):
    body = chat_body("many connections")
    first = gateway.chat(body)
    keys, bodies = set(), set()
    for _ in range(8):  # fresh connections land on either of the two threads
        r = session().post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
        assert xcache(r) == "HIT"
        keys.add(r.headers["X-Cache-Key"])
        bodies.add(r.content)
    assert keys == {first.headers["X-Cache-Key"]} and bodies == {first.content}
    assert mock.stats()["chat"] == 1


def test_access_log_has_one_json_line_per_request(gateway, mock):
    body = chat_body("log me")
    r1 = gateway.chat(body)
    r2 = gateway.chat(body)
    r3 = gateway.get("/no/such/route")
    assert r3.status_code == 404
    def lines_now():  # the start-up /healthz polls are logged too: leave them out
        return [l for l in gateway.access_lines() if "/healthz" not in json.dumps(l)]
    lines = wait_until(lambda: len(lines_now()) >= 3 and lines_now(), what="three access-log lines")
    assert len(lines) == 3, lines

    def values(d):
        out = []
        for v in d.values():
            out.extend(values(v) if isinstance(v, dict) else [v])
        return out
    key = r1.headers["X-Cache-Key"]
    for line, resp, cache in ((lines[0], r1, "MISS"), (lines[1], r2, "HIT")):
        vals = values(line)
        strs = [str(v) for v in vals]
        assert "POST" in strs and "/v1/chat/completions" in strs, line
        assert 200 in vals or "200" in strs, line
        assert any(s.upper() == cache for s in strs), line
        assert any(len(s) >= 8 and key.startswith(s.lower()) for s in strs), \
            f"no key prefix of {key} in {line}"
        assert any(("dur" in k or k.endswith("ms")) and isinstance(v, (int, float))
                   for k, v in line.items()), f"no duration in {line}"
    assert 404 in values(lines[2]) or "404" in [str(v) for v in values(lines[2])], lines[2]


def test_access_log_lines_written_just_before_sigterm_are_there_after_exit(gateway_factory, mock):
    # A flush interval far longer than the test: only the flush at exit
    # can put these lines in the file.
    g = gateway_factory(mock, threads=2, args=["--access-log-flush", "60"])
    g.must_survive = False
    body = chat_body("logged before the signal")
    assert g.chat(body).status_code == 200
    n = 60
    for _ in range(n):  # fresh connections: both threads take some
        r = session().post(g.url + "/v1/chat/completions", json=body, timeout=10)
        assert xcache(r) == "HIT"
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(15) == 0
    chats = [l for l in g.access_lines() if l["path"] == "/v1/chat/completions"]
    assert len(chats) == n + 1
    assert [l["cache"] for l in chats].count("HIT") == n
    assert {l["thread"] for l in chats} == {0, 1}


def test_access_log_lines_stay_whole_when_threads_flush_together(gateway_factory, mock):
    # A buffer of a few lines: both threads write out runs all the time.
    g = gateway_factory(mock, threads=2, args=["--access-log-buffer", "1K"])
    body = chat_body("many small flushes")
    assert g.chat(body).status_code == 200

    def hits(_):
        s = session()
        for _ in range(40):
            assert xcache(s.post(g.url + "/v1/chat/completions", json=body, timeout=10)) == "HIT"
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(hits, range(8)))

    def chats():  # access_lines parses every line: a cut or mixed one fails here
        return [l for l in g.access_lines() if l["path"] == "/v1/chat/completions"]
    wait_until(lambda: len(chats()) == 321, what="every line written")
    text = g.access_log.read_text()
    assert text.endswith("\n") and all(l.startswith("{") for l in text.splitlines())


# ------------------------------------------------------------ TTL

def test_ttl_expiry(gateway_factory, mock):
    g = gateway_factory(mock, args=["--ttl", "1"])
    body = chat_body("short lived")
    t0 = time.monotonic()
    assert xcache(g.chat(body)) == "MISS"
    r = g.chat(body)
    assert xcache(r) == "HIT" and int(cache_status(r.headers)["ttl"]) <= 1
    assert cache_control(r.headers)["max-age"] <= 1

    # Poll with hits until the entry expires; an expired entry is never served.
    def expired():
        rr = g.chat(body)
        return rr if xcache(rr) != "HIT" else None
    r = wait_until(expired, timeout=4, interval=0.05, what="the entry to expire")
    elapsed = time.monotonic() - t0
    assert xcache(r) == "MISS"
    assert 0.9 <= elapsed <= 3.5, elapsed
    assert mock.stats()["chat"] == 2


def test_per_request_ttl_header(gateway, mock):
    short, long_ = chat_body("short ttl"), chat_body("default ttl")
    t0 = time.monotonic()
    assert xcache(gateway.chat(short, headers={"X-Cache-TTL": "1"})) == "MISS"
    assert xcache(gateway.chat(long_)) == "MISS"
    r = gateway.chat(short)
    assert xcache(r) == "HIT"
    assert cache_control(r.headers)["max-age"] <= 1
    assert int(cache_status(r.headers)["ttl"]) <= 1

    r = wait_until(lambda: (rr := gateway.chat(short)) and xcache(rr) != "HIT" and rr,
                   timeout=4, interval=0.05, what="the 1 s entry to expire")
    assert xcache(r) == "MISS" and time.monotonic() - t0 >= 0.9
    r = gateway.chat(long_)
    assert xcache(r) == "HIT", "an entry with the default TTL must still be fresh"
    assert cache_control(r.headers)["max-age"] > 250
    assert mock.stats()["chat"] == 3


# ------------------------------------------------------------ scope and namespace

def _auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_scope_per_credential_without_upstream_key(gateway, mock):
    body = chat_body("whose answer?")
    a1 = gateway.chat(body, headers=_auth("sk-client-a"))
    a2 = gateway.chat(body, headers=_auth("sk-client-a"))
    b1 = gateway.chat(body, headers=_auth("sk-client-b"))
    assert [xcache(a1), xcache(a2), xcache(b1)] == ["MISS", "HIT", "MISS"]
    assert a1.headers["X-Cache-Key"] != b1.headers["X-Cache-Key"]
    assert cache_control(a2.headers).get("private") is True, a2.headers.get("Cache-Control")
    assert "public" not in cache_control(a2.headers)
    b2 = gateway.chat(body, headers=_auth("sk-client-b"))
    assert xcache(b2) == "HIT" and b2.content == b1.content
    assert mock.stats()["chat"] == 2


def test_scope_shared_with_upstream_key(shared_gateway, mock):
    g = shared_gateway
    body = chat_body("one answer for all")
    a = g.chat(body, headers=_auth("sk-client-a"))
    b = g.chat(body, headers=_auth("sk-client-b"))
    c = g.chat(body)
    assert [xcache(a), xcache(b), xcache(c)] == ["MISS", "HIT", "HIT"]
    assert b.content == a.content
    assert cache_control(b.headers).get("public") is True, b.headers.get("Cache-Control")
    assert mock.stats()["chat"] == 1


def test_openai_api_key_also_makes_the_cache_shared(gateway_factory, mock):
    g = gateway_factory(mock, env={"OPENAI_API_KEY": "sk-gateway-test"})
    body = chat_body("shared via OPENAI_API_KEY")
    assert xcache(g.chat(body, headers=_auth("a"))) == "MISS"
    assert xcache(g.chat(body, headers=_auth("b"))) == "HIT"


@pytest.mark.parametrize("scope,env,expect_b", [
    ("per-key", {"LLMC_UPSTREAM_KEY": "sk-gateway-test"}, "MISS"),
    ("shared", None, "HIT"),
])
def test_cache_scope_flag_overrides(gateway_factory, mock, scope, env, expect_b):
    g = gateway_factory(mock, args=["--cache-scope", scope], env=env)
    body = chat_body("scope override")
    assert xcache(g.chat(body, headers=_auth("sk-a"))) == "MISS"
    assert xcache(g.chat(body, headers=_auth("sk-b"))) == expect_b
    assert xcache(g.chat(body, headers=_auth("sk-a"))) == "HIT"


def test_namespace_isolation(gateway, mock):
    body = chat_body("namespaced")
    ns = lambda n: {"X-Cache-Namespace": n}  # noqa: E731
    plain = gateway.chat(body)
    a1 = gateway.chat(body, headers=ns("team-a"))
    a2 = gateway.chat(body, headers=ns("team-a"))
    b1 = gateway.chat(body, headers=ns("team-b"))
    plain2 = gateway.chat(body)
    assert [xcache(r) for r in (plain, a1, a2, b1, plain2)] == ["MISS", "MISS", "HIT", "MISS", "HIT"]
    keys = {r.headers["X-Cache-Key"] for r in (plain, a1, b1)}
    assert len(keys) == 3
    assert mock.stats()["chat"] == 3


# ------------------------------------------------------------ /ask, /v1/models, 404, 405

def test_ask_source_switches_from_llm_to_cache(shared_gateway, mock):
    g = shared_gateway
    r1 = g.get("/ask", params={"q": "What is the capital of France?"})
    assert r1.status_code == 200, r1.text
    assert r1.headers["Content-Type"].startswith("application/json")
    j1 = r1.json()
    assert j1["source"] == "llm" and isinstance(j1["answer"], str) and j1["answer"]
    cc1 = cache_control(r1.headers)
    assert cc1.get("public") is True and 0 < cc1["max-age"] <= 300, r1.headers["Cache-Control"]

    r2 = g.get("/ask", params={"q": "What is the capital of France?"})
    j2 = r2.json()
    assert j2 == {"answer": j1["answer"], "source": "cache"} or \
        (j2["source"] == "cache" and j2["answer"] == j1["answer"])
    cc2 = cache_control(r2.headers)
    assert cc2.get("public") is True and 0 < cc2["max-age"] <= cc1["max-age"]
    assert mock.stats()["chat"] == 1

    r3 = g.get("/ask", params={"q": "What is the capital of France?", "model": "other-model"})
    assert r3.json()["source"] == "llm", "another model is another question"
    r4 = g.get("/ask", params={"q": "And of Italy?"})
    assert r4.json()["source"] == "llm"
    assert mock.stats()["chat"] == 3


def test_ask_with_short_ttl_reports_real_freshness(gateway_factory, mock):
    g = gateway_factory(mock, args=["--ttl", "2"], env={"LLMC_UPSTREAM_KEY": "k"})
    r = g.get("/ask", params={"q": "fresh?"})
    assert cache_control(r.headers)["max-age"] <= 2


def test_models_is_forwarded_not_cached(gateway, mock):
    r1 = gateway.get("/v1/models")
    r2 = gateway.get("/v1/models")
    for r in (r1, r2):
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["data"], list)
        assert xcache(r) != "HIT"
    assert mock.stats()["models"] == 2


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("GET", "/v1"), ("GET", "/"), ("POST", "/v1chat/completions"),
])
def test_unknown_routes_are_404_with_openai_error(gateway, mock, method, path):
    """Paths outside /v1/ that the gateway does not serve (any path under
    /v1/ is passed through: test_api.py)."""
    r = gateway.http.request(method, gateway.url + path, json={} if method == "POST" else None,
                             timeout=10)
    assert_error_shape(r, 404)
    assert mock.stats()["calls"] == 0


def test_another_method_on_a_cached_route_is_passed_through(gateway, mock):
    """GET /v1/chat/completions is OpenAI's list of stored completions: not
    cached, but not the gateway's to refuse either. The mock has no such
    route and says so (405), which reaches the client unchanged."""
    r = gateway.get("/v1/chat/completions")
    assert r.status_code == 405
    assert_error_shape(r)
    assert r.headers.get("X-Cache") == "BYPASS"
    assert gateway.stats()["forwarded"] == 1


def test_405_names_the_allowed_methods_in_allow(gateway):
    r = gateway.http.delete(gateway.url + "/healthz", timeout=5)
    assert r.status_code == 405
    assert r.headers.get("Allow") == "GET, HEAD", dict(r.headers)
    r = gateway.post("/ask?q=hi", {})
    assert r.status_code == 405
    assert r.headers.get("Allow") == "GET, HEAD", dict(r.headers)


def test_builtin_mock_upstream(gateway_factory):
    g = gateway_factory("mock", args=["--mock-latency", "0.05"])
    assert "mock" in g.stderr().lower(), "the gateway must say it uses the built-in mock"
    body = chat_body("built-in mock")
    r1 = g.chat(body)
    r2 = g.chat(body)
    assert r1.status_code == 200 and r1.json()["choices"][0]["message"]["content"]
    assert [xcache(r1), xcache(r2)] == ["MISS", "HIT"] and r2.content == r1.content
    assert g.get("/v1/models").status_code == 200
    assert g.stats()["upstream_calls"] == 2


def test_healthz_and_stats(gateway):
    assert gateway.get("/healthz").status_code == 200
    st = gateway.stats()
    for k in ("entries", "bytes", "max_bytes", "hits", "misses", "upstream_calls"):
        assert isinstance(st[k], int), (k, st)


def test_stats_shows_the_entry_slab(gateway, mock):
    """/stats entry_slab: a cached answer is a block on a slab page, and the
    pages hold at least the blocks handed out. Under ASan and Valgrind entries
    come from malloc (so that a use after free is caught) and the slab stays empty."""
    r = gateway.chat(chat_body("slab accounting"))
    assert r.status_code == 200 and xcache(r) == "MISS"
    st = gateway.stats()
    slab = st["entry_slab"]
    if gateway.sanitized() and slab["pages"] == 0:  # ASan or Valgrind
        assert slab["blocks"] == slab["big_blocks"] == slab["page_bytes"] == 0, slab
        return
    assert slab["blocks"] >= 1 and slab["pages"] >= 1, slab
    assert slab["page_bytes"] >= slab["used_bytes"] >= len(r.content), slab
    assert slab["used_bytes"] + slab["big_bytes"] <= st["bytes"], (slab, st["bytes"])
    assert slab["released_pages"] == 0, slab  # nothing was freed yet


def test_invalid_json_body_is_a_client_error(gateway, mock):
    r = gateway.post("/v1/chat/completions", data=b'{"model": "x", "messages": [',
                     headers={"Content-Type": "application/json"})
    assert_error_shape(r, 400)
    assert mock.stats()["calls"] == 0


# ------------------------------------------------------------ configuration

CONFIG_NAMES = re.findall(r'X\(\w+,\s*"([a-z0-9-]+)",\s*(?:STR|INT|BOOL|SIZE|SECS|ENUM|WORD_OR_STR),',
                          (ROOT / "src" / "config.h").read_text())


def _run_bin(args, env=None, timeout=10):
    from conftest import _clean_env
    try:
        return subprocess.run([llmc_bin(), *args], capture_output=True, text=True,
                              env=_clean_env(env), timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"llmcached {' '.join(args)} did not exit within {timeout}s "
                    "(a bad value must stop start-up)", pytrace=False)


def test_help_lists_every_option():
    assert len(CONFIG_NAMES) >= 10
    p = _run_bin(["--help"])
    assert p.returncode == 0, p.stderr
    text = p.stdout + p.stderr
    missing = [n for n in CONFIG_NAMES if f"--{n}" not in text]
    assert not missing, f"--help does not mention {missing}"


@pytest.mark.parametrize("opt,value", [
    ("threads", "abc"), ("threads", "9999"), ("ttl", "-5"), ("ttl", "soon"),
    ("max-memory", "12Q"), ("cache-scope", "bogus"), ("upstream-timeout", "never"),
    ("max-header-bytes", "1"), ("max-body-bytes", "lots"),
])
def test_bad_flag_value_stops_startup_naming_the_option(opt, value):
    p = _run_bin(["--listen", f"127.0.0.1:{free_port()}", "--upstream", "http://127.0.0.1:9/v1",
                  f"--{opt}", value])
    assert p.returncode != 0
    assert opt in p.stderr, f"stderr does not name {opt}: {p.stderr!r}"


def test_unknown_flag_stops_startup():
    p = _run_bin(["--listen", f"127.0.0.1:{free_port()}", "--no-such-option", "1"])
    assert p.returncode != 0 and "no-such-option" in p.stderr, p.stderr


def test_bad_env_value_stops_startup_naming_the_option():
    p = _run_bin(["--listen", f"127.0.0.1:{free_port()}", "--upstream", "http://127.0.0.1:9/v1"],
                 env={"LLMC_CACHE_SCOPE": "everyone"})
    assert p.returncode != 0
    assert "cache-scope" in p.stderr or "CACHE_SCOPE" in p.stderr, p.stderr


def test_bad_config_file_value_stops_startup_naming_the_option(tmp_path):
    cfg = tmp_path / "bad.conf"
    cfg.write_text(f"listen = 127.0.0.1:{free_port()}\nttl = forever\n")
    p = _run_bin(["--config", str(cfg)])
    assert p.returncode != 0 and "ttl" in p.stderr, p.stderr


def test_options_from_environment(gateway_factory, mock):
    port = free_port()
    g = gateway_factory(mock, listen=False, port=port,
                        env={"LLMC_LISTEN": f"127.0.0.1:{port}", "LLMC_CACHE_SCOPE": "shared"})
    body = chat_body("env config")
    assert xcache(g.chat(body, headers=_auth("a"))) == "MISS"
    assert xcache(g.chat(body, headers=_auth("b"))) == "HIT", "LLMC_CACHE_SCOPE=shared ignored"


def test_options_from_config_file_and_precedence(gateway_factory, mock, tmp_path):
    port = free_port()
    cfg = tmp_path / "llmcached.conf"
    cfg.write_text("# llmcached test config\n"
                   f"listen = 127.0.0.1:{port}\n"
                   f"upstream = {mock.url}\n"
                   "\n"
                   "cache-scope = shared\n"
                   "ttl = 1\n")
    g = gateway_factory(None, listen=False, port=port, args=["--config", cfg])
    body = chat_body("file config")
    assert xcache(g.chat(body, headers=_auth("a"))) == "MISS"
    r = g.chat(body, headers=_auth("b"))
    assert xcache(r) == "HIT", "cache-scope = shared from the file ignored"
    assert cache_control(r.headers)["max-age"] <= 1, "ttl = 1 from the file ignored"

    # A flag beats the file.
    port2 = free_port()
    g2 = gateway_factory(None, listen=False, port=port2,
                         args=["--config", cfg, "--listen", f"127.0.0.1:{port2}",
                               "--cache-scope", "per-key"])
    assert xcache(g2.chat(body, headers=_auth("a"))) == "MISS"
    assert xcache(g2.chat(body, headers=_auth("b"))) == "MISS"


def test_flag_beats_environment(gateway_factory, mock):
    env_port, flag_port = free_port(), free_port()
    g = gateway_factory(mock, listen=False, port=flag_port,
                        args=["--listen", f"127.0.0.1:{flag_port}"],
                        env={"LLMC_LISTEN": f"127.0.0.1:{env_port}"})
    assert g.get("/healthz").status_code == 200
    with pytest.raises(OSError):
        RawConn(env_port, timeout=1).close()


def test_flag_equals_form(gateway_factory, mock):
    port = free_port()
    g = gateway_factory(mock, listen=False, port=port, args=[f"--listen=127.0.0.1:{port}"])
    assert g.get("/healthz").status_code == 200


# ------------------------------------------------------------ canonical keys over HTTP

BASE = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"canon"}],"temperature":1}'

SAME = {
    "reordered-whitespace": b'{ "temperature" : 1 ,\n\t"messages" : [ { "content" : "canon" , '
                            b'"role" : "user" } ] , "model" : "gpt-4o-mini" }',
    "one-point-zero": BASE.replace(b'"temperature":1', b'"temperature":1.0'),
    "exponent": BASE.replace(b'"temperature":1', b'"temperature":1e0'),
    "trailing-zeros": BASE.replace(b'"temperature":1', b'"temperature":1.000'),
    "unicode-escape": BASE.replace(b'"canon"', b'"\\u0063anon"'),
    "user-ignored": BASE[:-1] + b',"user":"alice"}',
    "metadata-ignored": BASE[:-1] + b',"metadata":{"trace":"t1"}}',
    "store-ignored": BASE[:-1] + b',"store":false}',
    "service-tier-ignored": BASE[:-1] + b',"service_tier":"auto"}',
}
DIFFERENT = {
    "temperature": BASE.replace(b'"temperature":1', b'"temperature":0.5'),
    "model": BASE.replace(b'gpt-4o-mini', b'gpt-4o'),
    "content": BASE.replace(b'"canon"', b'"Canon"'),
    "unknown-field": BASE[:-1] + b',"x_custom":1}',
    "known-default-field": BASE[:-1] + b',"top_p":1}',
    "role": BASE.replace(b'"user"', b'"system"'),
}


def _raw_chat(g, data, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return g.post("/v1/chat/completions", data=data, headers=h)


@pytest.mark.parametrize("name", list(SAME))
def test_equivalent_bodies_share_an_entry(gateway, mock, name):
    json.loads(SAME[name])  # the variant itself is valid JSON
    r1 = _raw_chat(gateway, BASE)
    r2 = _raw_chat(gateway, SAME[name])
    assert xcache(r1) == "MISS" and r2.status_code == 200
    assert xcache(r2) == "HIT", f"{name} should hit the entry of the base body"
    assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
    assert r2.content == r1.content
    assert mock.stats()["chat"] == 1


@pytest.mark.parametrize("name", list(DIFFERENT))
def test_different_bodies_never_share_an_entry(gateway, mock, name):
    r1 = _raw_chat(gateway, BASE)
    r2 = _raw_chat(gateway, DIFFERENT[name])
    assert xcache(r1) == "MISS" and r2.status_code == 200
    assert xcache(r2) == "MISS", f"{name} changes the answer: it must not hit"
    assert r2.headers["X-Cache-Key"] != r1.headers["X-Cache-Key"]
    assert mock.stats()["chat"] == 2


def test_same_body_on_another_route_is_another_entry(gateway, mock):
    body = {"model": "m", "prompt": "p", "input": "p", "messages": [{"role": "user", "content": "p"}]}
    keys = {gateway.post(p, body).headers.get("X-Cache-Key")
            for p in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")}
    assert len(keys) == 3


# ------------------------------------------------------------ concurrency

N_SLOW = 1000


def test_thousand_slow_misses_finish_together_while_hits_stay_fast(mock_factory, gateway_factory):
    if nofile_limit() < 4 * N_SLOW:
        pytest.skip(f"needs ~{4 * N_SLOW} file descriptors, limit is {nofile_limit()}")
    mock = mock_factory(latency_ms=2000)
    g = gateway_factory(mock)
    hot = chat_body("hot question", mock={"latency_ms": 0})
    assert xcache(g.chat(hot)) == "MISS"
    assert xcache(g.chat(hot)) == "HIT"
    hot_req = http_request("POST", "/v1/chat/completions", hot)

    reqs = [http_request("POST", "/v1/chat/completions", chat_body(f"slow question {i}"))
            for i in range(N_SLOW)]
    done = [0]
    hit_times = []
    hit_during = []

    hit_conn = RawConn(g.port, timeout=10)  # opened (and accepted) before the flood

    def measure_hits():
        """Runs in a thread once the whole flood waits on the upstream."""
        wait_until(lambda: mock.stats()["in_flight"] >= N_SLOW, timeout=5,
                   what=f"all {N_SLOW} misses to be in flight at the mock at once")
        for _ in range(5):
            t = time.monotonic()
            hit_conn.send(hot_req)
            st, hdrs, body = hit_conn.read_response()
            hit_times.append(time.monotonic() - t)
            hit_during.append(done[0])
            assert st == 200 and hdrs.get("x-cache") == "HIT", (st, hdrs)

    async def one(conn, req):
        reader, writer = conn
        writer.write(req)
        await writer.drain()
        res = await async_read_response(reader)
        done[0] += 1
        writer.close()
        return res

    async def flood():
        conns = await async_open_many(g.port, N_SLOW)
        t0 = time.monotonic()
        measurer = asyncio.get_running_loop().run_in_executor(None, measure_hits)
        results = await asyncio.wait_for(
            asyncio.gather(*(one(c, r) for c, r in zip(conns, reqs))), timeout=30)
        elapsed = time.monotonic() - t0
        await asyncio.wait_for(measurer, timeout=10)
        return results, elapsed

    try:
        results, elapsed = asyncio.run(flood())
    finally:
        hit_conn.close()
    statuses = [r[0] for r in results]
    assert statuses.count(200) == N_SLOW, {s: statuses.count(s) for s in set(statuses)}
    assert all(r[1].get("x-cache") == "MISS" for r in results)
    print(f"{N_SLOW} slow misses: {elapsed:.2f}s; hits meanwhile: "
          + ", ".join(f"{t * 1000:.1f}ms" for t in hit_times))
    assert 1.9 <= elapsed < 6.0, f"{N_SLOW} misses against a 2 s upstream took {elapsed:.2f}s"
    assert len(hit_times) == 5
    assert any(d < N_SLOW for d in hit_during), "the hits were not measured during the flood"
    # Hits must not wait for the 2 s upstream. Generous bounds: the suite also
    # runs under sanitizers on a shared 2-core machine.
    assert sorted(hit_times)[2] < 0.1 and max(hit_times) < 0.5, \
        f"hits during the flood took {hit_times}"
    assert mock.stats()["chat"] == N_SLOW + 1
    assert g.stats()["entries"] == N_SLOW + 1


@pytest.mark.parametrize("threads", ["1", "2", "8"])
def test_bind_failure_prints_the_error_and_exits_with_any_number_of_threads(threads):
    # 192.0.2.1 (TEST-NET-1) is an address this host does not have. With more
    # than one thread the gateway used to die with SIGSEGV here: the stop
    # reached workers that were never set up.
    p = _run_bin(["--listen", "192.0.2.1:18080", "--threads", threads,
                  "--upstream", "http://127.0.0.1:9/v1"])
    assert p.returncode > 0, f"exit {p.returncode} (a negative one is a signal): {p.stderr!r}"
    assert "bind" in p.stderr.lower() or "192.0.2.1" in p.stderr, p.stderr


def test_data_dir_failure_prints_the_error_and_exits_with_threads(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    p = _run_bin(["--listen", f"127.0.0.1:{free_port()}", "--threads", "4",
                  "--upstream", "http://127.0.0.1:9/v1", "--data-dir", str(blocker / "sub")])
    assert p.returncode > 0, p.stderr
    assert "data-dir" in p.stderr, p.stderr


def test_stats_has_the_http_servers_counters(gateway, mock):
    before = gateway.stats()
    for name in ("http_conns_open", "http_conns_total", "http_conns_refused", "http_requests",
                 "http_bad_requests", "http_requests_too_large", "http_timeouts",
                 "http_send_timeouts", "http_idle_closes", "tier_parked"):
        assert name in before, f"/stats lacks {name}"
    c = RawConn(gateway.port)
    c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: zz\r\n\r\n")
    status, _, _ = c.read_response()
    assert status == 400
    after = gateway.stats()
    assert after["http_bad_requests"] == before["http_bad_requests"] + 1
    assert after["http_conns_total"] > before["http_conns_total"]


def test_a_connection_refused_at_the_cap_is_logged_with_its_real_duration(mock, gateway_factory):
    # One thread so that --max-connections is exact; whatever else holds a
    # slot (the readiness check's connection), more connections than the
    # cap are opened and kept until one is refused.
    g = gateway_factory(mock, threads=1, args=["--max-connections", "2", "--idle-timeout", "30"])
    g.http.close()
    held, statuses = [], []
    for _ in range(4):
        c = RawConn(g.port)
        c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        statuses.append(c.read_response()[0])
        held.append(c)
        if statuses[-1] == 503:
            break
    assert statuses[-1] == 503, statuses
    wait_until(lambda: any(l.get("status") == 503 for l in g.access_lines()), what="503 logged")
    line = [l for l in g.access_lines() if l.get("status") == 503][0]
    assert 0 <= line["dur_ms"] < 5000, line
    for c in held:
        c.sock.close()
    wait_until(lambda: g.stats()["http_conns_refused"] >= 1, what="the refusal counted")
