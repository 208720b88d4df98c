import type { RedisClient } from '../redis/redis-client.js';

import type { RateLimitKind } from '../errors.js';
import { defineLuaScript } from '../redis/lua-script.js';
import { sleep } from '../sleep.js';
import { LATE_LUA, RESERVE_LUA, STATE_LUA, THROTTLED_LUA } from './gate-scripts.js';

/**
 * One rate for every worker on every machine, which finds the account's real limit.
 *
 * Pacing: a reservation-style GCRA (generic cell rate algorithm) in Redis. Each call reserves the
 * next free slot and is told how long to wait for it, so requests leave evenly spaced and tokens
 * flow evenly; DashScope enforces both per minute and per second (1/60), and even spacing keeps
 * every 1-second window under the limit.
 *
 * Learning: the configured limits are a ceiling. When 429s cluster, the gate sets the limit to
 * what the provider accepted in the best of the last three seconds, counted by send time (a
 * windowed-max delivery rate, as TCP BBR keeps; never above the rate a probe failed at; slots
 * booked but never sent, as a starved worker leaves them, count as accepted), and remembers it in
 * Redis per model and endpoint for `learnedTtlMs`, so every worker and the next job start there.
 * 429s that recur without clustering (a client we cannot see sharing the limit) nudge it down a
 * step at a time until they stop, and the rate in force then keeps a step below it. From there it
 * probes upward: back to the learned limit along a cubic within a few seconds, a plateau (16 s,
 * doubled by every probe that finds the same limit again, up to a minute), a gentle cubic probe up
 * to +10% that ends at its first 429, then doubling every 4 s, so a limit learned too low or raised is found in seconds. Request 429s
 * (`Throttling.RateQuota`) act on the request schedule, token 429s (`Throttling.AllocationQuota`)
 * on the token schedule; burst 429s only skip a slot.
 * With nothing learned, traffic after an idle spell starts slowly (doubling every
 * `slowStartDoublingMs`), so an unknown limit is met at a rate close to it, not five times over.
 *
 * Redis round trips: fewer than one per request. A process's callers queue for slots locally, and
 * one Redis call books slots for as many of them as fit within the booking horizon; while slots
 * are scarce only that one call waits for the next, where every caller used to ask and be told to
 * come back (measured at the quota: 3.8 calls per request before, ~0.5 now). A caller that woke
 * up late for its slot makes one more. Token settlements, accepted requests and slots left unsent
 * are folded into the process's next reservation (or 429 report) instead of a call of their own.
 */
export interface RateLimits {
  requestsPerMinute: number;
  tokensPerMinute: number;
}

