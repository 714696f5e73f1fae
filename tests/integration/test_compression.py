"""Issue 18: compression on the wire.

A client whose Accept-Encoding takes gzip, br or zstd gets an answer above
--compress-min in that coding, with Vary: Accept-Encoding and an ETag of
its own (the identity tag with the coding's name inside the quotes); an
identity client gets identity. The compressed form is built once per entry
and kept as a derived entry: the gateway's counters show how many forms
were built (encodings_built) and how many answers went out compressed
(encoded_answers). A stream is compressed only when the client asks, and
flushed event by event: a client decoding the raw socket bytes as they
come (zlib, or libbrotlidec and libzstd through ctypes: Debian's python
has neither module) sees each event before the upstream sent the next.
"""

import base64
import ctypes
import ctypes.util
import gzip
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import zlib

import pytest

from conftest import chat_body, embedding_body, session

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
    r, raw = raw_post(gateway, EMB, body, "gzip, deflate")
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


def test_small_answers_are_not_compressed_nor_identity_streams(gateway, mock):
    small = chat_body("a short answer")
    post(gateway, CHAT, small)
    r, raw = raw_post(gateway, CHAT, small, "gzip")
    assert r.getheader("X-Cache") == "HIT" and r.getheader("Content-Encoding") is None
    assert len(raw) < 1024 and "accept-encoding" not in r.getheader("Vary").lower()
    json.loads(raw)

    big = chat_body("a long answer", mock={"bytes": 4000})
    first = post(gateway, CHAT, big, accept="gzip")
    assert first.headers["Content-Encoding"] == "gzip"
    c = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    c.request("POST", CHAT, json.dumps(dict(big, stream=True)),
              {"Content-Type": "application/json", "Accept-Encoding": "identity"})
    r = c.getresponse()
    assert r.getheader("Content-Encoding") is None
    assert r.read().rstrip().endswith(b"data: [DONE]")
    c.close()


# ------------------------------------------------------------- br

def br_decode(data):
    """Whole-body Brotli decoding with libbrotlidec (no python module here)."""
    d = StreamDecoder("br")
    out = d.feed(data)
    assert d.finished(), "the br stream did not end"
    return out


def test_br_client(gateway, mock):
    body = big_embedding("brotli please")
    ident = post(gateway, EMB, body, accept="identity")
    # requests with the brotli module installed, and older browsers: br wins over gzip.
    r, raw = raw_post(gateway, EMB, body, "gzip, deflate, br")
    assert r.status == 200 and r.getheader("X-Cache") == "HIT"
    assert r.getheader("Content-Encoding") == "br"
    assert "accept-encoding" in [v.strip().lower() for v in r.getheader("Vary").split(",")]
    assert int(r.getheader("Content-Length")) == len(raw) and len(raw) < len(ident.content) / 2
    assert br_decode(raw) == ident.content
    btag = r.getheader("ETag")
    assert btag == ident.headers["ETag"][:-1] + '-br"'
    # Built once: a second br hit is served from the derived entry.
    built = counters(gateway)[0]
    r2, raw2 = raw_post(gateway, EMB, body, "br")
    assert raw2 == raw and counters(gateway)[0] == built
    # Its own validator.
    r3, data = raw_post(gateway, EMB, body, "br", {"If-None-Match": btag})
    assert r3.status == 304 and data == b"" and r3.getheader("ETag") == btag
    r4, _ = raw_post(gateway, EMB, body, "gzip", {"If-None-Match": btag})
    assert r4.status == 200 and r4.getheader("Content-Encoding") == "gzip"
    # A tie: zstd, then br, then gzip; q values still rule.
    r5, _ = raw_post(gateway, EMB, body, "gzip, br, zstd")
    assert r5.getheader("Content-Encoding") == "zstd"
    r6, _ = raw_post(gateway, EMB, body, "br;q=0.5, gzip")
    assert r6.getheader("Content-Encoding") == "gzip"


