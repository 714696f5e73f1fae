#!/usr/bin/python3
"""Bench (issue 16): the semantic tier's labelled pairs (bench/semantic_pairs.tsv)
as traffic, fixed thresholds against the error-budget mode.

The traffic. Each labelled pair (a, b) is a first question a and a second
question b. The mock model (`llmcached mock --classes`) answers by meaning:
pairs labelled `hit` (near-duplicates) and `any` (paraphrases) put a and b in
one meaning class (a union over all pairs, since a question can appear in
several), which gets one answer. Questions of different pairs that differ
only in case, spacing, punctuation, contractions or articles are joined
too (surface() below): the set labels such wordings the same within a
pair, and without the join a near-duplicate matched to another pair's
first question would count as wrong (13 such hits a round at 0.7). The
b of a `miss` pair (a hard negative) is in a class of its own unless
another pair joins it to something, and gets another answer. Ground truth is that table: a semantic hit is wrong when the
answer served is not the table's answer for the question asked.

1. Every distinct first question is asked once, in file order (the
   gateway looks it up like any request: mostly misses, stored and
   indexed; some may already hit an earlier first question).
2. Then the second questions, in ROUNDS rounds, each round every pair's
   b once, in a new random order. After a round (and a pause for the
   background verifications to land) every b key the gateway stored or
   aliased (X-Cache-Key) is purged (DELETE /admin/cache/KEY), except keys
   of first questions, so in the next round b is again a new question
   that only similarity can answer. What the tier learned about the
   first questions' answers, and the namespace's probe and verification
   counts, stay: that is what the budget mode learns from, round by round.

For each configuration a fresh mock and gateway (one thread, 127.0.0.1, no
data dir, judge `exact`) run the same traffic, one request at a time. After
each second question /stats is read: the change in verify.sampled (plus
judge_calls) is that request's verification calls (counted at lookup, when
the hit is sampled), the change in verify.probes its probes (a probe is a
miss judged for free: no extra call).

Prints, per configuration, one row per label (`hit`, `miss`, `any`: the
pairs' expect column, over all rounds; `first`: the first questions) and
`all` (the second questions of every label): semantic hits, hit rate (of
the requests of that row), wrong hits, wrong-hit rate (of the row's
semantic hits), verification calls, probes, exact hits (a second question
that is also a first question: 6 of the hit pairs; right, and not
semantic). `--by-class` adds rows per
fine class (case, negation, ...). Then the last round alone for the
budget configurations (after learning). Measures only: the exit status is
0 whenever it could run.

    nice bench/semantic_verify_pairs.py --bin build/llmcached [--rounds 6]
"""
import argparse
import collections
import os
import random
import re
import subprocess
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from semantic_verify import free_port, wait_ready  # noqa: E402

TOKEN = "bench-admin-token"


def read_pairs(path):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            cls, expect, a, b = line.rstrip("\n").split("\t")
            pairs.append((cls, expect, a, b))
    return pairs


def surface(q):
    """What is left of a question once case, spacing, punctuation, the
    common contractions and the articles are taken out: two questions of different pairs
    with the same surface are the same question (the labels say so of every
    such pair within one row: the case, spacing, punctuation, contraction,
    filler classes). Quoted text and code keep their bytes: there case and one
    character are the meaning (the quote and code hard negatives)."""
    if '"' in q or "`" in q:
        return q
    q = q.casefold().replace("\u2019", "'")
    q = re.sub(r"'s\b", " is", q)
    q = re.sub(r"n't\b", " not", q)
    q = re.sub(r"'re\b", " are", q)
    q = re.sub(r"\b(the|a|an)\b", "", q)
    return re.sub(r"[^\w%]", "", q)


def class_table(pairs):
    """Meaning classes: same-meaning pairs joined (union-find), and questions
    of one surface; the answers. Returns the conflicts too: miss pairs whose
    two questions ended in one class (none with the current set)."""
    parent = {}

    def find(q):
        parent.setdefault(q, q)
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for _, expect, a, b in pairs:
        find(a)
        find(b)
        if expect in ("hit", "any"):
            parent[find(a)] = find(b)
    by_surface = {}
    for q in list(parent):
        other = by_surface.setdefault(surface(q), q)
        parent[find(q)] = find(other)
    roots = {}
    answers = {}
    for q in parent:
        r = roots.setdefault(find(q), len(roots))
        answers[q] = f"The answer of meaning class {r}."
    conflicts = [(a, b) for _, e, a, b in pairs if e == "miss" and find(a) == find(b)]
    return answers, conflicts


def start(bin_, table, args, tmp):
    mport, gport = free_port(), free_port()
    mock = subprocess.Popen([bin_, "mock", "--listen", f"127.0.0.1:{mport}", "--latency-ms", "0",
                             "--classes", table], stderr=subprocess.DEVNULL)
    env = dict(os.environ, LLMC_UPSTREAM_KEY="sk-bench", LLMC_ADMIN_TOKEN=TOKEN)
    gw = subprocess.Popen([bin_, "--listen", f"127.0.0.1:{gport}", "--upstream",
                           f"http://127.0.0.1:{mport}/v1", "--threads", "1", "--access-log", "off",
                           "--semantic", "on", "--semantic-judge", "exact", *args],
                          env=env, stderr=open(os.path.join(tmp, "gw.err"), "wb"))
    return mock, gw, mport, gport


class Tally:
    def __init__(self):
        self.n = self.hits = self.wrong = self.vcalls = self.probes = self.exact = 0

    def row(self, name):
        return (f"{name:<14} {self.n:>6} {self.hits:>6} {self.hits / max(self.n, 1):>8.1%} "
                f"{self.wrong:>6} {(self.wrong / self.hits if self.hits else 0):>10.2%} "
                f"{self.vcalls:>7} {self.probes:>7} {self.exact:>6}")


