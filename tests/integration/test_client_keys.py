"""Client keys (--client-keys FILE, issue 17): who may use the gateway, and
what each key may do to the cache.

What a client sees: without a listed key, a 401 in OpenAI's error shape; a
key bound to a namespace sees only that namespace's answers and gets a 403
for naming another; a key without refresh=yes cannot replace a stored answer
(its no-cache is answered from the cache, X-Cache-Denied: refresh); a key
without ttl=yes cannot pin an answer (X-Cache-Denied: ttl, --ttl applies).
The file is reread on SIGHUP (a bad one keeps the keys in use), the keys
never reach the upstream, the access log or stderr.
"""

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import assert_error_shape, chat_body, wait_until

KEY_A = "sk-client-a-4f9c2e7d1b8a6f30"
KEY_B = "sk-client-b-91d0c3a5e2f7b468"
KEY_FREE = "sk-client-free-0a1b2c3d4e5f"
KEY_REFRESH = "sk-client-refresh-7e6d5c4b3a"
KEY_TTL = "sk-client-ttl-1f2e3d4c5b6a79"
ALL_KEYS = [KEY_A, KEY_B, KEY_FREE, KEY_REFRESH, KEY_TTL]

KEYS_FILE = f"""# test keys
{KEY_A}  namespace=team-a
{KEY_B}  namespace=team-b   # the other team
{KEY_FREE}
{KEY_REFRESH} refresh=yes
{KEY_TTL} ttl=yes
"""


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys_file(tmp_path):
    p = tmp_path / "client-keys"
    p.write_text(KEYS_FILE)
    return p


@pytest.fixture
def keyed(mock, gateway_factory, keys_file):
    """A shared-cache gateway (it holds the upstream key) that needs client keys."""
    return gateway_factory(mock, args=["--client-keys", keys_file],
                           env={"LLMC_UPSTREAM_KEY": "sk-gateway-upstream"})


def test_requests_without_a_listed_key_get_401(keyed):
    for headers in [{}, bearer("sk-not-listed-0123456789"), bearer(KEY_A + "x"),
                    bearer(KEY_A[:-1]), {"Authorization": KEY_A}, {"x-api-key": "nope-0123456789abcdef"}]:
        r = keyed.chat(content="who goes there", headers=headers)
        err = assert_error_shape(r, 401)
        assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # Every route that reaches the model needs it: passed-through ones and /ask too.
    assert_error_shape(keyed.get("/v1/models"), 401)
    assert_error_shape(keyed.get("/ask", params={"q": "hello"}), 401)
    assert_error_shape(keyed.post("/v1/embeddings", {"model": "m", "input": "x"}), 401)
    # Health checks stay open.
    assert keyed.get("/healthz").status_code == 200
    # A listed key, as a bearer token (scheme in any case) or as x-api-key.
    assert keyed.chat(content="who goes there", headers=bearer(KEY_FREE)).status_code == 200
    assert keyed.chat(content="who goes there",
                      headers={"Authorization": f"bearer {KEY_FREE}"}).status_code == 200
    assert keyed.chat(content="who goes there", headers={"x-api-key": KEY_FREE}).status_code == 200


def test_without_the_file_nothing_changes(mock, gateway_factory):
    g = gateway_factory(mock, env={"LLMC_UPSTREAM_KEY": "sk-gateway-upstream"})
    assert g.chat(content="open as before").status_code == 200
    assert g.chat(content="open as before", headers=bearer("anything")).status_code == 200


