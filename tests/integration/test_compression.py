"""Issue 18: compression on the wire.

A client whose Accept-Encoding takes gzip or zstd gets an answer above
--compress-min in that coding, with Vary: Accept-Encoding and an ETag of
its own (the identity tag with the coding's name inside the quotes); an
identity client gets identity. The compressed form is built once per entry
and kept as a derived entry: the gateway's counters show how many forms
were built (encodings_built) and how many answers went out compressed
(encoded_answers). Streams are not compressed.
"""

import gzip
import http.client
import json
import shutil
import subprocess

import pytest

from conftest import chat_body, embedding_body, read_stream, session

EMB = "/v1/embeddings"
CHAT = "/v1/chat/completions"


def big_embedding(text="compress this answer"):
    return embedding_body(text, dimensions=512)  # about 10 KB of numbers


def post(gateway, path, body, accept=None, headers=None):
    h = dict(headers or {})
    if accept is not None:
        h["Accept-Encoding"] = accept
    return session().post(gateway.url + path, json=body, headers=h, timeout=10)


def raw_post(gateway, path, body, accept, headers=None):
    """A client that never decodes: the bytes as they came, and the headers."""
    c = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    h = {"Content-Type": "application/json", "Accept-Encoding": accept, **(headers or {})}
    c.request("POST", path, json.dumps(body), h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def vary(r):
    return [v.strip().lower() for v in r.headers.get("Vary", "").split(",")]


def counters(gateway):
    s = gateway.stats()
    return s["encodings_built"], s["encoded_answers"]


def test_gzip_client_gets_the_identity_body_compressed_once(gateway, mock):
    body = big_embedding()
    ident = post(gateway, EMB, body, accept="identity")
    assert ident.status_code == 200 and ident.headers["X-Cache"] == "MISS"
    assert "Content-Encoding" not in ident.headers
    assert "accept-encoding" in vary(ident)  # identity too: the answer depends on it
    assert len(ident.content) > 4096

    r, raw = raw_post(gateway, EMB, body, "gzip")
    assert r.status == 200 and r.getheader("X-Cache") == "HIT"
    assert r.getheader("Content-Encoding") == "gzip"
    assert "accept-encoding" in [v.strip().lower() for v in r.getheader("Vary").split(",")]
    assert raw[:2] == b"\x1f\x8b" and len(raw) < len(ident.content) / 2
    assert int(r.getheader("Content-Length")) == len(raw)
    assert gzip.decompress(raw) == ident.content
    itag = ident.headers["ETag"]
    assert r.getheader("ETag") == itag[:-1] + '-gzip"'
    assert counters(gateway) == (1, 1)

    # requests decodes gzip by itself: the same bytes as identity.
    again = post(gateway, EMB, body)  # requests sends "gzip, deflate"
    assert again.headers["Content-Encoding"] == "gzip" and again.content == ident.content
    # The second gzip hit was served from the derived entry: nothing built.
    assert counters(gateway) == (1, 2)
    assert mock.stats()["embeddings"] == 1


def test_a_gzip_miss_is_compressed_and_its_form_kept(gateway, mock):
    body = big_embedding("gzip from the start")
    r, raw = raw_post(gateway, EMB, body, "gzip, deflate, br")
    assert r.getheader("X-Cache") == "MISS" and r.getheader("Content-Encoding") == "gzip"
    r2, raw2 = raw_post(gateway, EMB, body, "gzip")
    assert r2.getheader("X-Cache") == "HIT" and raw2 == raw
    assert r2.getheader("ETag") == r.getheader("ETag")
    assert counters(gateway) == (1, 2)
    ident = post(gateway, EMB, body, accept="identity")
    assert gzip.decompress(raw) == ident.content


@pytest.mark.skipif(not shutil.which("zstd"), reason="no zstd command to decode with")
def test_zstd_client(gateway, mock):
    body = big_embedding("zstd please")
    ident = post(gateway, EMB, body, accept="identity")
    r, raw = raw_post(gateway, EMB, body, "gzip, deflate, br, zstd")  # a browser's: zstd wins
    assert r.getheader("Content-Encoding") == "zstd"
    assert r.getheader("ETag") == ident.headers["ETag"][:-1] + '-zstd"'
    out = subprocess.run(["zstd", "-d", "-c"], input=raw, capture_output=True, check=True).stdout
    assert out == ident.content
    r, raw_gz = raw_post(gateway, EMB, body, "zstd;q=0.5, gzip")
    assert r.getheader("Content-Encoding") == "gzip" and gzip.decompress(raw_gz) == ident.content


def test_etag_per_encoding_revalidates_apart(gateway, mock):
    body = big_embedding("revalidate me")
    ident = post(gateway, EMB, body, accept="identity")
    gz, _ = raw_post(gateway, EMB, body, "gzip")
    gtag, itag = gz.getheader("ETag"), ident.headers["ETag"]
    assert gtag != itag
    r, data = raw_post(gateway, EMB, body, "gzip", {"If-None-Match": gtag})
    assert r.status == 304 and data == b"" and r.getheader("ETag") == gtag
    r, data = raw_post(gateway, EMB, body, "gzip", {"If-None-Match": itag})
    assert r.status == 200 and r.getheader("Content-Encoding") == "gzip"
    r = post(gateway, EMB, body, accept="identity", headers={"If-None-Match": itag})
    assert r.status_code == 304


def test_small_answers_and_streams_are_not_compressed(gateway, mock):
    small = chat_body("a short answer")
    post(gateway, CHAT, small)
    r, raw = raw_post(gateway, CHAT, small, "gzip")
    assert r.getheader("X-Cache") == "HIT" and r.getheader("Content-Encoding") is None
    assert len(raw) < 1024 and "accept-encoding" not in r.getheader("Vary").lower()
    json.loads(raw)

    big = chat_body("a long answer", mock={"bytes": 4000})
    first = post(gateway, CHAT, big, accept="gzip")
    assert first.headers["Content-Encoding"] == "gzip"
    status, sse = read_stream(gateway.url + CHAT, dict(big, stream=True))
    assert status == 200 and sse.rstrip().endswith(b"data: [DONE]")  # raw bytes: not gzip
    c = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    c.request("POST", CHAT, json.dumps(dict(big, stream=True)),
              {"Content-Type": "application/json", "Accept-Encoding": "gzip"})
    r = c.getresponse()
    assert r.getheader("Content-Encoding") is None
    assert r.read().rstrip().endswith(b"data: [DONE]")
    c.close()


def test_compress_off(gateway_factory, mock):
    g = gateway_factory(mock, args=["--compress", "off"])
    body = big_embedding("never compressed")
    post(g, EMB, body)
    r, raw = raw_post(g, EMB, body, "gzip, zstd")
    assert r.getheader("X-Cache") == "HIT" and r.getheader("Content-Encoding") is None
    assert "accept-encoding" not in r.getheader("Vary").lower()
    json.loads(raw)
    assert counters(g) == (0, 0)


def test_an_upstream_that_sends_gzip_is_decoded_as_it_arrives(gateway, mock):
    body = chat_body("the model answers gzip", mock={"gzip": True, "bytes": 3000})
    # The mock does compress when asked (a client that never decodes sees it).
    c = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    c.request("POST", "/v1/chat/completions", json.dumps(body),
              {"Content-Type": "application/json", "Accept-Encoding": "gzip"})
    r = c.getresponse()
    direct = r.read()
    c.close()
    assert r.getheader("Content-Encoding") == "gzip"
    answer = json.loads(gzip.decompress(direct))
    # The gateway asked for it compressed, decoded it, stored the JSON: an
    # identity client gets plain JSON, miss and hit alike.
    for want in ("MISS", "HIT"):
        r, raw = raw_post(gateway, CHAT, body, "identity")
        assert r.status == 200 and r.getheader("X-Cache") == want
        assert r.getheader("Content-Encoding") is None
        got = json.loads(raw)
        assert got["choices"][0]["message"]["content"] == answer["choices"][0]["message"]["content"]
    # And a gzip client gets the gateway's own gzip of it.
    r, raw = raw_post(gateway, CHAT, body, "gzip")
    assert r.getheader("Content-Encoding") == "gzip" and json.loads(gzip.decompress(raw)) == got
    assert gateway.stats()["upstream_errors"]["invalid"] == 0


# ------------------------------------------------- compression at rest

import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import zlib  # noqa: E402

from conftest import wait_until  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import corpus  # noqa: E402  (bench/corpus.py: realistic answers)


def corpus_answers(n, seed):
    """Chat answers, a tenth of them tool calls (embeddings go to their own route)."""
    rng = random.Random(seed)
    text = corpus.Text(rng, set())
    return [corpus.tool_call(rng, text) if i % 10 == 9 else corpus.chat(rng, text)
            for i in range(n)]


def disk(g):
    return g.stats()["tiers"]["disk"]


def zstd_decode(data):
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout


def test_compressed_entries_survive_a_restart_and_decode_alike(gateway_factory, mock, tmp_path):
    """Answers stored compressed (plain zstd, then under a dictionary trained
    in the background from the first 20) are disk hits after a restart, byte
    for byte; identity, gzip and zstd clients decode to the same body; the
    disk tier's byte counters show what compression saved."""
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "--compress-dict-samples", "20",
            "--compress-dict-retrain", "0"]
    g = gateway_factory(mock, args=args)
    answers = corpus_answers(60, seed=1818)
    reqs = [chat_body(f"at rest {i}", mock={"body": a}) for i, a in enumerate(answers)]
    got = {}
    for i, b in enumerate(reqs[:30]):
        r = post(g, CHAT, b, accept="identity")
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.text
        got[i] = r.content
    wait_until(lambda: disk(g)["stored"] >= 30, timeout=10, what="30 entries on disk")
    # The dictionary is trained off the loop and kept beside the data file.
    wait_until(lambda: (data / "zdict-1").exists(), timeout=20, what="a trained dictionary")
    for i, b in enumerate(reqs[30:], start=30):
        r = post(g, CHAT, b, accept="identity")
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.text
        got[i] = r.content
    wait_until(lambda: disk(g)["stored"] >= 60, timeout=10, what="60 entries on disk")
    d = disk(g)
    assert d["stored_packed_bytes"] * 2 < d["stored_raw_bytes"], d
    assert d["stored_raw_bytes"] >= sum(len(c) for c in got.values()), d
    metrics = session().get(g.url + "/metrics", timeout=10).text
    assert "stored_raw_bytes" in metrics and "stored_packed_bytes" in metrics
    g.must_survive = False
    assert g.stop() is None

    g2 = gateway_factory(mock, args=args)
    calls = mock.stats()["chat"]
    for i, b in enumerate(reqs):
        r, raw = raw_post(g2, CHAT, b, "identity")
        assert r.status == 200 and r.getheader("X-Cache") == "HIT", (i, r.getheaders())
        assert raw == got[i], f"answer {i} changed across the restart"
        r, gz = raw_post(g2, CHAT, b, "gzip")
        assert r.getheader("X-Cache") == "HIT"
        plain = gzip.decompress(gz) if r.getheader("Content-Encoding") == "gzip" else gz
        assert plain == got[i]
        if shutil.which("zstd"):
            r, zs = raw_post(g2, CHAT, b, "zstd")
            plain = zstd_decode(zs) if r.getheader("Content-Encoding") == "zstd" else zs
            assert plain == got[i]
    assert mock.stats()["chat"] == calls, "every answer must come from the disk tier"
    assert disk(g2)["hits"] >= 60