export interface RateGateOptions {
  /** Fraction of the limit in force to aim at (Default: 0.99). */
  targetUtilization?: number;
  /** Fraction of the limit embedq never uses, left to the account's other applications (Default: 0). */
  reserve?: number;
  /** How long a learned limit is remembered (Default: 3,600,000 ms). */
  learnedTtlMs?: number;
  /**
   * Growth of the estimate after a cut, relative to the learned limit, per second cubed
   * (Default: 1/5000: +20% of the learned limit 10 s past the plateau, +100% after 17 s).
   */
  growth?: number;
  /**
   * How long the estimate holds at a newly learned limit before probing above it (Default: 16,000
   * ms). Each probe that finds the same limit again doubles the hold, up to `maxPlateauMs`; after a
   * nudge (a client sharing the limit) every hold is `maxPlateauMs`. Every probe costs the
   * account's other clients two or three 429s before one of ours ends it (measured at 8 s: two
   * probes a minute cost a neighbour 1.5% of its requests).
   */
  plateauMs?: number;
  /**
   * Longest hold between probes of a limit confirmed again and again (Default: 60,000 ms). Every
   * probe costs the account's other clients a few 429s; a rarer probe is the politeness.
   */
  maxPlateauMs?: number;
  /**
   * Doubling time of the probe once it is 10% above the learned limit without a 429 (Default:
   * 4,000 ms): a limit learned too low, or one that rose, is found within seconds. (At 2,000 ms the
   * overshoot past a limit shared with another client cost it five 429s before ours came back.)
   */
  probeDoublingMs?: number;
  /** How far below the learned limit the estimate restarts after a cut (Default: 0.03). */
  backoff?: number;
  /** Step by which 429s that recur without clustering lower the learned limit (Default: 0.1). */
  nudge?: number;
  /**
   * How long a dip to half the limit listens for 429s, in time with callers queueing (Default:
   * 8,000 ms; those within the first cooldown are from requests sent before it). Random 429s at 5%
   * of 9 requests a second all miss the 7 s it counts one time in 23.
   */
  dipListenMs?: number;
  /**
   * Margin kept below a learned limit (Default: 0.02), and for requests at least one a second (at
   * most a quarter of the limit; 0 turns both off). The limit may be shared with clients the gate
   * cannot see, whose steady streams are refused far more often than embedq is: at 2% alone, 13.7
   * a second of the 14 another client left, it saw 10.7% of its requests refused.
   */
  learnedMargin?: number;
  /** Slow start's first rate, as a fraction of the limit in force (Default: 0.1). */
  slowStartFraction?: number;
  /**
   * Slow start's doubling time (Default: 1,000 ms: from 10% to 100% in 3.3 s). A 429 comes back a
   * request's latency after the second went over the limit, so the rate may have grown by
   * 2^(latency / doubling) meanwhile: 500 ms doubling with 220-400 ms latency overshot by ~1.7×
   * and cost ~20 429s at 1,200 QPM.
   */
  slowStartDoublingMs?: number;
  /** A gap in traffic longer than this starts afresh: slow start, or the learned limit's plateau (Default: 5,000 ms). */
  idleMs?: number;
  /** 429s within `strikeWindowMs` that cut a limit believed right; single ones are jitter (Default: 3). */
  strikesToCut?: number;
  /** Default: 1,000 ms. */
  strikeWindowMs?: number;
  /** Least time between two cuts of one kind: 429s just after a cut come from requests already in flight (Default: 1,000 ms). */
  cooldownMs?: number;
  /**
   * How far ahead slots are booked (Default: 250 ms). Callers beyond it wait unbooked and ask
   * again, so a cut or a ramp takes effect within this time whatever the queue of callers.
   */
  horizonMs?: number;
  /**
   * A caller that wakes up later than this after its slot (a busy event loop) pays for sending
   * late with the next free slot, which it leaves empty (Default: 8 ms, within the 1% of a second
   * that the target utilisation leaves).
   */
  maxLatenessMs?: number;
}

export interface Reservation {
  /** How long to wait before sending. */
  waitMs: number;
  /** The slot's time on the gate's (Redis's) clock: pass it to {@link RateGate.completed}. */
  slotMs: number;
  /** Requests and tokens per minute in force when the slot was reserved. */
  requestsPerMinute: number;
  tokensPerMinute: number;
}

/**
 * Why a 429 only skipped a slot (for debug logs): a burst 429; too little demand to read the limit
 * from; right after a cut or nudge; not (yet) a cluster while ramping, or at a configured limit;
 * random 429s (immune, or counted at the nudges' floor); a cut's drain not yet over.
 */
export type SkipReason = 'burst' | 'demand-limited' | 'after-cut' | 'no-cluster-ramping' | 'no-cluster-configured' | 'after-nudge' | 'immune' | 'at-floor' | 'in-drain';

/**
 * What a 429 did: a skipped slot, a nudge of the learned limit, a dip to half of it (nudges reached
 * their floor; the learned limit becomes the middle between floor and half), a restore of the
 * limit the nudges started from (they did not stop the 429s, nor did the dip), or a cut to a newly
 * learned limit.
 */
export type ThrottleVerdict =
  | { action: 'skip'; reason: SkipReason }
  | { action: 'nudge' | 'dip' | 'restore'; kind: 'requests' | 'tokens'; configuredPerMinute: number; learnedPerMinute: number; inForcePerMinute: number }
  /** `confirmed`: a probe above the learned limit met a 429 and found the same limit again (within 10%). */
  | { action: 'cut'; kind: 'requests' | 'tokens'; configuredPerMinute: number; learnedPerMinute: number; inForcePerMinute: number; confirmed: boolean };

