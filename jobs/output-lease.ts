import path from 'node:path';

import type { RedisClient } from '../src/redis/redis-client.js';

import type { CorpusKeys } from './corpus-keys.js';

/**
 * One writer per output (invariant 7): a job holds a lease on its output location in Redis from
 * submit until it completes, fails or is cancelled (the job record's end-state script deletes it),
 * and `retry` takes it again. A second job into a leased output is refused.
 */

/** The same output however it was written: `s3://b/p` = `s3://b/p/`; local paths absolute. */
export function outputIdentity(output: string): string {
  if (/^s3:\/\//i.test(output)) return `s3://${output.slice(5).replace(/\/*$/, '')}/`;
  return `${path.resolve(output).replace(/\/*$/, '')}/`;
}

export class OutputLeases {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {}

  /** The Redis key of an output's lease (kept on the job record, so its end can release it). */
  keyOf(output: string): string {
    return this.keys.lease(outputIdentity(output));
  }

  /** Takes the lease for `jobId`; returns undefined on success, else the id of the job holding it. */
  async acquire(output: string, jobId: string): Promise<string | undefined> {
    const key = this.keyOf(output);
    if ((await this.redis.set(key, jobId, 'NX')) === 'OK') return undefined;
    const holder = await this.redis.get(key);
    // Released between SET and GET: try once more rather than report a holder that is gone.
    if (holder === null) return (await this.redis.set(key, jobId, 'NX')) === 'OK' ? undefined : ((await this.redis.get(key)) ?? 'unknown');
    return holder === jobId ? undefined : holder;
  }

  /**
   * Gives the lease back if `jobId` holds it (a submit that failed after taking it). GET then DEL,
   * not a script: a full Redis, which may be why the submit failed, refuses scripts that may write
   * but takes DEL, and a lease left behind would refuse every later run into the output. Safe
   * without a transaction: a held lease changes only by its holder's own end, and this job has none.
   */
  async release(output: string, jobId: string): Promise<void> {
    const key = this.keyOf(output);
    if ((await this.redis.get(key)) === jobId) await this.redis.del(key);
  }

  /** The job holding the output, if any. */
  async holder(output: string): Promise<string | undefined> {
    return (await this.redis.get(this.keyOf(output))) ?? undefined;
  }
}
