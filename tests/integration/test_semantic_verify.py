"""Issue 16: semantic correctness you can measure.

The mock answers by meaning (`llmcached mock --classes FILE`: a table of
QUESTION<TAB>ANSWER lines), so a test decides which wordings mean the same
(one answer) and which are hard negatives (another answer) whatever the
lexical similarity says. The wordings used here all score about 1.0 with the
lexical embedder (case, spacing, fillers, contractions), so no similarity
threshold can tell a hard negative from a near-duplicate: only verification
can.

Decisions a newcomer would otherwise get wrong:
- The gateway holds the upstream key: one shared scope, one namespace ("").
- A verified hit's background answer is stored under the request's own key,
  so the same wording again is an exact HIT with the model's own answer.
- Verification is asynchronous: tests wait on /stats for the outcomes.
"""

import concurrent.futures as cf
import math
import random
import time

from conftest import wait_until

ATTRS = ["population", "capital", "boiling point", "main ingredient", "national animal",
         "highest mountain", "official language", "largest city", "currency", "founder"]
THINGS = ["Canada", "Mexico", "Peru", "Norway", "Kenya", "Japan", "Chile", "Egypt",
          "Ireland", "Nepal"]

# Wordings the lexical embedder puts at about 1.0 from the base question.
VARIANTS = [
    lambda a, t: f"what is the {a} of {t.lower()}",
    lambda a, t: f"WHAT IS THE {a.upper()} OF {t.upper()}?",
    lambda a, t: f"  What   is   the   {a}   of   {t}?",
    lambda a, t: f"What's the {a} of {t}?",
    lambda a, t: f"Hey, can you tell me what the {a} of {t} is, please?",
    lambda a, t: f"Quick question: what is the {a} of {t}?",
    lambda a, t: f"Do you know the {a} of {t}?",
    lambda a, t: f"I wonder what the {a} of {t} is",
]


def base(a, t):
    return f"What is the {a} of {t}?"


def right_answer(a, t):
    return f"The {a} of {t} is fact number {len(a) * 31 + len(t)}."


def wrong_answer(a, t):
    return f"That wording asks something else about {t}: see chapter {len(a) + 7}."


def write_classes(path, classes, wrong):
    """classes: (attr, thing) pairs; wrong: set of (class index, variant index)
    whose wording the model answers differently (hard negatives)."""
    lines = []
    for k, (a, t) in enumerate(classes):
        lines.append(f"{base(a, t)}\t{right_answer(a, t)}")
        for j, v in enumerate(VARIANTS):
            ans = wrong_answer(a, t) if (k, j) in wrong else right_answer(a, t)
            lines.append(f"{v(a, t)}\t{ans}")
    path.write_text("\n".join(lines) + "\n")


def all_classes(n):
    return [(a, t) for a in ATTRS for t in THINGS][:n]


def start(gateway_factory, mock_factory, tmp_path, classes, wrong, args, latency_ms=0,
          name="classes.tsv"):
    table = tmp_path / name
    write_classes(table, classes, wrong)
    mock = mock_factory(latency_ms=latency_ms, extra=["--classes", str(table)])
    g = gateway_factory(mock, args=["--semantic", "on", "--semantic-judge", "exact", *args],
                        env={"LLMC_UPSTREAM_KEY": "sk-gateway-test"})
    return mock, g


def ask(g, q, timeout=30):
    r = g.chat({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]},
               timeout=timeout)
    assert r.status_code == 200, r.text
    return r, r.json()["choices"][0]["message"]["content"]


def sem(g):
    return g.stats()["tiers"]["semantic"]


def ns_row(g, name=""):
    rows = {r["name"]: r for r in sem(g)["namespaces"]}
    return rows[name]


def judged(g):
    v = sem(g)["verify"]
    return v["right"] + v["wrong"] + v["unjudged"]


def wait_judged(g, n, timeout=20):
    wait_until(lambda: judged(g) >= n, timeout=timeout, what=f"{n} verification outcomes")


def wilson(wrong, n, z=1.959963984540054):
    if n == 0:
        return 0.0, 1.0
    p = wrong / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


def run_traffic(g, classes, wrong):
    """Every base question (a miss), then the variants round by round, so a
    background verification has many requests' time to come back before the
    same class is asked again. Returns (semantic hits, served wrong)."""
    for a, t in classes:
        r, _ = ask(g, base(a, t))
        assert r.headers["X-Cache"] == "MISS"
    hits = served_wrong = 0
    for j, v in enumerate(VARIANTS):
        for k, (a, t) in enumerate(classes):
            r, text = ask(g, v(a, t))
            if r.headers["X-Cache"] != "SEMANTIC-HIT":
                continue
            hits += 1
            truth = wrong_answer(a, t) if (k, j) in wrong else right_answer(a, t)
            assert float(r.headers["X-Cache-Similarity"]) >= 0.99  # no threshold separates them
            served_wrong += text != truth
    return hits, served_wrong


