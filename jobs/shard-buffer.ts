import type { RedisClient } from '../src/redis/redis-client.js';

import { defineLuaScript } from '../src/redis/lua-script.js';
import type { CorpusKeys } from './corpus-keys.js';
import { BATCH_STATUS, CLOSE_SHARD, REJECTED_SHARD_FRACTION, REJECTED_STREAK_LIMIT, STORE_BATCH } from './shard-buffer-scripts.js';

/**
 * The Redis buffer of a shard that is being embedded: each batch's vectors and error records,
 * stored once (HSETNX), and the splitter's summary. Counters on the job move only on the first
 * store of what they count, and only for the job's current generation, so a step that runs twice,
 * or late, changes nothing (invariants 1 and 8).
 */

/** One line that could not be embedded, as written to `_errors.jsonl`. */
export interface ErrorRecord {
  row: number;
  source: string;
  line: number;
  code: string;
  message: string;
}

export interface BufferedShard {
  batches: Buffer[];
  errors: ErrorRecord[];
  firstRow: number;
  lastRow: number;
  blank: number;
  truncated: number;
  batchCount: number;
  tokens: number;
  /** Batches stored so far, and how many the splitter queued (undefined until it closed the shard). */
  done: number;
  expected: number | undefined;
  /** `--reuse`: the encoded list of lines that take a previous row's vectors (src/reuse/reuse-list.ts). */
  reuseList: Buffer | undefined;
  reuse: ReuseCounts;
}

/** A shard's `--reuse` counts: rows reused; with `--id-field`, ids new, changed and unchanged. */
export interface ReuseCounts {
  reused: number;
  new: number;
  changed: number;
  unchanged: number;
}

const NO_REUSE: ReuseCounts = { reused: 0, new: 0, changed: 0, unchanged: 0 };

/** What the splitter records for a shard when it has queued all its batches. */
interface ShardMeta {
  firstRow: number;
  lastRow: number;
  inputErrors: ErrorRecord[];
  blank: number;
  truncated: number;
  batches: number;
  reuse?: ReuseCounts;
}

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
    return (await this.scripts.closeShard(
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
    )) as ShardProgress;
  }

  async batchStatus(id: string, generation: number, shard: number, batch: number): Promise<BatchStatus> {
    return (await this.scripts.batchStatus(this.shardKeys(id, shard).slice(0, 3), generation, shard, batch)) as BatchStatus;
  }

  /**
   * Stores one batch's vectors and errors once; says whether its shard is now complete, or
   * `too-many-rejected` when rejected lines pass the limits above (the caller fails the job).
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
    return (await this.scripts.storeBatch(
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
    )) as ShardProgress;
  }

  /** Everything buffered for a shard: encoded batches in batch order, error records, the splitter's counts. */
  async read(id: string, shard: number): Promise<BufferedShard | undefined> {
    const hash = await this.redis.hgetallBuffer(this.keys.shard(id, shard));
    const meta = hash.meta;
    if (!meta) return undefined;
    const parsed = JSON.parse(meta.toString('utf8')) as ShardMeta;
    const batches: Array<[number, Buffer]> = [];
    const errors: ErrorRecord[] = [...parsed.inputErrors];
    for (const [field, value] of Object.entries(hash)) {
      if (field.startsWith('b:')) batches.push([Number(field.slice(2)), value]);
      else if (field.startsWith('e:')) errors.push(...(JSON.parse(value.toString('utf8')) as ErrorRecord[]));
    }
    batches.sort((a, b) => a[0] - b[0]);
    errors.sort((a, b) => a.row - b.row);
    return {
      batches: batches.map(([, value]) => value),
      errors,
      firstRow: parsed.firstRow,
      lastRow: parsed.lastRow,
      blank: parsed.blank,
      truncated: parsed.truncated,
      batchCount: parsed.batches,
      tokens: Number(hash.tokens?.toString() ?? 0),
      done: Number(hash.done?.toString() ?? 0),
      expected: hash.expected === undefined ? undefined : Number(hash.expected.toString()),
      reuseList: hash.reuse,
      reuse: parsed.reuse ?? NO_REUSE,
    };
  }
}
