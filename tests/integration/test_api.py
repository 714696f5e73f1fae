"""Issue 13: API coverage: errors a retry cannot fix say so, every other /v1
route is passed through, and usage on every hit.

Decisions a newcomer would otherwise get wrong:
- X-Should-Retry is not a standard header, but the official OpenAI SDKs obey
  it before their own rules (which retry every 5xx, 408, 409 and 429): a 504
  for only-if-cached without it costs the client two more requests and
  seconds of backoff.
"""

import pytest

from conftest import RawConn, assert_error_shape, chat_body, http_request

CHAT = "/v1/chat/completions"


def xcache(r):
    return r.headers.get("X-Cache")


# ------------------------------------------------------------ X-Should-Retry

def test_only_if_cached_miss_says_not_to_retry(gateway, mock):
    r = gateway.chat(chat_body("never asked"), headers={"Cache-Control": "only-if-cached"})
    assert_error_shape(r, 504)
    assert r.headers.get("X-Should-Retry") == "false", dict(r.headers)
    assert mock.stats()["calls"] == 0


@pytest.mark.parametrize("name,method,path,data,headers,status", [
    ("bad-json", "POST", CHAT, b"{not json", {"Content-Type": "application/json"}, 400),
    ("bad-ttl", "POST", CHAT, b'{"model":"m","messages":[]}',
     {"Content-Type": "application/json", "X-Cache-TTL": "banana"}, 400),
    ("not-found", "GET", "/nope", None, {}, 404),
    ("method", "POST", "/ask?q=hi", b"{}", {"Content-Type": "application/json"}, 405),
])
def test_gateway_errors_a_retry_cannot_fix_say_so(gateway, mock, name, method, path, data,
                                                  headers, status):
    r = gateway.http.request(method, gateway.url + path, data=data, headers=headers, timeout=10)
    assert_error_shape(r, status)
    assert r.headers.get("X-Should-Retry") == "false", dict(r.headers)


@pytest.mark.parametrize("name,raw,status", [
    ("413", f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 99999999\r\n\r\n".encode(), 413),
    ("431", http_request("POST", CHAT, chat_body(), {"X-Pad": "a" * 40000}), 431),
    ("414", http_request("GET", "/ask?q=" + "x" * 40000), 414),
    ("400-framing", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                    b"Content-Length: 3\r\n\r\n{}", 400),
])
def test_server_refusals_a_retry_cannot_fix_say_so(gateway, mock, name, raw, status):
    with RawConn(gateway.port) as c:
        try:
            c.send(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        st, hdrs, body = c.read_response()
    assert st == status, (st, body[:200])
    assert_error_shape(body)
    assert hdrs.get("x-should-retry") == "false", hdrs


def test_errors_a_retry_may_fix_leave_the_sdk_its_rules(gateway_factory):
    """An upstream that is down is 502: the SDK's retry is right there."""
    from conftest import free_port
    g = gateway_factory(f"http://127.0.0.1:{free_port()}/v1")
    r = g.chat(chat_body("upstream down"))
    assert_error_shape(r, 502)
    assert "X-Should-Retry" not in r.headers, dict(r.headers)
