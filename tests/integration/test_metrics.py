"""GET /metrics (issue 17): the Prometheus text exposition format (0.0.4), made
from the same counter tables as /stats, read with a real exposition parser
(Debian's python3-prometheus-client), not with string matching.

The counters are asserted to move by exactly what the requests between two
scrapes did: a scrape is itself a request, counted once it is answered.
"""

import os
import threading

import pytest

from conftest import assert_error_shape, chat_body, free_port, session, wait_until

parser = pytest.importorskip("prometheus_client.parser",
                             reason="python3-prometheus-client (scripts/deps.sh) is not installed")

TOKEN = "metrics-token"


def scrape(g, url=None, headers=None):
    r = (g.http if g else session()).get((url or g.url) + "/metrics", headers=headers or {}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in parser.text_string_to_metric_families(r.text)}
    assert families, r.text
    return families, r.text


def value(families, sample, **labels):
    """The value of the sample named `sample` with exactly these labels."""
    for f in families.values():
        for s in f.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    raise AssertionError(f"no sample {sample}{labels}")


def test_exposition_is_well_formed(mock, gateway_factory, tmp_path):
    g = gateway_factory(mock, args=["--data-dir", str(tmp_path / "d")])
    families, text = scrape(g)
    for name, f in families.items():
        assert name.startswith("llmcached_"), name
        assert f.type in ("counter", "gauge", "histogram"), (name, f.type)
        assert f.documentation, f"{name} has no HELP"
        for s in f.samples:
            assert s.value >= 0, s
            # Counts are whole; seconds (a histogram's _sum) and money are not.
            if not s.name.endswith("_sum") and name != "llmcached_money_saved":
                assert s.value == int(s.value), s
            if f.type == "counter":
                assert s.name == name + "_total", s.name
    # Every family is described once, with HELP before TYPE before samples.
    lines = text.splitlines()
    helps = [l.split()[2] for l in lines if l.startswith("# HELP ")]
    types = [l.split()[2] for l in lines if l.startswith("# TYPE ")]
    assert helps == types and len(set(helps)) == len(helps)
    # Units where Prometheus wants them, and labels instead of slashes.
    assert families["llmcached_uptime_seconds"].type == "gauge"
    assert families["llmcached_entry_slab_page_bytes"].type == "gauge"
    assert families["llmcached_tier_bytes"].type == "gauge"
    # No slash survives in a metric name: "upstream_errors/connect" is a label.
    for l in lines:
        if not l.startswith("#"):
            assert "/" not in l.split("{")[0].split(" ")[0], l
    errs = families["llmcached_upstream_errors"]
    assert {s.labels["class"] for s in errs.samples} == {"connect", "timeout", "io", "status",
                                                         "invalid"}
    for fam in ["llmcached_tier_entries", "llmcached_tier_hits", "llmcached_tier_stored"]:
        assert {s.labels["tier"] for s in families[fam].samples} == {"memory", "disk"}, fam
    assert value(families, "llmcached_threads") == 2
    # HEAD answers the same head without the body.
    h = g.http.head(g.url + "/metrics", timeout=5)
    assert h.status_code == 200 and h.content == b""