@pytest.mark.skipif("brotli" not in subprocess.run(["curl", "-V"], capture_output=True,
                                                     text=True).stdout.lower(),
                    reason="this curl cannot decode br")
def test_curl_compressed_decodes_br_to_the_identity_body(gateway, mock):
    body = big_embedding("curl asks for br")
    ident = post(gateway, EMB, body, accept="identity")
    url = gateway.url + EMB
    out = subprocess.run(["curl", "-s", "-D", "-", "--compressed", "-H", "Accept-Encoding: br",
                          "-H", "Content-Type: application/json", "--data-binary", json.dumps(body),
                          url], capture_output=True, check=True).stdout
    head, _, got = out.partition(b"\r\n\r\n")
    assert b"content-encoding: br" in head.lower()
    assert got == ident.content


# ------------------------------------------------------------- streams

class StreamDecoder:
    """A client's decoder for one coding, fed the body bytes as they come."""

    def __init__(self, coding):
        self.coding = coding
        self.done = False
        if coding == "gzip":
            self.z = zlib.decompressobj(16 + 15)
        elif coding == "br":
            self.lib = ctypes.CDLL(ctypes.util.find_library("brotlidec") or "libbrotlidec.so.1")
            self.lib.BrotliDecoderCreateInstance.restype = ctypes.c_void_p
            self.lib.BrotliDecoderCreateInstance.argtypes = [ctypes.c_void_p] * 3
            self.lib.BrotliDecoderDecompressStream.argtypes = [
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_void_p),
                ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
            self.lib.BrotliDecoderDestroyInstance.argtypes = [ctypes.c_void_p]
            self.state = self.lib.BrotliDecoderCreateInstance(None, None, None)
        elif coding == "zstd":
            self.lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
            self.lib.ZSTD_createDStream.restype = ctypes.c_void_p
            self.lib.ZSTD_decompressStream.restype = ctypes.c_size_t
            self.lib.ZSTD_decompressStream.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                       ctypes.c_void_p]
            self.lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            self.lib.ZSTD_freeDStream.argtypes = [ctypes.c_void_p]
            self.state = self.lib.ZSTD_createDStream()
        else:
            assert coding == "identity"

    def feed(self, data):
        if self.coding == "identity":
            return data
        if self.coding == "gzip":
            out = self.z.decompress(data)
            self.done = self.z.eof
            return out
        out = b""
        inbuf = ctypes.create_string_buffer(data, len(data))
        if self.coding == "br":
            avail_in = ctypes.c_size_t(len(data))
            next_in = ctypes.c_void_p(ctypes.addressof(inbuf))
            while True:
                obuf = ctypes.create_string_buffer(65536)
                avail_out = ctypes.c_size_t(65536)
                next_out = ctypes.c_void_p(ctypes.addressof(obuf))
                r = self.lib.BrotliDecoderDecompressStream(
                    self.state, ctypes.byref(avail_in), ctypes.byref(next_in),
                    ctypes.byref(avail_out), ctypes.byref(next_out), None)
                out += obuf.raw[:65536 - avail_out.value]
                assert r != 0, "br: corrupt"
                if r == 1:
                    self.done = True
                    assert avail_in.value == 0, "br: bytes after the stream"
                if r != 3:  # 3: needs more output
                    return out

        class Buf(ctypes.Structure):
            _fields_ = [("p", ctypes.c_void_p), ("size", ctypes.c_size_t),
                        ("pos", ctypes.c_size_t)]
        ib = Buf(ctypes.addressof(inbuf), len(data), 0)
        while True:
            obuf = ctypes.create_string_buffer(65536)
            ob = Buf(ctypes.addressof(obuf), 65536, 0)
            left = self.lib.ZSTD_decompressStream(self.state, ctypes.byref(ob), ctypes.byref(ib))
            assert not self.lib.ZSTD_isError(left), "zstd: corrupt"
            out += obuf.raw[:ob.pos]
            self.done = left == 0
            if ib.pos == ib.size and ob.pos < ob.size:
                return out

    def finished(self):
        return self.coding == "identity" or self.done