def test_compress_at_rest_off_stores_answers_as_they_are(gateway_factory, mock, tmp_path):
    data = tmp_path / "data"
    g = gateway_factory(mock, args=["--data-dir", str(data), "--compress-at-rest", "off"])
    for i, a in enumerate(corpus_answers(5, seed=7)):
        assert post(g, CHAT, chat_body(f"raw {i}", mock={"body": a})).status_code == 200
    wait_until(lambda: disk(g)["stored"] >= 5, timeout=10, what="5 entries on disk")
    d = disk(g)
    assert d["stored_raw_bytes"] == d["stored_packed_bytes"] > 0, d
    assert not list(data.glob("zdict-*"))


def memory(g):
    return g.stats()["tiers"]["memory"]


def decoded(gateway, body, accept):
    """The body a client with accept gets, decoded, and whether it was a hit."""
    r, data = raw_post(gateway, CHAT, body, accept)
    assert r.status == 200, data
    enc = r.getheader("Content-Encoding")
    if enc == "gzip":
        data = gzip.decompress(data)
    elif enc == "zstd":
        data = zstd_decode(data)
    return data, r.getheader("X-Cache") == "HIT"


def test_memory_tier_keeps_answers_compressed_and_serves_them_byte_identical(gateway_factory, mock):
    """Without a disk tier the memory tier stores answers zstd-compressed
    (under a dictionary trained from the first 20); every hit, identity,
    gzip or zstd, decodes to the body of the miss; the first hit on an
    answer decompresses it, the next ones are served from its hot copy."""
    g = gateway_factory(mock, args=["--data-dir", "none", "--compress-dict-samples", "20",
                                    "--compress-dict-retrain", "0"])
    answers = corpus_answers(50, seed=1819)
    reqs = [chat_body(f"in memory {i}", mock={"body": a}) for i, a in enumerate(answers)]
    got = []
    for b in reqs:
        r, raw = raw_post(g, CHAT, b, "identity")
        assert r.status == 200 and r.getheader("X-Cache") == "MISS"
        got.append(raw)
    m = memory(g)
    assert m["packed_bytes"] * 2 < m["raw_bytes"], m
    assert m["cold_unpacks"] == 0 and m["hot_entries"] == 0
    accepts = ["identity", "gzip"] + (["zstd"] if shutil.which("zstd") else [])
    for i, b in enumerate(reqs):
        for accept in accepts:
            data, hit = decoded(g, b, accept)
            assert hit and data == got[i], (i, accept)
    m = memory(g)
    assert m["cold_unpacks"] == len(reqs), m       # once per answer
    assert m["hot_hits"] >= len(reqs) * (len(accepts) - 1), m
    assert m["hot_entries"] == len(reqs) and 0 < m["hot_bytes"] <= m["hot_max_bytes"], m
    assert m["bytes"] <= m["max_bytes"]
    assert mock.stats()["chat"] == len(reqs)


