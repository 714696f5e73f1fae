"""The tutorial-style FastAPI /ask app (issue 6, peer e): a dict cache with a
TTL in front of a slow "model" that is only `await asyncio.sleep`, as in the
caching tutorial in /work/shared/SEED.txt. side_by_side.py runs it with
uvicorn twice: plain (asyncio loop, h11) and in its best configuration
(uvloop, httptools). ASK_LLM_SECONDS sets the model's delay (default 2).
"""
import asyncio
import os
from datetime import datetime, timedelta

from fastapi import FastAPI

LLM_SECONDS = float(os.environ.get("ASK_LLM_SECONDS", "2"))

app = FastAPI()
cache = {}


def get_cached(key: str):
    entry = cache.get(key)
    if entry is None:
        return None
    if datetime.utcnow() < entry["expires_at"]:
        return entry["value"]
    del cache[key]  # expired
    return None


def set_cached(key: str, value, ttl_seconds: int = 300):
    cache[key] = {"value": value,
                  "expires_at": datetime.utcnow() + timedelta(seconds=ttl_seconds)}


async def call_llm(prompt: str) -> str:
    await asyncio.sleep(LLM_SECONDS)  # the model, simulated
    return f"Mock answer to: {prompt}"


@app.get("/ask")
async def ask(q: str):
    cached = get_cached(q)
    if cached:
        return {"answer": cached, "source": "cache"}
    answer = await call_llm(q)
    set_cached(q, answer)
    return {"answer": answer, "source": "llm"}


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