/** The gate's limits as `embedq status` and the logs show them. */
export interface GateState {
  configured: RateLimits;
  /** Learned limits per minute (undefined: none, the configured limit applies). */
  learned: { requestsPerMinute?: number | undefined; tokensPerMinute?: number | undefined };
  /** The rates the gate paces at now (target utilisation, reserve and slow start applied). */
  inForce: RateLimits;
  /** Milliseconds until the learned limit is forgotten, if one is remembered. */
  learnedExpiresInMs?: number | undefined;
  /** A nudge showed another client on the learned limit: probes only once a minute. */
  shared: boolean;
  slowStart: boolean;
}

/** The Redis key of a gate: per model and endpoint host (never the API key), under the prefix. */
export function rateGateKey(prefix: string, model: string, baseUrl: string): string {
  return `${prefix}:rate:${model}:${new URL(baseUrl).host}`;
}

export class RateGate {
  private readonly args: number[];
  private readonly options: Required<RateGateOptions>;
  private readonly scripts;
  private readonly keys: [string, string];
  /** Settlements not yet sent: they ride on the next reservation. */
  private pending = emptySettlements();
  /** This process's callers of {@link acquire} waiting for a slot to be booked, oldest first. */
  private readonly queued: QueuedCaller[] = [];
  /** Whether {@link bookQueued} runs; it ends when the queue is empty. */
  private booking = false;
  /** Ends {@link bookQueued}'s wait early (its queue emptied: callers gave up; tokens came back). */
  private wakeBooking: (() => void) | undefined;
  /** The token rate in force at the last reservation call (a minute's worth), to value tokens given back. */
  private tokensPerMinute = Infinity;

  constructor(
    redis: RedisClient,
    /** Redis key of this gate ({@link rateGateKey}); the learned limit lives at `<key>:learned`. */
    key: string,
    private readonly limits: RateLimits,
    options: RateGateOptions = {},
  ) {
    this.options = {
      targetUtilization: options.targetUtilization ?? 0.99,
      reserve: options.reserve ?? 0,
      learnedTtlMs: options.learnedTtlMs ?? 3_600_000,
      growth: options.growth ?? 1 / 5000,
      plateauMs: options.plateauMs ?? 16_000,
      maxPlateauMs: options.maxPlateauMs ?? 60_000,
      probeDoublingMs: options.probeDoublingMs ?? 4_000,
      backoff: options.backoff ?? 0.03,
      nudge: options.nudge ?? 0.1,
      dipListenMs: options.dipListenMs ?? 8_000,
      learnedMargin: options.learnedMargin ?? 0.02,
      slowStartFraction: options.slowStartFraction ?? 0.1,
      slowStartDoublingMs: options.slowStartDoublingMs ?? 1_000,
      idleMs: options.idleMs ?? 5_000,
      strikesToCut: options.strikesToCut ?? 3,
      strikeWindowMs: options.strikeWindowMs ?? 1_000,
      cooldownMs: options.cooldownMs ?? 1_000,
      maxLatenessMs: options.maxLatenessMs ?? 8,
      horizonMs: options.horizonMs ?? 250,
    };
    const o = this.options;
    this.args = [
      limits.requestsPerMinute,
      limits.tokensPerMinute,
      o.targetUtilization,
      o.reserve,
      o.learnedTtlMs,
      o.growth,
      o.plateauMs,
      o.backoff,
      o.slowStartFraction,
      o.slowStartDoublingMs,
      o.idleMs,
      o.learnedMargin,
      o.probeDoublingMs,
      o.maxPlateauMs,
      o.nudge,
    ];
    this.keys = [key, `${key}:learned`];
    this.scripts = {
      reserve: defineLuaScript(redis, RESERVE_LUA),
      late: defineLuaScript(redis, LATE_LUA),
      throttled: defineLuaScript(redis, THROTTLED_LUA),
      state: defineLuaScript(redis, STATE_LUA),
    };
  }

  /**
   * Tries to reserve a slot for one request of about `estimatedTokens` tokens. `booked: false`
   * means the next free slot lies beyond the booking horizon: ask again after `waitMs`.
   */
  async reserve(estimatedTokens: number): Promise<Reservation & { booked: boolean }> {
    const booking = await this.book([estimatedTokens], this.options.horizonMs);
    const slot = booking.slots[0];
    if (slot === undefined) {
      const nextFreeMs = booking.nowMs + booking.retryMs + this.options.horizonMs;
      return { booked: false, waitMs: booking.retryMs, slotMs: nextFreeMs, ...booking.rates };
    }
    return { booked: true, waitMs: slot - booking.nowMs, slotMs: slot, ...booking.rates };
  }

