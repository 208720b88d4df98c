import type { Redis } from 'ioredis';

import type { JobOptions } from '../src/job-options.js';
import { defineLuaScript } from '../src/redis/lua-script.js';

/**
 * The durable state of corpus jobs in Redis, and the atomic steps that keep invariant 1 (nothing
 * lost, nothing doubled) when any step runs twice: every counter moves only on the first write of
 * the thing it counts (HSETNX), and nothing is written for a shard once it has been written out.
 *
 * Keys under `<prefix>:`
 *   jobs                 ZSET  corpus job id → creation time (ms)
 *   job:<id>             HASH  options (JSON), state, generation, times, counters
 *   job:<id>:shard:<k>   HASH  b:<n> → encoded batch (Float32 bytes), e:<n> → error records (JSON),
 *                              expected (batches in the shard), done, meta (JSON)
 *   job:<id>:shards      HASH  k → stats of a written shard (JSON); its presence means "written"
 */

export type CorpusJobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';

/** One line that could not be embedded, as written to `_errors.jsonl`. */
export interface ErrorRecord {
  row: number;
  source: string;
  line: number;
  code: string;
  message: string;
}

export interface ShardStats {
  shard: number;
  file: string;
  firstRow: number;
  lastRow: number;
  rows: number;
  bytes: number;
  errors: number;
  /** Temporary key of the shard's error records, merged into `_errors.jsonl` by finalize. */
  errorsKey: string | null;
  /** The shard's share of the job's counters, so a restarted job can rebuild them from written shards. */
  blank: number;
  truncated: number;
  tokens: number;
  batches: number;
}

export interface CorpusJobCounters {
  linesRead: number;
  totalLines: number | null;
  totalShards: number | null;
  batchesTotal: number;
  batchesDone: number;
  rowsEmbedded: number;
  rowsFailed: number;
  rowsBlank: number;
  rowsTruncated: number;
  tokens: number;
  shardsWritten: number;
}

export interface CorpusJobRecord extends CorpusJobCounters {
  id: string;
  options: JobOptions;
  state: CorpusJobState;
  generation: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  /** Why the job failed or was cancelled. */
  error: string | null;
  errorCode: string | null;
  /** Name of the schedule that submitted it, if any. */
  schedule: string | null;
}

const ACTIVE = `local function active(jobKey)
  local s = redis.call('HGET', jobKey, 'state')
  return s == 'queued' or s == 'running'
end
`;

// KEYS: job, shard, shards. ARGV: shard index, field, blob, errorsJson|'' , embedded, failed, tokens
const STORE_BATCH = `${ACTIVE}
if not active(KEYS[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'written' end
if redis.call('HSETNX', KEYS[2], 'b:' .. ARGV[2], ARGV[3]) == 1 then
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'e:' .. ARGV[2], ARGV[4]) end
  redis.call('HINCRBY', KEYS[2], 'done', 1)
  redis.call('HINCRBY', KEYS[1], 'batchesDone', 1)
  redis.call('HINCRBY', KEYS[1], 'rowsEmbedded', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'rowsFailed', ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[7])
  redis.call('HINCRBY', KEYS[2], 'tokens', ARGV[7])
end
local expected = redis.call('HGET', KEYS[2], 'expected')
if expected and tonumber(expected) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
return 'open'
`;

// KEYS: job, shard, shards. ARGV: shard index, batch field suffix
const BATCH_STATUS = `${ACTIVE}
if not active(KEYS[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'written' end
if redis.call('HEXISTS', KEYS[2], 'b:' .. ARGV[2]) == 1 then
  local expected = redis.call('HGET', KEYS[2], 'expected')
  if expected and tonumber(expected) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
  return 'stored'
end
return 'pending'
`;

// KEYS: job, shard, shards. ARGV: shard index, expected, meta JSON, blank, truncated, input errors
const CLOSE_SHARD = `${ACTIVE}
if not active(KEYS[1]) then return 'inactive' end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return 'written' end
if redis.call('HSETNX', KEYS[2], 'expected', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], 'meta', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'batchesTotal', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'rowsBlank', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'rowsTruncated', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'rowsFailed', ARGV[6])
end
if tonumber(ARGV[2]) == tonumber(redis.call('HGET', KEYS[2], 'done') or '0') then return 'complete' end
return 'open'
`;