def test_bound_namespaces_are_isolated(keyed, mock):
    q = "What is the capital of France?"
    base = mock.calls()
    a = keyed.chat(content=q, headers=bearer(KEY_A))
    b = keyed.chat(content=q, headers=bearer(KEY_B))
    assert a.status_code == b.status_code == 200
    # The same question from two bound keys: two upstream calls, two keys.
    assert mock.calls() == base + 2
    assert a.headers["X-Cache"] == b.headers["X-Cache"] == "MISS"
    assert a.headers["X-Cache-Key"] != b.headers["X-Cache-Key"]
    # Each key finds its own answer again.
    a2 = keyed.chat(content=q, headers=bearer(KEY_A))
    assert a2.headers["X-Cache"] == "HIT" and a2.headers["X-Cache-Key"] == a.headers["X-Cache-Key"]
    # Naming its own namespace changes nothing ...
    a3 = keyed.chat(content=q, headers={**bearer(KEY_A), "X-Cache-Namespace": "team-a"})
    assert a3.headers["X-Cache"] == "HIT" and a3.headers["X-Cache-Key"] == a.headers["X-Cache-Key"]
    # ... naming another is refused, by header or by the body's cache extension.
    r = keyed.chat(content=q, headers={**bearer(KEY_A), "X-Cache-Namespace": "team-b"})
    err = assert_error_shape(r, 403)
    assert err["code"] == "namespace_not_allowed"
    r = keyed.chat(chat_body(q, cache={"namespace": "team-b"}), headers=bearer(KEY_A))
    assert_error_shape(r, 403)
    assert mock.calls() == base + 2
    # An unbound key naming team-a's namespace does not reach team-a's answers.
    u = keyed.chat(content=q, headers={**bearer(KEY_FREE), "X-Cache-Namespace": "team-a"})
    assert u.status_code == 200 and u.headers["X-Cache"] == "MISS"
    assert u.headers["X-Cache-Key"] not in (a.headers["X-Cache-Key"], b.headers["X-Cache-Key"])
    assert mock.calls() == base + 3


