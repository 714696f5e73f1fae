"""Issue 14: no client may steer what others get through the headers that go upstream.

Rule: a client header that reaches the upstream is part of the cache key and of the
flight's identity. With the gateway's own upstream key, client headers are not
forwarded at all unless --forward-header lists them. And the upstream's per-account
headers (organisation, rate limits, request ids, timings) reach clients only where
the client's own key made the call.

Decisions a newcomer would otherwise get wrong:
- The mock's GET /mock/requests lists the headers of the calls it got: that is
  how a test sees what went upstream.
- mock.organizations makes the mock answer 401 to an OpenAI-Organization outside
  the list (as OpenAI does); the body is the same for both clients of a race, so
  only the header tells their requests apart.
"""

import threading

import pytest

from conftest import assert_error_shape, chat_body

CHAT = "/v1/chat/completions"
ACCOUNT = ("openai-organization", "openai-processing-ms", "x-ratelimit-remaining-requests",
           "x-request-id")


def upstream_requests(mock):
    r = mock.http.get(mock.base + "/mock/requests", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def xcache(r):
    return r.headers.get("X-Cache")


# ------------------------------------------------------------------ forwarded = keyed

def test_an_answer_made_under_one_organisation_is_not_a_hit_for_another(gateway, mock):
    """Per-key scope: the client's own key goes up, and so does its organisation."""
    body = chat_body("org steering")
    auth = {"Authorization": "Bearer sk-client"}
    a = gateway.chat(body, headers={**auth, "OpenAI-Organization": "org-a"})
    assert a.status_code == 200 and xcache(a) == "MISS"
    b = gateway.chat(body, headers={**auth, "OpenAI-Organization": "org-b"})
    assert b.status_code == 200 and xcache(b) == "MISS", "org-a's answer was served to org-b"
    assert [r["headers"].get("openai-organization") for r in upstream_requests(mock)] == \
        ["org-a", "org-b"]
    again = gateway.chat(body, headers={**auth, "OpenAI-Organization": "org-a"})
    assert xcache(again) == "HIT"
    # Without any such header: its own key (and the one it always had).
    none = gateway.chat(body, headers=auth)
    assert xcache(none) == "MISS"
    assert xcache(gateway.chat(body, headers=auth)) == "HIT"
    assert mock.calls("chat") == 3


def test_project_and_beta_are_keyed_too(gateway, mock):
    body = chat_body("project steering")
    for h in ({"OpenAI-Project": "proj-1"}, {"OpenAI-Project": "proj-2"},
              {"OpenAI-Beta": "assistants=v2"}):
        assert xcache(gateway.chat(body, headers=h)) == "MISS", h
    assert mock.calls("chat") == 3


def test_with_the_gateways_key_client_headers_are_not_forwarded(shared_gateway, mock):
    """A client must not pick which organisation the operator's key bills."""
    body = chat_body("billing steering")
    h = {"OpenAI-Organization": "org-evil", "OpenAI-Project": "proj-evil",
         "OpenAI-Beta": "evil=v1", "Accept": "text/evil"}
    r = shared_gateway.chat(body, headers=h)
    assert r.status_code == 200 and xcache(r) == "MISS"
    sent = upstream_requests(mock)[-1]["headers"]
    assert sent["authorization"] == "Bearer sk-gateway-test"
    for name in ("openai-organization", "openai-project", "openai-beta"):
        assert name not in sent, sent
    assert sent.get("accept") != "text/evil"
    # Not forwarded, so not keyed: the shared answer serves everyone.
    assert xcache(shared_gateway.chat(body)) == "HIT"


def test_forward_header_lists_what_goes_up_and_keys_it(gateway_factory, mock):
    g = gateway_factory(mock, args=["--forward-header", "OpenAI-Organization",
                                    "--forward-header", "X-Tenant"],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})
    body = chat_body("listed headers")
    assert xcache(g.chat(body, headers={"OpenAI-Organization": "org-a"})) == "MISS"
    assert xcache(g.chat(body, headers={"OpenAI-Organization": "org-b"})) == "MISS"
    assert xcache(g.chat(body, headers={"OpenAI-Organization": "org-a", "X-Tenant": "t1"})) == \
        "MISS"
    assert xcache(g.chat(body, headers={"OpenAI-Project": "p"})) == "MISS"  # no listed header
    assert xcache(g.chat(body, headers={"OpenAI-Organization": "org-b"})) == "HIT"
    sent = [r["headers"] for r in upstream_requests(mock)]
    assert [s.get("openai-organization") for s in sent] == ["org-a", "org-b", "org-a", None]
    assert sent[2]["x-tenant"] == "t1" and "openai-project" not in sent[3]
    # A cache in front is told which request headers chose the answer.
    vary = [v.strip() for v in g.chat(body).headers["Vary"].split(",")]
    assert "OpenAI-Organization" in vary and "X-Tenant" in vary and "OpenAI-Project" not in vary


def test_forward_header_refuses_credentials_and_framing(gateway_factory, mock):
    for name in ("Authorization", "Content-Length", "X-Cache-TTL", "not a name"):
        g = gateway_factory(mock, args=["--forward-header", name], wait=False)
        g.must_survive = False
        assert g.proc.wait(timeout=10) != 0
        assert f"--forward-header: {name}" in g.stderr() or "not a header name" in g.stderr()


