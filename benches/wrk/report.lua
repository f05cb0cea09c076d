-- wrk script for benches/compare.sh: prints one machine-readable line at the
-- end, `RESULT requests seconds rps p50_us p99_us non2xx socket_errors`.

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format("RESULT %d %.3f %.1f %.1f %.1f %d %d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99), e.status,
      e.connect + e.read + e.write + e.timeout))
end