def test_only_keys_allowed_to_refresh_replace_a_stored_answer(keyed, mock):
    q = "Tell me a fact about owls"
    first = keyed.chat(content=q, headers=bearer(KEY_FREE))
    assert first.headers["X-Cache"] == "MISS"
    base = mock.calls()
    # A key without refresh=yes: its no-cache is answered from the cache.
    for h in [{"Cache-Control": "no-cache"}, {"Pragma": "no-cache"}, {"Cache-Control": "max-age=0"}]:
        r = keyed.chat(content=q, headers={**bearer(KEY_FREE), **h})
        assert r.status_code == 200
        assert r.headers["X-Cache"] == "HIT", h
        assert r.headers["X-Cache-Denied"] == "refresh"
        assert r.json() == first.json()
    assert mock.calls() == base
    # A plain request says nothing was denied.
    assert "X-Cache-Denied" not in keyed.chat(content=q, headers=bearer(KEY_FREE)).headers
    # A key with refresh=yes replaces it.
    r = keyed.chat(content=q, headers={**bearer(KEY_REFRESH), "Cache-Control": "no-cache"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert "X-Cache-Denied" not in r.headers
    assert mock.calls() == base + 1
    # no-store stores nothing, so it harms no one: still a bypass for anyone.
    r = keyed.chat(content=q, headers={**bearer(KEY_FREE), "Cache-Control": "no-store"})
    assert r.headers["X-Cache"] == "BYPASS" and "X-Cache-Denied" not in r.headers


def max_age(r):
    cc = r.headers["Cache-Control"]
    return int(cc.split("max-age=")[1].split(",")[0])


def test_only_keys_allowed_to_set_ttls_do(mock, gateway_factory, keys_file):
    g = gateway_factory(mock, args=["--client-keys", keys_file, "--ttl", "60", "--max-ttl", "86400"],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-upstream"})
    r = g.chat(content="pin me", headers={**bearer(KEY_FREE), "X-Cache-TTL": "86400"})
    assert r.status_code == 200 and r.headers["X-Cache-Denied"] == "ttl"
    assert max_age(r) <= 60
    hit = g.chat(content="pin me", headers=bearer(KEY_FREE))
    assert hit.headers["X-Cache"] == "HIT" and max_age(hit) <= 60
    r = g.chat(content="pin me too", headers={**bearer(KEY_TTL), "X-Cache-TTL": "86400"})
    assert r.status_code == 200 and "X-Cache-Denied" not in r.headers
    assert max_age(r) > 86000
    # Both denials at once.
    r = g.chat(content="pin me thrice", headers={**bearer(KEY_FREE), "X-Cache-TTL": "600",
                                                 "Cache-Control": "no-cache"})
    assert r.headers["X-Cache-Denied"] == "refresh, ttl"


def test_sighup_reloads_the_file(mock, gateway_factory, tmp_path):
    p = tmp_path / "keys"
    p.write_text(f"{KEY_A}\n")
    g = gateway_factory(mock, args=["--client-keys", p], env={"LLMC_UPSTREAM_KEY": "sk-up"},
                        threads=3)
    assert g.chat(content="a", headers=bearer(KEY_A)).status_code == 200
    assert_error_shape(g.chat(content="b", headers=bearer(KEY_B)), 401)
    # B added, A removed.
    p.write_text(f"# rotated\n{KEY_B} refresh=yes\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded the client keys" in g.stderr(), what="the reload message")
    # Every thread (connections spread over them) sees the new table.
    for i in range(12):
        assert g.chat(content=f"b{i}", headers=bearer(KEY_B)).status_code == 200
        assert_error_shape(g.chat(content=f"a{i}", headers=bearer(KEY_A)), 401)
    # A bad file keeps the keys in use, and says where it is wrong.
    p.write_text(f"{KEY_A}\n{KEY_B} colour=blue\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "cannot reload --client-keys" in g.stderr(), what="the refusal")
    assert "line 2" in g.stderr()
    for i in range(6):
        assert g.chat(content=f"b{i}", headers=bearer(KEY_B)).status_code == 200
        assert_error_shape(g.chat(content=f"a{i}", headers=bearer(KEY_A)), 401)
    # A missing file too.
    p.unlink()
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: g.stderr().count("cannot reload --client-keys") == 2, what="the refusal")
    assert g.chat(content="still", headers=bearer(KEY_B)).status_code == 200
    assert g.proc.poll() is None


def test_a_bad_file_stops_the_start(mock, gateway_factory, tmp_path):
    p = tmp_path / "keys"
    p.write_text(f"{KEY_A}\nshort\n")
    g = gateway_factory(mock, args=["--client-keys", p], wait=False)
    g.must_survive = False
    assert g.proc.wait(10) != 0
    assert "--client-keys" in g.stderr() and "line 2" in g.stderr()
    assert KEY_A not in g.stderr()


def test_keys_never_reach_the_log_or_stderr(keyed, keys_file):
    for k in ALL_KEYS:
        keyed.chat(content="log me", headers=bearer(k))
        keyed.chat(content="log me", headers={"x-api-key": k, "X-Cache-Namespace": "team-b"})
    keyed.chat(content="log me", headers=bearer("sk-not-listed-0123456789"))
    keyed.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded the client keys" in keyed.stderr(), what="the reload message")
    wait_until(lambda: len(keyed.access_lines()) >= 2 * len(ALL_KEYS), what="the access log")
    log = keyed.access_log.read_text()
    err = keyed.stderr()
    for k in ALL_KEYS + ["sk-not-listed-0123456789"]:
        assert k not in log and k not in err


class _Recorder(BaseHTTPRequestHandler):
    """An upstream that records the Authorization header of every call."""

    seen = []

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        type(self).seen.append(self.headers.get("Authorization"))
        out = json.dumps({
            "id": "chatcmpl-rec", "object": "chat.completion", "created": 1,
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "recorded"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def recorder():
    _Recorder.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, _Recorder.seen
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("upstream_key", ["sk-gateway-upstream", None])
def test_the_client_key_is_not_sent_upstream(gateway_factory, keys_file, recorder, upstream_key):
    srv, seen = recorder
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    g = gateway_factory(url, args=["--client-keys", keys_file],
                        env={"LLMC_UPSTREAM_KEY": upstream_key} if upstream_key else None)
    assert g.chat(content="cached route", headers=bearer(KEY_FREE)).status_code == 200
    assert g.post("/v1/threads", {"x": 1}, headers={"x-api-key": KEY_A}).status_code == 200
    assert len(seen) == 2
    want = f"Bearer {upstream_key}" if upstream_key else None
    assert seen == [want, want]


def test_per_key_scope_separates_keys_whichever_header_carries_them(mock, gateway_factory,
                                                                    keys_file):
    # No upstream key: each client key has a cache of its own.
    g = gateway_factory(mock, args=["--client-keys", keys_file])
    base = mock.calls()
    r1 = g.chat(content="mine", headers={"x-api-key": KEY_FREE})
    r2 = g.chat(content="mine", headers={"x-api-key": KEY_TTL})
    assert r1.headers["X-Cache"] == r2.headers["X-Cache"] == "MISS"
    assert mock.calls() == base + 2
    # The same key by the other header is the same client.
    r3 = g.chat(content="mine", headers=bearer(KEY_FREE))
    assert r3.headers["X-Cache"] == "HIT"


def test_explain_keys_a_request_as_its_client_key_would(mock, gateway_factory, keys_file):
    g = gateway_factory(mock, args=["--client-keys", keys_file],
                        env={"LLMC_UPSTREAM_KEY": "sk-up", "LLMC_ADMIN_TOKEN": "admin-tok"})
    admin = {"Authorization": "Bearer admin-tok"}
    body = chat_body("explain my key")
    for k in [KEY_A, KEY_FREE]:
        real = g.chat(body, headers={**bearer(k), "X-Cache-TTL": "999"})
        e = g.post("/admin/explain", {"headers": {"Authorization": f"Bearer {k}"}, "body": body},
                   headers=admin).json()
        assert e["key"] == real.headers["X-Cache-Key"], e
        assert e["client"]["listed"] is True
        assert e["verdict"] == {"action": "hit", "tier": "memory"}
        assert k not in json.dumps(e)
    e = g.post("/admin/explain", {"headers": {"x-api-key": KEY_A}, "body": body}, headers=admin).json()
    assert e["inputs"]["scope"] == "bound namespace" and e["inputs"]["namespace"] == "team-a"
    e = g.post("/admin/explain", {"headers": {"x-api-key": KEY_FREE, "X-Cache-TTL": "999",
                                              "Cache-Control": "no-cache"}, "body": body},
               headers=admin).json()
    assert e["policy"]["denied"] == ["refresh", "ttl"] and e["verdict"]["action"] == "hit"
    e = g.post("/admin/explain", {"headers": {"x-api-key": KEY_A, "X-Cache-Namespace": "x"},
                                  "body": body}, headers=admin).json()
    assert e["verdict"] == {"action": "error", "status": 403}
    e = g.post("/admin/explain", {"body": body}, headers=admin).json()
    assert e["client"] == {"listed": False} and e["verdict"] == {"action": "error", "status": 401}


def test_answers_are_private_so_no_cache_in_front_serves_them_without_a_key(keyed):
    miss = keyed.chat(content="for key holders", headers=bearer(KEY_FREE))
    hit = keyed.chat(content="for key holders", headers=bearer(KEY_FREE))
    assert hit.headers["X-Cache"] == "HIT"
    for r in (miss, hit):
        assert r.headers["Cache-Control"].startswith("private"), r.headers
        assert "Authorization" in r.headers["Vary"]


def test_reloads_under_traffic_lose_no_listed_key(mock, gateway_factory, tmp_path):
    # Requests on every thread while the table is swapped again and again: a
    # key listed in every version of the file is never refused, and the old
    # tables are freed under running requests without a crash (ASan build).
    import time
    from concurrent.futures import ThreadPoolExecutor
    p = tmp_path / "keys"
    p.write_text(f"{KEY_A}\n")
    g = gateway_factory(mock, args=["--client-keys", p], env={"LLMC_UPSTREAM_KEY": "sk-up"},
                        threads=4)
    stop = time.monotonic() + 3.0
    statuses = []

    def client(n):
        from conftest import session
        s = session()
        i = 0
        while time.monotonic() < stop:
            r = s.post(g.url + "/v1/chat/completions", json=chat_body(f"q{n}-{i % 5}"),
                       headers=bearer(KEY_A), timeout=10)
            statuses.append(r.status_code)
            i += 1

    with ThreadPoolExecutor(6) as ex:
        futs = [ex.submit(client, n) for n in range(6)]
        k = 0
        while time.monotonic() < stop:
            # Replaced whole (a new file renamed over it), as the README says
            # to: a reload may otherwise read a file half written.
            tmp = tmp_path / "keys.new"
            tmp.write_text(f"{KEY_A}\n{KEY_B}\n" if k % 2 == 0 else f"# v{k}\n{KEY_A} ttl=yes\n")
            os.replace(tmp, p)
            g.proc.send_signal(signal.SIGHUP)
            k += 1
            time.sleep(0.05)
        for f in futs:
            f.result()
    assert statuses and set(statuses) == {200}, set(statuses)
    # The last version lists a key no earlier one did, so its first 200 says
    # this reload (not one still pending from the loop) has taken effect.
    p.write_text(f"{KEY_FREE}\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: g.chat(content="final", headers=bearer(KEY_FREE)).status_code == 200,
               what="the last reload")
    assert_error_shape(g.chat(content="final", headers=bearer(KEY_A)), 401)