def test_accept_is_not_forwarded(gateway, mock):
    """The gateway decides the answer's form; a client's Accept would be a key part that
    changes nothing but splits the cache (curl's */* vs an SDK's application/json)."""
    body = chat_body("accept")
    assert xcache(gateway.chat(body, headers={"Accept": "text/plain"})) == "MISS"
    assert xcache(gateway.chat(body, headers={"Accept": "application/json"})) == "HIT"
    assert upstream_requests(mock)[-1]["headers"].get("accept") != "text/plain"


# ------------------------------------------------------------------ flights

def race(g, body, headers_a, headers_b):
    """Two identical requests but for their headers, sent together."""
    out = {}

    def send(name, h):
        out[name] = g.chat(body, headers=h, timeout=30)

    ts = [threading.Thread(target=send, args=("a", headers_a)),
          threading.Thread(target=send, args=("b", headers_b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out["a"], out["b"]


@pytest.mark.parametrize("scope", ["per-key", "gateway-key"])
def test_one_clients_bad_organisation_never_becomes_anothers_401(gateway_factory, mock, scope):
    if scope == "per-key":
        g = gateway_factory(mock)
        auth = {"Authorization": "Bearer sk-same-key"}
    else:
        g = gateway_factory(mock, args=["--forward-header", "OpenAI-Organization"],
                            env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})
        auth = {}
    body = chat_body("coalesced org", mock={"latency_ms": 600, "organizations": ["org-good"]})
    bad, good = race(g, body, {**auth, "OpenAI-Organization": "org-bad"},
                     {**auth, "OpenAI-Organization": "org-good"})
    assert bad.status_code == 401
    assert assert_error_shape(bad)["code"] == "mismatched_organization"
    assert good.status_code == 200, (good.status_code, good.text[:300])
    assert xcache(good) == "MISS" and xcache(bad) == "MISS"
    assert mock.calls("chat") == 2


def test_a_shared_cache_of_client_keys_never_hands_one_keys_401_to_another(gateway_factory,
                                                                            mock):
    """--cache-scope shared without the gateway's key: the credential goes upstream but is not
    in the key (the operator chose to share answers), so it must be in the flight's identity."""
    g = gateway_factory(mock, args=["--cache-scope", "shared"])
    body = chat_body("coalesced key", mock={"latency_ms": 600, "api_keys": ["sk-good"]})
    bad, good = race(g, body, {"Authorization": "Bearer sk-bad"},
                     {"Authorization": "Bearer sk-good"})
    assert bad.status_code == 401
    assert good.status_code == 200, (good.status_code, good.text[:300])
    assert mock.calls("chat") == 2
    # The good answer is shared, as the operator asked.
    r = g.chat(body, headers={"Authorization": "Bearer sk-other"})
    assert r.status_code == 200 and xcache(r) == "HIT"


# ------------------------------------------------------------------ per-account answer headers

def test_shared_scope_drops_the_upstream_accounts_headers(shared_gateway, mock):
    r = shared_gateway.chat(chat_body("account headers"))
    assert r.status_code == 200 and xcache(r) == "MISS"
    assert r.headers.get("X-Mock-Call") is None  # never passed (not in the table)
    for name in ACCOUNT:
        assert name not in {k.lower() for k in r.headers}, (name, dict(r.headers))
    # The mock did send them: the gateway dropped them.
    raw = mock.http.post(mock.url + "/chat/completions", json=chat_body("direct"), timeout=10)
    assert raw.headers["X-Request-Id"].startswith("req_mock_")
    assert raw.headers["OpenAI-Organization"] == "org-mock"


def test_a_coalesced_waiter_gets_no_leaders_request_id_in_shared_scope(shared_gateway, mock):
    body = chat_body("coalesced request id", mock={"latency_ms": 600})
    a, b = race(shared_gateway, body, {}, {})
    assert sorted([xcache(a), xcache(b)]) == ["COALESCED", "MISS"]
    for r in (a, b):
        assert "X-Request-Id" not in r.headers and "OpenAI-Organization" not in r.headers


def test_shared_scope_passes_retry_after_still(shared_gateway, mock):
    r = shared_gateway.chat(chat_body("busy", mock={"status": 429}))
    assert r.status_code == 429
    assert r.headers.get("Retry-After") == "1"
    assert "X-Request-Id" not in r.headers


def test_per_key_scope_keeps_the_clients_own_account_headers(gateway, mock):
    r = gateway.chat(chat_body("own account"), headers={"OpenAI-Organization": "org-mine"})
    assert r.status_code == 200
    assert r.headers["OpenAI-Organization"] == "org-mine"
    assert r.headers["X-Request-Id"].startswith("req_mock_")
    assert r.headers["X-RateLimit-Remaining-Requests"] == "9999"


def test_the_gateways_key_drops_account_headers_on_pass_through_too(shared_gateway, mock):
    r = shared_gateway.get("/v1/models")
    assert r.status_code == 200
    assert "OpenAI-Organization" not in r.headers and "X-Request-Id" not in r.headers
