/**
 * Where corpus job state lives in Redis, under `<prefix>:`
 *
 *   jobs                 ZSET  corpus job id → creation time (ms)
 *   job:<id>             HASH  options (JSON), state, generation, times, counters, lease (key)
 *   job:<id>:shard:<k>   HASH  a shard's buffer: b:<n> → encoded batch, e:<n> → error records (JSON),
 *                              expected (batches in the shard), done, meta (JSON), tokens, rejected
 *   job:<id>:open        SET   shard numbers that have a buffer: the index that finds them (no SCAN)
 *   job:<id>:shards      HASH  k → stats of a written shard (JSON); its presence means "written"
 *   lease:<output>       STRING the corpus job id that owns the output location
 */
export class CorpusKeys {
  constructor(readonly prefix: string) {}

  get jobs(): string {
    return `${this.prefix}:jobs`;
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
  lease(output: string): string {
    return `${this.prefix}:lease:${output}`;
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
 * Lua: drops open shard buffers of a job (cancel, failure, restart). Scripts name every key they
 * touch in KEYS (a Redis Cluster routes by them, and Redis asks it of every script), so the caller
 * reads the open set first and passes the buffers' keys (`KEYS[from..from+n-1]`) with their shard
 * numbers (`ARGV[argFrom..]`). Returns how many shards are still open: ones opened after the
 * caller read the set. Once the job is stopped no shard opens any more (CLOSE_SHARD and
 * STORE_BATCH are fenced), so one more round with a fresh read drops the rest.
 */
export const DROP_BUFFERS_LUA = `
local function drop_buffers(openKey, from, n, argFrom)
  for i = 0, n - 1 do
    redis.call('DEL', KEYS[from + i])
    redis.call('SREM', openKey, ARGV[argFrom + i])
  end
  return redis.call('SCARD', openKey)
end
`;

/** Answer of a restart that found shards it was not told about; the caller reads them again. */
export const STALE_OPEN_BUFFERS = 'stale-open-buffers';

/** Rounds of "read the open set, drop those" before giving up (a stopped job needs at most two). */
export const OPEN_BUFFER_ATTEMPTS = 5;