def test_counters_move_by_the_right_amounts(mock_factory, gateway_factory):
    slow = mock_factory(latency_ms=400)
    g = gateway_factory(slow, env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})
    m0, _ = scrape(g)

    def v(m, name, **labels):
        return value(m, name, **labels)

    # 2 misses, 2 hits, 1 coalesced (a second client joins a call in the air),
    # 1 bypass (no-store), 1 bad request.
    assert g.chat(content="one").headers["X-Cache"] == "MISS"
    threads, got = [], []
    for _ in range(2):
        t = threading.Thread(target=lambda: got.append(g.chat(content="two").headers["X-Cache"]))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(30)
    assert sorted(got) == ["COALESCED", "MISS"]
    assert g.chat(content="one").headers["X-Cache"] == "HIT"
    assert g.chat(content="two").headers["X-Cache"] == "HIT"
    assert g.chat(content="three", headers={"Cache-Control": "no-store"}).headers["X-Cache"] == "BYPASS"
    assert g.post("/v1/chat/completions", data=b"{oops",
                  headers={"Content-Type": "application/json"}).status_code == 400
    requests_between = 7
    m1 = wait_until(lambda: (lambda m: m if v(m, "llmcached_requests_total")
                             >= v(m0, "llmcached_requests_total") + requests_between + 1 else None)(
        scrape(g)[0]), what="the requests to be counted")

    def delta(name, **labels):
        return v(m1, name, **labels) - v(m0, name, **labels)

    assert delta("llmcached_requests_total") == requests_between + 1  # + the first scrape
    assert delta("llmcached_misses_total") == 2
    assert delta("llmcached_hits_total") == 2
    assert delta("llmcached_coalesced_total") == 1
    assert delta("llmcached_bypasses_total") == 1
    assert delta("llmcached_stored_total") == 2
    assert delta("llmcached_upstream_calls_total") == 3
    assert delta("llmcached_client_errors_total") == 1
    assert delta("llmcached_server_errors_total") == 0
    assert delta("llmcached_tier_stored_total", tier="memory") == 2
    assert delta("llmcached_tier_hits_total", tier="memory") == 2
    assert v(m1, "llmcached_tier_entries", tier="memory") == 2
    assert v(m1, "llmcached_tier_bytes", tier="memory") > 0
    assert delta("llmcached_upstream_errors_total", **{"class": "connect"}) == 0
    # /stats says the same, from the same tables.
    s = g.stats()
    m2, _ = scrape(g)
    for name in ["misses", "hits", "coalesced", "bypasses", "stored", "upstream_calls"]:
        assert v(m2, f"llmcached_{name}_total") == s[name], name
    assert v(m2, "llmcached_tier_entries", tier="memory") == s["tiers"]["memory"]["entries"]


def test_upstream_errors_are_labelled_by_class(gateway_factory):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    g = gateway_factory(dead)
    m0, _ = scrape(g)
    r = g.chat(content="no model there")
    assert r.status_code == 502
    m1, _ = scrape(g)
    labels = {"class": "connect"}
    assert (value(m1, "llmcached_upstream_errors_total", **labels)
            - value(m0, "llmcached_upstream_errors_total", **labels)) == 1
    assert value(m1, "llmcached_upstream_errors_total", **{"class": "io"}) == 0
    assert value(m1, "llmcached_server_errors_total") - value(m0, "llmcached_server_errors_total") == 1


def test_metrics_follow_the_admin_rules(mock, gateway_factory):
    aport = free_port()
    g = gateway_factory(mock, args=["--admin-listen", f"127.0.0.1:{aport}"],
                        env={"LLMC_ADMIN_TOKEN": TOKEN})
    assert_error_shape(g.get("/metrics"), 404)
    admin = f"http://127.0.0.1:{aport}"
    r = session().get(admin + "/metrics", timeout=5)
    assert_error_shape(r, 401)
    families, _ = scrape(None, url=admin, headers={"Authorization": f"Bearer {TOKEN}"})
    assert "llmcached_requests" in families


# ---------------------------------------------------------------- latency histograms

def hist(families, name, **labels):
    """{le: cumulative count}, sum and count of one histogram series."""
    f = families[name]
    assert f.type == "histogram", f.type
    buckets, total, count = {}, None, None
    for s in f.samples:
        rest = {k: v for k, v in s.labels.items() if k != "le"}
        if rest != labels:
            continue
        if s.name == name + "_bucket":
            buckets[float(s.labels["le"])] = s.value
        elif s.name == name + "_sum":
            total = s.value
        elif s.name == name + "_count":
            count = s.value
    assert buckets and total is not None and count is not None, (name, labels)
    return buckets, total, count


