import type { Redis } from 'ioredis';

import { defineLuaScript } from '../src/redis/lua-script.js';
import { CURRENT_LUA, type CorpusKeys } from './corpus-keys.js';

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
}

/** What the splitter records for a shard when it has queued all its batches. */
interface ShardMeta {
  firstRow: number;
  lastRow: number;
  inputErrors: ErrorRecord[];
  blank: number;
  truncated: number;
  batches: number;
}

/** `inactive`: the job stopped, or the step belongs to an earlier generation. */
export type BatchStatus = 'inactive' | 'written' | 'complete' | 'stored' | 'pending';
export type ShardProgress = 'inactive' | 'written' | 'complete' | 'open' | 'too-many-rejected';

/**
 * When lines the provider rejects without a reason tied to their content come this thick, the
 * cause is systematic (a proxy's 413, a gateway's 400, a wrong setting), not the lines: the job
 * fails instead of "completing" with every row in `_errors.jsonl`.
 */
export const REJECTED_STREAK_LIMIT = 20;
export const REJECTED_SHARD_FRACTION = 0.05;

// KEYS: job, shard, written, open. ARGV: generation, shard, field, blob, errorsJson|'', embedded,
// failed, tokens, rejected (PROVIDER_REJECTED lines of this batch), shard rejected limit
const STORE_BATCH = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'written' end
redis.call('SADD', KEYS[4], ARGV[2])
local tooMany = false
if redis.call('HSETNX', KEYS[2], 'b:' .. ARGV[3], ARGV[4]) == 1 then
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'e:' .. ARGV[3], ARGV[5]) end
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  redis.call('HINCRBY', KEYS[1], 'batchesDone', 1)
  redis.call('HINCRBY', KEYS[1], 'rowsEmbedded', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'rowsFailed', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[8])
  redis.call('HINCRBY', KEYS[2], 'tokens', ARGV[8])
  local rejected = tonumber(ARGV[9])
  if rejected > 0 then
    local inShard = redis.call('HINCRBY', KEYS[2], 'rejected', rejected)
    local streak = rejected
    if tonumber(ARGV[6]) == 0 then streak = redis.call('HINCRBY', KEYS[1], 'rejectStreak', rejected) else redis.call('HSET', KEYS[1], 'rejectStreak', rejected) end
    if streak >= ${REJECTED_STREAK_LIMIT} or inShard > tonumber(ARGV[10]) then tooMany = true end
  elseif tonumber(ARGV[6]) > 0 then
    redis.call('HSET', KEYS[1], 'rejectStreak', 0)
  end
end
if tooMany then return 'too-many-rejected' end
local expected = redis.call('HGET', KEYS[2], 'expected')
if expected and tonumber(expected) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
return 'open'
`;

// KEYS: job, shard, written. ARGV: generation, shard, batch field suffix
const BATCH_STATUS = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'written' end
if redis.call('HEXISTS', KEYS[2], 'b:' .. ARGV[3]) == 1 then
  local expected = redis.call('HGET', KEYS[2], 'expected')
  if expected and tonumber(expected) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
  return 'stored'
end
return 'pending'
`;

// KEYS: job, shard, written, open. ARGV: generation, shard, expected, meta JSON, blank, truncated, input errors
const CLOSE_SHARD = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 'written' end
redis.call('SADD', KEYS[4], ARGV[2])
if redis.call('HSETNX', KEYS[2], 'expected', ARGV[3]) == 1 then
  redis.call('HSET', KEYS[2], 'meta', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'batchesTotal', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'rowsBlank', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'rowsTruncated', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'rowsFailed', ARGV[7])
end
if tonumber(ARGV[3]) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
return 'open'
`;

export class ShardBuffers {
  private readonly scripts;

  constructor(
    private readonly redis: Redis,
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
    summary: { expectedBatches: number; blank: number; truncated: number; inputErrors: ErrorRecord[]; firstRow: number; lastRow: number },
  ): Promise<ShardProgress> {
    const meta: ShardMeta = {
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
    };
  }
}