def test_measured_rate_matches_the_traffic(gateway_factory, mock_factory, tmp_path):
    """Half the hits verified: the measured wrong-hit rate is the served hits'
    true rate within its interval, and /stats's interval is Wilson's."""
    classes = all_classes(40)
    rng = random.Random(16)
    wrong = {(k, j) for k in range(len(classes)) for j in range(len(VARIANTS))
             if rng.random() < 0.08}
    _, g = start(gateway_factory, mock_factory, tmp_path, classes, wrong,
                 ["--semantic-verify", "0.5", "--semantic-verify-per-minute", "100000"])
    hits, served_wrong = run_traffic(g, classes, wrong)
    st = sem(g)
    wait_judged(g, st["verify"]["sampled"])
    row = ns_row(g)
    assert row["hits"] == hits and hits > 150, (row, hits)
    assert 0.3 * hits < row["verified"] < 0.7 * hits, row
    assert row["verify_calls"] == row["verified"] == sem(g)["verify"]["sampled"]
    true_rate = served_wrong / hits
    assert served_wrong > 0
    lo, hi = wilson(row["wrong"], row["verified"])
    assert abs(row["wrong_rate_lo95_ppm"] - lo * 1e6) <= 1 and \
        abs(row["wrong_rate_hi95_ppm"] - hi * 1e6) <= 1, row
    assert row["wrong_rate_ppm"] == row["wrong"] * 1000000 // row["verified"]
    # The sample estimates the served hits' rate: within a 99.9% interval
    # (a 95% one would fail one run in twenty by design).
    lo3, hi3 = wilson(row["wrong"], row["verified"], z=3.2905)
    assert lo3 <= true_rate <= hi3, (row, true_rate)
    assert row["exact_only"] == 0  # no budget: measured only


def test_budget_keeps_served_wrong_hits_under_it(gateway_factory, mock_factory, tmp_path):
    """Two classes whose later wordings mean something else. A fixed
    threshold serves them all (they score 1.0, so no threshold leaves them
    out and keeps any hit); with a 1% budget, answers serve once probes (misses
    whose model answer is compared, no extra call) give enough evidence, and
    the first wrong bars its answer: fewer than 1% of the served hits are
    wrong, and most of the right ones are still served."""
    classes = all_classes(50)
    wrong = {(k, j) for k in (7, 31) for j in (3, 4, 5)}
    _, fixed = start(gateway_factory, mock_factory, tmp_path, classes, wrong, [],
                     name="fixed.tsv")
    f_hits, f_wrong = run_traffic(fixed, classes, wrong)
    assert f_wrong == 6 and f_wrong / f_hits > 0.01, (f_hits, f_wrong)

    _, g = start(gateway_factory, mock_factory, tmp_path, classes, wrong,
                 ["--semantic-max-error", "0.01", "--semantic-verify", "1",
                  "--semantic-verify-per-minute", "100000"], name="budget.tsv")
    hits, served_wrong = run_traffic(g, classes, wrong)
    wait_judged(g, sem(g)["verify"]["sampled"])
    assert served_wrong / hits < 0.01, (hits, served_wrong)
    assert served_wrong <= 2
    # No fixed threshold keeps these under 1% (the wrong wordings score 1.0):
    # at the same error it serves nothing, the budget most of the right ones
    # (less the probes' misses while evidence gathers, and the barred answers).
    assert hits >= 0.5 * f_hits, (hits, f_hits)
    row = ns_row(g)
    assert row["wrong"] == served_wrong and row["exact_only"] == 0, row
    v = sem(g)["verify"]
    assert v["probes"] > 0 and v["refused"] + v["probes_wrong"] >= 1, v