def test_latency_histograms_count_hits_misses_and_upstream_calls(mock, gateway_factory):
    g = gateway_factory(mock)
    m0, _ = scrape(g)
    n_miss, n_hit = 3, 7
    for i in range(n_miss):
        body = chat_body(f"histogram question {i}")
        body["mock"] = {"latency_ms": 120}
        assert g.chat(body).headers["X-Cache"] == "MISS"
    for i in range(n_hit):
        body = chat_body(f"histogram question {i % n_miss}")
        body["mock"] = {"latency_ms": 120}
        assert g.chat(body).headers["X-Cache"] == "HIT"
    m1, _ = scrape(g)
    fam = "llmcached_request_duration_seconds"
    for cache, n in (("hit", n_hit), ("miss", n_miss)):
        b0, s0, c0 = hist(m0, fam, cache=cache)
        b1, s1, c1 = hist(m1, fam, cache=cache)
        assert c1 - c0 == n, cache
        assert b1[float("inf")] == c1  # +Inf holds every observation
        les = sorted(b1)
        assert all(b1[a] <= b1[b] for a, b in zip(les, les[1:])), "buckets are cumulative"
        assert les[0] == 1e-05 and les[-2] == 120.0
        if cache == "miss":
            # Each miss waited for the 120 ms model: none can be in a bucket below 0.1 s.
            assert b1[0.1] - b0[0.1] == 0 and s1 - s0 >= 0.12 * n
        else:
            # A hit from memory is far below the model's 120 ms (bounded loosely: a loaded
            # machine may stall one, and speed goals live in bench/).
            assert b1[1.0] - b0[1.0] == n and b1[0.1] - b0[0.1] >= n // 2
    ub0, us0, uc0 = hist(m0, "llmcached_upstream_duration_seconds")
    ub1, us1, uc1 = hist(m1, "llmcached_upstream_duration_seconds")
    assert uc1 - uc0 == n_miss and us1 - us0 >= 0.12 * n_miss
    # /stats has the same counts and percentile estimates from the same buckets.
    lat = g.stats()["latency"]
    assert lat["hit"]["count"] == hist(m1, fam, cache="hit")[2]
    assert lat["miss"]["count"] == n_miss and lat["upstream"]["count"] == n_miss
    assert 100 <= lat["miss"]["p50_ms"] <= lat["miss"]["p90_ms"] <= lat["miss"]["p99_ms"] <= 250
    assert 0 < lat["hit"]["p50_ms"] < 100 and lat["hit"]["p99_ms"] <= 1000


# ------------------------------------------------------------- tokens and money saved

PRICES = """# test prices, per 1M tokens
gpt-4o-mini   0.15  0.60
gpt-4o-*      2.5   10
"""


def saved_usage(r):
    u = r.json()["usage"]
    return u["prompt_tokens"], u["completion_tokens"]


