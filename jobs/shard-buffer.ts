import type { RedisClient } from '../src/redis/redis-client.js';

import { defineLuaScript } from '../src/redis/lua-script.js';
import type { CorpusKeys } from './corpus-keys.js';
import { JobStateLostError } from './job-errors.js';
import { readShardBatches, readShardSummary, shardSliceBatches, type ShardSummary } from './shard-buffer-read.js';
import { BATCH_STATUS, CHECK_LOST, CLOSE_SHARD, REJECTED_SHARD_FRACTION, REJECTED_STREAK_LIMIT, STORE_BATCH } from './shard-buffer-scripts.js';
import { type ErrorRecord, NO_REUSE, type ReuseCounts, type ShardMeta } from './shard-records.js';

/**
 * The Redis buffer of a shard that is being embedded: each batch's vectors and error records,
 * stored once (HSETNX), and the splitter's summary. Counters on the job move only on the first
 * store of what they count, and only for the job's current generation, so a step that runs twice,
 * or late, changes nothing (invariants 1 and 8).
 */

export type { ErrorRecord, ReuseCounts } from './shard-records.js';

/** `inactive`: the job stopped, or the step belongs to an earlier generation. */
export type BatchStatus = 'inactive' | 'written' | 'complete' | 'stored' | 'pending';
export type ShardProgress = 'inactive' | 'written' | 'complete' | 'open' | 'too-many-rejected';

export { REJECTED_SHARD_FRACTION, REJECTED_STREAK_LIMIT } from './shard-buffer-scripts.js';

export class ShardBuffers {
  private readonly scripts;

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: CorpusKeys,
  ) {
    this.scripts = {
      storeBatch: defineLuaScript(redis, STORE_BATCH),
      batchStatus: defineLuaScript(redis, BATCH_STATUS),
      closeShard: defineLuaScript(redis, CLOSE_SHARD),
      checkLost: defineLuaScript(redis, CHECK_LOST),
    };
  }

  private shardKeys(id: string, shard: number): string[] {
    return [this.keys.job(id), this.keys.shard(id, shard), this.keys.writtenShards(id), this.keys.openShards(id)];
  }

  /** The splitter has enqueued every batch of a shard; records its blank lines and input errors once. */
  async closeShard(
    id: string,
    generation: number,
    shard: number,
    summary: {
      expectedBatches: number;
      blank: number;
      truncated: number;
      inputErrors: ErrorRecord[];
      firstRow: number;
      lastRow: number;
      reuse?: ReuseCounts;
      reuseList?: Buffer | undefined;
    },
  ): Promise<ShardProgress> {
    const reuse = summary.reuse ?? NO_REUSE;
    const meta: ShardMeta = {
      reuse,
      firstRow: summary.firstRow,
      lastRow: summary.lastRow,
      inputErrors: summary.inputErrors,
      blank: summary.blank,
      truncated: summary.truncated,
      batches: summary.expectedBatches,
    };
    const answer = await this.scripts.closeShard(
      this.shardKeys(id, shard),
      generation,
      shard,
      summary.expectedBatches,
      JSON.stringify(meta),
      summary.blank,
      summary.truncated,
      summary.inputErrors.length,
      reuse.reused,
      reuse.new,
      reuse.changed,
      reuse.unchanged,
      summary.reuseList ?? '',
    );
    return progressOf(answer as ShardProgress | LostAnswer, id, shard);
  }

  async batchStatus(id: string, generation: number, shard: number, batch: number): Promise<BatchStatus> {
    return (await this.scripts.batchStatus(this.shardKeys(id, shard).slice(0, 3), generation, shard, batch)) as BatchStatus;
  }

  /**
   * Stores one batch's vectors and errors once; says whether its shard is now complete, or
   * `too-many-rejected` when rejected lines pass the limits above (the caller fails the job).
   * JobStateLostError when the job's ledger or this shard's buffer is gone from Redis.
   */
  async storeBatch(
    id: string,
    generation: number,
    shard: number,
    batch: number,
    encoded: Buffer,
    errors: readonly ErrorRecord[],
    counts: { embedded: number; tokens: number; rejected: number; shardRows: number },
  ): Promise<ShardProgress> {
    const shardLimit = Math.max(REJECTED_STREAK_LIMIT, Math.ceil(counts.shardRows * REJECTED_SHARD_FRACTION));
    const answer = await this.scripts.storeBatch(
      this.shardKeys(id, shard),
      generation,
      shard,
      batch,
      encoded,
      errors.length > 0 ? JSON.stringify(errors) : '',
      counts.embedded,
      errors.length,
      counts.tokens,
      counts.rejected,
      shardLimit,
    );
    return progressOf(answer as ShardProgress | LostAnswer, id, shard);
  }

  /**
   * For a step that finds no work where work should be: JobStateLostError if the job's ledger, or
   * this shard's buffer (unless written), is gone from Redis. False once the job stopped or moved
   * to another generation.
   */
  async checkWhole(id: string, generation: number, shard: number): Promise<boolean> {
    const answer = (await this.scripts.checkLost(this.shardKeys(id, shard), generation, shard)) as LostAnswer | 'inactive' | 'whole';
    if (answer === 'inactive') return false;
    if (answer !== 'whole') progressOf(answer, id, shard);
    return true;
  }

  /** A complete-or-not shard buffer's counts and input errors, without its batches (undefined: no buffer). */
  summary(id: string, shard: number): Promise<ShardSummary | undefined> {
    return readShardSummary(this.redis, this.keys.shard(id, shard));
  }

  /**
   * The shard's `count` batches, a slice at a time in batch order; their error records are added to
   * `errors` as they are read (see shard-buffer-read.ts). `dimension` sizes the slices.
   */
  batches(id: string, shard: number, count: number, errors: ErrorRecord[], dimension: number): AsyncGenerator<Buffer[]> {
    return readShardBatches(this.redis, this.keys.shard(id, shard), count, errors, shardSliceBatches(dimension));
  }
}

/** What CLOSE_SHARD and STORE_BATCH answer when part of the job's state is gone (LOST_STATE_LUA). */
type LostAnswer = 'lost-ledger' | 'lost-buffer';

function progressOf(answer: ShardProgress | LostAnswer, id: string, shard: number): ShardProgress {
  if (answer === 'lost-ledger') throw new JobStateLostError(id, 'the ledger of written shards');
  if (answer === 'lost-buffer') throw new JobStateLostError(id, `shard ${shard}'s buffer`);
  return answer;
}
