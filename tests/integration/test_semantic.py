"""Issue 15: the semantic tier (--semantic on) in front of the mock model.

A chat question that is a near-duplicate of one answered before (case,
punctuation, filler, contraction, spelling) gets that answer, marked as a hit
from the semantic tier in Cache-Status; a hard negative (another entity,
number, negation, direction) and the same question under another system
prompt or model go to the model. The mock's answer echoes the question, so a
wrong hit would show in the body.

Decisions a newcomer would otherwise get wrong:
- The gateway holds the upstream key, so the cache scope is shared and the
  test's requests (no Authorization) all fall in one scope.
- A semantic hit says X-Cache: SEMANTIC-HIT, Cache-Status detail=semantic,
  X-Cache-Similarity (the cosine) and X-Cache-Matched-Key (the key the answer
  was stored under; X-Cache-Key stays the request's own).
"""

import json

from conftest import cache_status, chat_body, completion_body, embedding_body, wait_until

SYSTEM = "You answer in one word."


def ask(g, question, system=SYSTEM, model=None):
    body = chat_body(question) if model is None else chat_body(question, model=model)
    if system is not None:
        body["messages"].insert(0, {"role": "system", "content": system})
    r = g.chat(body)
    assert r.status_code == 200, r.text
    return r


def semantic_gateway(gateway_factory, mock, *args):
    return gateway_factory(mock, args=["--semantic", "on", *args],
                           env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})


def is_semantic_hit(r, matched=None):
    h = r.headers
    ok = h["X-Cache"] == "SEMANTIC-HIT" and cache_status(h).get("detail") == "semantic"
    sim = float(h.get("X-Cache-Similarity", "0"))
    ok = ok and 0.7 <= sim <= 1.0 and len(h.get("X-Cache-Matched-Key", "")) == 64
    # The answer was stored under the first question's key, not this one's.
    return ok and h["X-Cache-Matched-Key"] != h["X-Cache-Key"] and \
        (matched is None or h["X-Cache-Matched-Key"] == matched.headers["X-Cache-Key"])


def test_near_duplicates_hit_and_hard_negatives_miss(gateway_factory, mock):
    g = semantic_gateway(gateway_factory, mock)
    first = ask(g, "What is the capital of France?")
    assert first.headers["X-Cache"] == "MISS"

    for q in ["what is the capital of france",             # case, punctuation
              "What's the capital of France?",             # contraction
              "  What is   the capital of France ?",        # spacing
              "Hey, can you tell me what the capital of France is, please?"]:  # filler
        r = ask(g, q)
        assert is_semantic_hit(r, matched=first), (q, dict(r.headers))
        assert r.content == first.content, q

    # A streaming near-duplicate gets the matched answer replayed as SSE.
    body = chat_body("WHAT IS THE CAPITAL OF FRANCE", stream=True)
    body["messages"].insert(0, {"role": "system", "content": SYSTEM})
    with g.http.post(g.url + "/v1/chat/completions", json=body, stream=True, timeout=10) as r:
        assert r.status_code == 200 and is_semantic_hit(r, matched=first), dict(r.headers)
        assert r.headers["Content-Type"].startswith("text/event-stream")
        sse = r.content
    assert b"data: [DONE]" in sse
    answer = first.json()["choices"][0]["message"]["content"]
    assert json.dumps(answer)[1:-1].split(" ")[0].encode() in sse

    colour = ask(g, "What is the favourite colour of the French flag?")
    assert colour.headers["X-Cache"] == "MISS"
    r = ask(g, "what is the favorite color of the french flag")  # British/American
    assert is_semantic_hit(r) and r.content == colour.content

    for q in ["What is the capital of Germany?",               # entity
              "What is not the capital of France?",            # negation
              "What was the capital of France in 1900?",       # number, tense
              "What is the capital of \"France\"?"]:           # quoted string
        r = ask(g, q)
        assert r.headers["X-Cache"] == "MISS", (q, dict(r.headers))
        assert r.content != first.content, q

    translate = ask(g, "Translate English to French: good morning")
    assert translate.headers["X-Cache"] == "MISS"
    r = ask(g, "Translate French to English: good morning")    # direction
    assert r.headers["X-Cache"] == "MISS" and r.content != translate.content

    # Everything but the last question must be the same.
    r = ask(g, "what is the capital of france", system="You answer at length.")
    assert r.headers["X-Cache"] == "MISS"
    r = ask(g, "what is the capital of france", model="gpt-4o")
    assert r.headers["X-Cache"] == "MISS"

    st = g.stats()["tiers"]["semantic"]
    assert st["hits"] == 6, st
    assert st["stored"] >= 5, st
    # Each hard negative that came close enough was stopped by its guard.
    rej = st["rejected"]
    assert rej["negation"] >= 1 and rej["quotes"] >= 1 and rej["roles"] >= 1, st
    # The same wording again is an exact hit: the semantic hit left an alias
    # of the matched answer under its own key in the exact tier.
    lookups = g.stats()["tiers"]["semantic"]["lookups"]
    r = ask(g, "what is the capital of france")
    assert r.headers["X-Cache"] == "HIT" and r.content == first.content, dict(r.headers)
    assert "X-Cache-Similarity" not in r.headers
    assert g.stats()["tiers"]["semantic"]["lookups"] == lookups  # not asked at all