  /**
   * Reserves a slot and sleeps until it comes (or the signal aborts). Requests must leave on time:
   * the per-second limit leaves only ~1% of a second of slack. One that wakes up late
   * ({@link RateGateOptions.maxLatenessMs}) leaves at once and pays with the next free slot
   * ({@link sendLate}).
   */
  async acquire(estimatedTokens: number, signal?: AbortSignal, priority = 0): Promise<Reservation> {
    const reservation = await this.queueForSlot(estimatedTokens, signal, priority);
    if (reservation.waitMs > 0) {
      const due = performance.now() + reservation.waitMs;
      try {
        await sleep(reservation.waitMs, signal);
      } catch (error) {
        this.unsent(reservation.slotMs);
        throw error;
      }
      const lateMs = performance.now() - due;
      if (lateMs > this.options.maxLatenessMs) return this.sendLate(reservation, lateMs);
    }
    return reservation;
  }

  /**
   * Rejects, with `reason`, every caller of this process still queued for a slot (none booked
   * yet); callers already told their slot keep it. A draining worker gives their jobs back
   * instead of waiting, at a low rate, for a slot each.
   */
  cancelQueued(reason: Error): void {
    for (const caller of this.queued.splice(0)) this.leaveQueue(caller).reject(reason);
    this.wakeBooking?.();
  }

