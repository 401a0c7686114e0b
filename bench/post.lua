-- wrk script: POST one pre-generated webhook body with its signature header.
-- BENCH_BODY_FILE: the body; BENCH_SIGNATURE: the X-Hub-Signature-256 value.
-- The request is formatted once (no request() function), so wrk's own cost
-- per request stays minimal. done() prints one JSON line for bench/bench.py.
local body_file = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE unset")
local signature = assert(os.getenv("BENCH_SIGNATURE"), "BENCH_SIGNATURE unset")

local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
wrk.headers["X-GitHub-Event"] = "pull_request"
wrk.headers["X-GitHub-Delivery"] = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
wrk.headers["X-Hub-Signature-256"] = signature

-- BENCH_UNIQUE_IDS=<prefix>: every request gets its own X-GitHub-Delivery
-- (<prefix>-<thread>-<n>), for routes that deduplicate on it. Costs wrk a
-- request() call per request; the fixed request above is used otherwise.
local unique_prefix = os.getenv("BENCH_UNIQUE_IDS")
if unique_prefix and unique_prefix ~= "" then
  local threads = 0
  function setup(thread)
    threads = threads + 1
    thread:set("tid", threads)
  end
  local n = 0
  function request()
    n = n + 1
    wrk.headers["X-GitHub-Delivery"] = string.format("%s-%d-%d", unique_prefix, tid or 0, n)
    return wrk.format()
  end
end

-- BENCH_DELAY_MS=<ms>: each connection waits that long after an answer before
-- its next request, so every system gets about the same offered rate
-- (connections / (latency + delay)) instead of as much as it can take: CPU per
-- request compared at one load, not at two saturation points.
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
