/**
 * The rate gate's scripts: reserve a slot, pay for a late one, report a 429, read the state. Each starts with the
 * shared Lua of gate-common-lua.ts (keys, arguments, estimate and rate in force); see rate-gate.ts
 * for the behaviour.
 */
import { COMMON_LUA } from './gate-common-lua.js';

/**
 * ARGV[16] estimated tokens of each request to book, comma-separated (in the order of the callers
 * waiting), [17..18] folded settlements (slots left unsent and requests accepted, by send bucket;
 * token correction), [19] booking horizon ms. Books evenly spaced slots for as many of the
 * requests as start within the horizon.
 * Returns Redis's time, both rates in force, the ms until the next free slot enters the horizon
 * (-1 when every request was booked) and each booked slot's time (Redis clock), in order.
 */
export const RESERVE_LUA = `${COMMON_LUA}
local now = now_ms()
local lw = hash(L)
local ss = advance(now, lw)
settle(now, lw, ss, ARGV[17], tonumber(ARGV[18]))
local rr, rt = in_force(lw, 'r', ss), in_force(lw, 't', ss)
local rTat = tonumber(redis.call('HGET', S, 'rTat') or '0')
local tTat = tonumber(redis.call('HGET', S, 'tTat') or '0')
redis.call('PEXPIRE', S, 3600000)
-- Slots are booked at most a short horizon ahead, so a new rate (a cut, a ramp) applies within it
-- rather than after every queued caller has left at the old one.
local horizon = tonumber(ARGV[19])
local out = { tostring(now), tostring(rr), tostring(rt), '-1' }
for estimate in string.gmatch(ARGV[16], '[^,]+') do
  local send = now
  if rTat > send then send = rTat end
  if tTat > send then send = tTat end
  if send - now > horizon then
    out[4] = tostring(send - now - horizon)
    break
  end
  rTat = send + 60000 / rr
  tTat = send + tonumber(estimate) * 60000 / rt
  out[#out + 1] = tostring(send)
end
if #out > 4 then redis.call('HSET', S, 'rTat', rTat, 'tTat', tTat) end
return out
`;

/**
 * ARGV[16] how late a request left after its slot (ms), [17..18] folded settlements. Its request
 * stays in DashScope's 1-second window that much longer: the request schedule gives up its next
 * free slot, and the token schedule, where it is booked ahead, moves on by the lateness (the
 * request's tokens end that much later), no more. Booked as a slot at the token schedule's end,
 * the empty slot pinned the request schedule there, and tokens given back could not bring the
 * next slot forward: four token-bound callers that all woke late sent a quarter of the token limit.
 * Returns Redis's time and the request slot given up, or -1 when none was: the token schedule
 * lies past it, and the next request waits for tokens anyway.
 */
export const LATE_LUA = `${COMMON_LUA}
local now = now_ms()
local lw = hash(L)
local ss = advance(now, lw)
settle(now, lw, ss, ARGV[17], tonumber(ARGV[18]))
local lateMs = tonumber(ARGV[16])
local rTat = tonumber(redis.call('HGET', S, 'rTat') or '0')
local tTat = tonumber(redis.call('HGET', S, 'tTat') or '0')
local slot = math.max(now, rTat)
rTat = slot + 60000 / in_force(lw, 'r', ss)
if tTat > now then tTat = tTat + lateMs end
redis.call('HSET', S, 'rTat', rTat, 'tTat', tTat)
redis.call('PEXPIRE', S, 3600000)
if tTat >= rTat then return { tostring(now), '-1' } end
return { tostring(now), tostring(slot) }
`;

/**
 * ARGV[16] kind (r, t or b for burst), [17] strikes that cut a limit believed right, [18] strike
 * window ms, [19] cooldown ms, [20..21] folded settlements, [22] the refused request's estimated
 * tokens, [23] how long a dip listens (ms of traffic). Returns the action (skip, nudge, dip,
 * restore, cut) and, after a skip, why (rate-gate.ts's SkipReason), after anything else the learned limit and the
 * new rate in force. S's `kImm`: nudges off until then; `kSAt`/`kS` and `kLAt`/`kL`: the strike
 * windows (one and five strike windows long).
 */
