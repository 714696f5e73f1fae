#!/usr/bin/env python3
"""
corpus.py: a realistic corpus of cached answers for the compression-at-rest
measurements (issue 18), generated from a fixed seed so every run sees the
same bytes.

  bench/corpus.py OUTDIR [--seed 18] [--train 3000] [--measure 2000]

writes OUTDIR/train/NNNNN.json and OUTDIR/measure/NNNNN.json: one upstream
answer body per file, as an OpenAI-compatible upstream returns it:
  - chat.completion answers (about 70%), 300-4,000 bytes, whose text is
    built word by word from a vocabulary and sentence grammar below, so no
    two answers repeat the same sentences;
  - chat.completion answers that call tools (about 10%), with JSON
    arguments;
  - embeddings answers (about 20%) of 256, 512, 768, 1,024 or 1,536
    dimensions, numbers printed the way the OpenAI API prints them.
Training and measuring sets come from disjoint random streams, and a
sentence is never emitted twice across the whole corpus (checked), so the
dictionary is never measured on text it was trained on.
"""
import argparse
import json
import os
import random
import string

SUBJECTS = """the function the server the cache the request the model the user the
database the index the worker the client the query the scheduler the parser the
network the team the report the result the compiler the kernel the queue the
budget the contract the invoice the patient the student the recipe the garden
the engine the planet the river the city the museum the council the library the
algorithm the customer the developer the migration the test suite the browser
the protocol the thread pool the payment the shipment the forecast""".split("\n")
SUBJECTS = [s.strip() for line in SUBJECTS for s in line.split("the ") if s.strip()]
VERBS = """returns stores reads writes checks updates sends receives measures
reduces improves explains describes compares replaces validates schedules
computes caches indexes summarizes translates rejects accepts delays retries
balances encrypts compresses parses renders records estimates predicts
recommends supports requires allows prevents triggers handles""".split()
OBJECTS = """the response the value a timestamp the configuration each record
the old version a summary the error message the total cost the latest data a
new token the primary key every field the user profile the shopping list a
short paragraph the monthly report the first chapter the quarterly numbers an
empty string the final answer a detailed plan the test results two options the
missing file the network latency the memory usage the disk space the weather
data the exchange rate the opening hours the delivery date a list of steps the
main argument the key findings a bounded queue the access log""".split("the ")
OBJECTS = [o.strip() for o in " ".join(OBJECTS).split("  ") if o.strip()]
OBJECTS = [w.strip() for w in """the response|the value|a timestamp|the configuration|each record|the old version|a summary|the error message|the total cost|the latest data|a new token|the primary key|every field|the user profile|the shopping list|a short paragraph|the monthly report|the first chapter|the quarterly numbers|an empty string|the final answer|a detailed plan|the test results|two options|the missing file|the network latency|the memory usage|the disk space|the weather data|the exchange rate|the opening hours|the delivery date|a list of steps|the main argument|the key findings|a bounded queue|the access log""".split("|")]
ADVERBS = """quickly carefully silently often rarely always usually correctly
eventually immediately safely gradually directly""".split()
CLAUSES = """when the input is large|before the deadline|after every restart|if the
key is missing|unless the cache is cold|while the queue drains|because the limit
was reached|so that nothing is lost|even under heavy load|without blocking the
loop|as soon as possible|for each new customer|during the night|in most cases|at
the end of the month|with a small overhead|on the second attempt|in a single
pass""".replace("\n", " ").split("|")
OPENERS = ["Sure!", "Certainly.", "Here is an overview.", "Great question.",
           "Let me explain.", "In short:", "Here's what I found.", "Good point."]
NAMES = ["Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hiro", "Ines", "Jamal"]
MODELS = ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06", "gpt-4.1-mini-2025-04-14"]
EMB_MODELS = ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"]
TOOLS = [("get_weather", ["location", "unit"]), ("search_orders", ["customer_id", "status", "limit"]),
         ("create_event", ["title", "start", "duration_minutes"]),
         ("lookup_stock", ["symbol", "exchange"]), ("send_email", ["to", "subject", "body"])]