class CodedStream:
    """A streaming request over a raw socket whose chunked body is decoded
    (chunks, then the coding) as it arrives; times[i] is when the i-th
    whole SSE event came out of the decoder. A stream that goes out whole
    (a hit replayed without pacing) has a Content-Length instead."""

    def __init__(self, port, body, accept):
        payload = json.dumps(body).encode()
        head = (f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Accept-Encoding: {accept}\r\nContent-Length: {len(payload)}\r\n\r\n")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.t0 = time.monotonic()
        self.sock.sendall(head.encode() + payload)
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, _, v in (ln.partition(":") for ln in lines[1:])}
        self.chunked = self.headers.get("transfer-encoding") == "chunked"
        self.coding = self.headers.get("content-encoding", "identity")
        self.dec = StreamDecoder(self.coding)
        self.body = b""
        self.times = []

    def _recv(self):
        data = self.sock.recv(65536)
        assert data, "the connection closed early"
        return data

    def read_all(self):
        if not self.chunked:  # a whole answer: Content-Length
            size = int(self.headers["content-length"])
            while len(self.buf) < size:
                self.buf += self._recv()
            self.body = self.dec.feed(self.buf[:size])
            self.times = [time.monotonic() - self.t0] * self.body.count(b"\n\n")
            self.sock.close()
            assert self.dec.finished(), "the coded answer did not end"
            return self.body
        while True:
            while b"\r\n" not in self.buf:
                self.buf += self._recv()
            size_line, rest = self.buf.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += self._recv()
            chunk, self.buf = rest[:size], rest[size + 2:]
            if size == 0:
                break
            before = self.body.count(b"\n\n")
            self.body += self.dec.feed(chunk)
            now = time.monotonic() - self.t0
            self.times += [now] * (self.body.count(b"\n\n") - before)
        self.sock.close()
        assert self.dec.finished(), "the coded stream did not end"
        return self.body


STREAM_PROMPT = "tell me a story"  # 11 events from the mock


def stream_body(tag, delay_ms=0):
    b = chat_body(f"{STREAM_PROMPT} {tag}", stream=True)
    if delay_ms:
        b["mock"] = {"chunk_delay_ms": delay_ms}
    return b


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_live_stream_is_compressed_and_flushed_event_by_event(gateway, mock, coding):
    delay = 0.2
    body = stream_body(f"live {coding}", int(delay * 1000))
    # The identity client leads the flight; the coded one joins it at once
    # and gets the same bytes (a joiner catches up, then follows live).
    ident = CodedStream(gateway.port, body, "identity")
    got = {}
    t = threading.Thread(target=lambda: got.update(plain=ident.read_all()))
    t.start()
    time.sleep(0.05)
    coded = CodedStream(gateway.port, body, f"{coding}, identity;q=0.1")
    assert coded.status == 200 and coded.coding == coding
    assert "accept-encoding" in coded.headers.get("vary", "").lower()
    decoded = coded.read_all()
    t.join(15)
    assert ident.coding == "identity" and "content-encoding" not in ident.headers
    assert decoded == got["plain"] and decoded.rstrip().endswith(b"data: [DONE]")
    # Event by event: the first decoded well before the upstream sent the
    # last (10 pauses of 0.2 s), and the events spread over the pauses.
    n = len(coded.times)
    assert n >= 10
    assert coded.times[0] < coded.times[-1] - 5 * delay, coded.times
    assert sum(b - a > delay / 2 for a, b in zip(coded.times, coded.times[1:])) >= n // 2


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_stream_hit_is_compressed_when_asked(gateway, mock, coding):
    body = stream_body(f"hit {coding}")
    first = CodedStream(gateway.port, body, "identity")
    first.read_all()
    ident = CodedStream(gateway.port, body, "identity")
    plain = ident.read_all()
    assert ident.headers["x-cache"] == "HIT" and ident.coding == "identity"
    coded = CodedStream(gateway.port, body, coding)
    assert coded.headers["x-cache"] == "HIT" and coded.coding == coding
    assert coded.read_all() == plain
    assert coded.headers["etag"] == ident.headers["etag"][:-1] + f'-{coding}"'


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_a_paced_replay_is_compressed_event_by_event(gateway_factory, mock, coding):
    g = gateway_factory(mock, args=["--replay-pace-ms", "100"])
    body = stream_body(f"paced {coding}")
    CodedStream(g.port, body, "identity").read_all()  # the miss stores it
    ident = CodedStream(g.port, body, "identity")
    plain = ident.read_all()
    coded = CodedStream(g.port, body, coding)
    assert coded.headers["x-cache"] == "HIT" and coded.coding == coding
    assert coded.read_all() == plain
    # Each event came out of the decoder on its own tick (0.1 s apart), not
    # all at the end.
    n = len(coded.times)
    assert n >= 4 and coded.times[-1] - coded.times[0] >= (n - 1) * 0.1 * 0.8, coded.times


