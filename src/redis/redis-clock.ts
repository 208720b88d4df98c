import { ConfigError } from '../errors.js';
import type { RedisClient } from './redis-client.js';

/** Past this, a machine's clock moves what BullMQ and the heartbeats stamp with it. */
const TOLERATED_SKEW_MS = 1_000;

/** A TIME reply, in ms. */
const timeMs = ([seconds, micros]: readonly (string | number)[]): number => Number(seconds) * 1_000 + Number(micros) / 1_000;

/**
 * Redis's clock (TIME), in ms: the one clock every machine of a deployment shares. What orders or
 * ages records written from many machines reads it, not the local clock, which may be off.
 */
export async function redisNow(redis: RedisClient): Promise<number> {
  return Math.floor(timeMs(await redis.time()));
}

/**
 * This machine's clock minus Redis's, in ms (read halfway through the round trip), or undefined
 * when the round trip took longer than the skew tolerated: such a reading cannot tell (a TIME that
 * waited in the client's queue for a Redis coming back is off by half the wait; a worker whose Redis
 * came up 70 s after it logged a clock "34.1 s behind", at error level).
 */
export async function readClockSkew(redis: RedisClient, clock: () => number = Date.now): Promise<number | undefined> {
  const sent = clock();
  const time = await redis.time();
  const received = clock();
  if (received - sent > TOLERATED_SKEW_MS) return undefined;
  return (sent + received) / 2 - timeMs(time);
}

/**
 * What an operator must know of a worker's clock, or undefined when it agrees with Redis's. The
 * rate gate, leases and locks run on Redis's clock, but BullMQ's Job Schedulers tick on the clock
 * of the worker that handles a tick, and heartbeats and job times carry the clock of whoever wrote
 * them (measured: a worker 5 min ahead ran a tick 24 s early and the next one named 5 min in the
 * future, and the four ticks between never ran; one 5 min behind was missing from the live workers).
 */
export function clockSkewProblem(skewMs: number): string | undefined {
  if (Math.abs(skewMs) <= TOLERATED_SKEW_MS) return undefined;
  const seconds = (Math.abs(skewMs) / 1_000).toFixed(1);
  return (
    `this machine's clock is ${seconds} s ${skewMs > 0 ? 'ahead of' : 'behind'} Redis's: schedule ticks this worker takes run early or late, ` +
    'named after the wrong time (ticks between may never run), the dashboard misses live workers or keeps dead ones, and job times read wrong; ' +
    "keep every machine's clock in sync (NTP, chrony)"
  );
}

/**
 * Why a worker this far off Redis's clock must not run, or undefined (`maxSkewMs` 0: never).
 * BullMQ stamps a delayed retry with the failing worker's clock and promotes it by the polling
 * worker's, and its backoff is 1–60 s: 30 s off cancels or doubles most of it, and a worker an hour
 * ahead strands its retries for an hour after it stops and fires the others' at once.
 */
export function clockSkewRefusal(skewMs: number, maxSkewMs: number): ConfigError | undefined {
  if (maxSkewMs <= 0 || Math.abs(skewMs) <= maxSkewMs) return undefined;
  const seconds = (Math.abs(skewMs) / 1_000).toFixed(1);
  return new ConfigError(
    `this machine's clock is ${seconds} s ${skewMs > 0 ? 'ahead of' : 'behind'} Redis's, more than EMBEDQ_MAX_CLOCK_SKEW_S (${maxSkewMs / 1_000} s): ` +
      "BullMQ would run this worker's retries and delayed steps at the wrong time (early, without backoff, or stranded) and schedule ticks early or late. " +
      "Sync this machine's clock (NTP, chrony) and start again; if Redis's host is the one whose clock is wrong, fix it there (EMBEDQ_MAX_CLOCK_SKEW_S=0 starts anyway, with a warning)",
  );
}