class Text:
    """Sentences from a small grammar; each sentence emitted at most once."""

    def __init__(self, rng, seen):
        self.rng, self.seen = rng, seen

    def sentence(self):
        r = self.rng
        for _ in range(1000):
            parts = [r.choice(SUBJECTS).capitalize() if not r.random() < 0.2 else
                     r.choice(NAMES), r.choice(VERBS)]
            if r.random() < 0.5:
                parts.insert(1, r.choice(ADVERBS))
            parts.append(r.choice(OBJECTS))
            if r.random() < 0.6:
                parts.append(r.choice(CLAUSES))
            if r.random() < 0.3:
                parts.append("(about %d%s)" % (r.randint(2, 9999), r.choice(["%", " ms", " items", " MB", " USD"])))
            s = " ".join(parts)
            s = s[0].upper() + s[1:] + r.choice([".", ".", ".", "!", "?"] if r.random() < 0.1 else ["."])
            if s not in self.seen:
                self.seen.add(s)
                return s
        raise RuntimeError("grammar exhausted")

    def answer(self, target):
        r = self.rng
        out = [r.choice(OPENERS)] if r.random() < 0.5 else []
        n = 0
        while sum(len(s) + 1 for s in out) < target:
            if r.random() < 0.15:
                out.append("\n\n%d. **%s**:" % (n + 1, r.choice(SUBJECTS).title()))
                n += 1
            elif r.random() < 0.08:
                out.append("\n\n")
            out.append(self.sentence())
        return " ".join(out).replace(" \n\n ", "\n\n")


def rid(rng, prefix, n=29):
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def chat(rng, text):
    target = int(rng.uniform(1, 1) * rng.choice([120, 250, 400, 700, 1000, 1500, 2200, 3200]))
    target = max(60, int(target * rng.uniform(0.7, 1.2)))
    content = text.answer(target)
    pt, ct = rng.randint(12, 900), max(1, len(content) // 4)
    body = {
        "id": rid(rng, "chatcmpl-"), "object": "chat.completion",
        "created": rng.randint(1718000000, 1760000000), "model": rng.choice(MODELS),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content,
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": rng.choice(["stop"] * 9 + ["length"])}],
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": rid(rng, "fp_", 10),
    }
    return json.dumps(body, indent=2 if rng.random() < 0.5 else None)


def tool_call(rng, text):
    calls = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        name, params = rng.choice(TOOLS)
        args = {}
        for p in params:
            if p in ("limit", "duration_minutes"):
                args[p] = rng.randint(1, 240)
            elif p == "body":
                args[p] = text.answer(rng.randint(80, 600))
            elif p == "start":
                args[p] = "2026-%02d-%02dT%02d:00:00Z" % (rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23))
            else:
                args[p] = rng.choice([rid(rng, "", 8), rng.choice(NAMES), text.sentence()[:40]])
        calls.append({"id": rid(rng, "call_", 24), "type": "function",
                      "function": {"name": name, "arguments": json.dumps(args)}})
    pt = rng.randint(80, 1500)
    body = {
        "id": rid(rng, "chatcmpl-"), "object": "chat.completion",
        "created": rng.randint(1718000000, 1760000000), "model": rng.choice(MODELS),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": calls,
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": pt, "completion_tokens": 20 * len(calls), "total_tokens": pt + 20 * len(calls)},
        "system_fingerprint": rid(rng, "fp_", 10),
    }
    return json.dumps(body, indent=2 if rng.random() < 0.5 else None)


def embedding(rng):
    dim = rng.choice([256, 512, 768, 1024, 1536])
    n = rng.choice([1, 1, 1, 2, 4])
    data = []
    for i in range(n):
        vec = [rng.gauss(0, 0.035) for _ in range(dim)]
        data.append('    {\n      "object": "embedding",\n      "index": %d,\n      "embedding": [\n%s\n      ]\n    }'
                    % (i, ",\n".join("        %s" % repr(round(v, rng.choice([8, 9, 10]))) for v in vec)))
    pt = rng.randint(3, 400)
    return ('{\n  "object": "list",\n  "data": [\n%s\n  ],\n  "model": "%s",\n  "usage": {\n'
            '    "prompt_tokens": %d,\n    "total_tokens": %d\n  }\n}\n'
            % (",\n".join(data), rng.choice(EMB_MODELS), pt, pt))


def one(rng, text):
    x = rng.random()
    if x < 0.7:
        return chat(rng, text)
    if x < 0.8:
        return tool_call(rng, text)
    return embedding(rng)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--measure", type=int, default=2000)
    a = ap.parse_args()
    seen = set()  # shared: no sentence in both parts
    for part, n, seed in (("train", a.train, a.seed), ("measure", a.measure, a.seed + 1000003)):
        rng = random.Random(seed)
        text = Text(rng, seen)
        d = os.path.join(a.outdir, part)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            with open(os.path.join(d, "%05d.json" % i), "w") as f:
                f.write(one(rng, text))


if __name__ == "__main__":
    main()