def test_memory_compressed_entries_across_a_restart(gateway_factory, mock, tmp_path):
    """After a restart, answers come from the disk tier, are promoted into
    memory compressed, and memory hits (cold, then hot) stay byte-identical."""
    args = ["--data-dir", str(tmp_path / "data"), "--compress-dict-samples", "10",
            "--compress-dict-retrain", "0"]
    g = gateway_factory(mock, args=args)
    reqs = [chat_body(f"restart {i}", mock={"body": a})
            for i, a in enumerate(corpus_answers(20, seed=1820))]
    got = [raw_post(g, CHAT, b, "identity")[1] for b in reqs]
    wait_until(lambda: disk(g)["stored"] >= len(reqs), timeout=10, what="entries on disk")
    g.must_survive = False
    assert g.stop() is None

    g2 = gateway_factory(mock, args=args)
    calls = mock.stats()["chat"]
    for round_ in range(3):  # disk hits, then cold memory hits, then hot ones
        for i, b in enumerate(reqs):
            for accept in ["identity", "gzip"]:
                data, hit = decoded(g2, b, accept)
                assert hit and data == got[i], (round_, i, accept)
    m = memory(g2)
    assert m["packed_bytes"] < m["raw_bytes"], m
    assert m["cold_unpacks"] >= 1 and m["hot_hits"] >= len(reqs), m
    assert mock.stats()["chat"] == calls


