import type { Redis } from 'ioredis';

import type { JobOptions } from '../src/job-options.js';
import { defineLuaScript } from '../src/redis/lua-script.js';
import { CURRENT_LUA, DROP_BUFFERS_LUA, type CorpusKeys } from './corpus-keys.js';

/**
 * A corpus job's record in Redis: options, state, generation, times and counters. Every state
 * change is one Lua script, so it cannot interleave with a step of the pipeline; the end states
 * (completed, failed, cancelled) also give up the job's output lease.
 */

export type CorpusJobState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export const FINAL_STATES: ReadonlySet<CorpusJobState> = new Set(['completed', 'failed', 'cancelled']);

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

// KEYS: job, open, lease. ARGV: new state, allowed-from (comma list), error, errorCode, time field,
// time, shard prefix, generation ('' = any), job id. Returns 1 if changed.
const TRANSITION = `${CURRENT_LUA}${DROP_BUFFERS_LUA}
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return 0 end
if ARGV[8] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'generation')) ~= tonumber(ARGV[8]) then return 0 end
local allowed = false
for st in string.gmatch(ARGV[2], '[^,]+') do if st == s then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3], 'errorCode', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], ARGV[5], ARGV[6]) end
if ARGV[1] == 'completed' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' then
  -- The output is free for the next job; buffers of shards still open are of no use now.
  if KEYS[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[9] then redis.call('DEL', KEYS[3]) end
  if ARGV[1] ~= 'completed' then drop_buffers(KEYS[2], ARGV[7]) end
end
return 1
`;

// KEYS: job, open, shards (written), lease. ARGV: job id, shard prefix.
// Returns {generation} or {0, reason, holder}.
const RESTART = `${DROP_BUFFERS_LUA}
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return {0, 'missing', ''} end
if s ~= 'failed' and s ~= 'cancelled' then return {0, s, ''} end
if KEYS[4] ~= '' then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[1] then return {0, 'leased', holder} end
  redis.call('SET', KEYS[4], ARGV[1])
end
drop_buffers(KEYS[2], ARGV[2])
-- Counters rebuilt from the written shards: the new run counts every other line exactly once.
local c = {batches = 0, rows = 0, errors = 0, blank = 0, truncated = 0, tokens = 0, n = 0}
for _, v in ipairs(redis.call('HVALS', KEYS[3])) do
  local st = cjson.decode(v)
  c.batches = c.batches + st.batches
  c.rows = c.rows + st.rows
  c.errors = c.errors + st.errors
  c.blank = c.blank + st.blank
  c.truncated = c.truncated + st.truncated
  c.tokens = c.tokens + st.tokens
  c.n = c.n + 1
end
redis.call('HDEL', KEYS[1], 'error', 'errorCode', 'finishedAt', 'totalLines', 'totalShards', 'rejectStreak')
redis.call('HSET', KEYS[1], 'state', 'queued', 'linesRead', 0, 'batchesTotal', c.batches, 'batchesDone', c.batches,
  'rowsEmbedded', c.rows, 'rowsFailed', c.errors, 'rowsBlank', c.blank, 'rowsTruncated', c.truncated,
  'tokens', c.tokens, 'shardsWritten', c.n)
return {redis.call('HINCRBY', KEYS[1], 'generation', 1)}
`;

