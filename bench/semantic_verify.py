#!/usr/bin/python3
"""Bench (issue 16): hit rate and wrong-hit rate of the semantic tier on a
simulated trace, fixed thresholds against the error-budget mode.

The trace: questions drawn (Zipf-like popularity) from meaning classes
("What is the <attribute> of <thing>?"), each asked in one of a set of
wordings: near-duplicates (case, spacing, fillers, contractions, light
reordering) that pass the guards at similarities from about 0.9 to 1.0. A
fraction of the classes are ambiguous: some of their wordings mean something
else (a hard negative the guards cannot see), and the mock model, started
with a class table (`llmcached mock --classes`), answers them differently.
Ground truth is that table: a semantic hit is wrong when the answer served is
not the table's answer for the wording asked.

For each configuration a fresh mock and gateway run the same trace, one
request at a time, on 127.0.0.1. Prints one row per configuration: semantic
hits, their rate (of all requests; exact hits of repeated wordings are not
counted), served wrong hits, wrong-hit rate (of semantic hits), model calls
(misses and verifications), verification calls, and how many times the
namespace fell back to exact-only; and "wrong HIT": exact hits (X-Cache HIT)
whose answer is not the wording's, i.e. the front tier's copy of an earlier
wrong semantic hit under the request's own key (tier/set.c alias()), which
serves that wrong answer again as an exact hit, unsampled and not counted
as a semantic hit. Measures only: the exit status is 0
whenever it could run.

    nice bench/semantic_verify.py --bin build/llmcached [--requests 3000]
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

import requests

ATTRS = ["population", "capital", "boiling point", "main ingredient", "national animal",
         "highest mountain", "official language", "largest city", "currency", "founder",
         "oldest university", "national dish", "longest river", "tallest building",
         "main export", "national flower", "biggest lake", "national sport", "first king",
         "busiest port"]
THINGS = ["Canada", "Mexico", "Peru", "Norway", "Kenya", "Japan", "Chile", "Egypt", "Ireland",
          "Nepal", "Brazil", "Spain", "Ghana", "Iceland", "Vietnam", "Poland", "Morocco",
          "Finland", "Cuba", "Laos", "Oman", "Fiji", "Malta", "Chad", "Peru"]

WORDINGS = [
    lambda a, t: f"What is the {a} of {t}?",
    lambda a, t: f"what is the {a} of {t.lower()}",
    lambda a, t: f"WHAT IS THE {a.upper()} OF {t.upper()}?",
    lambda a, t: f"What's the {a} of {t}?",
    lambda a, t: f"Hey, can you tell me what the {a} of {t} is, please?",
    lambda a, t: f"Quick question: what is the {a} of {t}?",
    lambda a, t: f"Do you know the {a} of {t}?",
    lambda a, t: f"I wonder what the {a} of {t} is",
    lambda a, t: f"{t}: what is the {a}?",
    lambda a, t: f"the {a} of {t}?",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_trace(n, seed, ambiguous):
    rng = random.Random(seed)
    classes = sorted({(a, t) for a in ATTRS for t in THINGS})
    rng.shuffle(classes)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(classes))]
    amb = set(rng.sample(range(len(classes)), int(len(classes) * ambiguous)))
    # In an ambiguous class, about half the wordings (never the first) mean
    # something else.
    other = {k: {j for j in range(1, len(WORDINGS)) if rng.random() < 0.5} for k in amb}
    answers = {}
    for k, (a, t) in enumerate(classes):
        for j, w in enumerate(WORDINGS):
            q = w(a, t)
            if k in other and j in other[k]:
                answers[q] = f"That wording asks something else about {t}: see note {k}-{j % 3}."
            else:
                answers[q] = f"The {a} of {t} is fact number {k}."
    trace = []
    for k in rng.choices(range(len(classes)), weights=weights, k=n):
        a, t = classes[k]
        trace.append(WORDINGS[rng.randrange(len(WORDINGS))](a, t))
    return trace, answers


def wait_ready(url, proc, what):
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"{what} exited during start-up")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    sys.exit(f"{what} did not start")


def run(bin_, table, trace, answers, args, tmp):
    mport, gport = free_port(), free_port()
    mock = subprocess.Popen([bin_, "mock", "--listen", f"127.0.0.1:{mport}", "--latency-ms", "0",
                             "--classes", table], stderr=subprocess.DEVNULL)
    env = dict(os.environ, LLMC_UPSTREAM_KEY="sk-bench")
    gw = subprocess.Popen([bin_, "--listen", f"127.0.0.1:{gport}", "--upstream",
                           f"http://127.0.0.1:{mport}/v1", "--threads", "1", "--access-log", "off",
                           "--semantic", "on", "--semantic-judge", "exact", *args],
                          env=env, stderr=open(os.path.join(tmp, "gw.err"), "wb"))
    try:
        wait_ready(f"http://127.0.0.1:{mport}/mock/stats", mock, "mock")
        wait_ready(f"http://127.0.0.1:{gport}/healthz", gw, "gateway")
        s = requests.Session()
        hits = wrong = copies = 0
        for q in trace:
            r = s.post(f"http://127.0.0.1:{gport}/v1/chat/completions",
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]},
                       timeout=30)
            xc = r.headers.get("X-Cache")
            bad = r.json()["choices"][0]["message"]["content"] != answers[q]
            if xc == "HIT":
                copies += bad  # the front tier's copy of an earlier wrong semantic hit
            if xc != "SEMANTIC-HIT":
                continue
            hits += 1
            wrong += bad
        time.sleep(0.3)  # the last background verifications
        st = s.get(f"http://127.0.0.1:{gport}/stats", timeout=5).json()["tiers"]["semantic"]
        calls = s.get(f"http://127.0.0.1:{mport}/mock/stats", timeout=5).json()["calls"]
    finally:
        gw.terminate()
        mock.terminate()
        gw.wait()
        mock.wait()
    with open(os.path.join(tmp, "gw.err"), errors="replace") as f:
        falls = f.read().count('"fallback_exact_only"')
    return hits, wrong, calls, st["verify"]["sampled"] + st["verify"]["judge_calls"], falls, copies


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default="build/llmcached")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--ambiguous", type=float, default=0.05,
                   help="fraction of classes with hard-negative wordings")
    p.add_argument("--verify", default="0.2", help="--semantic-verify for the budget runs")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--only", default="", help="run the configurations whose name has this")
    a = p.parse_args()
    trace, answers = make_trace(a.requests, a.seed, a.ambiguous)
    configs = [(f"fixed {t}", ["--semantic-threshold", t]) for t in
               ("0.7", "0.8", "0.9", "0.95", "0.99")]
    configs += [(f"budget {b}", ["--semantic-max-error", b, "--semantic-verify", a.verify,
                                 "--semantic-verify-per-minute", "1000000"])
                for b in ("0.005", "0.01", "0.02")]
    with tempfile.TemporaryDirectory() as tmp:
        table = os.path.join(tmp, "classes.tsv")
        with open(table, "w") as f:
            for q, ans in answers.items():
                f.write(f"{q}\t{ans}\n")
        print(f"trace: {len(trace)} requests, {len(set(trace))} distinct wordings, "
              f"{a.ambiguous:.0%} of classes ambiguous, seed {a.seed}")
        print(f"{'config':<14} {'sem hits':>8} {'hit rate':>8} {'wrong':>6} {'wrong rate':>10} "
              f"{'model calls':>11} {'verify calls':>12} {'fallbacks':>9} {'wrong HIT':>9}")
        for name, args in (c for c in configs if a.only in c[0]):
            hits, wrong, calls, vcalls, fb, copies = run(a.bin, table, trace, answers, args, tmp)
            print(f"{name:<14} {hits:>8} {hits / len(trace):>8.1%} {wrong:>6} "
                  f"{(wrong / hits if hits else 0):>10.2%} {calls:>11} {vcalls:>12} {fb:>9} {copies:>9}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