def test_verification_is_off_the_clients_path_and_within_its_budget(
        gateway_factory, mock_factory, tmp_path):
    latency = 3000
    classes = all_classes(6)
    mock, g = start(gateway_factory, mock_factory, tmp_path, classes, set(),
                    ["--semantic-verify", "1", "--semantic-verify-per-minute", "3"],
                    latency_ms=latency)
    # The misses, at once: each waits for the slow model.
    with cf.ThreadPoolExecutor(len(classes)) as ex:
        for r, _ in ex.map(lambda c: ask(g, base(*c)), classes):
            assert r.headers["X-Cache"] == "MISS"
    calls0 = mock.calls()
    a, t = classes[0]
    t0 = time.monotonic()
    r, text = ask(g, VARIANTS[0](a, t))
    took = time.monotonic() - t0
    assert r.headers["X-Cache"] == "SEMANTIC-HIT" and text == right_answer(a, t)
    # Answered from the cache while its verification is still with the model.
    assert took < latency / 1000 / 2, took
    st = sem(g)["verify"]
    assert st["sampled"] == 1 and judged(g) == 0, st
    # More hits than the per-minute budget: only 3 calls in all.
    for a, t in classes[1:]:
        r, _ = ask(g, VARIANTS[1](a, t))
        assert r.headers["X-Cache"] == "SEMANTIC-HIT"
    st = sem(g)["verify"]
    assert st["sampled"] == 3 and st["over_budget"] == len(classes) - 3, st
    wait_judged(g, 3, timeout=20)
    assert mock.calls() - calls0 == 3
    row = ns_row(g)
    assert row["verify_calls"] == 3 and row["verified"] == 3 and row["wrong"] == 0, row
    assert sem(g)["verify"]["tokens"] > 0
    # /metrics has the namespace's rows too.
    text = g.get("/metrics").text
    assert 'llmcached_semantic_namespace_verify_calls_total{namespace=""} 3' in text, text[-3000:]
    assert 'llmcached_semantic_namespace_exact_only{namespace=""} 0' in text


def test_an_unsampled_wrong_hit_is_taken_back_with_its_answer(gateway_factory, mock_factory,
                                                             tmp_path):
    """A wording served a wrong answer while the per-minute budget was spent
    (so nobody checked it) must not keep that answer as an exact hit once
    another wording proves the answer wrong: with verification on, a hit by
    similarity stays the tier's to serve (no copy under the request's key
    in the memory tier), so the bar reaches it."""
    latency = 1500
    classes = all_classes(1)
    wrong = {(0, 0), (0, 1)}  # both wordings mean something else
    _, g = start(gateway_factory, mock_factory, tmp_path, classes, wrong,
                 ["--semantic-verify", "1", "--semantic-verify-per-minute", "1"],
                 latency_ms=latency)
    (a, t), = classes
    r, _ = ask(g, base(a, t))
    assert r.headers["X-Cache"] == "MISS"
    r, text = ask(g, VARIANTS[1](a, t))  # sampled: its check is with the slow model
    assert r.headers["X-Cache"] == "SEMANTIC-HIT" and text == right_answer(a, t)
    r, text = ask(g, VARIANTS[0](a, t))  # over the budget: served unchecked, wrong
    assert r.headers["X-Cache"] == "SEMANTIC-HIT" and text == right_answer(a, t)
    # The same wording again, before any verdict: still the tier's hit.
    r, _ = ask(g, VARIANTS[0](a, t))
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)
    assert sem(g)["verify"]["over_budget"] >= 1
    wait_judged(g, 1)
    assert sem(g)["verify"]["wrong"] == 1
    # The answer is barred: the unchecked wording now gets the model's own.
    r, text = ask(g, VARIANTS[0](a, t))
    assert r.headers["X-Cache"] == "MISS" and text == wrong_answer(a, t), dict(r.headers)


