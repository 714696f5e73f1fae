"""Issue 19 with issue 15: semantic entries shared across gateways on one
Redis. A question answered through gateway A is published on the Redis
stream <prefix>semantic (with its vector); the others index it, its answer
read back from Redis, so a near-duplicate asked on B is a SEMANTIC-HIT
without a model call. A gateway started late catches up from the stream, and
a purge on A takes the answer from B's semantic tier too.

Uses test_redis.py's helpers and conftest's real redis-server fixtures.
"""

import shutil
import time
import uuid

import pytest

from conftest import chat_body, wait_until
from test_redis import ADMIN_ENV, AUTH, cluster, redis_gateway, rstats, wait_stored  # noqa: F401

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed (scripts/deps.sh installs it)")


def semantic_gateway(gateway_factory, mock, url, *extra):
    g = redis_gateway(gateway_factory, mock, url, "--semantic", "on",
                      "--redis-semantic-poll-ms", "50", *extra, env=ADMIN_ENV)
    wait_until(lambda: g.stats(headers=AUTH)["tiers"]["redis"]["invalidations"]["subscribed"] == 1,
               timeout=5, what=f"{g.name} subscribed to invalidations")
    return g


def sem(g):
    return g.stats(headers=AUTH)["tiers"]["semantic"]


def ask(g, question, system):
    body = chat_body(question)
    body["messages"].insert(0, {"role": "system", "content": system})
    r = g.chat(body)
    assert r.status_code == 200, r.text
    return r


def test_semantic_entries_are_shared(redis, mock, gateway_factory):
    system = "Answer in one word. " + uuid.uuid4().hex  # a partition new to this Redis
    a = semantic_gateway(gateway_factory, mock, redis.url)
    b = semantic_gateway(gateway_factory, mock, redis.url)

    first = ask(a, "What is the capital of France?", system)
    assert first.headers["X-Cache"] == "MISS"
    wait_stored(a, 1)
    assert sem(a)["peer"]["shared"] == 1
    assert redis.call("XLEN", "llmc:semantic") == 1
    wait_until(lambda: sem(b)["peer"]["indexed"] == 1, timeout=5,
               what="B indexed A's question")

    calls = mock.calls()
    r = ask(b, "what's the capital of france", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]
    assert r.content == first.content
    assert mock.calls() == calls
    # A hard negative stays a miss on B: the guards judge peers' questions too.
    assert ask(b, "What is the capital of Spain?", system).headers["X-Cache"] == "MISS"

    # A gateway started after the fill catches up from the stream.
    c = semantic_gateway(gateway_factory, mock, redis.url)
    wait_until(lambda: sem(c)["peer"]["indexed"] >= 1, timeout=5,
               what="C caught up from the stream")
    r = ask(c, "What is the capital of France", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]

    # A purge on A: B's semantic tier lets the answer go; a new wording misses.
    key = first.headers["X-Cache-Key"]
    d = a.http.delete(f"{a.url}/admin/cache/{key}", headers=AUTH, timeout=10)
    assert d.status_code == 200, d.text
    wait_until(lambda: sem(b)["purged"] >= 1, timeout=2, what="B's semantic entry purged")
    r = ask(b, "what is the capital of france please", system)
    assert r.headers["X-Cache"] == "MISS", dict(r.headers)

    # A gateway started after the purge reads the three questions of the
    # stream (A's France, B's Spain and B's later France) but finds no answer
    # in Redis for the purged one: two indexed, and never the purged answer.
    d2 = semantic_gateway(gateway_factory, mock, redis.url)
    assert redis.call("XLEN", "llmc:semantic") == 3
    wait_until(lambda: sem(d2)["peer"]["indexed"] == 2, timeout=5, what="D caught up")
    time.sleep(0.3)  # more reads of the stream: still two
    assert sem(d2)["peer"]["indexed"] == 2 and sem(d2)["entries"] == 2, sem(d2)
    r = ask(d2, "could you tell me the capital of france", system)
    assert r.headers.get("X-Cache-Matched-Key") != key, dict(r.headers)


