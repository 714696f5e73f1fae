-- wrk script: the same chat completion over and over, answered from the cache.
-- The mock pads the answer's text by "bytes" (690 here: about 1 KB in all;
-- run-core.sh prints the size it got). run-core.sh warms the entry first, so
-- every request measured here is a hit.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
-- Keep the body on one line: run-core.sh reads it from here to warm the entry.
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"bench: a 1 KB cached answer"}],"mock":{"bytes":690,"latency_ms":0}}'
