-- wrk script for benches/compare.sh: a flood of calls no cache can answer,
-- each an account check with an account number never asked before.

thread_id = 1  -- set per thread by setup()
local counter = 0
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("thread_id", threads)
end

function request()
   counter = counter + 1
   local path = string.format(
      "/api/v1/h2h/check/rekening?bank_code=bca&account_number=%d%08d", thread_id, counter)
   return wrk.format("GET", path)
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format("RESULT %d %.3f %.1f %.1f %.1f %d %d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99), e.status,
      e.connect + e.read + e.write + e.timeout))
end