HEADER = (f"{'label':<14} {'asked':>6} {'hits':>6} {'hit rate':>8} {'wrong':>6} {'wrong rate':>10} "
          f"{'verify':>7} {'probes':>7} {'exact':>6}")


def run(bin_, table, pairs, answers, rounds, seed, args, tmp):
    mock, gw, mport, gport = start(bin_, table, args, tmp)
    base = f"http://127.0.0.1:{gport}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    tallies = collections.defaultdict(Tally)  # (round or "all", label) -> Tally
    try:
        wait_ready(f"http://127.0.0.1:{mport}/mock/stats", mock, "mock")
        for _ in range(300):  # /stats needs the token once one is set
            try:
                if requests.get(f"{base}/stats", headers=auth, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.05)
        s = requests.Session()

        def ask(q):
            r = s.post(f"{base}/v1/chat/completions",
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]},
                       timeout=30)
            r.raise_for_status()
            hit = r.headers.get("X-Cache") == "SEMANTIC-HIT"
            wrong = hit and r.json()["choices"][0]["message"]["content"] != answers[q]
            return hit, wrong, r.headers.get("X-Cache-Key"), r.headers.get("X-Cache") == "HIT"

        def verify_counts():
            v = s.get(f"{base}/stats", headers=auth, timeout=5).json()["tiers"]["semantic"]["verify"]
            return v["sampled"] + v["judge_calls"], v["probes"]

        firsts = list(dict.fromkeys(a for _, _, a, _ in pairs))
        first_set = set(firsts)
        vc0, pr0 = verify_counts()
        for q in firsts:
            hit, wrong, _, exact = ask(q)
            t = tallies[("all", "first")]
            t.n += 1
            t.exact += exact
            t.hits += hit
            t.wrong += wrong
        vc1, pr1 = verify_counts()
        tallies[("all", "first")].vcalls += vc1 - vc0
        tallies[("all", "first")].probes += pr1 - pr0
        rng = random.Random(seed)
        for rnd in range(rounds):
            order = list(pairs)
            rng.shuffle(order)
            keys = set()
            for cls, expect, _, b in order:
                hit, wrong, key, exact = ask(b)
                vc2, pr2 = verify_counts()
                for k in (("all", expect), ("all", "all"), ("all", "class " + cls),
                          (rnd, expect), (rnd, "all")):
                    t = tallies[k]
                    t.n += 1
                    t.exact += exact
                    t.hits += hit
                    t.wrong += wrong
                    t.vcalls += vc2 - vc1
                    t.probes += pr2 - pr1
                vc1, pr1 = vc2, pr2
                if key and b not in first_set:
                    keys.add(key)
            time.sleep(0.3)  # the round's last background verifications
            for key in keys:
                s.delete(f"{base}/admin/cache/{key}", headers=auth, timeout=5)
            vc1, pr1 = verify_counts()  # what landed after the last request: not attributed
        st = s.get(f"{base}/stats", headers=auth, timeout=5).json()["tiers"]["semantic"]
    finally:
        gw.terminate()
        mock.terminate()
        gw.wait()
        mock.wait()
    with open(os.path.join(tmp, "gw.err"), errors="replace") as f:
        falls = f.read().count('"fallback_exact_only"')
    return tallies, st["verify"]["sampled"] + st["verify"]["judge_calls"], falls


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="build/llmcached")
    p.add_argument("--pairs", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "semantic_pairs.tsv"))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--verify", default="0.2", help="--semantic-verify for the budget runs")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--only", default="", help="run the configurations whose name has this")
    p.add_argument("--by-class", action="store_true", help="also a row per fine class")
    a = p.parse_args()
    pairs = read_pairs(a.pairs)
    answers, conflicts = class_table(pairs)
    configs = [(f"fixed {t}", ["--semantic-threshold", t]) for t in
               ("0.5", "0.6", "0.7", "0.8", "0.9", "0.95")]
    configs += [(f"budget {b}", ["--semantic-max-error", b, "--semantic-verify", a.verify,
                                 "--semantic-verify-per-minute", "1000000"])
                for b in ("0.005", "0.01", "0.02")]
    labels = collections.Counter(e for _, e, _, _ in pairs)
    print(f"pairs: {len(pairs)} ({', '.join(f'{k} {v}' for k, v in sorted(labels.items()))}), "
          f"{len(set(answers.values()))} meaning classes, {len(conflicts)} conflicting miss pairs, "
          f"{a.rounds} rounds of second questions, seed {a.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        table = os.path.join(tmp, "classes.tsv")
        with open(table, "w", encoding="utf-8") as f:
            for q, ans in answers.items():
                f.write(f"{q}\t{ans}\n")
        for name, args in (c for c in configs if a.only in c[0]):
            tallies, vtotal, falls = run(a.bin, table, pairs, answers, a.rounds, a.seed, args, tmp)
            print(f"\n{name}: {vtotal} verification calls in all, {falls} fallbacks to exact-only")
            print(HEADER)
            rows = ["first", "hit", "any", "miss", "all"]
            if a.by_class:
                rows += sorted(k[1] for k in tallies if k[0] == "all" and k[1].startswith("class "))
            for lab in rows:
                print(tallies[("all", lab)].row(lab))
            if name.startswith("budget"):
                last = a.rounds - 1
                for lab in ("hit", "any", "miss", "all"):
                    print(tallies[(last, lab)].row(f"last rnd {lab}"))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