export const THROTTLED_LUA = `${COMMON_LUA}
local now = now_ms()
local lw = hash(L)
local ss = advance(now, lw)
settle(now, lw, ss, ARGV[20], tonumber(ARGV[21]))
local k = ARGV[16]
local cooldown = tonumber(ARGV[19])
local listen = tonumber(ARGV[23])
local requestTokens = tonumber(ARGV[22])
if requestTokens < 1 then requestTokens = 1 end
-- Only a 429 that meets a saturated schedule (callers queueing for slots) says something about the
-- rate: under a schedule with slack the sending was limited by demand (a job starting, a shard
-- being written), and the best second's count would be that demand, not the account's limit (as
-- TCP BBR drops app-limited samples). Such 429s, a provider's passing refusals, only skip a slot.
local function saturated(kind)
  if kind == 'r' then
    return tonumber(redis.call('HGET', S, 'rTat') or '0') + 2 * 60000 / in_force(lw, 'r', ss) >= now
  end
  return tonumber(redis.call('HGET', S, 'tTat') or '0') >= now - 1000
end
local demandLimited = k ~= 'b' and not saturated(k)
-- Every 429 gives up the next request slot for everyone: the window it hit is full.
local rTat = tonumber(redis.call('HGET', S, 'rTat') or '0')
if rTat < now then rTat = now end
redis.call('HSET', S, 'rTat', rTat + 60000 / in_force(lw, 'r', ss))
if k == 'b' then return { 'skip', 'burst' } end
if demandLimited then return { 'skip', 'demand-limited' } end
local W0 = lw[k .. 'W']
-- Set when nudging did not stop the 429s (below): they do not depend on our rate (a provider's
-- passing refusals, injected faults), so single ones neither nudge nor end a probe for a while.
local immune = tonumber(redis.call('HGET', S, k .. 'Imm') or '0') > now
-- Counts this 429 in a window that opens at a strike and lasts windowMs; returns the count in it.
local function strike(atField, countField, windowMs)
  local at = tonumber(redis.call('HGET', S, atField) or '0')
  local count = tonumber(redis.call('HGET', S, countField) or '0')
  if now - at > windowMs then
    at = now
    count = 0
  end
  count = count + 1
  redis.call('HSET', S, atField, at, countField, count)
  return count
end
-- Strikes count within one window. (Counted over three under a learned limit, 5% random 429s made
-- a cluster every ~10 s, and each cut started the nudges below afresh, so they never reached the
-- floor that shows such 429s do not depend on the rate: 900 a minute fell to 192 in 35 s. 429s
-- that keep coming one or two a second under a limit learned too high are what nudges are for.)
local strikeWindow = tonumber(ARGV[18])
local strikes = strike(k .. 'SAt', k .. 'S', strikeWindow)
-- And over five strike windows: 429s that keep coming about one a second never make three in one
-- window, yet at a configured limit nothing else hears them (single ones only skip a slot there).
-- Measured: told the account's 15 a second while another client sent 4.5 of them, embedq met
-- one 429 a second for 12 s, never clustered, and the other client saw 1-5 of its 4.5 refused
-- every second.
local longWindow = 5 * strikeWindow
local longStrikes = strike(k .. 'LAt', k .. 'L', longWindow)
-- 429s right after a cut come from requests sent before it; so do those right after a dip (below),
-- which, counted as a cluster, cut below the half it listens at.
if now - (lw[k .. 'Cut'] or 0) < cooldown then return { 'skip', 'after-cut' } end
local listening = lw[k .. 'Dip'] and lw[k .. 'A'] < 0
if listening and now - (lw[k .. 'Nudge'] or 0) < cooldown then return { 'skip', 'after-nudge' } end
local e = estimate(lw, k)
-- Probing above a learned limit: the first 429 ends the probe. Each probe takes slots the
-- account's other clients were using; waiting for a cluster of our own 429s let them see as many.
local probing = ss == nil and e ~= nil and e > W0
local ramping = ss ~= nil or probing
local accepted = accepted_per_minute(now)
local acceptedPerSecond = accepted.best.r / 60
local cluster = probing and not immune
if probing and immune then cluster = strikes >= tonumber(ARGV[17]) and strikes >= 0.05 * acceptedPerSecond end
-- Ramping up from a slow start, a real overshoot brings 429s by the handful within a second; one or
-- two among many accepted are a provider's passing refusals, and ending the ramp on them left jobs
-- crawling at a tenth of their limit (measured: 1,200 QPM learned as 60 on 5% random 429s).
if ss ~= nil then cluster = strikes >= tonumber(ARGV[17]) and strikes >= 0.05 * acceptedPerSecond end
-- At a limit believed right, a cluster means at least 3 and at least 10% of a second's accepted
-- requests: a few 429s among many are jitter (bunched arrivals on a busy machine), and cutting for
-- them cost 10-20% of a right limit for tens of seconds.
if not ramping then cluster = strikes >= tonumber(ARGV[17]) and strikes >= 0.1 * acceptedPerSecond end
-- At a configured limit, 429s that keep coming (five within five windows, and 3% of what was
-- accepted meanwhile) are a cluster too: the limit is not what we were told, or another client
-- shares it. Jitter at the right limit stays below it (0.1-0.5% of the requests in the bench), and
-- under a learned limit such 429s nudge it instead (below).
if not ramping and not W0 and not immune and longStrikes >= 5 and longStrikes >= 0.03 * acceptedPerSecond * longWindow / 1000 then
  cluster = true
end
if not cluster then
  -- Too few for a cluster under a learned limit: a client we cannot see may share it. Every such
  -- 429 nudges the limit down a step (at most once per cooldown) until they stop: a neighbour's
  -- requests arrive between ours, and it was refused far more often than we were (measured: at
  -- 13.7 of the 14 a second it left us, it saw 0.6 429s a second, we 0.2). At a configured limit
  -- they only skip a slot: there, told the right quota, two jittery 429s within two seconds
  -- nudged 6,000 QPM to 5,238 for the rest of a run. A floor (80% of the limit last cut to)
  -- bounds what random refusals, which no rate avoids, can take.
  if ramping then return { 'skip', 'no-cluster-ramping' } end
  if not W0 then return { 'skip', 'no-cluster-configured' } end
  if now - (lw[k .. 'Nudge'] or 0) < cooldown then return { 'skip', 'after-nudge' } end
  if immune then return { 'skip', 'immune' } end
  -- These 429s do not depend on our rate (a provider's passing throttling, injected faults): give
  -- back the limit the nudges started from and, for five minutes, turn nudges off and let only
  -- clusters end probes, so random 429s cost a few seconds at a lower rate instead of a fifth of
  -- the rate for good (and probes, ended by each one, could not win it back).
  local T0 = lw[k .. 'T0'] or W0
  local function restore()
    redis.call('HSET', S, k .. 'Imm', now + 300000)
    redis.call('HSET', L, k .. 'W', T0, k .. 'E0', T0, k .. 'F', T0 * 0.8)
    redis.call('HDEL', L, k .. 'T0', k .. 'Tq', k .. 'Sh', k .. 'Dip')
    lw[k .. 'W'], lw[k .. 'E0'], lw[k .. 'Sh'] = T0, T0, nil
    return { 'restore', tostring(T0), tostring(in_force(lw, k, ss)) }
  end
  -- Refused while the dip listens (below): a neighbour would have stopped colliding.
  if listening then return restore() end
  local W = W0 * (1 - nudgeStep)
  local floor = lw[k .. 'F'] or W0 * 0.8
  if W < floor then W = floor end
  if W >= W0 then
    -- At the floor and still refused. A neighbour may need more than the fifth of the limit the
    -- nudges give up, or the 429s may not depend on our rate at all; only a lower rate tells them
    -- apart. Dip to half the limit the nudges started from and listen there for listen ms of
    -- traffic: 429s then are not a neighbour's (restore, above); none, and the neighbour's room lies
    -- between the floor and half, so the estimate climbs from half along the cubic to the middle,
    -- the new limit, and half becomes the floor. Without the dip, nudges stopped at 80% and three
    -- 429s there gave the limit back: a neighbour sending 3 of the 10 a second embedq had learned
    -- alone saw 16% of its requests refused for two minutes. (Listening during the climb, the
    -- neighbour's requests met ours at the middle's edge: 7.7 s in, a 429 took the limit back.)
    if floor > T0 * 0.55 then
      local low, middle = T0 * 0.5, T0 * 0.65
      lw[k .. 'W'], lw[k .. 'E0'], lw[k .. 'A'], lw[k .. 'F'], lw[k .. 'Sh'] = middle, low, -listen, low, 1
      redis.call('HSET', L, k .. 'W', middle, k .. 'E0', low, k .. 'A', -listen, k .. 'F', low, k .. 'T0', T0, k .. 'Nudge', now, k .. 'Dip', now, k .. 'Sh', 1)
      redis.call('HDEL', L, k .. 'Tq')
      return { 'dip', tostring(middle), tostring(in_force(lw, k, ss)) }
    end
    -- At the floor a dip set (the neighbour's room): three 429s there give the limit back.
    local atFloor = (lw[k .. 'Tq'] or 0) + 1
    if atFloor < 3 then
      redis.call('HSET', L, k .. 'Tq', atFloor)
      return { 'skip', 'at-floor' }
    end
    return restore()
  end
  -- The limit before the first nudge, to give back if nudging does not help.
  if not lw[k .. 'T0'] then redis.call('HSET', L, k .. 'T0', W0) end
  local E0 = lw[k .. 'E0'] or W
  if E0 > W then E0 = W end
  lw[k .. 'W'], lw[k .. 'E0'], lw[k .. 'F'] = W, E0, floor
  -- Restart the hold at the new limit: the next probe waits a full plateau from now.
  local K = plateau_at(lw, k) * 1000
  local A = lw[k .. 'A'] or K
  if A > K then A = K end
  lw[k .. 'A'], lw[k .. 'Nudge'], lw[k .. 'Sh'] = A, now, 1
  redis.call('HSET', L, k .. 'W', W, k .. 'E0', E0, k .. 'F', floor, k .. 'A', A, k .. 'Nudge', now, k .. 'Sh', 1)
  return { 'nudge', tostring(W), tostring(in_force(lw, k, ss)) }
end
-- At a limit believed right the cut reads the recent window (sent 0.5 to 1.5 s ago), which must
-- lie after the last cut's drain: read across it, the pause looked like a fall (measured: 900 a
-- minute cut to 840, and 1.3 s later, across its drain, to 480, on 5% random 429s).
if not ramping and now - (lw[k .. 'Res'] or 0) < 1500 then return { 'skip', 'in-drain' } end
local before = in_force(lw, k, ss) / (target * (1 - reserve))
-- What this kind was actually sending, in its own units: the other schedule may be the slower one
-- (a ceiling of 24,000,000 tokens a minute, while requests of 240 tokens left at 420 a minute).
local other = in_force(lw, k == 'r' and 't' or 'r', ss) / (target * (1 - reserve))
local sent = k == 'r' and other / requestTokens or other * requestTokens
if before < sent then sent = before end
-- Ramping, the best window is the limit the ramp ran into. At a limit believed right, the limit
-- fell: the best window of the last three seconds would still be one from before the fall, and
-- cuts of 5% at a time took seconds of 429s to get there (measured: 4 s and 26 429s for a halving).
local W = (ramping and accepted.best or accepted.recent)[k]
-- Nothing accepted in three seconds measures nothing (a provider's minute window still full from
-- before its quota fell refuses every request for seconds): read as a limit, it taught 1 token a
-- minute, whose next slot lay four hours ahead, and every job stopped. Halve what was being sent,
-- as TCP halves its window on a loss it cannot measure.
if accepted.best[k] == 0 then W = sent * 0.5 end
-- A recent window with little or nothing in it (a pause, a drain) says little: not below half the
-- best window.
if not ramping then
  local half = accepted.best[k] * 0.5
  if W < half then W = half end
end
-- A cluster at a limit believed right means the limit fell: every such cut cuts, since the count
-- of a second that was still full can equal the rate that failed, and a provider's sliding window
-- then keeps refusing in phase with it. (A probe's 429 just marks the limit it overshot.)
if not ramping then
  local believed = ceil[k]
  if e and e < believed then believed = e end
  if W > believed * 0.95 then W = believed * 0.95 end
end
-- A ramp's 429 says the rate it reached was too much: the best second is not credited more than a
-- step above it. (Not even that step, a slow start whose requests had bunched into a full second
-- at 20 a second was refused at 19, learned 19, and held a job at 90% of the limit for 30 s.)
if ramping and W > before * (1 + nudgeStep) then W = before * (1 + nudgeStep) end
-- A probe that failed found the limit a step below the rate it failed at (never below the limit
-- it left): the best window is not credited above that, since during the probe we took slots the
-- account's other clients were refused (measured: learned 15 a second of the 14 they left, then
-- 30 s of 429s). Held at the limit it left instead, a limit learned low (in a slow start's
-- collisions, or nudged to the floor) stayed low: 5 a second of the 10 the other client left.
if probing then
  local found = before * (1 - nudgeStep)
  if found < W0 then found = W0 end
  if W > found then W = found end
end
-- Past it, the probe doubles every probeDoubling ms and the 429 comes back a latency after the
-- window filled: credit no more than the rate of half a second ago (measured: a probe failing at
-- 17 a second learned 17 where the other client left 14, and 429s went on for 13 s).
if probing and e > W0 * (1 + CUBIC_SPAN) then
  local earlier = before * 2 ^ (-500 / probeDoubling)
  if W > earlier then W = earlier end
end
-- Never below one request every 10 s: the next slot stays within seconds, and probes find the way
-- back up in under a minute.
local lowest = 6 * (k == 't' and requestTokens or 1)
if W < lowest then W = lowest end
-- A probe that found the same limit again (within 10%) is a confirmation: the next hold doubles.
-- Anything else (a first limit, a fall, a rise) starts the count again.
local N = 0
if probing and W >= W0 * 0.9 and W <= W0 * 1.1 then N = (lw[k .. 'N'] or 0) + 1 end
-- Drain: the provider's window is still full of what was sent above the limit; pause sending for
-- the time that excess takes to age out (BBR's drain phase), at most a second.
local resumed = now
if before > W then
  local drain = 1000 * (before / W - 1)
  if drain > 1000 then drain = 1000 end
  local tat = tonumber(redis.call('HGET', S, 'rTat') or '0')
  if tat < now then tat = now end
  redis.call('HSET', S, 'rTat', tat + drain)
  resumed = tat + drain
end
redis.call('HSET', L, k .. 'W', W, k .. 'E0', W * (1 - backoff), k .. 'A', 0, k .. 'Cut', now, k .. 'Res', resumed, k .. 'N', N, k .. 'F', W * 0.8)
redis.call('HDEL', L, k .. 'T0', k .. 'Tq', k .. 'Dip')
-- A cluster at a limit believed right: the limit itself fell. A nudge just before it (the first
-- 429s of the fall, before they clustered) did not show another client, and its longest holds
-- would keep a restored quota unused for a minute (measured: 61 s at 9 of 20 a second).
if not ramping then
  redis.call('HDEL', L, k .. 'Sh')
  lw[k .. 'Sh'] = nil
end
redis.call('PEXPIRE', L, ttl)
redis.call('HDEL', S, 'ss')
redis.call('HSET', S, k .. 'S', 0, k .. 'L', 0)
lw[k .. 'W'], lw[k .. 'E0'], lw[k .. 'A'], lw[k .. 'N'] = W, W * (1 - backoff), 0, N
-- The fourth element: a confirmation (the logs say so, rather than announce the same limit again).
return { 'cut', tostring(W), tostring(in_force(lw, k, nil)), N > 0 and '1' or '' }
`;

/**
 * Read-only: learned limits (or false) and rates in force, as of now. After an idle gap, the rate
 * the next request meets (restart_after_idle: the learned limit, or a slow start), not the clocks the
 * last traffic left: a probe that ran during an outage of 500s showed 5,940 a minute in force,
 * idle, under a learned 600, and a gate never used showed 99% of its ceiling.
 */
export const STATE_LUA = `${COMMON_LUA}
local lw = hash(L)
local ss = tonumber(redis.call('HGET', S, 'ss') or 'nil')
local seen = tonumber(redis.call('HGET', S, 'seen') or '0')
if seen == 0 or now_ms() - seen > idle then ss = restart_after_idle(lw) end
return {
  tostring(lw.rW or ''), tostring(lw.tW or ''),
  tostring(in_force(lw, 'r', ss)), tostring(in_force(lw, 't', ss)),
  tostring(ss or ''), tostring(redis.call('PTTL', L)),
  ((lw.rSh and lw.rW) or (lw.tSh and lw.tW)) and '1' or '',
}
`;