def test_the_stream_is_bounded(redis_factory, mock, gateway_factory):
    """--redis-semantic-maxlen bounds the stream (XADD MAXLEN ~): Redis trims
    whole stream nodes, so nodes of 4 entries keep it within maxlen + 4."""
    redis = redis_factory(extra=("--stream-node-max-entries", "4"))
    a = semantic_gateway(gateway_factory, mock, redis.url, "--redis-semantic-maxlen", "10")
    system = "Answer in one word. " + uuid.uuid4().hex
    for i in range(40):
        assert ask(a, f"How many moons does planet {i} have?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: sem(a)["peer"]["shared"] == 40, timeout=5, what="40 questions shared")

    def newest():
        entries = redis.call("XREVRANGE", "llmc:semantic", "+", "-", "COUNT", "1")
        return entries[0][1][3] if entries else b""   # [id, [from, id, q, record]]

    wait_until(lambda: b"planet 39 " in newest(), timeout=5, what="the last question added")
    n = redis.call("XLEN", "llmc:semantic")
    assert 10 <= n <= 14, n


def test_shared_on_a_cluster(cluster, mock, gateway_factory):
    """On a Redis Cluster the stream lives on its key's master (routed by
    slot like any key) and the answers on theirs: B still gets the hit."""
    def gateway():
        g = redis_gateway(gateway_factory, mock, cluster.url, "--semantic", "on",
                          "--redis-semantic-poll-ms", "50", connected=False, env=ADMIN_ENV)
        wait_until(lambda: rstats(g)["connected"] >= 6 and
                   rstats(g)["cluster"]["slot_maps"] >= 2, timeout=10,
                   what=f"{g.name}'s connections to the masters and its slot maps")
        return g

    a, b = gateway(), gateway()
    system = "Answer in one word. " + uuid.uuid4().hex
    first = ask(a, "Who wrote the novel Moby Dick?", system)
    assert first.headers["X-Cache"] == "MISS"
    wait_until(lambda: sem(b)["peer"]["indexed"] == 1, timeout=5,
               what="B indexed A's question")
    r = ask(b, "who wrote the novel moby dick", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]
    assert mock.calls() == 1


def test_listening_again_reads_the_stream_again(redis, mock, gateway_factory):
    """A gateway whose connections to Redis were lost drops every local copy
    when it listens again (it may have missed purges), the peers' questions
    and its own with them: it then reads the stream again from its start, so
    A's question is a SEMANTIC-HIT on B again, counted once more as indexed,
    and B's own question is indexed again as regained, never as a peer's."""
    system = "Answer in one word. " + uuid.uuid4().hex
    a = semantic_gateway(gateway_factory, mock, redis.url)
    b = semantic_gateway(gateway_factory, mock, redis.url)
    first = ask(a, "What is the capital of France?", system)
    assert ask(b, "How tall is the Eiffel Tower?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: sem(b)["peer"]["indexed"] == 1 and sem(a)["peer"]["indexed"] == 1,
               timeout=5, what="each indexed the other's question")

    # Every connection of the Redis tier lost: the subscribers first, then
    # the commands' connections (the stream reader's too).
    assert redis.call("CLIENT", "KILL", "TYPE", "pubsub") == 2
    redis.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    wait_until(lambda: rstats(b)["invalidations"]["resyncs"] == 1, timeout=5,
               what="B listening again")
    wait_until(lambda: sem(b)["peer"]["indexed"] == 2, timeout=5,
               what="B read A's question again")
    wait_until(lambda: sem(b)["peer"]["regained"] == 1, timeout=5,
               what="B took its own question back")
    time.sleep(0.3)  # more reads: nothing indexed a second time
    assert sem(b)["peer"]["indexed"] == 2 and sem(b)["peer"]["regained"] == 1, sem(b)
    # A lost its subscription too, and took its own question back the same way.
    wait_until(lambda: sem(a)["peer"]["regained"] == 1, timeout=5, what="A's own question")

    calls = mock.calls()
    r = ask(b, "what's the capital of france", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]
    assert mock.calls() == calls
    assert rstats(b)["semantic"]["rereads"] == 1
    # B's own question again, reworded: a near-duplicate hit on B itself.
    r = ask(b, "how tall is the eiffel tower", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert mock.calls() == calls


def test_a_restart_with_a_data_dir_keeps_its_records_its_own(redis, mock, gateway_factory,
                                                             tmp_path):
    """With --data-dir the semantic tier restores its own questions from disk
    at a restart; the gateway's id in the stream is kept beside them, so its
    earlier records still read as its own: never indexed a second time as a
    peer's. A peer's question is still indexed."""
    data = str(tmp_path / "data")
    system = "Answer in one word. " + uuid.uuid4().hex

    def start():
        return semantic_gateway(gateway_factory, mock, redis.url, "--data-dir", data)

    a = start()
    assert ask(a, "What is the capital of France?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: sem(a)["peer"]["shared"] == 1, timeout=5, what="A's question shared")
    wait_until(lambda: a.stats(headers=AUTH)["tiers"]["disk"]["stored"] >= 1, timeout=10,
               what="the answer committed to disk")
    a.must_survive = False
    assert a.stop() is None

    a = start()
    wait_until(lambda: sem(a)["restored"] >= 1, timeout=10, what="A's question restored")
    b = semantic_gateway(gateway_factory, mock, redis.url)
    assert ask(b, "How tall is the Eiffel Tower?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: sem(a)["peer"]["indexed"] == 1, timeout=5, what="A indexed B's question")
    time.sleep(0.3)  # more reads of the stream: A's own record never counted
    assert sem(a)["peer"]["indexed"] == 1, sem(a)
    assert sem(b)["peer"]["indexed"] == 1, sem(b)    # B: A's, from before the restart


def test_stream_failures_are_counted_and_told_once(redis, mock, gateway_factory):
    """XADD, XREAD and the answers' GETs that fail are counted in the Redis
    tier's semantic/... rows and logged once when they start failing and
    once when they work again, never per command."""
    system = "Answer in one word. " + uuid.uuid4().hex
    a = semantic_gateway(gateway_factory, mock, redis.url)
    # The stream's key holds a string: every XADD and XREAD is refused.
    redis.call("SET", "llmc:semantic", "not a stream")
    for i in range(3):
        assert ask(a, f"How many legs does animal {i} have?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: rstats(a)["semantic"]["publish_failures"] == 3 and
               rstats(a)["semantic"]["read_failures"] >= 3, timeout=5,
               what="the refused XADDs and XREADs counted")
    assert rstats(a)["semantic"]["published"] == 0
    err = a.stderr()
    assert err.count("adding questions to the shared semantic stream fails: WRONGTYPE") == 1, err
    assert err.count("reading the shared semantic stream fails: WRONGTYPE") == 1, err

    redis.call("DEL", "llmc:semantic")
    first = ask(a, "What is the capital of France?", system)
    wait_until(lambda: rstats(a)["semantic"]["published"] == 1, timeout=5, what="XADD again")
    wait_until(lambda: "reading the shared semantic stream works again" in a.stderr(), timeout=5,
               what="the reads told working again")
    assert a.stderr().count("adding questions to the shared semantic stream works again") == 1

    # The answer under the shared question's key is not a record: a gateway
    # started now reads the question, fails to read its answer, indexes nothing.
    wait_stored(a, 4)
    redis.call("SET", "llmc:" + first.headers["X-Cache-Key"], "garbage")
    b = semantic_gateway(gateway_factory, mock, redis.url)
    wait_until(lambda: rstats(b)["semantic"]["answer_failures"] == 1, timeout=5,
               what="B's failed answer counted")
    assert sem(b)["peer"]["indexed"] == 0
    assert "reading the answers to the peers' questions fails: a value that is not a record" \
        in b.stderr()
    # One that is gone is not a failure.
    redis.call("DEL", "llmc:" + first.headers["X-Cache-Key"])
    c = semantic_gateway(gateway_factory, mock, redis.url)
    wait_until(lambda: rstats(c)["semantic"]["answers_gone"] == 1, timeout=5,
               what="C's answer gone counted")
    assert rstats(c)["semantic"]["answer_failures"] == 0


def test_stream_commands_follow_redirects_on_a_cluster(cluster, mock, gateway_factory):
    """The stream's slot moved to another master after both gateways loaded
    their maps: A's XADD and B's XREAD meet MOVED and are sent again to the
    new owner (nothing fails); then, while the slot migrates back, ASK is
    followed the same way."""
    from test_redis import Cluster, move_slot

    def gateway():
        g = redis_gateway(gateway_factory, mock, cluster.url, "--semantic", "on",
                          "--redis-semantic-poll-ms", "50", connected=False, env=ADMIN_ENV)
        wait_until(lambda: rstats(g)["connected"] >= 6 and
                   rstats(g)["cluster"]["slot_maps"] >= 2, timeout=10,
                   what=f"{g.name}'s connections to the masters and its slot maps")
        return g

    def failures(g):
        s = rstats(g)["semantic"]
        return s["publish_failures"] + s["read_failures"] + s["answer_failures"]

    a, b = gateway(), gateway()
    system = "Answer in one word. " + uuid.uuid4().hex
    assert ask(a, "Who wrote the novel Moby Dick?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: sem(b)["peer"]["indexed"] == 1, timeout=5, what="B indexed A's question")

    src, slot = cluster.master_of("llmc:semantic")
    masters = Cluster.masters_seen_by(cluster.nodes[0])
    dst = next(n for n in cluster.nodes if n.port != src.port and n.port in masters)
    move_slot(cluster, slot, src, dst, keys=("llmc:semantic",))
    first = ask(a, "Who painted the Mona Lisa?", system)
    wait_until(lambda: rstats(a)["semantic"]["published"] == 2, timeout=5,
               what="A's XADD sent again to the new owner")
    wait_until(lambda: sem(b)["peer"]["indexed"] == 2, timeout=5,
               what="B's XREAD sent again to the new owner")
    assert rstats(a)["cluster"]["moved"] >= 1 and rstats(b)["cluster"]["moved"] >= 1
    assert failures(a) == 0 and failures(b) == 0, (rstats(a), rstats(b))
    r = ask(b, "who painted the mona lisa", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]

    # Back to src, half way: the stream is already there, its slot still
    # dst's (MIGRATING): the commands meet ASK on dst and are sent to src.
    assert src.call("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(dst)) == "OK"
    assert dst.call("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(src)) == "OK"
    assert dst.call("MIGRATE", "127.0.0.1", src.port, "", 0, 5000, "KEYS",
                    "llmc:semantic") == "OK"
    asked = rstats(b)["cluster"]["ask"]
    assert ask(a, "Who discovered penicillin?", system).headers["X-Cache"] == "MISS"
    wait_until(lambda: rstats(a)["semantic"]["published"] == 3, timeout=5,
               what="A's XADD sent to the importing node")
    wait_until(lambda: sem(b)["peer"]["indexed"] == 3, timeout=5,
               what="B's XREAD sent to the importing node")
    assert rstats(b)["cluster"]["ask"] > asked
    assert failures(a) == 0 and failures(b) == 0, (rstats(a), rstats(b))


def test_unreadable_stream_entries_are_counted_and_skipped(redis, mock, gateway_factory):
    """Entries another program (or another version) wrote to the stream that
    are not a question record are skipped and counted; the reading goes on,
    so a good question after them is still indexed and hit."""
    system = "Answer in one word. " + uuid.uuid4().hex
    redis.call("XADD", "llmc:semantic", "*", "from", "someone", "q", "not a record")
    redis.call("XADD", "llmc:semantic", "*", "from", "someone", "other", "no q field")
    redis.call("XADD", "llmc:semantic", "*", "from", "someone", "q", "\x00" * 64)
    b = semantic_gateway(gateway_factory, mock, redis.url)
    wait_until(lambda: rstats(b)["semantic"]["bad_entries"] == 3, timeout=5,
               what="the three unreadable entries counted")
    a = semantic_gateway(gateway_factory, mock, redis.url)
    first = ask(a, "What is the capital of Portugal?", system)
    wait_stored(a, 1)
    wait_until(lambda: sem(b)["peer"]["indexed"] == 1, timeout=5, what="B indexed A's question")
    r = ask(b, "what's the capital of portugal", system)
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert r.headers["X-Cache-Matched-Key"] == first.headers["X-Cache-Key"]
    assert rstats(b)["semantic"]["bad_entries"] == 3
