-- bench/wrk-bench.lua: one request over and over (issue 6's hit workload).
-- side_by_side.py sets BENCH_METHOD, BENCH_PATH and BENCH_BODY_FILE (the JSON
-- body, when there is one) and reads the BENCH line that done() prints:
-- request count, duration and the p50/p99/p99.9 latency in microseconds.
local body_file = os.getenv("BENCH_BODY_FILE")
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.path = os.getenv("BENCH_PATH") or "/"
if body_file and body_file ~= "" then
   local f = assert(io.open(body_file, "rb"))
   wrk.body = f:read("*a")
   f:close()
   wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d " ..
      "connect=%d read=%d write=%d status=%d timeout=%d\n",
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
