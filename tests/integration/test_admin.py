"""Admin access control: --admin-token, --admin-listen, and which routes each
listener serves (issue 17).

What a client sees: admin routes are never open (404 while no token is
configured), a missing or wrong token is a 401 in OpenAI's error shape, and
with --admin-listen the admin routes, /stats and /metrics leave the public
port for the admin one. POST /admin/explain says what the gateway would do
with a request (its key, the key's inputs, each tier's copy, the verdict)
without calling the model or changing the cache.
"""

import json
import signal

import pytest

from conftest import assert_error_shape, chat_body, free_port, session, wait_until

TOKEN = "s3cret-admin-token"
KEY = "0" * 64  # any well-formed key: the routes must answer before looking it up


def bearer(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def test_admin_routes_are_not_served_without_a_token(gateway):
    # No --admin-token: the admin routes do not exist, whatever is sent.
    for method, path in [("GET", f"/admin/cache/{KEY}"), ("DELETE", f"/admin/cache/{KEY}"),
                         ("POST", "/admin/purge")]:
        r = gateway.http.request(method, gateway.url + path, headers=bearer(), json={"all": True},
                                 timeout=5)
        err = assert_error_shape(r, 404)
        assert err["code"] == "not_found"
    # /stats stays open as it always was.
    assert gateway.get("/stats").status_code == 200


@pytest.mark.parametrize("how", ["flag", "env"])
def test_token_required_when_set(mock, gateway_factory, how):
    if how == "flag":
        g = gateway_factory(mock, args=["--admin-token", TOKEN])
    else:
        g = gateway_factory(mock, env={"LLMC_ADMIN_TOKEN": TOKEN})
    for path in ["/stats", f"/admin/cache/{KEY}"]:
        for headers in [{}, bearer("wrong"), bearer(TOKEN + "x"), bearer(TOKEN[:-1]),
                        {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}]:
            r = g.get(path, headers=headers)
            err = assert_error_shape(r, 401)
            assert err["code"] == "invalid_admin_token", err
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in r.text
    assert g.get("/stats", headers=bearer()).status_code == 200
    # The scheme is case-insensitive (RFC 9110 11.1).
    assert g.get("/stats", headers={"Authorization": f"bearer  {TOKEN}"}).status_code == 200
    # The public routes need nothing.
    assert g.get("/healthz").status_code == 200
    assert g.chat(content="public").status_code == 200
    # The token never reaches the access log.
    assert all(TOKEN not in str(line) for line in g.access_lines())


def test_admin_listener_takes_admin_routes_and_stats(mock, gateway_factory):
    aport = free_port()
    g = gateway_factory(mock, args=["--admin-listen", f"127.0.0.1:{aport}"])
    admin = f"http://127.0.0.1:{aport}"
    s = session()
    # /stats (and /metrics) left the public port ...
    assert_error_shape(g.get("/stats"), 404)
    # ... for the admin one, which serves nothing else.
    r = s.get(admin + "/stats", timeout=5)
    assert r.status_code == 200 and "requests" in r.json()
    assert_error_shape(s.post(admin + "/v1/chat/completions", json={"model": "m"}, timeout=5), 404)
    assert_error_shape(s.get(admin + "/healthz", timeout=5), 404)
    # The public port still serves the API.
    assert g.chat(content="on the public port").status_code == 200
    assert g.get("/healthz").status_code == 200
    # Admin routes: still 404 there without a token.
    assert_error_shape(s.get(admin + f"/admin/cache/{KEY}", headers=bearer(), timeout=5), 404)


def test_admin_listener_with_token(mock, gateway_factory):
    aport = free_port()
    g = gateway_factory(mock, args=["--admin-listen", f"127.0.0.1:{aport}"],
                        env={"LLMC_ADMIN_TOKEN": TOKEN})
    admin = f"http://127.0.0.1:{aport}"
    s = session()
    assert_error_shape(s.get(admin + "/stats", timeout=5), 401)
    assert s.get(admin + "/stats", headers=bearer(), timeout=5).status_code == 200
    # An admin route on the public port does not exist, token or not.
    assert_error_shape(g.get(f"/admin/cache/{KEY}", headers=bearer()), 404)
    assert_error_shape(g.get("/stats", headers=bearer()), 404)


def test_bad_admin_listen_is_refused(mock, gateway_factory):
    g = gateway_factory(mock, args=["--admin-listen", "nonsense"], wait=False)
    g.must_survive = False
    assert g.proc.wait(10) != 0
    assert "--admin-listen" in g.stderr() and "HOST:PORT" in g.stderr()


@pytest.fixture
def admin_gw(mock, gateway_factory):
    """A gateway with an admin token, in shared scope (the gateway holds the key)."""
    return gateway_factory(mock, env={"LLMC_ADMIN_TOKEN": TOKEN,
                                      "LLMC_UPSTREAM_KEY": "sk-gateway-test"})


def entry_meta(g, key):
    return g.get(f"/admin/cache/{key}", headers=bearer())


def test_entry_metadata(admin_gw):
    g = admin_gw
    r = g.chat(content="tell me about metadata", headers={"X-Cache-Namespace": "team-a",
                                                          "X-Cache-TTL": "120"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    key = r.headers["X-Cache-Key"]
    m = entry_meta(g, key)
    assert m.status_code == 200, m.text
    assert m.headers["Content-Type"].startswith("application/json")
    meta = m.json()
    assert meta["key"] == key
    assert meta["tiers"] == ["memory"]
    assert meta["namespace"] == "team-a"
    assert meta["model"] == "gpt-4o-mini"
    assert meta["size"] == len(r.content)
    assert meta["etag"] == r.headers["ETag"]
    assert meta["expires_ms"] - meta["created_ms"] == 120_000
    assert meta["fresh"] is True and 0 < meta["ttl_left_s"] <= 120
    assert meta["created"].endswith("Z") and meta["scope"] == "shared"
    assert "choices" not in m.text  # the body is not part of it
    # Upper-case hex is the same key.
    assert entry_meta(g, key.upper()).json()["key"] == key
    # Looking did not count as an answer.
    assert g.stats(headers=bearer())["hits"] == 0


def test_entry_metadata_errors(admin_gw):
    g = admin_gw
    err = assert_error_shape(entry_meta(g, "f" * 64), 404)
    assert err["code"] == "not_found"
    for bad in ["abc", "g" * 64, "0" * 63, "0" * 65, "0" * 64 + "/x"]:
        err = assert_error_shape(entry_meta(g, bad), 400)
        assert err["code"] == "invalid_key", bad
    # /admin/cache/ alone is no route.
    assert_error_shape(g.get("/admin/cache/", headers=bearer()), 404)
    # A method the path does not take: 405 with Allow.
    r = g.post("/admin/cache/" + "0" * 64, body={}, headers=bearer())
    assert_error_shape(r, 405)
    assert "GET" in r.headers["Allow"]


# ---------------------------------------------------------------- POST /admin/explain

def explain(g, req, headers=None):
    return g.post("/admin/explain", req, headers=headers if headers is not None else bearer())


def test_explain_needs_the_token(gateway, mock, gateway_factory):
    # No token configured: the route does not exist.
    assert_error_shape(explain(gateway, chat_body("x")), 404)
    g = gateway_factory(mock, env={"LLMC_ADMIN_TOKEN": TOKEN})
    for headers in [{}, bearer("wrong")]:
        err = assert_error_shape(explain(g, chat_body("x"), headers), 401)
        assert err["code"] == "invalid_admin_token"


def test_explain_an_uncached_then_a_cached_request(admin_gw, mock):
    g = admin_gw
    body = chat_body("Why was this a miss?", user="alice", temperature=0)
    req = {"path": "/v1/chat/completions", "headers": {"X-Cache-Namespace": "team-x"}, "body": body}
    base = mock.calls()
    r = explain(g, req)
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["cacheable"] is True and e["route"] == "/v1/chat/completions"
    assert e["model"] == "gpt-4o-mini"
    assert e["ignored_fields"] == ["user"]
    assert e["inputs"]["scope"] == "shared" and e["inputs"]["namespace"] == "team-x"
    canon = json.loads(e["inputs"]["canonical"])
    assert "user" not in canon and canon["temperature"] == 0
    assert all(t["state"] == "absent" for t in e["tiers"])
    assert [t["tier"] for t in e["tiers"]] == ["memory"]
    assert e["verdict"] == {"action": "miss", "stored": True}
    # Explaining called nobody and stored nothing.
    assert mock.calls() == base
    assert g.stats(headers=bearer())["misses"] == 0
    # The real request has the key explain said, and is a miss.
    real = g.chat(body, headers={"X-Cache-Namespace": "team-x"})
    assert real.headers["X-Cache"] == "MISS"
    assert real.headers["X-Cache-Key"] == e["key"]
    # Now it is cached: explain says where, how fresh, and that it would hit.
    e2 = explain(g, req).json()
    assert e2["key"] == e["key"]
    mem = e2["tiers"][0]
    assert mem["tier"] == "memory" and mem["state"] == "fresh" and mem["usable"] == "yes"
    assert 0 < mem["ttl_left_s"] <= 300 and mem["age_s"] >= 0
    assert e2["verdict"] == {"action": "hit", "tier": "memory"}
    # With no-cache it would go upstream although the entry is there.
    e3 = explain(g, {**req, "headers": {"X-Cache-Namespace": "team-x",
                                        "Cache-Control": "no-cache"}}).json()
    assert e3["tiers"][0]["state"] == "fresh" and e3["verdict"]["action"] == "miss"
    assert e3["policy"]["read"] is False
    # Another user: the same key (user is ignored); another namespace: not.
    assert explain(g, {**req, "body": {**body, "user": "bob"}}).json()["key"] == e["key"]
    assert explain(g, {**req, "headers": {}}).json()["key"] != e["key"]
    # A bare chat body is taken as the body of a chat completion.
    bare = explain(g, body).json()
    assert bare["route"] == "/v1/chat/completions" and bare["inputs"]["namespace"] == ""
    assert mock.calls() == base + 1
    # The lookups promoted nothing and answered nobody: no hit was counted.
    assert g.stats(headers=bearer())["hits"] == 0


def test_explain_per_key_scope_and_disk(mock, gateway_factory, tmp_path):
    g = gateway_factory(mock, args=["--data-dir", tmp_path / "d"], env={"LLMC_ADMIN_TOKEN": TOKEN})
    body = chat_body("stored twice")
    client = {"Authorization": "Bearer sk-client-one"}
    real = g.chat(body, headers=client)
    e = explain(g, {"headers": client, "body": body}).json()
    assert e["inputs"]["scope"] == "per key"
    assert e["key"] == real.headers["X-Cache-Key"]
    assert explain(g, {"headers": {"Authorization": "Bearer sk-client-two"},
                       "body": body}).json()["key"] != e["key"]
    # Both tiers hold it once the disk writer has committed.
    def tiers():
        got = explain(g, {"headers": client, "body": body}).json()["tiers"]
        return {t["tier"]: t["state"] for t in got}
    wait_until(lambda: tiers() == {"memory": "fresh", "disk": "fresh"}, what="the disk copy")


def test_explain_routes_that_are_not_cached_and_bad_input(admin_gw, mock):
    g = admin_gw
    e = explain(g, {"path": "/v1/models", "body": {}}).json()
    assert e["cacheable"] is False and e["verdict"] == {"action": "pass"}
    e = explain(g, {"path": "/v1/responses",
                    "body": {"model": "m", "input": "hi", "previous_response_id": "resp_1"}}).json()
    assert e["cacheable"] is False and "previous_response_id" in e["why_not"]
    e = explain(g, {"path": "/nowhere", "body": {}}).json()
    assert e["verdict"] == {"action": "error", "status": 404}
    e = explain(g, {"path": "/v1/chat/completions", "body": "{not json"}).json()
    assert e["verdict"] == {"action": "error", "status": 400}
    e = explain(g, {"headers": {"X-Cache-TTL": "soon"}, "body": chat_body("x")}).json()
    assert e["verdict"] == {"action": "error", "status": 400} and "X-Cache-TTL" in e["why_not"]
    for bad in [[1], {"path": 3, "body": {}}, {"method": "GET", "body": {}},
                {"headers": {"a": 1}, "body": {}}, {"path": "/v1/chat/completions"},
                {"body": {}, "extra": 1}]:
        err = assert_error_shape(explain(g, bad), 400)
        assert err["code"] == "invalid_explain_request", bad
    r = g.post("/admin/explain", data=b"{", headers={**bearer(), "Content-Type": "application/json"})
    assert_error_shape(r, 400)
    assert mock.calls() == 0


# ---------------------------------------------------------------- SIGHUP: the options read again

def test_sighup_rereads_the_admin_token_from_the_config_file(mock, gateway_factory, tmp_path):
    conf = tmp_path / "llmcached.conf"
    conf.write_text("admin-token = tok-one-1234\nmax-stale = 300\n")
    g = gateway_factory(mock, args=["--config", conf])

    def hup_and_wait(text, count=1):
        g.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: g.stderr().count(text) >= count, what=repr(text))

    assert g.get("/stats", headers=bearer("tok-one-1234")).status_code == 200
    # A new token in the file replaces the old one at once; --max-stale (what the tiers were
    # told to keep past expiry) waits for a restart.
    conf.write_text("admin-token = tok-two-5678\nmax-stale = 60\n")
    hup_and_wait("--admin-token replaced")
    assert "--max-stale differs from the running value: it needs a restart" in g.stderr()
    assert_error_shape(g.get("/stats", headers=bearer("tok-one-1234")), 401)
    assert g.get("/stats", headers=bearer("tok-two-5678")).status_code == 200
    assert g.get(f"/admin/cache/{KEY}", headers=bearer("tok-two-5678")).status_code == 404
    # A file that does not parse changes nothing.
    conf.write_text("admin-token = tok-three\nmax-stale = banana\n")
    hup_and_wait("the options cannot be read again")
    assert "none changed" in g.stderr()
    assert g.get("/stats", headers=bearer("tok-two-5678")).status_code == 200
    # No token any more: the admin routes go away (404) and /stats opens, as at start.
    conf.write_text("max-stale = 300\n")
    hup_and_wait("--admin-token removed")
    assert_error_shape(g.get(f"/admin/cache/{KEY}", headers=bearer("tok-two-5678")), 404)
    assert g.get("/stats").status_code == 200
    # A SIGHUP with nothing changed says nothing about options.
    hup_and_wait("SIGHUP: reopened the access log", 4)
    assert g.stderr().count("needs a restart") == 1
    assert all(t not in g.stderr() for t in ["tok-one-1234", "tok-two-5678", "tok-three"])
    assert g.chat(content="still serving").status_code == 200


def max_age(r):
    return int(r.headers["Cache-Control"].split("max-age=")[1].split(",")[0])


def test_sighup_applies_a_new_ttl_and_new_prices(mock, gateway_factory, tmp_path):
    prices = tmp_path / "prices.txt"
    prices.write_text("# prices as of 2025-01-01\ngpt-4o-mini 1 2\n")
    conf = tmp_path / "llmcached.conf"
    conf.write_text(f"ttl = 300\nprices = {prices}\nstale-if-error = 0\n")
    g = gateway_factory(mock, args=["--config", conf])
    g.chat(chat_body("before the reload", model="gpt-4o-mini"))
    hit = g.chat(chat_body("before the reload", model="gpt-4o-mini"))
    assert hit.headers["X-Cache"] == "HIT" and max_age(hit) == 300
    p, c = (int(x) for x in hit.headers["X-Cache-Tokens-Saved"].split("+"))
    s = g.stats()
    assert (s["prices"], s["prices_as_of"]) == (1, "2025-01-01")
    assert s["money_saved"] == pytest.approx((p * 1 + c * 2) / 1e6, rel=1e-9)

    # The same --prices path with new contents, and a new --ttl in the file.
    prices.write_text("# prices as of 2025-02-02\ngpt-4o-mini 10 20\nother-model 1 1\n")
    conf.write_text(f"ttl = 60\nprices = {prices}\nstale-if-error = 0\nsemantic-threshold = 0.9\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "prices " + str(prices) in g.stderr(), what="the prices reloaded")
    assert "--ttl changed from 300000 to 60000 ms" in g.stderr()
    assert "--semantic-threshold changed from 700 to 900 (per mille)" in g.stderr()
    assert "--ttl differs" not in g.stderr() and "--prices differs" not in g.stderr()
    s = g.stats()
    assert (s["prices"], s["prices_source"], s["prices_as_of"]) == (2, str(prices), "2025-02-02")
    # A new entry gets the new TTL; the one stored before keeps its own.
    g.chat(chat_body("after the reload", model="gpt-4o-mini"))
    new = g.chat(chat_body("after the reload", model="gpt-4o-mini"))
    assert new.headers["X-Cache"] == "HIT" and max_age(new) == 60
    assert max_age(g.chat(chat_body("before the reload", model="gpt-4o-mini"))) == 300
    # Later hits are priced at the new prices; what was saved before keeps the old ones.
    p2, c2 = (int(x) for x in new.headers["X-Cache-Tokens-Saved"].split("+"))
    want = (p * 1 + c * 2) / 1e6 + (p2 * 10 + c2 * 20) / 1e6 + (p * 10 + c * 20) / 1e6
    assert g.stats()["money_saved"] == pytest.approx(want, rel=1e-9)

    # A price file that no longer parses keeps the table in use; --prices none turns money off.
    prices.write_text("gpt-4o-mini 10\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "the prices in use stay" in g.stderr(), what="the bad file refused")
    assert g.stats()["prices"] == 2
    conf.write_text("ttl = 300\nprices = none\nstale-if-error = 99999\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "prices none: 0 rows" in g.stderr(), what="prices off")
    assert g.stats()["prices_source"] is None
    # Back to the start's value is a change too (the running value is compared).
    assert "--ttl changed from 60000 to 300000 ms" in g.stderr()
    assert "--semantic-threshold changed from 900 to 700 (per mille)" in g.stderr()
    g.chat(chat_body("after the second reload", model="gpt-4o-mini"))
    assert max_age(g.chat(chat_body("after the second reload", model="gpt-4o-mini"))) == 300
    # stale-if-error beyond what the tiers keep past expiry (max-stale, 3600 s) needs a restart.
    assert "--stale-if-error above what the cache keeps" in g.stderr()
    assert g.proc.poll() is None


def test_explain_asks_the_semantic_tier(mock, gateway_factory):
    """The semantic tier is asked too: no similar question stored, then the
    stored question that would answer (its key and similarity); a request
    that refuses similar answers is not asked. No model call, nothing in
    memory under the explained key."""
    g = gateway_factory(mock, args=["--semantic", "on"], env={"LLMC_ADMIN_TOKEN": TOKEN})
    e = explain(g, chat_body("What is the capital of France?")).json()
    assert [t["tier"] for t in e["tiers"]] == ["memory", "semantic"]
    assert e["tiers"][1]["state"].startswith("absent") and e["tiers"][1]["matched"] is None
    assert e["verdict"] == {"action": "miss", "stored": True}
    first = g.chat(chat_body("What is the capital of France?"))
    assert first.headers["X-Cache"] == "MISS"
    # An exact hit in memory answers first.
    assert explain(g, chat_body("What is the capital of France?")).json()["verdict"] == \
        {"action": "hit", "tier": "memory"}
    near = chat_body("what is the capital of france")
    e = explain(g, near).json()
    mem, sem = e["tiers"]
    assert mem["state"] == "absent"
    assert sem["state"] == "fresh" and sem["usable"] == "yes"
    assert sem["matched"] == first.headers["X-Cache-Key"] != e["key"]
    assert 0.7 <= sem["similarity"] <= 1.0
    assert e["verdict"] == {"action": "semantic-hit", "tier": "semantic"}
    # Nothing was promoted: memory still has no copy under the explained key.
    assert explain(g, near).json()["tiers"][0]["state"] == "absent"
    off = explain(g, {"headers": {"X-Cache-Semantic": "off"}, "body": near}).json()
    assert off["tiers"][1]["state"].startswith("not asked")
    assert off["verdict"] == {"action": "miss", "stored": True}
    assert mock.calls() == 1
    # The real request is the semantic hit explain said.
    r = g.chat(near)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT"
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]
    assert mock.calls() == 1


def test_sighup_applies_a_new_semantic_threshold(mock, gateway_factory, tmp_path):
    conf = tmp_path / "llmcached.conf"
    conf.write_text("semantic-threshold = 0.999\n")
    g = gateway_factory(mock, args=["--config", conf, "--semantic", "on"],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})

    def ask(q):
        b = chat_body(q)
        b["messages"].insert(0, {"role": "system", "content": "You answer in one word."})
        r = g.chat(b)
        assert r.status_code == 200, r.text
        return r.headers["X-Cache"]

    assert ask("In Python, how do I sort a dict by value?") == "MISS"
    # 0.999: a reordered wording is not close enough.
    assert ask("How do I sort a dict by value in Python?") == "MISS"
    conf.write_text("semantic-threshold = 0.5\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "--semantic-threshold changed from 999 to 500" in g.stderr(),
               what="the threshold reloaded")
    # This wording is 0.991 similar to the first: a MISS under 0.999, a hit under 0.5.
    assert ask("In Python how do I sort a dict by values?") == "SEMANTIC-HIT"