def test_tokens_and_money_saved_match_usage_times_prices(mock, gateway_factory, tmp_path):
    prices = tmp_path / "prices.txt"
    prices.write_text(PRICES)
    g = gateway_factory(mock, args=["--prices", prices])
    plan = [("gpt-4o-mini", "a short question", 4, 0.15, 0.60),
            ("gpt-4o-2024-08-06", "a longer question with more words in it", 3, 2.5, 10),
            ("unpriced-model", "a question for a model with no price", 2, None, None)]
    want_money, want_p, want_c = 0.0, 0, 0
    for model, q, hits, pin, pout in plan:
        miss = g.chat(chat_body(q, model=model))
        assert miss.headers["X-Cache"] == "MISS"
        p, c = saved_usage(miss)
        assert p > 0 and c > 0
        for _ in range(hits):
            hit = g.chat(chat_body(q, model=model))
            assert hit.headers["X-Cache"] == "HIT"
            assert hit.headers["X-Cache-Tokens-Saved"] == f"{p}+{c}"
        want_p += hits * p
        want_c += hits * c
        if pin is not None:
            want_money += hits * (p * pin + c * pout) / 1e6
        st = g.stats()["models"][model]
        assert (st["hits"], st["misses"]) == (hits, 1)
        assert (st["prompt_tokens_saved"], st["completion_tokens_saved"]) == (hits * p, hits * c)
        assert st["priced"] == (pin is not None)
        assert st["money_saved"] == pytest.approx(hits * (p * pin + c * pout) / 1e6
                                                  if pin is not None else 0, rel=1e-9, abs=1e-15)
    s = g.stats()
    assert s["tokens_saved"] == {"prompt": want_p, "completion": want_c}
    assert s["money_saved"] == pytest.approx(want_money, rel=1e-9)
    assert s["prices"] == 2
    assert s["routes"]["/v1/chat/completions"]["hits"] == 9
    m, _ = scrape(g)
    route = "/v1/chat/completions"
    assert sum(sm.value for sm in m["llmcached_tokens_saved"].samples
               if sm.labels["kind"] == "prompt") == want_p
    mini = dict(route=route, model="gpt-4o-mini")
    assert value(m, "llmcached_model_requests_total", cache="hit", **mini) == 4
    assert value(m, "llmcached_model_requests_total", cache="miss", **mini) == 1
    assert value(m, "llmcached_money_saved_total", **mini) == pytest.approx(
        s["models"]["gpt-4o-mini"]["money_saved"], rel=1e-9)
    assert value(m, "llmcached_money_saved_total", route=route, model="unpriced-model") == 0
    assert sum(sm.value for sm in m["llmcached_money_saved"].samples) == pytest.approx(want_money,
                                                                                     rel=1e-9)


