-- bench/wrk-keys.lua: cache hits spread over BENCH_KEYS distinct chat
-- completions (bench/keys.sh), each thread cycling through all of them from
-- its own starting point; BENCH_KEYS=1 is the one-hot-key workload.
local keys = tonumber(os.getenv("BENCH_KEYS") or "1")
local tag = os.getenv("BENCH_TAG") or "keys"
local bodies = {}
for i = 1, keys do
   bodies[i] = string.format(
      '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"%s %d"}],' ..
      '"mock":{"bytes":1024,"latency_ms":0}}', tag, i)
end
local headers = {["Content-Type"] = "application/json"}
local n = 0
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("start", counter * 7919)
end

function init(args)
   n = (start or 0) % keys
end

function request()
   n = n % keys + 1
   return wrk.format("POST", "/v1/chat/completions", headers, bodies[n])
end

function done(summary, latency, requests)
   io.write(string.format("KEYS requests=%d duration_us=%d errors=%d p99_us=%d\n",
      summary.requests, summary.duration,
      summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout, latency:percentile(99)))
end
