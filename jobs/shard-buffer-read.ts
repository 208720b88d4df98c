import type { RedisClient } from '../src/redis/redis-client.js';
import { sizeForDimension } from '../src/shards/size-for-dimension.js';
import { ShardBufferChangedError } from './job-errors.js';
import { type ErrorRecord, NO_REUSE, type ReuseCounts, type ShardMeta } from './shard-records.js';

/**
 * Reading a complete shard buffer for the shard writer: first its summary, then its batches a
 * slice at a time in batch order (never the whole hash at once: at dimension 1024 with sparse a
 * 10,000-row shard is ~60 MB of batches).
 */

/** A shard buffer without its batches. */
export interface ShardSummary {
  firstRow: number;
  lastRow: number;
  blank: number;
  truncated: number;
  batchCount: number;
  tokens: number;
  /** Batches stored so far, and how many the splitter queued (undefined until it closed the shard). */
  done: number;
  expected: number | undefined;
  /** Error records of the input (lines the splitter refused); the batches' own come with the batches. */
  inputErrors: ErrorRecord[];
  /** `--reuse`: the encoded list of lines that take a previous row's vectors (src/reuse/reuse-list.ts). */
  reuseList: Buffer | undefined;
  reuse: ReuseCounts;
}

/** Batches per slice up to dimension 1024: ~640 rows, ~4 MB at dimension 1024 with sparse. One HMGET each. */
export const SHARD_SLICE_BATCHES = 64;

/**
 * Batches per slice at `dimension`: {@link SHARD_SLICE_BATCHES}, fewer above dimension 1024 so a
 * slice stays ~4 MB (32 at 2048). A slice is in memory up to three times at once (the Redis reply,
 * the buffer handed to the shard thread, and the one the thread asked for next).
 */
export function shardSliceBatches(dimension: number): number {
  return sizeForDimension(SHARD_SLICE_BATCHES, dimension, 8);
}

/** The summary of the buffer at `key`, or undefined when there is none (or the splitter never closed it). */
export async function readShardSummary(redis: RedisClient, key: string): Promise<ShardSummary | undefined> {
  const [meta, tokens, done, expected, reuseList] = await redis.hmgetBuffer(key, 'meta', 'tokens', 'done', 'expected', 'reuse');
  if (!meta) return undefined;
  const parsed = JSON.parse(meta.toString('utf8')) as ShardMeta;
  return {
    firstRow: parsed.firstRow,
    lastRow: parsed.lastRow,
    blank: parsed.blank,
    truncated: parsed.truncated,
    batchCount: parsed.batches,
    tokens: Number(tokens?.toString() ?? 0),
    done: Number(done?.toString() ?? 0),
    expected: expected ? Number(expected.toString()) : undefined,
    inputErrors: parsed.inputErrors,
    reuseList: reuseList ?? undefined,
    reuse: parsed.reuse ?? NO_REUSE,
  };
}

/**
 * Batches 0 … `count - 1` of the buffer at `key`, `sliceBatches` at a time, in batch order; each
 * batch's error records go to `errors` as its slice is read. A batch missing from a buffer that was
 * complete means the buffer changed under the reader: ShardBufferChangedError, rather than a shard
 * with rows missing.
 */
export async function* readShardBatches(
  redis: RedisClient,
  key: string,
  count: number,
  errors: ErrorRecord[],
  sliceBatches = SHARD_SLICE_BATCHES,
): AsyncGenerator<Buffer[]> {
  for (let first = 0; first < count; first += sliceBatches) {
    const numbers = Array.from({ length: Math.min(sliceBatches, count - first) }, (_, index) => first + index);
    const values = await redis.hmgetBuffer(key, ...numbers.map((batch) => `b:${batch}`), ...numbers.map((batch) => `e:${batch}`));
    const batches = values.slice(0, numbers.length);
    const missing = batches.findIndex((batch) => batch === null);
    if (missing >= 0) throw new ShardBufferChangedError(`shard buffer ${key} lost batch ${numbers[missing]} while it was being written`);
    for (const recorded of values.slice(numbers.length)) {
      if (recorded) errors.push(...(JSON.parse(recorded.toString('utf8')) as ErrorRecord[]));
    }
    yield batches as Buffer[];
  }
}
