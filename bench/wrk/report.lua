-- Prints wrk's totals and latency percentiles as one JSON line (prefix WRKJSON).
-- WRK_DELAY_MS > 0 paces every connection: it waits that long before each request.
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")

if pause > 0 then
  delay = function()
    return pause
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, ' ..
    '"mean_us": %.1f, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency.mean, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.max))
end
