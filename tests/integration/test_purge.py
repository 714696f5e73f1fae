"""Invalidation (issue 17): DELETE /admin/cache/{key}, POST /admin/purge with a
selector, on every tier present (memory, and disk with --data-dir), and the
races: an answer in the air when a purge lands is served but not stored, and
an entry a purge selected is never promoted back from the disk tier.

Each test asserts what a client sees afterwards: X-Cache of the next
request, the model's call count, and the counts the purge answered with.
"""

import threading
import time

import pytest

from conftest import assert_error_shape, chat_body, embedding_body

TOKEN = "purge-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"LLMC_ADMIN_TOKEN": TOKEN, "LLMC_UPSTREAM_KEY": "sk-gateway-test"}  # shared scope


@pytest.fixture(params=["memory", "memory+disk"])
def tiers(request):
    return request.param


@pytest.fixture
def gw(mock, gateway_factory, tmp_path, tiers):
    args = ["--data-dir", str(tmp_path / "data")] if tiers == "memory+disk" else []
    return gateway_factory(mock, args=args, env=ENV)


def tier_names(tiers):
    return tiers.split("+")


def purge(g, selector):
    r = g.post("/admin/purge", selector, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["selector"] == selector
    return body["removed"]


def ask(g, content, headers=None, **kw):
    r = g.chat(content=content, headers=headers, **kw)
    assert r.status_code == 200, r.text
    return r


def xcache(g, content, headers=None, **kw):
    return ask(g, content, headers, **kw).headers["X-Cache"]


def test_delete_by_key(gw, mock, tiers):
    r = ask(gw, "delete me")
    key = r.headers["X-Cache-Key"]
    other = ask(gw, "keep me").headers["X-Cache-Key"]
    assert xcache(gw, "delete me") == "HIT"
    d = gw.http.delete(gw.url + f"/admin/cache/{key}", headers=AUTH, timeout=10)
    assert d.status_code == 200, d.text
    assert d.json() == {"removed": {t: 1 for t in tier_names(tiers)}, "selector": {"key": key}}
    # Gone from every tier: the metadata says so, and the next request asks the model.
    assert_error_shape(gw.get(f"/admin/cache/{key}", headers=AUTH), 404)
    calls = mock.calls()
    assert xcache(gw, "delete me") == "MISS"
    assert mock.calls() == calls + 1
    assert xcache(gw, "keep me") == "HIT"
    assert gw.get(f"/admin/cache/{other}", headers=AUTH).status_code == 200
    # Deleting what is not there removes nothing and says so.
    d = gw.http.delete(gw.url + "/admin/cache/" + "ab" * 32, headers=AUTH, timeout=10)
    assert d.json()["removed"] == {t: 0 for t in tier_names(tiers)}
    err = assert_error_shape(gw.http.delete(gw.url + "/admin/cache/xyz", headers=AUTH, timeout=5), 400)
    assert err["code"] == "invalid_key"
    assert gw.stats(headers=AUTH)["purges"] == 2


def test_selectors_on_every_tier(gw, tiers):
    names = tier_names(tiers)
    # Four answers: namespaces a/b, two models, tags from the header and the body.
    ask(gw, "q1", {"X-Cache-Namespace": "a", "X-Cache-Tags": "docs, v1"})
    ask(gw, "q2", {"X-Cache-Namespace": "a"}, model="gpt-4o")
    ask(gw, "q3", {"X-Cache-Namespace": "b", "X-Cache-Tags": "docs"})
    r = gw.chat(chat_body("q4", cache={"tags": ["v1"], "namespace": "b"}))
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    meta = gw.get(f"/admin/cache/{r.headers['X-Cache-Key']}", headers=AUTH).json()
    assert meta["tags"] == ["v1"] and meta["namespace"] == "b"
    assert meta["route"] == "/v1/chat/completions"
    emb = gw.post("/v1/embeddings", embedding_body("e1"))
    assert emb.status_code == 200
    if "disk" in names:
        # Entries reach the disk through its writer thread; wait for them.
        key = r.headers["X-Cache-Key"]
        deadline = time.monotonic() + 5
        while gw.get(f"/admin/cache/{key}", headers=AUTH).json()["tiers"] != names:
            assert time.monotonic() < deadline, "the disk tier never got the entry"
            time.sleep(0.05)

    def counts(n):
        return {t: n for t in names}

    # AND: namespace a and tag docs is q1 alone.
    assert purge(gw, {"namespace": "a", "tag": "docs"}) == counts(1)
    assert xcache(gw, "q1", {"X-Cache-Namespace": "a"}) == "MISS"
    assert xcache(gw, "q3", {"X-Cache-Namespace": "b"}) == "HIT"
    # A tag from the body.
    assert purge(gw, {"tag": "v1"}) == counts(1)  # q4 (q1's new answer has no tags)
    assert gw.chat(chat_body("q4", cache={"namespace": "b"})).headers["X-Cache"] == "MISS"
    # A model.
    assert purge(gw, {"model": "gpt-4o"}) == counts(1)
    assert xcache(gw, "q2", {"X-Cache-Namespace": "a"}, model="gpt-4o") == "MISS"
    # A route: the embeddings only.
    assert purge(gw, {"route": "/v1/embeddings"}) == counts(1)
    assert gw.post("/v1/embeddings", embedding_body("e1")).headers["X-Cache"] == "MISS"
    assert xcache(gw, "q3", {"X-Cache-Namespace": "b"}) == "HIT"
    # A key prefix: the first 6 hex digits of q3's key.
    k3 = ask(gw, "q3", {"X-Cache-Namespace": "b"}).headers["X-Cache-Key"]
    assert purge(gw, {"key_prefix": k3[:6]}) == counts(1)
    assert xcache(gw, "q3", {"X-Cache-Namespace": "b"}) == "MISS"
    # older_than: nothing is a minute old; everything is older than 0 s.
    assert purge(gw, {"older_than": 60}) == counts(0)
    # q1, q2, q3, q4 and e1, each asked again after its purge.
    assert purge(gw, {"older_than": 0}) == counts(5)
    assert xcache(gw, "q1", {"X-Cache-Namespace": "a"}) == "MISS"
    # all
    assert purge(gw, {"all": True}) == counts(1)
    assert xcache(gw, "q1", {"X-Cache-Namespace": "a"}) == "MISS"


def test_bad_selectors_are_refused(gw):
    ask(gw, "survivor")
    cases = [
        ({}, "empty selector"),
        ({"all": False}, "can only be true"),
        ({"all": True, "model": "m"}, "cannot be combined"),
        ({"namespce": "a"}, "unknown selector field"),
        ({"model": 1}, "must be a string"),
        ({"key_prefix": "zz"}, "hex digits"),
        ({"older_than": -5}, "0 or more"),
        ([], "JSON object"),
    ]
    for sel, words in cases:
        r = gw.post("/admin/purge", sel, headers=AUTH)
        err = assert_error_shape(r, 400)
        assert err["code"] == "invalid_selector" and words in err["message"], (sel, err)
    r = gw.post("/admin/purge", data=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert assert_error_shape(r, 400)["code"] == "invalid_json"
    r = gw.post("/v1/chat/completions", chat_body("t"), headers={"X-Cache-Tags": "a," + "x" * 65})
    assert assert_error_shape(r, 400)["code"] == "invalid_cache_tags"
    # None of that purged anything.
    assert xcache(gw, "survivor") == "HIT"
    assert gw.stats(headers=AUTH)["purges"] == 0


def test_purge_needs_the_token(gw):
    ask(gw, "guarded")
    for headers in [{}, {"Authorization": "Bearer nope"}]:
        assert_error_shape(gw.post("/admin/purge", {"all": True}, headers=headers), 401)
        assert_error_shape(gw.http.delete(gw.url + "/admin/cache/" + "0" * 64, headers=headers,
                                          timeout=5), 401)
    assert xcache(gw, "guarded") == "HIT"


@pytest.mark.parametrize("selector,stored", [({"all": True}, False),
                                             ({"namespace": "team-x"}, False),
                                             ({"namespace": "someone-else"}, True)])
def test_answer_in_the_air_is_not_stored_after_a_purge(mock_factory, gateway_factory, tmp_path,
                                                       selector, stored):
    """A purge lands while the model is still answering: the clients get the
    answer (they asked before), but the cache does not keep it unless the
    purge does not select it."""
    slow = mock_factory(latency_ms=1500)
    g = gateway_factory(slow, args=["--data-dir", str(tmp_path / "d")], env=ENV)
    got = {}

    def client():
        got["r"] = g.chat(content="in the air", headers={"X-Cache-Namespace": "team-x"}, timeout=30)

    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 5
    while slow.calls() == 0:
        assert time.monotonic() < deadline, "the call never reached the model"
        time.sleep(0.02)
    assert purge(g, selector) == {"memory": 0, "disk": 0}
    t.join(30)
    r = got["r"]
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert "choices" in r.json()
    s = g.stats(headers=AUTH)
    assert s["stored"] == (1 if stored else 0)
    assert s["not_stored_purged"] == (0 if stored else 1)
    again = g.chat(content="in the air", headers={"X-Cache-Namespace": "team-x"}, timeout=30)
    assert again.headers["X-Cache"] == ("HIT" if stored else "MISS")
    assert slow.calls() == (1 if stored else 2)


def test_purged_entry_is_not_promoted_from_disk(mock, gateway_factory, tmp_path):
    """After a restart the answers are on disk only; a purge must keep the
    ones it selects from coming back into memory, and leave the others."""
    data = str(tmp_path / "data")
    g1 = gateway_factory(mock, args=["--data-dir", data], env=ENV)
    for ns in ["gone", "kept"]:
        ask(g1, "persisted", {"X-Cache-Namespace": ns})
    g1.must_survive = False
    assert g1.stop() is None  # the disk writer commits what is queued
    g2 = gateway_factory(mock, args=["--data-dir", data], env=ENV)
    assert purge(g2, {"namespace": "gone"}) == {"memory": 0, "disk": 1}
    calls = mock.calls()
    r = ask(g2, "persisted", {"X-Cache-Namespace": "kept"})
    assert r.headers["X-Cache"] == "HIT"
    assert xcache(g2, "persisted", {"X-Cache-Namespace": "gone"}) == "MISS"
    assert mock.calls() == calls + 1
    # What the purge left survives another restart.
    g2.must_survive = False
    assert g2.stop() is None
    g3 = gateway_factory(mock, args=["--data-dir", data], env=ENV)
    assert xcache(g3, "persisted", {"X-Cache-Namespace": "kept"}) == "HIT"
