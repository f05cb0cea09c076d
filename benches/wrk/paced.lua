-- wrk script for benches/compare.sh: an approximately constant offered rate.
-- Debian's wrk has no rate option (that is wrk2's -R), so each connection
-- waits an exponentially distributed pause (mean = connections / rate) after
-- each answer before it sends again. Latency is measured from the write, so
-- the pause is not counted; with sub-millisecond answers the achieved rate is
-- within a few percent of the target and is reported as measured.
-- Usage: wrk -c 64 -s benches/wrk/paced.lua URL -- RATE CONNECTIONS

local mean_ms = 64

function init(args)
   local rate = tonumber(args[1]) or 1000
   local connections = tonumber(args[2]) or 64
   mean_ms = connections / rate * 1000
   math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function delay()
   local pause = -mean_ms * math.log(1 - math.random())
   -- wrk takes whole milliseconds: round at random so that the mean is kept.
   return math.floor(pause + math.random())
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format("RESULT %d %.3f %.1f %.1f %.1f %d %d\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50), latency:percentile(99), e.status,
      e.connect + e.read + e.write + e.timeout))
end