def test_off_by_default(gateway_factory, mock):
    g = gateway_factory(mock, env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})
    assert ask(g, "What is the capital of France?").headers["X-Cache"] == "MISS"
    assert ask(g, "what is the capital of france").headers["X-Cache"] == "MISS"
    assert "semantic" not in g.stats()["tiers"]


def test_a_request_can_refuse_similar_answers(gateway_factory, mock):
    g = semantic_gateway(gateway_factory, mock)
    first = ask(g, "How do I reverse a list in Python?")
    assert first.headers["X-Cache"] == "MISS"

    def body(q):
        b = chat_body(q)
        b["messages"].insert(0, {"role": "system", "content": SYSTEM})
        return b

    # Each a new wording (an exact hit would not ask the semantic tier at all).
    r = g.chat(body("how do I reverse a list in python"), headers={"X-Cache-Semantic": "off"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", dict(r.headers)
    r = g.chat(dict(body("How do I reverse a list in Python"), cache={"semantic": False}),
               headers={"X-Cache-Semantic": "on"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", dict(r.headers)
    r = g.chat(body("how do I reverse a list in Python!"), headers={"X-Cache-Semantic": "maybe"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cache_semantic"
    # Without a refusal a new wording is a semantic hit on the first answer.
    r = g.chat(body("how do i reverse a list in python??"), headers={"X-Cache-Semantic": "ON"})
    assert is_semantic_hit(r, matched=first), dict(r.headers)
    # A stricter threshold for one request: the reordered question is not close enough.
    first_py = ask(g, "In Python, how do I sort a dict by value?")
    r = g.chat(body("How do I sort a dict by value in Python?"),
               headers={"X-Cache-Semantic-Threshold": "0.999"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", dict(r.headers)
    # (The strict request's own answer was indexed: it is now the closest.)
    r = g.chat(body("how do I sort a dict by value in python"))
    assert is_semantic_hit(r) and r.headers["X-Cache-Matched-Key"] != first_py.headers["X-Cache-Key"]
    r = g.chat(body("In python, how do I sort a dict by value"),
               headers={"X-Cache-Semantic-Threshold": "0.5"})
    assert is_semantic_hit(r, matched=first_py), dict(r.headers)
    r = g.chat(body("how do I sort a dict by value in python!"),
               headers={"X-Cache-Semantic-Threshold": "2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cache_semantic"
    st = g.stats()["tiers"]["semantic"]
    assert st["declined"] == 2 and st["hits"] == 3 and st["below_threshold"] >= 1, st


def test_shadow_mode_serves_the_model_and_logs_the_would_be_hit(gateway_factory, mock):
    g = gateway_factory(mock, args=["--semantic", "shadow"],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})
    first = ask(g, "What is the capital of France?")
    r = ask(g, "what's the capital of france")
    assert r.headers["X-Cache"] == "MISS", dict(r.headers)      # the model answered
    r2 = ask(g, "What is not the capital of France?")
    assert r2.headers["X-Cache"] == "MISS"
    st = g.stats()["tiers"]["semantic"]
    assert st["hits"] == 0 and st["shadow"]["would_hit"] == 1, st
    # The mock's answer echoes the question, so the model's answer differed.
    assert st["shadow"]["agreed"] + st["shadow"]["disagreed"] == 1, st
    lines = [json.loads(l) for l in g.stderr().splitlines() if l.startswith("{\"")]
    would = [l for l in lines if l.get("semantic_shadow") == "would_hit"]
    assert len(would) == 1 and would[0]["matched"] == first.headers["X-Cache-Key"], lines
    assert would[0]["key"] == r.headers["X-Cache-Key"] and would[0]["similarity"] >= 0.7
    assert any(l.get("semantic_shadow") == "answered" for l in lines), lines
    assert any(l.get("semantic_shadow") == "rejected" and l["guard"] == "negation"
               for l in lines), lines


def test_ask_and_completions_prompts(gateway_factory, mock):
    g = semantic_gateway(gateway_factory, mock)
    a1 = g.get("/ask", params={"q": "What is the capital of France?"})
    assert a1.status_code == 200 and a1.headers["X-Cache"] == "MISS", a1.text
    a2 = g.get("/ask", params={"q": "what's the capital of france"})
    assert is_semantic_hit(a2, matched=a1), dict(a2.headers)
    assert a2.json()["answer"] == a1.json()["answer"] and a2.json()["source"] == "cache", a2.text
    a3 = g.get("/ask", params={"q": "What is the capital of Spain?"})
    assert a3.headers["X-Cache"] == "MISS" and a3.json()["answer"] != a1.json()["answer"]

    c1 = g.post("/v1/completions", completion_body("Write a haiku about the sea"))
    assert c1.status_code == 200 and c1.headers["X-Cache"] == "MISS", c1.text
    c2 = g.post("/v1/completions", completion_body("write a haiku about the sea, please"))
    assert is_semantic_hit(c2, matched=c1) and c2.content == c1.content, dict(c2.headers)
    c3 = g.post("/v1/completions", completion_body("Write a haiku about the sky"))
    assert c3.headers["X-Cache"] == "MISS"
    # Embeddings are never answered by similarity.
    e1 = g.post("/v1/embeddings", embedding_body("The food was delicious"))
    e2 = g.post("/v1/embeddings", embedding_body("the food was delicious"))
    assert e1.status_code == 200 and e2.headers["X-Cache"] == "MISS", dict(e2.headers)


def test_other_namespace_scope_or_earlier_turn_never_hits(gateway_factory, mock):
    # No upstream key: the scope is the client's credential.
    g = gateway_factory(mock, args=["--semantic", "on"])
    alice = {"Authorization": "Bearer sk-alice"}

    def chat(q, headers=None, before=()):
        body = chat_body(q)
        body["messages"][0:0] = list(before)
        r = g.chat(body, headers={**alice, **(headers or {})})
        assert r.status_code == 200, r.text
        return r

    first = chat("What is the capital of France?")
    assert is_semantic_hit(chat("what's the capital of france"), matched=first)
    assert chat("what's the capital of france?", {"Authorization": "Bearer sk-bob"}) \
        .headers["X-Cache"] == "MISS"                                   # another scope
    assert chat("what's the capital of France?!", {"X-Cache-Namespace": "team-b"}) \
        .headers["X-Cache"] == "MISS"                                   # another namespace
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert chat("What's the capital of France", before=turns).headers["X-Cache"] == "MISS"


def test_a_purge_removes_the_answers_from_the_semantic_tier(gateway_factory, mock):
    token = "semantic-purge-token"
    g = gateway_factory(mock, args=["--semantic", "on"],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-test", "LLMC_ADMIN_TOKEN": token})
    first = ask(g, "What is the capital of France?")
    assert is_semantic_hit(ask(g, "what's the capital of france"), matched=first)
    r = g.post("/admin/purge", {"model": "gpt-4o-mini"},
               headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["removed"]["semantic"] == 1, r.text
    assert ask(g, "WHAT IS THE CAPITAL OF FRANCE").headers["X-Cache"] == "MISS"
    assert g.stats(headers={"Authorization": f"Bearer {token}"})["tiers"]["semantic"]["purged"] == 1


def test_an_alias_is_an_exact_hit_and_goes_with_its_original(gateway_factory, mock):
    token = "semantic-alias-token"
    g = gateway_factory(mock, args=["--semantic", "on"],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-test", "LLMC_ADMIN_TOKEN": token})
    admin = {"Authorization": f"Bearer {token}"}
    first = ask(g, "What is the capital of France?")
    near = ask(g, "what's the capital of france")
    assert is_semantic_hit(near, matched=first), dict(near.headers)
    again = ask(g, "what's the capital of france")
    assert again.headers["X-Cache"] == "HIT" and again.content == first.content
    assert again.headers["X-Cache-Key"] == near.headers["X-Cache-Key"]

    # A key purge of the original takes the alias with it: the same wording
    # goes to the model again.
    r = g.http.delete(g.url + "/admin/cache/" + first.headers["X-Cache-Key"], headers=admin,
                      timeout=10)
    assert r.status_code == 200, r.text
    after = ask(g, "what's the capital of france")
    assert after.headers["X-Cache"] == "MISS", dict(after.headers)
    # The original's wording now finds the new answer, not the purged one.
    assert is_semantic_hit(ask(g, "What is the capital of France?"), matched=after)

    # A purge by selector (a tag) takes an alias too: it carries the tags.
    def tagged(q):
        b = chat_body(q)
        b["messages"].insert(0, {"role": "system", "content": SYSTEM})
        r = g.chat(b, headers={"X-Cache-Tags": "geo"})
        assert r.status_code == 200, r.text
        return r
    t1 = tagged("What is the largest city in Japan?")
    assert is_semantic_hit(tagged("what's the largest city in japan"), matched=t1)
    assert tagged("what's the largest city in japan").headers["X-Cache"] == "HIT"
    r = g.post("/admin/purge", {"tag": "geo"}, headers=admin)
    assert r.status_code == 200, r.text
    assert tagged("what's the largest city in japan").headers["X-Cache"] == "MISS"


def test_a_restart_keeps_semantic_hits_and_a_purge_takes_them(gateway_factory, mock, tmp_path):
    data = str(tmp_path / "data")
    token = "semantic-restart-token"
    env = {"LLMC_UPSTREAM_KEY": "sk-gateway-test", "LLMC_ADMIN_TOKEN": token}
    admin = {"Authorization": f"Bearer {token}"}

    def start():
        return gateway_factory(mock, args=["--semantic", "on", "--data-dir", data], env=env)

    def restart(g, stored, restored):
        wait_until(lambda: g.stats(headers=admin)["tiers"]["disk"]["stored"] >= stored, timeout=10,
                   what="the answers committed to disk")
        g.must_survive = False
        assert g.stop() is None
        g2 = start()
        wait_until(lambda: g2.stats(headers=admin)["tiers"]["semantic"]["restored"] >= restored,
                   timeout=10, what="the questions indexed again")
        return g2

    g = start()
    first = ask(g, "What is the capital of France?")
    sky = ask(g, "Why is the sky blue?")
    assert first.headers["X-Cache"] == "MISS" and sky.headers["X-Cache"] == "MISS"

    g = restart(g, 2, 2)
    st = g.stats(headers=admin)["tiers"]["semantic"]
    assert st["restored"] == 2 and st["entries"] == 2, st
    r = ask(g, "what's the capital of france")    # a wording never seen before the restart
    assert is_semantic_hit(r, matched=first) and r.content == first.content, dict(r.headers)
    assert ask(g, "What is the capital of Spain?").headers["X-Cache"] == "MISS"
    wait_until(lambda: g.stats(headers=admin)["tiers"]["semantic"]["entries"] == 3, timeout=10,
               what="Spain indexed")

    # A purge takes the answer off disk, so the next start does not index it again.
    r = g.http.delete(g.url + "/admin/cache/" + first.headers["X-Cache-Key"], headers=admin,
                      timeout=10)
    assert r.status_code == 200, r.text
    g = restart(g, 1, 2)
    st = g.stats(headers=admin)["tiers"]["semantic"]
    assert st["restored"] == 2, st   # the sky, Spain: not France
    r = ask(g, "what is the capital of france??")
    assert r.headers["X-Cache"] == "MISS", dict(r.headers)
    assert is_semantic_hit(ask(g, "why is the sky blue"), matched=sky)


# ---- the openai embedder, against a second mock's /v1/embeddings -------------------------

def openai_gateway(gateway_factory, mock, embed, *args):
    return gateway_factory(mock, args=["--semantic", "on", "--semantic-embedder", "openai",
                                       "--embed-url", embed, "--embed-model", "mock-embedding",
                                       *args],
                           env={"LLMC_UPSTREAM_KEY": "sk-gateway-test", "LLMC_EMBED_KEY": "sk-e"})


def test_openai_embedder_asks_the_endpoint_once_per_text(gateway_factory, mock, mock_factory):
    emb = mock_factory()
    g = openai_gateway(gateway_factory, mock, emb.url)
    first = ask(g, "What is the capital of France?")
    assert first.headers["X-Cache"] == "MISS"
    assert emb.calls("embeddings") == 1 and mock.calls("embeddings") == 0
    # The mock's vectors are hashes of the text: another wording is far away.
    r = ask(g, "what is the capital of france")
    assert r.headers["X-Cache"] == "MISS"
    assert emb.calls("embeddings") == 2
    # The same text in another namespace: its own partition, but the text's
    # embedding is cached, so no call.
    body = chat_body("What is the capital of France?")
    body["messages"].insert(0, {"role": "system", "content": SYSTEM})
    r = g.chat(body, headers={"X-Cache-Namespace": "other"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert emb.calls("embeddings") == 2
    st = g.stats()["tiers"]["semantic"]
    assert st["lookups"] == 3 and st["misses"] == 3 and st["stored"] == 3, st
    assert st["embed"]["errors"] == 0 and st["embed"]["timeouts"] == 0, st


def test_openai_embedder_batches_concurrent_lookups(gateway_factory, mock, mock_factory):
    import concurrent.futures
    emb = mock_factory()
    # A wide window, within a wait long enough for it and the call (a
    # sanitized build's first call takes more than the default 250 ms leaves).
    g = openai_gateway(gateway_factory, mock, emb.url, "--semantic-batch-ms", "1000",
                       "--semantic-timeout-ms", "10000")
    qs = [f"Tell me a fact about the number {n}" for n in range(12)]
    with concurrent.futures.ThreadPoolExecutor(len(qs)) as ex:
        rs = list(ex.map(lambda q: ask(g, q), qs))
    assert all(r.headers["X-Cache"] == "MISS" for r in rs)
    # Twelve lookups, one call per worker thread (two) at most.
    assert 1 <= emb.calls("embeddings") <= 2, emb.stats()
    assert g.stats()["tiers"]["semantic"]["lookups"] == 12


def test_a_batch_window_as_long_as_the_wait_is_refused_at_start(mock):
    """--semantic-batch-ms is part of each lookup's --semantic-timeout-ms: a
    window that fills the wait would make every lookup a timeout."""
    import subprocess
    from conftest import _clean_env, free_port, llmc_bin
    p = subprocess.run([llmc_bin(), "--listen", f"127.0.0.1:{free_port()}", "--upstream", mock.url,
                        "--semantic", "on", "--semantic-embedder", "openai", "--embed-url",
                        mock.url, "--semantic-batch-ms", "300", "--semantic-timeout-ms", "250"],
                       capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL,
                       env=_clean_env({}))
    assert p.returncode == 1, p.stderr
    assert "--semantic-batch-ms (300) must be shorter than --semantic-timeout-ms (250)" in p.stderr


def test_openai_embedder_timeout_and_errors_are_misses(gateway_factory, mock, mock_factory):
    slow = mock_factory(latency_ms=1500)
    g = openai_gateway(gateway_factory, mock, slow.url, "--semantic-timeout-ms", "100")
    r = ask(g, "What is the capital of France?")
    assert r.headers["X-Cache"] == "MISS" and r.elapsed.total_seconds() < 1.2
    st = g.stats()["tiers"]["semantic"]
    assert st["embed"]["timeouts"] == 1 and st["misses"] == 1, st

    # An endpoint that answers 404 (no such route) and one that is not there.
    for url in [mock.base + "/nowhere", "http://127.0.0.1:1/v1"]:
        g2 = openai_gateway(gateway_factory, mock, url)
        r = ask(g2, "What is the capital of Spain?")
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        st = g2.stats()["tiers"]["semantic"]
        assert st["embed"]["errors"] == 1 and st["hits"] == 0, st


def test_openai_embedder_serves_a_semantic_hit(gateway_factory, mock):
    """A stand-in embeddings server whose vectors are bags of lower-cased
    words, so that two wordings of one question get one vector: the hit goes
    through the remote path (and its guards) end to end."""
    import http.server
    import math
    import re
    import threading

    seen = []

    class Embeddings(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), req["model"]))
            data = []
            for i, text in enumerate(req["input"]):
                v = [0.0] * 64
                for w in re.findall(r"[a-z0-9]+", text.lower()):
                    v[sum(w.encode()) % 64] += 1.0
                n = math.sqrt(sum(x * x for x in v)) or 1.0
                data.append({"object": "embedding", "index": i, "embedding": [x / n for x in v]})
            out = json.dumps({"object": "list", "data": data, "model": req["model"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        g = openai_gateway(gateway_factory, mock, f"http://127.0.0.1:{srv.server_port}/v1")
        first = ask(g, "What is the capital of France?")
        assert first.headers["X-Cache"] == "MISS"
        r = ask(g, "what is the capital of france")
        assert is_semantic_hit(r, matched=first) and r.content == first.content, dict(r.headers)
        # The guards judge remote candidates too: the same words, negated.
        r = ask(g, "What is not the capital of France?")
        assert r.headers["X-Cache"] == "MISS", dict(r.headers)
        assert seen[0] == ("/v1/embeddings", "Bearer sk-e", "mock-embedding"), seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_openai_embedder_restart_reuses_stored_vectors(gateway_factory, mock, mock_factory,
                                                       tmp_path):
    """The vectors are stored with the questions: a restart indexes them
    again without one embeddings call, and they still match. The mock's
    vectors are hashes of the text, so the match is the same text in the
    same partition under another key (its content as a list of text parts)."""
    emb = mock_factory()
    data = str(tmp_path / "data")
    token = "semantic-openai-restart"
    admin = {"Authorization": f"Bearer {token}"}
    args = ["--semantic", "on", "--semantic-embedder", "openai", "--embed-url", emb.url,
            "--embed-model", "mock-embedding", "--data-dir", data]
    env = {"LLMC_UPSTREAM_KEY": "sk-gateway-test", "LLMC_EMBED_KEY": "sk-e",
           "LLMC_ADMIN_TOKEN": token}
    g = gateway_factory(mock, args=args, env=env)
    first = ask(g, "What is the capital of France?")
    sky = ask(g, "Why is the sky blue?")
    assert first.headers["X-Cache"] == "MISS" and sky.headers["X-Cache"] == "MISS"
    wait_until(lambda: g.stats(headers=admin)["tiers"]["disk"]["stored"] >= 2, timeout=10,
               what="the answers committed to disk")
    assert emb.calls("embeddings") == 2
    g.must_survive = False
    assert g.stop() is None

    g = gateway_factory(mock, args=args, env=env)
    wait_until(lambda: g.stats(headers=admin)["tiers"]["semantic"]["restored"] >= 2, timeout=10,
               what="the questions indexed again")
    st = g.stats(headers=admin)["tiers"]["semantic"]
    assert st["restored"] == 2 and st["restore"]["reembedded"] == 0, st
    assert emb.calls("embeddings") == 2   # the restart asked for nothing

    body = chat_body([{"type": "text", "text": "What is the capital of France?"}])
    body["messages"].insert(0, {"role": "system", "content": SYSTEM})
    r = g.chat(body)
    assert r.status_code == 200, r.text
    assert is_semantic_hit(r, matched=first) and r.content == first.content, dict(r.headers)
    assert emb.calls("embeddings") == 3   # this lookup's own question, nothing more