def test_compress_off(gateway_factory, mock):
    g = gateway_factory(mock, args=["--compress", "off"])
    body = big_embedding("never compressed")
    post(g, EMB, body)
    r, raw = raw_post(g, EMB, body, "gzip, zstd")
    assert r.getheader("X-Cache") == "HIT" and r.getheader("Content-Encoding") is None
    assert "accept-encoding" not in r.getheader("Vary").lower()
    json.loads(raw)
    assert counters(g) == (0, 0)
    s = CodedStream(g.port, stream_body("off"), "gzip, br, zstd")
    assert s.coding == "identity" and s.read_all().rstrip().endswith(b"data: [DONE]")


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


# ---------------------------------------------- big forms built off the loop

def stat(g, name):
    return g.stats()[name]


def big_chat(tag):
    return chat_body(f"a very long answer {tag}", mock={"bytes": 6 << 20})


def test_a_big_compressed_build_does_not_hold_up_other_hits(gateway_factory, mock):
    # One worker: the loop that would build is the loop that must answer.
    g = gateway_factory(mock, threads=1)
    # The answer echoes the question: random text makes br work for a while
    # (~0.2 s here; the mock's lorem padding alone compresses in ~40 ms,
    # less than it takes to see the build start and send the small hit).
    noise = base64.b64encode(random.Random(7).randbytes(2800 << 10)).decode()
    big = chat_body("offload " + noise, mock={"bytes": 6 << 20})
    small = chat_body("a short one", mock={"bytes": 2000})
    ident = post(g, CHAT, big, accept="identity")
    assert ident.status_code == 200 and len(ident.content) > 6 << 20
    post(g, CHAT, small, accept="identity")
    got = {}

    def big_br():
        got["big"] = raw_post(g, CHAT, big, "br")

    t = threading.Thread(target=big_br)
    t.start()
    wait_until(lambda: stat(g, "encodings_off_loop") == 1, timeout=10)
    # The build is on the pool: the loop answers a small compressed hit
    # (and /stats) while it runs.
    r, raw = raw_post(g, CHAT, small, "br")
    s = g.stats()
    assert r.status == 200 and r.getheader("X-Cache") == "HIT"
    assert r.getheader("Content-Encoding") == "br" and json.loads(br_decode(raw))
    in_progress = s["encodings_off_loop"] - s["encodings_off_loop_done"]
    t.join(60)
    assert in_progress == 1, "the big build had ended before the small hit was answered"
    # The parked request was answered with the form once it was built.
    r, raw = got["big"]
    assert r.status == 200 and r.getheader("X-Cache") == "HIT"
    assert r.getheader("Content-Encoding") == "br"
    assert r.getheader("ETag") == ident.headers["ETag"][:-1] + '-br"'
    assert br_decode(raw) == ident.content
    s = g.stats()
    assert s["encoding_waits"] == 1 and s["encodings_off_loop_done"] == 1
    # Kept: the next br hit is served from it, nothing built.
    built = s["encodings_built"]
    r2, raw2 = raw_post(g, CHAT, big, "br")
    assert raw2 == raw and stat(g, "encodings_built") == built


