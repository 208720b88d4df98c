/**
 * The Lua every rate-gate script starts with (gate-scripts.ts): the keys, the estimate of the
 * account's limit, the rate in force, accepted-traffic counting and the active clock. The gate's
 * Lua runs atomically in Redis so every worker on every machine shares one schedule and one
 * learned limit. See rate-gate.ts for the behaviour; this file is the arithmetic.
 *
 * KEYS[1]: the schedule hash (slot times, traffic buckets, slow start, strikes); expires after an
 * hour idle. KEYS[2]: the learned limit hash (per request/token kind `k` = r|t: `kW` the learned
 * limit per minute, `kE0` the estimate right after the cut, `kA` active ms since the cut, `kCut`
 * when, `kRes` when sending resumed after its drain, `kN` probes that confirmed it, `kF` the floor
 * nudges stop at, `kNudge` the last nudge, `kT0` the limit before the nudges, `kTq` 429s met at the
 * nudges' floor, `kSh` set once a nudge showed a client we cannot see shares the limit, `kDip` when
 * the last dip to half the limit started); its TTL is
 * set when a limit is learned and is not extended by traffic.
 *
 * ARGV[1..15], shared by every script: configured requests and tokens per minute, target
 * utilisation, reserve, learned TTL (ms), cubic growth coefficient (per s³, relative to the learned
 * limit), plateau hold (ms), backoff below the learned limit after a cut, slow-start initial
 * fraction, slow-start doubling time (ms), idle gap (ms) after which traffic counts as new, margin
 * kept below a learned limit, probe doubling time (ms), longest plateau hold (ms), nudge step.
 */