def test_an_answer_verified_wrong_stops_matching_and_a_restart_keeps_that(
        gateway_factory, mock_factory, tmp_path):
    classes = all_classes(3)
    wrong = {(0, 0)}
    table = tmp_path / "classes.tsv"
    write_classes(table, classes, wrong)
    mock = mock_factory(extra=["--classes", str(table)])
    data = tmp_path / "data"
    env = {"LLMC_UPSTREAM_KEY": "sk-gateway-test"}
    args = ["--semantic", "on", "--data-dir", data, "--semantic-verify", "1",
            "--semantic-judge", "embed"]
    g = gateway_factory(mock, args=args, env=env)
    (a, t), (a1, t1) = classes[0], classes[1]
    ask(g, base(a, t))
    ask(g, base(a1, t1))
    r, text = ask(g, VARIANTS[0](a, t))  # served the base's answer: wrong for this wording
    assert r.headers["X-Cache"] == "SEMANTIC-HIT" and text == right_answer(a, t)
    r, text = ask(g, VARIANTS[0](a1, t1))  # the same wording of another class: right
    assert r.headers["X-Cache"] == "SEMANTIC-HIT" and text == right_answer(a1, t1)
    wait_judged(g, 2)
    v = sem(g)["verify"]
    assert v["wrong"] == 1 and v["right"] == 1, v
    assert '"semantic_verify":"wrong"' in g.stderr()
    # The wrong answer's question no longer answers any wording by similarity,
    # nor does the verified wording's own answer (the tier cannot tell them
    # apart, and they do not share an answer)...
    r, text = ask(g, VARIANTS[1](a, t))
    assert r.headers["X-Cache"] == "MISS" and text == right_answer(a, t), dict(r.headers)
    # ...its own wording is now an exact hit with the model's own answer...
    r, text = ask(g, VARIANTS[0](a, t))
    assert r.headers["X-Cache"] == "HIT" and text == wrong_answer(a, t)
    # ...and the right one still does.
    r, _ = ask(g, VARIANTS[2](a1, t1))
    assert r.headers["X-Cache"] == "SEMANTIC-HIT"

    wait_until(lambda: g.stats()["tiers"]["disk"]["stored"] >= 5, timeout=10,
               what="the answers on disk")
    g.must_survive = False
    assert g.stop() is None
    assert (data / "semantic-verify.log").stat().st_size > 0
    g = gateway_factory(mock, args=args, env=env)
    wait_until(lambda: sem(g)["restored"] >= 2, timeout=10, what="the questions indexed again")
    r, _ = ask(g, VARIANTS[3](a, t))
    assert r.headers["X-Cache"] == "MISS", dict(r.headers)
    r, _ = ask(g, VARIANTS[3](a1, t1))
    assert r.headers["X-Cache"] == "SEMANTIC-HIT", dict(r.headers)


def test_a_namespace_over_budget_falls_back_to_exact_only(gateway_factory, mock_factory,
                                                          tmp_path):
    """Answers that proved right on three wordings each, then a wording of
    every class that means something else: once the measured error is surely
    over the budget, the namespace answers exact-only, says so once in the
    log and in /stats, and similar questions go to the model."""
    classes = all_classes(30)
    wrong = {(k, 0) for k in range(len(classes))}
    _, g = start(gateway_factory, mock_factory, tmp_path, classes, wrong,
                 ["--semantic-max-error", "0.05", "--semantic-verify", "1",
                  "--semantic-verify-per-minute", "100000"])
    for a, t in classes:
        ask(g, base(a, t))
    n = 0
    for j in (1, 2, 3, 0):
        for a, t in classes[:25]:
            ask(g, VARIANTS[j](a, t))
            n += 1
            wait_until(lambda: judged(g) + sem(g)["verify"]["probes"] >= n, timeout=10,
                       what="the outcome")
    row = ns_row(g)
    assert row["exact_only"] == 1 and row["wrong"] >= 5, row
    assert row["wrong_rate_lo95_ppm"] > 50000, row
    # The whole log (stderr() is its tail, which the outcomes' lines fill).
    assert g.stderr_path.read_text().count('"fallback_exact_only"') == 1
    # A wording that means the same, of an answer never verified: not served now.
    a, t = classes[29]
    r, text = ask(g, VARIANTS[2](a, t))
    assert r.headers["X-Cache"] == "MISS" and text == right_answer(a, t)
    assert sem(g)["verify"]["fallback_misses"] >= 1


def test_the_model_judge(gateway_factory, mock_factory, tmp_path):
    """--semantic-judge model asks the judge model (the mock plays it: YES
    when the two answers it is shown are the same text) whether the answers
    agree; its calls are counted with the verification's."""
    classes = all_classes(3)
    mock, g = start(gateway_factory, mock_factory, tmp_path, classes, {(0, 0)},
                    ["--semantic-verify", "1", "--semantic-judge", "model",
                     "--semantic-judge-model", "judge-mini"])
    for a, t in classes[:2]:
        ask(g, base(a, t))
    calls0 = mock.calls()
    (a, t), (a1, t1) = classes[0], classes[1]
    r, _ = ask(g, VARIANTS[0](a, t))
    assert r.headers["X-Cache"] == "SEMANTIC-HIT"
    r, _ = ask(g, VARIANTS[0](a1, t1))
    assert r.headers["X-Cache"] == "SEMANTIC-HIT"
    wait_judged(g, 2)
    v = sem(g)["verify"]
    assert v["wrong"] == 1 and v["right"] == 1 and v["judge_calls"] == 2, v
    assert v["unjudged"] == 0 and v["tokens"] > 0, v
    assert mock.calls() - calls0 == 4  # two verifications, two judgements
    row = ns_row(g)
    assert row["verify_calls"] == 4 and row["wrong"] == 1, row
    r, _ = ask(g, VARIANTS[1](a, t))
    assert r.headers["X-Cache"] == "MISS"  # barred by the judge's verdict
