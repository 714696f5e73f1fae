"""Issue 14: browser-borne requests: DNS rebinding (Host), cross-site scripts (Origin,
CORS) and cross-site requests without scripts (GET /ask from an <img>).

Decisions a newcomer would otherwise get wrong:
- requests sends the Host header a test gives instead of its own, which is how a
  test plays a page whose name was rebound to 127.0.0.1.
- Browsers send Origin from scripts, and Sec-Fetch-Site on every request; programs
  (SDKs, curl) send neither, so every other test file runs untouched.
"""

import pytest

from conftest import assert_error_shape, chat_body, free_port

CHAT = "/v1/chat/completions"
EXPOSED = ("X-Cache", "X-Cache-Key", "Age")


def ask(g, headers):
    return g.get("/ask?q=what+is+two+plus+two", headers=headers)


# ------------------------------------------------------------------ Host

@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example",
                                  "127.0.0.1.nip.io:{port}"])
def test_a_rebound_host_name_is_refused_on_loopback(gateway, mock, host):
    h = {"Host": host.format(port=gateway.port)}
    r = gateway.chat(chat_body("rebinding"), headers=h)
    assert r.status_code == 421, r.text
    assert assert_error_shape(r)["code"] == "host_not_allowed"
    assert ask(gateway, h).status_code == 421
    assert mock.calls() == 0


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}",
                                  "LocalHost:1", "[::1]:{port}"])
def test_local_names_are_taken_on_loopback(gateway, mock, host):
    r = gateway.chat(chat_body("local"), headers={"Host": host.format(port=gateway.port)})
    assert r.status_code == 200, r.text


def test_allowed_host_adds_names(gateway_factory, mock):
    g = gateway_factory(mock, args=["--allowed-host", "my-box", "--allowed-host", "llm.lan:8443"])
    assert g.chat(chat_body("a"), headers={"Host": "my-box:1234"}).status_code == 200
    assert g.chat(chat_body("a"), headers={"Host": "llm.lan:8443"}).status_code == 200
    assert g.chat(chat_body("a"), headers={"Host": "llm.lan:80"}).status_code == 421
    assert g.get("/healthz", headers={"Host": "localhost"}).status_code == 200


def test_other_listeners_take_any_host_unless_told(gateway_factory, mock):
    port = free_port()
    g = gateway_factory(mock, args=["--listen", f"0.0.0.0:{port}"], port=port)
    assert g.chat(chat_body("lb"), headers={"Host": "llm.corp.example"}).status_code == 200
    port = free_port()
    # (127.0.0.1 is listed for the fixture's own readiness check.)
    g = gateway_factory(mock, args=["--listen", f"0.0.0.0:{port}", "--allowed-host",
                                    "llm.corp.example,127.0.0.1"], port=port)
    assert g.chat(chat_body("lb"), headers={"Host": "llm.corp.example"}).status_code == 200
    r = g.chat(chat_body("lb"), headers={"Host": "other.example"})
    assert r.status_code == 421
    assert g.chat(chat_body("lb"), headers={"Host": "localhost"}).status_code == 421


# ------------------------------------------------------------------ Origin and CORS

def test_a_foreign_origin_is_refused_before_any_call(gateway, mock):
    h = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    r = gateway.chat(chat_body("csrf"), headers=h)
    assert r.status_code == 403
    assert assert_error_shape(r)["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in r.headers
    assert ask(gateway, h).status_code == 403
    # Pass-through routes too: nothing reaches the upstream.
    assert gateway.get("/v1/models", headers=h).status_code == 403
    assert mock.calls() == 0


def test_the_gateways_own_origin_passes(gateway, mock):
    own = f"http://127.0.0.1:{gateway.port}"
    r = gateway.chat(chat_body("own page"), headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    assert "Access-Control-Allow-Origin" not in r.headers


def test_an_allowed_origin_gets_cors_headers(gateway_factory, mock):
    g = gateway_factory(mock, args=["--cors-origin", "http://localhost:3000"])
    h = {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"}
    body = chat_body("cors")
    for want in ("MISS", "HIT"):
        r = g.chat(body, headers=h)
        assert r.status_code == 200 and r.headers["X-Cache"] == want
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "Origin" in [v.strip() for v in r.headers["Vary"].split(",")]
        exposed = [v.strip() for v in r.headers["Access-Control-Expose-Headers"].split(",")]
        assert all(x in exposed for x in EXPOSED), exposed
        assert "Access-Control-Allow-Credentials" not in r.headers
    # Errors the gateway answers itself carry them too, so the page can read them.
    r = g.post(CHAT, data=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    # Another port of the same host is another origin.
    assert g.chat(body, headers={"Origin": "http://localhost:3001"}).status_code == 403


def test_a_preflight_is_answered_here_never_upstream(gateway_factory, mock):
    g = gateway_factory(mock, args=["--cors-origin", "http://localhost:3000"])
    for path in (CHAT, "/v1/echo/files"):
        r = g.http.options(g.url + path, timeout=10, headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
        assert r.status_code == 204, r.text
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
        assert r.headers["Access-Control-Allow-Headers"] == \
            "authorization, content-type, x-stainless-os"
        assert int(r.headers["Access-Control-Max-Age"]) > 0
    r = g.http.options(g.url + CHAT, timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    assert mock.calls() == 0


def test_star_allows_every_origin(gateway_factory, mock):
    g = gateway_factory(mock, args=["--cors-origin", "*"])
    r = g.chat(chat_body("star"), headers={"Origin": "https://anyone.example"})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_a_bad_cors_origin_stops_start_up(gateway_factory, mock):
    g = gateway_factory(mock, args=["--cors-origin", "localhost:3000"], wait=False)
    g.must_survive = False
    assert g.proc.wait(timeout=10) != 0
    assert "--cors-origin" in g.stderr()


# ------------------------------------------------------------------ no scripts: GET /ask

@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_ask_from_another_sites_page_makes_no_paid_call(gateway, mock, site):
    """<img src="http://localhost:8080/ask?q=..."> sends no Origin."""
    r = ask(gateway, {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors"})
    assert r.status_code == 403
    assert assert_error_shape(r)["code"] == "cross_site_request"
    assert mock.calls() == 0


def test_ask_typed_into_the_address_bar_works(gateway, mock):
    r = ask(gateway, {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"})
    assert r.status_code == 200, r.text
    assert mock.calls() == 1