def test_identical_requests_share_one_big_build(gateway_factory, mock):
    g = gateway_factory(mock, threads=1)
    big = big_chat("shared")
    ident = post(g, CHAT, big, accept="identity").content
    got = []
    ts = [threading.Thread(target=lambda: got.append(raw_post(g, CHAT, big, "gzip")))
          for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(got) == 3
    assert all(r.getheader("Content-Encoding") == "gzip" for r, _ in got)
    assert all(raw == got[0][1] for _, raw in got) and gzip.decompress(got[0][1]) == ident
    s = g.stats()
    assert s["encodings_off_loop"] == 1 and s["encodings_built"] == 1
    assert s["encoding_waits"] >= 2  # the others waited for the same build, or found it made


def test_a_big_miss_goes_identity_and_its_build_serves_the_hits(gateway_factory, mock):
    g = gateway_factory(mock, threads=1)
    big = big_chat("miss")
    r, raw = raw_post(g, CHAT, big, "gzip")
    assert r.getheader("X-Cache") == "MISS" and r.getheader("Content-Encoding") is None
    assert "accept-encoding" in r.getheader("Vary").lower()
    wait_until(lambda: stat(g, "encodings_off_loop_done") == 1, timeout=30)
    r2, raw2 = raw_post(g, CHAT, big, "gzip")
    assert r2.getheader("X-Cache") == "HIT" and r2.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(raw2) == raw
    s = g.stats()
    assert s["encodings_built"] == 1 and s["encoding_waits"] == 0


def test_compress_offload_bytes_zero_offloads_every_form(gateway_factory, mock):
    g = gateway_factory(mock, args=["--compress-offload-bytes", "0"])
    body = big_embedding("always off the loop")
    ident = post(g, EMB, body, accept="identity")
    r, raw = raw_post(g, EMB, body, "gzip")
    assert r.getheader("Content-Encoding") == "gzip" and gzip.decompress(raw) == ident.content
    assert stat(g, "encodings_off_loop") == 1 and stat(g, "encoding_waits") == 1


def test_a_passed_through_stream_is_compressed_when_asked(gateway, mock):
    # previous_response_id: passed through uncached (relay.c), relayed as it comes.
    body = {"model": "gpt-4o-mini", "input": "continue the story", "stream": True,
            "previous_response_id": "resp_earlier"}

    def events(accept):
        payload = json.dumps(body).encode()
        c = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        c.request("POST", "/v1/responses", payload,
                  {"Content-Type": "application/json", "Accept-Encoding": accept})
        r = c.getresponse()
        raw = r.read()
        c.close()
        assert r.status == 200 and r.getheader("X-Cache") == "BYPASS"
        coding = r.getheader("Content-Encoding") or "identity"
        d = StreamDecoder(coding)
        text = d.feed(raw)
        assert d.finished()
        return coding, [ln for ln in text.decode().split("\n") if ln.startswith("event: ")]

    coding, plain = events("identity")
    assert coding == "identity" and plain[-1] == "event: response.completed"
    for accept in ("gzip", "br", "zstd"):
        assert events(accept) == (accept, plain)


def test_a_client_that_leaves_while_its_form_is_built(gateway_factory, mock):
    g = gateway_factory(mock, threads=1)
    big = big_chat("leaver")
    ident = post(g, CHAT, big, accept="identity").content
    payload = json.dumps(big).encode()
    s = socket.create_connection(("127.0.0.1", g.port), timeout=10)
    s.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Accept-Encoding: br\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    wait_until(lambda: stat(g, "encodings_off_loop") == 1, timeout=10)
    s.close()  # gone while it waits
    wait_until(lambda: stat(g, "encodings_off_loop_done") == 1, timeout=60)
    # The form it started is kept for the next client; nothing else changed.
    r, raw = raw_post(g, CHAT, big, "br")
    assert r.getheader("Content-Encoding") == "br" and br_decode(raw) == ident
    assert stat(g, "encodings_built") == 1


# ------------------------------------------ old dictionaries freed (issue 18)

DICT_ADMIN = {"Authorization": "Bearer dict-gc-token"}


def disk_stats(g):
    """tiers.disk of /stats, which the admin token guards once it is set."""
    return g.stats(headers=DICT_ADMIN)["tiers"]["disk"]


def dict_ids(data):
    return {int(p.name[len("zdict-"):]) for p in data.glob("zdict-*")
            if p.name[len("zdict-"):].isdigit()}


def test_old_dictionaries_go_once_no_record_uses_them(gateway_factory, mock, tmp_path):
    """Dictionaries retrained every 20 answers: those only the answers tagged
    'old' were written with stay while those answers are stored, and their
    zdict-<id> files go once a purge takes the answers; the answers left are
    disk hits after a restart (after its census), byte for byte."""
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "--compress-dict-samples", "20",
            "--compress-dict-retrain", "20", "--compress-dict-gc", "0.2"]
    env = {"LLMC_ADMIN_TOKEN": "dict-gc-token"}
    g = gateway_factory(mock, args=args, env=env)
    reqs = [chat_body(f"dict gc {i}", mock={"body": a})
            for i, a in enumerate(corpus_answers(200, seed=1820))]
    n_old = 0
    while disk_stats(g)["dict_trainings"] < 2:
        assert n_old < 150, disk_stats(g)
        r = post(g, CHAT, reqs[n_old], accept="identity", headers={"X-Cache-Tags": "old"})
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.text
        n_old += 1
        time.sleep(0.01)  # training runs beside the requests
    wait_until(lambda: disk_stats(g)["stored"] >= n_old, timeout=10, what="the old answers on disk")
    current = disk_stats(g)["dict_current"]
    # Not a newer one (a training under way): the new answers may use it.
    old_dicts = {i for i in dict_ids(data) if i <= current}
    assert current in old_dicts and len(old_dicts) >= 2, (current, old_dicts)
    new = {}
    for i in range(n_old, n_old + 40):
        r = post(g, CHAT, reqs[i], accept="identity")
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.text
        new[i] = r.content
    wait_until(lambda: disk_stats(g)["stored"] >= n_old + 40, timeout=10, what="the new answers on disk")
    # Censuses run (every 0.2 s) and keep what records use.
    runs = disk_stats(g)["dict_censuses"]
    wait_until(lambda: disk_stats(g)["dict_censuses"] >= runs + 2, timeout=10, what="two censuses")
    assert old_dicts <= dict_ids(data)

    r = g.post("/admin/purge", {"tag": "old"}, headers=DICT_ADMIN)
    assert r.status_code == 200, r.text
    gone = old_dicts - {current}
    wait_until(lambda: not gone & dict_ids(data), timeout=10,
               what=f"zdict files {sorted(gone)} deleted")
    d = disk_stats(g)
    assert d["dicts_removed"] >= len(gone) and d["dicts_unpinned"] >= len(gone), d
    g.must_survive = False
    assert g.stop() is None

    g2 = gateway_factory(mock, args=args, env=env)
    wait_until(lambda: disk_stats(g2)["dict_censuses"] >= 1, timeout=10, what="a census after the start")
    calls = mock.stats()["chat"]
    for i, body in new.items():
        r, raw = raw_post(g2, CHAT, reqs[i], "identity")
        assert r.status == 200 and r.getheader("X-Cache") == "HIT", (i, r.getheaders())
        assert raw == body, f"answer {i} changed across the restart"
    assert mock.stats()["chat"] == calls, "every answer left must come from the disk tier"
    assert not gone & dict_ids(data)
    r = post(g2, CHAT, reqs[0], accept="identity", headers={"X-Cache-Tags": "old"})
    assert r.headers["X-Cache"] == "MISS"
