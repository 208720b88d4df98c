import type { RedisClient } from '../redis/redis-client.js';

import type { RateLimitKind } from '../errors.js';
import { defineLuaScript } from '../redis/lua-script.js';

/**
 * One rate for every worker on every machine: a reservation-style GCRA (generic cell rate
 * algorithm) kept in a Redis hash and advanced by a Lua script, so all workers share it.
 *
 * Each call reserves the next free slot and is told how long to wait for it; requests then
 * leave evenly spaced at `requestsPerMinute / 60` per second, and tokens flow at
 * `tokensPerMinute / 60` per second. DashScope enforces both per minute and per second (1/60), so
 * spacing requests evenly keeps every 1-second window under the limit; a minute window follows.
 *
 * The rate adapts: a 429 skips a slot, a cluster of 429s cuts a shared factor (multiplicative
 * decrease, at most once per `penaltyCooldownMs`), and it climbs back linearly while no cut comes. Token reservations use an
 * estimate and are corrected with the server's `usage.total_tokens` afterwards.
 */
export interface RateLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
}

export interface RateGateOptions {
  /** Fraction of the limits to aim at (Default: 0.99). */
  targetUtilization?: number;
  /** Factor applied to the rate on a 429 (Default: 0.9). */
  decreaseFactor?: number;
  /** Lowest factor (Default: 0.05). */
  minimumFactor?: number;
  /**
   * Factor regained per second without a cut (Default: 0.1, so 0.9 → 1 in 1 s). Most 429s under a
   * correct limit come from network jitter, so the cut is small and short; a limit set too high
   * still gets cut again every cooldown until the 429s stop.
   */
  recoveryPerSecond?: number;
  /**
   * The window in which 429s are counted, and the least time between two cuts: later 429s within
   * it come from requests already in flight (Default: 2,000 ms).
   */
  penaltyCooldownMs?: number;
  /** 429s within `penaltyCooldownMs` that cut the rate; fewer only skip a slot each (Default: 5). */
  strikesToCut?: number;
  /**
   * A caller that wakes up later than this after its slot (a busy event loop) takes a new slot
   * instead of sending late, where it would crowd the next requests (Default: 8 ms).
   */
  maxLatenessMs?: number;
}

export interface Reservation {
  /** How long to wait before sending. */
  waitMs: number;
  /** The rate factor in force when the slot was reserved (1 = full configured rate). */
  factor: number;
}

// State: rTat, tTat (theoretical arrival times, ms), base (factor after the last cut), cutAt (ms).
const FACTOR_LUA = `
-- Redis's clock, so workers on machines with skewed clocks share one timeline.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function factor_now(key, now, recovery)
  local base = tonumber(redis.call('HGET', key, 'base') or '1')
  local cutAt = tonumber(redis.call('HGET', key, 'cutAt') or '0')
  local f = base + (now - cutAt) / 1000 * recovery
  if f > 1 then f = 1 end
  return f
end
`;

const RESERVE_LUA = `${FACTOR_LUA}
local key = KEYS[1]
local now = now_ms()
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local recovery = tonumber(ARGV[4])
local f = factor_now(key, now, recovery)
local rTat = tonumber(redis.call('HGET', key, 'rTat') or '0')
local tTat = tonumber(redis.call('HGET', key, 'tTat') or '0')
local send = now
if rTat > send then send = rTat end
if tTat > send then send = tTat end
redis.call('HSET', key, 'rTat', send + 60000 / (rpm * f), 'tTat', send + tokens * 60000 / (tpm * f))
redis.call('PEXPIRE', key, 3600000)
return {tostring(send - now), tostring(f)}
`;

// A 429 always gives up the next request slot (the window it hit is full). The rate itself is cut
// only when 429s come in a cluster: under a correct limit, single ones are network jitter, and
// cutting for each would cost far more throughput than the one retried request.
const PENALIZE_LUA = `${FACTOR_LUA}
local key = KEYS[1]
local now = now_ms()
local decrease = tonumber(ARGV[1])
local minimum = tonumber(ARGV[2])
local cooldown = tonumber(ARGV[3])
local recovery = tonumber(ARGV[4])
local strikesToCut = tonumber(ARGV[5])
local rpm = tonumber(ARGV[6])
local f = factor_now(key, now, recovery)
local rTat = tonumber(redis.call('HGET', key, 'rTat') or '0')
if rTat < now then rTat = now end
redis.call('HSET', key, 'rTat', rTat + 60000 / (rpm * f))
local strikeAt = tonumber(redis.call('HGET', key, 'strikeAt') or '0')
local strikes = tonumber(redis.call('HGET', key, 'strikes') or '0')
if now - strikeAt > cooldown then
  strikeAt = now
  strikes = 0
end
strikes = strikes + 1
redis.call('HSET', key, 'strikeAt', strikeAt, 'strikes', strikes)
local cutAt = tonumber(redis.call('HGET', key, 'cutAt') or '0')
if strikes < strikesToCut or now - cutAt < cooldown then return tostring(f) end
f = f * decrease
if f < minimum then f = minimum end
redis.call('HSET', key, 'base', f, 'cutAt', now, 'strikes', 0)
return tostring(f)
`;