  /**
   * Joins this process's queue for slots, ahead of the callers of a lower `priority` (a larger
   * number, as BullMQ's), in order of arrival among equals; resolves once {@link bookQueued} booked
   * one for the caller. A small job's batches go before a backfill's in the embed queue, but a
   * worker's slots were all held by the backfill's batches waiting here, oldest first: at 10
   * requests a second and 64 slots, a 5-request job waited 9 s.
   */
  private queueForSlot(estimatedTokens: number, signal: AbortSignal | undefined, priority: number): Promise<Reservation> {
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const caller: QueuedCaller = { estimatedTokens, priority, resolve, reject, signal, onAbort: undefined };
      if (signal) {
        caller.onAbort = () => {
          const index = this.queued.indexOf(caller);
          if (index >= 0) this.queued.splice(index, 1);
          if (this.queued.length === 0) this.wakeBooking?.();
          reject(signal.reason as Error);
        };
        signal.addEventListener('abort', caller.onAbort, { once: true });
      }
      const behind = this.queued.findIndex((queued) => queued.priority > priority);
      this.queued.splice(behind < 0 ? this.queued.length : behind, 0, caller);
      if (!this.booking) void this.bookQueued();
    });
  }

  /**
   * Books slots for the process's queued callers, oldest first, as many a call as start within the
   * booking horizon. While the rest wait for the next free slot to enter the horizon, only this
   * loop waits, and then asks for all of them again; the spread keeps processes from asking in the
   * same millisecond, and lets a few slots enter the horizon for each call to book.
   */
  private async bookQueued(): Promise<void> {
    this.booking = true;
    try {
      while (this.queued.length > 0) {
        const callers = this.queued.slice(0, MAX_BOOKED_PER_CALL);
        let booking: Booking;
        try {
          booking = await this.book(callers.map((caller) => caller.estimatedTokens), this.options.horizonMs);
        } catch (error) {
          // Redis unreachable: every queued caller fails, as its own call would have.
          for (const caller of this.queued.splice(0)) this.leaveQueue(caller).reject(error as Error);
          return;
        }
        booking.slots.forEach((slot, index) => {
          const caller = callers[index]!;
          const position = this.queued.indexOf(caller);
          // A caller that gave up meanwhile leaves its slot empty, as one that gives up while
          // sleeping until its slot does.
          if (position < 0) {
            this.unsent(slot);
            return;
          }
          this.queued.splice(position, 1);
          this.leaveQueue(caller).resolve({ waitMs: slot - booking.nowMs, slotMs: slot, ...booking.rates });
        });
        if (booking.retryMs >= 0 && this.queued.length > 0) {
          // Asked again at least every few seconds: a limit learned or deleted meanwhile applies,
          // and setTimeout takes no delay past 2^31 ms (it fires at once: a busy loop).
          const waitMs = Math.min(booking.retryMs, MAX_BOOKING_WAIT_MS);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, waitMs + Math.random() * this.options.horizonMs * 0.5);
            this.wakeBooking = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.wakeBooking = undefined;
        }
      }
    } finally {
      this.booking = false;
    }
  }

  private leaveQueue(caller: QueuedCaller): QueuedCaller {
    if (caller.onAbort) caller.signal?.removeEventListener('abort', caller.onAbort);
    return caller;
  }

  /** One reservation script call: slots for as many of `estimates` (in order) as start within `horizonMs`. */
  private async book(estimates: readonly number[], horizonMs: number): Promise<Booking> {
    const { folded, tokenDelta } = this.takePending();
    const [now, rpm, tpm, retry, ...slots] = (await this.scripts.reserve(this.keys, ...this.args, estimates.join(','), folded, tokenDelta, horizonMs)) as string[];
    this.tokensPerMinute = Number(tpm);
    return {
      nowMs: Number(now),
      rates: { requestsPerMinute: Number(rpm), tokensPerMinute: Number(tpm) },
      retryMs: Number(retry),
      slots: slots.map(Number),
    };
  }

  /**
   * A caller woke up `lateMs` after its slot (a busy event loop). Sent now, its request stays in
   * DashScope's 1-second window `lateMs` longer than its slot allowed and would crowd the window a
   * second later; so it gives up the next free request slot, and the token schedule moves on by
   * the lateness (LATE_LUA). (Giving the late slot up and waiting for a new one cost that slot and,
   * late again, more: with the event loop busy 40 ms of every 60, callers delivered 272-298
   * requests in 45 s that way and 333-368 this way.)
   *
   * The slot given up stays booked, and the delivery-rate estimate counts it, never sent, as one
   * DashScope accepted (gate-common-lua.ts); where tokens bind, none is given up and none counted.
   */
  private async sendLate(missed: Reservation, lateMs: number): Promise<Reservation> {
    const { folded, tokenDelta } = this.takePending();
    const [, givenUp] = (await this.scripts.late(this.keys, ...this.args, lateMs, folded, tokenDelta)) as string[];
    if (Number(givenUp) >= 0) this.unsent(Number(givenUp));
    // Counted by the time it actually leaves, on the gate's clock.
    return { ...missed, waitMs: 0, slotMs: missed.slotMs + lateMs };
  }

  /**
   * The provider accepted a request: counts it, in the 100 ms bucket of its slot (`slotMs`; now when
   * not given), for the delivery-rate estimate, and settles its tokens.
   */
  completed(estimatedTokens: number, actualTokens: number, slotMs?: number): void {
    const counted = this.bucket(slotMs);
    counted.accepted += 1;
    counted.tokens += actualTokens;
    this.pending.tokenDelta += actualTokens - estimatedTokens;
    this.wakeForTokensBack();
  }

  /** The request used no quota (refused, failed): its reserved tokens go back to the schedule. */
  refused(estimatedTokens: number): void {
    this.pending.tokenDelta -= estimatedTokens;
    this.wakeForTokensBack();
  }

  /**
   * Tokens given back free slots now. The booking loop waits for the next free slot as the
   * schedule stood without them, so when they are worth more than the booking horizon it asks
   * again at once: they ride on that call. Left for the call it had planned, they freed slots
   * already past, and the schedule keeps at most a second of those: a single worker whose
   * estimates were twice its requests' usage sent 60-66% of a token limit.
   */
  private wakeForTokensBack(): void {
    if (!this.wakeBooking || this.pending.tokenDelta >= 0) return;
    if ((-this.pending.tokenDelta * 60_000) / this.tokensPerMinute > this.options.horizonMs) this.wakeBooking();
  }

  /**
   * A 429 arrived for a request of about `estimatedTokens` tokens: skip a slot for everyone, and
   * when it shows the limit is lower than the gate believed, learn the limit from what the provider
   * accepted.
   */
  async throttled(kind: RateLimitKind, estimatedTokens: number): Promise<ThrottleVerdict> {
    const code = kind === 'burst' ? 'b' : kind === 'tokens' ? 't' : 'r';
    const { folded, tokenDelta } = this.takePending();
    const o = this.options;
    // A skip's second element is its reason; the other actions' are the learned limit.
    const [action, learnedOrReason, inForce, confirmed] = (await this.scripts.throttled(
      this.keys,
      ...this.args,
      code,
      o.strikesToCut,
      o.strikeWindowMs,
      o.cooldownMs,
      folded,
      tokenDelta,
      estimatedTokens,
      o.dipListenMs,
    )) as [string, string?, string?, string?];
    if (action !== 'cut' && action !== 'nudge' && action !== 'dip' && action !== 'restore') return { action: 'skip', reason: learnedOrReason as SkipReason };
    const limits = {
      kind: code === 't' ? ('tokens' as const) : ('requests' as const),
      configuredPerMinute: code === 't' ? this.limits.tokensPerMinute : this.limits.requestsPerMinute,
      learnedPerMinute: Math.round(Number(learnedOrReason)),
      inForcePerMinute: Math.round(Number(inForce)),
    };
    return action === 'cut' ? { action, ...limits, confirmed: confirmed === '1' } : { action, ...limits };
  }

  /** Configured, learned and in-force limits, for status lines and logs. */
  async state(): Promise<GateState> {
    const [rW, tW, rpm, tpm, ss, ttl, shared] = (await this.scripts.state(this.keys, ...this.args)) as string[];
    const learnedExpiresInMs = Number(ttl) > 0 ? Number(ttl) : undefined;
    return {
      configured: { ...this.limits },
      learned: { requestsPerMinute: rW ? Number(rW) : undefined, tokensPerMinute: tW ? Number(tW) : undefined },
      inForce: { requestsPerMinute: Number(rpm), tokensPerMinute: Number(tpm) },
      learnedExpiresInMs: rW || tW ? learnedExpiresInMs : undefined,
      shared: shared === '1',
      slowStart: ss !== '',
    };
  }

  /**
   * A booked slot its caller leaves empty (it gave up, or woke up late and paid with a second
   * slot). Nothing refused it, so the delivery-rate estimate counts it as accepted; every other
   * booked slot is presumed sent, and counts only once its request is {@link completed}.
   * {@link acquire} calls it; a caller of {@link reserve} that does not send calls it.
   */
  unsent(slotMs: number): void {
    this.bucket(slotMs).unsent += 1;
  }

  /** The folded counts of the 100 ms bucket of `slotMs` (now when not given). */
  private bucket(slotMs: number | undefined): BucketCounts {
    const id = slotMs === undefined ? -1 : Math.floor(slotMs / 100);
    let counts = this.pending.buckets.get(id);
    if (!counts) {
      counts = { unsent: 0, accepted: 0, tokens: 0 };
      this.pending.buckets.set(id, counts);
    }
    return counts;
  }

  /** The folded settlements as the scripts take them: `bucket:unsent:accepted:tokens,...` and the token correction. */
  private takePending(): { folded: string; tokenDelta: number } {
    const taken = this.pending;
    this.pending = emptySettlements();
    const folded = [...taken.buckets].map(([id, { unsent, accepted, tokens }]) => `${id}:${unsent}:${accepted}:${tokens}`).join(',');
    return { folded, tokenDelta: taken.tokenDelta };
  }
}

/** Most callers one reservation call books (a bound on the script's work and its arguments). */
const MAX_BOOKED_PER_CALL = 100;
/** Longest the booking loop waits before asking Redis again for a slot. */
const MAX_BOOKING_WAIT_MS = 5_000;

interface QueuedCaller {
  estimatedTokens: number;
  /** Lower goes first (BullMQ's sense). */
  priority: number;
  resolve(reservation: Reservation): void;
  reject(error: Error): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** What one reservation call returned. */
interface Booking {
  /** When the script ran, on the gate's (Redis's) clock. */
  nowMs: number;
  rates: RateLimits;
  /** Milliseconds until the next free slot enters the horizon; -1 when every request was booked. */
  retryMs: number;
  /** The booked slots' times, in the order of the requests. */
  slots: number[];
}

interface BucketCounts {
  unsent: number;
  accepted: number;
  tokens: number;
}

function emptySettlements(): { buckets: Map<number, BucketCounts>; tokenDelta: number } {
  return { buckets: new Map(), tokenDelta: 0 };
}
