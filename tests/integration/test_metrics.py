"""GET /metrics (issue 17): the Prometheus text exposition format (0.0.4), made
from the same counter tables as /stats, read with a real exposition parser
(Debian's python3-prometheus-client), not with string matching.

The counters are asserted to move by exactly what the requests between two
scrapes did: a scrape is itself a request, counted once it is answered.
"""

import threading

import pytest

from conftest import assert_error_shape, free_port, session, wait_until

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
        assert f.type in ("counter", "gauge"), (name, f.type)
        assert f.documentation, f"{name} has no HELP"
        for s in f.samples:
            assert s.value >= 0 and s.value == int(s.value), s
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