const ADJUST_TOKENS_LUA = `${FACTOR_LUA}
local key = KEYS[1]
local delta = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local now = now_ms()
local recovery = tonumber(ARGV[3])
local f = factor_now(key, now, recovery)
local tTat = tonumber(redis.call('HGET', key, 'tTat') or '0')
if tTat < now - 1000 then tTat = now - 1000 end
redis.call('HSET', key, 'tTat', tTat + delta * 60000 / (tpm * f))
return 1
`;

export class RateGate {
  private readonly targetUtilization: number;
  private readonly decreaseFactor: number;
  private readonly minimumFactor: number;
  private readonly recoveryPerSecond: number;
  private readonly penaltyCooldownMs: number;
  private readonly maxLatenessMs: number;
  private readonly strikesToCut: number;
  private readonly scripts;

  constructor(
    redis: RedisClient,
    /** Redis key of this gate, e.g. `embedq:rate:text-embedding-v4` (DashScope limits per model). */
    private readonly key: string,
    private readonly limits: RateLimits,
    options: RateGateOptions = {},
  ) {
    this.targetUtilization = options.targetUtilization ?? 0.99;
    this.decreaseFactor = options.decreaseFactor ?? 0.9;
    this.minimumFactor = options.minimumFactor ?? 0.05;
    this.recoveryPerSecond = options.recoveryPerSecond ?? 0.1;
    this.penaltyCooldownMs = options.penaltyCooldownMs ?? 2_000;
    this.maxLatenessMs = options.maxLatenessMs ?? 8;
    this.strikesToCut = options.strikesToCut ?? 5;
    this.scripts = {
      reserve: defineLuaScript(redis, RESERVE_LUA),
      penalize: defineLuaScript(redis, PENALIZE_LUA),
      adjustTokens: defineLuaScript(redis, ADJUST_TOKENS_LUA),
    };
  }

  private get requestsPerMinute(): number {
    return this.limits.requestsPerMinute * this.targetUtilization;
  }

  private get tokensPerMinute(): number {
    return this.limits.tokensPerMinute * this.targetUtilization;
  }

  /** Reserves a slot for one request of about `estimatedTokens` tokens. */
  async reserve(estimatedTokens: number): Promise<Reservation> {
    const [waitMs, factor] = (await this.scripts.reserve(
      [this.key],
      this.requestsPerMinute,
      this.tokensPerMinute,
      estimatedTokens,
      this.recoveryPerSecond,
    )) as [string, string];
    return { waitMs: Math.max(0, Number(waitMs)), factor: Number(factor) };
  }

  /**
   * Reserves a slot and sleeps until it comes (or the signal aborts). Requests must leave on time:
   * the per-second limit leaves only ~1% of a second of slack, so one that wakes up late gives its
   * slot away and takes the next free one rather than crowding the requests behind it.
   */
  async acquire(estimatedTokens: number, signal?: AbortSignal): Promise<Reservation> {
    for (let attempt = 0; ; attempt += 1) {
      const reservation = await this.reserve(estimatedTokens);
      if (reservation.waitMs === 0) return reservation;
      const due = performance.now() + reservation.waitMs;
      await sleep(reservation.waitMs, signal);
      if (performance.now() - due <= this.maxLatenessMs || attempt >= 3) return reservation;
      // The slot's tokens were booked; hand them back before booking again.
      await this.settleTokens(estimatedTokens, 0);
    }
  }

  /** Corrects the token schedule once the server has said how many tokens a request used. */
  async settleTokens(estimatedTokens: number, actualTokens: number): Promise<void> {
    const delta = actualTokens - estimatedTokens;
    if (delta === 0) return;
    await this.scripts.adjustTokens([this.key], delta, this.tokensPerMinute, this.recoveryPerSecond);
  }

  /** A 429 arrived: skip a slot, and slow everyone down if 429s cluster. Returns the factor in force. */
  async throttled(_kind: RateLimitKind): Promise<number> {
    const factor = await this.scripts.penalize(
      [this.key],
      this.decreaseFactor,
      this.minimumFactor,
      this.penaltyCooldownMs,
      this.recoveryPerSecond,
      this.strikesToCut,
      this.requestsPerMinute,
    );
    return Number(factor);
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
