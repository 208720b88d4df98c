import type { RedisClient } from '../src/redis/redis-client.js';
import { defineLuaScript } from '../src/redis/lua-script.js';
import { canonicalLocalPath } from '../src/storage/locations.js';

import type { CorpusKeys } from './corpus-keys.js';

/**
 * One writer per output (invariant 7): a job holds a lease on its output location in Redis from
 * submit until it completes, fails or is cancelled (the job record's end-state script deletes it),
 * and `retry` takes it again. A second job into a leased output is refused.
 */

/** The same output however it was written: `s3://b/p` = `s3://b/p/`; local paths absolute, links resolved. */
export function outputIdentity(output: string): string {
  if (/^s3:\/\//i.test(output)) return `s3://${output.slice(5).replace(/\/*$/, '')}/`;
  return `${canonicalLocalPath(output).replace(/\/*$/, '')}/`;
}

/**
 * A job that stopped (failed, cancelled) keeps its output at most this long, as `ending:<id>`: a
 * step of it may still be uploading a shard, and a run submitted meanwhile with `--overwrite`
 * would clear the output and then receive that stale file. Workers cut a stopped job's uploads
 * within a poll of their stop watch, so `embedq cancel` (and the worker that failed the job) give
 * the output back moments later, once none of its steps is active; this bound is for a step whose
 * worker cannot see the stop (Redis out of its reach, the process paused). `retry` of the job
 * takes the output again.
 */
export const ENDING_LEASE_MS = 60_000;
/** What precedes the job id in a stopped job's lease; the end-state and retry scripts write and read it too. */
export const ENDING_PREFIX = 'ending:';

/**
 * How long a submit holds the lease before its job record exists (listing and clearing the
 * output, the write check). The record's creation makes it lasting (`confirm`); a submit killed
 * meanwhile leaves a lease that runs out, where it refused every later run into the output.
 */
export const SUBMIT_LEASE_MS = 15 * 60_000;

/** Who holds an output: a job writing it, or one that stopped moments ago (`ending`). */
export interface LeaseHolder {
  jobId: string;
  ending: boolean;
}

export function parseHolder(value: string): LeaseHolder {
  return value.startsWith(ENDING_PREFIX) ? { jobId: value.slice(ENDING_PREFIX.length), ending: true } : { jobId: value, ending: false };
}

// KEYS: lease. ARGV: expected holder, new holder, ms. Swaps the holder only if it is still the expected one.
const REPLACE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`;

// KEYS: lease. ARGV: job id. Drops the submit's TTL if the job still holds the lease.
const CONFIRM = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
`;

export class OutputLeases {
  private readonly scripts;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {
    this.scripts = { replace: defineLuaScript(redis, REPLACE), confirm: defineLuaScript(redis, CONFIRM) };
  }

  /** The Redis key of an output's lease (kept on the job record, so its end can release it). */
  keyOf(output: string): string {
    return this.keys.lease(outputIdentity(output));
  }

  /**
   * Takes the lease for `jobId`, for SUBMIT_LEASE_MS until `confirm`; returns undefined on success,
   * else who holds it. A lasting lease whose job has no record (Redis lost or evicted it) is taken
   * over: nothing could ever end that job, and its output stayed refused to every run.
   */
  async acquire(output: string, jobId: string): Promise<LeaseHolder | undefined> {
    const key = this.keyOf(output);
    if ((await this.redis.set(key, jobId, 'PX', SUBMIT_LEASE_MS, 'NX')) === 'OK') return undefined;
    let holder = await this.redis.get(key);
    // Released between SET and GET: try once more rather than report a holder that is gone.
    if (holder === null) {
      if ((await this.redis.set(key, jobId, 'PX', SUBMIT_LEASE_MS, 'NX')) === 'OK') return undefined;
      holder = (await this.redis.get(key)) ?? 'unknown';
    }
    if (holder === jobId) return undefined;
    const held = parseHolder(holder);
    // A submit still under way has a TTL on its lease, and an ending lease runs out by itself.
    if (!held.ending && (await this.redis.pttl(key)) === -1 && (await this.redis.exists(this.keys.job(held.jobId))) === 0) {
      if ((await this.scripts.replace([key], holder, jobId, SUBMIT_LEASE_MS)) === 1) return undefined;
    }
    return held;
  }

  /** Makes the lease of a submit whose job record is being created lasting; false if it is no longer `jobId`'s. */
  async confirm(output: string, jobId: string): Promise<boolean> {
    return (await this.scripts.confirm([this.keyOf(output)], jobId)) === 1;
  }

  /**
   * Gives the lease back if `jobId` holds it (a submit that failed after taking it). GET then DEL,
   * not a script: a full Redis, which may be why the submit failed, refuses scripts that may write
   * but takes DEL, and a lease left behind would refuse every later run into the output. Safe
   * without a transaction: a held lease changes only by its holder's own end, and this job has none.
   */
  async release(output: string, jobId: string): Promise<void> {
    await this.#deleteIfHeld(output, jobId);
  }

  /**
   * Gives back the lease a stopped job kept (`ending`) once none of its steps is active. GET then
   * DEL: an ending lease changes only by expiring or by the job's own retry, which makes it
   * `jobId` again, and then the GET no longer matches.
   */
  async releaseEnding(output: string, jobId: string): Promise<void> {
    await this.#deleteIfHeld(output, ENDING_PREFIX + jobId);
  }

  /** Deletes the lease if it holds `value`. */
  async #deleteIfHeld(output: string, value: string): Promise<void> {
    const key = this.keyOf(output);
    if ((await this.redis.get(key)) === value) await this.redis.del(key);
  }

  /** The last job that took the output (submit or retry), kept as long as that job's record. */
  async lastTaker(output: string): Promise<string | undefined> {
    return (await this.redis.get(this.keys.takenOf(this.keyOf(output)))) ?? undefined;
  }

  /** Who holds the output, if anyone. */
  async holder(output: string): Promise<LeaseHolder | undefined> {
    const value = await this.redis.get(this.keyOf(output));
    return value === null ? undefined : parseHolder(value);
  }
}