def test_hot_copies_churning_under_concurrent_hits_stay_intact(gateway_factory, mock):
    """A hot set far smaller than the answers hit: copies are made, evicted
    and made again while other threads send them; every hit is the whole
    answer, and none goes upstream again. (Under the sanitizer build this is
    the use-after-free check for hot copies.)"""
    from concurrent.futures import ThreadPoolExecutor
    g = gateway_factory(mock, args=["--data-dir", "none", "--max-memory", "1M",
                                    "--memory-hot-percent", "10", "--compress-dict-samples", "50",
                                    "--compress-dict-retrain", "0"], threads=2)
    reqs = [chat_body(f"churn {i}", mock={"body": a})
            for i, a in enumerate(corpus_answers(120, seed=1821))]
    want = [raw_post(g, CHAT, b, "identity")[1] for b in reqs]
    calls = mock.stats()["chat"]

    def reader(n):
        rng = random.Random(n)
        for _ in range(60):
            i = rng.randrange(len(reqs))
            data, hit = decoded(g, reqs[i], rng.choice(["identity", "identity", "gzip"]))
            assert hit and data == want[i], i
        return True

    with ThreadPoolExecutor(6) as ex:
        assert all(ex.map(reader, range(6)))
    m = memory(g)
    assert mock.stats()["chat"] == calls
    assert m["hot_bytes"] <= m["hot_max_bytes"] and m["cold_unpacks"] > len(reqs), m
    assert m["entries"] >= len(reqs) and m["bytes"] <= m["max_bytes"], m