// KEYS: job. ARGV: generation. Queued → running (startedAt set once). Returns 1 if running now.
const START = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('HSETNX', KEYS[1], 'startedAt', ARGV[2])
end
return 1
`;

// KEYS: job. ARGV: generation, totalLines, totalShards. Returns {shardsWritten, totalShards} or {-1, -1}.
const FINISH_SPLIT = `${CURRENT_LUA}
if not current(KEYS[1], ARGV[1]) then return {-1, -1} end
redis.call('HSET', KEYS[1], 'totalLines', ARGV[2], 'totalShards', ARGV[3], 'linesRead', ARGV[2])
return {tonumber(redis.call('HGET', KEYS[1], 'shardsWritten') or '0'), tonumber(ARGV[3])}
`;

// KEYS: job. ARGV: generation, linesRead.
const SET_LINES_READ = `${CURRENT_LUA}
if current(KEYS[1], ARGV[1]) then redis.call('HSET', KEYS[1], 'linesRead', ARGV[2]) end
`;

/** Why `restart` refused: the job is gone, not stopped, or its output now belongs to another job. */
export type RestartRefusal = { reason: 'missing' } | { reason: 'not-stopped'; state: string } | { reason: 'leased'; holder: string };

export class JobRecords {
  private readonly scripts;

  constructor(
    private readonly redis: Redis,
    private readonly keys: CorpusKeys,
  ) {
    this.scripts = {
      transition: defineLuaScript(redis, TRANSITION),
      restart: defineLuaScript(redis, RESTART),
      start: defineLuaScript(redis, START),
      finishSplit: defineLuaScript(redis, FINISH_SPLIT),
      setLinesRead: defineLuaScript(redis, SET_LINES_READ),
    };
  }

  /** Records a new job (state queued, generation 0); `leaseKey` is the output lease it holds. */
  async create(id: string, options: JobOptions, extra: { schedule?: string | undefined; leaseKey?: string } = {}): Promise<void> {
    const now = Date.now();
    await this.redis
      .multi()
      .hset(this.keys.job(id), {
        options: JSON.stringify(options),
        state: 'queued',
        generation: 0,
        createdAt: now,
        ...(extra.schedule ? { schedule: extra.schedule } : {}),
        ...(extra.leaseKey ? { lease: extra.leaseKey } : {}),
      })
      .zadd(this.keys.jobs, now, id)
      .exec();
  }

  /** The job's record, or undefined when Redis does not have it (never submitted, or Redis lost it). */
  async get(id: string): Promise<CorpusJobRecord | undefined> {
    const hash = await this.redis.hgetall(this.keys.job(id));
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

  /** Just the state (cheap); undefined when the job does not exist. */
  async state(id: string): Promise<CorpusJobState | undefined> {
    return ((await this.redis.hget(this.keys.job(id), 'state')) ?? undefined) as CorpusJobState | undefined;
  }

  /** State and generation in one round trip, for fencing checks outside Lua. */
  async stateAndGeneration(id: string): Promise<{ state: CorpusJobState; generation: number } | undefined> {
    const [state, generation] = await this.redis.hmget(this.keys.job(id), 'state', 'generation');
    return state ? { state: state as CorpusJobState, generation: Number(generation ?? 0) } : undefined;
  }

  /** Newest first. */
  async list(limit = 50): Promise<CorpusJobRecord[]> {
    const ids = await this.redis.zrevrange(this.keys.jobs, 0, limit - 1);
    const records = await Promise.all(ids.map((id) => this.get(id)));
    return records.filter((record): record is CorpusJobRecord => record !== undefined);
  }

  /** The split step of `generation` starts: queued → running. False if the job is stopped or newer. */
  async markRunning(id: string, generation: number): Promise<boolean> {
    return (await this.scripts.start([this.keys.job(id)], generation, Date.now())) === 1;
  }

  async markCompleted(id: string, generation: number): Promise<boolean> {
    return this.transition(id, 'completed', ['running'], { timeField: 'finishedAt', generation });
  }

  /**
   * Stops the job with a reason; only a queued or running job can fail. With `generation`, only
   * if the job is still in it (a late failure of an earlier generation fails nothing).
   */
  async markFailed(id: string, error: string, errorCode: string, generation?: number): Promise<boolean> {
    return this.transition(id, 'failed', ['queued', 'running'], { error, errorCode, timeField: 'finishedAt', generation });
  }

  /** `embedq cancel`: stops the job and frees its open buffers in one step. */
  async markCancelled(id: string): Promise<boolean> {
    return this.transition(id, 'cancelled', ['queued', 'running'], { error: 'cancelled by user', errorCode: 'CANCELLED', timeField: 'finishedAt' });
  }

  /**
   * Back to queued for `embedq retry`, in one script: takes the output lease again, drops the
   * buffers of unwritten shards, rebuilds the counters from the written shards and bumps the
   * generation. Returns the new generation, or why not.
   */
  async restart(id: string): Promise<{ generation: number } | RestartRefusal> {
    const leaseKey = (await this.redis.hget(this.keys.job(id), 'lease')) ?? '';
    const result = (await this.scripts.restart(
      [this.keys.job(id), this.keys.openShards(id), this.keys.writtenShards(id), leaseKey],
      id,
      this.keys.shardPrefix(id),
    )) as [number, string?, string?];
    if (result[0] > 0) return { generation: result[0] };
    if (result[1] === 'missing') return { reason: 'missing' };
    if (result[1] === 'leased') return { reason: 'leased', holder: result[2]! };
    return { reason: 'not-stopped', state: result[1]! };
  }

  async setLinesRead(id: string, generation: number, linesRead: number): Promise<void> {
    await this.scripts.setLinesRead([this.keys.job(id)], generation, linesRead);
  }

  /** The split of `generation` read the whole corpus; undefined if the job stopped or moved on. */
  async finishSplit(
    id: string,
    generation: number,
    totals: { totalLines: number; totalShards: number },
  ): Promise<{ shardsWritten: number; totalShards: number } | undefined> {
    const [shardsWritten, totalShards] = (await this.scripts.finishSplit([this.keys.job(id)], generation, totals.totalLines, totals.totalShards)) as [
      number,
      number,
    ];
    return shardsWritten < 0 ? undefined : { shardsWritten, totalShards };
  }

  private async transition(
    id: string,
    to: CorpusJobState,
    from: readonly CorpusJobState[],
    fields: { error?: string; errorCode?: string; timeField?: 'startedAt' | 'finishedAt'; generation?: number | undefined },
  ): Promise<boolean> {
    const leaseKey = (await this.redis.hget(this.keys.job(id), 'lease')) ?? '';
    const changed = await this.scripts.transition(
      [this.keys.job(id), this.keys.openShards(id), leaseKey],
      to,
      from.join(','),
      fields.error ?? '',
      fields.errorCode ?? '',
      fields.timeField ?? '',
      Date.now(),
      this.keys.shardPrefix(id),
      fields.generation ?? '',
      id,
    );
    return changed === 1;
  }
}