export const COMMON_LUA = `
local S = KEYS[1]
local L = KEYS[2]
local ceil = { r = tonumber(ARGV[1]), t = tonumber(ARGV[2]) }
local target, reserve, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local c, hold, backoff = tonumber(ARGV[6]), tonumber(ARGV[7]) / 1000, tonumber(ARGV[8])
local s0, doubling, idle = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local margin = tonumber(ARGV[12])
local probeDoubling, maxHold = tonumber(ARGV[13]), tonumber(ARGV[14]) / 1000
local nudgeStep = tonumber(ARGV[15])
local KINDS = { 'r', 't' }

-- Redis's clock, so workers on machines with skewed clocks share one timeline.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function hash(key)
  local raw, out = redis.call('HGETALL', key), {}
  for i = 1, #raw, 2 do out[raw[i]] = tonumber(raw[i + 1]) end
  return out
end
local function cbrt(x)
  if x <= 0 then return 0 end
  return x ^ (1 / 3)
end
-- Seconds from a cut until the estimate is back at the learned limit.
local function plateau_at(lw, k)
  local W = lw[k .. 'W']
  return cbrt((W - lw[k .. 'E0']) / (c * W))
end
-- Seconds the estimate holds at W before probing above it. Every probe that found the same limit
-- again (kN confirmations) doubles it, up to maxHold: each probe costs the account's other clients
-- a few 429s, and a limit confirmed again and again is probed rarely. Once a nudge has shown such
-- a client (kSh), every hold is the longest: its steady stream meets a probe's extra requests
-- seconds before ours are refused (measured: 2-4 of its requests refused per probe).
local function hold_at(lw, k)
  if lw[k .. 'Sh'] then return maxHold end
  local h = hold * 2 ^ (lw[k .. 'N'] or 0)
  if h > maxHold then h = maxHold end
  return h
end
-- How far above W the cubic probe goes before growth turns exponential.
local CUBIC_SPAN = 0.1
-- The estimate of the account's limit (per minute): back to W fast along a cubic, hold at it, then
-- probe above it slowly at first (a shared limit is met again gently, a few percent up); with no
-- 429 by +10%, W was measured low or the limit rose, and the estimate doubles every
-- probeDoubling ms, so a limit learned too low is left within seconds, not minutes.
local function estimate(lw, k)
  local W = lw[k .. 'W']
  if not W then return nil end
  local t, K = lw[k .. 'A'] / 1000, plateau_at(lw, k)
  -- A dip listens at E0 before the climb (its active clock starts below zero).
  if t < 0 then return lw[k .. 'E0'] end
  if t < K then return W + c * W * (t - K) ^ 3 end
  local H = hold_at(lw, k)
  if t < K + H then return W end
  local tau, span = t - K - H, cbrt(CUBIC_SPAN / c)
  if tau < span then return W * (1 + c * tau ^ 3) end
  return W * (1 + CUBIC_SPAN) * 2 ^ ((tau - span) * 1000 / probeDoubling)
end
-- The rate in force (per minute) for kind k: the smaller of the configured and learned limits,
-- times the target utilisation, less the reserve, ramped during slow start.
local function in_force(lw, k, ss)
  local rate = ceil[k] * target
  local e = estimate(lw, k)
  -- A learned limit was measured at the edge: keep a margin below it, and for requests at least
  -- one a second (at most a quarter of the limit). The limit may be shared with a client we cannot
  -- see; the provider counts whole requests in a 1-second window, and a neighbour's steady stream
  -- is refused far more often than we are (measured: at 13.7 a second of the 14 it left us, it saw
  -- 0.7 429s a second, 10.7% of its requests, and we almost none; at 12.7, none between probes).
  -- Kept only once a nudge had shown the neighbour, it came too late: our own 429s at 13.7 a
  -- second were one a minute, and the neighbour saw 9.6% of its requests refused.
  if e then
    local below = e * margin
    if k == 'r' and margin > 0 then
      local floor = 60
      if floor > e * 0.25 then floor = e * 0.25 end
      if below < floor then below = floor end
    end
    -- Once a nudge has shown a neighbour, one nudge step (10%): nudges step down from a limit
    -- learned while the neighbour was refused, and one step could leave us at 13.4 a second of the
    -- 14 it left (it saw 8.72% of its requests refused), two at 13.0 (none). The limit is not known
    -- closer than a step, so the margin is one.
    if margin > 0 and lw[k .. 'Sh'] and below < e * nudgeStep then below = e * nudgeStep end
    if e - below < rate then rate = e - below end
  end
  rate = rate * (1 - reserve)
  if ss then
    local f = s0 * 2 ^ (ss / doubling)
    if f < 1 then rate = rate * f end
  end
  return rate
end
-- Traffic in 100 ms buckets by the time each request was sent (a ring of 34: the last three full
-- seconds, the current bucket and slots booked up to 300 ms ahead). Per bucket: au slots booked
-- that their callers left unsent, ar and at requests and tokens the provider accepted (every
-- other booked slot is presumed sent: a process reports only what it left unsent, so counts that
-- reach Redis late never make a request in flight look unsent). The provider counts
-- arrivals, so the send time is what matters: counted at completion, responses bunched by latency
-- jitter showed 22 accepted in a second of a 20-a-second limit, and that became a learned limit
-- above the real one.
local RING = 34
-- The ring index of bucket bid (-1: now), reset when it held an older bucket; nil when the bucket
-- is out of the ring's range or already overwritten by a newer one.
local function bucket_index(now, bid)
  local id = math.floor(now / 100)
  if bid < 0 then bid = id end
  if bid > id + 3 then bid = id + 3 end
  if bid <= id - 31 then return nil end
  local i = bid % RING
  local held = tonumber(redis.call('HGET', S, 'ab' .. i) or '-1')
  if held > bid then return nil end
  if held < bid then redis.call('HSET', S, 'ab' .. i, bid, 'au' .. i, 0, 'ar' .. i, 0, 'at' .. i, 0) end
  return i
end
-- A process's folded counts: "bucket:unsent:accepted:tokens,..." (bucket -1: now).
local function record(now, folded)
  for b, u, r, t in string.gmatch(folded, '(-?%d+):(%d+):(%d+):([%d.]+)') do
    local i = bucket_index(now, tonumber(b))
    if i then
      if u ~= '0' then redis.call('HINCRBY', S, 'au' .. i, u) end
      if r ~= '0' then
        redis.call('HINCRBY', S, 'ar' .. i, r)
        redis.call('HINCRBYFLOAT', S, 'at' .. i, t)
      end
    end
  end
end
-- What the provider let through in one second, per minute, from the 100 ms buckets (by send time),
-- read once for both estimates.
-- Slots the schedule booked that were never sent (a worker whose busy event loop woke up late for
-- them, a caller that gave up) were not refused, and count as accepted. Counting only what
-- starved workers managed to send, a 429 taught a limit below the account's, which starved them
-- further (measured: 900 a minute learned as 420, then nudged to 240, on random RateQuota 429s
-- while the event loop was busy two thirds of the time); TCP BBR likewise does not let
-- sender-limited samples lower its estimate. Requests still in flight are not credited: a probe's
-- last ones, credited as accepted, once learned more than another client left. Tokens are scaled
-- by the same factor.
-- best: the most in any 1-second window of the last three seconds (the current bucket left out):
-- the delivery-rate estimate, a windowed max as TCP BBR keeps. A mean is dragged down by a second
-- the senders left short (a drained schedule) and then becomes a learned limit far below the real
-- one; the best window is what the provider demonstrably let through.
-- recent: the most recent window whose requests have all come back (sent 0.5 to 1.5 s ago), what
-- the provider lets through now, after a fall.
local function accepted_per_minute(now)
  local id = math.floor(now / 100)
  local r, t, u = {}, {}, {}
  for back = 1, 30 do
    local bid = id - back
    local i = bid % RING
    local b = redis.call('HMGET', S, 'ab' .. i, 'ar' .. i, 'at' .. i, 'au' .. i)
    if tonumber(b[1] or '-1') == bid then
      r[back], t[back], u[back] = tonumber(b[2] or '0'), tonumber(b[3] or '0'), tonumber(b[4] or '0')
    else
      r[back], t[back], u[back] = 0, 0, 0
    end
  end
  local function window(last)
    local wr, wt, unsent = 0, 0, 0
    for back = last, last + 9 do
      wr, wt, unsent = wr + r[back], wt + t[back], unsent + u[back]
    end
    if unsent > 0 then
      if wr > 0 then wt = wt * (wr + unsent) / wr end
      wr = wr + unsent
    end
    return wr, wt
  end
  local recentR, recentT = window(6)
  local bestR, bestT = 0, 0
  for last = 1, 21 do
    local wr, wt = window(last)
    if wr > bestR then bestR = wr end
    if wt > bestT then bestT = wt end
  end
  return { best = { r = bestR * 60, t = bestT * 60 }, recent = { r = recentR * 60, t = recentT * 60 } }
end
-- After an idle gap, traffic starts again at the learned limit (no probing overshoot: each learned
-- kind's probe clock goes back to its plateau), or with a slow start when nothing is learned.
-- Changes lw only; returns the slow-start clock: nil, or 0 to start one.
local function restart_after_idle(lw)
  if not (lw.rW or lw.tW) then return 0 end
  for _, k in ipairs(KINDS) do
    if lw[k .. 'W'] then
      local K = plateau_at(lw, k) * 1000
      if lw[k .. 'A'] > K then lw[k .. 'A'] = K end
    end
  end
  return nil
end
-- Moves the active clock (time with traffic) forward, restarting it after an idle gap.
local function advance(now, lw)
  local seen = tonumber(redis.call('HGET', S, 'seen') or '0')
  local ss = tonumber(redis.call('HGET', S, 'ss') or 'nil')
  local rTat = tonumber(redis.call('HGET', S, 'rTat') or '0')
  local tTat = tonumber(redis.call('HGET', S, 'tTat') or '0')
  local gap = now - seen
  -- Idle: no call for a while, and no slot booked into that while either. A caller waiting
  -- seconds for its token slot asks again only every few seconds (its process's booking loop):
  -- counted as idle, each of its calls started the slow start again, and a single worker told the
  -- account's true TPM, its requests of ~6,600 tokens five seconds apart at a tenth of it, never
  -- left it (measured: 59.5% of 2,000 long lines in 10 minutes, where 66 s were due).
  local booked = math.max(rTat, tTat)
  if seen == 0 or (gap > idle and booked < now - idle) then
    gap = 0
    ss = restart_after_idle(lw)
    if ss == nil then redis.call('HDEL', S, 'ss') end
  end
  if gap < 0 then gap = 0 end
  -- The clocks run only while callers queue for slots: a rate nobody tried to use is untested,
  -- and growing it would let a burst of demand meet a rate far above the limit (as TCP's
  -- congestion window validation holds cwnd while an application sends little). Callers queue for
  -- token slots too: where tokens bind (the token schedule is the later one), requests leave
  -- seconds apart and the request schedule alone looked idle, so after a token cut the clock ran
  -- 3.6 s in 28 and the gate sat at a sixth of the limit for minutes.
  local tokensQueue = tTat > rTat and tTat >= now - 1000
  if rTat + 2 * 60000 / in_force(lw, 'r', ss) < now and not tokensQueue then gap = 0 end
  for _, k in ipairs(KINDS) do
    if lw[k .. 'W'] then
      lw[k .. 'A'] = lw[k .. 'A'] + gap
      local e = estimate(lw, k)
      if e >= 2 * ceil[k] and lw[k .. 'A'] / 1000 > plateau_at(lw, k) then
        -- Probed up to the configured limit, and a doubling past it (the rate in force stays at the
        -- ceiling), without a 429: the learned limit no longer applies. Dropped the moment the
        -- estimate met the ceiling, the 429s of the overshoot came back to a gate that had
        -- forgotten the limit and started over from the configured one.
        redis.call('HDEL', L, k .. 'W', k .. 'E0', k .. 'A', k .. 'Cut', k .. 'Res', k .. 'N', k .. 'F', k .. 'Nudge', k .. 'T0', k .. 'Tq', k .. 'Sh', k .. 'Dip')
        lw[k .. 'W'] = nil
      else
        redis.call('HSET', L, k .. 'A', lw[k .. 'A'])
      end
    end
  end
  if ss then
    -- At most one doubling a call: the slow start doubles as what it sent comes back accepted, and
    -- after seconds of waiting for one token slot a rate 32 times as high would meet the limit
    -- with nothing sent at the rates between.
    ss = ss + math.min(gap, doubling)
    if s0 * 2 ^ (ss / doubling) >= 1 then
      ss = nil
      redis.call('HDEL', S, 'ss')
    else
      redis.call('HSET', S, 'ss', ss)
    end
  end
  redis.call('HSET', S, 'seen', now)
  return ss
end
-- Applies a process's folded settlements: slots left unsent, accepted requests, and the token
-- schedule's correction.
local function settle(now, lw, ss, folded, delta)
  record(now, folded)
  if delta ~= 0 then
    local tTat = tonumber(redis.call('HGET', S, 'tTat') or '0')
    if tTat < now - 1000 then tTat = now - 1000 end
    tTat = tTat + delta * 60000 / in_force(lw, 't', ss)
    -- The provider's window is a minute: no correction books tokens further ahead than that. (One
    -- response claiming 10^12 tokens put the schedule 292 days ahead, and every job stopped.)
    if tTat > now + 60000 then tTat = now + 60000 end
    redis.call('HSET', S, 'tTat', tTat)
  end
end
`;
