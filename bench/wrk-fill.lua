-- bench/wrk-fill.lua: fills the cache with FILL_N distinct small answers
-- (issue 6's memory workload). Each request's body carries a counter, so every
-- one is a distinct key, answered at once by the mock ("latency_ms": 0). After
-- FILL_N requests it only asks GET /healthz; side_by_side.py stops wrk with
-- SIGINT once /stats counts FILL_N entries. done() prints a FILL line with the
-- misses seen and the sum of their body bytes. Use one wrk thread (-t1).
local n = tonumber(os.getenv("FILL_N") or "1000")
local tag = os.getenv("FILL_TAG") or "fill"
local hdrs = { ["Content-Type"] = "application/json" }
local i = 0
misses = 0
body_bytes = 0
other = 0

local threads = {}
function setup(thread)
   table.insert(threads, thread)
end

-- wrk calls request() once per thread before it connects and drops that
-- request (wrk 4.1), so n + 1 bodies are made for n requests sent.
function request()
   if i <= n then
      i = i + 1
      return wrk.format("POST", "/v1/chat/completions", hdrs, string.format(
         '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"%s %d"}],' ..
         '"mock":{"latency_ms":0}}', tag, i))
   end
   return wrk.format("GET", "/healthz")
end

function response(status, headers, body)
   if status == 200 and headers["X-Cache"] == "MISS" then
      misses = misses + 1
      body_bytes = body_bytes + #body
   elseif headers["X-Cache"] then
      other = other + 1
   end
end

function done(summary, latency, requests)
   local m, b, o = 0, 0, 0
   for _, t in ipairs(threads) do
      m = m + t:get("misses")
      b = b + t:get("body_bytes")
      o = o + t:get("other")
   end
   local e = summary.errors
   io.write(string.format("FILL misses=%d body_bytes=%d other=%d errors=%d\n", m, b, o,
                          e.connect + e.read + e.write + e.status + e.timeout))
end