// KEYS: job, shard, shards. ARGV: shard index, stats JSON. Returns {shardsWritten, totalShards or -1}
const MARK_SHARD_WRITTEN = `
if redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'shardsWritten', 1)
end
redis.call('DEL', KEYS[2])
return {tonumber(redis.call('HGET', KEYS[1], 'shardsWritten') or '0'), tonumber(redis.call('HGET', KEYS[1], 'totalShards') or '-1')}
`;

// KEYS: job. ARGV: totalLines, totalShards. Returns {shardsWritten, totalShards}
const FINISH_SPLIT = `${ACTIVE}
if not active(KEYS[1]) then return {-1, -1} end
redis.call('HSET', KEYS[1], 'totalLines', ARGV[1], 'totalShards', ARGV[2], 'linesRead', ARGV[1])
return {tonumber(redis.call('HGET', KEYS[1], 'shardsWritten') or '0'), tonumber(ARGV[2])}
`;

// KEYS: job. ARGV: new state, allowed-from states (comma list), error, errorCode, time field, time
const TRANSITION = `
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 0 end
local allowed = false
for st in string.gmatch(ARGV[2], '[^,]+') do if st == s then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3], 'errorCode', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[6]) end
return 1
`;

/** What the splitter records for a shard when it has queued all its batches. */
interface ShardMeta {
  firstRow: number;
  lastRow: number;
  inputErrors: ErrorRecord[];
  blank: number;
  truncated: number;
  batches: number;
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
}

export type BatchStatus = 'inactive' | 'written' | 'complete' | 'stored' | 'pending';
export type ShardProgress = 'inactive' | 'written' | 'complete' | 'open';

