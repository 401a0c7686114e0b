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