def builtin_price(model):
    """The row of src/gateway/prices.default that prices model (exact name, else longest prefix),
    read from the file the binary embeds."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "src", "gateway", "prices.default")
    exact, prefix, as_of = {}, {}, None
    for line in open(path):
        f = line.split()
        if line.lower().startswith("# prices as of") and as_of is None:
            as_of = f[4]
        if len(f) == 3 and not f[0].startswith("#"):
            (prefix if f[0].endswith("*") else exact)[f[0].rstrip("*")] = (float(f[1]), float(f[2]))
    if model in exact:
        return exact[model], as_of
    best = max((k for k in prefix if model.startswith(k)), key=len, default=None)
    return (prefix[best] if best else None), as_of


def test_without_prices_the_dated_built_in_table_prices_common_models(mock, gateway_factory):
    g = gateway_factory(mock)
    (pin, pout), as_of = builtin_price("gpt-4o-mini")
    assert g.chat(chat_body("built-in prices", model="gpt-4o-mini")).headers["X-Cache"] == "MISS"
    hit = g.chat(chat_body("built-in prices", model="gpt-4o-mini"))
    p, c = (int(x) for x in hit.headers["X-Cache-Tokens-Saved"].split("+"))
    g.chat(chat_body("no price for this one", model="unpriced-model"))
    g.chat(chat_body("no price for this one", model="unpriced-model"))
    s = g.stats()
    assert s["prices_source"] == "built-in" and s["prices_as_of"] == as_of
    assert len(as_of) == 10 and s["prices"] > 10
    assert s["models"]["gpt-4o-mini"]["priced"] is True
    assert s["models"]["gpt-4o-mini"]["money_saved"] == pytest.approx((p * pin + c * pout) / 1e6,
                                                                      rel=1e-9)
    # A model the table does not know counts its tokens and no money.
    assert s["models"]["unpriced-model"]["priced"] is False
    assert s["models"]["unpriced-model"]["prompt_tokens_saved"] > 0
    assert s["models"]["unpriced-model"]["money_saved"] == 0


def test_prices_none_counts_tokens_and_no_money(mock, gateway_factory, tmp_path):
    g = gateway_factory(mock, args=["--prices", "none"])
    g.chat(chat_body("no money", model="gpt-4o-mini"))
    assert g.chat(chat_body("no money", model="gpt-4o-mini")).headers["X-Cache"] == "HIT"
    s = g.stats()
    assert (s["prices"], s["prices_source"], s["prices_as_of"]) == (0, None, None)
    assert s["tokens_saved"]["prompt"] > 0 and s["money_saved"] == 0
    prices = tmp_path / "prices.txt"
    prices.write_text(PRICES)
    g2 = gateway_factory(mock, args=["--prices", prices])
    assert (g2.stats()["prices_source"], g2.stats()["prices_as_of"]) == (str(prices), None)


def test_models_beyond_the_cap_are_counted_as_other(mock, gateway_factory, tmp_path):
    prices = tmp_path / "prices.txt"
    prices.write_text("m-* 1 2\n")
    g = gateway_factory(mock, args=["--metrics-max-models", 2, "--prices", prices])
    usage = {}
    for i in range(5):
        model = f"m-{i}"
        usage[model] = saved_usage(g.chat(chat_body(f"cap question {i}", model=model)))
        assert g.chat(chat_body(f"cap question {i}", model=model)).headers["X-Cache"] == "HIT"
    models = g.stats()["models"]
    assert set(models) == {"m-0", "m-1", "other"}
    o = models["other"]
    assert (o["hits"], o["misses"]) == (3, 3)
    assert o["prompt_tokens_saved"] == sum(usage[f"m-{i}"][0] for i in range(2, 5))
    # "other" prices each hit by its own model: the money is still exact.
    want = sum((usage[f"m-{i}"][0] * 1 + usage[f"m-{i}"][1] * 2) / 1e6 for i in range(2, 5))
    assert o["money_saved"] == pytest.approx(want, rel=1e-9)
    m, _ = scrape(g)
    seen = {s.labels["model"] for s in m["llmcached_model_requests"].samples}
    assert seen == {"m-0", "m-1", "other"}
    # A model first seen after the cap stays under "other" for good.
    g.chat(chat_body("later question", model="m-9"))
    assert "m-9" not in g.stats()["models"]


def test_a_bad_price_file_stops_start_up_naming_the_line(mock, gateway_factory, tmp_path):
    prices = tmp_path / "prices.txt"
    prices.write_text("gpt-4o 2.5 10\ngpt-4o-mini 0.15\n")
    g = gateway_factory(mock, args=["--prices", prices], wait=False)
    g.must_survive = False
    assert g.proc.wait(10) != 0
    assert "--prices" in g.stderr() and "line 2" in g.stderr()
    g2 = gateway_factory(mock, args=["--prices", tmp_path / "missing.txt"], wait=False)
    g2.must_survive = False
    assert g2.proc.wait(10) != 0
    assert "missing.txt" in g2.stderr()


# ---------------------------------------------------------------- the dashboard's page

def test_dashboard_page_is_served_from_the_binary_on_the_admin_listener(mock, gateway_factory):
    """The page holds no data, so it is served without the token (a browser cannot
    send a Bearer header on a navigation); /stats, which it reads, still wants it.
    The browser test (tests/npm/dashboard.test.mjs) drives the page itself."""
    aport = free_port()
    g = gateway_factory(mock, args=["--admin-listen", f"127.0.0.1:{aport}"],
                        env={"LLMC_ADMIN_TOKEN": TOKEN})
    assert_error_shape(g.get("/dashboard"), 404)  # not on the public listener
    admin = f"http://127.0.0.1:{aport}"
    r = session().get(admin + "/dashboard", timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert r.headers["Cache-Control"] == "no-store"
    csp = r.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    page = r.text
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    # Self-contained: nothing fetched from another origin.
    for ref in ("http://", "https://", "//cdn", "<link", "src="):
        assert ref not in page.replace("http://www.w3.org/2000/svg", ""), ref
    assert 'fetch("stats"' in page and "Authorization" in page
    assert_error_shape(session().get(admin + "/stats", timeout=5), 401)


# ------------------------------------------------------------- access control

def test_access_refusals_and_denials_are_counted(mock, gateway_factory, tmp_path):
    keys = tmp_path / "client-keys"
    keys.write_text("sk-ns-team-a-0123456789 namespace=team-a\nsk-plain-key-0123456789\n")
    admin = "adm-token-0123456789"
    g = gateway_factory(mock, args=["--client-keys", keys], env={"LLMC_ADMIN_TOKEN": admin})
    auth = {"Authorization": f"Bearer {admin}"}

    def denied():
        return g.stats(headers=auth)["access_denied"]

    assert denied() == dict(admin_token=0, client_key=0, namespace=0, refresh=0, ttl=0)
    # 401s: no admin token, a wrong one (twice); no client key, an unlisted one (twice).
    assert g.get("/stats").status_code == 401
    assert g.get("/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert g.chat(content="q").status_code == 401
    assert g.chat(content="q", headers={"Authorization": "Bearer sk-not-listed-000"}).status_code == 401
    # A 403 for a namespace the key is not bound to.
    ns = {"Authorization": "Bearer sk-ns-team-a-0123456789"}
    assert g.chat(content="q", headers={**ns, "X-Cache-Namespace": "team-b"}).status_code == 403
    # Served, with a refresh and a TTL the key may not ask for overridden.
    plain = {"Authorization": "Bearer sk-plain-key-0123456789"}
    assert g.chat(content="q", headers=plain).status_code == 200
    r = g.chat(content="q", headers={**plain, "Cache-Control": "no-cache", "X-Cache-TTL": "5"})
    assert r.status_code == 200 and r.headers["X-Cache-Denied"] == "refresh, ttl"
    r = g.chat(content="q2", headers={**plain, "X-Cache-TTL": "5"})
    assert r.headers["X-Cache-Denied"] == "ttl"
    assert denied() == dict(admin_token=2, client_key=2, namespace=1, refresh=1, ttl=2)
    m, _ = scrape(g, headers=auth)
    for cls, n in [("admin_token", 2), ("client_key", 2), ("namespace", 1), ("refresh", 1),
                   ("ttl", 2)]:
        assert value(m, "llmcached_access_denied_total", **{"class": cls}) == n


def test_requests_are_counted_by_namespace_up_to_the_cap(mock, gateway_factory):
    g = gateway_factory(mock, args=["--metrics-max-namespaces", 2])
    for ns, n in [("team-a", 3), ("team-b", 2), ("team-c", 2), ("team-d", 1)]:
        for _ in range(n):
            g.chat(content=f"namespaced question for {ns}", headers={"X-Cache-Namespace": ns})
    g.chat(content="no namespace")
    g.chat(content="no namespace")
    nss = g.stats()["namespaces"]
    # The first two names seen are told apart; the rest, "" (none) included, are "other".
    assert set(nss) == {"team-a", "team-b", "other"}
    assert (nss["team-a"]["misses"], nss["team-a"]["hits"]) == (1, 2)
    assert (nss["team-b"]["misses"], nss["team-b"]["hits"]) == (1, 1)
    assert (nss["other"]["misses"], nss["other"]["hits"]) == (3, 2)
    assert nss["team-a"]["prompt_tokens_saved"] > 0 and "money_saved" not in nss["team-a"]
    m, _ = scrape(g)
    assert value(m, "llmcached_namespace_requests_total", namespace="team-a", cache="hit") == 2
    assert value(m, "llmcached_namespace_requests_total", namespace="other", cache="miss") == 3
    g2 = gateway_factory(mock)
    g2.chat(content="no namespace here")
    assert g2.stats()["namespaces"][""]["misses"] == 1