export class CorpusStore {
  private readonly scripts;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.scripts = {
      storeBatch: defineLuaScript(redis, STORE_BATCH),
      batchStatus: defineLuaScript(redis, BATCH_STATUS),
      closeShard: defineLuaScript(redis, CLOSE_SHARD),
      markShardWritten: defineLuaScript(redis, MARK_SHARD_WRITTEN),
      finishSplit: defineLuaScript(redis, FINISH_SPLIT),
      transition: defineLuaScript(redis, TRANSITION),
    };
  }

  private jobKey = (id: string): string => `${this.prefix}:job:${id}`;
  private shardKey = (id: string, shard: number): string => `${this.prefix}:job:${id}:shard:${shard}`;
  private shardsKey = (id: string): string => `${this.prefix}:job:${id}:shards`;
  private get jobsKey(): string {
    return `${this.prefix}:jobs`;
  }

  async create(id: string, options: JobOptions, extra: { schedule?: string } = {}): Promise<void> {
    const now = Date.now();
    await this.redis
      .multi()
      .hset(this.jobKey(id), {
        options: JSON.stringify(options),
        state: 'queued',
        generation: 0,
        createdAt: now,
        ...(extra.schedule ? { schedule: extra.schedule } : {}),
      })
      .zadd(this.jobsKey, now, id)
      .exec();
  }

  async get(id: string): Promise<CorpusJobRecord | undefined> {
    const hash = await this.redis.hgetall(this.jobKey(id));
    if (!hash.options) return undefined;
    const number = (field: string): number => Number(hash[field] ?? 0);
    const optional = (field: string): number | null => (hash[field] === undefined ? null : Number(hash[field]));
    return {
      id,
      options: JSON.parse(hash.options) as JobOptions,
      state: hash.state as CorpusJobState,
      generation: number('generation'),
      createdAt: number('createdAt'),
      startedAt: optional('startedAt'),
      finishedAt: optional('finishedAt'),
      error: hash.error ?? null,
      errorCode: hash.errorCode ?? null,
      schedule: hash.schedule ?? null,
      linesRead: number('linesRead'),
      totalLines: optional('totalLines'),
      totalShards: optional('totalShards'),
      batchesTotal: number('batchesTotal'),
      batchesDone: number('batchesDone'),
      rowsEmbedded: number('rowsEmbedded'),
      rowsFailed: number('rowsFailed'),
      rowsBlank: number('rowsBlank'),
      rowsTruncated: number('rowsTruncated'),
      tokens: number('tokens'),
      shardsWritten: number('shardsWritten'),
    };
  }

  async state(id: string): Promise<CorpusJobState | undefined> {
    return ((await this.redis.hget(this.jobKey(id), 'state')) ?? undefined) as CorpusJobState | undefined;
  }

  /** Newest first. */
  async list(limit = 50): Promise<CorpusJobRecord[]> {
    const ids = await this.redis.zrevrange(this.jobsKey, 0, limit - 1);
    const records = await Promise.all(ids.map((id) => this.get(id)));
    return records.filter((record): record is CorpusJobRecord => record !== undefined);
  }

  private async transition(
    id: string,
    to: CorpusJobState,
    from: readonly CorpusJobState[],
    fields: { error?: string; errorCode?: string; timeField?: 'startedAt' | 'finishedAt' } = {},
  ): Promise<boolean> {
    const changed = await this.scripts.transition(
      [this.jobKey(id)],
      to,
      from.join(','),
      fields.error ?? '',
      fields.errorCode ?? '',
      fields.timeField ?? '',
      Date.now(),
    );
    return changed === 1;
  }

  /** The splitter started (first time only sets startedAt). */
  async markRunning(id: string): Promise<boolean> {
    const changed = await this.transition(id, 'running', ['queued'], { timeField: 'startedAt' });
    return changed || (await this.state(id)) === 'running';
  }

  async markCompleted(id: string): Promise<boolean> {
    return this.transition(id, 'completed', ['running'], { timeField: 'finishedAt' });
  }

  /** Stops the job with a reason; only a queued or running job can fail. */
  async markFailed(id: string, error: string, errorCode: string): Promise<boolean> {
    return this.transition(id, 'failed', ['queued', 'running'], { error, errorCode, timeField: 'finishedAt' });
  }

  async markCancelled(id: string): Promise<boolean> {
    return this.transition(id, 'cancelled', ['queued', 'running'], {
      error: 'cancelled by user',
      errorCode: 'CANCELLED',
      timeField: 'finishedAt',
    });
  }

  /**
   * Back to queued for `embedq retry`; returns the new generation, or undefined if not failed or
   * cancelled. Written shards stay; the buffers of unwritten ones go (at most maxOpenShards shards
   * of work), and the counters are rebuilt from the written shards, so the new run counts every
   * other line exactly once.
   */
  async restart(id: string): Promise<number | undefined> {
    const state = await this.state(id);
    if (state !== 'failed' && state !== 'cancelled') return undefined;
    // While the job is still stopped, late steps of the old run can store nothing (the Lua scripts
    // refuse inactive jobs), so the rebuilt counters cannot miss or double anything.
    await this.dropShardBuffers(id);
    const written = await this.shardStats(id);
    const sum = (pick: (shard: ShardStats) => number): number => written.reduce((total, shard) => total + pick(shard), 0);
    const batches = sum((shard) => shard.batches);
    await this.redis
      .multi()
      .hdel(this.jobKey(id), 'error', 'errorCode', 'finishedAt', 'totalLines', 'totalShards')
      .hset(this.jobKey(id), {
        linesRead: 0,
        batchesTotal: batches,
        batchesDone: batches,
        rowsEmbedded: sum((shard) => shard.rows),
        rowsFailed: sum((shard) => shard.errors),
        rowsBlank: sum((shard) => shard.blank),
        rowsTruncated: sum((shard) => shard.truncated),
        tokens: sum((shard) => shard.tokens),
        shardsWritten: written.length,
      })
      .exec();
    if (!(await this.transition(id, 'queued', ['failed', 'cancelled']))) return undefined;
    return this.redis.hincrby(this.jobKey(id), 'generation', 1);
  }

  async setLinesRead(id: string, linesRead: number): Promise<void> {
    await this.redis.hset(this.jobKey(id), 'linesRead', linesRead);
  }

  async isShardWritten(id: string, shard: number): Promise<boolean> {
    return (await this.redis.hexists(this.shardsKey(id), String(shard))) === 1;
  }

  async writtenShardCount(id: string): Promise<number> {
    return this.redis.hlen(this.shardsKey(id));
  }

  /** The splitter has enqueued every batch of a shard; records its blank lines and input errors once. */
  async closeShard(
    id: string,
    shard: number,
    summary: { expectedBatches: number; blank: number; truncated: number; inputErrors: ErrorRecord[]; firstRow: number; lastRow: number },
  ): Promise<ShardProgress> {
    const meta = JSON.stringify({
      firstRow: summary.firstRow,
      lastRow: summary.lastRow,
      inputErrors: summary.inputErrors,
      blank: summary.blank,
      truncated: summary.truncated,
      batches: summary.expectedBatches,
    });
    return (await this.scripts.closeShard(
      [this.jobKey(id), this.shardKey(id, shard), this.shardsKey(id)],
      shard,
      summary.expectedBatches,
      meta,
      summary.blank,
      summary.truncated,
      summary.inputErrors.length,
    )) as ShardProgress;
  }

  async batchStatus(id: string, shard: number, batch: number): Promise<BatchStatus> {
    return (await this.scripts.batchStatus([this.jobKey(id), this.shardKey(id, shard), this.shardsKey(id)], shard, batch)) as BatchStatus;
  }

  /** Stores one batch's vectors and errors once; says whether its shard is now complete. */
  async storeBatch(
    id: string,
    shard: number,
    batch: number,
    encoded: Buffer,
    errors: readonly ErrorRecord[],
    counts: { embedded: number; tokens: number },
  ): Promise<ShardProgress> {
    return (await this.scripts.storeBatch(
      [this.jobKey(id), this.shardKey(id, shard), this.shardsKey(id)],
      shard,
      batch,
      encoded,
      errors.length > 0 ? JSON.stringify(errors) : '',
      counts.embedded,
      errors.length,
      counts.tokens,
    )) as ShardProgress;
  }

  /** Everything buffered for a shard: encoded batches in batch order, error records, the splitter's counts. */
  async readShard(id: string, shard: number): Promise<BufferedShard | undefined> {
    const hash = await this.redis.hgetallBuffer(this.shardKey(id, shard));
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
    };
  }

  /** Records a written shard once and frees its buffer; returns what finalize needs to know. */
  async markShardWritten(id: string, stats: ShardStats): Promise<{ shardsWritten: number; totalShards: number | null }> {
    const [shardsWritten, totalShards] = (await this.scripts.markShardWritten(
      [this.jobKey(id), this.shardKey(id, stats.shard), this.shardsKey(id)],
      stats.shard,
      JSON.stringify(stats),
    )) as [number, number];
    return { shardsWritten, totalShards: totalShards < 0 ? null : totalShards };
  }

  async finishSplit(id: string, totals: { totalLines: number; totalShards: number }): Promise<{ shardsWritten: number; totalShards: number } | undefined> {
    const [shardsWritten, totalShards] = (await this.scripts.finishSplit([this.jobKey(id)], totals.totalLines, totals.totalShards)) as [
      number,
      number,
    ];
    return shardsWritten < 0 ? undefined : { shardsWritten, totalShards };
  }

  async shardStats(id: string): Promise<ShardStats[]> {
    const hash = await this.redis.hgetall(this.shardsKey(id));
    return Object.values(hash)
      .map((value) => JSON.parse(value) as ShardStats)
      .sort((a, b) => a.shard - b.shard);
  }

  /** Drops the buffers of unwritten shards (cancel); written-shard stats stay for status. */
  async dropShardBuffers(id: string): Promise<void> {
    const stream = this.redis.scanStream({ match: `${this.prefix}:job:${id}:shard:*`, count: 500 });
    for await (const keys of stream as AsyncIterable<string[]>) {
      if (keys.length > 0) await this.redis.del(...keys);
    }
  }

  /** After finalize: the per-shard stats are in the manifest now. */
  async dropShardStats(id: string): Promise<void> {
    await this.redis.del(this.shardsKey(id));
  }
}
