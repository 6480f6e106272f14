-- wrk script for bench/ingest.py: sends distinct, Stripe-signed invoice.paid events.
--
-- bench/ingest.py writes, into $BENCH_DIR, the body split around its event number
-- (head, mid, tail: body = head .. n .. mid .. n .. tail, n = "%07d") and one
-- Stripe-Signature header per event (sigs, line n + 1). Request k of this run is event
-- ($BENCH_OFFSET + k) mod #sigs, so run wrk with one thread (-t1). Answers are counted by
-- status and, for a 2xx, by the "status" of the JSON body; the delivery ids of
-- "queued"/"duplicate" answers are kept. done() writes everything as JSON to $BENCH_RESULT.
--
-- With $BENCH_RATE set (requests a second), requests go out on a fixed schedule, one every
-- 1/rate seconds whichever connection is free, rather than as fast as the server answers:
-- the latency a sender sees at that load. wrk times each request from when it is written,
-- so this holds while a connection is free at each slot (64 connections at 1,000/s: each is
-- needed every 64 ms); a stall longer than that still shows in the requests it holds.

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

local function slurp(name)
  local file = assert(io.open(os.getenv("BENCH_DIR") .. "/" .. name, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

function init(_)
  head, mid, tail = slurp("head"), slurp("mid"), slurp("tail")
  sigs = {}
  for line in io.lines(os.getenv("BENCH_DIR") .. "/sigs") do
    sigs[#sigs + 1] = line
  end
  start = tonumber(os.getenv("BENCH_OFFSET"))
  sent, counts, acked = 0, {}, {}
  prefix = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"]
    .. "\r\nContent-Type: application/json; charset=utf-8"
    .. "\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    .. "\r\nStripe-Signature: "
end

local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate then
  local ffi = require("ffi")
  ffi.cdef([[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock, bench_timespec *now);
  ]])
  local now_ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, now_ts) -- CLOCK_MONOTONIC
    return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
  end
  local slot -- when the last request was scheduled, ms

  function delay()
    local now = now_ms()
    slot = math.max(now, (slot or now) + 1000 / rate)
    return math.floor(slot - now + 0.5)
  end
end

function request()
  local i = (start + sent) % #sigs
  sent = sent + 1
  local n = string.format("%07d", i)
  local body = head .. n .. mid .. n .. tail
  return prefix .. sigs[i + 1] .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end

function response(status, _, body)
  local key = tostring(status)
  if status >= 200 and status < 300 then
    local answer = string.match(body, '"status":"(%a+)"') or "?"
    key = key .. " " .. answer
    if answer == "queued" or answer == "duplicate" then
      acked[#acked + 1] = tonumber(string.match(body, '"id":(%d+)'))
    end
  end
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, _)
  local sent, counts, ids = 0, {}, {}
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("sent")
    for key, count in pairs(thread:get("counts")) do
      counts[key] = (counts[key] or 0) + count
    end
    for _, id in ipairs(thread:get("acked")) do
      ids[#ids + 1] = tostring(id)
    end
  end
  local answers = {}
  for key, count in pairs(counts) do
    answers[#answers + 1] = string.format('"%s": %d', key, count)
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_RESULT"), "w"))
  out:write(string.format(
    '{"duration_us": %d, "requests": %d, "sent": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "socket_errors": %d, "answers": {%s}, "acked": [%s]}\n',
    summary.duration, summary.requests, sent,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout,
    table.concat(answers, ", "), table.concat(ids, ",")))
  out:close()
end
