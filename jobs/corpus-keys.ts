/**
 * Where corpus job state lives in Redis, under `<prefix>:`
 *
 *   jobs                 ZSET  corpus job id → creation time (ms); a job's keys go after its retention
 *   jobs:active          ZSET  the queued and running ones among them (same scores): the dashboard
 *                              shows every one, however many newer jobs there are
 *   job:<id>             HASH  options (JSON), state, generation, times, counters, lease (key)
 *   job:<id>:shard:<k>   HASH  a shard's buffer: b:<n> → encoded batch, e:<n> → error records (JSON),
 *                              expected (batches in the shard), done, meta (JSON), tokens, rejected
 *   job:<id>:open        SET   shard numbers that have a buffer: the index that finds them (no SCAN)
 *   job:<id>:shards      HASH  k → stats of a written shard (JSON); its presence means "written"
 *   job:<id>:pins        STRING per corpus object read, in order, 16 hex digits of its key and version
 *   job:<id>:ends        LIST  per corpus object read to its end, in order, the row after its last
 *   lease:<output>       STRING the corpus job id that owns the output location
 *   taken:<output>       STRING the last job that took the output (submit); kept while its record is
 */
export class CorpusKeys {
  constructor(readonly prefix: string) {}

  get jobs(): string {
    return `${this.prefix}:jobs`;
  }
  get activeJobs(): string {
    return `${this.prefix}:jobs:active`;
  }
  job(id: string): string {
    return `${this.prefix}:job:${id}`;
  }
  shard(id: string, shard: number): string {
    return `${this.prefix}:job:${id}:shard:${shard}`;
  }
  openShards(id: string): string {
    return `${this.prefix}:job:${id}:open`;
  }
  writtenShards(id: string): string {
    return `${this.prefix}:job:${id}:shards`;
  }
  pins(id: string): string {
    return `${this.prefix}:job:${id}:pins`;
  }
  objectEnds(id: string): string {
    return `${this.prefix}:job:${id}:ends`;
  }
  shardStarts(id: string): string {
    return `${this.prefix}:job:${id}:starts`;
  }
  lease(output: string): string {
    return `${this.prefix}:lease:${output}`;
  }
  /** `taken:<output>` of the output whose lease key this is (a job record keeps its lease key). */
  takenOf(leaseKey: string): string {
    return `${this.prefix}:taken:${leaseKey.slice(`${this.prefix}:lease:`.length)}`;
  }
}

/**
 * Lua shared by every script that changes a job's state: a step of generation `gen` may act only
 * while the job is active AND still in that generation. Work of an earlier generation (queued
 * before `embedq retry`) is fenced off this way (invariant 8).
 */
export const CURRENT_LUA = `
local function current(jobKey, gen)
  local h = redis.call('HMGET', jobKey, 'state', 'generation')
  if h[1] ~= 'queued' and h[1] ~= 'running' then return false end
  return tonumber(h[2]) == tonumber(gen)
end
`;

/**
 * Lua: Redis's clock (TIME) in ms. A job's times are stamped with it, not with the caller's clock:
 * `embedq cancel` from a laptop 2 days behind stamped its job ended 2 days ago, and the next prune
 * (1-day retention) removed the record at once.
 */
export const REDIS_NOW_LUA = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * Lua shared by the scripts that move a running job on: part of its state gone from Redis (a key
 * deleted by hand, evicted under a maxmemory-policy other than noeviction, a partial restore).
 * Without these checks such a job waited forever for a shard that could never complete. Each holds
 * while the state is whole: the ledger and its counter move together (MARK_WRITTEN, RESTART), and
 * a shard leaves the open set in the same script that deletes its buffer.
 */
export const LOST_STATE_LUA = `
local function ledger_lost(jobKey, writtenKey)
  return redis.call('HLEN', writtenKey) < tonumber(redis.call('HGET', jobKey, 'shardsWritten') or '0')
end
local function buffer_lost(openKey, shardKey, shard)
  return redis.call('EXISTS', shardKey) == 0 and redis.call('SISMEMBER', openKey, shard) == 1
end
`;
